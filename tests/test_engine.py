import json
import logging
import re
import math
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from vidnl.config import load_config
from vidnl.engine import test as run_test
from vidnl.engine import train
from vidnl.engine.checkpoint import list_checkpoints
from vidnl.models.weights import load_checkpoint_file
from vidnl.errors import DatasetError

from conftest import ROOT, index_video, tiny_opts, write_video


def final_state(out_dir):
    return load_checkpoint_file(list_checkpoints(out_dir)[-1])["model_state"]


def test_resume_gives_identical_weights(tiny_dataset, tmp_path):
    """2 epochs straight == 1 epoch, stop, resume, 1 more epoch (SGD momentum, dropout, random
    crops; the resumed run even uses 2 loader workers)."""
    common = {"SOLVER.LR_POLICY": "steps_with_relative_lrs", "SOLVER.STEPS": "[0, 1]", "SOLVER.LRS": "[1.0, 0.1]",
              "TRAIN.EVAL_PERIOD": 1, "TEST.ENABLE": False}
    straight = str(tmp_path / "straight")
    train(load_config(None, tiny_opts(tiny_dataset, straight, **common)))

    resumed = str(tmp_path / "resumed")
    train(load_config(None, tiny_opts(tiny_dataset, resumed, **common, **{"SOLVER.MAX_EPOCH": 1})))
    assert [os.path.basename(p) for p in list_checkpoints(resumed)] == ["checkpoint_epoch_00001.pyth"]
    out = train(load_config(None, tiny_opts(tiny_dataset, resumed, **common, **{"DATA_LOADER.NUM_WORKERS": 2})))
    assert out["last_epoch"]["epoch"] == 2

    a, b = final_state(straight), final_state(resumed)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # and training did change the weights
    first = load_checkpoint_file(list_checkpoints(resumed)[0])["model_state"]
    assert not all(torch.equal(first[k], b[k]) for k in b)


