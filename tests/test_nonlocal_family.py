"""The whole nonlocal family: fast = dense, the unification identities of Zhu et al. 2021
(SNL), Table 1, parameter and FLOP counts of its Table 6, gradients, and a large-graph run."""

import pytest
import torch
import torch.nn as nn

from vidnl.models.complexity import macs_by_module
from vidnl.nonlocal_blocks import A2, CC, CGNL, GSNL, NL, NS, SNL, build_nonlocal_block
from vidnl.nonlocal_blocks import functional as NF
from vidnl.nonlocal_blocks.blocks import from_nodes, to_nodes

VARIANTS = [
    ("nl", {}), ("nl", {"kernel": "gaussian"}), ("nl", {"kernel": "dot"}), ("nl", {"kernel": "relu_dot"}),
    ("nl", {"kernel": "concatenation"}), ("nl", {"kernel": "concatenation", "norm": "random_walk"}),
    ("nl", {"kernel": "relu_dot", "norm": "random_walk"}), ("nl", {"kernel": "dot", "norm": "none"}),
    ("ns", {}), ("ns", {"num_stages": 3}), ("ns", {"kernel": "relu_dot", "norm": "random_walk"}),
    ("snl", {}), ("snl", {"norm": "random_walk"}), ("gsnl", {}), ("gsnl", {"order": 5}),
    ("a2", {}), ("a2", {"num_descriptors": 3}),
    ("cgnl", {}), ("cgnl", {"kernel": "embedded_gaussian", "order": 3, "groups": 2}),
    ("cgnl", {"kernel": "gaussian", "order": 2, "groups": 4}),
    ("cc", {}), ("cc", {"recurrence": 1}),
]


def pair(block_type, opts, **kw):
    torch.manual_seed(0)
    fast = build_nonlocal_block(block_type, 8, dim_inner=4, implementation="fast", zero_init_final_bn=False,
                                **opts, **kw).double().eval()
    dense = build_nonlocal_block(block_type, 8, dim_inner=4, implementation="dense", zero_init_final_bn=False,
                                 **opts, **kw).double().eval()
    dense.load_state_dict(fast.state_dict())
    with torch.no_grad():
        for m in fast.modules():
            if isinstance(m, (nn.Conv3d, nn.Linear)):
                m.weight.mul_(0.5)  # keep exp kernels and Taylor powers in a moderate range
        dense.load_state_dict(fast.state_dict())
    return fast, dense


def supports(block_type, opts, mode, pool):
    if block_type == "cc":
        return mode == "spacetime" and pool is None
    if block_type == "gsnl" and pool is not None:
        return False
    return True


@pytest.mark.parametrize("block_type,opts", VARIANTS, ids=[f"{t}-{'-'.join(map(str, o.values())) or 'default'}"
                                                           for t, o in VARIANTS])
@pytest.mark.parametrize("mode", ["spacetime", "space", "time"])
@pytest.mark.parametrize("pool", [None, (2, 2, 2)])
def test_fast_equals_dense(block_type, opts, mode, pool):
    if not supports(block_type, opts, mode, pool):
        pytest.skip("combination not supported by this block (tested to raise below)")
    fast, dense = pair(block_type, opts, mode=mode, pool_size=pool)
    x = torch.randn(2, 8, 3, 5, 4, dtype=torch.float64)  # batch items differ
    y = fast(x)
    assert not torch.allclose(y[0], y[1])
    assert not torch.allclose(y, x)
    torch.testing.assert_close(y, dense(x), rtol=0, atol=1e-10)


@pytest.mark.parametrize("block_type,opts", VARIANTS[::3])
def test_1d_and_2d_inputs(block_type, opts):
    fast, dense = pair(block_type, opts)
    for shape in ((2, 8, 5, 6), (2, 8, 7)):
        x = torch.randn(*shape, dtype=torch.float64)
        y = fast(x)
        assert y.shape == x.shape
        torch.testing.assert_close(y, dense(x), rtol=0, atol=1e-10)
        # a 2D input is the 3D block on T = 1
        torch.testing.assert_close(y, fast(x.reshape(2, 8, 1, 1, -1) if x.dim() == 3 else x.unsqueeze(2)).reshape(shape))


def test_unsupported_options_raise_naming_both():
    with pytest.raises(ValueError, match="'snl' does not take option 'recurrence'"):
        build_nonlocal_block("snl", 8, recurrence=3)
    with pytest.raises(ValueError, match="CC does not support subsampling"):
        CC(8, pool_size=(1, 2, 2))
    with pytest.raises(ValueError, match="mode 'space' is not supported"):
        CC(8, mode="space")
    with pytest.raises(ValueError, match="needs a square affinity"):
        GSNL(8, pool_size=(1, 2, 2))
    with pytest.raises(ValueError, match="has no fast form"):
        NL(8, kernel="embedded_gaussian", norm="symmetric", implementation="fast")
    with pytest.raises(ValueError, match="non-negative kernel"):
        SNL(8, kernel="dot")
    with pytest.raises(ValueError, match="groups=3 must divide"):
        CGNL(8, 4, groups=3)


