"""A video you can watch: the sliding-window predictions of a long video drawn on its frames, the
attention of a nonlocal block overlaid as a heat map, and a timeline PNG of the class scores.

    from vidnl.render import plot_timeline, render_video, window_heatmaps
    maps = window_heatmaps(model, batch.clips, mean=cfg.DATA.MEAN, std=cfg.DATA.STD)  # per batch
    render_video("talk.mp4", timeline, "talk_labels.mp4", topk=3, heatmaps=maps,
                 crop=(short_side, crop_size, cfg.DATA.SPATIAL_ROUNDING))
    plot_timeline(timeline, "talk_timeline.png", top_classes=5, segments=segments)

``timeline``: the records of ``vidnl.long_video`` / ``tools/predict.py --window-stride``, one
dict per window in time order: ``{"window", "start_frame", "end_frame" (inclusive), "start",
"end" (seconds), "topk": [{"index", "name", "prob"}, ...], "probs": [float] * num_classes}``.

Which window a frame shows (:func:`frame_to_window`): frame ``f`` shows the **latest** window
(the one that started last) whose span ``[start_frame, end_frame]`` holds ``f``; a frame no
window holds (the tail after the last window, or a gap when the stride is longer than the span)
keeps the latest window that started before it; a frame before the first window shows none.
With overlapping windows a frame therefore shows the most recent prediction that saw it.

Where a heat map goes (:func:`crop_box`): the model saw the centre ``crop × crop`` square of the
frame decoded at ``short_side`` and resized so its shorter side is ``crop`` (the test path's
single view: ``transforms.test_views`` with one crop, after ``read_frames``' decoding, with the
rounding of DATA.SPATIAL_ROUNDING), so a map over that crop
is drawn on the frame rectangle the crop came from, scaled back by the resize factor; the rest
of the frame (never seen by the model) gets no heat.

Rendering streams: each frame is decoded, drawn on and encoded before the next is decoded, so
memory does not grow with the video's length. The output is written to a temporary file in its
folder and renamed at the end (a reader never sees half a video; nothing is left behind when it
fails with an exception); a symbolic link at the output path is refused.
"""

from __future__ import annotations

import io
import logging
import math
import os
import tempfile
from fractions import Fraction
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn

from .data.decoding import iter_pyav_frames
from .errors import VidnlUserError

logger = logging.getLogger(__name__)

# Class colours (RGB): matplotlib's tab10, class c gets PALETTE[c % 10] in the timeline PNG and on
# the rendered frames, so the two pictures agree.
PALETTE = np.array([[31, 119, 180], [255, 127, 14], [44, 160, 44], [214, 39, 40], [148, 103, 189],
                    [140, 86, 75], [227, 119, 194], [127, 127, 127], [188, 189, 34], [23, 190, 207]], np.uint8)
CODECS = ("auto", "libx264", "mpeg4")  # "auto": libx264 when this FFmpeg build has it, else mpeg4
HEAT_ALPHA = 0.6  # opacity of the heat map where the heat is 1 (where it is 0 the frame is untouched)
PANEL_DIM = 0.35  # the label panel keeps this fraction of the frame's brightness behind the text


class RenderError(VidnlUserError, ValueError):
    """A rendering input or output cannot be used; the message names it and what was expected."""


# ------------------------------------------------------------------------------------------------
# Timeline records
# ------------------------------------------------------------------------------------------------
def _windows(timeline) -> tuple[np.ndarray, np.ndarray]:
    """(starts, ends) int64 of a timeline's records, checked: a non-empty list of windows in time
    order, 0 <= start_frame <= end_frame, each with a ``topk`` list."""
    if not isinstance(timeline, Sequence) or isinstance(timeline, (str, bytes)) or not timeline:
        raise RenderError(f"timeline: expected a non-empty list of window records, got {type(timeline).__name__}"
                          + (" (empty)" if isinstance(timeline, Sequence) and not timeline else ""))
    starts, ends = np.empty(len(timeline), np.int64), np.empty(len(timeline), np.int64)
    for i, rec in enumerate(timeline):
        try:
            s, e = rec["start_frame"], rec["end_frame"]
            if not (isinstance(s, (int, np.integer)) and isinstance(e, (int, np.integer)) and 0 <= s <= e):
                raise ValueError
            if not isinstance(rec.get("topk"), list):
                raise ValueError
        except (TypeError, KeyError, ValueError, AttributeError):
            raise RenderError(f"timeline window {i}: expected a record with integer 0 <= start_frame <= end_frame "
                              f"and a topk list, got {str(rec)[:120]}") from None
        starts[i], ends[i] = s, e
    if np.any(np.diff(starts) < 0):
        bad = int(np.argmax(np.diff(starts) < 0)) + 1
        raise RenderError(f"timeline window {bad} starts at frame {starts[bad]}, before window {bad - 1} "
                          f"({starts[bad - 1]}): the windows must be in time order")
    return starts, ends


