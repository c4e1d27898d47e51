"""Sliding windows over one long video: every window a test clip, each frame decoded once, streamed.

A window is one clip of the test: ``num_frames`` frames ``sampling_rate`` apart, spanning
``span = (num_frames - 1) * sampling_rate + 1`` frames. Windows start every ``stride_frames``
frames from frame 0 (:func:`window_starts`); the last one ends at or before the last frame (the
at most ``stride_frames - 1`` frames after it are in no window of their own, only in earlier ones
when the stride is shorter than the span). A video shorter than one span gives one window at
frame 0 whose missing frames are the last frame repeated (``short_video_mode="pad"``) or the
video looped (``"loop"``), as DATA.SHORT_VIDEO_MODE does for every clip.

:func:`iter_windows` decodes the video once, front to back, and yields the windows in batches
(:class:`WindowBatch`) as soon as their last frame is decoded, so memory is bounded whatever the
length: at most one span of frames, kept already cropped (crop × crop × 3 bytes each), plus the
batch being filled, plus one decoding chunk (decord). A frame no window samples is not converted
or kept (with decord not even requested). That holds for vidnl's buffers with either decoder;
decord 0.6 itself keeps about the whole compressed file in memory (a 0.44 GB 1080p file: +0.4 GB;
PyAV: +60 MB whatever the length), so for hour-long files PyAV (``backend="pyav"``,
DATA.DECODING_BACKEND pyav) is the bounded choice (a file over 1 GB with decord logs a warning).

Each frame goes through the test path of one view (``VideoCSVDataset`` in test mode with one
spatial crop): decoded scaled so its shorter side is ``short_side`` (``read_frames``' decoding,
by the same backend and with the display rotation honoured), its shorter side then resized to
``crop_size`` (a no-op when ``short_side == crop_size``, as in the test) and the centre crop cut
(``transforms.test_views`` with one crop). So a window's clip equals the single-view test clip of
the same frames.

Frame times: frame ``i`` is shown from ``i / fps`` to ``(i + 1) / fps`` (the stream's average
frame rate; a constant frame rate is assumed).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import torch

from .data import sampling
from .data.decoding import (DEFAULT_FRAME_TEMPLATE, DecodeError, NoVideoStream, _video_stream, count_frame_files,
                            decord_reader, iter_pyav_frames, resolve_backend)
from .data.transforms import frames_to_tensor, test_views
from .errors import VidnlUserError

logger = logging.getLogger(__name__)

DECORD_CHUNK = 32  # frames per decord get_batch call (decoded at the decoding size, then cropped)
# decord 0.6 keeps about the whole compressed file in memory (benchmarks/long_video.py: +0.4 GB for a
# 0.44 GB 1080p file, PyAV +60 MB): above this size a warning suggests PyAV
DECORD_BIG_FILE = 1 << 30
_BIG_FILE_LOGGED: list = []


@dataclass
class WindowBatch:
    """starts: (B,) int64, the first frame of each window; clips: B×T×crop×crop×C uint8 tensor
    (raw pixels, channels last, as the test dataset's items); fps: the stream's average frame
    rate (0.0 when unknown, e.g. a folder of frames); num_video_frames: the video's frame count
    as known when the batch is yielded: the container's (decord's index, or PyAV's header), and
    in the last batch the number of frames that decoded (they differ for a truncated file or a
    header without a count)."""

    starts: np.ndarray
    clips: torch.Tensor
    fps: float
    num_video_frames: int


def window_starts(num_video_frames: int, span_frames: int, stride_frames: int) -> np.ndarray:
    """First frame of every window: 0, stride, 2·stride, ... while the window's last frame
    (start + span - 1) is a frame of the video; [0] for a video shorter than one span (that
    window is padded or looped). -> (W,) int64."""
    if span_frames < 1 or stride_frames < 1:
        raise ValueError(f"span and stride must be at least 1 frame, got span {span_frames}, stride {stride_frames}")
    if num_video_frames < 1:
        raise ValueError(f"a video has at least 1 frame, got {num_video_frames}")
    return np.arange(0, max(0, num_video_frames - span_frames) + 1, stride_frames, dtype=np.int64)


def window_indices(start: int, num_frames: int, sampling_rate: int) -> np.ndarray:
    """The frames a window starting at ``start`` samples. -> (num_frames,) int64."""
    return start + np.arange(num_frames, dtype=np.int64) * sampling_rate


class WindowAssembler:
    """Turns frames arriving in increasing index order into windows, keeping only the frames a
    pending window still needs. ``needed(i)`` tells whether frame ``i`` must be kept;
    ``add(i, crop)`` keeps it and returns the windows it completes as (start, T×h×w×C uint8 numpy clip);
    ``finish(count)`` returns the padded/looped window of a video shorter than one span.
    ``max_buffered``: the most frames held at once (at most one span)."""

    def __init__(self, num_frames: int, sampling_rate: int, stride_frames: int, short_video_mode: str = "pad",
                 num_video_frames: int | None = None):
        if short_video_mode not in sampling.SHORT_VIDEO_MODES:
            raise ValueError(f"short video mode must be one of {sampling.SHORT_VIDEO_MODES}, got {short_video_mode!r}")
        self.num_frames, self.rate, self.stride = int(num_frames), int(sampling_rate), int(stride_frames)
        self.span = sampling.clip_span(self.num_frames, self.rate)
        if self.num_frames < 1 or self.rate < 1 or self.stride < 1:
            raise ValueError(f"num_frames, sampling_rate and stride must be at least 1, got {num_frames}, "
                             f"{sampling_rate}, {stride_frames}")
        self.mode = short_video_mode
        # windows past the end of a video of known length need none of their frames
        self.last_start = None if num_video_frames is None else num_video_frames - self.span
        self.next = 0  # the next window to complete
        self.buffer: dict[int, np.ndarray] = {}
        self.max_buffered = 0

    def needed(self, i: int) -> bool:
        if self.next == 0 and i < self.span and (self.last_start is None or self.last_start < 0):
            return True  # a video shorter than one span: its one window may sample (loop) any of these
        lo = max(self.next, -(-(i - self.span + 1) // self.stride))  # windows whose span holds i
        hi = i // self.stride
        for w in range(lo, hi + 1):
            if self.last_start is not None and w * self.stride > self.last_start:
                break
            if (i - w * self.stride) % self.rate == 0:
                return True
        return False

    def add(self, i: int, crop: np.ndarray) -> list[tuple[int, np.ndarray]]:
        self.buffer[i] = crop
        self.max_buffered = max(self.max_buffered, len(self.buffer))
        done = []
        while self.next * self.stride + self.span - 1 <= i:
            start = self.next * self.stride
            done.append((start, np.stack([self.buffer[j] for j in window_indices(start, self.num_frames,
                                                                                   self.rate).tolist()])))
            self.next += 1
            first = self.next * self.stride
            for j in [j for j in self.buffer if j < first]:
                del self.buffer[j]
        return done

    def finish(self, count: int) -> list[tuple[int, np.ndarray]]:
        """The window of a video of ``count`` frames that completed none (shorter than one span)."""
        if self.next > 0 or count < 1:
            return []
        idx = sampling.fit_to_length(window_indices(0, self.num_frames, self.rate), count, self.mode)
        self.next = 1
        return [(0, np.stack([self.buffer[j] for j in idx.tolist()]))]


def crop_frame(frame: np.ndarray, crop_size: int, spatial_rounding: str = "vidnl") -> np.ndarray:
    """One decoded frame H×W×C uint8 -> its single-view test crop crop×crop×C uint8 (short side
    resized to ``crop_size``, centre crop: ``transforms.test_views`` with one crop and
    DATA.SPATIAL_ROUNDING ``spatial_rounding``), compact (not a view of the whole frame). The
    copy is numpy's: at the test scale the resize is a no-op and the crop a plain slice, and a
    per-frame torch copy would start its thread pool for every frame."""
    kw = {} if spatial_rounding == "vidnl" else {"rounding": spatial_rounding}
    return np.ascontiguousarray(test_views(frames_to_tensor(frame[None]), crop_size=crop_size, num_crops=1,
                                           **kw)[0][0].numpy())


# ------------------------------------------------------------------------------------------------
# Decoders: each yields (index, frame) in index order, frame H×W×3 uint8 as displayed, decoded at
# the decoding scale, or None for a frame ``needed`` refuses (PyAV and folders: not converted;
# decord yields only the needed frames); ``info`` receives "fps" and "frames" (the count as known
# up front).
# ------------------------------------------------------------------------------------------------
def _decord_frames(vr, info: dict, needed: Callable[[int], bool], fps: float) -> Iterator[tuple[int, np.ndarray]]:
    n = len(vr)
    info["fps"], info["frames"] = fps, n
    wanted = [i for i in range(n) if needed(i)]  # needed() of a known length depends on i only up front
    for c in range(0, len(wanted), DECORD_CHUNK):
        chunk = wanted[c:c + DECORD_CHUNK]
        frames = vr.get_batch(chunk).asnumpy()
        if frames.shape[0] != len(chunk):
            raise RuntimeError(f"decord returned {frames.shape[0]} frames, expected {len(chunk)}")
        for i, frame in zip(chunk, frames):
            yield i, frame
    info["decoded"] = n


def _folder_frames(path: str, template: str, info: dict,
                   needed: Callable[[int], bool]) -> Iterator[tuple[int, np.ndarray]]:
    from PIL import Image

    n = count_frame_files(path, template)
    if n <= 0:
        raise RuntimeError(f"no frame named {template.format(1)!r} in the folder")
    info["fps"], info["frames"] = 0.0, n
    for i in range(n):
        if needed(i):
            with Image.open(os.path.join(path, template.format(i + 1))) as im:
                yield i, np.array(im.convert("RGB"))  # writable (torch.from_numpy warns on read-only)
        else:
            yield i, None


def video_fps(path: str) -> float:
    """The average frame rate of the video file ``path`` as its container states it (0.0 when it
    does not, and for a folder of frames). Raises DecodeError naming the file when PyAV cannot
    open it or it has no video stream."""
    path = os.fspath(path)
    if os.path.isdir(path):
        return 0.0
    try:
        import av

        with av.open(path) as container:
            stream = _video_stream(container)
            rate = stream.average_rate or stream.guessed_rate
    except Exception as e:  # noqa: BLE001 - PyAV raises many types for unreadable files
        raise DecodeError(path, f"cannot read the frame rate ({type(e).__name__}: {e})") from None
    return float(rate) if rate else 0.0


def iter_windows(path: str, *, num_frames: int, sampling_rate: int, stride_frames: int, short_side: int | None,
                 crop_size: int, backend: str = "auto", threads: int = 1, batch_size: int = 8,
                 short_video_mode: str = "pad", frame_template: str = DEFAULT_FRAME_TEMPLATE,
                 spatial_rounding: str = "vidnl", stats: dict | None = None) -> Iterator[WindowBatch]:
    """The windows of the video ``path`` (module docstring), in order, in batches of at most
    ``batch_size``: WindowBatch(starts (B,), clips B×T×crop×crop×C uint8, fps, num_video_frames).

    ``backend``: "auto" / "decord" / "pyav" as DATA.DECODING_BACKEND (a rotated video, or one
    decord cannot open, is decoded with PyAV, as ``read_frames`` does). A folder is read as a
    folder of frames named ``frame_template`` (full size, fps 0.0). ``spatial_rounding``: the
    resize and crop rounding of DATA.SPATIAL_ROUNDING (the test decodes at full size with
    "pyslowfast": pass ``short_side=None`` then). ``stats`` (a dict), if given,
    receives "max_buffered_frames" (the most decoded frames held at once), "kept_frames" (frames
    converted and kept), "decoded_frames" and "backend". Raises DecodeError naming the file when
    it cannot be read."""
    batch_size = int(batch_size)
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    path = os.fspath(path)
    if not os.path.exists(path):
        raise DecodeError(path, "file does not exist")
    info: dict = {}
    source, vr = None, None
    if os.path.isdir(path):
        source = "frames"
    else:
        if os.path.getsize(path) == 0:
            raise DecodeError(path, "file is empty (0 bytes)")
        source = resolve_backend(backend)
        if source == "decord":
            if os.path.getsize(path) > DECORD_BIG_FILE and not _BIG_FILE_LOGGED:
                _BIG_FILE_LOGGED.append(path)
                logger.warning("%s: %.1f GB; decord holds a video's compressed data in memory (about the file's size), "
                               "so sliding windows over it need that much; DATA.DECODING_BACKEND pyav streams it in "
                               "bounded memory", path, os.path.getsize(path) / 1e9)
            try:
                opened = decord_reader(path, short_side=short_side, threads=threads)
                vr = None if opened is None else opened[0]  # None: a rotated video, decoded with PyAV
            except NoVideoStream as e:
                raise DecodeError(path, str(e)) from None
            except Exception as e:  # noqa: BLE001 - decord fails in many ways; PyAV is tried next, as in read_frames
                logger.info("%s: decord cannot open it (%s: %s); decoding with PyAV", path, type(e).__name__, e)
                vr = None
            if vr is None:
                source = "pyav"
    asm = WindowAssembler(num_frames, sampling_rate, stride_frames, short_video_mode,
                          num_video_frames=len(vr) if vr is not None else None)
    if source == "frames":
        frames = _folder_frames(path, frame_template, info, asm.needed)
    elif source == "decord":
        try:
            fps = video_fps(path)
        except DecodeError:  # a header PyAV cannot read: decord's own rate
            fps = 0.0
        frames = _decord_frames(vr, info, asm.needed, fps or float(vr.get_avg_fps() or 0.0))
    else:
        frames = iter_pyav_frames(path, short_side, threads, info, asm.needed)

    starts, clips, count, kept = [], [], 0, 0

    def batch(final: bool) -> WindowBatch:
        n = count if final else (info.get("frames") or count)
        out = WindowBatch(np.asarray(starts, dtype=np.int64), torch.from_numpy(np.stack(clips)),
                          float(info.get("fps", 0.0)), int(n))
        starts.clear()
        clips.clear()
        return out

    while True:
        try:
            item = next(frames, None)
        except NoVideoStream as e:
            raise DecodeError(path, str(e)) from None
        except Exception as e:  # noqa: BLE001 - decoders raise many types; all mean "cannot read this file"
            text = str(e).strip().splitlines()[0] if str(e).strip() else ""
            raise DecodeError(path, f"{source}: {type(e).__name__}: {text} (after {count} frames)") from None
        if item is None:
            break
        i, frame = item
        count = i + 1
        if frame is None:
            continue
        kept += 1
        for start, clip in asm.add(i, crop_frame(frame, crop_size, spatial_rounding)):
            starts.append(start)
            clips.append(clip)
            if len(clips) == batch_size:
                yield batch(False)
    if count == 0:
        raise DecodeError(path, f"{source}: no frame decodes")
    if source == "decord":
        count = max(count, info.get("decoded", count))
    for start, clip in asm.finish(count):
        starts.append(start)
        clips.append(clip)
    if stats is not None:
        stats.update(max_buffered_frames=asm.max_buffered, kept_frames=kept, decoded_frames=count, backend=source)
    if clips:
        yield batch(True)


# ------------------------------------------------------------------------------------------------
# Scoring windows: the timeline, and segments merged from it
# ------------------------------------------------------------------------------------------------
class NonFiniteScores(VidnlUserError, ValueError):
    """The model's scores of a window are NaN or inf (e.g. a checkpoint holding NaN weights)."""


def _seconds(frame: int, fps: float) -> float | None:
    return frame / fps if fps > 0 else None


@torch.no_grad()
def predict_timeline(path: str, model: torch.nn.Module, *, num_frames: int, sampling_rate: int, stride_frames: int,
                     short_side: int | None, crop_size: int, mean, std, batch_size: int = 8,
                     class_names=None, topk: int = 5, backend: str = "auto", threads: int = 1,
                     short_video_mode: str = "pad", spatial_rounding: str = "vidnl",
                     device: torch.device | str | None = None, on_batch=None) -> dict:
    """Score every window of ``path`` (:func:`iter_windows`, batches of ``batch_size``) with
    ``model`` (eval mode; e.g. ``engine.inference.build_inference_model``'s), normalised with
    ``mean`` / ``std`` as the test does. ``short_side``: the decoding scale (the test's is
    ``crop_size``; None: full size); ``vidnl.predict.window_settings(cfg)`` gives the test's
    settings. ``on_batch(batch, probs)`` (optional) sees each WindowBatch and its B×K softmax as
    it is scored.

    Returns ``{"path", "fps", "num_video_frames", "span_frames", "stride_frames", "num_frames",
    "sampling_rate", "crop_size", "windows"}``; ``windows`` is the timeline, one dict per window in
    time order: ``{"window": i, "start_frame", "end_frame" (inclusive: the last frame the window
    samples), "start": start_frame / fps, "end": (end_frame + 1) / fps (seconds; None when the
    frame rate is unknown), "topk": [{"index", "name", "prob"}, ...] (the min(topk, K) most
    probable classes), "probs": K floats (the softmax of the window's logits)}``. Raises
    NonFiniteScores (a user error) when a window's logits are not finite, DecodeError when the
    file cannot be read."""
    from .data.model_input import InputNormalizer

    normalize = InputNormalizer(mean, std)
    if device is None:
        device = next(model.parameters()).device
    names = None if class_names is None else [str(n) for n in class_names]
    span = sampling.clip_span(num_frames, sampling_rate)
    windows, fps, count = [], 0.0, 0
    for batch in iter_windows(path, num_frames=num_frames, sampling_rate=sampling_rate, stride_frames=stride_frames,
                              short_side=short_side, crop_size=crop_size,
                              backend=backend, threads=threads, batch_size=batch_size,
                              short_video_mode=short_video_mode, spatial_rounding=spatial_rounding):
        logits = model(normalize(batch.clips, device)).float().cpu()  # B×K
        if not torch.isfinite(logits).all():
            bad = int(np.flatnonzero(~torch.isfinite(logits).all(1).numpy())[0])
            raise NonFiniteScores(f"{path}: the model's scores of the window at frame {int(batch.starts[bad])} are not "
                                  f"finite (NaN or inf); check the weights")
        if names is not None and len(names) != logits.shape[1]:
            raise ValueError(f"{len(names)} class names given but the model scores {logits.shape[1]} classes")
        probs = torch.softmax(logits, dim=1)
        if on_batch is not None:
            on_batch(batch, probs)
        fps, count = batch.fps, batch.num_video_frames
        k = min(int(topk), probs.shape[1])
        best = torch.topk(probs, k, dim=1).indices.tolist()
        for start, p, top in zip(batch.starts.tolist(), probs.tolist(), best):
            windows.append({"window": len(windows), "start_frame": start, "end_frame": start + span - 1,
                            "topk": [{"index": i, "name": names[i] if names is not None else str(i), "prob": p[i]}
                                     for i in top], "probs": p})
    if count < span and windows:  # the one padded/looped window of a short video
        windows[0]["end_frame"] = int(sampling.fit_to_length(window_indices(0, num_frames, sampling_rate), count,
                                                             short_video_mode).max())
    for w in windows:
        w["start"], w["end"] = _seconds(w["start_frame"], fps), _seconds(w["end_frame"] + 1, fps)
        w.update({key: w.pop(key) for key in ("topk", "probs")})  # keep the documented key order
    return {"path": os.fspath(path), "fps": fps, "num_video_frames": count, "span_frames": span,
            "stride_frames": int(stride_frames), "num_frames": int(num_frames), "sampling_rate": int(sampling_rate),
            "crop_size": int(crop_size), "windows": windows}


def merge_segments(timeline: list[dict], threshold: float) -> list[dict]:
    """Segments of a timeline: maximal runs of consecutive windows whose most probable class is
    the same and has probability ≥ ``threshold``; a window below the threshold, or with another
    top class, ends the run. A segment runs from its first window's start to its last window's
    end: ``{"index", "name", "start", "end", "start_frame", "end_frame", "mean_prob" (mean of the
    class's probability over its windows), "num_windows"}``, in time order."""
    segments: list[dict] = []
    run: list[dict] = []

    def close() -> None:
        if run:
            top = run[0]["topk"][0]
            segments.append({"index": top["index"], "name": top["name"], "start": run[0]["start"],
                             "end": run[-1]["end"], "start_frame": run[0]["start_frame"],
                             "end_frame": run[-1]["end_frame"],
                             "mean_prob": float(np.mean([w["topk"][0]["prob"] for w in run])),
                             "num_windows": len(run)})
            run.clear()

    for w in timeline:
        top = w["topk"][0]
        if top["prob"] < threshold:
            close()
            continue
        if run and run[0]["topk"][0]["index"] != top["index"]:
            close()
        run.append(w)
    close()
    return segments


def timeline_csv(timeline: list[dict]) -> str:
    """The timeline as CSV text: a header, then one row per window: window, start_frame,
    end_frame, start, end (seconds, empty when unknown), then name_1, prob_1, ... name_k, prob_k
    (the window's top k)."""
    import csv
    import io

    k = max((len(w["topk"]) for w in timeline), default=0)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["window", "start_frame", "end_frame", "start", "end"]
                    + [c for r in range(1, k + 1) for c in (f"name_{r}", f"prob_{r}")])
    for w in timeline:
        writer.writerow([w["window"], w["start_frame"], w["end_frame"],
                         "" if w["start"] is None else f"{w['start']:.3f}", "" if w["end"] is None else f"{w['end']:.3f}"]
                        + [c for t in w["topk"] for c in (t["name"], f"{t['prob']:.6f}")])
    return out.getvalue()