# ------------------------------------------------------------------------------------------
# Unification identities (Zhu et al. 2021 (SNL), §2.2 and Table 1), float64
# ------------------------------------------------------------------------------------------
def copy_affinity(src, dst):
    with torch.no_grad():
        for name in ("theta", "phi", "g"):
            getattr(dst, name).weight.copy_(getattr(src, name).weight if name != "g" or not isinstance(src.g, nn.ModuleList)
                                            else src.g[0].weight)
        dst.bn.load_state_dict(src.bn.state_dict() if not hasattr(src, "bns") else src.bns[0].state_dict())


def randomise_bn(*blocks):
    for b in blocks:
        with torch.no_grad():
            b.bn.weight.normal_()
            b.bn.bias.normal_()


@pytest.fixture
def x():
    torch.manual_seed(1)
    return torch.randn(2, 8, 2, 4, 3, dtype=torch.float64)


def test_nl_is_the_random_walk_affinity_with_the_first_order_term_only(x):
    nl = NL(8, 4).double().eval()
    unified = SNL(8, 4, kernel="embedded_gaussian", norm="random_walk", implementation="dense").double().eval()
    randomise_bn(nl)
    copy_affinity(nl, unified)
    with torch.no_grad():
        unified.out_proj[0].weight.zero_()  # W1 = 0
        unified.out_proj[1].weight.copy_(nl.out_proj[0].weight)
    torch.testing.assert_close(nl(x), unified(x), rtol=0, atol=1e-10)


def test_ns_is_the_first_order_form_with_tied_weights(x):
    ns = NS(8, 4).double().eval()
    unified = SNL(8, 4, kernel="embedded_gaussian", norm="softmax").double().eval()
    randomise_bn(ns)
    copy_affinity(ns, unified)
    with torch.no_grad():
        unified.out_proj[0].weight.copy_(-ns.out_proj[0].weight)  # W1 = -W
        unified.out_proj[1].weight.copy_(ns.out_proj[0].weight)  # W2 = W
    torch.testing.assert_close(ns(x), unified(x), rtol=0, atol=1e-10)


def test_a2_is_the_unnormalised_second_term(x):
    a2 = A2(8, 4, num_descriptors=3).double().eval()
    randomise_bn(a2)
    nodes = lambda t: to_nodes(t, "spacetime")  # noqa: E731
    m = torch.softmax(nodes(a2.distribute(x)), -1) @ torch.softmax(nodes(a2.gather(x)), -2).transpose(1, 2)
    assert torch.allclose(m.sum(-1), torch.ones(2, m.shape[1], dtype=torch.float64))  # rows of M sum to 1
    z = a2.g(x)
    expected = x + a2.bn(a2.out_proj[0](from_nodes(m @ nodes(z), "spacetime", z.shape)))
    torch.testing.assert_close(a2(x), expected, rtol=0, atol=1e-10)


def test_cgnl_with_one_group_is_the_channel_graph(x):
    cgnl = CGNL(8, 4, kernel="dot").double().eval()
    with torch.no_grad():
        cgnl.bn.weight.normal_()
    vec = lambda t: t.flatten(1)  # noqa: E731  vec over (channel, position): N·Cs nodes per clip
    theta, phi, g = vec(cgnl.theta(x)), vec(cgnl.phi(x)), vec(cgnl.g(x))
    mf = theta.unsqueeze(-1) * phi.unsqueeze(-2)  # NCs × NCs, f = dot product of scalars
    y = (mf @ g.unsqueeze(-1)).reshape(cgnl.theta(x).shape)
    expected = x + cgnl.bn(cgnl.out_proj[0](y))
    torch.testing.assert_close(cgnl(x), expected, rtol=0, atol=1e-10)


def test_snl_with_w1_zero_is_a_one_term_filter_on_a_symmetric_affinity(x):
    snl = SNL(8, 4).double().eval()
    one_term = NL(8, 4, kernel="relu_dot", norm="symmetric").double().eval()
    randomise_bn(snl)
    copy_affinity(snl, one_term)
    with torch.no_grad():
        snl.out_proj[0].weight.zero_()
        one_term.out_proj[0].weight.copy_(snl.out_proj[1].weight)
    a = snl.affinity(x)
    torch.testing.assert_close(a, a.transpose(1, 2), rtol=0, atol=1e-14)
    torch.testing.assert_close(snl(x), one_term(x), rtol=0, atol=1e-10)


