"""vidnl.render: which window a frame shows, where the model's crop lies on the frame, labels and
heat maps drawn on a real encoded video, attention heat maps against a numpy reference, the
timeline PNG, and the output rules (atomic, no symbolic link, one-line errors)."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
import torch.nn as nn

from conftest import SHARED_VIDEOS, write_video
from vidnl import render as R
from vidnl.render import RenderError


def read_video(path: str) -> tuple[np.ndarray, float]:
    import av

    with av.open(path) as c:
        s = c.streams.video[0]
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(s)]), float(s.average_rate)


def record(i: int, start: int, end: int, cls: int, num_classes: int = 4, fps: float = 25.0, top: float = 0.85) -> dict:
    probs = np.full(num_classes, (1 - top) / (num_classes - 1))
    probs[cls] = top
    order = np.argsort(-probs, kind="stable")
    return {"window": i, "start_frame": start, "end_frame": end, "start": start / fps, "end": (end + 1) / fps,
            "topk": [{"index": int(c), "name": f"c{c}", "prob": float(probs[c])} for c in order[:3]],
            "probs": probs.tolist()}


def smooth_video(n: int, h: int = 144, w: int = 192) -> np.ndarray:
    """n frames of a smooth colour gradient that drifts slowly (little codec loss)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    out = np.empty((n, h, w, 3), np.uint8)
    for t in range(n):
        out[t, ..., 0] = 60 + 80 * x / w
        out[t, ..., 1] = 70 + 60 * y / h + t
        out[t, ..., 2] = 110
    return out


# ------------------------------------------------------------------------------------------------
# frame -> window
# ------------------------------------------------------------------------------------------------
def reference_window(f: int, starts, ends) -> int:
    """The documented rule as a plain loop: the latest window holding f, else the latest started."""
    holding = [i for i in range(len(starts)) if starts[i] <= f <= ends[i]]
    if holding:
        return max(holding)
    started = [i for i in range(len(starts)) if starts[i] <= f]
    return max(started) if started else -1


@pytest.mark.parametrize("span,stride,first", [(16, 8, 0), (16, 16, 0), (5, 9, 0), (12, 3, 4), (1, 1, 0)])
def test_frame_to_window_follows_the_documented_rule(span, stride, first):
    n = 70
    starts = np.arange(first, n - span + 1, stride)
    ends = starts + span - 1
    got = R.frame_to_window(starts, ends, n)
    assert got.tolist() == [reference_window(f, starts, ends) for f in range(n)]
    # irregular windows (spans of 1 to 2·span frames, repeated starts)
    rng = np.random.default_rng(span * 100 + stride)
    starts = np.sort(rng.integers(first, n, 12))
    ends = starts + rng.integers(0, 2 * span, 12)
    assert R.frame_to_window(starts, ends, n).tolist() == [reference_window(f, starts, ends) for f in range(n)]
    # a hand case: windows [0, 15], [8, 23]: frame 8 shows window 1 (the latest), frame 7 window 0
    assert R.frame_to_window([0, 8], [15, 23], 30).tolist() == [0] * 8 + [1] * 22


