"""A run's own artifacts (issue 30, classes 1, 2, 6 and 10): the test and the pruning see only the
run's own checkpoints, the folder is changed only once the run is accepted, outputs never write
through symbolic links and are strict JSON, weights with NaN are refused, and missing listed
videos are found before training."""

import argparse
import json
import logging
import os
import subprocess
import sys

import pytest
import torch

from vidnl.config import load_config
from vidnl.engine import test as run_test
from vidnl.engine import train
from vidnl.engine.checkpoint import list_checkpoints, newest_run_checkpoint
from vidnl.engine.output_dir import OutputDirError, prepare_output_dir, write_json_atomic, write_text_atomic
from vidnl.errors import ConfigError, DatasetError
from vidnl.models.weights import CheckpointError, load_checkpoint_file

from conftest import ROOT, tiny_opts

QUICK = {"TRAIN.EVAL_PERIOD": 0, "TEST.NUM_ENSEMBLE_VIEWS": 1, "TEST.NUM_SPATIAL_CROPS": 1, "LOG_PERIOD": 100}


def _opts(data, out, **extra):
    return tiny_opts(data, out, **{**QUICK, **extra})


def _names(out):
    return [os.path.basename(p) for p in list_checkpoints(out)]


def _tested_path(out):
    lines = [line for line in open(os.path.join(out, "log.txt")) if "testing weights from" in line]
    return lines[-1].rsplit("testing weights from ", 1)[1].strip()


def test_new_run_in_an_older_runs_folder_tests_and_keeps_its_own_weights(tiny_dataset, tmp_path):
    """An older 3-epoch run, then TRAIN.AUTO_RESUME False with 1 epoch and KEEP_CHECKPOINTS 1 in
    the same folder: the old run's files are moved aside (not deleted, not pruned in place of
    the new ones), the new run keeps its checkpoint, and the test scores the new weights."""
    out = str(tmp_path / "run")
    train(load_config(None, _opts(tiny_dataset, out, **{"SOLVER.MAX_EPOCH": 3, "TRAIN.CHECKPOINT_PERIOD": 1,
                                                        "TRAIN.EVAL_PERIOD": 1, "TEST.ENABLE": False})))
    old = {n: load_checkpoint_file(os.path.join(out, "checkpoints", n))["run_id"] for n in _names(out)}
    assert len(set(old.values())) == 1 and None not in old.values()
    cfg = load_config(None, _opts(tiny_dataset, out, **{"SOLVER.MAX_EPOCH": 1, "TRAIN.AUTO_RESUME": False,
                                                        "TRAIN.KEEP_CHECKPOINTS": 1, "RNG_SEED": 7}))
    res = train(cfg)
    assert _names(out) == ["checkpoint_epoch_00001.pyth"]
    mine = load_checkpoint_file(list_checkpoints(out)[0])
    assert mine["run_id"] not in old.values()
    trained = res["model"].state_dict()
    assert all(torch.equal(trained[k], v) for k, v in mine["model_state"].items())
    aside = [os.path.join(r, f) for r, _, fs in os.walk(os.path.join(out, "checkpoints", "set_aside")) for f in fs]
    assert sorted(os.path.basename(p) for p in aside) == sorted(list(old) + ["checkpoint_best.pyth"])
    run_test(cfg)
    assert _tested_path(out) == list_checkpoints(out)[0]


def test_foreign_files_named_like_checkpoints_are_skipped_not_fatal(tiny_dataset, tmp_path, caplog):
    """A converted state dict and a file that needs arbitrary unpickling, both named like newer
    checkpoints: the standalone test and auto-resume skip them with a warning naming them and use
    the run's own newest checkpoint; training sets them aside."""
    out = str(tmp_path / "run")
    cfg = load_config(None, _opts(tiny_dataset, out, **{"SOLVER.MAX_EPOCH": 1, "TEST.ENABLE": False}))
    res = train(cfg)
    own = list_checkpoints(out)[-1]
    ckdir = os.path.join(out, "checkpoints")
    torch.save(res["model"].state_dict(), os.path.join(ckdir, "checkpoint_epoch_00009.pyth"))
    torch.save({"x": argparse.Namespace(a=1)}, os.path.join(ckdir, "checkpoint_epoch_00011.pyth"))
    assert newest_run_checkpoint(out) == own
    test_cfg = load_config(None, _opts(tiny_dataset, out, **{"TRAIN.ENABLE": False}))
    with caplog.at_level(logging.WARNING):
        run_test(test_cfg)
    assert _tested_path(out) == own
    warned = caplog.text
    assert "checkpoint_epoch_00009.pyth is not a checkpoint of a vidnl training run" in warned
    assert "checkpoint_epoch_00011.pyth" in warned
    # auto-resume: the 1-epoch run extended to 2 epochs resumes from its own epoch 1
    caplog.clear()
    with caplog.at_level(logging.INFO):
        train(load_config(None, _opts(tiny_dataset, out, **{"SOLVER.MAX_EPOCH": 2, "TEST.ENABLE": False})))
    assert f"resumed from {own}" in caplog.text
    assert _names(out) == ["checkpoint_epoch_00001.pyth", "checkpoint_epoch_00002.pyth"]
    aside = {f for _, _, fs in os.walk(os.path.join(ckdir, "set_aside")) for f in fs}
    assert aside == {"checkpoint_epoch_00009.pyth", "checkpoint_epoch_00011.pyth"}


