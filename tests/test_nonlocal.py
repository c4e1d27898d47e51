import pytest
import torch

from vidnl.config import load_config
from vidnl.models import build_model
from vidnl.nonlocal_blocks import NL, SNL, functional as NF, insert_nonlocal
from vidnl.nonlocal_blocks.blocks import from_nodes, to_nodes

torch.manual_seed(0)


def rand(*shape):
    return torch.randn(*shape, dtype=torch.float64)


@pytest.mark.parametrize("explicit", [True, False], ids=["explicit", "fused"])
@pytest.mark.parametrize("n,m", [(60, 60), (60, 17)])
def test_embedded_gaussian_fast_equals_dense_values_and_gradients(monkeypatch, n, m, explicit):
    """Both per-call forms of the fast softmax path (explicit scores, fused SDPA), forced by the
    threshold, against the dense reference in float64: values and gradients."""
    calls = []
    real = NF.F.scaled_dot_product_attention

    def spy(*a, **kw):
        calls.append(1)
        return real(*a, **kw)
    monkeypatch.setattr(NF.F, "scaled_dot_product_attention", spy)
    monkeypatch.setattr(NF, "SOFTMAX_EXPLICIT_MAX_SCORES", 3 * n * m if explicit else 3 * n * m - 1)
    theta, phi, g = (rand(3, k, 8).requires_grad_() for k in (n, m, m))
    dense = NF.embedded_gaussian_dense(theta, phi, g)
    manual = torch.stack([torch.softmax(theta[b] @ phi[b].T, 1) @ g[b] for b in range(3)])
    torch.testing.assert_close(dense, manual, rtol=0, atol=1e-12)
    assert NF.softmax_is_explicit(theta, phi) == explicit
    for fast in (NF.embedded_gaussian_fast(theta, phi, g),
                 NF.affinity_operator(theta, phi, "embedded_gaussian", "softmax")(g)):
        torch.testing.assert_close(fast, dense, rtol=0, atol=1e-10)
        w = rand(*dense.shape)
        gd = torch.autograd.grad((dense * w).sum(), (theta, phi, g), retain_graph=True)
        gf = torch.autograd.grad((fast * w).sum(), (theta, phi, g))
        for a, b in zip(gf, gd):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-10)
    assert len(calls) == (0 if explicit else 2)


def test_softmax_form_choice_at_the_i3d_sizes():
    """Default threshold: explicit scores for res4 (N = 784, 1568) at batch 2, a fused kernel
    from res3 (N = 6272) on and for res4 at batch 4; the same rule on every device."""
    def nodes(b, n, c, device="cpu"):  # shape only, no memory
        return torch.empty(1, 1, 1, device=device).expand(b, n, c)
    for device in ("cpu", "meta"):
        assert NF.softmax_is_explicit(nodes(2, 784, 512, device), nodes(2, 784, 512, device))
        assert NF.softmax_is_explicit(nodes(2, 1568, 512, device), nodes(2, 1568, 512, device))
        assert not NF.softmax_is_explicit(nodes(4, 1568, 512, device), nodes(4, 1568, 512, device))
        assert not NF.softmax_is_explicit(nodes(2, 6272, 256, device), nodes(2, 6272, 256, device))
        assert not NF.softmax_is_explicit(nodes(2, 25088, 128, device), nodes(2, 25088, 128, device))


@pytest.mark.parametrize("bipartite,m", [(False, 50), (True, 13)])
def test_snl_fast_equals_dense_values_and_gradients(bipartite, m):
    theta = rand(2, 50, 6).requires_grad_()
    phi = rand(2, m, 6).requires_grad_()
    g = rand(2, m, 6).requires_grad_()
    dense = NF.snl_dense(theta, phi, g, bipartite)
    fast = NF.snl_fast(theta, phi, g, bipartite)
    torch.testing.assert_close(fast, dense, rtol=0, atol=1e-10)
    w = rand(*dense.shape)
    gd = torch.autograd.grad((dense * w).sum(), (theta, phi, g))
    gf = torch.autograd.grad((fast * w).sum(), (theta, phi, g))
    for a, b in zip(gf, gd):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)


def test_snl_affinity_is_the_papers_matrix():
    theta, phi = rand(1, 30, 5), rand(1, 30, 5)
    a = NF.snl_affinity(theta, phi)[0]
    m = torch.relu(theta[0]) @ torch.relu(phi[0]).T
    m = (m + m.T) / 2
    d = m.sum(1).rsqrt()
    torch.testing.assert_close(a, d[:, None] * m * d[None, :], rtol=0, atol=1e-12)
    torch.testing.assert_close(a, a.T, rtol=0, atol=1e-14)
    assert torch.linalg.eigvalsh(a).abs().max() <= 1 + 1e-9  # normalised: spectrum in [-1, 1]


def test_snl_zero_degree_rows_give_zero_and_finite_gradients():
    theta, phi, g = rand(1, 10, 4), rand(1, 10, 4), rand(1, 10, 4)
    theta[0, 3] = -1.0
    phi[0, 3] = -1.0  # node 3 has no edges
    theta.requires_grad_()
    out = NF.snl_fast(theta, phi, g)
    assert torch.all(out[0, 3] == 0)
    out.sum().backward()
    assert torch.isfinite(theta.grad).all()
    torch.testing.assert_close(out, NF.snl_dense(theta, phi, g), rtol=0, atol=1e-10)