def test_gsnl_with_two_terms_is_snl(x):
    snl, gsnl = SNL(8, 4).double().eval(), GSNL(8, 4, order=2).double().eval()
    randomise_bn(snl)
    gsnl.load_state_dict(snl.state_dict())
    torch.testing.assert_close(gsnl(x), snl(x), rtol=0, atol=1e-12)


def test_gsnl_terms_are_chebyshev_polynomials_of_a(x):
    theta, phi, z = (torch.randn(1, 10, 3, dtype=torch.float64) for _ in range(3))
    a = NF.snl_affinity(theta, phi)[0]
    eye = torch.eye(10, dtype=torch.float64)
    t2, t3 = 2 * a @ a - eye, 4 * a @ a @ a - 3 * a
    terms = NF.chebyshev_terms(NF.affinity_operator(theta, phi), z, z, 4)
    for term, poly in zip(terms, (eye, a, t2, t3)):
        torch.testing.assert_close(term[0], poly @ z[0], rtol=0, atol=1e-12)


def test_cc_attends_only_to_row_column_and_time_line():
    mask = NF.criss_cross_mask(2, 3, 4)
    assert mask.shape == (24, 24) and mask.sum(1).eq(1 + 3 + 2 + 1).all()  # self + row + column + time


# ------------------------------------------------------------------------------------------
# Zhu et al. 2021 (SNL), Table 6: one block at res4 of a 2D ResNet-50 (C1 = 1024, Cs = 512, 14×14 at 224 input)
# ------------------------------------------------------------------------------------------
def count(m):
    return sum(p.numel() for p in m.parameters())


def test_parameter_counts_of_table_6():
    c, cs = 1024, 512
    mat = c * cs  # one 1×1 projection without bias: 524,288
    bn = 2 * c
    assert count(NL(c, cs)) == 4 * mat + bn == 2_099_200  # table: +2.09 M
    assert count(SNL(c, cs)) == 5 * mat + bn == 2_623_488  # table: +2.62 M
    assert count(CGNL(c, cs)) == 4 * mat + bn == 2_099_200  # table: +2.09 M (one group)
    assert count(A2(c, cs)) == 4 * mat + bn == 2_099_200  # table: +2.62 M (see note: 4 projections here)
    assert count(GSNL(c, cs, order=3)) == 6 * mat + bn
    assert count(NS(c, cs, num_stages=2)) == 2 * mat + 2 * (2 * mat + bn)
    assert count(CC(c, cs)) == 4 * mat + bn


@pytest.mark.parametrize("explicit_max", [NF.SOFTMAX_EXPLICIT_MAX_SCORES, -1], ids=["default", "fused"])
@pytest.mark.parametrize("block,table_gflops", [(lambda: NL(1024, 512), 0.41), (lambda: SNL(1024, 512), 0.51)])
def test_flops_of_table_6(monkeypatch, block, table_gflops, explicit_max):
    """Multiply-adds (FlopCounterMode / 2) of one res4 block at 14×14: NL 0.450 G, SNL 0.553 G
    (the table leaves out the two N×N products). NL's softmax aggregation counts the same in both
    CPU forms (explicit matmuls at this size by default, the fused kernel when forced)."""
    monkeypatch.setattr(NF, "SOFTMAX_EXPLICIT_MAX_SCORES", explicit_max)
    x = torch.randn(1, 1024, 14, 14)
    blk = block().eval()
    gmacs = macs_by_module(blk, x)[""] / 1e9
    n = 14 * 14
    products = 2 * n * n * 512 / 1e9  # θφᵀ and its product with g: 0.039 G
    assert abs(gmacs - table_gflops) / table_gflops < 0.10, gmacs
    assert abs(gmacs - (table_gflops + products)) < 0.015, gmacs


# ------------------------------------------------------------------------------------------
# Gradients of the fast forms, and a graph the dense form could not hold
# ------------------------------------------------------------------------------------------
def r(*shape):
    return torch.randn(*shape, dtype=torch.float64, requires_grad=True)


@pytest.mark.parametrize("kernel,norm,bipartite", [
    ("embedded_gaussian", "softmax", False), ("dot", "mean", False), ("relu_dot", "random_walk", True),
    ("relu_dot", "symmetric", False), ("relu_dot", "symmetric", True), ("concatenation", "mean", False),
])
def test_gradcheck_affinity_operators(kernel, norm, bipartite):
    n, m = 6, (4 if bipartite else 6)
    w = (torch.randn(3, dtype=torch.float64), torch.randn(3, dtype=torch.float64)) if kernel == "concatenation" else None
    fn = lambda t, p, g: NF.affinity_operator(t, p, kernel, norm, bipartite, True, w)(g)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (r(2, n, 3), r(2, m, 3), r(2, m, 2)))


