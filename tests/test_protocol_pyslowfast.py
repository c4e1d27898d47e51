"""PySlowFast's test protocol, data side (DATA.TEMPORAL_SAMPLING / DATA.TARGET_FPS /
DATA.SPATIAL_ROUNDING "pyslowfast"), against references written here from PySlowFast's code
(slowfast/datasets/decoder.py and transform.py of the model-zoo era): plain numpy and loops that
share nothing with vidnl.data.sampling / transforms.

The reference of the PyAV path walks the frames' timestamps as PySlowFast's
``pyav_decode_stream`` does (skip those before the start, keep those up to the end and the first
one past it), then takes floor(linspace(0, size - 1, T)) of that segment; the whole-video path
(no duration in the header) is floor(linspace(start, start + size - 1, T)) of the video.
"""

import dataclasses
import math
import os

import av
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vidnl.config import load_config
from vidnl.config.validate import ALLOWED_VALUES
from vidnl.data import sampling, transforms
from vidnl.data.datasets import video_csv
from vidnl.data.datasets.video_csv import VideoCSVDataset
from vidnl.errors import ConfigError, DatasetError
from vidnl.predict import test_clip_config

from conftest import index_video, write_video

SHARED_VIDEO = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "videos", "real_340x256_30fps.mp4")


# -- references (numpy / loops, from PySlowFast's decoder.py) ----------------------------------
def ref_size(t, rate, fps, target):
    return rate * t / target * fps  # decoder.py: sampling_rate * num_frames / target_fps * fps


def ref_starts(n, size, k):
    delta = max(n - size, 0)  # get_start_end_idx: delta * clip_idx / num_clips
    return [delta * i / k for i in range(k)]


def ref_floor_linspace(a, b, t, upper):
    return [int(math.floor(min(max(v, 0.0), upper))) for v in np.linspace(a, b, t)]


def ref_pyav_clip(n, size, start, t, ppf):
    """Frame j has the timestamp j·ppf; the decode loop of pyav_decode_stream, then decode()."""
    end = start + size - 1
    start_pts, end_pts = int(start * ppf), int(end * ppf)
    segment = []
    for j in range(n):
        pts = j * ppf
        if pts < start_pts:
            continue
        segment.append(j)
        if pts > end_pts:  # buffer_size 0: the first frame past the end is kept, then stop
            break
    return [segment[i] for i in ref_floor_linspace(0.0, size - 1, t, len(segment) - 1)]


def ref_test_clips(n, fps, ppf, t, rate, target, k):
    size = ref_size(t, rate, fps, target)
    if ppf is None:
        return np.array([ref_floor_linspace(s, s + size - 1, t, n - 1) for s in ref_starts(n, size, k)])
    return np.array([ref_pyav_clip(n, size, s, t, ppf) for s in ref_starts(n, size, k)])


# -- temporal sampling ------------------------------------------------------------------------
# (fps, timestamps per frame): MP4 time bases of 30, 25, 6, 60 fps, 29.97 fps (1001/30000), an
# AVI-like 1/fps time base (1 per frame), and no duration in the header (None: whole video)
TIMINGS = [(30.0, 512), (25.0, 512), (6.0, 512), (60.0, 256), (30000 / 1001, 1001), (25.0, 1), (30.0, None),
           (6.0, None)]


@pytest.mark.parametrize("fps,ppf", TIMINGS)
@pytest.mark.parametrize("n", [7, 64, 121, 300, 1000])
@pytest.mark.parametrize("t,rate,k", [(8, 8, 10), (32, 2, 3), (4, 16, 1)])
def test_test_clips_match_pyslowfast_reference(fps, ppf, n, t, rate, k):
    got = sampling.pyslowfast_test_clip_indices(n, sampling.StreamTiming(fps, ppf), t, rate, 30, k)
    want = ref_test_clips(n, fps, ppf, t, rate, 30, k)
    np.testing.assert_array_equal(got, want)
    assert got.shape == (k, t) and got.dtype == np.int64 and got.min() >= 0 and got.max() <= n - 1