@pytest.mark.parametrize("cls", [NL, SNL])
@pytest.mark.parametrize("mode", ["spacetime", "space", "time"])
@pytest.mark.parametrize("pool", [None, (2, 2, 2)])
def test_block_fast_equals_dense(cls, mode, pool):
    x = rand(2, 8, 4, 5, 6)
    fast = cls(8, 4, mode=mode, pool_size=pool, implementation="fast", zero_init_final_bn=False).double().eval()
    dense = cls(8, 4, mode=mode, pool_size=pool, implementation="dense", zero_init_final_bn=False).double().eval()
    dense.load_state_dict(fast.state_dict())
    with torch.no_grad():
        fast.bn.running_var.fill_(2.0)
        dense.bn.running_var.fill_(2.0)
    y = fast(x)
    assert not torch.allclose(y, x)
    torch.testing.assert_close(y, dense(x), rtol=0, atol=1e-10)


def test_node_layouts_round_trip():
    t = rand(2, 3, 4, 5, 6)
    for mode in ("spacetime", "space", "time"):
        nodes = to_nodes(t, mode)
        expected = {"spacetime": (2, 120, 3), "space": (8, 30, 3), "time": (60, 4, 3)}[mode]
        assert nodes.shape == expected
        assert torch.equal(from_nodes(nodes, mode, t.shape), t)
    # a "space" graph holds the positions of one frame
    assert torch.equal(to_nodes(t, "space")[1 * 4 + 2], t[1, :, 2].flatten(1).T)


@pytest.mark.parametrize("cls", [NL, SNL])
def test_zero_init_block_is_identity(cls):
    x = torch.randn(2, 16, 3, 6, 6)
    block = cls(16).train()
    assert torch.equal(block(x), x)
    assert torch.equal(block.eval()(x), x)


def test_insertion_places_blocks_after_the_right_residual_blocks():
    base = build_model(load_config(None, ["RESNET.BASE_WIDTH", "8", "MODEL.NUM_CLASSES", "5"]))
    cfg = load_config(None, ["RESNET.BASE_WIDTH", "8", "MODEL.NUM_CLASSES", "5",
                             "NONLOCAL.LOCATION", "[[], [1, 3], [1, 3, 5], []]", "NONLOCAL.TYPE", "nl"])
    model = build_model(cfg)
    blocks = [(n, m) for n, m in model.named_modules() if isinstance(m, NL)]
    assert [n for n, _ in blocks] == ["res3.nonlocal_blocks.1", "res3.nonlocal_blocks.3",
                                      "res4.nonlocal_blocks.1", "res4.nonlocal_blocks.3",
                                      "res4.nonlocal_blocks.5"]
    assert [m.dim for _, m in blocks] == [64, 64, 128, 128, 128]  # res3 8·2·4, res4 8·4·4 (paper: 512, 1024)
    # backbone parameter names are unchanged by the insertion
    assert set(base.state_dict()) <= set(model.state_dict())
    # execution order: res3 block 1, then its NL, then res3 block 2
    order = []
    for name, m in [("b1", model.res3.blocks[1]), ("nl", model.res3.nonlocal_blocks["1"]),
                    ("b2", model.res3.blocks[2])]:
        m.register_forward_hook(lambda *_, name=name: order.append(name))
    model.eval()(torch.randn(1, 3, 4, 64, 64))
    assert order == ["b1", "nl", "b2"]


def test_insertion_rejects_out_of_range_indices():
    model = build_model(load_config(None, ["RESNET.DEPTH", "18", "RESNET.BASE_WIDTH", "4"]))
    with pytest.raises(ValueError, match="res3 with 2 blocks"):
        insert_nonlocal(model.stages, [[], [2]], lambda c: SNL(c), model.stage_names)


def test_auto_cost_model_at_the_i3d_sizes_per_device(monkeypatch):
    """`implementation: auto` for dot-product kernels (SNL), batch 2: dense at res4 4×14×14
    everywhere; the factored form at res4 8×14×14 (r ≈ 1.5) on the CPU only (on a GPU dense needs
    too few multiply-adds there to pay for the factored form's kernels, measured by
    benchmarks/nonlocal_blocks.py --tables crossover); factored at res3 / res2 everywhere."""
    cases = {(784, 512): (False, False), (1568, 512): (True, False), (6272, 256): (True, True),
             (25088, 128): (True, True), (2048, 256): (True, False), (3072, 256): (True, True)}
    for (n, cs), (cpu, cuda) in cases.items():
        assert NF.snl_fast_is_cheaper(n, n, cs, "cpu", 2) == cpu
        assert NF.snl_fast_is_cheaper(n, n, cs, "cuda", 2) == cuda, (n, cs)
        assert NF.fast_is_cheaper("relu_dot", n, n, cs, cs, num_graphs=2) == cpu  # default: CPU
    # the GPU threshold is on the whole call: a big batch of res4 8×14×14 clips goes factored
    assert NF.snl_fast_is_cheaper(1568, 1568, 512, "cuda", 8) and not NF.snl_fast_is_cheaper(1568, 1568, 512, "cuda", 2)
    # r < 1 stays dense on any batch
    assert not NF.snl_fast_is_cheaper(784, 784, 512, "cuda", 1000)
    # softmax / concatenation forms do not depend on the FLOP model
    assert NF.fast_is_cheaper("embedded_gaussian", 10, 10, 512, 512, "cuda")
    # blocks pass their input's device type (a spy on the model's arguments)
    seen = []
    real = NF.fast_is_cheaper

    def spy(*a):
        seen.append(a)
        return real(*a)
    monkeypatch.setattr(NF, "fast_is_cheaper", spy)
    from vidnl.nonlocal_blocks import SNL
    SNL(8, 4, implementation="auto")(torch.randn(1, 8, 2, 3, 3))
    assert seen and seen[0][-2:] == ("cpu", 1) and seen[0][1:5] == (18, 18, 4, 4)
