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


def build_error_of(opts=()) -> str:
    """The ConfigError of building the model: what the models know (MODEL.ARCH, stages,
    NONLOCAL.LOCATION, block options) is checked by build_model, not by load_config."""
    from vidnl.models import build_model

    cfg = load_config(None, ["RESNET.BASE_WIDTH", "4"] + list(opts))  # loads: the config package does not know models
    with pytest.raises(ConfigError) as info:
        build_model(cfg)
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
    msg = error_of(["MODEL.TASK", "detection"])
    assert "MODEL.TASK" in msg and "'classification'" in msg and "detection" in msg
    msg = build_error_of(["MODEL.ARCH", "x3d"])
    assert msg.startswith("MODEL.ARCH: 'x3d' is not allowed; choose one of ") and "'i3d'" in msg


def test_nonlocal_location_out_of_range_and_too_many_stages():
    from vidnl.models.build import check_model_config

    msg = build_error_of(["RESNET.DEPTH", "18", "NONLOCAL.LOCATION", "[[], [2], [], []]"])
    assert "NONLOCAL.LOCATION" in msg and "res3" in msg and "0..1" in msg
    msg = build_error_of(["NONLOCAL.LOCATION", "[[], [], [], [], [0]]"])
    assert "NONLOCAL.LOCATION" in msg and "5 stages" in msg
    assert "repeated index" in build_error_of(["NONLOCAL.LOCATION", "[[], [1, 1], [], []]"])
    assert "must be a list of block indices" in build_error_of(["NONLOCAL.LOCATION", "[[], 1, [], []]"])
    # the paper's 5-block R50 placement is fine
    check_model_config(load_config(None, ["NONLOCAL.LOCATION", "[[], [1, 3], [1, 3, 5], []]"]))


def test_block_options_and_inflate_are_checked_when_the_model_is_built():
    msg = build_error_of(["NONLOCAL.TYPE", "snl", "NONLOCAL.RECURRENCE", "3", "NONLOCAL.LOCATION", "[[], [1], [], []]"])
    assert msg.startswith("NONLOCAL.TYPE 'snl': ") and "NONLOCAL.RECURRENCE" in msg and "'recurrence'" not in msg
    # an option the type does not take is fine while no block is placed
    load_config(None, ["NONLOCAL.TYPE", "snl", "NONLOCAL.RECURRENCE", "3"])
    msg = build_error_of(["RESNET.INFLATE", "[[1], [1], [1], [1]]"])
    assert msg.startswith("RESNET.INFLATE: expected one list of 0/1 per stage with [3, 4, 6, 3] entries")
    assert build_error_of(["RESNET.DEPTH", "34"]).startswith("RESNET.DEPTH: 34 is not available for i3d")


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
def test_run_net_reports_config_errors_without_traceback(opts_flag, tmp_path):
    args = [sys.executable, os.path.join(ROOT, "tools", "run_net.py")]
    args += (["--opts"] if opts_flag else []) + ["MODEL.ARCH", "x3d", "OUTPUT_DIR", str(tmp_path / "out")]
    proc = subprocess.run(args, capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2
    assert "MODEL.ARCH" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()  # checked before anything is written


@pytest.mark.parametrize("opts, message", [
    (["MODEL.ARCH", "x3d"], "MODEL.ARCH: 'x3d' is not allowed; choose one of 'c2d', "),
    (["NONLOCAL.LOCATION", "[[], [9], [], []]"], "NONLOCAL.LOCATION: index 9 in res3 (entry 1) is out of range"),
    (["RESNET.INFLATE", "[[1]]"], "RESNET.INFLATE: expected one list of 0/1 per stage"),
    (["TRAIN.DATASET", "kinetic"], "TRAIN.DATASET: 'kinetic' is not allowed; choose one of "),
    (["TEST.DATASET", "ucf"], "TEST.DATASET: 'ucf' is not allowed; choose one of "),
    (["NONLOCAL.TYPE", "snll"], "NONLOCAL.TYPE: 'snll' is not allowed; choose one of "),
    (["MODEL.TASK", "reid", "MODEL.ARCH", "resnet50tp", "REID.DATASET", "prid2011"],
     "REID.DATASET: 'prid2011' is not allowed; choose one of 'ilidsvid', 'mars', 'prid'."),
])
def test_run_net_checks_what_the_config_names_before_writing(opts, message, tmp_path, capsys):
    """The config package loads these (it does not know models or datasets); run_net asks the
    builders before OUTPUT_DIR is touched."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("run_net_tool", os.path.join(ROOT, "tools", "run_net.py"))
    run_net = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run_net)
    cfg = load_config(None, opts)  # loads
    with pytest.raises(ConfigError, match="^" + re.escape(message)):
        run_net.check_what_the_config_names(cfg)
    out = tmp_path / "out"
    assert run_net.main(opts + ["OUTPUT_DIR", str(out)]) == 2 and not out.exists()
    err = capsys.readouterr().err
    assert err.startswith(f"vidnl: error: {message}") and err.count("\n") == 1


def test_build_dataset_refuses_an_unknown_name_naming_the_key():
    from vidnl.data.datasets import build_dataset

    cfg = load_config(None, ["TRAIN.DATASET", "kinetic", "TEST.DATASET", "ucf"])
    with pytest.raises(ConfigError, match=r"^TRAIN.DATASET: 'kinetic' is not allowed; choose one of .*'kinetics'"):
        build_dataset(cfg.TRAIN.DATASET, cfg, "train")
    with pytest.raises(ConfigError, match=r"^TEST.DATASET: 'ucf' is not allowed; choose one of .*'ucf101'"):
        build_dataset(cfg.TEST.DATASET, cfg, "test")


def test_every_shipped_config_loads_and_builds():
    import glob

    from vidnl.models import build_model

    files = sorted(glob.glob(os.path.join(ROOT, "configs", "**", "*.yaml"), recursive=True))
    assert len(files) >= 6
    for f in files:
        cfg = load_config(f)
        if cfg.MODEL.ARCH != "vtn":  # vtn: a torchvision ResNet per frame, width 64 only (built at its size)
            cfg = load_config(f, ["RESNET.BASE_WIDTH", "4"])  # tiny width: only the structure matters here
        build_model(cfg)


def test_nonlocal_type_is_checked_against_the_block_registry_where_models_are_built():
    msg = build_error_of(["NONLOCAL.TYPE", "snll"])  # even with no block placed: a typo is not ignored
    assert msg.startswith("NONLOCAL.TYPE: 'snll' is not allowed; choose one of ") and msg.endswith("Did you mean 'snl'?")
    from vidnl.nonlocal_blocks import list_blocks

    assert all(repr(name) in msg for name in list_blocks())
