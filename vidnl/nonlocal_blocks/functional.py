"""Pure tensor functions of the nonlocal family: dense reference forms and fast exact forms.

Notation (as in Zhu et al. 2021 (SNL), §2): nodes are flattened positions. ``theta`` is G×N×Cs (queries,
one row per output node), ``phi`` and ``g`` are G×M×Cs (keys and values; M = N without
subsampling, M < N when phi and g are max-pooled). Aggregations return G×N×Cv: ``A g``.

An affinity is a pairwise kernel followed by a normalisation:

kernels  ``embedded_gaussian`` exp(θ_i·φ_j) (Wang et al. 2018, Eq. 3; ``gaussian`` is the same on the
         raw input, the block passes x as θ and φ), ``dot`` θ_i·φ_j, ``relu_dot``
         relu(θ_i)·relu(φ_j) (the SNL reference kernel, non-negative), ``concatenation``
         relu(w_θ·θ_i + w_φ·φ_j) (Wang et al. 2018, Eq. 5, the weights of a linear layer on
         [θ_i, φ_j]).
norms    ``softmax`` (exp kernels: D⁻¹ exp(·), computed stably), ``mean`` (1/M), ``random_walk``
         (D⁻¹ M), ``symmetric`` (D^-½ ((M+Mᵀ)/2) D^-½; with subsampling, where M is N×M and
         cannot be symmetrised, the bipartite form D_r^-½ M D_c^-½), ``none``. Rows (or columns)
         of zero degree give 0.

Dense forms build the N×M matrix; they are the reference the fast forms are tested against (to
1e-10 in float64). Fast forms never build it: softmax through ``scaled_dot_product_attention``,
dot-product kernels by associativity in O((N+M)·Cs·Cv), concatenation in row chunks.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

KERNELS = ("embedded_gaussian", "gaussian", "dot", "relu_dot", "concatenation")
NORMS = ("softmax", "mean", "random_walk", "symmetric", "none")
EXP_KERNELS = ("embedded_gaussian", "gaussian")
FACTORABLE_KERNELS = ("dot", "relu_dot")
NONNEGATIVE_KERNELS = ("embedded_gaussian", "gaussian", "relu_dot", "concatenation")
CONCAT_CHUNK_ROWS = 1024
# softmax(q kᵀ) v with at most this many scores (batch · heads · N · M) uses the explicit N×M
# matrix, larger ones a fused kernel (see ``softmax_is_explicit``).
SOFTMAX_EXPLICIT_MAX_SCORES = 6 * 2 ** 20
# ``implementation='auto'`` takes a factored (O(N)) form when dense needs more multiply-adds and,
# on a GPU, at least FACTORED_MIN_DENSE_MADDS of them over the whole call (see
# ``fast_is_cheaper``). Measured with ``benchmarks/nonlocal_blocks.py --tables crossover`` (SNL,
# forward+backward, batch 2), speed of the factored form over dense at r = dense / factored
# multiply-adds:
#   2-core x86 CPU: 1.1× at r = 1 (Cs = 256 and 512), 1.6× / 1.3× at r = 1.5, 2.4× / 2.9× at r = 2;
#   H200, float32: the factored form takes ~2 ms (launch-bound) whatever N below ~6000, so dense
#     wins while it is cheaper than that: 0.7× at 4.3 G dense multiply-adds (N = 2048, Cs = 256,
#     r = 4), 0.9× at 8.6 G (N = 2048, Cs = 512, r = 2), 1.5× at 9.7 G (N = 3072, Cs = 256),
#     1.8× at 19 G (N = 3072, Cs = 512), 4.4× at 40 G (the res3 8×28×28 NL).
FACTORED_MIN_DENSE_MADDS = {"cpu": 0.0, "cuda": 9e9}

Operator = Callable[[torch.Tensor], torch.Tensor]


def check_kernel_norm(kernel: str, norm: str) -> None:
    """Raise ValueError for a kernel/normalisation pair that is not defined."""
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")
    if norm not in NORMS:
        raise ValueError(f"normalisation must be one of {NORMS}, got {norm!r}")
    if norm == "softmax" and kernel not in EXP_KERNELS:
        raise ValueError(f"normalisation 'softmax' needs an exponential kernel {EXP_KERNELS}, got {kernel!r}")
    if norm in ("random_walk", "symmetric") and kernel not in NONNEGATIVE_KERNELS:
        raise ValueError(f"normalisation {norm!r} needs a non-negative kernel {NONNEGATIVE_KERNELS} "
                         f"(degrees must be >= 0), got {kernel!r}")


def has_fast_form(kernel: str, norm: str) -> bool:
    """Whether ``affinity_operator(..., fast=True)`` exists for this pair."""
    if kernel in EXP_KERNELS:
        return norm == "softmax"
    if kernel == "concatenation":
        return norm != "symmetric"
    return True


def _inv(d: torch.Tensor, power: float) -> torch.Tensor:
    """d^power where d > 0, else 0; gradient-safe at d = 0."""
    positive = d > 0
    safe = torch.where(positive, d, torch.ones_like(d))
    return torch.where(positive, safe.pow(power), torch.zeros_like(d))


def _inv_sqrt(d: torch.Tensor) -> torch.Tensor:
    return _inv(d, -0.5)


# ----------------------------------------------------------------------------------------------
# Dense reference
# ----------------------------------------------------------------------------------------------
def kernel_matrix(theta: torch.Tensor, phi: torch.Tensor, kernel: str,
                  concat_weight: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """Unnormalised pairwise kernel. -> G×N×M."""
    if kernel in EXP_KERNELS:
        return torch.exp(theta @ phi.transpose(-1, -2))
    if kernel == "dot":
        return theta @ phi.transpose(-1, -2)
    if kernel == "relu_dot":
        return F.relu(theta) @ F.relu(phi).transpose(-1, -2)
    if kernel == "concatenation":
        w_t, w_p = concat_weight
        return F.relu((theta @ w_t).unsqueeze(-1) + (phi @ w_p).unsqueeze(-2))
    raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")


def normalize_dense(m: torch.Tensor, norm: str, bipartite: bool = False) -> torch.Tensor:
    """Normalise a G×N×M kernel matrix (see module docstring)."""
    if norm == "none":
        return m
    if norm == "mean":
        return m / m.shape[-1]
    if norm in ("random_walk", "softmax"):
        return _inv(m.sum(-1), -1.0).unsqueeze(-1) * m
    if norm == "symmetric":
        if not bipartite:
            _check_square(m.shape[-2], m.shape[-1])
            m = 0.5 * (m + m.transpose(-1, -2))
            d = _inv_sqrt(m.sum(-1))
            return d.unsqueeze(-1) * m * d.unsqueeze(-2)
        return _inv_sqrt(m.sum(-1)).unsqueeze(-1) * m * _inv_sqrt(m.sum(-2)).unsqueeze(-2)
    raise ValueError(f"normalisation must be one of {NORMS}, got {norm!r}")


def _check_square(n: int, m: int) -> None:
    if n != m:
        raise ValueError(f"the symmetric normalisation needs theta and phi on the same nodes, got N={n} "
                         f"and M={m}; use bipartite=True for subsampled phi")


def affinity_dense(theta, phi, kernel: str = "relu_dot", norm: str = "symmetric", bipartite: bool = False,
                   concat_weight=None) -> torch.Tensor:
    """The normalised affinity A, G×N×M, built explicitly."""
    check_kernel_norm(kernel, norm)
    if norm == "softmax":  # stable form of D⁻¹ exp(θφᵀ)
        return torch.softmax(theta @ phi.transpose(-1, -2), dim=-1)
    return normalize_dense(kernel_matrix(theta, phi, kernel, concat_weight), norm, bipartite)


# ----------------------------------------------------------------------------------------------
# Fast exact forms, as operators v (G×M×Cv) -> A v (G×N×Cv)
# ----------------------------------------------------------------------------------------------
def _factored_operator(t: torch.Tensor, p: torch.Tensor, norm: str, bipartite: bool) -> Operator:
    """A = normalise(t pᵀ) applied by associativity."""
    pt = p.transpose(-1, -2)
    if norm == "none":
        return lambda v: t @ (pt @ v)
    if norm == "mean":
        m = p.shape[-2]
        return lambda v: t @ (pt @ v) / m
    deg_r = (t @ p.sum(-2, keepdim=True).transpose(-1, -2))  # G×N×1 row sums of t pᵀ
    if norm == "random_walk":
        inv = _inv(deg_r, -1.0)
        return lambda v: inv * (t @ (pt @ v))
    if norm == "symmetric":
        deg_c = (p @ t.sum(-2, keepdim=True).transpose(-1, -2))  # G×M×1 column sums
        if not bipartite:
            _check_square(t.shape[-2], p.shape[-2])
            tt = t.transpose(-1, -2)
            s = _inv_sqrt(0.5 * (deg_r + deg_c))

            def apply(v):
                w = s * v
                return s * (0.5 * (t @ (pt @ w) + p @ (tt @ w)))
            return apply
        s_r, s_c = _inv_sqrt(deg_r), _inv_sqrt(deg_c)
        return lambda v: s_r * (t @ (pt @ (s_c * v)))
    raise ValueError(f"normalisation {norm!r} has no factored form")


def _concat_operator(theta, phi, norm: str, bipartite: bool, concat_weight) -> Operator:
    """Concatenation kernel, computed in chunks of query rows (memory O(chunk·M))."""
    w_t, w_p = concat_weight
    a = (theta @ w_t).unsqueeze(-1)  # G×N×1
    b = (phi @ w_p).unsqueeze(-2)  # G×1×M
    if norm in ("symmetric",):
        # degrees need both row and column sums of relu(a + b): one pass over the chunks
        raise ValueError("the concatenation kernel with the symmetric normalisation has no fast form")
    m = phi.shape[-2]

    def apply(v):
        outs = []
        for start in range(0, a.shape[-2], CONCAT_CHUNK_ROWS):
            k = F.relu(a[..., start:start + CONCAT_CHUNK_ROWS, :] + b)
            out = k @ v
            if norm == "mean":
                out = out / m
            elif norm == "random_walk":
                out = _inv(k.sum(-1, keepdim=True), -1.0) * out
            outs.append(out)
        return torch.cat(outs, dim=-2)
    return apply


def affinity_operator(theta, phi, kernel: str = "relu_dot", norm: str = "symmetric", bipartite: bool = False,
                      fast: bool = True, concat_weight=None) -> Operator:
    """v ↦ A v for the affinity of (theta, phi). ``fast=False`` builds A once (dense reference);
    ``fast=True`` never builds it. The operator can be applied many times (NS stages, gSNL)."""
    check_kernel_norm(kernel, norm)
    if kernel in EXP_KERNELS and norm != "softmax" and fast:
        raise ValueError(f"kernel {kernel!r} with normalisation {norm!r} has no fast form (use dense)")
    # a small softmax N×M (``softmax_is_explicit``) is built once like the dense reference: faster
    if not fast or (kernel in EXP_KERNELS and softmax_is_explicit(theta, phi)):
        a = affinity_dense(theta, phi, kernel, norm, bipartite, concat_weight)
        return lambda v: a @ v
    if kernel in EXP_KERNELS:
        return lambda v: _sdpa(theta, phi, v)
    if kernel == "concatenation":
        return _concat_operator(theta, phi, norm, bipartite, concat_weight)
    t, p = (F.relu(theta), F.relu(phi)) if kernel == "relu_dot" else (theta, phi)
    return _factored_operator(t, p, norm, bipartite)


def fast_is_cheaper(kernel: str, num_nodes: int, num_keys: int, inner_channels: int, value_channels: int,
                    device_type: str = "cpu", num_graphs: int = 1) -> bool:
    """Cost model of ``implementation='auto'``. Dense costs ~N·M·(Cs+Cv) multiply-adds per graph,
    the factored form ~(N+M)·Cs·Cv (twice for the symmetric form); the ratio r is about N/(2·Cs)
    (measured on 2 CPU cores at batch 2: dense wins at 4×14×14 with Cs=512, the factored form is
    15× faster at 8×28×28 with Cs=256; benchmarks/README.md). The factored form is taken when
    r > 1 and, on a GPU, the dense form needs at least ``FACTORED_MIN_DENSE_MADDS`` over all
    ``num_graphs`` graphs: below that the factored form's
    many small kernels cost more than dense's few big matmuls. Softmax (fused or explicit) and
    concatenation (chunked) forms cost the same as dense in FLOPs but far less memory, so they
    are always chosen."""
    if kernel not in FACTORABLE_KERNELS:
        return True
    dense = num_nodes * num_keys * (inner_channels + value_channels)
    fast = 2 * (num_nodes + num_keys) * inner_channels * value_channels
    return dense > fast and num_graphs * dense >= FACTORED_MIN_DENSE_MADDS.get(device_type, 0.0)


# ----------------------------------------------------------------------------------------------
# The named forms used by NL and SNL (kept as stable entry points)
# ----------------------------------------------------------------------------------------------
def embedded_gaussian_affinity(theta, phi):
    """A = softmax(θ φᵀ) over keys. -> G×N×M."""
    return affinity_dense(theta, phi, "embedded_gaussian", "softmax")


def embedded_gaussian_dense(theta, phi, g):
    return embedded_gaussian_affinity(theta, phi) @ g


def embedded_gaussian_fast(theta, phi, g):
    """softmax(θ φᵀ) g, exact, in the cheaper of two forms per call (``softmax_is_explicit``)."""
    return affinity_operator(theta, phi, "embedded_gaussian", "softmax")(g)


def softmax_is_explicit(q: torch.Tensor, k: torch.Tensor) -> bool:
    """Whether softmax(q kᵀ) v is computed with the explicit score matrix rather than a fused
    kernel: when the scores over all leading dimensions (batch · heads · N · M) number at most
    ``SOFTMAX_EXPLICIT_MAX_SCORES`` (6 Mi: 24 MB per float32 copy). Both forms are exact.

    Why: on small graphs the fused kernels are slower than two matmuls and a softmax, and their
    memory saving is small in absolute terms. Fused / explicit time, forward+backward, batch 2,
    logits of unit scale (benchmarks/nonlocal_blocks.py and a sweep, torch 2.14.1 CPU / 2.11 GPU):
    2-core x86 CPU: 1.18 at 0.3 Mi scores (N=392, C=512), 1.10 at 1.2 Mi, 1.11 at 4.7 Mi (N=1568,
    the res4 8×14×14 NL), 0.96 at 8 Mi (N=2048, C=256), 0.87 at 32 Mi; H200: about 2 at 4.7 Mi in
    float32 and bfloat16 (1 ms vs 2-3 ms; C=512 takes the memory-efficient kernel, flash allows
    C ≤ 256), 1.3 at 75 Mi (res3) in float32 and 1.0 in bfloat16, where the explicit form
    already needs 16× the memory."""
    return q.shape[:-1].numel() * k.shape[-2] <= SOFTMAX_EXPLICIT_MAX_SCORES


def _sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q kᵀ) v (G×N×C, G×M×C, G×M×Cv -> G×N×Cv) through a fused kernel. The fused kernels
    need the channel dimension contiguous (node views of B×C×T×H×W maps are not) and, on CUDA,
    4-D inputs (G×heads×N×C); otherwise PyTorch silently falls back to the math kernel, which
    stores the N×M matrix (measured: 11 GB at 8×56×56, batch 2). The copies cost O(N·Cs)."""
    q, k, v = (t.contiguous().unsqueeze(-3) for t in (q, k, v))
    return F.scaled_dot_product_attention(q, k, v, scale=1.0).squeeze(-3)