def frame_to_window(starts, ends, num_frames: int) -> np.ndarray:
    """The window each frame shows, (num_frames,) int64, -1 for none: the latest window whose
    ``[start, end]`` holds the frame, else the latest window that started before it (see the
    module docstring). ``starts`` non-decreasing."""
    starts, ends = np.asarray(starts, np.int64), np.asarray(ends, np.int64)
    out = np.full(num_frames, -1, np.int64)
    for w in range(len(starts)):  # later windows overwrite earlier ones: the latest holding window wins
        out[max(starts[w], 0):min(ends[w] + 1, num_frames)] = w
    held = np.searchsorted(starts, np.arange(num_frames), side="right") - 1  # latest window started by f
    return np.where(out >= 0, out, held)


def _class_names(timeline) -> dict[int, str]:
    names: dict[int, str] = {}
    for rec in timeline:
        for t in rec.get("topk", ()):
            if "index" in t and "name" in t:
                names.setdefault(int(t["index"]), str(t["name"]))
    return names


# ------------------------------------------------------------------------------------------------
# Heat-map geometry
# ------------------------------------------------------------------------------------------------
def crop_box(height: int, width: int, short_side: int | None, crop_size: int,
             rounding: str = "vidnl") -> tuple[float, float, float, float]:
    """(top, left, bottom, right), in pixels of a ``height`` × ``width`` frame (as displayed), of
    the region the model saw. The test path decodes the frame scaled so its shorter side is
    ``short_side`` (never enlarged; None: full size), resizes that so the shorter side is
    ``crop_size`` (``transforms.resize_short_side``), giving (h', w'), and cuts the centre crop at
    offset ((h' - crop) / 2, (w' - crop) / 2) (``transforms.uniform_crops``). ``rounding``
    (DATA.SPATIAL_ROUNDING): "vidnl" rounds the long side to the nearest pixel and floors the
    offset, "pyslowfast" floors the long side and ceils the offset. Resized pixel (y', x') is frame
    pixel (y' · height / h', x' · width / w'), so the crop is the frame box
    [top · height / h', (top + crop) · height / h') × [left · width / w', (left + crop) · width / w')."""
    from .data.decoding import _target_size, scaled_size

    if rounding not in ("vidnl", "pyslowfast"):
        raise RenderError(f"rounding {rounding!r}: expected 'vidnl' or 'pyslowfast' (DATA.SPATIAL_ROUNDING)")
    dh, dw = (_target_size(height, width, short_side) if short_side else None) or (height, width)
    if min(dh, dw) == crop_size:
        hr, wr = dh, dw
    elif rounding == "vidnl":
        hr, wr = scaled_size(dh, dw, crop_size)
    elif dw < dh:  # PySlowFast: the long side floored
        hr, wr = int(math.floor(dh / dw * crop_size)), crop_size
    else:
        hr, wr = crop_size, int(math.floor(dw / dh * crop_size))
    if rounding == "vidnl":
        top, left = (hr - crop_size) // 2, (wr - crop_size) // 2
    else:
        top, left = -((crop_size - hr) // 2), -((crop_size - wr) // 2)
    sy, sx = height / hr, width / wr
    return top * sy, left * sx, (top + crop_size) * sy, (left + crop_size) * sx


def overlay_heatmap(frame: np.ndarray, heat: np.ndarray, box: tuple[float, float, float, float] | None = None,
                    alpha: float = HEAT_ALPHA) -> np.ndarray:
    """Blend ``heat`` (h×w floats in [0, 1], NaN = 0) into ``frame`` (H×W×3 uint8 RGB, in place) over
    ``box`` (top, left, bottom, right in frame pixels; None: the whole frame): the map is resized
    (bilinear) onto the box and each pixel becomes ``(1 - a) · pixel + a · jet(heat)`` with
    ``a = alpha · heat``, so zero heat leaves the pixel as it was. Returns ``frame``."""
    import cv2

    hgt, wid = frame.shape[:2]
    top, left, bottom, right = box if box is not None else (0.0, 0.0, float(hgt), float(wid))
    y0, x0 = max(0, int(math.floor(top))), max(0, int(math.floor(left)))
    y1, x1 = min(hgt, int(math.ceil(bottom))), min(wid, int(math.ceil(right)))
    if y1 <= y0 or x1 <= x0:
        return frame
    heat = np.clip(np.nan_to_num(np.asarray(heat, np.float32), nan=0.0), 0.0, 1.0)
    # sample the map at the pixel centres of the box's rows / columns (the box may start mid-pixel)
    ys = ((np.arange(y0, y1) + 0.5 - top) / (bottom - top) * heat.shape[0] - 0.5).astype(np.float32)
    xs = ((np.arange(x0, x1) + 0.5 - left) / (right - left) * heat.shape[1] - 0.5).astype(np.float32)
    map_x, map_y = np.meshgrid(xs, ys)
    up = cv2.remap(heat, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    colour = cv2.applyColorMap(np.round(up * 255).astype(np.uint8), cv2.COLORMAP_JET)[..., ::-1]
    a = (alpha * up)[..., None]
    region = frame[y0:y1, x0:x1].astype(np.float32)
    frame[y0:y1, x0:x1] = np.clip(np.round(region + a * (colour.astype(np.float32) - region)), 0, 255).astype(np.uint8)
    return frame


# ------------------------------------------------------------------------------------------------
# Labels
# ------------------------------------------------------------------------------------------------
def label_layout(height: int, width: int, topk: int) -> dict:
    """Where :func:`draw_labels` draws on a ``height`` × ``width`` frame: ``panel`` (x0, y0, x1, y1,
    exclusive ends; the dimmed box), ``header`` (its first line: the window's time), ``bars``
    (one (x0, y0, x1, y1) per rank: the bar whose filled fraction is the probability, in the
    class's colour; the name and probability are written left of it), ``scale`` and ``thickness``
    of the font."""
    import cv2

    scale = float(np.clip(min(height, width) / 480.0, 0.3, 1.5))
    thickness = 1 if scale < 0.9 else 2
    (_, th), base = cv2.getTextSize("Ag", cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    pad = max(2, int(round(4 * scale)))
    line = th + base + pad
    margin = pad
    x0, y0 = margin, margin
    x1 = min(width - margin, x0 + max(int(round(0.55 * width)), 1))
    y1 = min(height - margin, y0 + pad + line * (topk + 1))
    bar_x0 = x0 + int(round(0.62 * (x1 - x0)))
    bars = [(bar_x0, y0 + pad + line * (r + 1) + 1, x1 - pad, y0 + pad + line * (r + 2) - pad)
            for r in range(topk)]
    return {"panel": (x0, y0, x1, y1), "header": (x0 + pad, y0 + pad, x1 - pad, y0 + pad + line), "bars": bars,
            "scale": scale, "thickness": thickness, "line": line, "pad": pad}


def _fit(text: str, width: int, scale: float, thickness: int) -> str:
    import cv2

    while text and cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)[0][0] > width:
        text = text[:-3] + ".." if len(text) > 3 else text[:-1]
    return text


def draw_labels(frame: np.ndarray, record: dict, topk: int, layout: dict) -> np.ndarray:
    """Draw ``record``'s time and top-``topk`` classes on ``frame`` (H×W×3 uint8 RGB, in place) in
    ``layout`` (:func:`label_layout`): the panel is dimmed, each rank is its name and probability,
    then a bar filled to the probability in the class's colour. Returns ``frame``."""
    import cv2

    font, s, th, pad = cv2.FONT_HERSHEY_SIMPLEX, layout["scale"], layout["thickness"], layout["pad"]
    x0, y0, x1, y1 = layout["panel"]
    frame[y0:y1, x0:x1] = (frame[y0:y1, x0:x1].astype(np.float32) * PANEL_DIM).astype(np.uint8)
    hx0, hy0, hx1, hy1 = layout["header"]
    if record.get("start") is None or record.get("end") is None:  # frame rate unknown
        header = f"frames {record['start_frame']}-{record['end_frame']}"
    else:
        header = f"{float(record['start']):.1f}-{float(record['end']):.1f} s"
    cv2.putText(frame, _fit(header, hx1 - hx0, s, th), (hx0, hy1 - pad), font, s, (255, 255, 255), th, cv2.LINE_AA)
    for (bx0, by0, bx1, by1), entry in zip(layout["bars"], record["topk"][:topk]):
        prob = float(np.clip(float(entry.get("prob", 0.0)), 0.0, 1.0))
        colour = tuple(int(v) for v in PALETTE[int(entry.get("index", 0)) % len(PALETTE)])
        text = _fit(f"{entry.get('name', entry.get('index', '?'))} {prob:.2f}", bx0 - x0 - 2 * pad, s, th)
        cv2.putText(frame, text, (x0 + pad, by1), font, s, (255, 255, 255), th, cv2.LINE_AA)
        cv2.rectangle(frame, (bx0, by0), (bx1 - 1, by1 - 1), (90, 90, 90), 1)
        fill = bx0 + int(round(prob * (bx1 - bx0)))
        if fill > bx0:
            frame[by0:by1, bx0:fill] = colour
    return frame


# ------------------------------------------------------------------------------------------------
# Video
# ------------------------------------------------------------------------------------------------
def _codec(codec: str) -> str:
    import av

    if codec not in CODECS:
        raise RenderError(f"codec {codec!r}: expected one of {list(CODECS)}")
    if codec == "auto":
        return "libx264" if "libx264" in av.codecs_available else "mpeg4"
    if codec not in av.codecs_available:
        raise RenderError(f"codec {codec!r} is not in this FFmpeg build (PyAV {av.__version__}); use 'auto'")
    return codec


def _check_output(out_path: str, video_path: str) -> None:
    out_path = os.fspath(out_path)
    if os.path.islink(out_path):
        raise RenderError(f"{out_path} is a symbolic link (to {os.readlink(out_path)}): vidnl writes its outputs as "
                          f"regular files and would change the file it points to; remove the link or choose another "
                          f"output path")
    if os.path.isdir(out_path):
        raise RenderError(f"{out_path} is a folder; expected the path of the video to write, e.g. "
                          f"{os.path.join(out_path, 'rendered.mp4')}")
    if os.path.exists(out_path) and os.path.samefile(out_path, video_path):
        raise RenderError(f"{out_path} is the input video itself; choose another output path")
    folder = os.path.dirname(os.path.abspath(out_path))
    if not os.path.isdir(folder):
        raise RenderError(f"cannot write {out_path}: {folder} "
                          f"{'is not a folder' if os.path.exists(folder) else 'does not exist'}")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise RenderError(f"cannot write {out_path}: its folder {folder} is not writable")


def render_video(video_path: str, timeline, out_path: str, *, topk: int = 3, heatmaps=None,
                 crop: tuple[int, int] | None = None, backend: str = "auto", max_short_side: int | None = None,
                 codec: str = "auto", threads: int = 1, alpha: float = HEAT_ALPHA) -> dict:
    """Write ``video_path`` to ``out_path`` with, on every frame, the top-``topk`` classes of the
    window it shows (:func:`frame_to_window`) and, when ``heatmaps`` is given (one h×w float map
    in [0, 1] or None per window, e.g. :func:`window_heatmaps`), that window's map overlaid.

    ``crop``: (short_side, crop_size) or (short_side, crop_size, rounding) of the clips the maps
    were computed on (short_side None: decoded at full size; rounding: DATA.SPATIAL_ROUNDING,
    default "vidnl"): a map covers the frame region :func:`crop_box` gives; None: each map
    covers the whole frame.
    ``backend``: the decoder that numbered the timeline's frames ("auto", "pyav", "decord";
    checked): the frames are read with PyAV in any case, in decode order, which is how both
    decoders number them (PyAV's sequential decode keeps memory flat; decord's reader does not).
    ``max_short_side``: scale the output down so its shorter side is at most this (None: the
    input size). An odd width or height loses its last column / row (H.264 and MPEG-4 in yuv420p
    need even sizes). ``codec``: "auto" (libx264 when FFmpeg has it, else mpeg4), "libx264" or
    "mpeg4"; the frame rate is the input's average rate.

    Returns ``{"frames", "path", "codec", "fps", "width", "height"}``. RenderError (a
    VidnlUserError) for a missing or unreadable video, an unusable output path (a folder, a
    symbolic link, an unwritable or missing folder, an extension FFmpeg cannot write), an unknown
    codec or a malformed timeline."""
    import av

    from .data.decoding import BACKEND_CHOICES

    video_path, out_path = os.fspath(video_path), os.fspath(out_path)
    starts, ends = _windows(timeline)
    if backend not in BACKEND_CHOICES:
        raise RenderError(f"backend {backend!r}: expected one of {list(BACKEND_CHOICES)}")
    if not isinstance(topk, (int, np.integer)) or topk < 1:
        raise RenderError(f"topk must be a positive integer, got {topk!r}")
    if heatmaps is not None and len(heatmaps) != len(timeline):
        raise RenderError(f"heatmaps: expected one map (or None) per window, {len(timeline)}, got {len(heatmaps)}")
    if max_short_side is not None and (not isinstance(max_short_side, (int, np.integer)) or max_short_side < 2):
        raise RenderError(f"max_short_side must be an integer >= 2 or None, got {max_short_side!r}")
    if crop is not None:
        if not isinstance(crop, (tuple, list)) or len(crop) not in (2, 3):
            raise RenderError(f"crop must be (short_side, crop_size) or (short_side, crop_size, rounding), "
                              f"got {crop!r}")
        crop_box(64, 64, *crop)  # checks the rounding
    if not os.path.exists(video_path):
        raise RenderError(f"video {video_path} does not exist")
    if os.path.isdir(video_path):
        raise RenderError(f"{video_path} is a folder; rendering needs a video file")
    _check_output(out_path, video_path)
    codec = _codec(codec)
    folder = os.path.dirname(os.path.abspath(out_path))
    ext = os.path.splitext(out_path)[1]
    try:
        fd, tmp = tempfile.mkstemp(prefix=".tmp_render_", suffix=ext, dir=folder)
    except OSError as e:
        raise RenderError(f"cannot write {out_path}: {e.strerror or e} in {folder}") from None
    os.close(fd)
    info: dict = {}
    count = 0
    try:
        try:
            out = av.open(tmp, mode="w")
        except (ValueError, av.error.FFmpegError) as e:
            raise RenderError(f"cannot write {out_path}: FFmpeg knows no video format for the extension {ext!r} "
                              f"({e}); use .mp4, .mkv or .avi") from None
        with out:
            stream = layout = window_of = None
            box = None
            try:
                # always PyAV: a sequential decode holds one frame, where decord's reader grows with
                # the video (about +450 MB for 2000 frames of 320×240, measured)
                frames = iter_pyav_frames(video_path, max_short_side, threads, info)
                for _, frame in frames:
                    if stream is None:  # the first frame fixes the output size
                        hgt, wid = frame.shape[0] // 2 * 2, frame.shape[1] // 2 * 2
                        if hgt < 2 or wid < 2:
                            raise RenderError(f"{video_path}: frames of {frame.shape[1]}x{frame.shape[0]} pixels are "
                                              f"too small to encode")
                        fps = info.get("rate")
                        if not fps:
                            logger.warning("%s states no frame rate: the rendered video plays at 25 fps", video_path)
                            fps = Fraction(25)
                        stream = out.add_stream(codec, rate=Fraction(fps).limit_denominator(100000))
                        stream.width, stream.height, stream.pix_fmt = wid, hgt, "yuv420p"
                        stream.options = {"crf": "20", "preset": "veryfast"} if codec == "libx264" else {}
                        if codec != "libx264":
                            stream.bit_rate = max(1_000_000, int(wid * hgt * float(fps) * 0.6))
                        layout = label_layout(hgt, wid, topk)
                        known = max(int(info.get("frames") or 0), int(ends[-1]) + 1)
                        window_of = frame_to_window(starts, ends, known)
                        if crop is not None:  # on the displayed frame, then scaled as the frame was
                            full_h, full_w = info["size"]
                            top, left, bottom, right = crop_box(full_h, full_w, *crop)
                            sy, sx = frame.shape[0] / full_h, frame.shape[1] / full_w
                            box = (top * sy, left * sx, bottom * sy, right * sx)
                    frame = np.ascontiguousarray(frame[:hgt, :wid])
                    # past every window and the header's count, the last window (the latest started) holds
                    w = int(window_of[count]) if count < len(window_of) else len(starts) - 1
                    if w >= 0:
                        if heatmaps is not None and heatmaps[w] is not None:
                            overlay_heatmap(frame, heatmaps[w], box, alpha)
                        draw_labels(frame, timeline[w], topk, layout)
                    for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                        out.mux(packet)
                    count += 1
            except RenderError:
                raise
            except Exception as e:  # noqa: BLE001 (decoding: name the file and why)
                if count == 0:
                    raise RenderError(f"cannot read the video {video_path}: {e}") from None
                raise
            if stream is None:
                raise RenderError(f"cannot read the video {video_path}: no frame decodes")
            for packet in stream.encode():
                out.mux(packet)
        from .engine.output_dir import new_file_mode

        os.chmod(tmp, new_file_mode())  # mkstemp's 0600 -> what open() would have given
        os.replace(tmp, out_path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    fps = info.get("rate") or Fraction(25)
    return {"frames": count, "path": out_path, "codec": codec, "fps": float(fps), "width": wid, "height": hgt}


# ------------------------------------------------------------------------------------------------
# Attention heat maps
# ------------------------------------------------------------------------------------------------
def _key_shape(block: nn.Module, x: torch.Tensor) -> tuple[int, int, int]:
    from .nonlocal_blocks.blocks import NonLocalBase, _as_5d

    _, _, t, h, w = _as_5d(x).shape
    kt, kh, kw = block.pool_kernel if isinstance(block, NonLocalBase) else (1, 1, 1)
    return -(-t // kt), -(-h // kh), -(-w // kw)


def _mean_map(block: nn.Module, x: torch.Tensor, clip_frames: int, max_queries: int, max_dense: int) -> np.ndarray:
    """The block's mean attention on its key grid (T'×H'×W'): the affinity rows of all query
    positions averaged. From the dense affinity when the block has one and G·N·M <= ``max_dense``;
    else the mean of the rows of at most ``max_queries`` query positions on an even grid."""
    from .engine.attention import _rows
    from .nonlocal_blocks.blocks import _as_5d

    x = _as_5d(x)
    _, _, t, h, w = x.shape
    keys = _key_shape(block, x)
    mode = getattr(block, "mode", "spacetime")
    n_graphs, n_nodes = {"spacetime": (1, t * h * w), "space": (t, h * w), "time": (h * w, t)}[mode]
    m = {"spacetime": keys[0] * keys[1] * keys[2], "space": keys[1] * keys[2], "time": keys[0]}[mode]
    if hasattr(block, "affinity") and n_graphs * n_nodes * m <= max_dense:
        with torch.no_grad():
            cols = block.affinity(x).float().sum(1).cpu().numpy() / (n_graphs * n_nodes)  # G×M
        if mode == "spacetime":
            return cols.reshape(keys).astype(np.float32)
        out = np.zeros(keys, np.float32)
        kt, kh, kw = block.pool_kernel
        if mode == "space":  # graph g is frame g: its keys go on the key-time slice of that frame
            for g in range(t):
                out[min(g // kt, keys[0] - 1)] += cols[g].reshape(keys[1], keys[2])
        else:  # time: graph g is pixel (y, x), its keys are the key times at that pixel
            for g in range(h * w):
                out[:, min(g // w // kh, keys[1] - 1), min(g % w // kw, keys[2] - 1)] += cols[g]
        return out
    ts = np.unique(np.linspace(0, t - 1, max(1, min(t, round(max_queries ** (1 / 3))))).round().astype(int))
    side = max(1, int(math.sqrt(max_queries / len(ts))))
    ys = np.unique(np.linspace(0, h - 1, min(h, side)).round().astype(int))
    xs = np.unique(np.linspace(0, w - 1, min(w, side)).round().astype(int))
    queries = [((ti + 0.5) * clip_frames / t, (yi + 0.5) / h, (xi + 0.5) / w) for ti in ts for yi in ys for xi in xs]
    return np.mean([r["map"] for r in _rows(block, x, clip_frames, queries)], axis=0).astype(np.float32)


def window_heatmaps(model: nn.Module, clips, *, mean: Sequence[float], std: Sequence[float],
                    block_name: str | None = None, query: tuple[float, float, float] | None = None,
                    max_queries: int = 256, max_dense: int = 16_000_000) -> list[np.ndarray]:
    """One attention heat map per clip, on the block's key grid over the crop: H'×W' float32 in
    [0, 1] (draw it with ``render_video(..., crop=(short_side, crop_size))``, which upsamples it
    onto the frame region the crop came from, :func:`crop_box`).

    ``clips``: B×T×S×S×C uint8 (``WindowBatch.clips``: raw pixels, normalised here with ``mean``
    / ``std`` as the model's input is) or the model's float input B×C×T×S×S. ``block_name``: a
    nonlocal block of ``model`` (default: its last one, in forward order). ``query``: (t, y, x)
    fractions in [0, 1] of the clip's duration, the crop's height and width: the affinity row of
    that position (``vidnl.engine.attention``); None: the block's mean attention, the rows of all
    positions averaged (how much attention each key position receives).

    The map over the key grid T'×H'×W' is summed over key time (where in the picture the block
    looks, over the whole clip), then scaled to [0, 1]: minus its minimum, divided by its range
    (min-max, as class-activation maps are shown: the least attended position gets no heat, the
    most attended full heat; a constant map is all zeros)."""
    from .data.model_input import InputNormalizer
    from .engine.attention import block_attention_maps, block_inputs, nonlocal_block_names

    blocks = nonlocal_block_names(model)
    if not blocks:
        raise RenderError("the model has no nonlocal block, so there is no attention to show "
                          "(set NONLOCAL.LOCATION)")
    if block_name is None:
        block_name = blocks[-1]
    elif block_name not in blocks:
        raise RenderError(f"attention block {block_name!r} is not a nonlocal block of this model; it has {blocks}")
    if query is not None:
        if len(query) != 3 or not all(0.0 <= float(v) <= 1.0 for v in query):
            raise RenderError(f"query must be (t, y, x) with each value in [0, 1], got {tuple(query)!r}")
    clips = torch.as_tensor(clips)
    device = next(model.parameters()).device
    x = InputNormalizer(list(mean), list(std))(clips, device)  # B×C×T×S×S float32
    frames = x.shape[2]
    was_training = model.training
    model.eval()
    try:
        if query is not None:
            qt = min(int(float(query[0]) * frames), frames - 1)
            maps = [m["map"] for m in block_attention_maps(model, [block_name], x,
                                                           [(qt, float(query[1]), float(query[2]))])[block_name]]
        else:
            block = dict(model.named_modules())[block_name]
            inputs = block_inputs(model, [block_name], x)[block_name]
            if inputs.shape[0] != x.shape[0]:
                raise ValueError(f"{block_name} sees {inputs.shape[0]} samples for {x.shape[0]} clips")
            maps = [_mean_map(block, inputs[b:b + 1], frames, max_queries, max_dense) for b in range(x.shape[0])]
    finally:
        model.train(was_training)
    out = []
    for amap in maps:
        plane = np.asarray(amap, np.float32).sum(0)
        plane = plane - plane.min()
        peak = float(plane.max())
        out.append(plane / peak if peak > 1e-12 else np.zeros_like(plane))
    return out


# ------------------------------------------------------------------------------------------------
# Timeline PNG
# ------------------------------------------------------------------------------------------------
def plot_timeline(timeline, png_path: str, *, top_classes: int = 5, segments=None, title: str | None = None,
                  class_names: Sequence[str] | None = None, width_px: int = 1000, height_px: int = 360) -> list[int]:
    """A PNG (``width_px`` × ``height_px``) of the probability of the ``top_classes`` classes with
    the highest peak probability over the windows, against time (each window at its centre,
    ``(start + end) / 2`` seconds), in the class colours of the rendered video (:data:`PALETTE`);
    ``segments`` (records ``{"index", "name", "start", "end", ...}``) are shaded under the curves.
    Probabilities come from each record's ``probs`` (all classes); records without it give the
    classes of their ``topk`` only (others missing there). Names: ``class_names``, else the
    timeline's top-k names, else "class i". Without a frame rate (``start`` None) the x axis is
    in frames (``start_frame`` to ``end_frame + 1``). Written atomically; a symbolic link at
    ``png_path`` is refused. Returns the plotted class indices, highest peak first."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .engine.output_dir import write_bytes_atomic

    _windows(timeline)
    png_path = os.fspath(png_path)
    if os.path.islink(png_path):
        raise RenderError(f"{png_path} is a symbolic link (to {os.readlink(png_path)}): vidnl writes its outputs as "
                          f"regular files; remove the link or choose another path")
    if os.path.isdir(png_path):
        raise RenderError(f"{png_path} is a folder; expected the path of the PNG to write")
    if not isinstance(top_classes, (int, np.integer)) or top_classes < 1:
        raise RenderError(f"top_classes must be a positive integer, got {top_classes!r}")
    num_classes = max([len(r.get("probs") or ()) for r in timeline]
                      + [int(t["index"]) + 1 for r in timeline for t in r["topk"] if "index" in t] + [0])
    if num_classes == 0:
        raise RenderError("timeline: its records hold neither probs nor topk classes with an index")
    probs = np.full((len(timeline), num_classes), np.nan)
    for i, rec in enumerate(timeline):
        if rec.get("probs"):
            probs[i, :len(rec["probs"])] = rec["probs"]
        else:
            for t in rec["topk"]:
                probs[i, int(t["index"])] = float(t["prob"])
    names = _class_names(timeline)
    if class_names is not None:
        names.update({i: str(n) for i, n in enumerate(class_names)})
    peak = np.where(np.isnan(probs), -1.0, probs).max(0)
    chosen = [int(c) for c in np.argsort(-peak, kind="stable")[:top_classes] if peak[c] >= 0]
    in_frames = any(r.get("start") is None or r.get("end") is None for r in timeline)  # frame rate unknown
    keys = ("start_frame", "end_frame") if in_frames else ("start", "end")
    bounds = np.array([[float(r[keys[0]]), float(r[keys[1]]) + in_frames] for r in timeline])  # frames: end + 1
    times = bounds.mean(1)
    dpi = 100
    fig, ax = plt.subplots(figsize=(width_px / dpi, height_px / dpi), dpi=dpi)
    try:
        for seg in segments or ():
            c = int(seg["index"])
            ax.axvspan(float(seg[keys[0]]), float(seg[keys[1]]) + in_frames, color=PALETTE[c % len(PALETTE)] / 255.0,
                       alpha=0.15, lw=0)
        for c in chosen:
            ax.plot(times, probs[:, c], color=PALETTE[c % len(PALETTE)] / 255.0, lw=1.8, marker="o", ms=2.5,
                    label=names.get(c, f"class {c}"))
        ax.set_ylim(0, 1.02)
        ax.set_xlim(bounds[0, 0], max(bounds[:, 1].max(), bounds[0, 0] + 1e-6))
        ax.set_xlabel("frame" if in_frames else "time (s)")
        ax.set_ylabel("probability")
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left", bbox_to_anchor=(1.005, 1.0), fontsize=8, framealpha=0.8)
        if title:
            ax.set_title(title, fontsize=10)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=dpi)
    finally:
        plt.close(fig)
    try:
        write_bytes_atomic(png_path, buf.getvalue())
    except OSError as e:
        raise RenderError(f"cannot write {png_path}: {e.strerror or e}") from None
    return chosen


__all__ = ["PALETTE", "RenderError", "crop_box", "draw_labels", "frame_to_window", "label_layout", "overlay_heatmap",
           "plot_timeline", "render_video", "window_heatmaps"]