def test_a_refused_resume_leaves_the_folder_as_it_was(tiny_dataset, tmp_path):
    """A changed model config is refused on resume (exit 2 in the CLI) before config.yaml,
    run_manifest.json or the checkpoints change."""
    out = str(tmp_path / "run")
    train(load_config(None, _opts(tiny_dataset, out, **{"SOLVER.MAX_EPOCH": 1, "TEST.ENABLE": False})))
    files = ("config.yaml", "run_manifest.json")
    before = {f: open(os.path.join(out, f)).read() for f in files}
    ckpts = {p: os.path.getmtime(p) for p in list_checkpoints(out)}
    with pytest.raises(ConfigError, match="RESNET.BASE_WIDTH"):
        train(load_config(None, _opts(tiny_dataset, out, **{"SOLVER.MAX_EPOCH": 2, "RESNET.BASE_WIDTH": 8,
                                                             "TEST.ENABLE": False})))
    assert {f: open(os.path.join(out, f)).read() for f in files} == before
    assert {p: os.path.getmtime(p) for p in list_checkpoints(out)} == ckpts
    assert not os.path.exists(os.path.join(out, "checkpoints", "set_aside"))


@pytest.mark.parametrize("name", ["log.txt", "config.yaml", "predictions_test.json", "checkpoints/checkpoint_best.pyth"])
def test_symlinked_outputs_are_refused_before_any_work(tiny_dataset, tmp_path, name):
    """A file of OUTPUT_DIR that is a symbolic link stops the run at once (exit 2, naming it) and
    the file it points to is untouched."""
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    target = tmp_path / "precious.txt"
    target.write_text("keep me\n")
    os.symlink(target, out / name)
    with pytest.raises(OutputDirError, match="symbolic link"):
        prepare_output_dir(str(out))
    cmd = [sys.executable, os.path.join(ROOT, "tools", "run_net.py"), "--cfg",
           os.path.join(ROOT, "configs", "Synthetic", "I3D_R18_SNL.yaml")] + _opts(tiny_dataset, str(out))
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 2 and "symbolic link" in proc.stderr and name in proc.stderr
    assert "Traceback" not in proc.stderr
    assert target.read_text() == "keep me\n"


def test_writers_replace_links_and_write_strict_json(tmp_path):
    target = tmp_path / "outside.json"
    target.write_text("{}")
    link = tmp_path / "out.json"
    os.symlink(target, link)
    write_json_atomic(str(link), {"a": float("nan"), "b": [1.0, float("inf")], "c": {"d": -float("inf")}, "e": 2.5})
    assert target.read_text() == "{}" and not os.path.islink(link)

    def no_constants(name):
        raise ValueError(name)
    assert json.loads(link.read_text(), parse_constant=no_constants) == {"a": None, "b": [1.0, None],
                                                                          "c": {"d": None}, "e": 2.5}
    os.symlink(target, tmp_path / "t.txt")
    write_text_atomic(str(tmp_path / "t.txt"), "x")
    assert target.read_text() == "{}" and (tmp_path / "t.txt").read_text() == "x"


def test_weights_with_nan_are_refused(tiny_dataset, tmp_path):
    """A checkpoint whose head is NaN: the test stops naming the tensor instead of writing NaN
    scores (and invalid JSON) with exit 0."""
    out = str(tmp_path / "run")
    cfg = load_config(None, _opts(tiny_dataset, out, **{"SOLVER.MAX_EPOCH": 1, "TEST.ENABLE": False}))
    train(cfg)
    ckpt = load_checkpoint_file(list_checkpoints(out)[-1])
    ckpt["model_state"]["head.fc.weight"][0, 0] = float("nan")
    bad = str(tmp_path / "nan_head.pyth")
    torch.save(ckpt, bad)
    with pytest.raises(CheckpointError, match="NaN or infinite.*head.fc.weight"):
        run_test(load_config(None, _opts(tiny_dataset, out, **{"TRAIN.ENABLE": False,
                                                                 "TEST.CHECKPOINT_FILE_PATH": bad})))
    assert not os.path.exists(os.path.join(out, "predictions_test.json"))


