import os
import re
import subprocess
import sys

import pytest

from vidnl.config import ConfigError, get_cfg, load_config
from vidnl.config import defaults as defaults_module

from conftest import ROOT


def error_of(opts=(), cfg_file=None) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(cfg_file, list(opts))
    return str(info.value)


def test_defaults_are_valid_and_overrides_apply():
    cfg = load_config(None, ["SOLVER.BASE_LR", "0.25", "NONLOCAL.TYPE", "nl", "DATA.RANDOM_FLIP", "False"])
    assert cfg.SOLVER.BASE_LR == 0.25 and cfg.NONLOCAL.TYPE == "nl" and cfg.DATA.RANDOM_FLIP is False
    assert get_cfg().SOLVER.BASE_LR == 0.1  # defaults untouched


def test_unknown_key_suggests_closest_name():
    msg = error_of(["NONLOCAL.LOCATON", "[[], [1], [], []]"])
    assert "NONLOCAL.LOCATON" in msg and "NONLOCAL.LOCATION" in msg


def test_wrong_type_names_key_and_expected_type():
    msg = error_of(["SOLVER.BASE_LR", "fast"])
    assert "SOLVER.BASE_LR" in msg and "float" in msg and "fast" in msg
    assert "TRAIN.BATCH_SIZE" in error_of(["TRAIN.BATCH_SIZE", "2.5"])


def test_value_outside_allowed_set():
    msg = error_of(["MODEL.ARCH", "x3d"])
    assert "MODEL.ARCH" in msg and "'i3d'" in msg and "x3d" in msg


def test_nonlocal_location_out_of_range_and_too_many_stages():
    msg = error_of(["RESNET.DEPTH", "18", "NONLOCAL.LOCATION", "[[], [2], [], []]"])
    assert "NONLOCAL.LOCATION" in msg and "res3" in msg and "0..1" in msg
    msg = error_of(["NONLOCAL.LOCATION", "[[], [], [], [], [0]]"])
    assert "NONLOCAL.LOCATION" in msg and "5 stages" in msg
    # the paper's 5-block R50 placement is fine
    load_config(None, ["NONLOCAL.LOCATION", "[[], [1, 3], [1, 3, 5], []]"])


def test_odd_number_of_override_items():
    assert "KEY VALUE" in error_of(["SOLVER.BASE_LR"])


def test_base_inheritance_and_file_errors(tmp_path):
    (tmp_path / "base.yaml").write_text("SOLVER:\n  BASE_LR: 0.5\n  MAX_EPOCH: 7\nMODEL:\n  NUM_CLASSES: 10\n")
    (tmp_path / "child.yaml").write_text("_BASE_: base.yaml\nSOLVER:\n  BASE_LR: 0.01\n")
    cfg = load_config(str(tmp_path / "child.yaml"), ["MODEL.NUM_CLASSES", "11"])
    assert cfg.SOLVER.BASE_LR == 0.01 and cfg.SOLVER.MAX_EPOCH == 7 and cfg.MODEL.NUM_CLASSES == 11
    (tmp_path / "bad.yaml").write_text("_BASE_: base.yaml\nTRAIN:\n  BATCHSIZE: 4\n")
    msg = error_of(cfg_file=str(tmp_path / "bad.yaml"))
    assert "TRAIN.BATCHSIZE" in msg and "bad.yaml" in msg and "TRAIN.BATCH_SIZE" in msg
    assert "not found" in error_of(cfg_file=str(tmp_path / "nope.yaml"))


def test_every_default_key_is_commented():
    import glob

    files = glob.glob(os.path.join(os.path.dirname(defaults_module.__file__), "defaults*.py"))
    assert len(files) >= 3
    checked = 0
    for path in files:
        lines = open(path).read().splitlines()
        for i, line in enumerate(lines):
            m = re.match(r"^\s*_C\.([A-Z0-9_.]+) = (?!CfgNode\(\))", line)
            if m:
                checked += 1
                assert lines[i - 1].lstrip().startswith("#"), f"{path}: {m.group(1)} has no comment above it"
    # and every key of the merged defaults is one of those lines
    assert checked == sum(1 for _ in _leaves(get_cfg()))


def _leaves(node, prefix=""):
    for k, v in node.items():
        if isinstance(v, type(node)):
            yield from _leaves(v, prefix + k + ".")
        else:
            yield prefix + k


@pytest.mark.parametrize("opts_flag", [False, True])
def test_run_net_reports_config_errors_without_traceback(opts_flag):
    args = [sys.executable, os.path.join(ROOT, "tools", "run_net.py")]
    args += (["--opts"] if opts_flag else []) + ["MODEL.ARCH", "x3d"]
    proc = subprocess.run(args, capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2
    assert "MODEL.ARCH" in proc.stderr and "Traceback" not in proc.stderr


def test_every_shipped_config_loads_and_builds():
    import glob

    from vidnl.models import build_model

    files = sorted(glob.glob(os.path.join(ROOT, "configs", "**", "*.yaml"), recursive=True))
    assert len(files) >= 6
    for f in files:
        cfg = load_config(f, ["RESNET.BASE_WIDTH", "4"])  # tiny width: only the structure matters here
        build_model(cfg)
