"""Nonlocal blocks as nn.Modules sharing one skeleton (DESIGN.md):

    Y = X + BN( F(A, Z) ),   Z = g(X),   A = normalise( f(theta(X), phi(X)) )

``NonLocalBlock`` owns the projections theta, phi, g (1×1×1 convs C -> Cs), the optional
max-pool subsampling of phi and g, the graph layout (``mode``) and the output BN whose scale
starts at zero (the block starts as the identity). Each variant supplies ``aggregate`` (how
``A g`` is computed, dense or fast) and ``filter`` (the Chebyshev terms with their output
projections back to C channels).

All blocks take B×C×T×H×W and return the same shape.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from . import functional as NF

MODES = ("spacetime", "space", "time")
IMPLEMENTATIONS = ("auto", "fast", "dense")


def to_nodes(t: torch.Tensor, mode: str) -> torch.Tensor:
    """B×Cs×T×H×W -> G×N×Cs: one graph per clip (spacetime), frame (space) or pixel (time)."""
    b, c, tt, h, w = t.shape
    if mode == "spacetime":
        return t.flatten(2).transpose(1, 2)
    if mode == "space":
        return t.permute(0, 2, 3, 4, 1).reshape(b * tt, h * w, c)
    if mode == "time":
        return t.permute(0, 3, 4, 2, 1).reshape(b * h * w, tt, c)
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}")


def from_nodes(y: torch.Tensor, mode: str, shape: Sequence[int]) -> torch.Tensor:
    """Inverse of :func:`to_nodes` for query nodes: G×N×Cs -> B×Cs×T×H×W (shape = B,Cs,T,H,W)."""
    b, c, tt, h, w = shape
    if mode == "spacetime":
        return y.transpose(1, 2).reshape(b, c, tt, h, w)
    if mode == "space":
        return y.reshape(b, tt, h, w, c).permute(0, 4, 1, 2, 3)
    if mode == "time":
        return y.reshape(b, h, w, tt, c).permute(0, 4, 3, 1, 2)
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}")


class NonLocalBlock(nn.Module):
    """The shared skeleton. Subclasses implement :meth:`aggregate` and :meth:`filter`.

    Args:
        dim: input/output channels C.
        dim_inner: inner channels Cs (default C // 2).
        pool_size: max-pool kernel (T, H, W) for phi and g; None or (1, 1, 1) for none. In
            ``space`` mode the time entry is ignored, in ``time`` mode the spatial ones.
        mode: "spacetime", "space" or "time" (which positions form one graph).
        implementation: "fast", "dense" or "auto".
        num_filter_terms: number of output projections (Chebyshev terms) of the filter.
        zero_init_final_bn: start the output BN scale at 0, so the block is the identity.
    """

    def __init__(
        self,
        dim: int,
        dim_inner: int | None = None,
        *,
        pool_size: Sequence[int] | None = (1, 2, 2),
        mode: str = "spacetime",
        implementation: str = "auto",
        num_filter_terms: int = 1,
        zero_init_final_bn: bool = True,
        bn_eps: float = 1e-5,
        bn_momentum: float = 0.1,
    ):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if implementation not in IMPLEMENTATIONS:
            raise ValueError(f"implementation must be one of {IMPLEMENTATIONS}, got {implementation!r}")
        dim_inner = dim_inner or max(1, dim // 2)
        self.dim, self.dim_inner, self.mode, self.implementation = dim, dim_inner, mode, implementation
        self.theta = nn.Conv3d(dim, dim_inner, 1)
        self.phi = nn.Conv3d(dim, dim_inner, 1)
        self.g = nn.Conv3d(dim, dim_inner, 1)
        kernel = tuple(pool_size) if pool_size else (1, 1, 1)
        if mode == "space":
            kernel = (1,) + kernel[1:]
        elif mode == "time":
            kernel = kernel[:1] + (1, 1)
        self.pool_kernel = kernel
        self.pool = nn.MaxPool3d(kernel, stride=kernel, ceil_mode=True) if kernel != (1, 1, 1) else None
        self.out_proj = nn.ModuleList(nn.Conv3d(dim_inner, dim, 1) for _ in range(num_filter_terms))
        self.bn = nn.BatchNorm3d(dim, eps=bn_eps, momentum=bn_momentum)
        if zero_init_final_bn:
            nn.init.zeros_(self.bn.weight)

    @property
    def subsampled(self) -> bool:
        return self.pool is not None

    def aggregate(self, theta: torch.Tensor, phi: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """A g for G×N×Cs queries and G×M×Cs keys/values -> G×N×Cs."""
        raise NotImplementedError

    def filter(self, z: torch.Tensor, az: torch.Tensor) -> torch.Tensor:
        """F(A, Z) from Z and A Z (both B×Cs×T×H×W) -> B×C×T×H×W."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: B×C×T×H×W -> B×C×T×H×W."""
        theta, phi, z = self.theta(x), self.phi(x), self.g(x)
        g = z
        if self.pool is not None:
            phi, g = self.pool(phi), self.pool(g)
        agg = self.aggregate(to_nodes(theta, self.mode), to_nodes(phi, self.mode), to_nodes(g, self.mode))
        az = from_nodes(agg, self.mode, theta.shape)
        return x + self.bn(self.filter(z, az))

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, dim_inner={self.dim_inner}, mode={self.mode}, "
                f"pool={self.pool_kernel}, implementation={self.implementation}")


class NL(NonLocalBlock):
    """Nonlocal block of Wang et al. (seed 004), embedded-Gaussian affinity:
    Y = X + BN(W_z · softmax(θ φ^T) g). Fast form: fused scaled_dot_product_attention."""

    def __init__(self, dim: int, dim_inner: int | None = None, **kwargs):
        super().__init__(dim, dim_inner, num_filter_terms=1, **kwargs)

    def aggregate(self, theta, phi, g):
        if self.implementation == "dense":
            return NF.embedded_gaussian_dense(theta, phi, g)
        return NF.embedded_gaussian_fast(theta, phi, g)

    def filter(self, z, az):
        return self.out_proj[0](az)


class SNL(NonLocalBlock):
    """Spectral nonlocal block (seed 000 Eq. 5): Y = X + BN(Z W1 + A Z W2) with the symmetric
    normalised affinity A = D^-1/2 ((M + M^T)/2) D^-1/2, M = relu(θ) relu(φ)^T.
    Fast form: O(N) by associativity (see ``functional.snl_fast``)."""

    def __init__(self, dim: int, dim_inner: int | None = None, **kwargs):
        super().__init__(dim, dim_inner, num_filter_terms=2, **kwargs)

    def use_fast(self, num_nodes: int, num_keys: int) -> bool:
        if self.implementation == "auto":
            return NF.snl_fast_is_cheaper(num_nodes, num_keys, self.dim_inner)
        return self.implementation == "fast"

    def aggregate(self, theta, phi, g):
        fn = NF.snl_fast if self.use_fast(theta.shape[-2], phi.shape[-2]) else NF.snl_dense
        return fn(theta, phi, g, bipartite=self.subsampled)

    def filter(self, z, az):
        return self.out_proj[0](z) + self.out_proj[1](az)


BLOCK_TYPES = {"nl": NL, "snl": SNL}


def build_nonlocal_block(block_type: str, dim: int, **kwargs) -> NonLocalBlock:
    """Construct a block by name ("nl", "snl") with plain arguments."""
    if block_type not in BLOCK_TYPES:
        raise ValueError(f"unknown nonlocal block type {block_type!r}; choose one of {sorted(BLOCK_TYPES)}")
    return BLOCK_TYPES[block_type](dim, **kwargs)