def snl_affinity(theta, phi, bipartite: bool = False):
    """SNL (Zhu et al. 2021 Eq. 5): D^-½ ((M+Mᵀ)/2) D^-½ with M = relu(θ) relu(φ)ᵀ. -> G×N×M."""
    return affinity_dense(theta, phi, "relu_dot", "symmetric", bipartite)


def snl_dense(theta, phi, g, bipartite: bool = False):
    return snl_affinity(theta, phi, bipartite) @ g


def snl_fast(theta, phi, g, bipartite: bool = False):
    """A g by associativity: O((N+M)·Cs²) time, O((N+M)·Cs) memory."""
    return affinity_operator(theta, phi, "relu_dot", "symmetric", bipartite, fast=True)(g)


def snl_fast_is_cheaper(num_nodes: int, num_keys: int, inner_channels: int, device_type: str = "cpu",
                        num_graphs: int = 1) -> bool:
    return fast_is_cheaper("relu_dot", num_nodes, num_keys, inner_channels, inner_channels, device_type, num_graphs)


def chebyshev_terms(apply_a: Operator, z: torch.Tensor, z_keys: torch.Tensor, order: int) -> list[torch.Tensor]:
    """[T_0(A) z, ..., T_{K-1}(A) z] with T_0 = I, T_1 = A, T_k = 2 A T_{k-1} − T_{k-2}, applied
    to z (never forming powers of A). ``z_keys`` is z on the key nodes (the pooled z; equal
    to z without subsampling). K > 2 needs A square (no subsampling)."""
    terms = [z]
    if order >= 2:
        terms.append(apply_a(z_keys))
    for _ in range(2, order):
        terms.append(2 * apply_a(terms[-1]) - terms[-2])
    return terms[:order]


