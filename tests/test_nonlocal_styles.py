"""The paper / official options of the nonlocal blocks and their config keys.

The official forms themselves are compared with the peers' formulas in
tests/test_pretrained_interop.py (pytorchvideo's NonLocal, the official SNL and CGNL blocks);
here: what each single option changes, and that the config rejects what it cannot build.
"""

from __future__ import annotations

import pytest
import torch

from vidnl.config import load_config
from vidnl.errors import ConfigError
from vidnl.nonlocal_blocks import build_nonlocal_block
from vidnl.nonlocal_blocks.blocks import to_nodes


def _eval(block):
    return block.double().eval()


def test_style_sets_the_official_options_and_keys_override_them():
    nl = build_nonlocal_block("nl", 16, style="official")
    assert nl.theta.bias is not None and nl.softmax_scale and nl.pool_at == "input"
    nl = build_nonlocal_block("nl", 16, style="official", bias=False, pool_at="projection")
    assert nl.theta.bias is None and nl.softmax_scale and nl.pool_at == "projection"
    paper = build_nonlocal_block("nl", 16)
    assert paper.theta.bias is None and not paper.softmax_scale and paper.pool_at == "projection"
    cg = build_nonlocal_block("cgnl", 16, style="official", groups=4)
    assert isinstance(cg.bn, torch.nn.GroupNorm) and cg.beta == "constant" and cg.gamma == 1e-4
    assert isinstance(build_nonlocal_block("cgnl", 16, groups=4).bn, torch.nn.BatchNorm3d)
    assert build_nonlocal_block("snl", 16, style="official").output_activation == "relu"
    with pytest.raises(ValueError, match="no official code"):
        build_nonlocal_block("cc", 16, style="official")


def test_a_sign_flips_the_odd_chebyshev_terms():
    torch.manual_seed(0)
    x = torch.randn(2, 8, 3, 4, 5, dtype=torch.float64)
    for order in (2, 3):
        plus = _eval(build_nonlocal_block("gsnl", 8, dim_inner=4, order=order))
        minus = _eval(build_nonlocal_block("gsnl", 8, dim_inner=4, order=order, a_sign=-1))
        minus.load_state_dict(plus.state_dict())
        with torch.no_grad():
            z = plus.g(x)
            theta, phi = plus.affinity_inputs(x)
            odd = plus.out_proj[1](_apply_dense(theta, phi, z))  # W2 A z: the only odd term for K <= 3
            assert torch.allclose(plus.residual(x) - minus.residual(x), 2 * odd, atol=1e-10)


def _apply_dense(theta, phi, z):
    """A z with A = D^-½ ((M+Mᵀ)/2) D^-½, M = relu(θ) relu(φ)ᵀ, written out here."""
    m = torch.relu(theta) @ torch.relu(phi).transpose(-1, -2)
    m = 0.5 * (m + m.transpose(-1, -2))
    d = m.sum(-1).rsqrt()
    a = d.unsqueeze(-1) * m * d.unsqueeze(-2)
    zn = to_nodes(z, "spacetime")
    return (a @ zn).transpose(1, 2).reshape(z.shape)


def test_output_activation_relu_is_applied_after_the_bn():
    torch.manual_seed(1)
    x = torch.randn(2, 8, 2, 3, 3, dtype=torch.float64)
    block = _eval(build_nonlocal_block("snl", 8, dim_inner=4, output_activation="relu"))
    torch.nn.init.normal_(block.bn.weight)
    with torch.no_grad():
        assert torch.allclose(block(x), x + torch.relu(block.bn(block.residual(x))), atol=1e-12)
        block.output_activation = "none"
        assert torch.allclose(block(x), x + block.bn(block.residual(x)), atol=1e-12)


def test_pool_at_input_pools_x_before_the_projection():
    torch.manual_seed(2)
    x = torch.randn(1, 8, 2, 4, 4, dtype=torch.float64)
    block = _eval(build_nonlocal_block("nl", 8, dim_inner=4, pool_size=[1, 2, 2], pool_at="input", bias=True))
    pooled = torch.nn.functional.max_pool3d(x, (1, 2, 2))
    with torch.no_grad():
        assert torch.allclose(block.on_keys(block.phi, x), block.phi(pooled))
        block.pool_at = "projection"
        assert torch.allclose(block.on_keys(block.phi, x), torch.nn.functional.max_pool3d(block.phi(x), (1, 2, 2)))


def test_softmax_scale_divides_the_logits_by_sqrt_cs():
    torch.manual_seed(3)
    x = torch.randn(1, 8, 1, 3, 3, dtype=torch.float64)
    block = _eval(build_nonlocal_block("nl", 8, dim_inner=4, softmax_scale=True))
    with torch.no_grad():
        a = block.affinity(x)
        t, p = to_nodes(block.theta(x), "spacetime"), to_nodes(block.phi(x), "spacetime")
        assert torch.allclose(a, torch.softmax(t @ p.transpose(-1, -2) / 2.0, -1), atol=1e-12)


def _cfg(*opts):
    return load_config(None, ["NONLOCAL.LOCATION", "[[], [1], [], []]", "RESNET.DEPTH", "18",
                              "RESNET.BASE_WIDTH", "8", *opts])


def test_config_keys_reach_the_block_and_bad_values_are_errors():
    from vidnl.models import build_model

    model = build_model(_cfg("NONLOCAL.TYPE", "nl", "NONLOCAL.STYLE", "official", "NONLOCAL.BIAS", "False"))
    block = model.res3.nonlocal_blocks["1"]
    assert block.theta.bias is None and block.softmax_scale and block.pool_at == "input"
    model = build_model(_cfg("NONLOCAL.TYPE", "cgnl", "NONLOCAL.STYLE", "official", "NONLOCAL.GROUPS", "4",
                             "NONLOCAL.CGNL_BETA", "exact", "NONLOCAL.CGNL_GAMMA", "0.5", "NONLOCAL.KERNEL", "gaussian"))
    block = model.res3.nonlocal_blocks["1"]
    assert block.beta == "exact" and block.gamma == 0.5 and isinstance(block.bn, torch.nn.GroupNorm)
    with pytest.raises(ConfigError, match="NONLOCAL.TYPE 'cc'.*official"):  # checked where the blocks are built
        build_model(_cfg("NONLOCAL.TYPE", "cc", "NONLOCAL.STYLE", "official"))
    with pytest.raises(ConfigError, match="NONLOCAL.BIAS"):
        _cfg("NONLOCAL.BIAS", "'yes'")
    with pytest.raises(ConfigError, match="NONLOCAL.A_SIGN"):
        _cfg("NONLOCAL.A_SIGN", "2")
    with pytest.raises(ConfigError, match="NONLOCAL.TYPE 'nl'.*NONLOCAL.OUTPUT_ACTIVATION"):
        build_model(_cfg("NONLOCAL.TYPE", "nl", "NONLOCAL.OUTPUT_ACTIVATION", "relu"))
    with pytest.raises(ConfigError, match="RESNET.POOL2_TEMPORAL"):
        _cfg("RESNET.POOL2_TEMPORAL", "[2, 2]")
    with pytest.raises(ConfigError, match="RESNET.INFLATE_CONV"):
        _cfg("RESNET.INFLATE_CONV", "3x1")
