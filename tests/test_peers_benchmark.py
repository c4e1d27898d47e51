"""Smoke tests of benchmarks/peers.py at tiny sizes, pytorchvideo peer only: every row is checked
for equal outputs before it is timed, and a pair that computes something else gets no ratio."""

from __future__ import annotations

import importlib.util
import json
import os

import pytest
import torch

from conftest import ROOT

pytest.importorskip("pytorchvideo.models.hub")


def _peers():
    spec = importlib.util.spec_from_file_location("peers_benchmark", os.path.join(ROOT, "benchmarks", "peers.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


peers = _peers()


def _cells(line: str) -> list[str]:
    """The cells of a markdown table row (escaped pipes kept inside their cell)."""
    return [c.strip() for c in line.replace("\\|", "¦").strip("| ").split(" | ")]


def test_quick_run_checks_equality_then_prints_ratios(tmp_path, capsys):
    out = tmp_path / "peers.json"
    assert peers.main(["--quick", "--threads", "1", "--no-memory", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [(r["case"], r["size"]) for r in rows] == peers.DEFAULT_QUICK
    for r in rows:
        assert r["checked_equality"] and r["equal"], r
        assert r["max_rel_diff"] <= peers.TOL
        assert r["ratio_fwd"] > 0 and r["ratio_fwd_bwd"] > 0
        assert r["ratio_fwd"] == pytest.approx(r["fwd_peer_ms"] / r["fwd_vidnl_ms"])
    table = capsys.readouterr().out
    assert "torch" in table and "CPUs" in table  # the machine is stated
    data = [ln for ln in table.splitlines() if ln.startswith("| ") and "vs pytorchvideo" in ln]
    assert len(data) == 3
    for ln in data:
        cells = _cells(ln)
        assert cells[4].endswith("×") and cells[7].endswith("×"), ln  # fwd ratio, fwd+bwd ratio


def test_mismatched_weights_refuse_a_ratio(tmp_path, capsys):
    out = tmp_path / "peers.json"
    assert peers.main(["--quick", "--threads", "1", "--no-memory", "--perturb-vidnl", "--rows", "nl:tiny",
                       "i3d_r50:tiny", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    for r in rows:
        assert r["checked_equality"] and not r["equal"]
        assert r["ratio_fwd"] is None and r["ratio_fwd_bwd"] is None and "fwd_peer_ms" not in r
    table = capsys.readouterr().out
    data = [ln for ln in table.splitlines() if ln.startswith("| ") and "vs pytorchvideo" in ln]
    assert len(data) == 2
    for ln in data:
        assert "outputs differ: max \\|diff\\| = " in ln
        assert not any(c.endswith("×") for c in _cells(ln)[2:]), ln  # no ratio anywhere


@pytest.mark.skipif(not os.access("/proc/self/clear_refs", os.W_OK), reason="VmHWM cannot be reset here")
def test_peak_memory_from_fresh_processes(tmp_path):
    out = tmp_path / "peers.json"
    assert peers.main(["--quick", "--threads", "1", "--repeat", "1", "--rows", "nl:tiny", "--json", str(out)]) == 0
    (row,) = json.loads(out.read_text())["rows"]
    assert row["mem_peer_mb"] is not None and row["mem_vidnl_mb"] is not None
    assert 0 <= row["mem_peer_mb"] < 200 and 0 <= row["mem_vidnl_mb"] < 200


def test_missing_checkout_is_a_user_error(tmp_path, capsys):
    assert peers.main(["--quick", "--rows", "cgnl:tiny", "--cgnl", str(tmp_path / "absent")]) == 2
    err = capsys.readouterr().err
    assert "--cgnl" in err and "absent" in err and "Traceback" not in err
    assert peers.main(["--quick", "--rows", "cgnl:tiny", "--cgnl", str(tmp_path)]) == 2  # no model/resnet.py
    assert "model/resnet.py" in capsys.readouterr().err


def test_vidnl_modes_are_rows_of_their_own(tmp_path, capsys):
    """--vidnl-mode channels_last: vidnl's side in channels-last 3D, still checked equal to the
    peer before timing; merged runs keep one row per (case, size, mode)."""
    out = tmp_path / "peers.json"
    base = ["--quick", "--threads", "1", "--no-memory", "--repeat", "1", "--net-repeat", "1", "--rows", "nl:tiny",
            "i3d_r50:tiny", "--json", str(out), "--merge"]
    assert peers.main(base) == 0
    assert peers.main(base + ["--vidnl-mode", "channels_last"]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [peers.row_key(r) for r in rows] == [("nl", "tiny", "eager"), ("nl", "tiny", "channels_last"),
                                                ("i3d_r50", "tiny", "eager"), ("i3d_r50", "tiny", "channels_last")]
    for r in rows:
        assert r["checked_equality"] and r["equal"], r
    table = capsys.readouterr().out
    assert "I3D-R50 vs pytorchvideo i3d_r50 (vidnl channels last)" in table


def test_vidnl_mode_layout_reaches_the_model():
    args = peers.parser().parse_args(["--quick", "--vidnl-mode", "channels_last"])
    pair = peers.build_pair("i3d_r50", "tiny", args)
    assert pair["x_ours"].is_contiguous(memory_format=torch.channels_last_3d)
    assert pair["x"].is_contiguous()  # the peer keeps its own layout
    conv = next(m for m in pair["ours"].modules() if isinstance(m, torch.nn.Conv3d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last_3d)


def test_fwd_only_times_the_forward_alone(tmp_path, capsys):
    out = tmp_path / "peers.json"
    assert peers.main(["--quick", "--threads", "1", "--net-repeat", "1", "--rows", "i3d_r50:tiny", "--fwd-only",
                       "--json", str(out)]) == 0
    (row,) = json.loads(out.read_text())["rows"]
    assert row["equal"] and row["fwd_only"] and row["ratio_fwd"] > 0
    assert row["ratio_fwd_bwd"] is None and "fwd_bwd_vidnl_ms" not in row and "mem_vidnl_mb" not in row
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("| I3D-R50"))
    assert _cells(line)[4].endswith("×") and _cells(line)[7] == "—"


def test_slowfast_network_needs_its_model_builder(tmp_path, capsys):
    assert peers.main(["--quick", "--rows", "slowfast_i3d_nl:tiny", "--slowfast", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--slowfast" in err and "video_model_builder.py" in err and "Traceback" not in err


@pytest.mark.skipif(not os.environ.get("VIDNL_PEER_SLOWFAST"),
                    reason="set VIDNL_PEER_SLOWFAST to a PySlowFast checkout to compare its I3D_NLN_8x8_R50")
def test_slowfast_i3d_nl_equals_vidnl(tmp_path):
    out = tmp_path / "peers.json"
    assert peers.main(["--threads", "1", "--no-memory", "--net-repeat", "1", "--rows", "slowfast_i3d_nl:tiny",
                       "--slowfast", os.environ["VIDNL_PEER_SLOWFAST"], "--json", str(out)]) == 0
    (row,) = json.loads(out.read_text())["rows"]
    assert row["equal"] and row["ratio_fwd_bwd"] > 0, row
