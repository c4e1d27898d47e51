"""Optical flow: extraction of videos with known motion, storage (JPEG / npz), reading clips
aligned with RGB frame indices, and the flow / rgb_flow dataset modes."""

import json
import os

import numpy as np
import pytest
import torch

from vidnl.config import load_config
from vidnl.data.datasets import build_dataset
from vidnl.data.flow import dequantize, flow_key, hflip_flow, quantize, read_flow_clip, resize_flow

from conftest import synth, write_video
from data_prep import extract_flow

H, W, T = 64, 80, 12


def moving_video(offsets_x, offsets_y=None, seed=0):
    """Frames T×H×W×3 of a smooth texture whose content is at (+offset_x, +offset_y) in frame t."""
    n = len(offsets_x)
    offsets_y = offsets_y if offsets_y is not None else [0] * n
    pad = 40
    tex = synth.make_texture(np.random.default_rng(seed), H + 2 * pad, W + 2 * pad)
    return np.stack([tex[pad - oy:pad - oy + H, pad - ox:pad - ox + W] for ox, oy in zip(offsets_x, offsets_y)])


@pytest.fixture(scope="module")
def flow_data(tmp_path_factory):
    """right.mp4 (2 px/frame to the right), down.mp4 (1 px/frame down), alternating.mp4 (1, 3, 1,
    3, ... px to the right), listed in train.csv / test.csv; flow extracted as JPEG and npz."""
    root = tmp_path_factory.mktemp("flow")
    data = root / "data"
    (data / "videos").mkdir(parents=True)
    alt = np.concatenate([[0], np.cumsum([1 if k % 2 == 0 else 3 for k in range(T - 1)])])
    write_video(str(data / "videos" / "right.mp4"), moving_video([2 * t for t in range(T)]))
    write_video(str(data / "videos" / "down.mp4"), moving_video([0] * T, list(range(T)), seed=1))
    write_video(str(data / "videos" / "alternating.mp4"), moving_video(list(alt), seed=2))
    lines = "videos/right.mp4 0\nvideos/down.mp4 1\nvideos/alternating.mp4 0\n"
    (data / "train.csv").write_text(lines)
    (data / "test.csv").write_text(lines)
    return data, root


def test_quantisation_round_trip():
    f = np.linspace(-25, 25, 1001).astype(np.float32)
    q = quantize(f, 20.0)
    assert q.dtype == np.uint8 and q.min() == 0 and q.max() == 255
    back = dequantize(q, 20.0)
    inside = np.abs(f) <= 20
    assert np.abs(back[inside] - f[inside]).max() <= 20.0 / 255 + 1e-5  # half a step of 40/255
    assert np.allclose(back[~inside], np.sign(f[~inside]) * 20.0)


