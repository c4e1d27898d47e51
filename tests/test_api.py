"""The Python API without a config: vidnl.list_models / create_model."""

import pytest
import torch

import vidnl
from vidnl.api import model_config
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
    # preresnet: CIFAR widths; vtn_r34: a torchvision ResNet-34 per frame (width 64 only)
    width = {} if name.startswith(("preresnet", "vtn_r")) else {"RESNET.BASE_WIDTH": 4}
    model = vidnl.create_model(name, num_classes=3, config=width).eval()
    assert isinstance(model, torch.nn.Module) and vidnl.describe_model(name)
    with torch.no_grad():
        out = model(tiny_input(name))
    if name == "resnet50tp":  # re-ID: the test-time embedding
        assert out.shape[0] == 2 and out.dim() == 2
    else:
        assert out.shape == (2, 3)


def test_names_fix_the_architecture():
    assert {"i3d_r50", "c2d_r50", "slow_r50", "i3d_table1_r50", "p3d199", "mars_rx101", "vtn_r34", "vtn_vit_r50",
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


# ------------------------------------------------------------------------------------------------
# Arguments taken the way they are written: a string is one pattern / name, never its letters; a
# config that contradicts the name or another argument is an error naming both
# ------------------------------------------------------------------------------------------------
TINY = {"RESNET.BASE_WIDTH": 4}


def _checkpoint(tmp_path, num_classes=4):
    src = vidnl.create_model("i3d_r18", num_classes=num_classes, config=TINY).eval()
    for p in src.parameters():
        p.data.normal_()
    path = tmp_path / "w.pyth"
    torch.save({"model_state": src.state_dict()}, path)
    return src, path


def test_skip_as_one_string_is_one_pattern(tmp_path):
    src, path = _checkpoint(tmp_path)
    for pretrained in (str(path), path):  # a path as a string or a Path
        dst = vidnl.create_model("i3d_r18", num_classes=7, config=TINY, pretrained=pretrained, skip="head.*")
        loaded = {k: v for k, v in dst.state_dict().items() if not k.startswith("head.")}
        assert len(loaded) > 100
        for k, v in loaded.items():
            torch.testing.assert_close(v, src.state_dict()[k], msg=k)
    # a pattern that matches no key is a typo, named; patterns that skip everything pretrain nothing
    with pytest.raises(ConfigError, match=r"'haed\.\*' matches no tensor"):
        vidnl.create_model("i3d_r18", num_classes=4, config=TINY, pretrained=path, skip=["head.*", "haed.*"])
    with pytest.raises(CheckpointError, match="leaves no model parameter to load"):
        vidnl.create_model("i3d_r18", num_classes=4, config=TINY, pretrained=path, skip="*")
    with pytest.raises(TypeError, match="skip"):
        vidnl.create_model("i3d_r18", num_classes=4, config=TINY, pretrained=path, skip=["head.*", 3])
    with pytest.raises(ConfigError, match="no pretrained checkpoint"):
        vidnl.create_model("i3d_r18", num_classes=4, config=TINY, skip="head.*")


def test_pretrained_and_weights_format_arguments(tmp_path):
    with pytest.raises(TypeError, match="downloads no weights"):
        vidnl.create_model("i3d_r18", config=TINY, pretrained=True)
    with pytest.raises(CheckpointError, match="is a folder"):
        vidnl.create_model("i3d_r18", config=TINY, pretrained=tmp_path)
    _, path = _checkpoint(tmp_path)
    with pytest.raises(ConfigError, match="weights_format: 'pyslowfst' is not allowed"):
        vidnl.create_model("i3d_r18", num_classes=4, config=TINY, pretrained=path, weights_format="pyslowfst")


def test_nonlocal_blocks_need_a_dict_with_a_location():
    with pytest.raises(TypeError, match=r"dict\(type='snl', location=.*res5 of \[2, 2, 2, 2\] .*\[\[\], \[1\], \[1\], \[\]\]"):
        vidnl.create_model("i3d_r18", config=TINY, nonlocal_blocks="snl")
    with pytest.raises(TypeError, match="nonlocal_blocks"):
        vidnl.create_model("i3d_r18", config=TINY, nonlocal_blocks=["snl"])
    # a type without a location would insert no block at all
    with pytest.raises(ConfigError, match="does not say where the blocks go"):
        vidnl.create_model("i3d_r18", config=TINY, nonlocal_blocks=dict(type="nl"))
    model = vidnl.create_model("i3d_r18", config={**TINY, "NONLOCAL.LOCATION": [[], [1], [], []]},
                               nonlocal_blocks=dict(type="nl"))
    assert [type(m).__name__ for m in model.modules() if isinstance(m, NonLocalBase)] == ["NL"]


def test_config_that_contradicts_the_name_or_an_argument():
    with pytest.raises(ConfigError, match=r"'MODEL.ARCH': 'c2d'.*the model name 'i3d_r50'.*'i3d'"):
        model_config("i3d_r50", config={"MODEL.ARCH": "c2d"})
    with pytest.raises(ConfigError, match=r"'RESNET.DEPTH': 18.*'i3d_r50'.*50"):
        model_config("i3d_r50", config={"RESNET": {"DEPTH": 18}})  # nested keys are the same keys
    with pytest.raises(ConfigError, match=r"RESNET.POOL2_TEMPORAL.*'slow_r50'"):
        model_config("slow_r50", config={"RESNET.POOL2_TEMPORAL": [2, 2, 0]})
    with pytest.raises(ConfigError, match=r"'MODEL.NUM_CLASSES': 7.*num_classes=5"):
        model_config("i3d_r50", num_classes=5, config={"MODEL.NUM_CLASSES": 7})
    with pytest.raises(ConfigError, match=r"'NONLOCAL.TYPE': 'nl'.*nonlocal_blocks="):
        model_config("i3d_r50", nonlocal_blocks=dict(type="snl", location=[[], [1], [], []]),
                           config={"NONLOCAL.TYPE": "nl"})
    # repeating a value is fine; the input settings (DATA.*) are the name's defaults only
    cfg = model_config("i3d_r50", num_classes=5, config={"MODEL": {"ARCH": "i3d", "NUM_CLASSES": 5},
                                                                "RESNET.DEPTH": 50, "DATA.NUM_FRAMES": 16})
    assert (cfg.MODEL.ARCH, cfg.RESNET.DEPTH, cfg.MODEL.NUM_CLASSES, cfg.DATA.NUM_FRAMES) == ("i3d", 50, 5, 16)
    cfg = model_config("slow_r50", config={"RESNET.POOL2_TEMPORAL": (), "RESNET.DEPTH": 50.0})
    assert list(cfg.RESNET.POOL2_TEMPORAL) == [] and cfg.RESNET.DEPTH == 50
    with pytest.raises(TypeError, match="expected a dict of config keys"):
        model_config("i3d_r50", config=["RESNET.BASE_WIDTH", 16])


def test_public_functions_take_their_arguments_as_written():
    assert vidnl.list_models(["slow_r1*", "c2d_r18"]) == ["c2d_r18", "slow_r101", "slow_r18"]
    with pytest.raises(TypeError, match="pattern"):
        vidnl.list_models(3)
    with pytest.raises(TypeError, match="model name"):
        vidnl.describe_model(["i3d_r50"])
    assert vidnl.model_config("i3d_r18").RESNET.DEPTH == 18  # exported with the others
    # vidnl.predict is one callable object however often it is looked up (the submodule calls predict)
    first, again = vidnl.predict, vidnl.predict
    assert first is again and callable(first)
    with pytest.raises(ValueError, match="either cfg or clip"):
        vidnl.predict(["a.mp4"], torch.nn.Linear(1, 1))


def test_config_may_narrow_a_named_model():
    """The width of a named network (RESNET.BASE_WIDTH) is not its identity: a narrow copy for
    a quick test is allowed, unlike another MODEL.ARCH or RESNET.DEPTH."""
    assert model_config("preresnet20", config={"RESNET.BASE_WIDTH": 8}).RESNET.BASE_WIDTH == 8