def make_corrupt_dataset(tiny_dataset, tmp_path):
    """The tiny dataset plus one training entry of each bad kind; test.csv gets a truncated one."""
    data = tmp_path / "data"
    shutil.copytree(tiny_dataset, data)
    videos = data / "videos"
    raw = open(videos / "train" / "000000.mp4", "rb").read()
    (videos / "empty.mp4").write_bytes(b"")
    (videos / "truncated.mp4").write_bytes(raw[: len(raw) // 3])
    (videos / "renamed.avi").write_bytes(raw)  # MP4 content, wrong extension: FFmpeg probes the content
    (videos / "notes.mp4").write_text("this is not a video\n" * 50)
    write_video(str(videos / "short.mp4"), index_video(3))  # 3 frames < one clip of 4 x 2
    extra = "".join(f"videos/{n} {i % 2}\n" for i, n in enumerate(
        ["empty.mp4", "truncated.mp4", "renamed.avi", "notes.mp4", "missing.mp4", "short.mp4"]))
    (data / "train.csv").write_text(open(data / "train.csv").read() + extra)
    (data / "test.csv").write_text(open(data / "test.csv").read() + "videos/truncated.mp4 1\n")
    return data


def test_corrupt_videos_are_skipped_counted_and_reported(tiny_dataset, tmp_path):
    data = make_corrupt_dataset(tiny_dataset, tmp_path)
    out_dir = str(tmp_path / "out")
    cfg = load_config(None, tiny_opts(str(data), out_dir, **{"SOLVER.MAX_EPOCH": 3, "DATA_LOADER.NUM_WORKERS": 2,
                                                              "TRAIN.EVAL_PERIOD": 0, "TRAIN.BATCH_SIZE": 2,
                                                              "DATA_LOADER.MAX_BAD_FRACTION": 0.5}))
    result = train(cfg)
    assert result["last_epoch"]["epoch"] == 3
    report = json.load(open(os.path.join(out_dir, "decode_failures.json")))
    names = {os.path.basename(p): v for p, v in report.items()}
    assert set(names) == {"empty.mp4", "truncated.mp4", "notes.mp4", "missing.mp4", "short.mp4"}
    assert {n for n, v in names.items() if v["kind"] == "undecodable"} == {"empty.mp4", "truncated.mp4", "notes.mp4",
                                                                          "missing.mp4"}
    assert "empty" in names["empty.mp4"]["reason"] and "does not exist" in names["missing.mp4"]["reason"]
    assert names["short.mp4"]["kind"] == "short" and "3 frames" in names["short.mp4"]["reason"]
    assert all(v["count"] >= 1 for v in names.values())  # every epoch visits every entry (retries included)
    log = open(os.path.join(out_dir, "log.txt")).read()
    assert log.count("cannot decode") >= 4 and '"bad_files": 4' in log

    res = run_test(cfg)
    assert res["num_failed"] == 1 and res["num_videos"] == 4 and res["split_videos"] == 5
    assert os.path.basename(res["failed_videos"][0]["path"]) == "truncated.mp4"
    preds = json.load(open(res["predictions_file"]))
    assert len(preds["predictions"]) == 4
    assert all(os.path.basename(p["path"]) != "truncated.mp4" for p in preds["predictions"])


def test_too_many_bad_videos_stop_the_run(tiny_dataset, tmp_path):
    data = make_corrupt_dataset(tiny_dataset, tmp_path)
    cfg = load_config(None, tiny_opts(str(data), str(tmp_path / "out"), **{"TRAIN.EVAL_PERIOD": 0,
                                                                           "DATA_LOADER.MAX_BAD_FRACTION": 0.1}))
    with pytest.raises(DatasetError, match="MAX_BAD_FRACTION=0.1"):
        train(cfg)


def test_run_net_end_to_end(tiny_dataset, tmp_path):
    out_dir = str(tmp_path / "run")
    cmd = [sys.executable, os.path.join(ROOT, "tools", "run_net.py"), "--cfg",
           os.path.join(ROOT, "configs", "Synthetic", "I3D_R18_SNL.yaml")]
    cmd += tiny_opts(tiny_dataset, out_dir, **{"TENSORBOARD.ENABLE": True})
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-3000:]
    assert [os.path.basename(p) for p in list_checkpoints(out_dir)] == ["checkpoint_epoch_00001.pyth",
                                                                         "checkpoint_epoch_00002.pyth"]
    assert os.path.exists(os.path.join(out_dir, "checkpoints", "checkpoint_best.pyth"))
    log = open(os.path.join(out_dir, "log.txt")).read()
    stats = [json.loads(line.split("json_stats: ", 1)[1]) for line in log.splitlines() if "json_stats: " in line]
    types = [s["_type"] for s in stats]
    assert types.count("train_epoch") == 2 and types.count("val_epoch") == 2 and "test_test" in types
    test_stats = next(s for s in stats if s["_type"] == "test_test")
    assert test_stats["views_per_video"] == 6 and test_stats["num_clips"] == 24
    # PySlowFast's timing fields on every train_iter line; a header says what ran
    iters = [s for s in stats if s["_type"] == "train_iter"]
    assert len(iters) == 4 and all(re.fullmatch(r"\d+:\d\d:\d\d", s["eta"]) for s in iters)
    for s in iters:
        assert s["dt"] > 0 and s["dt_data"] >= 0 and s["dt_net"] > 0 and s["rss_mem"] > 0.05
        assert abs(s["dt"] - s["dt_data"] - s["dt_net"]) < 1e-3 and 0 <= s["top1_err"] <= 100
    for k, s in enumerate(iters, start=1):  # ETA = mean step time × training steps left in the run
        h, m, sec = map(int, s["eta"].split(":"))
        assert abs(3600 * h + 60 * m + sec - s["dt"] * (len(iters) - k)) <= 0.51, s
    epochs = [s for s in stats if s["_type"] == "train_epoch"]
    assert all(abs(s["top1_acc"] + s["top1_err"] - 100) < 1e-6 for s in epochs)
    header = next(s for s in stats if s["_type"] == "run_header")
    assert "run_net.py" in header["command"] and header["torch"] == torch.__version__
    assert re.fullmatch(r"[0-9a-f]{12}", header["config_sha256"])
    preds = json.load(open(os.path.join(out_dir, "predictions_test.json")))
    assert len(preds["predictions"]) == 4 and all(len(p["scores"]) == 2 for p in preds["predictions"])
    # sum of softmax over 6 views
    assert all(abs(sum(p["scores"]) - 6.0) < 1e-4 for p in preds["predictions"])
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(os.path.join(out_dir, "tensorboard")))
    assert "video top-1" in proc.stdout

    # running again resumes (nothing left to train) and tests again
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0
    assert "resumed from" in proc.stdout and "all 2 epochs already done" in proc.stdout