def test_gradcheck_other_fast_forms():
    assert torch.autograd.gradcheck(NF.double_attention_fast, (r(2, 5, 3), r(2, 6, 3), r(2, 5, 2)))
    assert torch.autograd.gradcheck(lambda t, p, g: NF.cgnl_fast(t, p, g, "gaussian", 3), (r(2, 8), r(2, 8), r(2, 8)))
    assert torch.autograd.gradcheck(NF.criss_cross_fast, (r(1, 2, 3, 2, 2), r(1, 2, 3, 2, 2), r(1, 2, 3, 2, 2)))
    terms = lambda t, p, z: torch.stack(NF.chebyshev_terms(NF.affinity_operator(t, p), z, z, 4))  # noqa: E731
    assert torch.autograd.gradcheck(terms, (r(1, 5, 2), r(1, 5, 2), r(1, 5, 2)))


def test_snl_fast_runs_on_res2_size_graph():
    """8×56×56 with C = 256: the dense affinity would be 25,088² floats (2.5 GB) per clip."""
    block = SNL(256, 128, implementation="fast").eval()
    x = torch.randn(1, 256, 8, 56, 56)
    with torch.no_grad():
        y = block(x)
    assert y.shape == x.shape and torch.isfinite(y).all()


@pytest.mark.parametrize("block_type", ["nl", "ns", "a2", "cgnl", "cc", "snl", "gsnl"])
@pytest.mark.parametrize("arch", ["c2d", "i3d"])
def test_every_type_from_config_in_the_backbones(block_type, arch):
    from vidnl.config import load_config
    from vidnl.models import build_model

    cfg = load_config(None, ["MODEL.ARCH", arch, "RESNET.DEPTH", "18", "RESNET.BASE_WIDTH", "4",
                             "MODEL.NUM_CLASSES", "3", "NONLOCAL.TYPE", block_type,
                             "NONLOCAL.LOCATION", "[[1], [0, 1], [], []]"])
    model = build_model(cfg)
    from vidnl.nonlocal_blocks import BLOCK_TYPES

    blocks = [m for m in model.modules() if isinstance(m, BLOCK_TYPES[block_type])]
    assert len(blocks) == 3
    out = model(torch.randn(2, 3, 4, 32, 32))
    assert out.shape == (2, 3) and torch.isfinite(out).all()


def test_config_rejects_options_the_type_does_not_take():
    from vidnl.config import ConfigError, load_config
    from vidnl.models import build_model

    # checked where the blocks are built (build_model), named by their NONLOCAL.* keys
    with pytest.raises(ConfigError, match="NONLOCAL.RECURRENCE"):
        build_model(load_config(None, ["NONLOCAL.TYPE", "snl", "NONLOCAL.RECURRENCE", "3", "NONLOCAL.LOCATION",
                                       "[[], [1], [], []]", "RESNET.BASE_WIDTH", "4"]))
    with pytest.raises(ConfigError, match="NONLOCAL.POOL"):
        build_model(load_config(None, ["NONLOCAL.TYPE", "cc", "NONLOCAL.POOL", "[1, 2, 2]", "NONLOCAL.LOCATION",
                                       "[[], [1], [], []]", "RESNET.BASE_WIDTH", "4"]))
    with pytest.raises(ConfigError, match="NONLOCAL.KERNEL"):
        load_config(None, ["NONLOCAL.KERNEL", "cosine"])


@pytest.mark.parametrize("mode", ["spacetime", "space", "time"])
def test_fused_attention_never_falls_back_to_the_math_kernel(monkeypatch, mode):
    """Non-contiguous or 3-D q/k/v make PyTorch fall back to the math kernel, which stores N×M
    (11 GB for an NL block at 8×56×56, batch 2, measured by benchmarks/nonlocal_blocks.py before
    this was fixed). With only the fused kernels allowed, the math one raises instead of running."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    monkeypatch.setattr(NF, "SOFTMAX_EXPLICIT_MAX_SCORES", -1)  # these small graphs would take the explicit form
    calls = []
    real = NF.F.scaled_dot_product_attention

    def counting(*a, **kw):
        calls.append(a[0].shape)
        return real(*a, **kw)
    monkeypatch.setattr(NF.F, "scaled_dot_product_attention", counting)
    for block in (NL(8, 4, mode=mode, implementation="fast"), NS(8, 4, mode=mode, num_stages=2, implementation="fast")):
        x = torch.randn(2, 8, 3, 4, 5, requires_grad=True)
        with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
            block(x).sum().backward()
        assert x.grad is not None
    assert len(calls) == 3 and all(len(s) == 4 and s[1] == 1 for s in calls)  # NL once, NS per stage; G×1×N×C
    with pytest.raises(RuntimeError), sdpa_kernel([SDPBackend.FLASH_ATTENTION]):  # the check itself can fail
        real(*(torch.randn(2, 1, 10, 8).transpose(-1, -2),) * 3)