# ------------------------------------------------------------------------------------------------
# heat-map geometry
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("rounding", ["vidnl", "pyslowfast"])
@pytest.mark.parametrize("h,w", [(120, 160), (160, 120), (96, 96), (50, 70), (257, 341), (121, 203)])
def test_crop_box_is_where_the_test_crop_comes_from(h, w, rounding):
    """The test transform (resize the short side, centre crop) applied to a frame whose pixels hold
    their own coordinates: the crop's pixels must hold the coordinates crop_box says."""
    import inspect

    from vidnl.data import transforms

    kw = {} if rounding == "vidnl" else {"rounding": rounding}
    if kw and "rounding" not in inspect.signature(transforms.test_views).parameters:
        pytest.skip("transforms.test_views has no rounding")
    crop = 64
    y, x = np.mgrid[0:h, 0:w].astype(np.float32) + 0.5  # pixel centres
    video = torch.from_numpy(np.stack([y, x, np.zeros_like(x)]))[None]  # T×C×H×W
    view = transforms.test_views(video, crop_size=crop, num_crops=1, **kw)[0][0].numpy()  # crop×crop×C
    top, left, bottom, right = R.crop_box(h, w, crop if rounding == "vidnl" else None, crop, rounding)
    c = np.arange(crop) + 0.5
    want_y, want_x = top + c * (bottom - top) / crop, left + c * (right - left) / crop
    inner = slice(4, crop - 4)  # the resize's borders clamp
    np.testing.assert_allclose(view[inner, crop // 2, 0], want_y[inner], atol=0.05 * h / crop + 0.01)
    np.testing.assert_allclose(view[crop // 2, inner, 1], want_x[inner], atol=0.05 * w / crop + 0.01)


def test_crop_box_decoded_smaller_then_resized():
    # 480×640 decoded at short side 128 -> 128×171 (640·128/480 = 170.7), resized to 112 -> 112×150
    # (171·112/128 = 149.6); centre crop left (150 - 112) // 2 = 19: frame x 19·640/150 to 131·640/150
    top, left, bottom, right = R.crop_box(480, 640, 128, 112)
    assert (top, bottom) == pytest.approx((0.0, 480.0))
    assert (left, right) == pytest.approx((19 * 640 / 150, 131 * 640 / 150))
    # PySlowFast's rounding, decoded at full size: 480×640 -> 112×149 (floor 149.3), crop left ceil(37 / 2) = 19
    top, left, bottom, right = R.crop_box(480, 640, None, 112, "pyslowfast")
    assert (left, right) == pytest.approx((19 * 640 / 149, 131 * 640 / 149))
    assert (top, bottom) == pytest.approx((0, 480))
    with pytest.raises(RenderError, match="rounding 'floor'"):
        R.crop_box(480, 640, None, 112, "floor")


def test_overlay_heatmap_where_the_heat_is():
    frame = np.full((60, 100, 3), 100, np.uint8)
    heat = np.zeros((4, 4), np.float32)
    heat[1, 3] = 1.0
    box = (10.0, 20.0, 50.0, 60.0)  # 40×40: cell (1, 3) is rows 20..30, columns 50..60
    out = R.overlay_heatmap(frame.copy(), heat, box)
    diff = np.abs(out.astype(int) - frame).sum(-1)
    assert diff[25, 55] > 100  # the hot cell's centre
    assert out[25, 55, 0] > out[25, 55, 2]  # red end of jet
    assert diff[45, 25] == 0 and diff[25, 25] == 0  # cold cells of the box
    assert diff[:10].max() == 0 and diff[50:].max() == 0 and diff[:, :20].max() == 0 and diff[:, 60:].max() == 0
    # the whole box and only it when the heat is 1 everywhere
    full = np.abs(R.overlay_heatmap(frame.copy(), np.ones((3, 3)), box).astype(int) - frame).sum(-1) > 0
    assert full[10:50, 20:60].all() and full.sum() == 40 * 40


# ------------------------------------------------------------------------------------------------
# render_video on a real encoded video
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_video(tmp_path_factory) -> str:
    return write_video(str(tmp_path_factory.mktemp("render") / "in.mp4"), smooth_video(40), fps=25)


def bar_class(frame: np.ndarray, bar) -> int:
    """The palette colour nearest to the filled part of a bar (its left half)."""
    x0, y0, x1, y1 = bar
    colour = frame[y0 + 2:y1 - 2, x0 + 2:x0 + (x1 - x0) // 2].reshape(-1, 3).mean(0)
    return int(np.argmin(np.abs(R.PALETTE.astype(float) - colour).sum(1)))


def test_render_labels_follow_the_windows(small_video, tmp_path):
    span, stride = 12, 7
    starts = list(range(0, 40 - span + 1, stride))  # 0, 7, 14, 21, 28
    timeline = [record(i, s, s + span - 1, cls=i % 4) for i, s in enumerate(starts)]
    out = str(tmp_path / "out.mp4")
    info = R.render_video(small_video, timeline, out, topk=3)
    src, _ = read_video(small_video)
    got, fps = read_video(out)
    assert info["frames"] == 40 and got.shape == src.shape and fps == pytest.approx(25.0)
    assert info["codec"] in ("libx264", "mpeg4") and os.listdir(tmp_path) == ["out.mp4"]
    mask = os.umask(0)
    os.umask(mask)
    assert os.stat(out).st_mode & 0o777 == 0o666 & ~mask  # as open() would create it, not mkstemp's 0600
    layout = R.label_layout(144, 192, 3)
    x0, y0, x1, y1 = layout["panel"]
    outside = np.ones((144, 192), bool)
    outside[max(0, y0 - 4):y1 + 4, max(0, x0 - 4):x1 + 4] = False
    ends = [s + span - 1 for s in starts]
    for f in range(40):
        d = np.abs(got[f].astype(int) - src[f].astype(int))
        assert d[y0:y1, x0:x1].mean() > 20, f  # the panel is drawn
        assert d[outside].mean() < 2.0, f  # the rest is the input, up to the codec
        assert bar_class(got[f], layout["bars"][0]) == reference_window(f, starts, ends) % 4, f


def test_render_heatmap_goes_where_the_heat_is(small_video, tmp_path):
    """192×144 frames, crop (64, 64): the model saw x in [24, 168) (resized 64×85, left 10); a map
    hot in cell (1, 6) of 8×8 heats frame pixel (27, 24 + 6.5·18 = 141) only."""
    timeline = [record(0, 0, 39, cls=0)]
    heat = np.zeros((8, 8), np.float32)
    heat[1, 6] = 1.0
    out = str(tmp_path / "heat.mp4")
    R.render_video(small_video, timeline, out, topk=1, heatmaps=[heat], crop=(64, 64))
    src, _ = read_video(small_video)
    got, _ = read_video(out)
    top, left, bottom, right = R.crop_box(144, 192, 64, 64)
    assert (top, bottom) == pytest.approx((0, 144)) and (left, right) == pytest.approx((10 * 192 / 85, 74 * 192 / 85))
    d = np.abs(got.astype(int) - src.astype(int)).sum(-1).mean(0)  # mean over frames, H×W
    cy, cx = int(1.5 * 18), int(left + 6.5 * (right - left) / 8)
    assert d[cy - 2:cy + 3, cx - 2:cx + 3].mean() > 60
    assert got[:, cy, cx, 0].mean() > src[:, cy, cx, 0].mean() + 30  # towards jet's red
    for y, x in ((int(4.5 * 18), int(left + 1.5 * 24)), (int(6.5 * 18), cx), (int(4.5 * 18), 8), (120, 185)):
        assert d[y - 2:y + 3, x - 2:x + 3].mean() < 6, (y, x)  # zero heat, or outside the crop
    # rendered at half size: the same places, halved
    R.render_video(small_video, timeline, out, topk=1, heatmaps=[heat], crop=(64, 64), max_short_side=72)
    got, _ = read_video(out)
    small = torch.nn.functional.interpolate(torch.from_numpy(src).permute(0, 3, 1, 2).float(), size=(72, 96),
                                            mode="area").permute(0, 2, 3, 1).numpy()
    d = np.abs(got.astype(float) - small).sum(-1).mean(0)
    assert got.shape[1:3] == (72, 96) and d[cy // 2 - 1:cy // 2 + 2, cx // 2 - 1:cx // 2 + 2].mean() > 60
    for y, x in ((int(4.5 * 18), int(left + 1.5 * 24)), (int(6.5 * 18), cx), (int(4.5 * 18), 8), (120, 185)):
        assert d[y // 2 - 1:y // 2 + 2, x // 2 - 1:x // 2 + 2].mean() < 8, (y, x)


def test_render_max_short_side_and_odd_sizes(tmp_path):
    src = write_video(str(tmp_path / "in.mp4"), smooth_video(6, 120, 160))
    out = str(tmp_path / "small.mkv")
    info = R.render_video(src, [record(0, 0, 5, 1)], out, max_short_side=75, codec="mpeg4")
    got, fps = read_video(out)
    # 120×160 at short side 75 -> 75×100, the odd height loses its last row
    assert got.shape == (6, 74, 100, 3) and info["codec"] == "mpeg4" and fps == pytest.approx(25.0)


def test_render_turns_a_rotated_video_as_displayed(tmp_path):
    """A video stored 64×48 with a display rotation of 90°: rendered as displayed (48 wide, 64
    high), the frames read_frames gives (the dataset's decoder), outside the label panel."""
    import av

    from vidnl.data.decoding import read_frames

    frames = smooth_video(4, 48, 64)
    frames[:, :12, :20] = 255  # a block that shows which way the frame turned
    path = str(tmp_path / "rot.mp4")
    with av.open(path, mode="w") as c:
        stream = c.add_stream("libx264", rate=25)
        stream.height, stream.width, stream.pix_fmt = 48, 64, "yuv420p"
        stream.options = {"crf": "12"}
        stream.set_display_rotation(90)
        for img in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(packet)
        for packet in stream.encode():
            c.mux(packet)
    shown = read_frames(path, lambda n: np.arange(n), backend="pyav").frames
    assert shown.shape == (4, 64, 48, 3)
    R.render_video(path, [record(0, 0, 3, 0)], str(tmp_path / "out.mp4"), topk=1)
    got, _ = read_video(str(tmp_path / "out.mp4"))
    assert got.shape == shown.shape
    y1 = R.label_layout(64, 48, 1)["panel"][3]
    assert np.abs(got[:, y1 + 4:].astype(int) - shown[:, y1 + 4:]).mean() < 3


@pytest.mark.skipif(not os.path.isdir(SHARED_VIDEOS), reason="../shared/data/videos is not here")
def test_render_a_real_video(tmp_path):
    path = os.path.join(SHARED_VIDEOS, "real_320x240_25fps.avi")
    if not os.path.exists(path):
        pytest.skip(f"{path} is not here")
    timeline = [record(0, 0, 79, 2), record(1, 80, 159, 3)]
    info = R.render_video(path, timeline, str(tmp_path / "real.mp4"), max_short_side=96,
                          heatmaps=[np.ones((4, 4)), None], crop=(64, 64))
    got, fps = read_video(str(tmp_path / "real.mp4"))
    assert info["frames"] == got.shape[0] == 164 and got.shape[1:3] == (96, 128) and fps == pytest.approx(25.0)


# ------------------------------------------------------------------------------------------------
# output rules and errors
# ------------------------------------------------------------------------------------------------
def test_render_errors(small_video, tmp_path):
    tl = [record(0, 0, 9, 0)]
    with pytest.raises(RenderError, match="does not exist"):
        R.render_video(str(tmp_path / "missing.mp4"), tl, str(tmp_path / "o.mp4"))
    target = tmp_path / "target.mp4"
    target.write_bytes(b"keep")
    os.symlink(target, tmp_path / "link.mp4")
    with pytest.raises(RenderError, match="symbolic link"):
        R.render_video(small_video, tl, str(tmp_path / "link.mp4"))
    assert target.read_bytes() == b"keep"
    with pytest.raises(RenderError, match="is a folder"):
        R.render_video(small_video, tl, str(tmp_path))
    with pytest.raises(RenderError, match="does not exist"):
        R.render_video(small_video, tl, str(tmp_path / "no" / "o.mp4"))
    with pytest.raises(RenderError, match="is not a folder"):
        R.render_video(small_video, tl, str(target / "o.mp4"))
    with pytest.raises(RenderError, match="backend 'ffmpeg'"):
        R.render_video(small_video, tl, str(tmp_path / "o.mp4"), backend="ffmpeg")
    with pytest.raises(RenderError, match="codec 'h265'"):
        R.render_video(small_video, tl, str(tmp_path / "o.mp4"), codec="h265")
    with pytest.raises(RenderError, match="extension '.xyz'"):
        R.render_video(small_video, tl, str(tmp_path / "o.xyz"))
    with pytest.raises(RenderError, match="window 1 starts at frame 0"):
        R.render_video(small_video, [record(0, 5, 9, 0), record(1, 0, 4, 1)], str(tmp_path / "o.mp4"))
    with pytest.raises(RenderError, match="window 0: expected a record"):
        R.render_video(small_video, [{"start_frame": 3, "end_frame": 1, "topk": []}], str(tmp_path / "o.mp4"))
    with pytest.raises(RenderError, match="one map"):
        R.render_video(small_video, tl, str(tmp_path / "o.mp4"), heatmaps=[None, None])
    # an unreadable video leaves an existing output as it was, and no temporary file
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video")
    (tmp_path / "keep.mp4").write_bytes(b"old")
    with pytest.raises(RenderError, match="cannot read the video"):
        R.render_video(str(junk), tl, str(tmp_path / "keep.mp4"))
    assert (tmp_path / "keep.mp4").read_bytes() == b"old"
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".tmp")]


# ------------------------------------------------------------------------------------------------
# attention heat maps
# ------------------------------------------------------------------------------------------------
class TinyNL(nn.Module):
    """conv stem (3 -> 8 channels, same T×H×W) -> one nonlocal block -> mean pool -> 2 classes."""

    def __init__(self, block: nn.Module):
        super().__init__()
        self.stem = nn.Conv3d(3, 8, 1)
        self.block = block
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        return self.head(self.block(self.stem(x)).mean((2, 3, 4)))


MEAN, STD = [0.45, 0.4, 0.5], [0.25, 0.2, 0.3]


def _clips(seed: int = 0, n: int = 2) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (n, 4, 6, 8, 3), dtype=np.uint8))


def test_window_heatmaps_match_a_numpy_embedded_gaussian():
    """NL with the embedded Gaussian: A = softmax_j(θ_i·φ_j) over the 4·6·8 nodes, computed here
    with numpy from the convolutions' weights; mean map = column mean of A, query map = row i."""
    from vidnl.nonlocal_blocks.blocks import NL

    torch.manual_seed(0)
    model = TinyNL(NL(8, 4, kernel="embedded_gaussian", norm="softmax", bias=True)).eval()
    clips = _clips()
    x = (clips.numpy().astype(np.float64) / 255 - MEAN) / STD  # B×T×H×W×C
    w0, b0 = model.stem.weight.detach().double().numpy()[:, :, 0, 0, 0], model.stem.bias.detach().double().numpy()
    feats = x @ w0.T + b0  # B×T×H×W×8

    def proj(conv):
        return feats @ conv.weight.detach().double().numpy()[:, :, 0, 0, 0].T + conv.bias.detach().double().numpy()

    theta, phi = proj(model.block.theta).reshape(2, -1, 4), proj(model.block.phi).reshape(2, -1, 4)
    logits = theta @ phi.transpose(0, 2, 1)
    a = np.exp(logits - logits.max(-1, keepdims=True))
    a /= a.sum(-1, keepdims=True)  # B×N×N, nodes in (t, y, x) order

    def expected(row):  # N -> 6×8 summed over time, min-max scaled
        plane = row.reshape(4, 6, 8).sum(0)
        return (plane - plane.min()) / (plane.max() - plane.min())

    got = R.window_heatmaps(model, clips, mean=MEAN, std=STD)
    for b in range(2):
        np.testing.assert_allclose(got[b], expected(a[b].mean(0)), atol=1e-5)
    # query (t, y, x) = (0.6, 0.25, 0.9): frame int(0.6·4) = 2, row int(0.25·6) = 1, column int(0.9·8) = 7
    got = R.window_heatmaps(model, clips, mean=MEAN, std=STD, query=(0.6, 0.25, 0.9))
    for b in range(2):
        np.testing.assert_allclose(got[b], expected(a[b][(2 * 6 + 1) * 8 + 7]), atol=1e-5)
    assert got[0].shape == (6, 8) and got[0].max() == pytest.approx(1.0) and got[0].min() == 0


@pytest.mark.parametrize("name,options", [("snl", {"mode": "spacetime", "pool_size": (1, 2, 2)}),
                                          ("nl", {"mode": "space"}), ("snl", {"mode": "time"}),
                                          ("nl", {"mode": "space", "pool_size": (1, 2, 2)}), ("ns", {})])
def test_mean_heatmap_dense_equals_the_mean_of_rows(name, options):
    """The dense path (the block's whole affinity) and the generic one (every query's row through
    vidnl.engine.attention) give the same mean map, for each graph layout."""
    from vidnl.nonlocal_blocks import BLOCK_REGISTRY

    torch.manual_seed(1)
    model = TinyNL(BLOCK_REGISTRY.get(name)(8, 4, **options)).eval()
    clips = _clips(3, 1)
    generic = R.window_heatmaps(model, clips, mean=MEAN, std=STD, max_dense=0, max_queries=10_000)
    dense = R.window_heatmaps(model, clips, mean=MEAN, std=STD)
    np.testing.assert_allclose(dense[0], generic[0], atol=1e-5)
    # and on the whole key grid T'×H'×W', before the sum over time
    from vidnl.data.model_input import normalize_pixels

    x = model.stem(normalize_pixels(clips, MEAN, STD))
    with torch.no_grad():
        grids = [R._mean_map(model.block, x, 4, max_queries=10_000, max_dense=m) for m in (0, 10**9)]
    assert grids[0].shape == R._key_shape(model.block, x)
    np.testing.assert_allclose(grids[1], grids[0], atol=1e-6)
    assert generic[0].max() == pytest.approx(1.0) and generic[0].min() >= 0


def test_window_heatmaps_errors():
    model = TinyNL(nn.Identity())
    with pytest.raises(RenderError, match="no nonlocal block"):
        R.window_heatmaps(model, _clips(), mean=MEAN, std=STD)
    from vidnl.nonlocal_blocks.blocks import NL

    model = TinyNL(NL(8, 4))
    with pytest.raises(RenderError, match="'res4' is not a nonlocal block.*'block'"):
        R.window_heatmaps(model, _clips(), mean=MEAN, std=STD, block_name="res4")
    with pytest.raises(RenderError, match="query must be"):
        R.window_heatmaps(model, _clips(), mean=MEAN, std=STD, query=(0.5, 1.5, 0.5))


# ------------------------------------------------------------------------------------------------
# timeline PNG
# ------------------------------------------------------------------------------------------------
def colour_pixels(img: np.ndarray, colour) -> int:
    return int((np.abs(img[..., :3].astype(int) - np.asarray(colour, int)).sum(-1) < 30).sum())


def test_plot_timeline(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    timeline = []
    for i in range(12):
        p = rng.dirichlet(np.ones(6)) * 0.3
        p[[1, 4][i >= 6]] += 0.7  # classes 1 then 4 lead; the others stay below 0.3
        timeline.append({**record(i, 8 * i, 8 * i + 15, int(np.argmax(p)), num_classes=6), "probs": p.tolist()})
    path = str(tmp_path / "t.png")
    chosen = R.plot_timeline(timeline, path, top_classes=2, title="test", width_px=600, height_px=300,
                             segments=[{"index": 1, "name": "c1", "start": 0.0, "end": 2.0}])
    assert sorted(chosen) == [1, 4]
    img = np.asarray(Image.open(path).convert("RGB"))
    assert img.shape == (300, 600, 3)
    for c in range(6):  # the chosen classes are drawn in their colours, the others are not
        n = colour_pixels(img, R.PALETTE[c])
        assert (n > 50) if c in (1, 4) else (n < 5), (c, n)
    # a record without probs: its top-k only; a symbolic link is refused
    R.plot_timeline([{k: v for k, v in r.items() if k != "probs"} for r in timeline], path, top_classes=3)
    os.symlink(path, tmp_path / "l.png")
    with pytest.raises(RenderError, match="symbolic link"):
        R.plot_timeline(timeline, str(tmp_path / "l.png"))
    with pytest.raises(RenderError, match="non-empty list"):
        R.plot_timeline([], str(tmp_path / "e.png"))
    assert sorted(os.listdir(tmp_path)) == ["l.png", "t.png"]