def test_sigkill_mid_epoch_then_resume_is_bit_identical(tiny_dataset, tmp_path):
    """Checkpoints every iteration; a run killed with SIGKILL in its second epoch and started
    again ends with exactly the weights of a run that was never interrupted."""
    import signal
    import time

    extra = {"SOLVER.MAX_EPOCH": 3, "TRAIN.BATCH_SIZE": 2, "TRAIN.CHECKPOINT_PERIOD_ITERS": 1,
             "TRAIN.EVAL_PERIOD": 0, "TEST.ENABLE": False, "TRAIN.KEEP_CHECKPOINTS": 0,
             "SOLVER.OPTIMIZING_METHOD": "adamw", "SOLVER.BASE_LR": 0.01}
    script = [sys.executable, os.path.join(ROOT, "tools", "run_net.py")]
    straight, killed = str(tmp_path / "straight"), str(tmp_path / "killed")
    subprocess.run(script + tiny_opts(tiny_dataset, straight, **extra), check=True, capture_output=True, cwd=ROOT)

    proc = subprocess.Popen(script + tiny_opts(tiny_dataset, killed, **extra), cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    target = os.path.join(killed, "checkpoints", "checkpoint_epoch_00001_iter_000001.pyth")
    deadline = time.time() + 300
    while not os.path.exists(target) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the run finished before it could be killed"
    done = [os.path.basename(p) for p in list_checkpoints(killed)]
    assert "checkpoint_epoch_00003.pyth" not in done

    proc = subprocess.run(script + tiny_opts(tiny_dataset, killed, **extra), capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "iterations done" in proc.stdout
    a = load_checkpoint_file(os.path.join(straight, "checkpoints", "checkpoint_epoch_00003.pyth"))["model_state"]
    b = load_checkpoint_file(os.path.join(killed, "checkpoints", "checkpoint_epoch_00003.pyth"))["model_state"]
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_mixed_precision_on_cpu(tiny_dataset, tmp_path):
    cfg = load_config(None, tiny_opts(tiny_dataset, str(tmp_path / "amp"), **{"TRAIN.MIXED_PRECISION": True,
                                                                                "SOLVER.MAX_EPOCH": 1}))
    out = train(cfg)
    assert math.isfinite(out["last_epoch"]["loss"]) and out["best_val_top1"] is not None
    assert list_checkpoints(str(tmp_path / "amp"))


def test_mars_trains_on_rgb_with_flow_distillation(tiny_dataset, tmp_path):
    """Flow extracted by data_prep/extract_flow.py feeds MARS's distillation term."""
    from data_prep import extract_flow

    flow_dir = str(tmp_path / "flow")
    assert extract_flow.main(["--csv", os.path.join(tiny_dataset, "train.csv"), "--out", flow_dir,
                              "--workers", "1"]) == 0
    opts = tiny_opts(tiny_dataset, str(tmp_path / "mars"), **{
        "MODEL.ARCH": "mars", "RESNET.DEPTH": 50, "RESNET.BASE_WIDTH": 32, "RESNET.CARDINALITY": 4,
        "MODEL.MARS_ALPHA": 10.0, "DATA.MODALITY": "rgb_flow", "DATA.FLOW_DIR": flow_dir, "SOLVER.MAX_EPOCH": 1,
        "TRAIN.EVAL_PERIOD": 0, "NONLOCAL.LOCATION": "[[], [1], [], []]"})
    cfg = load_config(None, opts)
    out = train(cfg)
    assert math.isfinite(out["last_epoch"]["loss"]) and not out["decode_failures"]
    model = out["model"]
    assert all(not p.requires_grad for p in model.flow.parameters())
    # the training batches carry flow clips aligned with the RGB clips, and they feed a real term
    from vidnl.data.loader import build_train_loader

    batch = next(iter(build_train_loader(cfg)))
    assert batch["flow"].shape == (4, 2, 4, 32, 32) and batch["inputs"].shape == (4, 4, 32, 32, 3)
    assert batch["flow"].abs().sum() > 0
    model.train()
    loader = build_train_loader(cfg)
    logits, distill = model(loader.dataset.normalizer(batch["inputs"]), batch["flow"])
    assert logits.shape == (4, 2) and distill.item() > 0


def _train_iter_losses(out_dir: str) -> list[float]:
    lines = [l.split("json_stats: ", 1)[1] for l in open(os.path.join(out_dir, "log.txt")) if "json_stats: " in l]
    return [s["loss"] for s in map(json.loads, lines) if s["_type"] == "train_iter"]


def test_compiled_training_matches_eager_and_falls_back(tiny_dataset, tmp_path, monkeypatch, caplog):
    """TRAIN.COMPILE: the compiled model trains with eager's losses (graph capture with the
    aot_eager backend, which needs no C++ compiler and seconds instead of minutes); a compiler
    that fails on the first call leaves a warning and an eager run, never a crash."""
    extra = {"SOLVER.MAX_EPOCH": 1, "TEST.ENABLE": False, "TRAIN.EVAL_PERIOD": 1}
    runs = {}
    for name, opts in (("eager", {}), ("compiled", {"TRAIN.COMPILE": True, "TRAIN.COMPILE_BACKEND": "aot_eager"})):
        train(load_config(None, tiny_opts(tiny_dataset, str(tmp_path / name), **extra, **opts)))
        runs[name] = _train_iter_losses(str(tmp_path / name))
    assert len(runs["eager"]) == 2
    np.testing.assert_allclose(runs["compiled"], runs["eager"], rtol=0, atol=1e-4)

    class Broken(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self._orig_mod = model

        def forward(self, *a):
            raise RuntimeError("backend compiler failed: no C++ compiler")

    monkeypatch.setattr(torch, "compile", lambda model, backend=None: Broken(model))
    with caplog.at_level(logging.WARNING):
        train(load_config(None, tiny_opts(tiny_dataset, str(tmp_path / "fallback"), **extra,
                                          **{"TRAIN.COMPILE": True})))
    assert "compiling failed (RuntimeError: backend compiler failed" in caplog.text
    np.testing.assert_allclose(_train_iter_losses(str(tmp_path / "fallback")), runs["eager"], rtol=0, atol=1e-6)
