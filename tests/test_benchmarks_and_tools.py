"""Smoke runs of the benchmark scripts and tools at tiny sizes (no timing asserts), and the
exactness of the one-row affinity used by the visualiser."""

import json
import os
import sys

import numpy as np
import pytest
import torch

from vidnl.nonlocal_blocks import functional as NF

from conftest import ROOT, needs_decord, tiny_opts

sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
sys.path.insert(0, os.path.join(ROOT, "tools"))


def test_nonlocal_benchmark_smoke(tmp_path):
    import nonlocal_blocks

    out = tmp_path / "nl.json"
    args = ["--sizes", "tiny", "--repeat", "2", "--min-time", "0", "--json", str(out)]
    assert nonlocal_blocks.main(args + ["--types", "snl", "cc"]) == 0
    rows = json.load(open(out))["rows"]
    assert {r["table"] for r in rows} == {"snl", "softmax", "blocks"}
    snl = next(r for r in rows if r["table"] == "snl" and r["mode"] == "fwd+bwd")
    assert set(snl["results"]) == {"linear", "auto", "dense"} and snl["speedup_linear_vs_dense"] > 0
    assert snl["auto_vs_best"] > 0 and snl["auto_choice_vs_best"] >= 1.0
    assert all("peak_mb" in v and v["runs"] >= 2 for r in rows for v in r["results"].values())
    softmax = next(r for r in rows if r["table"] == "softmax")
    assert softmax["results"]["vidnl"]["form"] == "explicit"  # tiny graph on the CPU
    # --merge replaces the re-measured rows and keeps the others
    assert nonlocal_blocks.main(args + ["--tables", "blocks", "--types", "cc", "--merge"]) == 0
    merged = json.load(open(out))["rows"]
    assert len(merged) == len(rows) and [r["table"] for r in merged] == [r["table"] for r in rows]
    # the crossover table, merged after the SNL table; sizes are "n<N>c<Cs>" with N = 2·r·Cs
    assert nonlocal_blocks.main(args + ["--tables", "crossover", "--crossover-channels", "4",
                                        "--crossover-ratios", "1", "3", "--merge"]) == 0
    merged = json.load(open(out))["rows"]
    cross = [r for r in merged if r["table"] == "crossover"]
    assert [r["size"] for r in cross] == ["n8c4", "n24c4"] and all(r["speedup_linear_vs_dense"] > 0 for r in cross)
    assert [r["table"] for r in merged].index("crossover") == 2  # after the two SNL rows


@needs_decord
def test_data_loading_benchmark_smoke(tmp_path):
    import data_loading

    out = tmp_path / "dl.json"
    assert data_loading.main(["--videos", "2", "--frames", "40", "--epochs", "1", "--dir", str(tmp_path / "v"),
                              "--json", str(out)]) == 0
    res = json.load(open(out))
    assert res["clips_per_s"]["decord_limit"] > 0 and res["decode_once_speedup"] > 0


def test_reid_eval_benchmark_smoke(tmp_path):
    import reid_eval

    out = tmp_path / "re.json"
    assert reid_eval.main(["--queries", "20", "--gallery", "100", "--dim", "16", "--ids", "10", "--repeat", "1",
                           "--json", str(out)]) == 0
    assert os.path.exists(out)


def test_multiview_compile_benchmark_smoke(tiny_dataset, tmp_path, monkeypatch):
    """The end-to-end test eager vs TEST.COMPILE at a tiny size (graph capture only), and its
    refusal to print times when the compiled test's predictions differ."""
    import multiview_compile
    from vidnl.engine import inference

    videos = sorted(os.path.join(tiny_dataset, line.split()[0]) for line in open(os.path.join(tiny_dataset, "test.csv")))
    args = ["--size", "tiny", "--backend", "aot_eager", "--copies", "1", "--workers", "0", "--videos"] + videos
    res = multiview_compile.main(args + ["--out", str(tmp_path / "mc.json")])
    assert res["clips"] == 6 * len(videos) and res["compile_s"] > 0 and res["max_score_difference"] <= 1e-4
    assert json.load(open(tmp_path / "mc.json"))["videos"] == len(videos)
    forward = inference.CompiledInference.forward
    monkeypatch.setattr(inference.CompiledInference, "forward", lambda self, x: forward(self, x).flip(1))
    with pytest.raises(SystemExit, match="REFUSED"):
        multiview_compile.main(args)


