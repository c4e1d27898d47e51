"""Independent references for every nonlocal formula, written from the papers.

Papers (docs/references.md): Wang et al. 2018, *Non-local Neural Networks* (CVPR 2018; NL);
Yue et al. 2018, *Compact Generalized Non-local Network* (NeurIPS 2018; CGNL); Zhu et al. 2021,
*Unifying Nonlocal Blocks for Neural Networks* (ICCV 2021; SNL, gSNL, Chebyshev view of
NL/NS/A2/CGNL/CC; equation, table and appendix numbers as in its preprint, see
docs/references.md).

The reference side is numpy float64 and scalar Python loops. It shares no code with the
implementation: nothing from ``vidnl.nonlocal_blocks.functional`` or ``blocks`` is called to
build an expected value; those functions and modules are only the things under test. A block's
parameters are read through its attributes (``theta``, ``phi``, ``g``, ``concat``, ``gather``,
``distribute``, ``out_proj[k]``, ``bn`` / ``bns``, ``gamma``, ``order``), each 1×1×1 conv
becomes a matrix, and the block output is recomputed from x alone. Everything agrees to 1e-10.

Graph layouts (``vidnl.nonlocal_blocks.blocks.to_nodes``): ``spacetime`` = one graph per clip,
``space`` = one per frame, ``time`` = one per pixel; ``pool_size`` (T, H, W) max-pools the
key/value side (φ, g; ceil mode), its time entry ignored in ``space`` mode and its spatial
entries in ``time`` mode.

The block tests build each block with its defaults (the formulas as the papers write them,
``PAPER``); the options where the papers' released code differs (projection bias, Cs^-½ softmax
scale, pooling of the input, floor pooling, SNL's output ReLU and sign of A, CGNL's constant
RBF β and GroupNorm) are checked against the same references where the constructors take them,
and skipped where they do not.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn as nn

from vidnl.nonlocal_blocks import A2, CC, CGNL, GSNL, NL, NS, SNL, build_nonlocal_block
from vidnl.nonlocal_blocks import functional as NF  # under test only

TOL = dict(rtol=1e-10, atol=1e-10)
EXP_KERNELS = ("embedded_gaussian", "gaussian")
# The normalisations each kernel admits: softmax only for exp kernels (Wang et al. 2018, Eq. 3: it *is*
# D⁻¹ exp); degree normalisations only for non-negative kernels (Zhu et al. 2021, Property 1).
ALLOWED = {
    "embedded_gaussian": ("softmax", "mean", "random_walk", "symmetric", "none"),
    "gaussian": ("softmax", "mean", "random_walk", "symmetric", "none"),
    "dot": ("mean", "none"),
    "relu_dot": ("mean", "random_walk", "symmetric", "none"),
    "concatenation": ("mean", "random_walk", "symmetric", "none"),
}
PAIRS = [(k, n) for k, norms in ALLOWED.items() for n in norms]
# The pairs whose exact form never builds the N×M matrix (associativity, fused softmax, chunks).
FAST_PAIRS = [(k, n) for k, n in PAIRS if (k in EXP_KERNELS and n == "softmax") or k in ("dot", "relu_dot")
              or (k == "concatenation" and n != "symmetric")]
# Wang et al. 2018 (NL): softmax for the Gaussians (Eq. 2-3), C(x) = N for dot and concatenation.
NL_DEFAULT_NORM = {"embedded_gaussian": "softmax", "gaussian": "softmax", "dot": "mean", "concatenation": "mean",
                   "relu_dot": "mean"}


def npy(t) -> np.ndarray:
    return t.detach().cpu().numpy().astype(np.float64) if isinstance(t, torch.Tensor) else np.asarray(t, np.float64)


def assert_close(actual, expected, **tol):
    np.testing.assert_allclose(npy(actual), npy(expected), **(tol or TOL))


# ==============================================================================================
# Reference: pairwise kernels and normalisations (scalar loops)
# ==============================================================================================
def ref_kernel(theta, phi, kernel, concat=None):
    """K_ij = f(θ_i, φ_j). Wang et al. 2018 (NL): Gaussian exp(x_i·x_j) (Eq. 2, on raw inputs), embedded
    Gaussian exp(θ_i·φ_j) (Eq. 3), dot product θ_i·φ_j (Eq. 4), concatenation
    ReLU(w_fᵀ[θ_i, φ_j]) (Eq. 5, concat = (w_θ, w_φ, bias)); relu_dot relu(θ_i)·relu(φ_j)."""
    theta, phi = npy(theta), npy(phi)
    n, m, c = theta.shape[0], phi.shape[0], theta.shape[1]
    out = np.zeros((n, m))
    for i in range(n):
        for j in range(m):
            if kernel in EXP_KERNELS:
                out[i, j] = math.exp(sum(theta[i, k] * phi[j, k] for k in range(c)))
            elif kernel == "dot":
                out[i, j] = sum(theta[i, k] * phi[j, k] for k in range(c))
            elif kernel == "relu_dot":
                out[i, j] = sum(max(theta[i, k], 0.0) * max(phi[j, k], 0.0) for k in range(c))
            elif kernel == "concatenation":
                w_t, w_p, b = concat
                s = sum(w_t[k] * theta[i, k] for k in range(c)) + sum(w_p[k] * phi[j, k] for k in range(c)) + b
                out[i, j] = max(s, 0.0)
            else:
                raise AssertionError(kernel)
    return out


def ref_normalise(k, norm, bipartite=False):
    """softmax / random_walk: K_ij / Σ_j' K_ij' (Wang et al. 2018, Eq. 1 with C(x) = Σ_j f); mean:
    K_ij / M (C(x) = N of the subsampled keys, Wang et al. 2018, §3.3); symmetric (Zhu et al.
    2021, Eq. 5): S = (K + Kᵀ)/2, A_ij = S_ij / √(d_i d_j), d_i = Σ_j S_ij; bipartite (N×M, M < N):
    A_ij = K_ij / √(r_i c_j) with row sums r and column sums c. A zero degree gives 0."""
    n, m = k.shape
    a = np.zeros((n, m))
    if norm == "none":
        return k.copy()
    if norm == "mean":
        for i in range(n):
            for j in range(m):
                a[i, j] = k[i, j] / m
        return a
    if norm in ("softmax", "random_walk"):
        for i in range(n):
            d = sum(k[i, j] for j in range(m))
            for j in range(m):
                a[i, j] = k[i, j] / d if d > 0 else 0.0
        return a
    if norm == "symmetric" and not bipartite:
        assert n == m
        s = np.array([[0.5 * (k[i, j] + k[j, i]) for j in range(n)] for i in range(n)])
        d = [sum(s[i, j] for j in range(n)) for i in range(n)]
        for i in range(n):
            for j in range(n):
                a[i, j] = s[i, j] / math.sqrt(d[i] * d[j]) if d[i] > 0 and d[j] > 0 else 0.0
        return a
    if norm == "symmetric":
        r = [sum(k[i, j] for j in range(m)) for i in range(n)]
        c = [sum(k[i, j] for i in range(n)) for j in range(m)]
        for i in range(n):
            for j in range(m):
                a[i, j] = k[i, j] / math.sqrt(r[i] * c[j]) if r[i] > 0 and c[j] > 0 else 0.0
        return a
    raise AssertionError(norm)


def ref_affinity(theta, phi, kernel, norm, bipartite=False, concat=None):
    return ref_normalise(ref_kernel(theta, phi, kernel, concat), norm, bipartite)


def ref_softmax(values):
    mx = max(values)
    e = [math.exp(v - mx) for v in values]
    s = sum(e)
    return [v / s for v in e]


def ref_chebyshev(a, order):
    """[T_0(A), ..., T_{K-1}(A)], T_0 = I, T_1 = A, T_k = 2 A T_{k-1} − T_{k-2} (Zhu et al. 2021, Eq. 3,
    in vidnl's sign convention, see ``test_gsnl_sign_convention_against_snl_paper_property_2``)."""
    terms = [np.eye(a.shape[0]), a]
    while len(terms) < order:
        terms.append(2.0 * a @ terms[-1] - terms[-2])
    return terms[:order]


def ref_taylor_coefficients(kernel, order, gamma):
    """α_p² of Yue et al. 2018 (CGNL) Eq. 9: f(a, b) ≈ Σ_p α_p² (ab)^p. dot: f = ab. embedded Gaussian
    exp(ab) = Σ (ab)^p / p!. RBF exp(−γ(a−b)²) = e^{−γa²} e^{−γb²} Σ (2γ)^p/p! (ab)^p (Eq. 10;
    the e^{−γa²} e^{−γb²} factors are applied separately)."""
    if kernel == "dot":
        return [0.0, 1.0]
    fact = [1.0]
    for p in range(1, order + 1):
        fact.append(fact[-1] * p)
    if kernel == "embedded_gaussian":
        return [1.0 / fact[p] for p in range(order + 1)]
    if kernel == "gaussian":
        return [(2.0 * gamma) ** p / fact[p] for p in range(order + 1)]
    raise AssertionError(kernel)


def ref_cgnl_kernel(a, b, kernel, order, gamma, beta="exact"):
    """The truncated CGNL kernel matrix for scalar nodes a (L) and b (L'). RBF ``beta``:
    "exact" e^{−γa²} e^{−γb²} per pair; "constant" the β = e^{−2γ} of Yue et al. 2018 (unit-norm
    inputs)."""
    a, b = npy(a), npy(b)
    coef = ref_taylor_coefficients(kernel, order, gamma)
    prod = np.multiply.outer(a, b)
    m = np.zeros_like(prod)
    for p, c in enumerate(coef):
        m += c * prod ** p
    if kernel == "gaussian" and beta == "exact":
        m *= np.multiply.outer(np.exp(-gamma * a * a), np.exp(-gamma * b * b))
    elif kernel == "gaussian":
        m *= math.exp(-2.0 * gamma)
    return m


# ==============================================================================================
# Reference: the block skeleton (1×1×1 convs, pooling, graphs, output norm)
# ==============================================================================================
def ref_conv(conv: nn.Conv3d, x: np.ndarray) -> np.ndarray:
    """A 1×1×1 conv (possibly grouped) as a matrix on channels: B×Cin×T×H×W -> B×Cout×T×H×W."""
    assert tuple(conv.kernel_size) == (1, 1, 1) and tuple(conv.stride) == (1, 1, 1)
    w = npy(conv.weight).reshape(conv.out_channels, -1)
    full = np.zeros((conv.out_channels, conv.in_channels))
    out_per_group, in_per_group = conv.out_channels // conv.groups, conv.in_channels // conv.groups
    for o in range(conv.out_channels):
        grp = o // out_per_group
        full[o, grp * in_per_group:(grp + 1) * in_per_group] = w[o]
    y = np.einsum("oc,bcthw->bothw", full, x)
    if conv.bias is not None:
        y = y + npy(conv.bias)[None, :, None, None, None]
    return y


def ref_maxpool(a: np.ndarray, kernel, ceil: bool = True) -> np.ndarray:
    """Max pooling with stride = kernel; ceil mode keeps a partial last window, floor drops it."""
    kt, kh, kw = kernel
    if kernel == (1, 1, 1):
        return a
    b, c, t, h, w = a.shape
    size = (lambda n, k: -(-n // k)) if ceil else (lambda n, k: n // k)
    out = np.empty((b, c, size(t, kt), size(h, kh), size(w, kw)))
    for i, j, k in itertools.product(*(range(s) for s in out.shape[2:])):
        out[:, :, i, j, k] = a[:, :, i * kt:(i + 1) * kt, j * kh:(j + 1) * kh, k * kw:(k + 1) * kw].max(axis=(2, 3, 4))
    return out


# The formulas as the papers write them (the constructors' defaults): no projection bias, logits
# θ·φ unscaled, φ and g max-pooled after the projection (Wang et al. 2018, §3.3) in ceil mode,
# Y = X + BN(F) (Zhu et al. 2021, Eq. 5), +A (Zhu et al. 2021, Eq. 4-5), the exact RBF factors
# e^{−γa²} e^{−γb²}.
PAPER = dict(softmax_scale=False, pool_at="projection", ceil=True, output_activation="none", a_sign=1,
             beta="exact")


def options(**kw):
    assert set(kw) <= set(PAPER), kw
    return {**PAPER, **kw}


def ref_keys(conv, x, kernel, o):
    """A projection on the key positions: conv(x) max-pooled (pool_at "projection") or conv of the
    max-pooled x ("input", the released NL code)."""
    if kernel == (1, 1, 1):
        return ref_conv(conv, x)
    if o["pool_at"] == "input":
        return ref_conv(conv, ref_maxpool(x, kernel, o["ceil"]))
    return ref_maxpool(ref_conv(conv, x), kernel, o["ceil"])


def mode_kernel(pool, mode):
    kernel = tuple(pool) if pool else (1, 1, 1)
    if mode == "space":
        return (1,) + kernel[1:]
    if mode == "time":
        return kernel[:1] + (1, 1)
    return kernel


def graph_id(b, t, h, w, mode):
    return {"spacetime": (b,), "space": (b, t), "time": (b, h, w)}[mode]


def on_graphs(mode, queries, keys, fn):
    """Apply ``fn(*query_matrices, *key_matrices) -> Nq×C'`` on every graph of the layout and
    scatter the rows back. ``queries`` are B×C×T×H×W arrays on all positions, ``keys`` arrays on
    the (pooled) key positions; a graph's node matrices list its positions in C order."""
    qshape, kshape = queries[0].shape, keys[0].shape if keys else queries[0].shape
    groups_q, groups_k = {}, {}
    for b, t, h, w in itertools.product(range(qshape[0]), *(range(s) for s in qshape[2:])):
        groups_q.setdefault(graph_id(b, t, h, w, mode), []).append((b, t, h, w))
    for b, t, h, w in itertools.product(range(kshape[0]), *(range(s) for s in kshape[2:])):
        groups_k.setdefault(graph_id(b, t, h, w, mode), []).append((b, t, h, w))
    assert set(groups_q) == set(groups_k)
    out = None
    for gid, qs in groups_q.items():
        ks = groups_k[gid]
        qm = [np.array([arr[b, :, t, h, w] for b, t, h, w in qs]) for arr in queries]
        km = [np.array([arr[b, :, t, h, w] for b, t, h, w in ks]) for arr in keys]
        y = fn(*qm, *km)
        if out is None:
            out = np.zeros((qshape[0], y.shape[1]) + tuple(qshape[2:]))
        for row, (b, t, h, w) in zip(y, qs):
            out[b, :, t, h, w] = row
    return out


def ref_norm(module: nn.Module, y: np.ndarray) -> np.ndarray:
    """The output normalisation in eval mode: BatchNorm with running statistics, GroupNorm with
    per-sample statistics over each channel group (and all positions)."""
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        assert not module.training
        shape = (1, -1) + (1,) * (y.ndim - 2)
        out = (y - npy(module.running_mean).reshape(shape)) / np.sqrt(npy(module.running_var).reshape(shape) + module.eps)
    elif isinstance(module, nn.GroupNorm):
        b, c = y.shape[:2]
        yr = y.reshape(b, module.num_groups, -1)
        mu, var = yr.mean(-1, keepdims=True), yr.var(-1, keepdims=True)
        out = ((yr - mu) / np.sqrt(var + module.eps)).reshape(y.shape)
        shape = (1, -1) + (1,) * (y.ndim - 2)
    else:
        raise AssertionError(f"no reference for the output normalisation {type(module).__name__}")
    if module.weight is not None:
        out = out * npy(module.weight).reshape(shape) + npy(module.bias).reshape(shape)
    return out


def randomise_norms(block: nn.Module) -> None:
    """Non-trivial scale, shift and running statistics (not the zero init), so the residual
    branch shows in the output."""
    with torch.no_grad():
        for m in block.modules():
            if isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.GroupNorm)):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_()
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.running_mean.normal_(0.0, 0.3)
                    m.running_var.uniform_(0.5, 2.0)


def make_block(cls, dim=6, dim_inner=3, seed=0, **kw):
    torch.manual_seed(seed)
    block = cls(dim, dim_inner, **kw).double().eval()
    randomise_norms(block)
    return block


def clip(dim=6, shape=(3, 3, 4), batch=2, seed=1):
    torch.manual_seed(seed)
    return torch.randn(batch, dim, *shape, dtype=torch.float64)


def run_block(block, x):
    with torch.no_grad():
        y = block(x)
    assert y.shape == x.shape
    return y


def concat_params(block):
    """(w_θ, w_φ, bias) of the concatenation kernel's linear layer on [θ_i, φ_j] (Wang et al.
    2018, Eq. 5)."""
    lin = block.concat
    w = npy(lin.weight).reshape(-1)
    cs = w.shape[0] // 2
    bias = 0.0 if lin.bias is None else float(npy(lin.bias).reshape(-1)[0])
    return w[:cs], w[cs:], bias


def ref_pairwise_inputs(block, x, kernel, pool, mode, o=PAPER):
    """θ on all positions and φ on the key positions (Wang et al. 2018, Fig. 2: the Gaussian uses x
    itself). ``softmax_scale``: exp(θ·φ / √Cs), Cs the length of the vectors (released NL code)."""
    k = mode_kernel(pool, mode)
    if kernel == "gaussian":
        th, ph = x, ref_maxpool(x, k, o["ceil"])
    else:
        th, ph = ref_conv(block.theta, x), ref_keys(block.phi, x, k, o)
    if o["softmax_scale"] and kernel in EXP_KERNELS:
        th = th / math.sqrt(th.shape[1])
    return th, ph


# ==============================================================================================
# Self-checks of the references against the papers' closed forms
# ==============================================================================================
def test_reference_taylor_kernels_converge_to_the_exact_kernels():
    a, b = np.linspace(-1.2, 1.1, 7), np.linspace(-0.9, 1.3, 5)
    ab = np.multiply.outer(a, b)
    np.testing.assert_allclose(ref_cgnl_kernel(a, b, "embedded_gaussian", 30, 0.5), np.exp(ab), rtol=1e-13)
    for gamma in (0.5, 0.2):
        exact = np.exp(-gamma * np.subtract.outer(a, b) ** 2)
        np.testing.assert_allclose(ref_cgnl_kernel(a, b, "gaussian", 30, gamma), exact, rtol=1e-13)
    np.testing.assert_allclose(ref_cgnl_kernel(a, b, "dot", 1, 0.5), ab, rtol=1e-15)


def test_reference_chebyshev_matrices_are_the_chebyshev_polynomials():
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    lam = rng.uniform(-1, 1, 6)
    a = q @ np.diag(lam) @ q.T
    for k, tk in enumerate(ref_chebyshev(a, 6)):
        np.testing.assert_allclose(tk, q @ np.diag(np.cos(k * np.arccos(lam))) @ q.T, atol=1e-12)


# ==============================================================================================
# Functional forms: affinities
# ==============================================================================================
def affinity_inputs(kernel, n, m, seed):
    torch.manual_seed(seed)
    cs = 3 if n % 2 else 4
    theta = 0.8 * torch.randn(2, n, cs, dtype=torch.float64)
    phi = theta[:, :m].clone() if kernel == "gaussian" and m == n else 0.8 * torch.randn(2, m, cs, dtype=torch.float64)
    w = (torch.randn(cs, dtype=torch.float64), torch.randn(cs, dtype=torch.float64))
    return theta, phi, w


def ref_batched_affinity(theta, phi, kernel, norm, bipartite, w):
    concat = (npy(w[0]), npy(w[1]), 0.0) if w is not None else None
    return np.stack([ref_affinity(theta[i], phi[i], kernel, norm, bipartite, concat) for i in range(theta.shape[0])])


# "fused_and_chunked" forces the fused softmax kernel (instead of the explicit N×M one small
# graphs take) and concatenation / degree chunks of 4 rows: only the exp and concatenation
# kernels have such paths.
PATH_PAIRS = [(k, n, "default") for k, n in PAIRS] + [(k, n, "fused_and_chunked") for k, n in PAIRS
                                                       if k in EXP_KERNELS + ("concatenation",)]


@pytest.mark.parametrize("n,m", [(7, 7), (11, 6)], ids=["square", "subsampled"])
@pytest.mark.parametrize("kernel,norm,code_path", PATH_PAIRS, ids=[f"{k}-{n}-{p}" for k, n, p in PATH_PAIRS])
def test_affinity_matches_reference(kernel, norm, code_path, n, m, monkeypatch):
    if code_path == "fused_and_chunked":
        monkeypatch.setattr(NF, "SOFTMAX_EXPLICIT_MAX_SCORES", 0)
        monkeypatch.setattr(NF, "CONCAT_CHUNK_ROWS", 4)
    bipartite = m != n
    theta, phi, w = affinity_inputs(kernel, n, m, seed=n + m)
    w = w if kernel == "concatenation" else None
    expected = ref_batched_affinity(theta, phi, kernel, norm, bipartite, w)
    assert_close(NF.affinity_dense(theta, phi, kernel, norm, bipartite, concat_weight=w), expected)

    torch.manual_seed(3)
    v = torch.randn(2, m, 5, dtype=torch.float64)
    av = np.einsum("gnm,gmc->gnc", expected, npy(v))
    assert_close(NF.affinity_operator(theta, phi, kernel, norm, bipartite, fast=False, concat_weight=w)(v), av)
    if (kernel, norm) in FAST_PAIRS:
        op = NF.affinity_operator(theta, phi, kernel, norm, bipartite, fast=True, concat_weight=w)
        assert_close(op(v), av)
        assert_close(op(v[..., :2]), av[..., :2])  # an operator applies to any value matrix
    for q in range(n):
        assert_close(NF.affinity_row(theta, phi, q, kernel, norm, bipartite, concat_weight=w), expected[:, q])


@pytest.mark.parametrize("norm", ["random_walk", "symmetric"])
@pytest.mark.parametrize("bipartite", [False, True])
def test_zero_degree_nodes_give_zero(norm, bipartite):
    n, m = (8, 5) if bipartite else (8, 8)
    torch.manual_seed(5)
    theta, phi = torch.randn(2, n, 3, dtype=torch.float64), torch.randn(2, m, 3, dtype=torch.float64)
    theta[:, 2] = -theta[:, 2].abs() - 0.1  # relu(θ_2) = 0: row 2 of M is zero
    phi[:, 1] = -phi[:, 1].abs() - 0.1  # relu(φ_1) = 0: column 1 of M is zero
    if not bipartite:
        phi[:, 2] = -phi[:, 2].abs() - 0.1  # node 2 isolated in (M + Mᵀ)/2
    expected = ref_batched_affinity(theta, phi, "relu_dot", norm, bipartite, None)
    assert np.all(expected[:, 2] == 0) and np.all(np.isfinite(expected))
    assert_close(NF.affinity_dense(theta, phi, "relu_dot", norm, bipartite), expected)
    v = torch.randn(2, m, 4, dtype=torch.float64)
    assert_close(NF.affinity_operator(theta, phi, "relu_dot", norm, bipartite, fast=True)(v),
                 np.einsum("gnm,gmc->gnc", expected, npy(v)))
    for q in range(n):
        assert_close(NF.affinity_row(theta, phi, q, "relu_dot", norm, bipartite), expected[:, q])


def test_undefined_kernel_norm_pairs_are_rejected():
    theta = torch.randn(1, 5, 3, dtype=torch.float64)
    for kernel, norm in itertools.product(ALLOWED, ("softmax", "mean", "random_walk", "symmetric", "none")):
        if norm not in ALLOWED[kernel]:
            with pytest.raises(ValueError):
                NF.affinity_dense(theta, theta, kernel, norm)
    with pytest.raises(ValueError):  # (M + Mᵀ)/2 needs a square M
        NF.affinity_dense(theta, theta[:, :3], "relu_dot", "symmetric", bipartite=False)


def test_symmetric_affinity_has_the_spectrum_of_snl_paper_property_2():
    """A = D^-½ ((M+Mᵀ)/2) D^-½ is symmetric and I − A is a normalised Laplacian: eigenvalues of
    A in [−1, 1], the top one 1 with eigenvector D^½ 1 (so L̃ = 2L/λ_max − I = −A)."""
    torch.manual_seed(7)
    theta, phi = torch.randn(1, 9, 3, dtype=torch.float64), torch.randn(1, 9, 3, dtype=torch.float64)
    a = npy(NF.affinity_dense(theta, phi, "relu_dot", "symmetric"))[0]
    np.testing.assert_allclose(a, a.T, atol=1e-14)
    lam, vec = np.linalg.eigh(a)
    assert lam.min() >= -1 - 1e-12 and abs(lam.max() - 1) < 1e-12
    m = np.maximum(npy(theta)[0], 0) @ np.maximum(npy(phi)[0], 0).T
    d = (0.5 * (m + m.T)).sum(1)
    top = vec[:, -1] * np.sign(vec[:, -1].sum())
    np.testing.assert_allclose(top, np.sqrt(d) / np.linalg.norm(np.sqrt(d)), atol=1e-10)


def test_named_snl_and_softmax_forms():
    torch.manual_seed(8)
    theta, phi, g = (torch.randn(2, 10, 3, dtype=torch.float64) for _ in range(3))
    phi_s, g_s = phi[:, :4], g[:, :4]
    for bip, (p, gg) in ((False, (phi, g)), (True, (phi_s, g_s))):
        a = ref_batched_affinity(theta, p, "relu_dot", "symmetric", bip, None)
        assert_close(NF.snl_affinity(theta, p, bip), a)
        assert_close(NF.snl_dense(theta, p, gg, bip), np.einsum("gnm,gmc->gnc", a, npy(gg)))
        assert_close(NF.snl_fast(theta, p, gg, bip), np.einsum("gnm,gmc->gnc", a, npy(gg)))
    a = ref_batched_affinity(theta, phi_s, "embedded_gaussian", "softmax", True, None)
    assert_close(NF.embedded_gaussian_affinity(theta, phi_s), a)
    assert_close(NF.embedded_gaussian_dense(theta, phi_s, g_s), np.einsum("gnm,gmc->gnc", a, npy(g_s)))
    assert_close(NF.embedded_gaussian_fast(theta, phi_s, g_s), np.einsum("gnm,gmc->gnc", a, npy(g_s)))


@pytest.mark.parametrize("order", [1, 2, 3, 4, 6])
def test_chebyshev_terms_match_the_recurrence(order):
    torch.manual_seed(9)
    a = torch.randn(2, 7, 7, dtype=torch.float64) / 3
    z = torch.randn(2, 7, 3, dtype=torch.float64)
    terms = NF.chebyshev_terms(lambda v: a @ v, z, z, order)
    assert len(terms) == order
    for g in range(2):
        for term, tk in zip(terms, ref_chebyshev(npy(a[g]), order)):
            assert_close(term[g], tk @ npy(z[g]))


# ==============================================================================================
# Functional forms: A2, CGNL, CC
# ==============================================================================================
def ref_double_attention(gather_logits, distribute_logits, z):
    """Chen et al. (Zhu et al. 2021, Table 1 / App. B.3): M = softmax_desc(V) softmax_pos(B)ᵀ, F = M Z.
    Gather: descriptor k = Σ_j softmax_j(B_jk) z_j; distribute: y_i = Σ_k softmax_k(V_ik) d_k."""
    b, v, z = npy(gather_logits), npy(distribute_logits), npy(z)
    n, m, nd = v.shape[0], b.shape[0], v.shape[1]
    sb = np.zeros((m, nd))
    for k in range(nd):
        col = ref_softmax([b[j, k] for j in range(m)])  # over positions
        for j in range(m):
            sb[j, k] = col[j]
    sv = np.array([ref_softmax(list(v[i])) for i in range(n)])  # over descriptors
    mm = np.array([[sum(sv[i, k] * sb[j, k] for k in range(nd)) for j in range(m)] for i in range(n)])
    return mm, mm @ z


@pytest.mark.parametrize("n,m", [(9, 9), (9, 4)])
def test_double_attention_matches_reference(n, m):
    torch.manual_seed(10)
    gl, dl, z = torch.randn(2, m, 3, dtype=torch.float64), torch.randn(2, n, 3, dtype=torch.float64), \
        torch.randn(2, m, 5, dtype=torch.float64)
    expected = np.stack([ref_double_attention(gl[i], dl[i], z[i])[1] for i in range(2)])
    assert_close(NF.double_attention_dense(gl, dl, z), expected)
    assert_close(NF.double_attention_fast(gl, dl, z), expected)


@pytest.mark.parametrize("kernel,order", [("dot", 1), ("embedded_gaussian", 1), ("embedded_gaussian", 3),
                                          ("embedded_gaussian", 4), ("gaussian", 2), ("gaussian", 3)])
def test_cgnl_functional_matches_reference(kernel, order):
    gamma = 0.7
    torch.manual_seed(11)
    theta, phi, g = torch.randn(2, 12, dtype=torch.float64), torch.randn(2, 8, dtype=torch.float64), \
        torch.randn(2, 8, dtype=torch.float64)
    assert NF.cgnl_taylor_coefficients(kernel, order, gamma)[:order + 1] == pytest.approx(
        ref_taylor_coefficients(kernel, order, gamma), rel=1e-15)
    expected = np.stack([ref_cgnl_kernel(theta[i], phi[i], kernel, order, gamma) @ npy(g[i]) for i in range(2)])
    assert_close(NF.cgnl_dense(theta, phi, g, kernel, order, gamma), expected)
    assert_close(NF.cgnl_fast(theta, phi, g, kernel, order, gamma), expected)
    feats_t, feats_p = npy(NF.cgnl_features(theta, kernel, order, gamma)), npy(NF.cgnl_features(phi, kernel, order, gamma))
    for i in range(2):  # f(a, b) = feat(a)·feat(b) (Yue et al. 2018, Eq. 11-12: Θ Φᵀ)
        assert_close(feats_t[i] @ feats_p[i].T, ref_cgnl_kernel(theta[i], phi[i], kernel, order, gamma))


@pytest.mark.parametrize("order", [1, 3])
def test_cgnl_functional_constant_beta_matches_reference(order):
    """Yue et al. 2018 (CGNL) Eq. 10 as written: α_p² = β (2γ)^p/p! with the constant β = e^{−2γ}."""
    torch.manual_seed(15)
    theta, phi, g = torch.randn(2, 12, dtype=torch.float64), torch.randn(2, 8, dtype=torch.float64), \
        torch.randn(2, 8, dtype=torch.float64)
    try:
        got = [NF.cgnl_dense(theta, phi, g, "gaussian", order, 0.6, beta="constant"),
               NF.cgnl_fast(theta, phi, g, "gaussian", order, 0.6, beta="constant")]
    except TypeError:
        pytest.skip("no beta option in this version")
    expected = np.stack([ref_cgnl_kernel(theta[i], phi[i], "gaussian", order, 0.6, "constant") @ npy(g[i])
                         for i in range(2)])
    for y in got:
        assert_close(y, expected)


def test_cgnl_high_order_is_the_exact_kernel():
    torch.manual_seed(12)
    a, b, g = 0.6 * torch.randn(1, 10, dtype=torch.float64), 0.6 * torch.randn(1, 9, dtype=torch.float64), \
        torch.randn(1, 9, dtype=torch.float64)
    an, bn, gn = npy(a[0]), npy(b[0]), npy(g[0])
    assert_close(NF.cgnl_fast(a, b, g, "embedded_gaussian", 30)[0], np.exp(np.multiply.outer(an, bn)) @ gn)
    assert_close(NF.cgnl_fast(a, b, g, "gaussian", 30, 0.4)[0],
                 np.exp(-0.4 * np.subtract.outer(an, bn) ** 2) @ gn)


def ref_criss_cross(theta, phi, g):
    """theta, phi, g B×T×H×W×C: y_i = Σ_{j∈V_i} softmax_j(θ_i·φ_j) g_j, V_i = positions in the same
    W row (t, h), H column (t, w) or T line (h, w) as i, i itself once (Zhu et al. 2021, App. B.5)."""
    theta, phi, g = npy(theta), npy(phi), npy(g)
    b, t, h, w, _ = theta.shape
    out = np.zeros(g.shape)
    positions = list(itertools.product(range(t), range(h), range(w)))
    for bb in range(b):
        for (ti, hi, wi) in positions:
            nb = [(tj, hj, wj) for (tj, hj, wj) in positions
                  if (tj == ti and hj == hi) or (tj == ti and wj == wi) or (hj == hi and wj == wi)]
            assert len(nb) == len(set(nb)) == w + (h - 1) + (t - 1)
            att = ref_softmax([float(theta[bb, ti, hi, wi] @ phi[bb, tj, hj, wj]) for (tj, hj, wj) in nb])
            for a, (tj, hj, wj) in zip(att, nb):
                out[bb, ti, hi, wi] += a * g[bb, tj, hj, wj]
    return out


@pytest.mark.parametrize("shape", [(3, 3, 4), (1, 4, 5), (2, 1, 3)])
def test_criss_cross_functional_matches_reference(shape):
    torch.manual_seed(13)
    theta, phi, g = (torch.randn(2, *shape, c, dtype=torch.float64) for c in (3, 3, 4))
    expected = ref_criss_cross(theta, phi, g)
    assert_close(NF.criss_cross_dense(theta, phi, g), expected)
    assert_close(NF.criss_cross_fast(theta, phi, g), expected)
    t, h, w = shape
    mask = npy(NF.criss_cross_mask(t, h, w)).astype(bool)
    coords = list(itertools.product(range(t), range(h), range(w)))
    for i, ci in enumerate(coords):
        for j, cj in enumerate(coords):
            assert mask[i, j] == (sum(a == b for a, b in zip(ci, cj)) >= 2)


# ==============================================================================================
# Blocks end to end
# ==============================================================================================
MODES_POOLS = [("spacetime", None), ("space", None), ("time", None), ("spacetime", (2, 2, 2)),
               ("space", (2, 2, 2)), ("time", (2, 2, 2))]
MP_IDS = [f"{m}-{'pool' if p else 'full'}" for m, p in MODES_POOLS]


def ref_nl(block, x, kernel, norm, pool, mode, o=PAPER):
    """Wang et al. 2018 (NL) Eq. 1 and 6: z_i = x_i + BN(W_z Σ_j A_ij g(x̂_j)), x̂ the subsampled
    input."""
    x = npy(x)
    k = mode_kernel(pool, mode)
    th, ph = ref_pairwise_inputs(block, x, kernel, pool, mode, o)
    gk = ref_keys(block.g, x, k, o)
    concat = concat_params(block) if kernel == "concatenation" else None
    bipartite = k != (1, 1, 1)
    y = on_graphs(mode, [th], [ph, gk], lambda t, p, g: ref_affinity(t, p, kernel, norm, bipartite, concat) @ g)
    return x + ref_norm(block.bn, ref_conv(block.out_proj[0], y))


@pytest.mark.parametrize("implementation", ["dense", "fast"])  # what "auto" picks is one of these
@pytest.mark.parametrize("mode,pool", MODES_POOLS, ids=MP_IDS)
@pytest.mark.parametrize("kernel", list(NL_DEFAULT_NORM))
def test_nl_block_matches_reference(kernel, mode, pool, implementation):
    norm = NL_DEFAULT_NORM[kernel]
    if implementation == "fast" and (kernel, norm) not in FAST_PAIRS:
        pytest.skip("no fast form")
    block = make_block(NL, kernel=kernel, mode=mode, pool_size=pool, implementation=implementation)
    assert block.norm == norm
    x = clip()
    assert_close(run_block(block, x), ref_nl(block, x, kernel, norm, pool, mode))


NL_OTHER_NORMS = [("relu_dot", "symmetric"), ("relu_dot", "random_walk"), ("concatenation", "random_walk"),
                  ("concatenation", "symmetric"), ("dot", "none"), ("embedded_gaussian", "mean"),
                  ("gaussian", "symmetric"), ("embedded_gaussian", "random_walk")]


@pytest.mark.parametrize("mode,pool", [("spacetime", None), ("spacetime", (1, 2, 2)), ("space", (2, 2, 2))])
@pytest.mark.parametrize("kernel,norm", NL_OTHER_NORMS, ids=[f"{k}-{n}" for k, n in NL_OTHER_NORMS])
def test_nl_block_other_normalisations_match_reference(kernel, norm, mode, pool):
    block = make_block(NL, kernel=kernel, norm=norm, mode=mode, pool_size=pool)
    x = clip()
    assert_close(run_block(block, x), ref_nl(block, x, kernel, norm, pool, mode))


@pytest.mark.parametrize("kernel", ["embedded_gaussian", "dot", "concatenation"])
def test_nl_block_on_2d_and_1d_inputs(kernel):
    block = make_block(NL, kernel=kernel)
    for shape in ((2, 6, 4, 5), (2, 6, 7)):
        torch.manual_seed(14)
        x = torch.randn(*shape, dtype=torch.float64)
        x5 = x.reshape(shape[0], 6, 1, *((1,) * (4 - len(shape))), *shape[2:])
        expected = ref_nl(block, x5, kernel, NL_DEFAULT_NORM[kernel], None, "spacetime")
        assert_close(run_block(block, x), expected.reshape(shape))


def ref_ns(block, x, kernel, norm, pool, mode, o=PAPER):
    """Nonlocal stage (Zhu et al. 2021, App. B.2, Eq. 16): with A = D⁻¹M of the *block input*,
    X_s = X_{s−1} + BN_s(W_s (A Z_s − Z_s)), Z_s = g_s(X_{s−1}); Σ_j A_ij (z_j − z_i) = (AZ − Z)_i
    because the rows of A sum to 1."""
    x = npy(x)
    k = mode_kernel(pool, mode)
    th, ph = ref_pairwise_inputs(block, x, kernel, pool, mode, o)
    bipartite = k != (1, 1, 1)
    for g, w, bn in zip(block.g, block.out_proj, block.bns):
        z = ref_conv(g, x)
        az = on_graphs(mode, [th], [ph, ref_keys(g, x, k, o)],
                       lambda t, p, zk: ref_affinity(t, p, kernel, norm, bipartite) @ zk)
        x = x + ref_norm(bn, ref_conv(w, az - z))
    return x


@pytest.mark.parametrize("implementation", ["auto", "dense"])
@pytest.mark.parametrize("mode,pool", MODES_POOLS, ids=MP_IDS)
@pytest.mark.parametrize("num_stages", [1, 2])
def test_ns_block_matches_reference(num_stages, mode, pool, implementation):
    block = make_block(NS, num_stages=num_stages, mode=mode, pool_size=pool, implementation=implementation)
    assert (block.kernel, block.norm) == ("embedded_gaussian", "softmax")
    assert len(block.bns) == num_stages
    x = clip()
    assert_close(run_block(block, x), ref_ns(block, x, "embedded_gaussian", "softmax", pool, mode))


@pytest.mark.parametrize("mode,pool", [("spacetime", None), ("time", (2, 2, 2))])
def test_ns_block_random_walk_relu_dot_matches_reference(mode, pool):
    block = make_block(NS, num_stages=2, kernel="relu_dot", norm="random_walk", mode=mode, pool_size=pool)
    x = clip()
    assert_close(run_block(block, x), ref_ns(block, x, "relu_dot", "random_walk", pool, mode))


def ref_a2(block, x, pool, mode, o=PAPER):
    x = npy(x)
    k = mode_kernel(pool, mode)
    zk = ref_keys(block.g, x, k, o)
    bk = ref_keys(block.gather, x, k, o)
    v = ref_conv(block.distribute, x)
    y = on_graphs(mode, [v], [bk, zk], lambda vq, bb, z: ref_double_attention(bb, vq, z)[1])
    return x + ref_norm(block.bn, ref_conv(block.out_proj[0], y))


@pytest.mark.parametrize("implementation", ["auto", "dense"])
@pytest.mark.parametrize("mode,pool", MODES_POOLS, ids=MP_IDS)
@pytest.mark.parametrize("num_descriptors", [None, 4])
def test_a2_block_matches_reference(num_descriptors, mode, pool, implementation):
    block = make_block(A2, num_descriptors=num_descriptors, mode=mode, pool_size=pool, implementation=implementation)
    x = clip()
    assert_close(run_block(block, x), ref_a2(block, x, pool, mode))


def ref_cgnl(block, x, pool, mode, groups, o=PAPER):
    """Yue et al. 2018 (CGNL) Eq. 7-13: within each channel group, every (position, channel) pair
    is a node; vec(Y') = f(θ, φ) vec(g) with the order-P Taylor kernel, no normalisation; then the
    grouped W_z, the output norm per group and the residual."""
    x = npy(x)
    k = mode_kernel(pool, mode)
    th = ref_conv(block.theta, x)
    ph, gk = ref_keys(block.phi, x, k, o), ref_keys(block.g, x, k, o)
    cg = th.shape[1] // groups

    def graph(t, p, g):
        out = np.zeros(t.shape)
        for grp in range(groups):
            sl = slice(grp * cg, (grp + 1) * cg)
            a, b, gv = t[:, sl].reshape(-1), p[:, sl].reshape(-1), g[:, sl].reshape(-1)  # (position, channel)
            out[:, sl] = (ref_cgnl_kernel(a, b, block.kernel, block.order, block.gamma, o["beta"]) @ gv).reshape(t.shape[0], cg)
        return out

    y = on_graphs(mode, [th], [ph, gk], graph)
    # Eq. 13, Z = concat(BN(Y' W_z)) + X: W_z acts within each group (a grouped 1×1×1 conv)
    assert block.out_proj[0].groups == groups
    return x + ref_norm(block.bn, ref_conv(block.out_proj[0], y))


CGNL_CASES = [("dot", None, 1, None), ("dot", None, 2, None), ("embedded_gaussian", None, 1, None),
              ("embedded_gaussian", 2, 2, None), ("gaussian", None, 1, None), ("gaussian", None, 1, 0.5),
              ("gaussian", 4, 2, 0.3)]


@pytest.mark.parametrize("implementation", ["auto", "dense"])
@pytest.mark.parametrize("mode,pool", MODES_POOLS, ids=MP_IDS)
@pytest.mark.parametrize("kernel,order,groups,gamma", CGNL_CASES,
                         ids=[f"{k}-P{o}-g{g}-γ{gm}" for k, o, g, gm in CGNL_CASES])
def test_cgnl_block_matches_reference(kernel, order, groups, gamma, mode, pool, implementation):
    kw = {} if gamma is None else {"gamma": gamma}
    block = make_block(CGNL, dim=8, dim_inner=4, kernel=kernel, order=order, groups=groups, mode=mode,
                       pool_size=pool, implementation=implementation, **kw)
    expected_order = 1 if kernel == "dot" else (order or 3)  # Yue et al. 2018, §4.3: order 3
    assert block.order == expected_order and block.kernel == kernel
    if gamma is not None:
        assert block.gamma == gamma
    x = clip(dim=8)
    assert_close(run_block(block, x), ref_cgnl(block, x, pool, mode, groups))


def ref_cc(block, x, recurrence):
    """Criss-cross attention applied R times with shared weights: X_r = X_{r−1} + BN(W (A_r G_r))."""
    x = npy(x)
    for _ in range(recurrence):
        last = lambda a: a.transpose(0, 2, 3, 4, 1)  # noqa: E731  B×C×T×H×W -> B×T×H×W×C
        y = ref_criss_cross(last(ref_conv(block.theta, x)), last(ref_conv(block.phi, x)), last(ref_conv(block.g, x)))
        x = x + ref_norm(block.bn, ref_conv(block.out_proj[0], y.transpose(0, 4, 1, 2, 3)))
    return x


@pytest.mark.parametrize("implementation", ["auto", "dense"])
@pytest.mark.parametrize("recurrence", [1, 2, 3])
@pytest.mark.parametrize("shape", [(3, 3, 4), (4, 5)], ids=["3d", "2d"])
def test_cc_block_matches_reference(shape, recurrence, implementation):
    block = make_block(CC, recurrence=recurrence, implementation=implementation)
    x = clip(shape=shape)
    x5 = x if x.dim() == 5 else x.unsqueeze(2)
    assert_close(run_block(block, x), ref_cc(block, x5, recurrence).reshape(x.shape))


def ref_snl(block, x, kernel, norm, pool, mode, order, o=PAPER):
    """Zhu et al. 2021 (SNL) Eq. 5 (K = 2) and the Chebyshev filter (Eq. 3-4):
    Y = X + BN(Σ_k T_k(A) Z W_{k+1}), T_0 = I, T_1 = A (applied to the subsampled Z when φ, g are
    pooled). ``a_sign`` −1 filters with −A; ``output_activation`` "relu": Y = X + relu(BN(F))
    (the official SNL code)."""
    x = npy(x)
    k = mode_kernel(pool, mode)
    th, ph = ref_pairwise_inputs(block, x, kernel, pool, mode, o)
    z = ref_conv(block.g, x)
    zk = ref_keys(block.g, x, k, o)
    bipartite = k != (1, 1, 1)
    assert order <= 2 or not bipartite
    f = ref_conv(block.out_proj[0], z)
    for kk in range(1, order):
        def term(t, p, zz, kk=kk):
            a = o["a_sign"] * ref_affinity(t, p, kernel, norm, bipartite)
            return a @ zz if kk == 1 else ref_chebyshev(a, kk + 1)[kk] @ zz
        tz = on_graphs(mode, [th], [ph, zk if kk == 1 else z], term)
        f = f + ref_conv(block.out_proj[kk], tz)
    out = ref_norm(block.bn, f)
    return x + (np.maximum(out, 0.0) if o["output_activation"] == "relu" else out)


@pytest.mark.parametrize("implementation", ["dense", "fast"])
@pytest.mark.parametrize("mode,pool", MODES_POOLS, ids=MP_IDS)
def test_snl_block_matches_reference(mode, pool, implementation):
    block = make_block(SNL, mode=mode, pool_size=pool, implementation=implementation)
    assert (block.kernel, block.norm, block.order, len(block.out_proj)) == ("relu_dot", "symmetric", 2, 2)
    x = clip()
    assert_close(run_block(block, x), ref_snl(block, x, "relu_dot", "symmetric", pool, mode, 2))


@pytest.mark.parametrize("kernel,norm", [("relu_dot", "random_walk"), ("embedded_gaussian", "softmax"),
                                         ("concatenation", "symmetric")])
def test_snl_block_other_affinities_match_reference(kernel, norm):
    block = make_block(SNL, kernel=kernel, norm=norm)
    x = clip()
    expected = ref_snl(block, x, kernel, norm, None, "spacetime", 2) if kernel != "concatenation" else None
    if kernel == "concatenation":  # ref_snl reads no concat weights: do it here
        xn = npy(x)
        th, ph = ref_conv(block.theta, xn), ref_conv(block.phi, xn)
        z = ref_conv(block.g, xn)
        az = on_graphs("spacetime", [th], [ph, z],
                       lambda t, p, zz: ref_affinity(t, p, kernel, norm, False, concat_params(block)) @ zz)
        expected = xn + ref_norm(block.bn, ref_conv(block.out_proj[0], z) + ref_conv(block.out_proj[1], az))
    assert_close(run_block(block, x), expected)


@pytest.mark.parametrize("implementation", ["dense", "fast"])
@pytest.mark.parametrize("mode", ["spacetime", "space", "time"])
@pytest.mark.parametrize("order", [None, 3, 4, 5])
def test_gsnl_block_matches_reference(order, mode, implementation):
    block = make_block(GSNL, order=order, mode=mode, implementation=implementation)
    k = order or 3
    assert block.order == k and len(block.out_proj) == k
    x = clip()
    assert_close(run_block(block, x), ref_snl(block, x, "relu_dot", "symmetric", None, mode, k))


# ==============================================================================================
# Options where the papers' released code differs from their text (checked when the constructors
# take them; the reference follows what each option names)
# ==============================================================================================
def make_or_skip(cls, **kw):
    try:
        return make_block(cls, **kw)
    except TypeError as e:  # the option does not exist in this version
        pytest.skip(f"{cls.__name__} does not take these options: {e}")


def ref_options(kw):
    """The reference options a set of constructor arguments names."""
    names = {"softmax_scale": "softmax_scale", "pool_at": "pool_at", "pool_ceil_mode": "ceil",
             "output_activation": "output_activation", "a_sign": "a_sign", "beta": "beta"}
    return options(**{names[k]: v for k, v in kw.items() if k in names})


NL_OPTION_SETS = [{"bias": True}, {"softmax_scale": True}, {"pool_at": "input"}, {"pool_ceil_mode": False},
                  {"bias": True, "softmax_scale": True, "pool_at": "input", "pool_ceil_mode": False}]


@pytest.mark.parametrize("opts", NL_OPTION_SETS, ids=lambda o: "+".join(o))
@pytest.mark.parametrize("kernel", ["embedded_gaussian", "gaussian", "dot"])
def test_nl_block_options_match_reference(kernel, opts):
    pool = (1, 2, 2)  # H = 3, W = 5: ceil and floor pooling differ
    block = make_or_skip(NL, kernel=kernel, pool_size=pool, **opts)
    x = clip(shape=(2, 3, 5))
    expected = ref_nl(block, x, kernel, NL_DEFAULT_NORM[kernel], pool, "spacetime", ref_options(opts))
    assert_close(run_block(block, x), expected)


@pytest.mark.parametrize("opts", [{"softmax_scale": True}, {"pool_at": "input", "bias": True}], ids=lambda o: "+".join(o))
def test_ns_block_options_match_reference(opts):
    block = make_or_skip(NS, num_stages=2, pool_size=(2, 2, 2), **opts)
    x = clip()
    expected = ref_ns(block, x, "embedded_gaussian", "softmax", (2, 2, 2), "spacetime", ref_options(opts))
    assert_close(run_block(block, x), expected)


def test_a2_block_pool_at_input_matches_reference():
    block = make_or_skip(A2, pool_size=(1, 2, 2), pool_at="input", bias=True)
    x = clip()
    assert_close(run_block(block, x), ref_a2(block, x, (1, 2, 2), "spacetime", options(pool_at="input")))


@pytest.mark.parametrize("opts,order", [({"output_activation": "relu"}, 2), ({"a_sign": -1}, 2), ({"a_sign": -1}, 3),
                                        ({"a_sign": -1, "output_activation": "relu"}, 4)])
def test_snl_block_options_match_reference(opts, order):
    block = make_or_skip(GSNL, order=order, **opts)
    x = clip()
    assert_close(run_block(block, x), ref_snl(block, x, "relu_dot", "symmetric", None, "spacetime", order,
                                              ref_options(opts)))


@pytest.mark.parametrize("opts", [{"beta": "constant", "gamma": 0.4}, {"norm_layer": "group"},
                                  {"beta": "constant", "gamma": 1e-4, "norm_layer": "group"}],
                         ids=lambda o: "+".join(o))
@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("implementation", ["auto", "dense"])
def test_cgnl_block_options_match_reference(opts, groups, implementation):
    block = make_or_skip(CGNL, dim=8, dim_inner=4, kernel="gaussian", groups=groups, pool_size=(1, 2, 2),
                         implementation=implementation, **opts)
    if "norm_layer" in opts:
        assert isinstance(block.bn, nn.GroupNorm) and block.bn.num_groups == groups
    x = clip(dim=8)
    assert_close(run_block(block, x), ref_cgnl(block, x, (1, 2, 2), "spacetime", groups, ref_options(opts)))


# ==============================================================================================
# gSNL: sign convention and the equivalences Zhu et al. 2021 (SNL) states
# ==============================================================================================
def copy_pairwise(src, dst, g_src=None):
    with torch.no_grad():
        dst.theta.weight.copy_(src.theta.weight)
        dst.phi.weight.copy_(src.phi.weight)
        dst.g.weight.copy_((g_src or src.g).weight)
        for name in ("theta", "phi"):
            if getattr(src, name).bias is not None:
                getattr(dst, name).bias.copy_(getattr(src, name).bias)
        if (g_src or src.g).bias is not None:
            dst.g.bias.copy_((g_src or src.g).bias)


def test_gsnl_sign_convention_against_snl_paper_property_2():
    """Sign convention of T₁. Zhu et al. 2021 (SNL) Eq. 3 filters with T_k(L̃), T_0 = I, T_1(L̃) = L̃,
    L̃ = 2L/λ_max − I; Property 2 takes a normalised Laplacian L = I − A with λ_max = 2, so
    L̃ = −A and the paper's first-order term is T_1(L̃) = −A. vidnl uses T_1 = +A, i.e. it
    filters with T_k(A) = (−1)^k T_k(−A) = (−1)^k T_k(L̃): the two agree term by term up to the
    sign (−1)^k, which the learned weights absorb (W^vidnl_{k+1} = (−1)^k θ_k). The paper's own
    Eq. 4 and Eq. 5 already write +A Z W_2, the same convention as vidnl; App. B.2 (Eq. 18) keeps
    the −A form, F = Z W_1 − A Z W_2, hence NS's W_1 = W_2 = −W there.

    Checked here: gSNL(K) with weights W_{k+1} equals the paper's T_k(L̃ = −A) form with
    θ_k = (−1)^k W_{k+1}."""
    block = make_block(GSNL, order=4)
    x = clip()
    xn = npy(x)
    th, ph, z = ref_conv(block.theta, xn), ref_conv(block.phi, xn), ref_conv(block.g, xn)
    f = 0.0
    for k in range(4):
        def term(t, p, zz, k=k):
            l_tilde = -ref_affinity(t, p, "relu_dot", "symmetric")
            return ref_chebyshev(l_tilde, k + 1)[k] @ zz
        tz = on_graphs("spacetime", [th], [ph, z], term)
        f = f + (-1) ** k * ref_conv(block.out_proj[k], tz)
    assert_close(run_block(block, x), xn + ref_norm(block.bn, f))


@pytest.mark.parametrize("order", [3, 4])
def test_gsnl_equals_snl_paper_eq4_power_form(order):
    """Zhu et al. 2021 (SNL) Eq. 4 writes F = Z W'_1 + A Z W'_2 + Σ_{k≥2} A^k Z W'_{k+1} (powers
    of A). The Chebyshev and power bases span the same polynomials of degree < K, so gSNL with weights W
    equals Eq. 4 with W'_{j+1} = Σ_k c_{kj} W_{k+1}, T_k(x) = Σ_j c_{kj} x^j."""
    block = make_block(GSNL, order=order)
    x = clip()
    xn = npy(x)
    th, ph, z = ref_conv(block.theta, xn), ref_conv(block.phi, xn), ref_conv(block.g, xn)
    w = [npy(p.weight).reshape(p.out_channels, p.in_channels) for p in block.out_proj]
    assert all(p.bias is None for p in block.out_proj)
    coef = [np.polynomial.chebyshev.cheb2poly([0] * kk + [1]) for kk in range(order)]  # T_k in powers
    f = 0.0
    for j in range(order):
        wj = sum(coef[kk][j] * w[kk] for kk in range(order) if j < len(coef[kk]))
        aj = on_graphs("spacetime", [th], [ph, z],
                       lambda t, p, zz, j=j: np.linalg.matrix_power(ref_affinity(t, p, "relu_dot", "symmetric"), j) @ zz)
        f = f + np.einsum("oc,bcthw->bothw", wj, aj)
    assert_close(run_block(block, x), xn + ref_norm(block.bn, f))


@pytest.mark.parametrize("mode,pool", [("spacetime", None), ("space", (1, 2, 2))])
def test_gsnl_with_two_terms_is_snl(mode, pool):
    snl = make_block(SNL, mode=mode, pool_size=pool)
    gsnl = build_nonlocal_block("gsnl", 6, dim_inner=3, order=2, mode=mode, pool_size=pool).double().eval()
    gsnl.load_state_dict(snl.state_dict())
    x = clip()
    assert_close(run_block(gsnl, x), run_block(snl, x))
    assert_close(run_block(gsnl, x), ref_snl(gsnl, x, "relu_dot", "symmetric", pool, mode, 2))


def test_ns_is_the_first_order_filter_with_tied_weights():
    """Zhu et al. 2021 (SNL) §2.2 (2) and App. B.2: NS = first-order Chebyshev filter on D⁻¹M with
    W_1 = W_2 = −W in the paper's F = Z W_1 − A Z W_2 (T_1 = −A), i.e. in vidnl's T_1 = +A
    convention out_proj[0] = −W and out_proj[1] = +W."""
    ns = make_block(NS, num_stages=1)
    snl = make_block(SNL, kernel="embedded_gaussian", norm="softmax", seed=5)
    copy_pairwise(ns, snl, g_src=ns.g[0])
    with torch.no_grad():
        snl.out_proj[0].weight.copy_(-ns.out_proj[0].weight)
        snl.out_proj[1].weight.copy_(ns.out_proj[0].weight)
        if ns.out_proj[0].bias is not None:
            snl.out_proj[0].bias.zero_()
            snl.out_proj[1].bias.copy_(ns.out_proj[0].bias)
        snl.bn.load_state_dict(ns.bns[0].state_dict())
    x = clip()
    assert_close(run_block(snl, x), run_block(ns, x))


def test_nl_is_the_second_chebyshev_term_only():
    """Zhu et al. 2021 (SNL) §2.2 (1) and App. B.1: NL = F(A, Z) = A Z W on A = D⁻¹M (W_1 = 0)."""
    nl = make_block(NL)
    snl = make_block(SNL, kernel="embedded_gaussian", norm="softmax", seed=5)
    copy_pairwise(nl, snl)
    with torch.no_grad():
        snl.out_proj[0].weight.zero_()
        snl.out_proj[1].weight.copy_(nl.out_proj[0].weight)
        snl.bn.load_state_dict(nl.bn.state_dict())
    x = clip()
    assert_close(run_block(snl, x), run_block(nl, x))


# ==============================================================================================
# Attention rows of the blocks (visualisation) against the references
# ==============================================================================================
def test_block_attention_rows_match_reference():
    x = clip()
    xn = npy(x)
    b, _, t, h, w = x.shape
    n = t * h * w
    flat = lambda a: a.reshape(a.shape[0], a.shape[1], -1).transpose(0, 2, 1)  # noqa: E731  spacetime nodes

    nl = make_block(NL, kernel="concatenation", norm="random_walk", pool_size=(1, 2, 2))
    th, ph = ref_conv(nl.theta, xn), ref_maxpool(ref_conv(nl.phi, xn), (1, 2, 2))
    a_nl = [ref_affinity(flat(th)[i], flat(ph)[i], "concatenation", "random_walk", True, concat_params(nl))
            for i in range(b)]
    assert_close(nl.affinity(x), np.stack(a_nl))

    a2 = make_block(A2, num_descriptors=4)
    a_a2 = [ref_double_attention(flat(ref_conv(a2.gather, xn))[i], flat(ref_conv(a2.distribute, xn))[i],
                                 np.zeros((n, 1)))[0] for i in range(b)]

    cc = make_block(CC)
    tq, pk = ref_conv(cc.theta, xn), ref_conv(cc.phi, xn)
    coords = list(itertools.product(range(t), range(h), range(w)))

    cg = make_block(CGNL, dim=6, dim_inner=4, kernel="gaussian", groups=2)
    th_c, ph_c = flat(ref_conv(cg.theta, xn)), flat(ref_conv(cg.phi, xn))
    for q in (0, 7, n - 1):
        assert_close(nl.affinity_row(x, q), np.stack(a_nl)[:, q])
        assert_close(a2.affinity_row(x, q), np.stack(a_a2)[:, q])
        row = np.zeros((b, n))
        for i in range(b):
            nb = [j for j, cj in enumerate(coords) if sum(u == v for u, v in zip(coords[q], cj)) >= 2]
            att = ref_softmax([float(tq[i, :, coords[q][0], coords[q][1], coords[q][2]]
                                     @ pk[i, :, cj[0], cj[1], cj[2]]) for cj in (coords[j] for j in nb)])
            row[i, nb] = att
        assert_close(cc.affinity_row(x, q), row)
        # CGNL: block (q, j) of each group's (position·channel) kernel, summed over channel pairs and groups
        row = np.zeros((b, n))
        for i, grp in itertools.product(range(b), range(2)):
            sl = slice(grp * 2, grp * 2 + 2)
            kmat = ref_cgnl_kernel(th_c[i, q, sl], ph_c[i][:, sl].reshape(-1), "gaussian", cg.order, cg.gamma)
            row[i] += kmat.reshape(2, n, 2).sum(axis=(0, 2))
        assert_close(cg.affinity_row(x, q), row)
