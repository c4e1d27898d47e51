"""Pure tensor functions of the nonlocal family: dense reference forms and fast exact forms.

Notation (seed 000, DESIGN.md): nodes are flattened positions. ``theta`` is B×N×Cs (queries,
one row per output position), ``phi`` and ``g`` are B×M×Cs (keys and values; M = N without
subsampling, M < N when phi and g are max-pooled). Every function returns B×N×Cs, the
aggregated features ``A g`` before the output projection.

Dense forms build the N×M affinity explicitly: they are the reference the fast forms are tested
against (to float64 precision) and are faster only for very small graphs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


# ----------------------------------------------------------------------------------------------
# NL, embedded Gaussian (seed 004 Eq. 3): A = softmax_j(theta_i . phi_j), no 1/sqrt(d) scaling.
# ----------------------------------------------------------------------------------------------
def embedded_gaussian_affinity(theta: torch.Tensor, phi: torch.Tensor) -> torch.Tensor:
    """A = softmax(theta phi^T) over keys. theta B×N×Cs, phi B×M×Cs -> B×N×M."""
    return torch.softmax(theta @ phi.transpose(-1, -2), dim=-1)


def embedded_gaussian_dense(theta: torch.Tensor, phi: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Reference: explicit N×M matrix, softmax, matmul. -> B×N×Cs."""
    return embedded_gaussian_affinity(theta, phi) @ g


def embedded_gaussian_fast(theta: torch.Tensor, phi: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Same result through ``scaled_dot_product_attention`` (never stores N×M). -> B×N×Cs."""
    return F.scaled_dot_product_attention(theta, phi, g, scale=1.0)


# ----------------------------------------------------------------------------------------------
# SNL (seed 000 Eq. 5): M = relu(theta) relu(phi)^T, A = D^-1/2 ((M + M^T)/2) D^-1/2.
# With subsampled phi/g (M != N nodes) M is N×M and cannot be symmetrised as a square matrix;
# vidnl then uses the symmetric normalisation of the bipartite graph [[0, M], [M^T, 0]]:
# A = D_r^-1/2 M D_c^-1/2 with row sums D_r and column sums D_c (for M = M^T it is the same
# matrix as the square form). Rows (or columns) whose degree is zero contribute 0.
# ----------------------------------------------------------------------------------------------
def _inv_sqrt(d: torch.Tensor) -> torch.Tensor:
    """d^-1/2 where d > 0, else 0; gradient-safe at d = 0."""
    positive = d > 0
    return torch.where(positive, torch.where(positive, d, torch.ones_like(d)).rsqrt(), torch.zeros_like(d))


def snl_affinity(theta: torch.Tensor, phi: torch.Tensor, bipartite: bool = False) -> torch.Tensor:
    """The normalised symmetric SNL affinity. theta B×N×Cs, phi B×M×Cs -> B×N×M.

    ``bipartite=False`` requires M = N (same nodes) and gives D^-1/2 ((M+M^T)/2) D^-1/2.
    """
    m = F.relu(theta) @ F.relu(phi).transpose(-1, -2)
    if not bipartite:
        if theta.shape[-2] != phi.shape[-2]:
            raise ValueError(
                f"symmetric SNL needs theta and phi on the same nodes, got N={theta.shape[-2]} "
                f"and M={phi.shape[-2]}; use bipartite=True for subsampled phi"
            )
        m = 0.5 * (m + m.transpose(-1, -2))
        d = _inv_sqrt(m.sum(-1))
        return d.unsqueeze(-1) * m * d.unsqueeze(-2)
    d_r = _inv_sqrt(m.sum(-1))
    d_c = _inv_sqrt(m.sum(-2))
    return d_r.unsqueeze(-1) * m * d_c.unsqueeze(-2)


def snl_dense(theta: torch.Tensor, phi: torch.Tensor, g: torch.Tensor, bipartite: bool = False) -> torch.Tensor:
    """Reference: A g with A built explicitly (O(N·M·Cs) time, O(N·M) memory). -> B×N×Cs."""
    return snl_affinity(theta, phi, bipartite) @ g


def snl_fast(theta: torch.Tensor, phi: torch.Tensor, g: torch.Tensor, bipartite: bool = False) -> torch.Tensor:
    """A g by associativity, never forming N×M: O((N+M)·Cs²) time, O((N+M)·Cs) memory.

    (relu(θ) relu(φ)^T) v = relu(θ) (relu(φ)^T v), degrees are the same with v = 1, and the
    symmetrisation and D^-1/2 scalings distribute over these products. -> B×N×Cs.
    """
    t, p = F.relu(theta), F.relu(phi)
    if not bipartite:
        if theta.shape[-2] != phi.shape[-2]:
            raise ValueError(
                f"symmetric SNL needs theta and phi on the same nodes, got N={theta.shape[-2]} "
                f"and M={phi.shape[-2]}; use bipartite=True for subsampled phi"
            )
        # degrees of (M + M^T)/2: (t (p^T 1) + p (t^T 1)) / 2
        deg = 0.5 * (t @ p.sum(-2, keepdim=True).transpose(-1, -2)
                     + p @ t.sum(-2, keepdim=True).transpose(-1, -2)).squeeze(-1)
        s = _inv_sqrt(deg).unsqueeze(-1)
        v = s * g
        out = 0.5 * (t @ (p.transpose(-1, -2) @ v) + p @ (t.transpose(-1, -2) @ v))
        return s * out
    d_r = (t @ p.sum(-2, keepdim=True).transpose(-1, -2)).squeeze(-1)  # B×N
    d_c = (p @ t.sum(-2, keepdim=True).transpose(-1, -2)).squeeze(-1)  # B×M
    v = _inv_sqrt(d_c).unsqueeze(-1) * g
    return _inv_sqrt(d_r).unsqueeze(-1) * (t @ (p.transpose(-1, -2) @ v))


def snl_fast_is_cheaper(num_nodes: int, num_keys: int, inner_channels: int) -> bool:
    """Cost model for ``implementation='auto'``: dense costs ~N·M·Cs, fast ~(N+M)·Cs²·2.

    The ratio is about N/Cs (DESIGN.md: dense wins at 4×14×14 with Cs=512, fast wins 15× at
    8×28×28 with Cs=256), so the fast form is chosen when it needs fewer multiply-adds.
    """
    dense = num_nodes * num_keys * inner_channels * 2
    fast = (num_nodes + num_keys) * inner_channels * inner_channels * 2
    return fast < dense
