"""Sliding windows over long videos (vidnl/long_video.py, tools/predict.py --window-stride)."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from conftest import BACKENDS, ROOT, SHARED_VIDEOS, index_video, tiny_opts, write_video
from vidnl import long_video
from vidnl.data import decoding, transforms
from vidnl.data.decoding import read_frames


# ------------------------------------------------------------------------------------------------
# window_starts against a hand-written reference
# ------------------------------------------------------------------------------------------------
def reference_starts(n: int, span: int, stride: int) -> list[int]:
    """Every start s = 0, stride, ... whose window s..s+span-1 lies inside frames 0..n-1; a video
    shorter than one span: the one window at 0."""
    out, s = [], 0
    while s + span - 1 <= n - 1:
        out.append(s)
        s += stride
    return out or [0]


@pytest.mark.parametrize("n,span,stride", [(100, 16, 8), (100, 16, 16), (100, 16, 1), (16, 16, 4), (17, 16, 4),
                                           (5, 16, 4), (1, 1, 1), (64, 7, 30), (250, 64, 25), (63, 64, 1)])
def test_window_starts_match_reference(n, span, stride):
    got = long_video.window_starts(n, span, stride)
    assert got.dtype == np.int64
    assert got.tolist() == reference_starts(n, span, stride)
    if n >= span:
        assert got[-1] + span - 1 <= n - 1 < got[-1] + span - 1 + stride  # last ends in the last stride


def test_window_starts_rejects_bad_arguments():
    for args in ((10, 0, 1), (10, 4, 0), (0, 4, 1)):
        with pytest.raises(ValueError):
            long_video.window_starts(*args)


# ------------------------------------------------------------------------------------------------
# iter_windows: each window equals the single-view test clip of the same frames
# ------------------------------------------------------------------------------------------------
def test_clip(path, idx, crop, backend, short_side=None):
    """The test path of one view: read_frames at the test scale, test_views with one crop."""
    decoded = read_frames(path, lambda n: idx, backend, short_side=crop if short_side is None else short_side)
    return transforms.test_views(transforms.frames_to_tensor(decoded.frames), crop_size=crop, num_crops=1)[0]


test_clip.__test__ = False


def textured_video(n: int, h: int = 48, w: int = 64, seed: int = 0) -> np.ndarray:
    """Frames with structure in space and time (a moving texture plus the frame index in grey)."""
    rng = np.random.default_rng(seed)
    tex = rng.integers(0, 255, (h + n, w + n, 3), dtype=np.uint8)
    return np.stack([(tex[i:i + h, i:i + w] // 2 + 2 * (i % 64)).astype(np.uint8) for i in range(n)])


def grey_video(n: int, size: int = 32) -> np.ndarray:
    """Flat frames of grey level 50 + i (up to 205 frames), to check which frames a window holds."""
    return np.stack([np.full((size, size, 3), 50 + i, np.uint8) for i in range(n)])


def all_windows(path, **kw):
    starts, clips, fps, counts = [], [], [], []
    for b in long_video.iter_windows(path, **kw):
        assert b.clips.dtype == torch.uint8 and b.clips.shape[0] == len(b.starts)
        starts += b.starts.tolist()
        clips += list(b.clips)
        fps.append(b.fps)
        counts.append(b.num_video_frames)
    return starts, clips, fps, counts


@pytest.mark.parametrize("backend", BACKENDS)
def test_windows_equal_test_clips(tmp_path, backend):
    path = write_video(str(tmp_path / "v.mp4"), textured_video(40), fps=25)
    T, rate, stride, crop = 4, 2, 3, 32
    stats = {}
    starts, clips, fps, counts = all_windows(path, num_frames=T, sampling_rate=rate, stride_frames=stride,
                                             short_side=crop, crop_size=crop, backend=backend, batch_size=5,
                                             stats=stats)
    assert starts == long_video.window_starts(40, 7, stride).tolist()
    assert all(f == pytest.approx(25.0) for f in fps) and counts[-1] == 40
    assert stats["backend"] == backend
    for s, clip in zip(starts, clips):
        ref = test_clip(path, long_video.window_indices(s, T, rate), crop, backend)
        assert clip.shape == (T, crop, crop, 3)
        assert torch.equal(clip, ref), (s, (clip.int() - ref.int()).abs().max())
    # each frame once: only frames some window samples are kept (stride 3, rate 2: all 0..39 but none after 39)
    assert stats["decoded_frames"] == 40


@pytest.mark.parametrize("backend", BACKENDS)
def test_windows_equal_the_test_dataset_item(tmp_path, backend):
    """The window at the start the test's one centred clip uses is that very item of
    VideoCSVDataset (test mode, 1 view, 1 crop)."""
    from vidnl.data.datasets.video_csv import ClipConfig, VideoCSVDataset, VideoRecord

    path = write_video(str(tmp_path / "v.mp4"), textured_video(39, 64, 48, seed=1), fps=25)  # portrait
    clip = ClipConfig(num_frames=4, sampling_rate=2, test_crop_size=32, num_ensemble_views=1, num_spatial_crops=1,
                      backend=backend)
    item = VideoCSVDataset([VideoRecord(path, 0)], "test", clip)[0]["inputs"][0]
    centre = (39 - 7) // 2  # sampling.test_clip_starts with one clip
    starts, clips, _, _ = all_windows(path, num_frames=4, sampling_rate=2, stride_frames=4, short_side=32,
                                      crop_size=32, backend=backend)
    assert torch.equal(clips[starts.index(centre)], item)


def test_resize_after_decoding_and_upscaling(tmp_path):
    """short_side larger than crop_size (resize after decoding) and a video smaller than the crop
    (upscaled) are still the test path's pixels."""
    path = write_video(str(tmp_path / "v.mp4"), textured_video(12, 24, 32), fps=10)
    for short_side, crop in ((24, 16), (None, 40)):
        starts, clips, _, _ = all_windows(path, num_frames=3, sampling_rate=1, stride_frames=5, short_side=short_side,
                                          crop_size=crop, backend="pyav")
        assert starts == [0, 5]
        for s, c in zip(starts, clips):
            ref = test_clip(path, long_video.window_indices(s, 3, 1), crop, "pyav",
                            short_side=short_side if short_side else 0)
            assert torch.equal(c, ref)


