"""The Python API without a config: vidnl.list_models / create_model."""

import pytest
import torch

import vidnl
from vidnl.models.weights import CheckpointError
from vidnl.errors import ConfigError
from vidnl.nonlocal_blocks.blocks import NonLocalBase

IMAGE_MODELS = ("resnet2d", "preresnet")


def tiny_input(name: str) -> torch.Tensor:
    if name.startswith("preresnet"):
        return torch.randn(2, 3, 32, 32)
    t = 1 if name.startswith(IMAGE_MODELS) else 8
    return torch.randn(2, 3, t, 64, 64)


@pytest.mark.parametrize("name", vidnl.list_models())
def test_every_name_builds_and_runs(name):
    width = {} if name.startswith("preresnet") else {"RESNET.BASE_WIDTH": 4}
    model = vidnl.create_model(name, num_classes=3, config=width).eval()
    assert isinstance(model, torch.nn.Module) and vidnl.describe_model(name)
    with torch.no_grad():
        out = model(tiny_input(name))
    if name == "resnet50tp":  # re-ID: the test-time embedding
        assert out.shape[0] == 2 and out.dim() == 2
    else:
        assert out.shape == (2, 3)


def test_names_fix_the_architecture():
    assert {"i3d_r50", "c2d_r50", "slow_r50", "i3d_table1_r50", "p3d199", "mars_rx101", "vtn_r50",
            "preresnet56", "resnet50tp", "resnet3d_r50", "resnext3d_r101"} <= set(vidnl.list_models())
    assert vidnl.list_models("slow*") == ["slow_r101", "slow_r18", "slow_r50"]
    # the released 8x8 I3D: 8 frames stay 8 until pool2 halves them; Table 1's stem halves them first
    x = torch.randn(1, 3, 8, 64, 64)
    for name, frames in (("i3d_r50", 4), ("i3d_table1_r50", 1)):
        m = vidnl.create_model(name, num_classes=2, config={"RESNET.BASE_WIDTH": 4}).eval()
        with torch.no_grad():
            assert m.forward_features(x).shape[2] == frames, name
    slow = vidnl.create_model("slow_r50", num_classes=2, config={"RESNET.BASE_WIDTH": 4})
    assert slow.stages[0].blocks[0].conv1.kernel_size[0] == 1 and slow.stages[2].blocks[0].conv1.kernel_size[0] == 3


def test_nonlocal_blocks_by_keyword():
    loc = [[], [1, 3], [1, 3, 5], []]
    model = vidnl.create_model("i3d_r50", num_classes=5, nonlocal_blocks=dict(type="snl", location=loc),
                               config={"RESNET.BASE_WIDTH": 8})
    blocks = [n for n, m in model.named_modules() if isinstance(m, NonLocalBase)]
    assert len(blocks) == 5 and all(type(model.get_submodule(n)).__name__ == "SNL" for n in blocks)
    assert vidnl.create_model("i3d_r18", num_classes=5, config={"RESNET.BASE_WIDTH": 4}).eval()(
        torch.randn(1, 3, 8, 32, 32)).shape == (1, 5)
    with pytest.raises(ConfigError, match="NONLOCAL.TYPE"):
        vidnl.create_model("i3d_r50", nonlocal_blocks=dict(type="snll", location=loc))
    with pytest.raises(ConfigError, match="NONLOCAL.LOCATION"):
        vidnl.create_model("i3d_r50", nonlocal_blocks=dict(type="snl", location=[[], [9], [], []]))
    with pytest.raises(ConfigError, match="Unknown config key 'NONLOCAL.KERNAL'"):
        vidnl.create_model("i3d_r50", nonlocal_blocks=dict(type="nl", kernal="dot"))
    with pytest.raises(ConfigError, match="did you mean|Did you mean"):
        vidnl.create_model("i3d_r5O")


def test_pretrained_weights_load_strictly(tmp_path):
    kw = dict(num_classes=4, nonlocal_blocks=dict(type="nl", location=[[], [1], [], []]),
              config={"RESNET.BASE_WIDTH": 4})
    src = vidnl.create_model("i3d_r18", **kw).eval()
    for p in src.parameters():
        p.data.normal_()
    path = tmp_path / "w.pyth"
    torch.save({"model_state": src.state_dict()}, path)
    dst = vidnl.create_model("i3d_r18", pretrained=str(path), **kw).eval()
    x = torch.randn(1, 3, 8, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(dst(x), src(x))
    # a checkpoint that does not fit is an error, not a warning; the head may be skipped on purpose
    with pytest.raises(CheckpointError):
        vidnl.create_model("i3d_r18", pretrained=str(path), **{**kw, "num_classes": 7})
    vidnl.create_model("i3d_r18", pretrained=str(path), skip=["head.*"], **{**kw, "num_classes": 7})
