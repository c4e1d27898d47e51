"""benchmarks/receptive_field_study.py: the generator's labels, the backbones' receptive fields,
and --quick end to end (JSON lines, markdown, PNG, resume)."""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest
import torch

from conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import receptive_field_study as rfs  # noqa: E402


def _pattern(seed: int) -> np.ndarray:
    return rfs.random_pattern(np.random.default_rng(seed))


def _background() -> np.ndarray:
    return np.zeros((3, rfs.HEIGHT, rfs.WIDTH), np.float32)


def _patch(video: np.ndarray, frame: int, y: int, x: int) -> np.ndarray:
    return video[:, frame, y:y + rfs.SIZE, x:x + rfs.SIZE]


def test_texture_label_is_the_relation_of_the_two_patterns():
    a, b = _pattern(1), _pattern(2)
    same = rfs.Scene([rfs.Obj(a, 3, 2), rfs.Obj(a.copy(), 8, 2 + rfs.DIST)], _background())
    assert rfs.scene_label("texture", same) == 0
    flipped = rfs.Scene([rfs.Obj(a, 3, 2), rfs.Obj(b, 8, 2 + rfs.DIST)], _background())
    assert rfs.scene_label("texture", flipped) == 1  # one object's texture changed: the relation flips
    moved = rfs.Scene([rfs.Obj(a, 0, 9), rfs.Obj(a.copy(), 11, 9 + rfs.DIST)], _background() + 0.1)
    assert rfs.scene_label("texture", moved) == 0  # positions and background: the relation stays
    video = rfs.render(flipped)
    assert video.shape == (3, 1, rfs.HEIGHT, rfs.WIDTH)
    assert np.array_equal(_patch(video, 0, 3, 2), a) and np.array_equal(_patch(video, 0, 8, 2 + rfs.DIST), b)


def test_motion_label_is_same_or_opposite_direction():
    a, b = _pattern(1), _pattern(2)
    up_up = rfs.Scene([rfs.Obj(a, 5, 1, -1), rfs.Obj(b, 6, 1 + rfs.DIST, -1)], _background(), frames=4)
    assert rfs.scene_label("motion", up_up) == 0
    up_down = rfs.Scene([rfs.Obj(a, 5, 1, -1), rfs.Obj(b, 6, 1 + rfs.DIST, 1)], _background(), frames=4)
    assert rfs.scene_label("motion", up_down) == 1  # one object's direction flipped
    both_down = rfs.Scene([rfs.Obj(a, 2, 1, 1), rfs.Obj(b, 6, 1 + rfs.DIST, 1)], _background(), frames=4)
    assert rfs.scene_label("motion", both_down) == 0  # both flipped: still the same direction
    retextured = rfs.Scene([rfs.Obj(_pattern(3), 5, 1, -1), rfs.Obj(b, 6, 1 + rfs.DIST, -1)], _background(), 4)
    assert rfs.scene_label("motion", retextured) == 0  # one object's texture changed: the relation stays
    video = rfs.render(up_down)
    for t in range(4):  # each object is where its motion puts it
        assert np.array_equal(_patch(video, t, 5 - t, 1), a)
        assert np.array_equal(_patch(video, t, 6 + t, 1 + rfs.DIST), b)
    with pytest.raises(ValueError, match="leaves the canvas"):
        rfs.render(rfs.Scene([rfs.Obj(a, 1, 1, -1), rfs.Obj(b, 6, 30, 1)], _background(), frames=4))


def test_control_label_is_local():
    rng = np.random.default_rng(0)
    h, v = rfs.stripes(rng, vertical=False), rfs.stripes(rng, vertical=True)
    assert (np.diff(h, axis=2) == 0).all() and (np.diff(h, axis=1) != 0).all()  # rows constant
    assert (np.diff(v, axis=1) == 0).all() and (np.diff(v, axis=2) != 0).all()  # columns constant
    scene = rfs.Scene([rfs.Obj(h, 2, 3, kind="stripes_h"), rfs.Obj(_pattern(1), 4, 3 + rfs.DIST)], _background())
    assert rfs.scene_label("control", scene) == 0
    scene.objects[0] = rfs.Obj(v, 2, 3, kind="stripes_v")
    assert rfs.scene_label("control", scene) == 1
    scene.objects[1] = rfs.Obj(_pattern(2), 9, 3 + rfs.DIST)  # the other object: the label stays
    assert rfs.scene_label("control", scene) == 1


@pytest.mark.parametrize("task", rfs.TASKS)
def test_sampled_scenes_have_the_requested_label_and_geometry(task):
    rng = np.random.default_rng(1)
    for label in (0, 1) * 20:
        scene = rfs.sample_scene(task, label, rng)
        assert rfs.scene_label(task, scene) == label
        a, b = scene.objects
        assert b.x - a.x == rfs.DIST
        video = rfs.render(scene)  # the pixels show what the scene says
        pa, pb = _patch(video, 0, a.y, a.x), _patch(video, 0, b.y, b.x)
        if task == "texture":
            assert np.array_equal(pa, pb) == (label == 0)
        if task == "motion":
            last = scene.frames - 1
            assert np.array_equal(_patch(video, last, a.y + last * a.dy, a.x), a.pattern)
            assert (a.dy == b.dy) == (label == 0)
    x, y = rfs.make_data(task, 16, [0, 1])
    x2, y2 = rfs.make_data(task, 16, [0, 1])
    assert torch.equal(x, x2) and torch.equal(y, y2) and int(y.sum()) == 8
    assert x.shape == (16, 3, rfs.VIDEO_FRAMES if task == "motion" else 1, rfs.HEIGHT, rfs.WIDTH)


