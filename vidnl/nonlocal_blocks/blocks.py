"""The nonlocal family as nn.Modules sharing one skeleton (Zhu et al. 2021, §2 and Table 1):

    Y = X + Norm( F(A, Z) ),   Z = g(X),   A = normalise( f(θ(X), φ(X)) ),   F = Σ_k T_k(A) Z W_k

| block | paper                 | affinity A                            | filter F(A, Z)               |
|-------|-----------------------|---------------------------------------|------------------------------|
| NL    | Wang et al. 2018      | softmax / (1/N) of 4 pairwise kernels | A Z W                        |
| NS    | Tao et al. 2018       | D⁻¹ M (softmax), shared by S stages   | −Z W + A Z W  (W1 = W2 = −W) |
| A2    | Chen et al. 2018      | softmax_n(V) softmax_N(B)ᵀ            | A Z W                        |
| CGNL  | Yue et al. 2018       | Taylor kernel on channel·position     | A vec(Z) W, group norm       |
| CC    | Huang et al. 2019     | softmax over row, column, time line   | A Z W, recurrent R times     |
| SNL   | Zhu et al. 2021 Eq. 5 | D^-½ sym(relu(θ)relu(φ)ᵀ) D^-½        | Z W1 + A Z W2                |
| gSNL  | Zhu et al. 2021 Eq. 4 | as SNL                                | Σ_{k<K} T_k(A) Z W_{k+1}     |

All blocks take B×C×L (1D), B×C×H×W (2D) or B×C×T×H×W (3D) and return the same shape. The
output normalisation's scale starts at zero (``zero_init_final_bn``), so a new block is the
identity and can be inserted into a pretrained network. Projections are 1×1×1 convolutions,
without bias by default (so one block at res4 of ResNet-50 adds exactly the parameters of Zhu
et al. 2021 (SNL), Table 6: NL 4·C·Cs, SNL 5·C·Cs, plus the output BN).

The papers' text and their released code differ in details that change outputs; each is an
argument, and ``STYLES`` names the two sets (docs/nonlocal.md, "Paper and official forms"):
``bias`` on the projections, ``softmax_scale`` (θᵀφ·Cs^-½ before the softmax), ``pool_at``
("projection": max-pool φ(x) and g(x), the text of Wang et al. 2018 (NL); "input": max-pool x
before φ and g, the released NL code), ``pool_ceil_mode``, SNL's ``output_activation`` and
``a_sign``, and CGNL's ``gamma``, ``beta`` and ``norm_layer``.

Inside autocast (mixed precision) the projections and the output convolution run in the low
precision, and the graph part (the kernel, its normaliser — softmax, 1/N, D⁻¹, D^-½ — the
aggregation and the Chebyshev recursion) in float32 (:func:`in_float32`), as PyTorch's own
attention kernels accumulate in float32.

Blocks are registered by name in ``BLOCK_REGISTRY`` (``@BLOCK_REGISTRY.register("nl")``). Every
constructor lists all its options as keyword-only parameters (the shared ones of
:class:`NonLocalBase` included), so ``inspect.signature`` / ``help`` show them, and the options a
type takes from the config (``TYPE_OPTIONS``) and their defaults (:func:`block_options`) are read
from the signatures; the ``official`` style's options are the registry metadata ``official``.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Callable, Iterator, Sequence

import torch
import torch.nn as nn

from ..registry import Registry
from . import functional as NF

# name -> block class; metadata "official": the constructor arguments of NONLOCAL.STYLE official.
BLOCK_REGISTRY = Registry("nonlocal block")

MODES = ("spacetime", "space", "time")
IMPLEMENTATIONS = ("auto", "fast", "dense")
POOL_AT = ("projection", "input")
OUTPUT_ACTIVATIONS = ("none", "relu")


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
    """Inverse of :func:`to_nodes` for query nodes: G×N×Cs -> B×Cs×T×H×W (shape = B,Cs,T,H,W),
    contiguous: a permuted (channels-last) view would make the output projection return a
    channels-last tensor, whose BatchNorm backward costs ~7× a contiguous one on the CPU (profile
    of NL at res4 against pytorchvideo's block), more than this copy of the Cs channels."""
    b, c, tt, h, w = shape
    if mode == "spacetime":
        out = y.transpose(1, 2).reshape(b, c, tt, h, w)
    elif mode == "space":
        out = y.reshape(b, tt, h, w, c).permute(0, 4, 1, 2, 3)
    elif mode == "time":
        out = y.reshape(b, h, w, tt, c).permute(0, 4, 3, 1, 2)
    else:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    return out.contiguous()


def _as_5d(x: torch.Tensor) -> torch.Tensor:
    if x.dim() == 5:
        return x
    if x.dim() == 4:
        return x.unsqueeze(2)
    if x.dim() == 3:
        return x.unsqueeze(2).unsqueeze(2)
    raise ValueError(f"nonlocal blocks take B×C×L, B×C×H×W or B×C×T×H×W, got shape {tuple(x.shape)}")


def in_float32(fn: Callable, *args, **kwargs):
    """``fn(*args, **kwargs)`` with autocast off and the floating-point tensor arguments in
    float32 when autocast is on for their device; otherwise the plain call. A callable result
    (an affinity operator v -> A v) is wrapped the same way."""
    device = next((a.device.type for a in args if torch.is_tensor(a)), "cpu")
    if not (torch.amp.is_autocast_available(device) and torch.is_autocast_enabled(device)):  # not on "meta"
        return fn(*args, **kwargs)
    args = tuple(a.float() if torch.is_tensor(a) and a.is_floating_point() else a for a in args)
    with torch.autocast(device, enabled=False):
        out = fn(*args, **kwargs)
    return (lambda *a: in_float32(out, *a)) if callable(out) else out


def _conv(cin: int, cout: int, bias: bool, groups: int = 1) -> nn.Conv3d:
    return nn.Conv3d(cin, cout, 1, bias=bias, groups=groups)


def inner_channels(dim: int, dim_inner: int | None = None, ratio: float = 0.5) -> int:
    """The inner width Cs of a block on ``dim`` channels: ``dim_inner`` when given (non-zero),
    else ``round(dim · ratio)``, at least 1 (NONLOCAL.INNER_CHANNELS / INNER_RATIO)."""
    if dim_inner:
        return int(dim_inner)
    return max(1, int(round(dim * ratio)))


DEFAULT_NORM = {"embedded_gaussian": "softmax", "gaussian": "softmax", "dot": "mean", "relu_dot": "mean",
                "concatenation": "mean"}


class NonLocalBase(nn.Module):
    """Shared skeleton: dims, graph layout (``mode``), subsampling of keys/values
    (``pool_size`` (T, H, W); the time entry is ignored in ``space`` mode and the spatial ones in
    ``time`` mode), implementation choice, and the output normalisation.

    Subclasses implement ``residual(x)`` (B×C×T×H×W -> F, same shape); ``forward`` returns
    ``x + norm(residual(x))`` (NS and CC override ``forward_5d``).
    """

    supports_pool = True
    supported_modes = MODES

    def __init__(self, dim: int, dim_inner: int | None = None, *,
                 pool_size: Sequence[int] | None = None, mode: str = "spacetime", implementation: str = "auto",
                 zero_init_final_bn: bool = True, bn_eps: float = 1e-5, bn_momentum: float = 0.1, bias: bool = False,
                 pool_at: str = "projection", pool_ceil_mode: bool = True):
        super().__init__()
        name = type(self).__name__
        if mode not in self.supported_modes:
            raise ValueError(f"{name}: mode {mode!r} is not supported; allowed: {self.supported_modes}")
        if implementation not in IMPLEMENTATIONS:
            raise ValueError(f"{name}: implementation must be one of {IMPLEMENTATIONS}, got {implementation!r}")
        kernel = tuple(pool_size) if pool_size else (1, 1, 1)
        if len(kernel) != 3:
            raise ValueError(f"{name}: pool_size must be (T, H, W), got {pool_size!r}")
        if mode == "space":
            kernel = (1,) + kernel[1:]
        elif mode == "time":
            kernel = kernel[:1] + (1, 1)
        if pool_at not in POOL_AT:
            raise ValueError(f"{name}: pool_at must be one of {POOL_AT}, got {pool_at!r}")
        if kernel != (1, 1, 1) and not self.supports_pool:
            raise ValueError(f"{name} does not support subsampling (pool_size={tuple(pool_size)}); use none")
        self.dim = dim
        self.dim_inner = inner_channels(dim, dim_inner)
        self.mode, self.implementation, self.bias = mode, implementation, bias
        self.pool_kernel, self.pool_at = kernel, pool_at
        self.pool = nn.MaxPool3d(kernel, stride=kernel, ceil_mode=pool_ceil_mode) if kernel != (1, 1, 1) else None
        self.zero_init_final_bn = zero_init_final_bn
        self.bn_eps, self.bn_momentum = bn_eps, bn_momentum
        self.bn = self.make_norm()

    @classmethod
    def option_default(cls, name: str):
        """The default of constructor option ``name`` (from the signature)."""
        return inspect.signature(cls).parameters[name].default

    def make_norm(self) -> nn.Module:
        bn = nn.BatchNorm3d(self.dim, eps=self.bn_eps, momentum=self.bn_momentum)
        if self.zero_init_final_bn:
            nn.init.zeros_(bn.weight)
        return bn

    @property
    def subsampled(self) -> bool:
        return self.pool is not None

    def pooled(self, t: torch.Tensor) -> torch.Tensor:
        return self.pool(t) if self.pool is not None else t

    def pooled_input(self, x: torch.Tensor) -> torch.Tensor | None:
        """The max-pooled block input that every key projection shares when ``pool_at="input"``
        (pooled once per forward, not once per projection), else None. B×C×T×H×W -> B×C×T'×H'×W'."""
        return self.pool(x) if self.pool is not None and self.pool_at == "input" else None

    def on_keys(self, conv: nn.Module, x: torch.Tensor, projected: torch.Tensor | None = None,
                pooled_x: torch.Tensor | None = None) -> torch.Tensor:
        """A projection on the key nodes: conv(x) max-pooled (``pool_at="projection"``) or conv of
        the max-pooled x (``"input"``; ``pooled_x`` is that pooled x when already computed);
        ``projected`` is conv(x) when already computed. B×C×T×H×W -> B×Cs×T'×H'×W'."""
        if self.pool is None:
            return conv(x) if projected is None else projected
        if self.pool_at == "input":
            return conv(self.pool(x) if pooled_x is None else pooled_x)
        return self.pool(conv(x) if projected is None else projected)

    def use_fast(self, kernel: str, norm: str, n: int, m: int, cs: int, cv: int, device_type: str = "cpu",
                 num_graphs: int = 1) -> bool:
        if self.implementation == "dense":
            return False
        if self.implementation == "fast":
            return True
        return NF.has_fast_form(kernel, norm) and NF.fast_is_cheaper(kernel, n, m, cs, cv, device_type, num_graphs)

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_5d(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.bn(self.residual(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_5d(_as_5d(x)).reshape(x.shape)

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, dim_inner={self.dim_inner}, mode={self.mode}, pool={self.pool_kernel}, "
                f"implementation={self.implementation}")


# The options every block takes (NonLocalBase's keyword-only parameters).
SHARED_OPTIONS = tuple(n for n, p in inspect.signature(NonLocalBase).parameters.items() if p.kind is p.KEYWORD_ONLY)


def _shared(arguments: dict) -> dict:
    """The shared options out of a constructor's ``locals()``, to pass on to ``NonLocalBase``."""
    return {name: arguments[name] for name in SHARED_OPTIONS}


class PairwiseBlock(NonLocalBase):
    """Blocks whose affinity is a pairwise kernel of θ(X) and φ(X): NL, NS, SNL, gSNL.
    ``softmax_scale`` multiplies the logits of the exponential kernels by Cs^-½ (the released NL
    code, "use_scale"); it has no effect on the other kernels."""

    def __init__(self, dim: int, dim_inner: int | None = None, *,
                 kernel: str = "embedded_gaussian", norm: str | None = None, softmax_scale: bool = False,
                 pool_size: Sequence[int] | None = None, mode: str = "spacetime", implementation: str = "auto",
                 zero_init_final_bn: bool = True, bn_eps: float = 1e-5, bn_momentum: float = 0.1, bias: bool = False,
                 pool_at: str = "projection", pool_ceil_mode: bool = True):
        super().__init__(dim, dim_inner, **_shared(locals()))
        self.softmax_scale = softmax_scale
        self.kernel = kernel
        self.norm = norm or self.default_norm(self.kernel)
        try:
            NF.check_kernel_norm(self.kernel, self.norm)
        except ValueError as e:
            raise ValueError(f"{type(self).__name__}: {e}") from None
        if self.implementation == "fast" and not NF.has_fast_form(self.kernel, self.norm):
            raise ValueError(f"{type(self).__name__}: kernel {self.kernel!r} with normalisation {self.norm!r} "
                             f"has no fast form; use implementation 'dense' or 'auto'")
        cs = self.dim_inner
        if self.kernel == "gaussian":  # f = exp(x_i·x_j) on the input itself (Wang et al. 2018, Eq. 2)
            self.theta = self.phi = None
        else:
            self.theta, self.phi = _conv(dim, cs, self.bias), _conv(dim, cs, self.bias)
        self.concat = nn.Linear(2 * cs, 1, bias=False) if self.kernel == "concatenation" else None

    def default_norm(self, kernel: str) -> str:
        return DEFAULT_NORM[kernel]

    def affinity_inputs(self, x: torch.Tensor, pooled_x: torch.Tensor | None = None
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        """θ on all nodes (G×N×Cs) and φ on the key nodes (G×M×Cs); ``pooled_x`` as in ``on_keys``."""
        if self.theta is None:
            theta, phi = to_nodes(x, self.mode), to_nodes(self.pooled(x), self.mode)
        else:
            theta = to_nodes(self.theta(x), self.mode)
            phi = to_nodes(self.on_keys(self.phi, x, pooled_x=pooled_x), self.mode)
        if self.softmax_scale and self.kernel in NF.EXP_KERNELS:  # exp(s θ·φ) = exp((sθ)·φ)
            theta = theta * theta.shape[-1] ** -0.5
        return theta, phi

    def operator(self, theta: torch.Tensor, phi: torch.Tensor, cv: int) -> NF.Operator:
        """v ↦ A v on this block's graph (fast or dense per ``implementation``)."""
        concat = self._concat_weights()
        fast = self.use_fast(self.kernel, self.norm, theta.shape[-2], phi.shape[-2], theta.shape[-1], cv,
                             theta.device.type, theta.shape[:-2].numel())
        return in_float32(NF.affinity_operator, theta, phi, self.kernel, self.norm, self.subsampled, fast, concat)

    def affinity(self, x: torch.Tensor) -> torch.Tensor:
        """The dense affinity A (G×N×M) of input x, for inspection and visualisation."""
        theta, phi = self.affinity_inputs(_as_5d(x))
        return NF.affinity_dense(theta, phi, self.kernel, self.norm, self.subsampled, self._concat_weights())

    def affinity_row(self, x: torch.Tensor, query: int) -> torch.Tensor:
        """Row ``query`` (a node index of the graph layout) of A for input x: G×M, without the
        N×M matrix (the fast form never builds it either)."""
        theta, phi = self.affinity_inputs(_as_5d(x))
        return NF.affinity_row(theta, phi, query, self.kernel, self.norm, self.subsampled, self._concat_weights())

    def _concat_weights(self):
        """(w_θ, w_φ) of the concatenation kernel's linear layer on [θ_i, φ_j], or None."""
        if self.concat is None:
            return None
        w = self.concat.weight[0]
        return w[: self.dim_inner], w[self.dim_inner:]


@BLOCK_REGISTRY.register("nl", official=dict(bias=True, softmax_scale=True, pool_at="input", pool_ceil_mode=False))
class NL(PairwiseBlock):
    """Nonlocal block of Wang et al. 2018 (NL): Y = X + BN(W_z · A g(X)). Kernels: embedded
    Gaussian (default; softmax via fused attention), Gaussian, dot product and concatenation
    (both 1/N), relu_dot."""

    def __init__(self, dim: int, dim_inner: int | None = None, *,
                 kernel: str = "embedded_gaussian", norm: str | None = None, softmax_scale: bool = False,
                 pool_size: Sequence[int] | None = None, mode: str = "spacetime", implementation: str = "auto",
                 zero_init_final_bn: bool = True, bn_eps: float = 1e-5, bn_momentum: float = 0.1, bias: bool = False,
                 pool_at: str = "projection", pool_ceil_mode: bool = True):
        super().__init__(dim, dim_inner, kernel=kernel, norm=norm, softmax_scale=softmax_scale, **_shared(locals()))
        self.g = _conv(dim, self.dim_inner, self.bias)
        self.out_proj = nn.ModuleList([_conv(self.dim_inner, dim, self.bias)])

    def residual(self, x):
        pooled_x = self.pooled_input(x)
        theta, phi = self.affinity_inputs(x, pooled_x)
        g = to_nodes(self.on_keys(self.g, x, pooled_x=pooled_x), self.mode)
        shape = (x.shape[0], self.dim_inner) + tuple(x.shape[2:])
        az = from_nodes(self.operator(theta, phi, g.shape[-1])(g), self.mode, shape)
        return self.out_proj[0](az)


@BLOCK_REGISTRY.register("snl", official=dict(output_activation="relu"))
class SNL(PairwiseBlock):
    """Spectral nonlocal block (Zhu et al. 2021, Eq. 5), and with ``order`` K > 2 the Chebyshev gSNL:
    F = Σ_{k<K} T_k(A) Z W_{k+1}, T_0 = I, T_1 = A, T_k = 2 A T_{k−1} − T_{k−2}. Default affinity:
    A = D^-½ ((M + Mᵀ)/2) D^-½ with M = relu(θ) relu(φ)ᵀ, applied in O(N) by associativity.

    ``a_sign`` −1 filters with −A instead of A (T_k(−A) = (−1)^k T_k(A); for K = 2 the MMSeg
    variant of the official code, Z W1 − A Z W2). ``output_activation`` "relu" gives
    Y = X + relu(BN(F)) (the official code); "none" gives Y = X + BN(F) (Zhu et al. 2021, Eq. 5)."""

    def __init__(self, dim: int, dim_inner: int | None = None, *,
                 kernel: str = "relu_dot", norm: str | None = None, output_activation: str = "none", a_sign: int = 1,
                 pool_size: Sequence[int] | None = None, mode: str = "spacetime", implementation: str = "auto",
                 zero_init_final_bn: bool = True, bn_eps: float = 1e-5, bn_momentum: float = 0.1, bias: bool = False,
                 pool_at: str = "projection", pool_ceil_mode: bool = True):
        super().__init__(dim, dim_inner, kernel=kernel, norm=norm, **_shared(locals()))
        self._make_filter(2, output_activation, a_sign)

    def _make_filter(self, order: int, output_activation: str, a_sign: int) -> None:
        """Check the filter options and build g and the ``order`` output projections W_1..W_K."""
        dim = self.dim
        if output_activation not in OUTPUT_ACTIVATIONS:
            raise ValueError(f"{type(self).__name__}: output_activation must be one of {OUTPUT_ACTIVATIONS}, "
                             f"got {output_activation!r}")
        if a_sign not in (1, -1):
            raise ValueError(f"{type(self).__name__}: a_sign must be 1 or -1, got {a_sign!r}")
        self.output_activation, self.a_sign = output_activation, a_sign
        self.order = order
        if self.order < 1:
            raise ValueError(f"{type(self).__name__}: order must be >= 1, got {self.order}")
        if self.order > 2 and self.subsampled:
            raise ValueError(f"{type(self).__name__}: order {self.order} > 2 applies A repeatedly and needs a "
                             f"square affinity; it does not support subsampling (pool_size={self.pool_kernel})")
        self.g = _conv(dim, self.dim_inner, self.bias)
        self.out_proj = nn.ModuleList(_conv(self.dim_inner, dim, self.bias) for _ in range(self.order))

    def default_norm(self, kernel: str) -> str:
        return "symmetric"

    def residual(self, x):
        z = self.g(x)
        if self.order == 1:
            return self.out_proj[0](z)
        pooled_x = self.pooled_input(x)
        theta, phi = self.affinity_inputs(x, pooled_x)
        zn = to_nodes(z, self.mode)
        op = self.operator(theta, phi, zn.shape[-1])
        if self.a_sign < 0:
            op = _negated(op)
        z_keys = zn if self.pool is None else to_nodes(self.on_keys(self.g, x, z, pooled_x), self.mode)
        terms = in_float32(NF.chebyshev_terms, op, zn, z_keys, self.order)
        return sum(w(from_nodes(t, self.mode, z.shape)) for w, t in zip(self.out_proj, terms))

    def forward_5d(self, x):
        out = self.bn(self.residual(x))
        return x + (torch.relu(out) if self.output_activation == "relu" else out)

    def extra_repr(self) -> str:
        return (super().extra_repr() + f", kernel={self.kernel}, norm={self.norm}, order={self.order}"
                + (f", a_sign={self.a_sign}" if self.a_sign < 0 else "")
                + (f", output_activation={self.output_activation}" if self.output_activation != "none" else ""))


def _negated(op: NF.Operator) -> NF.Operator:
    return lambda v: -op(v)


@BLOCK_REGISTRY.register("gsnl", official=dict(output_activation="relu"))
class GSNL(SNL):
    """gSNL: SNL with the K-term Chebyshev filter, K = ``order`` (default 3; None or 0: the default)."""

    def __init__(self, dim: int, dim_inner: int | None = None, *,
                 order: int | None = 3, kernel: str = "relu_dot", norm: str | None = None,
                 output_activation: str = "none", a_sign: int = 1,
                 pool_size: Sequence[int] | None = None, mode: str = "spacetime", implementation: str = "auto",
                 zero_init_final_bn: bool = True, bn_eps: float = 1e-5, bn_momentum: float = 0.1, bias: bool = False,
                 pool_at: str = "projection", pool_ceil_mode: bool = True):
        # SNL.__init__ fixes K = 2: build the pairwise part, then the K-term filter
        PairwiseBlock.__init__(self, dim, dim_inner, kernel=kernel, norm=norm, **_shared(locals()))
        self._make_filter(order or self.option_default("order"), output_activation, a_sign)


@BLOCK_REGISTRY.register("ns")
class NS(PairwiseBlock):
    """Nonlocal stage (Tao et al. 2018; Zhu et al. 2021, Table 1): the random-walk (softmax) affinity of
    the input is computed once and shared by ``num_stages`` diffusion steps
    X_s = X_{s−1} + BN_s(−Z_s W_s + A Z_s W_s), Z_s = g_s(X_{s−1})."""

    def __init__(self, dim: int, dim_inner: int | None = None, *,
                 kernel: str = "embedded_gaussian", norm: str | None = None, num_stages: int = 1,
                 softmax_scale: bool = False,
                 pool_size: Sequence[int] | None = None, mode: str = "spacetime", implementation: str = "auto",
                 zero_init_final_bn: bool = True, bn_eps: float = 1e-5, bn_momentum: float = 0.1, bias: bool = False,
                 pool_at: str = "projection", pool_ceil_mode: bool = True):
        super().__init__(dim, dim_inner, kernel=kernel, norm=norm, softmax_scale=softmax_scale, **_shared(locals()))
        if num_stages < 1:
            raise ValueError(f"NS: num_stages must be >= 1, got {num_stages}")
        self.num_stages = num_stages
        self.g = nn.ModuleList(_conv(dim, self.dim_inner, self.bias) for _ in range(num_stages))
        self.out_proj = nn.ModuleList(_conv(self.dim_inner, dim, self.bias) for _ in range(num_stages))
        self.bns = nn.ModuleList([self.bn] + [self.make_norm() for _ in range(num_stages - 1)])

    def forward_5d(self, x):
        theta, phi = self.affinity_inputs(x)
        op = None
        for g, w, bn in zip(self.g, self.out_proj, self.bns):
            z = g(x)
            zk = to_nodes(self.on_keys(g, x, z), self.mode)
            if op is None:
                op = self.operator(theta, phi, zk.shape[-1])
            az = from_nodes(op(zk), self.mode, z.shape)
            x = x + bn(w(az - z))
        return x


@BLOCK_REGISTRY.register("a2")
class A2(NonLocalBase):
    """Double attention block (Chen et al. 2018; Zhu et al. 2021, Table 1: F = M Z W with
    M = softmax_desc(X W_v) softmax_pos(X W_b)ᵀ): gather ``num_descriptors`` global descriptors
    with attention maps over positions, distribute them with per-position attention."""

    def __init__(self, dim: int, dim_inner: int | None = None, *,
                 num_descriptors: int | None = None,
                 pool_size: Sequence[int] | None = None, mode: str = "spacetime", implementation: str = "auto",
                 zero_init_final_bn: bool = True, bn_eps: float = 1e-5, bn_momentum: float = 0.1, bias: bool = False,
                 pool_at: str = "projection", pool_ceil_mode: bool = True):
        super().__init__(dim, dim_inner, **_shared(locals()))
        self.num_descriptors = num_descriptors or self.dim_inner
        self.g = _conv(dim, self.dim_inner, self.bias)  # features Z (seed: A)
        self.gather = _conv(dim, self.num_descriptors, self.bias)  # attention maps (seed: B)
        self.distribute = _conv(dim, self.num_descriptors, self.bias)  # attention vectors (seed: V)
        self.out_proj = nn.ModuleList([_conv(self.dim_inner, dim, self.bias)])

    def residual(self, x):
        pooled_x = self.pooled_input(x)
        zk = to_nodes(self.on_keys(self.g, x, pooled_x=pooled_x), self.mode)
        gl = to_nodes(self.on_keys(self.gather, x, pooled_x=pooled_x), self.mode)
        dl = to_nodes(self.distribute(x), self.mode)
        fast = self.implementation != "dense"
        out = in_float32(NF.double_attention_fast if fast else NF.double_attention_dense, gl, dl, zk)
        shape = (x.shape[0], self.dim_inner) + tuple(x.shape[2:])
        return self.out_proj[0](from_nodes(out, self.mode, shape))

    def affinity_row(self, x: torch.Tensor, query: int) -> torch.Tensor:
        """Row ``query`` of A2's M = softmax_desc(V) softmax_pos(B)ᵀ: G×M."""
        x = _as_5d(x)
        gl = to_nodes(self.on_keys(self.gather, x), self.mode)
        dl = to_nodes(self.distribute(x), self.mode)
        return (torch.softmax(dl[:, query:query + 1], -1) @ torch.softmax(gl, -2).transpose(-1, -2))[:, 0]


@BLOCK_REGISTRY.register("cgnl", official=dict(gamma=1e-4, beta="constant", norm_layer="group"))
class CGNL(NonLocalBase):
    """Compact generalised nonlocal block (Yue et al. 2018): within each of ``groups`` channel
    groups, every (position, channel) pair is a node; f is the dot product or the Taylor expansion
    (order ``order``) of the embedded Gaussian / Gaussian (RBF with ``gamma``, 1e-4 in Yue et
    al. 2018; ``beta`` "exact" e^{-γ(a²+b²)} or "constant" e^{-2γ}) kernel; vec(Y) = Θ (Φᵀ g)
    in O(N·C). Output: grouped 1×1×1 conv and ``norm_layer`` "batch" (BN, Yue et al. 2018,
    Eq. 13: BN in each group is BN per channel) or "group" (GroupNorm with ``groups`` groups, the
    official code)."""

    KERNELS = ("dot", "embedded_gaussian", "gaussian")
    NORM_LAYERS = ("batch", "group")

    def __init__(self, dim: int, dim_inner: int | None = None, *,
                 kernel: str = "dot", order: int | None = None, groups: int = 1, gamma: float = 1e-4,
                 beta: str = "exact", norm_layer: str = "batch",
                 pool_size: Sequence[int] | None = None, mode: str = "spacetime", implementation: str = "auto",
                 zero_init_final_bn: bool = True, bn_eps: float = 1e-5, bn_momentum: float = 0.1, bias: bool = False,
                 pool_at: str = "projection", pool_ceil_mode: bool = True):
        inner = inner_channels(dim, dim_inner)
        if groups < 1 or inner % groups or dim % groups:
            raise ValueError(f"CGNL: groups={groups} must divide the inner channels {inner} and the channels {dim}")
        if norm_layer not in self.NORM_LAYERS:
            raise ValueError(f"CGNL: norm_layer must be one of {self.NORM_LAYERS}, got {norm_layer!r}")
        if beta not in NF.CGNL_BETAS:
            raise ValueError(f"CGNL: beta must be one of {NF.CGNL_BETAS}, got {beta!r}")
        if not gamma > 0:
            raise ValueError(f"CGNL: gamma must be > 0, got {gamma!r}")
        self.groups, self.norm_layer = groups, norm_layer
        super().__init__(dim, dim_inner, **_shared(locals()))
        self.kernel = kernel
        if self.kernel not in self.KERNELS:
            raise ValueError(f"CGNL: kernel must be one of {self.KERNELS}, got {self.kernel!r}")
        self.order = 1 if self.kernel == "dot" else (order if order is not None else 3)
        if self.order < 1:
            raise ValueError(f"CGNL: Taylor order must be >= 1, got {self.order}")
        self.gamma, self.beta = gamma, beta
        self.theta, self.phi, self.g = (_conv(dim, self.dim_inner, self.bias) for _ in range(3))
        self.out_proj = nn.ModuleList([_conv(self.dim_inner, dim, self.bias, groups=groups)])

    def make_norm(self) -> nn.Module:
        if self.norm_layer == "batch":
            return super().make_norm()
        gn = nn.GroupNorm(self.groups, self.dim, eps=self.bn_eps)
        if self.zero_init_final_bn:
            nn.init.zeros_(gn.weight)
        return gn

    def residual(self, x):
        cg = self.dim_inner // self.groups

        def grouped(t):  # B×Cs×T×H×W -> (G_graph·groups)×(N·cg)
            n = to_nodes(t, self.mode)  # G×N×Cs
            return n.reshape(n.shape[0], n.shape[1], self.groups, cg).permute(0, 2, 1, 3).reshape(
                n.shape[0] * self.groups, n.shape[1] * cg)

        theta = self.theta(x)
        pooled_x = self.pooled_input(x)
        phi, g = self.on_keys(self.phi, x, pooled_x=pooled_x), self.on_keys(self.g, x, pooled_x=pooled_x)
        # graph axes of B×groups×cg×T×H×W per mode; the axes that index graphs must agree
        dims = {"spacetime": (2, 3, 4, 5), "space": (2, 4, 5), "time": (2, 3)}[self.mode]
        if self.implementation != "dense" and all(phi.shape[d - 1] == theta.shape[d - 1]
                                                  for d in (3, 4, 5) if d not in dims):
            def split(t):  # channels of a group are contiguous: a view, no copy
                return t.reshape(t.shape[0], self.groups, cg, *t.shape[2:])
            y = in_float32(NF.cgnl_fast, split(theta), split(phi), split(g), self.kernel, self.order, self.gamma,
                           self.beta, dims=dims)
            return self.out_proj[0](y.reshape(theta.shape))
        fn = NF.cgnl_dense if self.implementation == "dense" else NF.cgnl_fast
        y = in_float32(fn, grouped(theta), grouped(phi), grouped(g), self.kernel, self.order, self.gamma, self.beta)
        n_graphs = y.shape[0] // self.groups
        n_nodes = y.shape[1] // cg
        y = y.reshape(n_graphs, self.groups, n_nodes, cg).permute(0, 2, 1, 3).reshape(n_graphs, n_nodes, -1)
        return self.out_proj[0](from_nodes(y, self.mode, theta.shape))

    def affinity_row(self, x: torch.Tensor, query: int) -> torch.Tensor:
        """CGNL's nodes are (position, channel) pairs, so its map of query position i over the key
        positions j is the sum of block (i, j) of each group's affinity: Σ_groups Σ_{c,c'}
        f(θ_ic, φ_jc'), G×M. With the Taylor features, f(a, b) = feat(a)·feat(b), this is
        (Σ_c feat(θ_ic))·(Σ_c' feat(φ_jc')) per group: O(M·Cs·P), no (N·Cs)² matrix."""
        x = _as_5d(x)
        cg = self.dim_inner // self.groups

        def summed(t):  # B×Cs×T×H×W -> G×N×groups×(P+1): Taylor features summed over each group's channels
            n = to_nodes(t, self.mode)
            feats = NF.cgnl_features(n, self.kernel, self.order, self.gamma, self.beta)
            return feats.reshape(n.shape[0], n.shape[1], self.groups, cg, -1).sum(3)

        tq = summed(self.theta(x))[:, query]
        return torch.einsum("gkp,gmkp->gm", tq, summed(self.on_keys(self.phi, x)))


@BLOCK_REGISTRY.register("cc")
class CC(NonLocalBase):
    """Criss-cross attention (Huang et al. 2019; Zhu et al. 2021, Table 1): each position attends to its
    row and column (and, in 3D, its time line) with one softmax; applied ``recurrence`` times
    with shared weights so information reaches every position (R = 2 for 2D). Never builds
    the N×N matrix in the fast form."""

    supports_pool = False
    supported_modes = ("spacetime",)

    def __init__(self, dim: int, dim_inner: int | None = None, *,
                 recurrence: int = 2,
                 pool_size: Sequence[int] | None = None, mode: str = "spacetime", implementation: str = "auto",
                 zero_init_final_bn: bool = True, bn_eps: float = 1e-5, bn_momentum: float = 0.1, bias: bool = False,
                 pool_at: str = "projection", pool_ceil_mode: bool = True):
        super().__init__(dim, dim_inner, **_shared(locals()))
        if recurrence < 1:
            raise ValueError(f"CC: recurrence must be >= 1, got {recurrence}")
        self.recurrence = recurrence
        self.theta, self.phi, self.g = (_conv(dim, self.dim_inner, self.bias) for _ in range(3))
        self.out_proj = nn.ModuleList([_conv(self.dim_inner, dim, self.bias)])

    def residual(self, x):
        def last(t):  # B×C×T×H×W -> B×T×H×W×C
            return t.permute(0, 2, 3, 4, 1)
        fn = NF.criss_cross_dense if self.implementation == "dense" else NF.criss_cross_fast
        out = in_float32(fn, last(self.theta(x)), last(self.phi(x)), last(self.g(x)))
        return self.out_proj[0](out.permute(0, 4, 1, 2, 3))

    def forward_5d(self, x):
        for _ in range(self.recurrence):
            x = x + self.bn(self.residual(x))
        return x

    def affinity_row(self, x: torch.Tensor, query: int) -> torch.Tensor:
        """Row ``query`` of one criss-cross pass (B×N, zero off the row/column/time line)."""
        x = _as_5d(x)
        b, _, t, h, w = x.shape
        theta = to_nodes(self.theta(x), "spacetime")[:, query:query + 1]
        phi = to_nodes(self.phi(x), "spacetime")
        logits = (theta @ phi.transpose(-1, -2))[:, 0]
        mask = NF.criss_cross_mask(t, h, w, x.device, query)
        return torch.softmax(logits.masked_fill(~mask, float("-inf")), -1)


def _keyword_options(cls: type) -> dict:
    """name -> default of the keyword-only parameters of ``cls``'s constructor."""
    return {n: p.default for n, p in inspect.signature(cls).parameters.items() if p.kind is p.KEYWORD_ONLY}


def block_options(block_type: str, shared: bool = True) -> dict:
    """name -> default of every option ``block_type``'s constructor takes (from its signature);
    without ``shared``, only the type's own options (``TYPE_OPTIONS[block_type]``)."""
    options = _keyword_options(BLOCK_REGISTRY[block_type])
    return options if shared else {k: v for k, v in options.items() if k not in SHARED_OPTIONS}


def list_blocks() -> tuple[str, ...]:
    """The registered block types, in registration order."""
    return BLOCK_REGISTRY.names()


class _TypeOptions(Mapping):
    """block type -> frozenset of the options it takes beyond the shared ones, read from the
    constructors' signatures (so a block registered later is included)."""

    def __getitem__(self, block_type: str) -> frozenset:
        if block_type not in BLOCK_REGISTRY:
            raise KeyError(block_type)
        return frozenset(block_options(block_type, shared=False))

    def __iter__(self) -> Iterator[str]:
        return iter(BLOCK_REGISTRY)

    def __len__(self) -> int:
        return len(BLOCK_REGISTRY)

    def __repr__(self) -> str:
        return repr({k: sorted(v) for k, v in self.items()})


# Which optional arguments each block type takes (others must be left at their defaults).
TYPE_OPTIONS = _TypeOptions()
# The block types by name (the registry itself: a read-only mapping), kept for older code.
BLOCK_TYPES = BLOCK_REGISTRY


def optional_options() -> set:
    """Every option some block type takes beyond the shared ones."""
    return set().union(*TYPE_OPTIONS.values())


# Named sets of the options where the papers' text and the released code differ (docs/nonlocal.md).
# "paper": the formulas as the papers write them (the constructors' defaults). "official": the
# released code whose checkpoints exist (the registry metadata "official"): NL as in the Caffe2
# release, PySlowFast and pytorchvideo (biases, Cs^-½ softmax scale, max-pool of the block input
# before φ and g, floor pooling); SNL / gSNL as in the official SNL code (ReLU after the output
# BN); CGNL as in the official CGNL code (RBF β = e^{-2γ}, γ = 1e-4, GroupNorm).
STYLES = ("paper", "official")


def official_options() -> dict:
    """block type -> the constructor arguments of style "official" (types that have it)."""
    return {name: dict(BLOCK_REGISTRY.metadata(name)["official"]) for name in BLOCK_REGISTRY
            if "official" in BLOCK_REGISTRY.metadata(name)}


def __getattr__(name: str):  # module attributes computed from the registry when read
    if name == "OPTIONAL":
        return optional_options()
    if name == "OFFICIAL_OPTIONS":
        return official_options()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def style_options(block_type: str, style: str) -> dict:
    """The constructor arguments that ``style`` sets for ``block_type``."""
    if style not in STYLES:
        raise ValueError(f"nonlocal style must be one of {STYLES}, got {style!r}")
    if style == "paper":
        return {}
    official = official_options()
    if block_type not in official:
        raise ValueError(f"nonlocal type {block_type!r} has no official code to follow; style 'official' is "
                         f"defined for {sorted(official)} (use style 'paper')")
    return official[block_type]


def build_nonlocal_block(block_type: str, dim: int, *, style: str = "paper", **kwargs) -> NonLocalBase:
    """Construct a block by name with plain arguments: ``style``'s options (``STYLES``), then
    ``kwargs`` (None leaves an option to the style or the type's default). Options the type
    does not take raise ValueError naming both."""
    if block_type not in BLOCK_REGISTRY:
        raise ValueError(f"unknown nonlocal block type {block_type!r}; choose one of {sorted(BLOCK_REGISTRY)}")
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    takes = TYPE_OPTIONS[block_type]
    for key in optional_options() & set(kwargs):
        if key not in takes:
            raise ValueError(f"nonlocal type {block_type!r} does not take option {key!r} (got {kwargs[key]!r}); "
                             f"it takes {sorted(takes) or 'none'}")
    return BLOCK_REGISTRY[block_type](dim, **{**style_options(block_type, style), **kwargs})


create_block = build_nonlocal_block