# ----------------------------------------------------------------------------------------------
# A2 (double attention): M = softmax_desc(V) softmax_pos(B)ᵀ
# ----------------------------------------------------------------------------------------------
def double_attention_dense(gather_logits, distribute_logits, z):
    """gather_logits G×M×n (softmax over the M positions: n attention maps), distribute_logits
    G×N×n (softmax over the n descriptors at each position), z G×M×Cv -> G×N×Cv."""
    m = torch.softmax(distribute_logits, -1) @ torch.softmax(gather_logits, -2).transpose(-1, -2)
    return m @ z


def double_attention_fast(gather_logits, distribute_logits, z):
    """Gather n global descriptors, then distribute them: O((N+M)·n·Cv)."""
    descriptors = torch.softmax(gather_logits, -2).transpose(-1, -2) @ z  # G×n×Cv
    return torch.softmax(distribute_logits, -1) @ descriptors


# ----------------------------------------------------------------------------------------------
# CGNL: channels as nodes, kernel on scalars, Taylor features (Yue et al. 2018, Eq. 9-12)
# ----------------------------------------------------------------------------------------------
CGNL_BETAS = ("exact", "constant")


def cgnl_taylor_coefficients(kernel: str, order: int, gamma: float = 1.0) -> list[float]:
    """α_p² of f(a, b) ≈ Σ_{p=0}^{P} α_p² (a b)^p. dot: only p=1. embedded_gaussian: exp(ab),
    α_p² = 1/p!. gaussian: exp(-γ(a-b)²) = β Σ (2γ)^p/p! (ab)^p with β = e^{-γa²} e^{-γb²}
    (Yue et al. 2018, Eq. 10; β is applied to the features, see ``cgnl_features``)."""
    if kernel == "dot":
        return [0.0, 1.0]
    if kernel == "embedded_gaussian":
        return [1.0 / math.factorial(p) for p in range(order + 1)]
    if kernel == "gaussian":
        return [(2 * gamma) ** p / math.factorial(p) for p in range(order + 1)]
    raise ValueError(f"CGNL kernel must be dot, embedded_gaussian or gaussian, got {kernel!r}")