def test_hand_computed_clips_at_30_fps():
    # 8x8 at 30 fps: 64 frames per clip, 300 frames: delta 236, clip i starts at 23.6 i; the clip
    # starting at 23.6 (timestamp int(23.6·512) = 12083) begins at frame 24, 9 frames apart
    idx = sampling.pyslowfast_test_clip_indices(300, sampling.StreamTiming(30.0, 512), 8, 8, 30, 10)
    np.testing.assert_array_equal(idx[0], [0, 9, 18, 27, 36, 45, 54, 63])
    np.testing.assert_array_equal(idx[1], 24 + np.array([0, 9, 18, 27, 36, 45, 54, 63]))
    assert idx[9, 0] == math.ceil(236 * 9 / 10)  # the last clip starts at 90 % of the free range
    assert idx.max() < 299  # so the end of the video is never seen
    # the whole-video path floors start + offset instead: 23.6 + 9 = 32.6 -> 32
    whole = sampling.pyslowfast_test_clip_indices(300, sampling.StreamTiming(30.0, None), 8, 8, 30, 10)
    np.testing.assert_array_equal(whole[1], [23, 32, 41, 50, 59, 68, 77, 86])


def test_clip_spans_seconds_not_frames():
    # 8 x 8 / 30 s = 2.13 s: 53.3 frames at 25 fps, 12.8 at 6 fps (vidnl's stride would repeat
    # one 57-frame window on a 6 fps video of 60 frames); at 6 fps the 10 clips all differ
    at25 = sampling.pyslowfast_test_clip_indices(500, sampling.StreamTiming(25.0, 512), 8, 8, 30, 1)[0]
    np.testing.assert_array_equal(at25, np.floor(np.linspace(0, 64 * 25 / 30 - 1, 8)).astype(int))
    at6 = sampling.pyslowfast_test_clip_indices(60, sampling.StreamTiming(6.0, 512), 8, 8, 30, 10)
    assert len({tuple(c) for c in at6.tolist()}) == 10
    assert at6[0, -1] == 11  # floor(12.8 - 1)


def test_train_clip_is_the_reference_clip_at_a_uniform_start():
    timing, n, t, rate = sampling.StreamTiming(25.0, 512), 200, 8, 8
    size = ref_size(t, rate, 25.0, 30)
    starts = []
    for seed in range(40):
        got = sampling.pyslowfast_train_clip_indices(n, timing, t, rate, 30, np.random.default_rng(seed))
        start = np.random.default_rng(seed).uniform(0.0, n - size)  # the same draw
        starts.append(start)
        assert got.tolist() == ref_pyav_clip(n, size, start, t, 512)
    assert min(starts) < 0.2 * (n - size) and max(starts) > 0.8 * (n - size)


def test_short_video_is_padded_with_its_last_frame():
    idx = sampling.pyslowfast_test_clip_indices(20, sampling.StreamTiming(30.0, 512), 8, 8, 30, 3)
    np.testing.assert_array_equal(idx, [[0, 9, 18, 19, 19, 19, 19, 19]] * 3)


# -- spatial rounding ---------------------------------------------------------------------------
@pytest.mark.parametrize("h,w,size,want", [(240, 428, 256, (256, 456)), (428, 240, 256, (456, 256)),
                                           (256, 340, 256, (256, 340)), (480, 854, 256, (256, 455))])
def test_short_side_is_floored(h, w, size, want):
    # hand-computed: 428 * 256 / 240 = 456.53 -> 456 (vidnl rounds to 457); 854 * 256 / 480 = 455.47
    assert transforms.short_side_size(h, w, size, "pyslowfast") == want
    assert transforms.short_side_size(240, 428, 256, "vidnl") == (256, 457)