def test_extract_flow_known_motion_jpg_and_npz_and_resume(flow_data, capsys):
    data, root = flow_data
    out = root / "flow_jpg"
    argv = ["--csv", str(data / "train.csv"), str(data / "test.csv"), "--out", str(out), "--workers", "2"]
    assert extract_flow.main(argv) == 0
    assert "3 extracted (33 frame pairs), 0 already done, 0 failed" in capsys.readouterr().out
    right = out / "videos" / "right"
    assert sorted(os.listdir(right))[:3] == ["done", "flow_x_00001.jpg", "flow_x_00002.jpg"]
    assert len(os.listdir(right)) == 2 * (T - 1) + 1
    meta = json.load(open(right / "done"))
    assert meta["num_pairs"] == T - 1 and meta["format"] == "jpg" and (meta["height"], meta["width"]) == (H, W)

    inner = (slice(None), slice(None), slice(12, -12), slice(12, -12))
    f = read_flow_clip(str(right), range(T))[inner]
    assert f.shape == (2, T, H - 24, W - 24) and f.dtype == np.float32
    assert abs(np.median(f[0]) - 2.0) < 0.15 and abs(np.median(f[1])) < 0.15
    f = read_flow_clip(str(out / "videos" / "down"), range(T))[inner]
    assert abs(np.median(f[1]) - 1.0) < 0.15 and abs(np.median(f[0])) < 0.15

    # frame i gets the flow leaving it (pair i), the last frame the flow arriving at it
    f = read_flow_clip(str(out / "videos" / "alternating"), [0, 1, 2, 11, 10, 1])[inner]
    speeds = np.median(f[0].reshape(6, -1), axis=1)
    np.testing.assert_allclose(speeds, [1, 3, 1, 1, 1, 3], atol=0.3)

    # resumable: nothing to do; a video without its marker is redone
    os.remove(right / "done")
    assert extract_flow.main(argv) == 0
    assert "1 extracted (11 frame pairs), 2 already done" in capsys.readouterr().out

    npz = root / "flow_npz"
    assert extract_flow.main(["--videos", str(data / "videos"), "--out", str(npz), "--format", "npz",
                              "--workers", "1"]) == 0
    assert sorted(os.listdir(npz)) == ["alternating", "down", "failed.txt", "right"]
    g = read_flow_clip(str(npz / "right"), range(T))[inner]
    assert abs(np.median(g[0]) - 2.0) < 0.15
    with pytest.raises(Exception, match="stored as 'npz' but 'jpg'"):
        read_flow_clip(str(npz / "right"), [0], "jpg")


def test_flow_transforms_change_values():
    flow = torch.zeros(3, 2, 10, 20)
    flow[:, 0], flow[:, 1] = 2.0, -1.0
    flow[:, :, :, :5] = 0.0
    big = resize_flow(flow.clone(), (20, 60))
    assert big.shape == (3, 2, 20, 60)
    assert torch.allclose(big[:, 0, :, -1], torch.tensor(6.0)) and torch.allclose(big[:, 1, :, -1], torch.tensor(-2.0))
    flipped = hflip_flow(flow.clone())
    assert torch.equal(flipped[:, 0, :, 0], -flow[:, 0, :, -1]) and torch.equal(flipped[:, 1], flow[:, 1].flip(-1))
    assert flow_key("/d/split1/../videos/a/b.mp4", "/d/split1") == os.path.join("videos", "a", "b")
    assert flow_key("/d/videos/a/b.avi", "/d/videos") == os.path.join("a", "b")


def flow_cfg(data, flow_dir, *extra):
    opts = ["DATA.PATH_TO_DATA_DIR", str(data), "DATA.FLOW_DIR", str(flow_dir), "MODEL.NUM_CLASSES", "2",
            "DATA.NUM_FRAMES", "4", "DATA.SAMPLING_RATE", "2", "DATA.TRAIN_JITTER_SCALES", "[64, 64]",
            "DATA.TRAIN_CROP_SIZE", "48", "DATA.TEST_CROP_SIZE", "48", "DATA.RANDOM_FLIP", "False",
            "TEST.NUM_ENSEMBLE_VIEWS", "2", "TEST.NUM_SPATIAL_CROPS", "3", "DATA.FLOW_SCALE", "20.0"]
    return load_config(None, opts + list(extra))


FLOW_MODE = ["DATA.MODALITY", "flow", "DATA.INPUT_CHANNEL_NUM", "2", "DATA.MEAN", "[0.0, 0.0]",
             "DATA.STD", "[1.0, 1.0]"]