def _check_beta(beta: str) -> None:
    if beta not in CGNL_BETAS:
        raise ValueError(f"CGNL beta must be one of {CGNL_BETAS}, got {beta!r}")


def cgnl_features(x: torch.Tensor, kernel: str, order: int, gamma: float = 1.0, beta: str = "exact") -> torch.Tensor:
    """Taylor feature map: x (G×L) -> G×L×(P+1) with f(a, b) ≈ feat(a)·feat(b). For the Gaussian
    RBF, ``beta`` "exact" applies e^{-γa²} to each feature (β = e^{-γ(a²+b²)}), "constant" the
    constant β = e^{-2γ} of Yue et al. 2018 (CGNL) (exact for unit-norm inputs; the official code)."""
    _check_beta(beta)
    coef = cgnl_taylor_coefficients(kernel, order, gamma)
    feats = torch.stack([math.sqrt(c) * x ** p for p, c in enumerate(coef)], dim=-1)
    if kernel == "gaussian":
        feats = feats * (torch.exp(-gamma * x * x).unsqueeze(-1) if beta == "exact" else math.exp(-gamma))
    return feats


def cgnl_dense(theta, phi, g, kernel: str, order: int, gamma: float = 1.0, beta: str = "exact"):
    """theta G×L, phi and g G×L' (L = N·Cg flattened channels-and-positions of a group) ->
    G×L: the L×L' truncated-kernel matrix times g, built explicitly."""
    _check_beta(beta)
    coef = cgnl_taylor_coefficients(kernel, order, gamma)
    prod = theta.unsqueeze(-1) * phi.unsqueeze(-2)
    m = sum(c * prod ** p for p, c in enumerate(coef) if c)
    if kernel == "gaussian" and beta == "exact":
        m = m * torch.exp(-gamma * theta * theta).unsqueeze(-1) * torch.exp(-gamma * phi * phi).unsqueeze(-2)
    elif kernel == "gaussian":
        m = m * math.exp(-2 * gamma)
    return (m @ g.unsqueeze(-1)).squeeze(-1)