@pytest.mark.parametrize("h,w,want", [(256, 341, [0, 43, 85]), (256, 340, [0, 42, 84]), (256, 257, [0, 1, 1])])
def test_centre_crop_offset_is_ceiled(h, w, want):
    # (341 - 256) / 2 = 42.5 -> 43 (vidnl: 42); landscape: offsets along the width
    video = torch.arange(w).repeat(2, 3, h, 1).to(torch.int32)  # T×C×H×W, value = column
    crops = transforms.uniform_crops(video, 256, 3, "pyslowfast")
    assert [int(c[0, 0, 0, 0]) for c in crops] == want
    portrait = video.transpose(-1, -2)  # value = row
    assert [int(c[0, 0, 0, 0]) for c in transforms.uniform_crops(portrait, 256, 3, "pyslowfast")] == want
    assert int(transforms.uniform_crops(video, 256, 1, "pyslowfast")[0][0, 0, 0, 0]) == want[1]


def test_test_resize_is_bilinear_without_antialias():
    g = torch.Generator().manual_seed(0)
    video = torch.randint(0, 256, (2, 3, 120, 200), generator=g, dtype=torch.uint8)
    got = transforms.resize_short_side(video, 48, "pyslowfast")
    assert got.shape[-2:] == (48, 80)
    ref = F.interpolate(video.double(), size=(48, 80), mode="bilinear", align_corners=False)
    assert (got.double() - ref).abs().max() < 1.01  # uint8 output: within one level
    smooth = transforms.resize_short_side(video, 48, "vidnl")  # antialiased: far from plain bilinear
    assert (smooth.double() - ref).abs().mean() > 10


def test_train_crop_offsets_stay_below_the_last_position():
    # PySlowFast's random_crop draws randint(0, L - size): the last offset is never taken
    video = torch.arange(40).repeat(1, 3, 32, 1).to(torch.uint8)  # 32×40, value = column
    lefts = set()
    for seed in range(60):
        out = transforms.train_transform(video, jitter_scales=[32, 32], crop_size=32, flip=False,
                                         rng=np.random.default_rng(seed), rounding="pyslowfast")
        lefts.add(int(out[0, 0, 0, 0]))
    assert lefts == set(range(8))


# -- the dataset item ---------------------------------------------------------------------------
def _cfg(tmp_path, *extra):
    return load_config(None, ["DATA.PATH_TO_DATA_DIR", str(tmp_path), "DATA.NUM_FRAMES", "4", "DATA.SAMPLING_RATE", "4",
                              "DATA.TEST_CROP_SIZE", "32", "DATA.TRAIN_JITTER_SCALES", "[32, 32]",
                              "DATA.TRAIN_CROP_SIZE", "32", "TEST.NUM_ENSEMBLE_VIEWS", "3",
                              "TEST.NUM_SPATIAL_CROPS", "3", "DATA.TEMPORAL_SAMPLING", "pyslowfast",
                              "DATA.TARGET_FPS", "30", "DATA.SPATIAL_ROUNDING", "pyslowfast", "DATA.RANDOM_FLIP", "False",
                              "DATA.DECODING_BACKEND", "pyav", *extra])


def _header(path):
    with av.open(path) as c:
        s = c.streams.video[0]
        return float(s.average_rate), s.duration / s.frames


def _pixels(normalised: torch.Tensor, cfg, channel: int = 0) -> torch.Tensor:
    """Back from DATA.MEAN / DATA.STD normalised values to 0..255 grey levels."""
    return (normalised.double() * cfg.DATA.STD[channel] + cfg.DATA.MEAN[channel]) * 255


