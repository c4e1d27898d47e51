"""Test outputs with class names, per-class accuracy and confusion matrix; the run report
(report.html written by test(), tools/report.py)."""

import base64
import io
import json
import os
import re
import sys
from collections import Counter
from html.parser import HTMLParser

import pytest
import torch

from vidnl.config import load_config
from vidnl.data.datasets.ucf101 import read_classes

from conftest import ROOT, tiny_opts

sys.path.insert(0, os.path.join(ROOT, "tools"))
import report as report_tool  # noqa: E402

VOID = {"meta", "img", "br", "hr", "input", "link", "col", "source", "wbr"}


class StrictHTML(HTMLParser):
    """Records headings and images, and fails on any end tag that does not close the open element."""

    def __init__(self):
        super().__init__()
        self.stack, self.errors, self.headings, self.images, self.tags = [], [], [], [], Counter()
        self._heading = None

    def handle_starttag(self, tag, attrs):
        self.tags[tag] += 1
        if tag == "img":
            self.images.append(dict(attrs).get("src", ""))
        if tag not in VOID:
            self.stack.append(tag)
        if tag in ("h1", "h2", "h3"):
            self._heading = ""

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
            return
        self.stack.pop()
        if tag in ("h1", "h2", "h3"):
            self.headings.append(self._heading)
            self._heading = None

    def handle_data(self, data):
        if self._heading is not None:
            self._heading += data


def parse(path: str) -> StrictHTML:
    text = open(path, encoding="utf-8").read()
    p = StrictHTML()
    p.feed(text)
    p.close()
    assert not p.errors and p.stack == [], (p.errors, p.stack)
    assert text.lstrip().startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")
    # self-contained: nothing fetched from anywhere
    assert not re.search(r"""(src|href)\s*=\s*["'](?!data:)""", text) and p.tags["script"] == 0 and p.tags["link"] == 0
    return p


def decoded_images(p: StrictHTML) -> list:
    from PIL import Image

    images = []
    for src in p.images:
        assert src.startswith("data:image/png;base64,")
        im = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1], validate=True)))
        im.load()
        assert im.format == "PNG"
        images.append(im)
    return images


@pytest.fixture(scope="module")
def run(tiny_dataset, tmp_path_factory):
    """A tiny 2-epoch run on the 2-class dataset, tested (which writes report.html)."""
    from vidnl.engine import test, train

    out = str(tmp_path_factory.mktemp("report_run") / "run")
    cfg = load_config(None, tiny_opts(tiny_dataset, out, **{"TENSORBOARD.ENABLE": True}))
    train(cfg)
    results = test(cfg)
    return {"cfg": cfg, "out": out, "results": results, "data": tiny_dataset}


def test_confusion_matrix_rows_are_true_classes():
    from vidnl.engine.metrics import confusion_matrix, per_class_accuracy, topk_reported

    c = confusion_matrix(torch.tensor([1, 0, 1, 2]), torch.tensor([0, 0, 1, 1]), 3)
    assert c.tolist() == [[1, 1, 0], [0, 1, 1], [0, 0, 0]]
    rows = per_class_accuracy(c, ["a", "b", "c"])
    assert [(r["name"], r["num_videos"], r["correct"], r["top1"]) for r in rows] == [
        ("a", 2, 1, 50.0), ("b", 2, 1, 50.0), ("c", 0, 0, None)]
    assert not topk_reported(5) and topk_reported(6)


def test_predictions_have_names_per_class_and_confusion(run):
    preds = json.load(open(os.path.join(run["out"], "predictions_test.json")))
    names = read_classes(os.path.join(run["data"], "classes.txt"))
    assert preds["classes"] == names and preds["classes_source"].endswith("classes.txt")
    assert preds["num_classes"] == 2 and len(set(names)) == 2 and names != ["0", "1"]
    for p in preds["predictions"]:
        assert p["label_name"] == names[p["label"]] and p["pred_name"] == names[p["pred"]]
    # top-5 over 2 classes is 100 % by construction: not reported
    assert preds["video_top5"] is None and preds["clip_top5"] is None and preds["video_top5_mean_logits"] is None
    per_class = preds["per_class"]
    labels = Counter(p["label"] for p in preds["predictions"])
    assert [r["name"] for r in per_class] == names
    assert [r["num_videos"] for r in per_class] == [labels[i] for i in range(2)]
    correct = sum(r["correct"] for r in per_class)
    assert 100.0 * correct / preds["num_videos"] == pytest.approx(preds["video_top1"])
    for r in per_class:
        assert r["top1"] == pytest.approx(100.0 * r["correct"] / r["num_videos"])
    cm = preds["confusion_matrix"]
    assert [sum(row) for row in cm] == [r["num_videos"] for r in per_class]
    pairs = Counter((p["label"], p["pred"]) for p in preds["predictions"])
    assert cm == [[pairs[(i, j)] for j in range(2)] for i in range(2)]  # row = true, column = predicted
    assert [cm[i][i] for i in range(2)] == [r["correct"] for r in per_class]