def cgnl_fast(theta, phi, g, kernel: str, order: int, gamma: float = 1.0, beta: str = "exact",
              dims: tuple[int, ...] = (-1,)):
    """Θ (Φᵀ g) with (P+1)-dim Taylor features: O(L·(P+1)). The dot kernel (P = 1, α_0 = 0)
    is θ (φᵀ g) directly. A graph's nodes are the elements of ``dims`` (G×L with the default;
    any layout works, e.g. B×groups×Cg×T×H×W with dims (2, 3, 4, 5), as every term is
    elementwise or a sum over the graph); theta keeps its shape."""
    dims = tuple(d % phi.dim() for d in dims)
    if kernel == "dot":
        return theta * (phi * g).sum(dims, keepdim=True)
    s = (cgnl_features(phi, kernel, order, gamma, beta) * g.unsqueeze(-1)).sum(dims, keepdim=True)  # ...×(P+1)
    return (cgnl_features(theta, kernel, order, gamma, beta) * s).sum(-1)


# ----------------------------------------------------------------------------------------------
# CC (criss-cross): each position attends to its row, its column and (3D) its time line
# ----------------------------------------------------------------------------------------------
def criss_cross_mask(t: int, h: int, w: int, device=None, query: int | None = None) -> torch.Tensor:
    """N×N bool, True where positions share at least two of (t, h, w) (self included once); with
    ``query``, only that row (N), in O(N)."""
    coords = [c.flatten() for c in torch.meshgrid(torch.arange(t, device=device), torch.arange(h, device=device),
                                                  torch.arange(w, device=device), indexing="ij")]
    rows = slice(None) if query is None else query
    return sum((c[rows, None] == c).int() for c in coords) >= 2