@pytest.mark.parametrize("backend", BACKENDS)
def test_rotated_video_windows_are_displayed_frames(tmp_path, backend):
    """A video with a 90° display matrix: windows are as displayed, equal to the test path."""
    import av

    frames = textured_video(10, 32, 48)
    path = str(tmp_path / "r.mp4")
    with av.open(path, mode="w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        stream.set_display_rotation(90)
        for img in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    stats = {}
    starts, clips, _, _ = all_windows(path, num_frames=2, sampling_rate=3, stride_frames=2, short_side=24,
                                      crop_size=24, backend=backend, stats=stats)
    assert stats["backend"] == "pyav"  # decord does not apply rotations consistently
    for s, c in zip(starts, clips):
        assert torch.equal(c, test_clip(path, long_video.window_indices(s, 2, 3), 24, backend))
    # displayed portrait 48 wide x ... : decoded 32x48 stored -> displayed 48x32 (H×W), short side 32 -> 24
    assert decoding.read_frames(path, lambda n: [0], "pyav").frames.shape[1:3] == (48, 32)


def test_frame_folder_windows_equal_test_clips(tmp_path):
    """A folder of frames (img_00001.jpg, ...): read at full size, then the test's resize and crop."""
    from PIL import Image

    frames = textured_video(9, 40, 56)
    for i, f in enumerate(frames):
        Image.fromarray(f).save(tmp_path / f"img_{i + 1:05d}.png")
    starts, clips, fps, counts = all_windows(str(tmp_path), num_frames=3, sampling_rate=2, stride_frames=2,
                                             short_side=32, crop_size=32, frame_template="img_{:05d}.png")
    assert starts == [0, 2, 4] and fps == [0.0] and counts == [9]
    for s, c in zip(starts, clips):
        decoded = read_frames(str(tmp_path), lambda n, s=s: long_video.window_indices(s, 3, 2),
                              frame_template="img_{:05d}.png")
        ref = transforms.test_views(transforms.frames_to_tensor(decoded.frames), crop_size=32, num_crops=1)[0]
        assert torch.equal(c, ref)


@pytest.mark.parametrize("mode", ["pad", "loop"])
def test_short_video_one_padded_window(tmp_path, mode):
    path = write_video(str(tmp_path / "s.mp4"), index_video(5), fps=25)
    starts, clips, _, counts = all_windows(path, num_frames=4, sampling_rate=2, stride_frames=2, short_side=32,
                                           crop_size=32, backend="pyav", short_video_mode=mode)
    assert starts == [0] and counts == [5]
    idx = [0, 2, 4, 4] if mode == "pad" else [0, 2, 4, 1]
    assert torch.equal(clips[0], test_clip(path, np.array(idx), 32, "pyav"))
    grey = clips[0].float().mean(dim=(1, 2, 3)) / 4  # index_video: grey level 4·i
    assert np.allclose(grey.numpy(), idx, atol=0.6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_decoder_holds_at_most_one_span(tmp_path, backend):
    """Memory is bounded structurally: the decoder never holds more than one span of frames,
    whatever the length, and a frame no window samples is not kept."""
    path = write_video(str(tmp_path / "long.mp4"), grey_video(150), fps=25)
    for T, rate, stride in ((4, 3, 2), (2, 2, 20)):
        span = (T - 1) * rate + 1
        stats = {}
        starts, clips, _, _ = all_windows(path, num_frames=T, sampling_rate=rate, stride_frames=stride, short_side=32,
                                          crop_size=32, backend=backend, batch_size=4, stats=stats)
        assert starts == long_video.window_starts(150, span, stride).tolist()
        assert stats["max_buffered_frames"] <= span
        sampled = {s + j * rate for s in starts for j in range(T)}
        if backend == "decord":  # the length is known up front: exactly the sampled frames
            assert stats["kept_frames"] == len(sampled)
        else:  # PyAV streams without trusting the header: also the first span and a last window's head
            assert len(sampled) <= stats["kept_frames"] <= len(sampled) + 2 * span
        for s, c in zip(starts, clips):  # the right frames (grey level 50 + i)
            grey = c.float().mean(dim=(1, 2, 3)).numpy()
            assert np.allclose(grey, [50 + s + j * rate for j in range(T)], atol=1.5)


def test_batches_are_bounded_and_ordered(tmp_path):
    path = write_video(str(tmp_path / "v.mp4"), index_video(30, 32, 32), fps=25)
    sizes = [len(b.starts) for b in long_video.iter_windows(path, num_frames=2, sampling_rate=1, stride_frames=1,
                                                             short_side=32, crop_size=32, backend="pyav",
                                                             batch_size=8)]
    assert sizes == [8, 8, 8, 5]


def test_bad_files_are_decode_errors(tmp_path):
    kw = dict(num_frames=2, sampling_rate=1, stride_frames=1, short_side=32, crop_size=32)
    with pytest.raises(decoding.DecodeError, match="does not exist"):
        next(long_video.iter_windows(str(tmp_path / "missing.mp4"), **kw))
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all" * 10)
    with pytest.raises(decoding.DecodeError, match="bad.mp4"):
        next(long_video.iter_windows(str(bad), **kw))


@pytest.mark.skipif(not os.path.isdir(SHARED_VIDEOS), reason="shared test videos are not present")
@pytest.mark.parametrize("backend", BACKENDS)
def test_real_video_windows_equal_test_clips(backend):
    path = os.path.join(SHARED_VIDEOS, "real_320x240_25fps.avi")
    if not os.path.isfile(path):
        pytest.skip("real_320x240_25fps.avi is not present")
    T, rate, stride, crop = 4, 4, 50, 64
    n = 0
    for b in long_video.iter_windows(path, num_frames=T, sampling_rate=rate, stride_frames=stride, short_side=crop,
                                     crop_size=crop, backend=backend, batch_size=4):
        assert b.fps == pytest.approx(25.0, rel=1e-3)
        for s, c in zip(b.starts.tolist()[:2], b.clips[:2]):  # two per batch keeps it quick
            assert torch.equal(c, test_clip(path, long_video.window_indices(s, T, rate), crop, backend))
        n += len(b.starts)
    assert n >= 2


# ------------------------------------------------------------------------------------------------
# Stride syntax
# ------------------------------------------------------------------------------------------------
def test_parse_stride():
    assert long_video.parse_stride("16f") == (16.0, "f")
    assert long_video.parse_stride("0.5s") == (0.5, "s")
    assert long_video.parse_stride(" 2S ") == (2.0, "s")
    assert long_video.stride_in_frames(0.5, "s", 25.0) == 12  # 12.5 rounds to even
    assert long_video.stride_in_frames(1, "s", 29.97) == 30
    assert long_video.stride_in_frames(0.01, "s", 25.0) == 1
    assert long_video.stride_in_frames(16, "f", 0.0) == 16
    for bad in ("16", "abc", "0s", "-1s", "1.5f", "nanS", "s", "", "inf s"):
        with pytest.raises(ValueError, match="window stride"):
            long_video.parse_stride(bad)
    with pytest.raises(ValueError, match="frame rate is unknown"):
        long_video.stride_in_frames(1, "s", 0.0)


# ------------------------------------------------------------------------------------------------
# The timeline: a video of two known synthetic classes, scored by a hand-made motion "model"
# ------------------------------------------------------------------------------------------------
class MotionDirectionModel(torch.nn.Module):
    """A "model" whose logits are a deterministic function of the clip's horizontal motion:
    [right, left] = ±10·(e_left − e_right), e_d the mean |frame t+1 − frame t shifted along d| over
    shifts of 1 and 2 pixels. Input B×C×T×H×W (normalised). So its class is known for any clip of
    the synthetic motion data (data_prep/make_synthetic_motion.py, classes right and left)."""

    def __init__(self):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(()))  # a device to run on

    def forward(self, x):
        now, nxt = x[:, :, :-1], x[:, :, 1:]
        e_right = sum((nxt[..., s:] - now[..., :-s]).abs().mean(dim=(1, 2, 3, 4)) for s in (1, 2))
        e_left = sum((nxt[..., :-s] - now[..., s:]).abs().mean(dim=(1, 2, 3, 4)) for s in (1, 2))
        d = 10 * (e_left - e_right)
        return torch.stack([d, -d], dim=1) + 0 * self.dummy


def two_class_video(path, first: int, second: int, fps: int = 25) -> str:
    """``first`` frames moving right (class 0), then ``second`` moving left (class 1): two clips
    of the demo's synthetic motion data, concatenated."""
    from data_prep import make_synthetic_motion as synth

    rng = np.random.default_rng(3)
    frames = np.concatenate([synth.render_video(rng, 0, first, 48, 64, speed_range=(1.5, 2.0)),
                             synth.render_video(rng, 1, second, 48, 64, speed_range=(1.5, 2.0))])
    return write_video(str(path), frames, fps=fps)


def test_timeline_finds_the_class_boundary_within_one_stride(tmp_path):
    boundary, fps = 60, 25
    path = two_class_video(tmp_path / "two.mp4", boundary, 70, fps)
    stride, T, rate = 5, 4, 2
    doc = long_video.predict_timeline(path, MotionDirectionModel(), num_frames=T, sampling_rate=rate,
                                      stride_frames=stride, short_side=48, crop_size=48, mean=[0.45] * 3,
                                      std=[0.225] * 3, batch_size=4, class_names=["right", "left"], topk=2,
                                      backend="pyav")
    timeline = doc["windows"]
    span = (T - 1) * rate + 1
    assert doc["fps"] == pytest.approx(fps) and doc["num_video_frames"] == 130 and doc["span_frames"] == span
    assert [w["start_frame"] for w in timeline] == long_video.window_starts(130, span, stride).tolist()
    for i, w in enumerate(timeline):
        assert w["window"] == i and w["end_frame"] == w["start_frame"] + span - 1
        assert w["start"] == pytest.approx(w["start_frame"] / fps) and w["end"] == pytest.approx((w["end_frame"] + 1) / fps)
        assert sum(w["probs"]) == pytest.approx(1.0, abs=1e-5) and len(w["topk"]) == 2
        assert w["topk"][0]["prob"] == pytest.approx(max(w["probs"]))
        if w["end_frame"] < boundary:  # wholly before the boundary: right; wholly after: left
            assert w["topk"][0]["name"] == "right", w
        elif w["start_frame"] >= boundary:
            assert w["topk"][0]["name"] == "left", w
    segments = long_video.merge_segments(timeline, 0.5)
    assert [s["name"] for s in segments] == ["right", "left"]
    assert abs(segments[1]["start_frame"] - boundary) <= stride
    assert abs(segments[1]["start"] - boundary / fps) <= stride / fps
    assert segments[0]["start_frame"] == 0 and segments[1]["end_frame"] == timeline[-1]["end_frame"]
    assert sum(s["num_windows"] for s in segments) == len(timeline)


def _window(i, name, prob, start_frame=None, fps=10.0, span=5):
    s = i * 2 if start_frame is None else start_frame
    return {"window": i, "start_frame": s, "end_frame": s + span - 1, "start": s / fps, "end": (s + span) / fps,
            "topk": [{"index": {"a": 0, "b": 1}[name], "name": name, "prob": prob}], "probs": []}


def test_merge_segments_rule():
    """Hand-made timeline: a change of top class or a window under the threshold ends a segment."""
    tl = [_window(0, "a", 0.9), _window(1, "a", 0.7), _window(2, "a", 0.4), _window(3, "a", 0.8),
          _window(4, "b", 0.6), _window(5, "b", 0.5), _window(6, "a", 0.95)]
    seg = long_video.merge_segments(tl, 0.5)
    assert [(s["name"], s["start_frame"], s["end_frame"], s["num_windows"]) for s in seg] == [
        ("a", 0, 6, 2), ("a", 6, 10, 1), ("b", 8, 14, 2), ("a", 12, 16, 1)]
    assert seg[0]["mean_prob"] == pytest.approx(0.8) and seg[2]["mean_prob"] == pytest.approx(0.55)
    assert seg[0]["start"] == pytest.approx(0.0) and seg[0]["end"] == pytest.approx(0.7)
    assert long_video.merge_segments(tl, 0.96) == []
    assert len(long_video.merge_segments(tl, 0.0)) == 3


def test_timeline_csv_rows():
    import csv
    import io

    tl = [_window(0, "a", 0.9), _window(1, "b", 0.25)]
    rows = list(csv.reader(io.StringIO(long_video.timeline_csv(tl))))
    assert rows[0] == ["window", "start_frame", "end_frame", "start", "end", "name_1", "prob_1"]
    assert rows[2] == ["1", "2", "6", "0.200", "0.700", "b", "0.250000"]
    seg = list(csv.reader(io.StringIO(long_video.segments_csv(long_video.merge_segments(tl, 0.5)))))
    assert seg == [["index", "name", "start", "end", "start_frame", "end_frame", "mean_prob", "num_windows"],
                   ["0", "a", "0.000", "0.500", "0", "4", "0.900000", "1"]]


def test_non_finite_scores_are_a_user_error(tmp_path):
    from vidnl.errors import VidnlUserError

    class NaNModel(MotionDirectionModel):
        def forward(self, x):
            out = super().forward(x)
            return out * float("nan")

    path = write_video(str(tmp_path / "v.mp4"), textured_video(12), fps=25)
    with pytest.raises(VidnlUserError, match="window at frame 0 are not finite"):
        long_video.predict_timeline(path, NaNModel(), num_frames=2, sampling_rate=1, stride_frames=4, short_side=32,
                                    crop_size=32, mean=[0.5] * 3, std=[0.5] * 3)


# ------------------------------------------------------------------------------------------------
# tools/predict.py --window-stride, end to end (tiny I3D-R18 + SNL, random weights)
# ------------------------------------------------------------------------------------------------
SYNTH_CFG = os.path.join(ROOT, "configs", "Synthetic", "I3D_R18_SNL.yaml")


def _predict_tool():
    import importlib.util

    spec = importlib.util.spec_from_file_location("tool_predict_windows", os.path.join(ROOT, "tools", "predict.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


@pytest.fixture(scope="module")
def tiny_classifier(tmp_path_factory):
    """A tiny random I3D-R18 + SNL of the synthetic config, its checkpoint, a data folder holding
    only classes.txt (not the tiny_dataset fixture: it forks a process pool, which can deadlock
    once decoder threads run in this process) and a 60-frame right-then-left video."""
    from vidnl.config import load_config
    from vidnl.models import build_model

    tmp = tmp_path_factory.mktemp("windows")
    (tmp / "data").mkdir()
    (tmp / "data" / "classes.txt").write_text("right\nleft\n")
    weights = str(tmp / "tiny.pyth")
    opts = tiny_opts(str(tmp / "data"), str(tmp / "run"), **{"TEST.BATCH_SIZE": 4})
    cfg = load_config(SYNTH_CFG, opts)
    torch.manual_seed(0)
    model = build_model(cfg)
    torch.nn.init.normal_(model.head.fc.weight, std=1.0)
    torch.save({"model_state": model.state_dict(), "epoch": 1}, weights)
    video = two_class_video(tmp / "two.mp4", 30, 30, fps=25)
    return {"cfg": cfg, "opts": opts, "weights": weights, "video": video, "tmp": tmp}


def _window_probs_by_test_path(cfg, weights, video, start):
    """The softmax of the model's logits on the single-view test clip at ``start``."""
    from vidnl.data.model_input import InputNormalizer
    from vidnl.predict import build_predictor

    d = cfg.DATA
    clip = test_clip(video, long_video.window_indices(start, d.NUM_FRAMES, d.SAMPLING_RATE), d.TEST_CROP_SIZE,
                     d.DECODING_BACKEND)
    model = build_predictor(cfg, weights)
    with torch.no_grad():
        return torch.softmax(model(InputNormalizer(d.MEAN, d.STD)(clip[None])).float(), 1)[0]


def test_predict_tool_windows_end_to_end(tiny_classifier, tmp_path, capsys):
    import json

    c = tiny_classifier
    out = tmp_path / "out"
    args = [c["video"], "--cfg", SYNTH_CFG, "--weights", c["weights"], "--window-stride", "0.2s", "--topk", "2",
            "--timeline", str(out / "tl.json"), "--timeline-png", str(out / "tl.png"), "--render",
            str(out / "labels.mp4"), "--attention", "--query", "0.5,0.5,0.5"] + c["opts"]
    assert _predict_tool()(args) == 0
    text = capsys.readouterr().out
    assert "windows of 7 frames every 5 frames = 0.2 s" in text and "segments" in text
    doc = json.loads((out / "tl.json").read_text())
    span = 7
    assert [w["start_frame"] for w in doc["windows"]] == long_video.window_starts(60, span, 5).tolist()
    assert doc["class_names"] == ["right", "left"] and doc["stride_frames"] == 5
    assert doc["segments"] == long_video.merge_segments(doc["windows"], 0.5)
    for w in (doc["windows"][0], doc["windows"][5]):  # the tool's probabilities are the test path's
        ref = _window_probs_by_test_path(c["cfg"], c["weights"], c["video"], w["start_frame"])
        assert np.allclose(w["probs"], ref.numpy(), atol=1e-5)
        assert w["topk"][0]["name"] == ["right", "left"][int(ref.argmax())]
    assert (out / "tl.png").stat().st_size > 1000
    import av

    with av.open(str(out / "labels.mp4")) as container:
        assert sum(1 for _ in container.decode(video=0)) == 60


def test_predict_tool_windows_csv_and_frames_stride(tiny_classifier, tmp_path, capsys):
    import csv

    c = tiny_classifier
    tl = tmp_path / "tl.csv"
    assert _predict_tool()([c["video"], "--cfg", SYNTH_CFG, "--weights", c["weights"], "--window-stride", "16f",
                            "--timeline", str(tl), "--segments-threshold", "0"] + c["opts"]) == 0
    rows = list(csv.DictReader(tl.open()))
    assert [int(r["start_frame"]) for r in rows] == [0, 16, 32, 48]
    assert float(rows[1]["start"]) == pytest.approx(16 / 25, abs=1e-3)
    segs = list(csv.DictReader((tmp_path / "tl_segments.csv").open()))
    assert sum(int(s["num_windows"]) for s in segs) == 4  # threshold 0: every window in a segment


@pytest.mark.parametrize("extra,message", [
    (["--window-stride", "1"], "--window-stride: window stride '1': expected a number of frames like '16f'"),
    (["--window-stride", "0s"], "window stride '0s'"),
    (["--window-stride", "1.5f"], "window stride '1.5f'"),
    (["--timeline", "x.json"], "--timeline needs --window-stride"),
    (["--window-stride", "1s", "--timeline", "x.txt"], "--timeline x.txt: expected a file name ending in .json or .csv"),
    (["--window-stride", "1s", "--segments-threshold", "1.5"], "--segments-threshold must be a probability"),
    (["--window-stride", "1s", "--attention"], "--attention draws on the rendered video"),
    (["--window-stride", "1s", "--render", "o.mp4", "--query", "0.5,2,0"], "--query '0.5,2,0': expected t,y,x"),
])
def test_predict_tool_window_usage_errors(tiny_classifier, tmp_path, capsys, extra, message):
    c = tiny_classifier
    assert _predict_tool()([c["video"], "--cfg", SYNTH_CFG, "--weights", c["weights"]] + extra + c["opts"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err


def test_predict_tool_windows_bad_video_and_frame_folder(tiny_classifier, tmp_path, capsys):
    c = tiny_classifier
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"junk" * 100)
    common = ["--cfg", SYNTH_CFG, "--weights", c["weights"]]
    assert _predict_tool()([str(bad)] + common + ["--window-stride", "1s"] + c["opts"]) == 2
    err = capsys.readouterr().err
    assert "cannot read" in err and "bad.mp4" in err and "Traceback" not in err
    frames = tmp_path / "frames"
    frames.mkdir()
    from PIL import Image

    for i in range(10):
        Image.fromarray(textured_video(1, 40, 56, seed=i)[0]).save(frames / f"img_{i + 1:05d}.jpg")
    assert _predict_tool()([str(frames)] + common + ["--window-stride", "1s"] + c["opts"]) == 2
    err = capsys.readouterr().err
    assert "frame rate is unknown: give the window stride in frames" in err and "Traceback" not in err
    assert _predict_tool()([str(frames)] + common + ["--window-stride", "2f", "--timeline", str(tmp_path / "f.csv")]
                           + c["opts"]) == 0
    assert "  frames 0-" in capsys.readouterr().out  # 2 classes: top prob >= 0.5; no times, so frames are printed
    rows = (tmp_path / "f.csv").read_text().splitlines()
    assert len(rows) == 1 + 2 and rows[1].startswith("0,0,6,,,")  # 10 frames, span 7, stride 2: starts 0, 2


def test_predict_tool_windows_take_one_video(tiny_classifier, tmp_path, capsys):
    c = tiny_classifier
    assert _predict_tool()([c["video"], c["video"], "--cfg", SYNTH_CFG, "--weights", c["weights"],
                            "--window-stride", "1s"] + c["opts"]) == 2
    err = capsys.readouterr().err
    assert "--window-stride scores one video; 2 were given" in err and "Traceback" not in err


@pytest.mark.skipif(not os.path.isdir(SHARED_VIDEOS), reason="shared test videos are not present")
def test_predict_tool_windows_on_a_real_video(tiny_classifier, tmp_path, capsys):
    import json

    path = os.path.join(SHARED_VIDEOS, "real_armwrestling_340x256_28fps.mp4")
    if not os.path.isfile(path):
        pytest.skip("real_armwrestling_340x256_28fps.mp4 is not present")
    c = tiny_classifier
    assert _predict_tool()([path, "--cfg", SYNTH_CFG, "--weights", c["weights"], "--window-stride", "2s",
                            "--timeline", str(tmp_path / "tl.json")] + c["opts"]) == 0
    doc = json.loads((tmp_path / "tl.json").read_text())
    assert doc["fps"] == pytest.approx(28.0, rel=1e-3)
    assert [w["start_frame"] for w in doc["windows"]] == long_video.window_starts(doc["num_video_frames"], 7, 56).tolist()
    w = doc["windows"][-1]
    ref = _window_probs_by_test_path(c["cfg"], c["weights"], path, w["start_frame"])
    assert np.allclose(w["probs"], ref.numpy(), atol=1e-5)


def test_long_video_benchmark_smoke(tmp_path):
    """benchmarks/long_video.py, tiny: both ways cut the same windows (it checks a checksum) and
    the JSON holds the ratio and the peak memory of each."""
    import importlib.util
    import json

    spec = importlib.util.spec_from_file_location("bench_long_video", os.path.join(ROOT, "benchmarks",
                                                                                  "long_video.py"))
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "lv.json"
    assert bench.main(["--seconds", "2", "--height", "48", "--width", "64", "--frames", "2", "--rate", "2", "--crop",
                       "32", "--stride", "8f", "--model", "none", "--threads", "1", "--backend", "pyav", "--in-process",
                       "--dir", str(tmp_path / "v"), "--json", str(out)]) == 0
    row = json.loads(out.read_text())["rows"][0]
    assert row["stream"]["windows"] == row["naive"]["windows"] == len(long_video.window_starts(50, 3, 8))
    assert row["data_speedup"] > 0 and row["stream"]["peak_rss_mb"] > 0 and row["naive"]["peak_rss_mb"] > 0


def test_timeline_under_compiled_inference(tmp_path):
    """TEST.COMPILE's wrapper (one graph for passes of batch_size clips, the last batch padded)
    gives the eager timeline."""
    from vidnl.engine.inference import compile_for_inference

    path = two_class_video(tmp_path / "two.mp4", 20, 21, 25)
    kw = dict(num_frames=4, sampling_rate=2, stride_frames=3, short_side=48, crop_size=48, mean=[0.45] * 3,
              std=[0.225] * 3, batch_size=5, backend="pyav")
    eager = long_video.predict_timeline(path, MotionDirectionModel(), **kw)["windows"]
    compiled_model = compile_for_inference(MotionDirectionModel(), 5, "eager")
    compiled = long_video.predict_timeline(path, compiled_model, **kw)["windows"]
    assert len(eager) == 12 and compiled_model.compiled_ok  # 12 windows: batches of 5, 5 and 2 (padded to 5)
    assert [w["start_frame"] for w in compiled] == [w["start_frame"] for w in eager]
    assert np.allclose([w["probs"] for w in compiled], [w["probs"] for w in eager], atol=1e-6)
