"""TRAIN.CHANNELS_LAST: the same network, stored channels-last 3D. Each 3-D-conv family and every
nonlocal block computes what the contiguous model computes (eval outputs, training-mode outputs
and every parameter's gradient), checkpoints move between the two layouts, networks of 2-D
convolutions refuse it with a ConfigError, and a training run gives the contiguous run's losses."""

import copy

import numpy as np
import pytest
import torch

from vidnl.api import create_model
from vidnl.config import load_config
from vidnl.engine import train
from vidnl.errors import ConfigError
from vidnl.models.memory_format import uses_2d_convolutions

from conftest import tiny_opts
from test_engine import _train_iter_losses
from test_parameter_names import BLOCK_STYLES

# (model name, T, crop): 3-D-conv families at width 8
FAMILIES = [("c2d_r50", 4, 32), ("i3d_r50", 4, 32), ("slow_r50", 4, 32), ("i3d3x3x3_table1_r50", 8, 32),
            ("resnet3d_r18", 4, 32), ("resnext3d_r50", 4, 32), ("p3d63", 4, 32), ("mars_rx101", 4, 32)]


def _pair(name, **kw):
    """(contiguous model, channels-last model) with the same weights."""
    models = []
    for channels_last in (False, True):
        torch.manual_seed(0)
        models.append(create_model(name, num_classes=5, config={"RESNET.BASE_WIDTH": 8, "MODEL.DROPOUT_RATE": 0.0,
                                                                "TRAIN.CHANNELS_LAST": channels_last}, **kw))
    models[1].load_state_dict(models[0].state_dict())
    for m in models:  # non-trivial norms, so zero-initialised final BNs do not hide a branch
        g = torch.Generator().manual_seed(1)
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm3d):
                with torch.no_grad():
                    mod.weight.copy_(torch.rand(mod.weight.shape, generator=g) + 0.5)
                    mod.bias.copy_(torch.randn(mod.bias.shape, generator=g) * 0.1)
    return models


def _outputs_and_grads(model, x):
    """[eval output, training-mode output, every parameter's gradient of sum(eval output²)].
    Gradients are taken in eval mode: through training-mode BN over these tiny batches (res5 of a
    32² clip holds 4 values per channel) a change of summation order alone moves them by O(1)."""
    model.train()
    with torch.no_grad():
        train_out = model(x)
    model.eval()
    y = model(x)
    y.square().sum().backward()
    return [y.detach(), train_out] + [p.grad for p in model.parameters() if p.grad is not None]


def _assert_same_function(plain, fast, x):
    """``fast`` computes ``plain``'s function: compared with ``plain`` run in float64, its float32
    results are no farther off than the contiguous float32 model's are (3×, plus 1e-5 of the
    scale; another summation order is all that differs). A wrong layout is off by O(1)."""
    exact = _outputs_and_grads(copy.deepcopy(plain).double(), x.double())
    ref, got = _outputs_and_grads(plain, x), _outputs_and_grads(fast, x)
    assert len(exact) == len(ref) == len(got)

    def worst(results):
        return max(((r.double() - e).abs().max() / max(1.0, e.abs().max().item())).item()
                   for r, e in zip(results, exact))

    assert worst(got) <= 3 * worst(ref) + 1e-5, (worst(got), worst(ref))


@pytest.mark.parametrize("name,t,crop", FAMILIES)
def test_each_3d_family_is_the_same_function(name, t, crop):
    plain, fast = _pair(name)
    convs = [m for m in fast.modules() if isinstance(m, torch.nn.Conv3d)]
    assert convs and all(c.weight.is_contiguous(memory_format=torch.channels_last_3d) for c in convs)
    x = torch.randn(2, 3, t, crop, crop)
    _assert_same_function(plain, fast, x)


@pytest.mark.parametrize("block,style", BLOCK_STYLES)
def test_each_nonlocal_block_is_the_same_function(block, style):
    plain, fast = _pair("i3d_r18", nonlocal_blocks=dict(type=block, style=style, location=[[], [1], [0], []]))
    _assert_same_function(plain, fast, torch.randn(2, 3, 4, 32, 32))


def test_input_is_handed_over_channels_last():
    _, fast = _pair("i3d_r18")
    seen = []
    first_conv = next(m for m in fast.modules() if isinstance(m, torch.nn.Conv3d))
    first_conv.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    fast.eval()
    with torch.no_grad():
        fast(torch.randn(1, 3, 4, 32, 32))
    assert seen[0].is_contiguous(memory_format=torch.channels_last_3d)


def test_checkpoints_move_between_layouts():
    plain, fast = _pair("i3d_r18")
    names = [k for k in plain.state_dict()]
    assert names == [k for k in fast.state_dict()]
    for k, v in fast.state_dict().items():
        assert torch.equal(v, plain.state_dict()[k]), k


@pytest.mark.parametrize("name", ["resnet50tp", "preresnet56"])
def test_2d_networks_refuse_it(name):
    with torch.device("meta"):
        assert uses_2d_convolutions(create_model(name, num_classes=5))
        with pytest.raises(ConfigError, match="TRAIN.CHANNELS_LAST True does not fit MODEL.ARCH"):
            create_model(name, num_classes=5, config={"TRAIN.CHANNELS_LAST": True})


def test_training_run_gives_the_contiguous_losses(tiny_dataset, tmp_path):
    extra = {"SOLVER.MAX_EPOCH": 1, "TEST.ENABLE": True, "TRAIN.EVAL_PERIOD": 1}
    losses, results = {}, {}
    for name, opts in (("plain", {}), ("channels_last", {"TRAIN.CHANNELS_LAST": True})):
        out = train(load_config(None, tiny_opts(tiny_dataset, str(tmp_path / name), **extra, **opts)))
        losses[name] = _train_iter_losses(str(tmp_path / name))
        results[name] = out
    assert len(losses["plain"]) == 2
    np.testing.assert_allclose(losses["channels_last"], losses["plain"], rtol=0, atol=1e-4)
    conv = next(m for m in results["channels_last"]["model"].modules() if isinstance(m, torch.nn.Conv3d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last_3d)