def test_receptive_field_formula():
    assert rfs.receptive_field([(3, 1, 1)] * 3) == 7
    assert rfs.receptive_field([(7, 2, 1), (3, 2, 1)]) == 11  # a ResNet stem: conv 7/2, max-pool 3/2
    assert rfs.receptive_field([(3, 1, 1), (3, 1, 2), (3, 1, 4)]) == 15


@pytest.mark.parametrize("backbone", list(rfs.BACKBONES))
def test_backbone_receptive_fields(backbone):
    """The closed form over each built backbone's layers equals the stated RF (I3D-R18: stem 7/2,
    pool 3/2, 16 3×3 convs with strides 1, 2, 2, 2 at res2-res5: 435)."""
    for frames in (1, rfs.VIDEO_FRAMES):
        model = rfs.build_backbone(backbone, "none", frames)
        assert rfs.receptive_field(rfs.main_path_layers(model)) == rfs.STATED_RF[backbone]
    assert {"rf11": 11, "rf31": 31, "rf63": 63, "i3d_r18": 435}[backbone] == rfs.STATED_RF[backbone]
    if backbone != "i3d_r18":
        assert rfs.STATED_RF["rf11"] < rfs.DIST - rfs.SIZE  # sees one object at a time
        assert rfs.STATED_RF["rf63"] > rfs.WIDTH  # sees the whole canvas


@pytest.mark.parametrize("backbone", ["rf11", "rf31", "rf63"])
def test_receptive_field_matches_gradient_support(backbone):
    """Empirical RF: the input columns on which one output feature depends (positive weights and
    inputs, so no ReLU cuts a path) span exactly the stated RF."""
    model = rfs.build_backbone(backbone, "none", 1).eval()
    with torch.no_grad():
        for p in model.features.parameters():
            if p.dim() > 1:
                p.fill_(0.05)
    x = torch.rand(1, 3, 1, 9, 160, requires_grad=True)
    f = model.features(x)
    f[0, 0, 0, f.shape[3] // 2, f.shape[4] // 2].backward()
    cols = (x.grad.abs().sum((0, 1, 2, 3)) > 0).nonzero().flatten()
    assert int(cols.max() - cols.min() + 1) == rfs.STATED_RF[backbone]


def test_quick_end_to_end_and_resume(tmp_path, capsys):
    out = str(tmp_path / "res")
    os.makedirs(out)
    stem = os.path.join(out, "receptive_field_study_quick")
    stale = {"key": "quick/texture/rf11/none/seed0", "task": "texture", "budget": "quick", "n_train": 32,
             "n_test": 32, "epochs": 99, "test_acc": 77.0}  # a row of an earlier budget: rerun, not reported
    with open(stem + ".jsonl", "w") as f:
        f.write(json.dumps(stale) + "\n")
    assert rfs.main(["--quick", "--out", out, "--workers", "1"]) == 0
    rows = [json.loads(line) for line in open(stem + ".jsonl")][1:]
    assert sorted(r["block"] for r in rows) == ["nl", "none"] and len({r["key"] for r in rows}) == 2
    for r in rows:
        assert r["task"] == "texture" and r["backbone"] == "rf11" and r["rf"] == 11
        assert 0 <= r["test_acc"] <= 100 and 0 <= r["train_acc"] <= 100 and r["epoch_s"] > 0
    from PIL import Image

    with Image.open(stem + ".png") as im:
        im.load()
        assert im.size[0] > 100 and im.size[1] > 100
    table = open(stem + ".md").read()
    assert "| rf11 (11) |" in table and "nl" in table and "77.0" not in table
    assert not os.path.exists(stem + ".claims")  # claims folder removed when empty
    capsys.readouterr()
    assert rfs.main(["--quick", "--out", out, "--workers", "1"]) == 0  # resume: nothing left to run
    assert "cells to run" not in capsys.readouterr().out
    assert len(open(stem + ".jsonl").read().splitlines()) == 3


def test_bad_results_file_is_a_user_error(tmp_path, capsys):
    out = tmp_path / "res"
    out.mkdir()
    (out / "receptive_field_study_quick.jsonl").write_text('{"key": "x", "test_acc": 1}\nnot json\n')
    assert rfs.main(["--quick", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "receptive_field_study_quick.jsonl, line 2" in err and "Traceback" not in err


def test_claims_are_exclusive_and_stale_ones_are_taken_over(tmp_path):
    first = rfs.claim(str(tmp_path), "full/texture/rf11/nl/seed0")
    assert first and rfs.claim(str(tmp_path), "full/texture/rf11/nl/seed0") is None  # held by a live process
    with open(first, "w") as f:
        f.write("999999999")  # a process that no longer exists
    assert rfs.claim(str(tmp_path), "full/texture/rf11/nl/seed0") == first


def test_large_budget_is_8x_the_samples_in_its_own_files():
    full, large = rfs.BUDGETS["full"], rfs.BUDGETS["large"]
    assert large["texture"].n_train == 8 * full["texture"].n_train
    assert large["motion"].n_train == 8 * full["motion"].n_train
    assert rfs.parse_args(["--budget", "large"]).budget == "large"
    with pytest.raises(SystemExit):
        rfs.parse_args(["--budget", "quick"])  # quick is --quick, not a budget to choose
    assert rfs.cell_key("motion", "rf11", "nl", 0, "large") != rfs.cell_key("motion", "rf11", "nl", 0, "full")