def test_does_nonlocal_help_smoke(tmp_path):
    import does_nonlocal_help

    out = tmp_path / "exp.json"
    assert does_nonlocal_help.main(["--out", str(tmp_path / "exp"), "--train", "8", "--test", "4", "--epochs", "1",
                                    "--seeds", "0", "--blocks", "none", "snl", "--frames", "16", "--workers", "0",
                                    "--json", str(out)]) == 0
    summary = json.load(open(out))["summary"]
    assert set(summary) == {"none", "snl"} and all(0 <= v["mean"] <= 100 for v in summary.values())


def test_relation_videos_need_both_objects():
    import does_nonlocal_help as exp

    rng = np.random.default_rng(0)
    video = exp.render_relation_video(rng, 1, 12, 64, 128, 16)
    moving = (np.abs(np.diff(video.astype(int), axis=0)).sum((0, 3)) > 0)  # H×W: pixels that change
    cols = np.where(moving.any(0))[0]
    assert cols.min() < 128 // 3 and cols.max() >= 2 * 128 // 3  # one object per outer third
    assert not moving[:, 128 // 3 + 1:2 * 128 // 3 - 1].any()  # nothing moves in the middle


def test_plot_training(tiny_dataset, tmp_path):
    import plot_training

    from vidnl.config import load_config
    from vidnl.engine import train

    out_dir = str(tmp_path / "run")
    train(load_config(None, tiny_opts(tiny_dataset, out_dir, **{"SOLVER.MAX_EPOCH": 2})))
    assert plot_training.main([out_dir]) == 0
    png = os.path.join(out_dir, "training_curves.png")
    from PIL import Image

    assert Image.open(png).size == (1170, 324)  # 13 x 3.6 inches at 90 dpi
    assert plot_training.main([str(tmp_path / "nothing")]) == 2


KERNEL_NORMS = [("embedded_gaussian", "softmax"), ("embedded_gaussian", "symmetric"), ("dot", "mean"),
                ("relu_dot", "random_walk"), ("relu_dot", "symmetric"), ("concatenation", "mean"),
                ("concatenation", "symmetric"), ("relu_dot", "none")]


@pytest.mark.parametrize("kernel,norm", KERNEL_NORMS)
@pytest.mark.parametrize("bipartite", [False, True])
def test_single_affinity_row_equals_the_dense_row(kernel, norm, bipartite):
    g = torch.Generator().manual_seed(0)
    theta = torch.randn(2, 30, 5, dtype=torch.float64, generator=g)
    phi = torch.randn(2, 12 if bipartite else 30, 5, dtype=torch.float64, generator=g)
    w = (torch.randn(5, dtype=torch.float64, generator=g), torch.randn(5, dtype=torch.float64, generator=g))
    concat = w if kernel == "concatenation" else None
    dense = NF.affinity_dense(theta, phi, kernel, norm, bipartite, concat)
    for q in (0, 7, 29):
        row = NF.affinity_row(theta, phi, q, kernel, norm, bipartite, concat)
        torch.testing.assert_close(row, dense[:, q], rtol=0, atol=1e-10)


def test_amp_benchmark_smoke(tmp_path):
    """benchmarks/amp.py: one step time per mode and network, and the seed experiment for one
    seed (no NaN, two AMP runs bit-identical, a finite distance from float32)."""
    import logging

    import amp

    out = tmp_path / "amp.json"
    threads = torch.get_num_threads()
    try:
        assert amp.main(["--repeat", "1", "--seeds", "0", "--threads", "1", "--out", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)
    res = json.load(open(out))
    assert len(res["step_time"]) == 2 and all(r["ratio bfloat16 (vidnl)"] > 0 for r in res["step_time"])
    (row,) = res["stability"]
    assert not row["float32_nan"] and not row["amp_nan"] and row["amp_runs_identical"] is True
    assert 0 < row["amp_vs_float32"] < 10
    assert logging.root.manager.disable == logging.NOTSET  # the experiment's silence is lifted