def criss_cross_dense(theta, phi, g):
    """theta, phi B×T×H×W×Cs, g B×T×H×W×Cv -> B×T×H×W×Cv; masked softmax over the full N×N."""
    b, t, h, w, _ = theta.shape
    logits = theta.reshape(b, t * h * w, -1) @ phi.reshape(b, t * h * w, -1).transpose(-1, -2)
    logits = logits.masked_fill(~criss_cross_mask(t, h, w, theta.device), float("-inf"))
    out = torch.softmax(logits, -1) @ g.reshape(b, t * h * w, -1)
    return out.reshape(b, t, h, w, -1)


def criss_cross_fast(theta, phi, g):
    """Same result with O(N·(T+H+W)) memory: logits along the W row (self included), the H column
    and the T line (self excluded from both), one softmax over their union."""
    e_w = torch.einsum("bthwc,bthvc->bthwv", theta, phi)
    e_h = torch.einsum("bthwc,btuwc->bthwu", theta, phi)
    e_t = torch.einsum("bthwc,bshwc->bthws", theta, phi)
    t, h = theta.shape[1], theta.shape[2]
    e_h = e_h.masked_fill(torch.eye(h, dtype=torch.bool, device=theta.device)[None, None, :, None, :], float("-inf"))
    e_t = e_t.masked_fill(torch.eye(t, dtype=torch.bool, device=theta.device)[None, :, None, None, :], float("-inf"))
    w_ = theta.shape[3]
    att = torch.softmax(torch.cat([e_w, e_h, e_t], -1), -1)
    a_w, a_h, a_t = att[..., :w_], att[..., w_:w_ + h], att[..., w_ + h:]
    return (torch.einsum("bthwv,bthvc->bthwc", a_w, g) + torch.einsum("bthwu,btuwc->bthwc", a_h, g)
            + torch.einsum("bthws,bshwc->bthwc", a_t, g))