def test_tensorboard_gets_metrics_only(run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from vidnl.engine.evaluate import metric_summary

    assert set(metric_summary(run["results"])) == {"clip_top1", "video_top1", "video_top1_sum_softmax",
                                                   "video_top1_mean_logits"}
    tags = set()
    for f in os.listdir(os.path.join(run["out"], "tensorboard")):
        acc = EventAccumulator(os.path.join(run["out"], "tensorboard", f))
        acc.Reload()
        tags |= set(acc.Tags()["scalars"])
    test_tags = {t for t in tags if t.startswith("test_test/")}
    assert test_tags == {"test_test/clip_top1", "test_test/video_top1", "test_test/video_top1_sum_softmax",
                         "test_test/video_top1_mean_logits"}


def test_report_written_by_test(run):
    path = os.path.join(run["out"], "report.html")
    assert os.path.isfile(path)
    p = parse(path)
    for h in ("Summary", "Training curves", "Test results (test)", "Confusion matrix", "Per-class accuracy",
              "Worst-classified videos", "Attention maps"):
        assert h in p.headings, (h, p.headings)
    images = decoded_images(p)
    assert len(images) == 3  # curves, confusion matrix, attention maps (2 clips x 1 block)
    assert images[0].size == (800, 480)  # 10 x 6 inches at 80 dpi
    assert all(min(im.size) >= 150 for im in images)
    text = open(path, encoding="utf-8").read()
    names = read_classes(os.path.join(run["data"], "classes.txt"))
    assert all(f"<td>{n}</td>" in text for n in names)  # per-class table and worst videos by name
    assert "The run was never resumed" in text
    log = open(os.path.join(run["out"], "log.txt")).read()
    assert re.search(r"report in .*report\.html \(\d+\.\d\d s\)", log)


def test_worst_videos_are_lowest_on_their_true_class(run):
    from vidnl.engine.report import probabilities, worst_videos

    preds = json.load(open(os.path.join(run["out"], "predictions_test.json")))
    worst = worst_videos(preds, preds["classes"], n=2)
    p_true = sorted(float(probabilities(v["scores"], "sum_softmax")[v["label"]]) for v in preds["predictions"])
    assert [w["p_true"] for w in worst] == pytest.approx(p_true[:2])
    assert all(len(w["top"]) == 2 and w["top"][0][1] >= w["top"][1][1] for w in worst)  # 2 classes: top-3 clipped
    assert {n for w in worst for n, _ in w["top"]} <= set(preds["classes"])


def test_report_tool_marks_a_resume(run, tmp_path):
    """Remove the last epoch's checkpoint and train again: the run resumes after epoch 1; the
    tool (model from config.yaml and the newest checkpoint) shows the resume on the curves."""
    import shutil

    from vidnl.engine import train
    from vidnl.engine.report import curves_figure, read_log

    out = str(tmp_path / "resumed")
    shutil.copytree(run["out"], out)
    os.remove(os.path.join(out, "checkpoints", "checkpoint_epoch_00002.pyth"))
    cfg = load_config(None, tiny_opts(run["data"], out))
    train(cfg)
    log = read_log(os.path.join(out, "log.txt"))
    assert [(r["epoch"], r["iteration"]) for r in log.resumes] == [(1, 0)]
    fig = curves_figure(log)
    marks = [line for ax in fig.axes for line in ax.lines if line.get_label() == "resumed"]
    assert marks and all(list(m.get_xdata()) == [1, 1] for m in marks)
    html_path = str(tmp_path / "r.html")
    assert report_tool.main([out, "--out", html_path]) == 0
    text = open(html_path, encoding="utf-8").read()
    assert 'class="resume">resumed at epoch 1 (iteration 0)' in text
    assert len(decoded_images(parse(html_path))) == 3  # attention maps from config.yaml + newest checkpoint


def test_report_without_nonlocal_block_has_a_note(run, tmp_path):
    from vidnl.engine.report import AttentionSource, write_report
    from vidnl.models import build_model

    opts = tiny_opts(run["data"], run["out"], **{"NONLOCAL.LOCATION": "[[], [], [], []]"})
    model = build_model(load_config(None, opts))
    path = write_report(run["out"], str(tmp_path / "r.html"), attention=AttentionSource(model=model, dataset=None))
    text = open(path, encoding="utf-8").read()
    assert "has no nonlocal block" in text and len(decoded_images(parse(path))) == 2


def test_report_tool_user_errors(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert report_tool.main([str(empty)]) == 2
    err = capsys.readouterr().err
    assert "log.txt not found" in err and str(empty) in err and "Traceback" not in err
    assert report_tool.main([str(tmp_path / "missing")]) == 2
    assert "is not a folder" in capsys.readouterr().err


def test_report_tool_refuses_a_bad_override_or_cfg(run, tmp_path, capsys):
    out = str(tmp_path / "r.html")
    assert report_tool.main([run["out"], "--out", out, "--opts", "MODEL.NUM_CLASSE", "3"]) == 2
    assert "MODEL.NUM_CLASSES" in capsys.readouterr().err
    assert report_tool.main([run["out"], "--out", out, "--cfg", str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml: file not found" in capsys.readouterr().err and not os.path.exists(out)



def test_resumes_are_read_from_text_lines_and_json_records(tmp_path):
    from vidnl.engine.report import read_log

    log = tmp_path / "log.txt"
    log.write_text(
        '[x INFO vidnl] json_stats: {"_type": "train_epoch", "epoch": 1, "loss": 1.0}\n'
        "[x INFO vidnl.engine.checkpoint] resumed from out/checkpoints/checkpoint_epoch_00001_iter_000004.pyth: "
        "1 epochs and 4 iterations done\n"
        '[x INFO vidnl] json_stats: {"_type": "resume", "epoch": 1, "iteration": 4, "checkpoint": "c.pyth"}\n'
        '[x INFO vidnl] json_stats: {"_type": "train_epo\n'  # cut by a kill
        "[x INFO vidnl.engine.checkpoint] resumed from out/checkpoints/checkpoint_epoch_00002.pyth: "
        "2 epochs and 0 iterations done\n")
    run = read_log(str(log))
    assert [(r["epoch"], r["iteration"], r["line"]) for r in run.resumes] == [(1, 4, 3), (2, 0, 5)]
    assert run.skipped == 1 and len(run.stats["train_epoch"]) == 1


def test_class_names_come_from_the_dataset_then_classes_txt_then_indices(tmp_path, caplog):
    from types import SimpleNamespace

    from vidnl.engine.evaluate import _names, dataset_class_names

    video_ds = SimpleNamespace(clip=None)
    assert dataset_class_names(video_ds, str(tmp_path)) == (None, "index")
    assert _names(None, 3) == ["0", "1", "2"]
    (tmp_path / "classes.txt").write_text("0 jump\n1 run\n")
    assert dataset_class_names(video_ds, str(tmp_path)) == (["jump", "run"], str(tmp_path / "classes.txt"))
    image_ds = SimpleNamespace(cfg=SimpleNamespace(class_names=["cat", "dog"]))
    assert dataset_class_names(image_ds, str(tmp_path)) == (["cat", "dog"], "dataset")
    (tmp_path / "classes.txt").write_text("jump\nrun\n")  # one name per line: read as predict reads it
    assert dataset_class_names(video_ds, str(tmp_path)) == (["jump", "run"], str(tmp_path / "classes.txt"))
    (tmp_path / "classes.txt").write_text("0 jump\n5 run\n")  # indices that do not number the classes
    with caplog.at_level("WARNING"):
        assert dataset_class_names(video_ds, str(tmp_path)) == (None, "index")
    assert "classes.txt" in caplog.text and "once each" in caplog.text
    with caplog.at_level("WARNING"):
        assert _names(["a", "b"], 3) == ["0", "1", "2"]
    assert "2 class names for a model of 3 outputs" in caplog.text


def test_a_report_that_fails_is_a_warning_not_a_failed_test(run, monkeypatch, caplog):
    import vidnl.engine.report as report
    from vidnl.engine.evaluate import write_run_report

    def broken(*args, **kwargs):
        raise RuntimeError("no fonts")

    monkeypatch.setattr(report, "write_report", broken)
    with caplog.at_level("WARNING"):
        assert write_run_report(run["cfg"], None, None, "cpu", "test") is None
    assert "could not write" in caplog.text and "RuntimeError: no fonts" in caplog.text