def ref_bilinear(img: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """H×W float64 -> out_h×out_w: bilinear interpolation, half-pixel centres, no antialiasing
    (what F.interpolate(mode="bilinear", align_corners=False) is documented to compute),
    written as loops over the output pixels."""
    h, w = img.shape
    out = np.empty((out_h, out_w))
    for y in range(out_h):
        sy = max(0.0, (y + 0.5) * h / out_h - 0.5)
        y0 = int(np.floor(sy)); y1 = min(y0 + 1, h - 1); wy = sy - y0
        for x in range(out_w):
            sx = max(0.0, (x + 0.5) * w / out_w - 0.5)
            x0 = int(np.floor(sx)); x1 = min(x0 + 1, w - 1); wx = sx - x0
            top = img[y0, x0] * (1 - wx) + img[y0, x1] * wx
            bottom = img[y1, x0] * (1 - wx) + img[y1, x1] * wx
            out[y, x] = top * (1 - wy) + bottom * wy
    return out


def test_dataset_items_take_pyslowfast_frames(tmp_path):
    n = 60  # grey level 4·i encodes the frame index
    path = write_video(str(tmp_path / "v.mp4"), index_video(n, 36, 50), fps=25)
    (tmp_path / "test.csv").write_text(f"{path} 0\n")
    (tmp_path / "train.csv").write_text(f"{path} 0\n")
    cfg = _cfg(tmp_path)
    fps, ppf = _header(path)
    want = ref_test_clips(n, fps, ppf, 4, 4, 30, 3)
    ds = VideoCSVDataset.from_cfg(cfg, "test")
    item = ds[0]
    # model-ready float views (K·S)×C×T×h×w: PySlowFast normalises before it resizes
    assert item["inputs"].shape == (9, 3, 4, 32, 32) and item["inputs"].dtype == torch.float32
    ids = (_pixels(item["inputs"][:, 0, :, 16, 16], cfg) / 4).round().long()  # (K·S)×T
    for k in range(3):
        for s in range(3):
            assert ids[3 * k + s].tolist() == want[k].tolist()
    # predict's mapping of the keys gives the same settings (so the same views)
    assert test_clip_config(cfg) == dataclasses.replace(ds.clip, video_root="")
    # training: the start is the dataset rng's first draw (seed, epoch, index, try)
    train = VideoCSVDataset.from_cfg(cfg, "train")
    clip = train[0]["inputs"]
    assert clip.shape == (3, 4, 32, 32) and clip.dtype == torch.float32
    got = (_pixels(clip[0, :, 16, 16], cfg) / 4).round().long().tolist()
    size = ref_size(4, 4, fps, 30)
    start = np.random.default_rng([cfg.RNG_SEED, 0, 0, 0]).uniform(0.0, n - size)
    assert got == ref_pyav_clip(n, size, start, 4, ppf)


def test_test_views_are_cut_from_the_full_size_decode(tmp_path):
    # PySlowFast decodes at full size, resizes bilinearly without antialiasing (short side 32:
    # 96x72 -> floor(96·32/72) = 42 wide) and cuts crops at 0, ceil(10 / 2) = 5, 10
    rng = np.random.default_rng(0)
    path = write_video(str(tmp_path / "v.mp4"), rng.integers(0, 256, (30, 72, 96, 3), dtype=np.uint8), fps=30)
    (tmp_path / "test.csv").write_text(f"{path} 0\n")
    cfg = _cfg(tmp_path, "TEST.NUM_ENSEMBLE_VIEWS", "1")
    item = VideoCSVDataset.from_cfg(cfg, "test")[0]
    fps, ppf = _header(path)
    idx = ref_test_clips(30, fps, ppf, 4, 4, 30, 1)[0]
    full = video_csv.read_frames(path, lambda n: idx, "pyav").frames  # T×72×96×3
    # PySlowFast's order: normalise ((x / 255 - mean) / std), then resize the float frames (a
    # uint8 resize would be up to 0.5 / 255 / std = 0.009 off; float32 interpolation is within 1e-4)
    mean, std = np.array(cfg.DATA.MEAN), np.array(cfg.DATA.STD)
    normalised = (full / 255.0 - mean) / std  # T×H×W×C
    assert item["inputs"].shape == (3, 3, 4, 32, 32)
    for t in range(4):
        for c in range(3):
            ref = ref_bilinear(normalised[t, :, :, c], 32, 42)
            for s, left in enumerate([0, 5, 10]):
                got = item["inputs"][s, c, t].double().numpy()
                np.testing.assert_allclose(got, ref[:, left:left + 32], atol=1e-4, err_msg=f"crop {s} frame {t}")


def test_vidnl_protocol_is_the_default(tmp_path):
    cfg = load_config(None, [])
    assert (cfg.DATA.TEMPORAL_SAMPLING, cfg.DATA.TARGET_FPS, cfg.DATA.SPATIAL_ROUNDING) == ("vidnl", 0.0, "vidnl")
    n = 40  # at the test scale (a scaled decode shifts grey levels by up to 2, see the frame ids)
    path = write_video(str(tmp_path / "v.mp4"), index_video(n, 32, 48), fps=25)
    (tmp_path / "test.csv").write_text(f"{path} 0\n")
    cfg = _cfg(tmp_path, "DATA.TEMPORAL_SAMPLING", "vidnl", "DATA.TARGET_FPS", "0", "DATA.SPATIAL_ROUNDING", "vidnl")
    ids = (VideoCSVDataset.from_cfg(cfg, "test")[0]["inputs"][::3, :, 16, 16, 0].double() / 4).round().long()
    np.testing.assert_array_equal(ids.numpy(), sampling.test_clip_indices(n, 4, 4, 3))


@pytest.mark.skipif(not os.path.isfile(SHARED_VIDEO), reason="../shared/data/videos is not here")
def test_real_video_test_item(tmp_path):
    (tmp_path / "test.csv").write_text(f"{os.path.abspath(SHARED_VIDEO)} 0\n")
    cfg = load_config(os.path.join(os.path.dirname(__file__), "..", "configs", "Kinetics", "I3D_8x8_R50.yaml"),
                      ["DATA.PATH_TO_DATA_DIR", str(tmp_path), "DATA.DECODING_BACKEND", "pyav",
                       "TEST.NUM_SPATIAL_CROPS", "1"])
    seen = []
    real = video_csv.read_frames

    def spy(*a, **k):
        out = real(*a, **k)
        seen.append(out.indices.reshape(10, 8))
        return out
    video_csv.read_frames = spy
    try:
        item = VideoCSVDataset.from_cfg(cfg, "test")[0]
    finally:
        video_csv.read_frames = real
    fps, ppf = _header(SHARED_VIDEO)
    np.testing.assert_array_equal(seen[0], ref_test_clips(300, fps, ppf, 8, 8, 30, 10))
    assert item["inputs"].shape == (10, 3, 8, 256, 256) and item["inputs"].dtype == torch.float32


def test_frame_folders_have_no_frame_rate(tmp_path):
    folder = tmp_path / "clip"
    folder.mkdir()
    (tmp_path / "test.csv").write_text(f"{folder} 0\n")
    ds = VideoCSVDataset.from_cfg(_cfg(tmp_path), "test")
    with pytest.raises(DatasetError, match=r"clip: a folder of frames has no frame rate.*DATA.TEMPORAL_SAMPLING"):
        ds[0]


# -- config -------------------------------------------------------------------------------------
def test_allowed_values_are_the_code_s():
    assert ALLOWED_VALUES["DATA.TEMPORAL_SAMPLING"] == sampling.TEMPORAL_SAMPLINGS
    assert ALLOWED_VALUES["DATA.SPATIAL_ROUNDING"] == transforms.SPATIAL_ROUNDINGS


@pytest.mark.parametrize("opts,match", [
    (["DATA.TEMPORAL_SAMPLING", "pyslowfast"], r"DATA.TARGET_FPS: must be > 0"),
    (["DATA.TARGET_FPS", "30"], r"DATA.TARGET_FPS: 30.0 is only used with DATA.TEMPORAL_SAMPLING 'pyslowfast'"),
    (["DATA.TEMPORAL_SAMPLING", "pyslowfast", "DATA.TARGET_FPS", "30", "DATA.SOURCE", "frames"],
     r"DATA.TEMPORAL_SAMPLING: 'pyslowfast'.*DATA.SOURCE 'frames'"),
    (["DATA.TEMPORAL_SAMPLING", "pyslowfast", "DATA.TARGET_FPS", "30", "DATA.SHORT_VIDEO_MODE", "loop"],
     r"DATA.SHORT_VIDEO_MODE"),
    (["DATA.TEMPORAL_SAMPLING", "slowfast"], r"DATA.TEMPORAL_SAMPLING: 'slowfast' is not allowed"),
    (["DATA.SPATIAL_ROUNDING", "ceil"], r"DATA.SPATIAL_ROUNDING: 'ceil' is not allowed"),
])
def test_bad_protocol_keys(opts, match):
    with pytest.raises(ConfigError, match=match):
        load_config(None, opts)


@pytest.mark.parametrize("name", ["C2D_8x8_R50", "I3D_8x8_R50", "I3D_NLN_8x8_R50", "SLOW_8x8_R50"])
def test_released_configs_select_pyslowfast_protocol(name):
    cfg = load_config(os.path.join(os.path.dirname(__file__), "..", "configs", "Kinetics", f"{name}.yaml"))
    assert (cfg.DATA.TEMPORAL_SAMPLING, cfg.DATA.TARGET_FPS, cfg.DATA.SPATIAL_ROUNDING) == ("pyslowfast", 30.0,
                                                                                          "pyslowfast")
    assert cfg.MODEL.TEST_HEAD == "fully_conv"


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_train_transform_normalises_then_resizes_then_crops(seed):
    """PySlowFast's training order (tensor_normalize, random_short_side_scale_jitter, random_crop,
    horizontal_flip) on float frames, against a reference written here: the same rng draws
    (scale, top, left, flip) as the uint8 transform, offsets in [0, L - crop)."""
    g = torch.Generator().manual_seed(seed)
    video = torch.randint(0, 256, (2, 3, 30, 40), generator=g, dtype=torch.uint8)
    mean, std = [0.45, 0.4, 0.35], [0.225, 0.25, 0.2]
    got = transforms.pyslowfast_train_transform(video, jitter_scales=[20, 26], crop_size=16, flip=True,
                                                rng=np.random.default_rng(seed), mean=mean, std=std)
    assert got.shape == (3, 2, 16, 16) and got.dtype == torch.float32
    rng = np.random.default_rng(seed)
    scale = int(rng.integers(20, 27))
    new_h, new_w = scale, int(np.floor(40 * scale / 30))  # PySlowFast floors the long side
    top, left = int(rng.integers(0, new_h - 16)), int(rng.integers(0, new_w - 16))
    flip = rng.random() < 0.5
    for t in range(2):
        for c in range(3):
            plane = (video[t, c].double().numpy() / 255.0 - mean[c]) / std[c]
            ref = ref_bilinear(plane, new_h, new_w)[top:top + 16, left:left + 16]
            if flip:
                ref = ref[:, ::-1]
            np.testing.assert_allclose(got[c, t].double().numpy(), ref, atol=1e-4, err_msg=f"seed {seed}")


def test_training_and_testing_under_the_pyslowfast_protocol(tiny_dataset, tmp_path):
    """A real tiny run (train, validate, multi-view test) with the whole PySlowFast protocol:
    seconds-based sampling, float items normalised before the resize, the fully convolutional
    test head at a test crop larger than the training crop."""
    import importlib.util
    import json

    from conftest import tiny_opts

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    spec = importlib.util.spec_from_file_location("tool_run_net_protocol", os.path.join(root, "tools", "run_net.py"))
    run_net = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run_net)
    out = tmp_path / "run"
    opts = tiny_opts(tiny_dataset, str(out), **{
        "DATA.TEMPORAL_SAMPLING": "pyslowfast", "DATA.TARGET_FPS": 30, "DATA.SPATIAL_ROUNDING": "pyslowfast",
        "MODEL.TEST_HEAD": "fully_conv", "DATA.TEST_CROP_SIZE": 40, "SOLVER.MAX_EPOCH": 1,
        "DATA.DECODING_BACKEND": "pyav"})
    assert run_net.main(["--cfg", os.path.join(root, "configs", "Synthetic", "I3D_R18_SNL.yaml")] + opts) == 0
    preds = json.loads((out / "predictions_test.json").read_text())
    videos = preds["predictions"]
    assert len(videos) == 4
    for v in videos:  # the sum over 6 views of each view's probabilities (mean over its positions)
        assert np.isfinite(v["scores"]).all() and sum(v["scores"]) == pytest.approx(6.0, abs=1e-4)