def test_missing_listed_videos_are_found_before_training(tiny_dataset, tmp_path, caplog):
    """A test CSV naming videos that do not exist stops the run before the first step (count
    and first names); a val CSV with fewer missing than DATA_LOADER.MAX_BAD_FRACTION warns."""
    import shutil

    data = tmp_path / "data"
    shutil.copytree(tiny_dataset, data)
    (data / "test.csv").write_text("".join(f"videos/gone_{i}.mp4 {i % 2}\n" for i in range(3))
                                   + open(data / "test.csv").read())
    out = str(tmp_path / "run")
    with pytest.raises(DatasetError, match=r"3 of 7 videos listed in test.csv do not exist \(first: .*gone_0.mp4"):
        train(load_config(None, _opts(str(data), out, **{"TRAIN.EVAL_PERIOD": 1})))
    assert not list_checkpoints(out)
    (data / "test.csv").write_text(open(os.path.join(tiny_dataset, "test.csv")).read())
    (data / "val.csv").write_text("videos/gone.mp4 0\n" + open(data / "val.csv").read())
    with caplog.at_level(logging.WARNING):
        train(load_config(None, _opts(str(data), str(tmp_path / "run2"), **{
            "TRAIN.EVAL_PERIOD": 1, "SOLVER.MAX_EPOCH": 1, "TEST.ENABLE": False,
            "DATA_LOADER.MAX_BAD_FRACTION": 0.5})))
    assert "1 of 5 videos listed in val.csv do not exist" in caplog.text


def test_a_full_disk_while_saving_is_the_users_to_fix(tiny_dataset, tmp_path):
    """Writing a checkpoint fails (a file-size limit stands in for a full disk): exit 2 with one
    line naming the file and the reason, no temporary file left, the previous checkpoint intact
    and still the one a rerun resumes from."""
    import resource
    import signal

    out = str(tmp_path / "run")
    opts = _opts(tiny_dataset, out, **{"SOLVER.MAX_EPOCH": 1, "TEST.ENABLE": False})
    cfg_file = os.path.join(ROOT, "configs", "Synthetic", "I3D_R18_SNL.yaml")
    train(load_config(cfg_file, opts))
    first = list_checkpoints(out)[0]
    before = open(first, "rb").read()

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (len(before) // 2, len(before) // 2))

    cmd = [sys.executable, os.path.join(ROOT, "tools", "run_net.py"), "--cfg", cfg_file] + opts + ["SOLVER.MAX_EPOCH", "2"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300, preexec_fn=limit)
    assert proc.returncode == 2, proc.stderr[-2000:]
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and "could not write" in err[0] and "checkpoint_epoch_00002.pyth" in err[0]
    assert "File too large" in err[0] and "Traceback" not in proc.stderr and "internal error" not in proc.stderr
    assert _names(out) == ["checkpoint_epoch_00001.pyth"] and open(first, "rb").read() == before
    assert not [f for f in os.listdir(os.path.join(out, "checkpoints")) if f.startswith(".tmp")]


def test_names_reach_the_terminal_and_the_log_without_control_characters(tmp_path, capsys):
    """A file or class name with a terminal escape and a newline: the log line (console and
    log.txt) and a tool's error line show it escaped, one line each, so it can neither recolour
    the terminal nor forge a json_stats line."""
    from vidnl.cli import run_cli
    from vidnl.engine.logging import setup_logging

    evil = "clip\x1b[2J\x1b[31m\r\njson_stats: {\"_type\": \"forged\"}\x07.mp4"
    setup_logging(str(tmp_path))
    logging.getLogger("vidnl.test").warning("cannot decode %s", evil)
    logging.getLogger("vidnl.test").warning(f"f-string {evil}")
    lines = open(tmp_path / "log.txt").read().splitlines()
    assert len(lines) == 2 and all("\x1b" not in line and "\x07" not in line and "\r" not in line for line in lines)
    assert "clip\\x1b[2J\\x1b[31m\\x0d\\x0ajson_stats" in lines[0]
    out = capsys.readouterr().out
    assert "\x1b" not in out and out.count("\n") == 2

    def main():
        raise DatasetError(f"{evil}: not a video")
    assert run_cli(main, tool="vidnl") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "\x1b" not in err and "clip\\x1b[2J" in err
    setup_logging(None)


def test_report_figures_take_class_names_with_dollars_and_escapes():
    """Class names with "$" (mathtext for matplotlib) and control characters label the confusion
    matrix instead of failing to render it."""
    import numpy as np

    from vidnl.engine.report import confusion_png

    png = confusion_png(np.eye(5, dtype=int) * 3, ["a$b$c", "$$", "price$^$", "$_$", "\x1b[31mred"])
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_atomic_outputs_get_the_permissions_of_a_normally_written_file(tmp_path):
    """A temporary file from mkstemp is 0600; the file that replaces the output must not keep that
    (a config.yaml or predictions JSON readable only by its writer breaks shared result folders)."""
    import stat

    from vidnl.engine.output_dir import write_json_atomic, write_text_atomic

    old = os.umask(0o022)
    try:
        plain = tmp_path / "plain.txt"
        plain.write_text("x")
        write_text_atomic(str(tmp_path / "a.txt"), "x")
        write_json_atomic(str(tmp_path / "b.json"), {"a": 1})
    finally:
        os.umask(old)
    want = stat.S_IMODE(plain.stat().st_mode)
    assert want == 0o644
    for name in ("a.txt", "b.json"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == want, name