# ----------------------------------------------------------------------------------------------
# One row of an affinity (for visualisation), without building the N×M matrix
# ----------------------------------------------------------------------------------------------
def affinity_row(theta, phi, query: int, kernel: str = "relu_dot", norm: str = "symmetric", bipartite: bool = False,
                 concat_weight=None) -> torch.Tensor:
    """Row ``query`` of the normalised affinity: theta G×N×Cs, phi G×M×Cs -> G×M.

    Costs O((N+M)·Cs): the degrees the normalisations need come from the factored forms (or, for
    exponential and concatenation kernels, from one pass over the key columns in chunks)."""
    check_kernel_norm(kernel, norm)
    tq = theta[:, query:query + 1]
    if norm == "softmax":
        return torch.softmax(tq @ phi.transpose(-1, -2), dim=-1)[:, 0]
    row = kernel_matrix(tq, phi, kernel, concat_weight)[:, 0]  # G×M
    if norm == "none":
        return row
    if norm == "mean":
        return row / phi.shape[-2]
    if norm == "random_walk":
        return _inv(row.sum(-1, keepdim=True), -1.0) * row
    # symmetric: needs the degrees of all nodes
    if not bipartite:
        _check_square(theta.shape[-2], phi.shape[-2])
        col = kernel_matrix(theta, phi[:, query:query + 1], kernel, concat_weight)[..., 0]  # column q of M
        sym = 0.5 * (row + col)
        deg = _degrees(theta, phi, kernel, concat_weight, symmetric=True)
        return _inv_sqrt(deg[:, query:query + 1]) * sym * _inv_sqrt(deg)
    deg_r = row.sum(-1, keepdim=True)
    deg_c = _degrees(theta, phi, kernel, concat_weight, symmetric=False, columns=True)
    return _inv_sqrt(deg_r) * row * _inv_sqrt(deg_c)


def _degrees(theta, phi, kernel, concat_weight, symmetric: bool, columns: bool = False) -> torch.Tensor:
    """Row sums of (M+Mᵀ)/2 (symmetric) or column sums of M, G×N or G×M, in O(N·Cs) for
    dot-product kernels and in chunks of rows otherwise."""
    if kernel in FACTORABLE_KERNELS:
        t, p = (F.relu(theta), F.relu(phi)) if kernel == "relu_dot" else (theta, phi)
        col = (p @ t.sum(-2, keepdim=True).transpose(-1, -2)).squeeze(-1)
        if columns:
            return col
        row = (t @ p.sum(-2, keepdim=True).transpose(-1, -2)).squeeze(-1)
        return 0.5 * (row + col)
    rows = torch.zeros(theta.shape[:-1], dtype=theta.dtype, device=theta.device)
    cols = torch.zeros(phi.shape[:-1], dtype=phi.dtype, device=phi.device)
    for start in range(0, theta.shape[-2], CONCAT_CHUNK_ROWS):
        block = kernel_matrix(theta[:, start:start + CONCAT_CHUNK_ROWS], phi, kernel, concat_weight)
        rows[:, start:start + CONCAT_CHUNK_ROWS] = block.sum(-1)
        cols += block.sum(-2)
    return cols if columns else 0.5 * (rows + cols)
