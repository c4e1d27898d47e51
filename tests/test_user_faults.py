"""Faults that are the user's to fix, refused with one message naming the key or the file: too few
frames for a network's temporal strides (DATA.NUM_FRAMES, at model-build time), and class lists
read the same way everywhere (a UTF-8 byte-order mark is UTF-8)."""

from __future__ import annotations

import os

import pytest
import torch

import vidnl
from conftest import ROOT
from vidnl.config import load_config
from vidnl.data.class_names import read_class_names
from vidnl.errors import ConfigError, DatasetError
from vidnl.models import build_model
from vidnl.models.build import MODEL_REGISTRY
from vidnl.predict import PredictInputError, read_class_names as predict_class_names

TINY = ["RESNET.BASE_WIDTH", "4", "NUM_GPUS", "0", "DATA.TEST_CROP_SIZE", "32", "DATA.TRAIN_CROP_SIZE", "32",
        "DATA.TRAIN_JITTER_SCALES", "[32, 40]"]


def _runs(cfg) -> bool:
    """Whether the model of ``cfg``, built without the frames check, runs a real forward pass on
    its input (the check's minimum must be the network's, not a number written down)."""
    from vidnl.models.build import model_input

    model = MODEL_REGISTRY[cfg.MODEL.ARCH](cfg).eval()
    try:
        with torch.no_grad():
            model(torch.randn((1,) + model_input(cfg)[1]))
        return True
    except RuntimeError:
        return False


@pytest.mark.parametrize("cfg_file, extra, minimum", [
    ("Kinetics/I3D_8x8_R50.yaml", [], 2),  # pool2 2×1×1 stride 2
    ("Synthetic/I3D_R18_SNL.yaml", ["RESNET.POOL2_TEMPORAL", "[5, 3, 0]"], 5),
    ("Synthetic/I3D_R18_SNL.yaml", ["RESNET.STEM_TEMPORAL_STRIDE", "4", "RESNET.POOL1_TEMPORAL", "[3, 2]"], 9),
    ("UCF101/P3D199.yaml", ["RESNET.DEPTH", "63"], 2),
])
def test_too_few_frames_is_a_config_error_with_the_networks_minimum(cfg_file, extra, minimum):
    path = os.path.join(ROOT, "configs", cfg_file)
    cfg = load_config(path, TINY + extra + ["DATA.NUM_FRAMES", "1"])
    with pytest.raises(ConfigError, match=rf"^DATA.NUM_FRAMES: 1 frame is too few .* need at least {minimum} frames"):
        build_model(cfg)
    below = load_config(path, TINY + extra + ["DATA.NUM_FRAMES", str(minimum - 1)])
    at = load_config(path, TINY + extra + ["DATA.NUM_FRAMES", str(minimum)])
    assert not _runs(below) and _runs(at)
    if minimum > 2:
        with pytest.raises(ConfigError, match=rf"DATA.NUM_FRAMES: {minimum - 1} frames are too few"):
            build_model(below)
    assert build_model(at) is not None


def test_frames_check_keeps_what_runs():
    # no temporal pooling: one frame is a clip (as benchmarks/receptive_field_study.py builds it)
    model = vidnl.create_model("i3d_r18", num_classes=2, config={"RESNET.BASE_WIDTH": 4, "DATA.NUM_FRAMES": 1,
                                                                 "RESNET.POOL2_TEMPORAL": []})
    assert model.training  # the check's eval-mode meta pass leaves the model's modes as they were
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 3, 1, 32, 32)).shape == (1, 2)
    with pytest.raises(ConfigError, match="DATA.NUM_FRAMES: 1 frame is too few .* at least 2 frames.*pool2"):
        vidnl.create_model("i3d_r18", config={"RESNET.BASE_WIDTH": 4, "DATA.NUM_FRAMES": 1})
    # a model's own refusal of its input is the config's error too
    with pytest.raises(ConfigError, match="DATA.NUM_FRAMES 16: VTN got 16 frames, more than VTN.MAX_FRAMES=8"):
        vidnl.create_model("vtn_vit_r50", config={"RESNET.BASE_WIDTH": 4, "DATA.NUM_FRAMES": 16, "VTN.MAX_FRAMES": 8})


def test_a_tool_reports_too_few_frames_as_a_user_error(tmp_path, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("tool_export", os.path.join(ROOT, "tools", "export.py"))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    cfg_file = os.path.join(ROOT, "configs", "Synthetic", "I3D_R18_SNL.yaml")
    weights = tmp_path / "w.pyth"
    torch.save({"model_state": build_model(load_config(cfg_file, TINY)).state_dict()}, weights)
    rc = tool.main(["--cfg", cfg_file, "--weights", str(weights), "--format", "torch_export", str(tmp_path / "m.pt2")]
                   + TINY + ["DATA.NUM_FRAMES", "1"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err and "internal error" not in err
    assert "DATA.NUM_FRAMES: 1 frame is too few" in err and "at least 2 frames" in err


# ------------------------------------------------------------------------------------------------
# Class lists
# ------------------------------------------------------------------------------------------------
def test_class_lists_read_the_same_everywhere(tmp_path):
    f = tmp_path / "classes.txt"
    for data in (b"\xef\xbb\xbf0 right\n1 left\n", b"0 right\r\n1 left\r\n", b"\xef\xbb\xbf1 left\n0 right\n",
                 b"\xef\xbb\xbfright\nleft\n"):
        f.write_bytes(data)
        assert read_class_names(str(f)) == ["right", "left"], data
        assert predict_class_names(str(f)) == ["right", "left"], data
    f.write_bytes("0 caf\xe9\n".encode("latin-1"))
    with pytest.raises(DatasetError, match=r"classes.txt:1: not UTF-8 text \(byte 0xe9\)"):
        read_class_names(str(f))
    with pytest.raises(PredictInputError, match="not UTF-8"):
        predict_class_names(str(f))
    for reader, error in ((read_class_names, DatasetError), (predict_class_names, PredictInputError)):
        with pytest.raises(error, match="is a folder; expected a class names file"):
            reader(str(tmp_path))


def test_the_test_path_reads_a_class_list_as_predict_does(tmp_path):
    """A classes.txt with a byte-order mark and CRLF line ends (as Windows editors write it):
    the test path (UCF-101 / Kinetics classes.txt) reads the names predict reads."""
    from vidnl.data.class_names import read_class_names
    from vidnl.data.datasets.ucf101 import read_classes

    path = tmp_path / "classes.txt"
    path.write_bytes(b"\xef\xbb\xbf0 right turn\r\n1 left\r\n")
    assert read_classes(str(path)) == read_class_names(str(path)) == ["right turn", "left"]