def test_flow_mode_items(flow_data):
    data, root = flow_data
    flow_dir = root / "flow_jpg"
    ds = build_dataset("csv", flow_cfg(data, flow_dir, *FLOW_MODE), "train")
    item = ds[0]
    x = item["inputs"]
    assert x.shape == (2, 4, 48, 48) and item["failures"] == []
    assert abs(float(x[0].median()) - 2.0 / 20) < 0.01 and abs(float(x[1].median())) < 0.01
    # scale jitter to short side 96 = 1.5x: the flow grows with the image
    ds = build_dataset("csv", flow_cfg(data, flow_dir, *FLOW_MODE, "DATA.TRAIN_JITTER_SCALES", "[96, 96]"), "train")
    assert abs(float(ds[0]["inputs"][0].median()) - 3.0 / 20) < 0.015
    # flips mirror the flow: over epochs both signs show up, with the same size
    ds = build_dataset("csv", flow_cfg(data, flow_dir, *FLOW_MODE, "DATA.RANDOM_FLIP", "True"), "train")
    medians = []
    for epoch in range(8):
        ds.set_epoch(epoch)
        medians.append(float(ds[0]["inputs"][0].median()))
    assert min(medians) < -0.09 and max(medians) > 0.09

    test = build_dataset("csv", flow_cfg(data, flow_dir, *FLOW_MODE), "test")
    views = test[1]["inputs"]  # down.mp4: short side 64 -> 48, flow scaled by 0.75
    assert views.shape == (6, 2, 4, 48, 48)
    assert abs(float(views[:, 1].median()) - 0.75 / 20) < 0.008


def test_rgb_flow_mode_shares_frames_and_crops_and_reports_missing_flow(flow_data, tmp_path):
    data, root = flow_data
    flow_dir = root / "flow_jpg"
    common = ["DATA.RANDOM_FLIP", "True", "DATA.TRAIN_JITTER_SCALES", "[64, 80]"]
    rgb = build_dataset("csv", flow_cfg(data, flow_dir, *common), "train")
    both = build_dataset("csv", flow_cfg(data, flow_dir, *common, "DATA.MODALITY", "rgb_flow"), "train")
    for epoch in range(3):
        rgb.set_epoch(epoch)
        both.set_epoch(epoch)
        a, b = rgb[2], both[2]
        assert torch.equal(a["inputs"], b["inputs"])  # the RGB clip is exactly the rgb-mode clip
        assert b["flow"].shape == (2, 4, 48, 48)
    # test items are the RGB items (MARS tests on RGB alone): no flow is read, none is needed
    test = build_dataset("csv", flow_cfg(data, flow_dir, "DATA.MODALITY", "rgb_flow"), "test")[0]
    rgb_test = build_dataset("csv", flow_cfg(data, flow_dir), "test")[0]
    assert test["inputs"].shape == (6, 4, 48, 48, 3) and "flow" not in test
    assert torch.equal(test["inputs"], rgb_test["inputs"])
    no_flow = build_dataset("csv", flow_cfg(data, root / "no_flow_here", "DATA.MODALITY", "rgb_flow"), "test")[0]
    assert torch.equal(no_flow["inputs"], rgb_test["inputs"]) and not no_flow["failures"]

    # a video whose flow was never extracted: another video is used and the failure is reported
    (tmp_path / "videos").mkdir()
    for name in ("right", "down"):
        os.symlink(data / "videos" / f"{name}.mp4", tmp_path / "videos" / f"{name}.mp4")
    write_video(str(tmp_path / "videos" / "new.mp4"), moving_video([0] * 8))
    (tmp_path / "train.csv").write_text("videos/new.mp4 0\nvideos/right.mp4 0\nvideos/down.mp4 1\n")
    ds = build_dataset("csv", flow_cfg(tmp_path, flow_dir, *FLOW_MODE), "train")
    item = ds[0]
    assert item["index"] != 0 and item["inputs"].shape == (2, 4, 48, 48)
    path, why = item["failures"][0]
    assert path.endswith("new.mp4") and "no flow folder" in why and "extract_flow.py" in why
    (tmp_path / "test.csv").write_text("videos/new.mp4 0\n")
    failed = build_dataset("csv", flow_cfg(tmp_path, flow_dir, *FLOW_MODE), "test")[0]
    assert failed["inputs"] is None and "no flow folder" in failed["failures"][0][1]