def segments_csv(segments: list[dict]) -> str:
    """Segments as CSV text: index, name, start, end, start_frame, end_frame, mean_prob, num_windows."""
    import csv
    import io

    cols = ["index", "name", "start", "end", "start_frame", "end_frame", "mean_prob", "num_windows"]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(cols)
    for s in segments:
        writer.writerow(["" if s[c] is None else (f"{s[c]:.3f}" if c in ("start", "end") else
                                                  f"{s[c]:.6f}" if c == "mean_prob" else s[c]) for c in cols])
    return out.getvalue()


def parse_stride(text: str) -> tuple[float, str]:
    """A window stride as the CLI takes it: ``"16f"`` (frames), ``"1s"`` / ``"0.5s"`` (seconds).
    -> (value, "f" or "s"); ValueError naming the text and the syntax otherwise."""
    t = str(text).strip().lower()
    unit = t[-1:] if t[-1:] in ("f", "s") else ""
    try:
        value = float(t[:-1]) if unit else float("nan")
    except ValueError:
        value = float("nan")
    if not unit or not np.isfinite(value) or value <= 0 or (unit == "f" and value != int(value)):
        raise ValueError(f"window stride {text!r}: expected a number of frames like '16f' or of seconds like '1s' or "
                         f"'0.5s' (positive; frames a whole number)")
    return value, unit


def stride_in_frames(value: float, unit: str, fps: float) -> int:
    """Frames of a stride (``parse_stride``'s value, unit) at ``fps``: seconds are rounded to the
    nearest frame, at least 1."""
    if unit == "f":
        return int(value)
    if not fps or fps <= 0:
        raise ValueError("the video's frame rate is unknown: give the window stride in frames (e.g. '16f')")
    return max(1, int(round(value * fps)))


__all__ = ["WindowBatch", "window_starts", "window_indices", "iter_windows", "WindowAssembler", "crop_frame",
           "parse_stride", "stride_in_frames", "video_fps", "predict_timeline", "merge_segments", "timeline_csv",
           "segments_csv", "NonFiniteScores"]
