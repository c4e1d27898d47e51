"""Clip features of whole video datasets: the pooled backbone features of every sliding window.

For each video, every window of one clip span (DATA.NUM_FRAMES frames DATA.SAMPLING_RATE apart)
at a fixed stride is cut from one streamed decode (``vidnl.long_video.iter_windows``: each frame
decoded once, the frames short-side resized to DATA.TEST_CROP_SIZE and centre-cropped, the single
view of the test path), normalised with DATA.MEAN / DATA.STD and run through the model with its
final classifier removed: a window's feature is the input of the classifier (for ResNet-style
models the global-average-pooled last stage, 2048-d for an I3D-R50).

Output layout (``out_dir``), the one of the I3D features of temporal action localisation
(THUMOS-14 / ActivityNet feature releases as read by G-TAD, BMN, ActionFormer):

* ``<video-id>.npy``: float32 array num_windows × D, row t = the window starting at frame
  ``t * stride_frames`` (0-based) and spanning ``span_frames`` frames; in ActionFormer's
  terms ``feat_stride = stride_frames`` and ``num_frames = span_frames``.
* ``index.json``: the settings, and per video its id, source path, status, fps, frame count,
  num_windows, feature_dim and every window's first/last frame and start/end in seconds; the
  failed videos with their reason. ``index.csv``: the same one row per video, without the
  per-window lists.
* ``extraction.json``: the settings the folder was made with (a later run with other settings
  is refused); ``.parts/``: one small JSON per finished (or failed) video, from which the index
  is rebuilt.

Resumable: a ``.npy`` is written atomically (a temporary file, then a rename) after its part
file, so a video with a ``.npy`` is complete and is skipped by the next run; the index is
rebuilt from the part files at the end of every run. Sharded: with ``rank`` / ``world_size``
(torchrun) each process takes the videos ``i`` with ``i % world_size == rank``; rank 0 writes
the index after a barrier.

    from vidnl.clip_features import extract_clip_features_from_config
    summary = extract_clip_features_from_config(cfg, "ckpt.pyth", ["videos/"], "features/", stride="16f")
"""

from __future__ import annotations

import copy
import csv
import io
import json
import logging
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn as nn

from .errors import ConfigError, VidnlUserError

logger = logging.getLogger(__name__)

PARTS_DIR = ".parts"
SETTINGS_FILE = "extraction.json"
INDEX_JSON = "index.json"
INDEX_CSV = "index.csv"
LAYOUT = ("one <video-id>.npy per video, float32 num_windows x feature_dim; row t = the window starting at frame "
          "t * stride_frames and spanning span_frames frames (the THUMOS-14 / ActivityNet I3D feature layout: "
          "ActionFormer feat_stride = stride_frames, num_frames = span_frames)")
# Where the final classifier sits in the registered classification models, tried in order (a
# model may name its own with a ``classifier`` attribute, a dotted path to an nn.Linear).
CLASSIFIER_PATHS = ("head.fc", "rgb.head.fc", "fc")
CSV_COLUMNS = ("video_id", "path", "status", "num_windows", "feature_dim", "fps", "num_video_frames", "duration_s",
               "stride_frames", "span_frames", "first_start_frame", "last_end_frame", "reason")


class ClipFeatureError(VidnlUserError, ValueError):
    """Clip features cannot be extracted as asked (a model without a classifier to strip, an
    output folder made with other settings, a bad stride); the message says what and why."""


# ------------------------------------------------------------------------------------------------
# The backbone features of a classification model
# ------------------------------------------------------------------------------------------------
def classifier_path(model: nn.Module) -> str:
    """The dotted name of ``model``'s final classifier (an ``nn.Linear``): its ``classifier``
    attribute if it has one, else the first of ``CLASSIFIER_PATHS`` that is an nn.Linear.
    ClipFeatureError when there is none."""
    candidates = [model.classifier] if isinstance(getattr(model, "classifier", None), str) else CLASSIFIER_PATHS
    for path in candidates:
        module = model
        for part in path.split("."):
            module = module._modules.get(part) if isinstance(module, nn.Module) else None
        if isinstance(module, nn.Linear):
            return path
    raise ClipFeatureError(f"{type(model).__name__}: no final classifier found (an nn.Linear at one of "
                           f"{', '.join(candidates)}); clip features are the input of a classification model's "
                           f"final linear layer (give the model a 'classifier' attribute naming it)")


def feature_model(model: nn.Module) -> nn.Module:
    """``model`` with its final classifier (:func:`classifier_path`) replaced by the identity:
    B×C×T×H×W clips -> B×D, the classifier's input (after the model's own pooling; where a model
    averages per-frame logits, as Kozlov's VTN does, the average of the per-frame inputs, since
    the mean of a linear map is the map of the mean; a head set to PySlowFast's fully
    convolutional test head, MODEL.TEST_HEAD fully_conv, gives its global pool, the features of
    the I3D feature releases). ``model`` itself is untouched: the modules
    on the path to the classifier are shallow copies sharing every parameter and buffer."""
    path = classifier_path(model).split(".")
    root = copy.copy(model)
    root._modules = dict(model._modules)
    parent = root
    for part in path[:-1]:
        child = copy.copy(parent._modules[part])
        child._modules = dict(child._modules)
        parent._modules[part] = child
        parent = child
    parent._modules[path[-1]] = nn.Identity()
    if getattr(parent, "test_pool_kernel", None) is not None:
        parent.test_pool_kernel = None  # a fully convolutional test head (on this copy): the global pool
    return root


# ------------------------------------------------------------------------------------------------
# Video ids, strides
# ------------------------------------------------------------------------------------------------
def _stem(path: str) -> str:
    base = os.path.basename(os.path.normpath(path))
    stem, ext = os.path.splitext(base)
    return stem if stem and ext and not os.path.isdir(path) else base


def video_ids(paths: Sequence[str]) -> list[str]:
    """One id per path: the file name without its extension (a folder of frames: its name);
    where names repeat, the path relative to those paths' common folder, without the extension,
    its folder separators written as ``__`` (``a/v.mp4``, ``b/v.mp4`` -> ``a__v``, ``b__v``).
    ``paths`` must not repeat (ValueError)."""
    if len(set(map(os.path.abspath, paths))) != len(paths):
        raise ValueError("video_ids: repeated paths")
    stems = [_stem(p) for p in paths]
    dup = {s for s in stems if stems.count(s) > 1}
    if not dup:
        return stems
    absolute = [os.path.abspath(p) for p, s in zip(paths, stems) if s in dup]
    common = os.path.commonpath(absolute) if len(absolute) > 1 else os.path.dirname(absolute[0])
    out = []
    for p, s in zip(paths, stems):
        if s not in dup:
            out.append(s)
            continue
        rel = os.path.relpath(os.path.abspath(p), common)
        rel = os.path.join(os.path.dirname(rel), s) if os.path.dirname(rel) else s
        out.append(rel.replace(os.sep, "__"))
    if len(set(out)) != len(out):  # a renamed id meets another's plain stem: number what still repeats
        seen: dict[str, int] = {}
        for i, v in enumerate(out):
            seen[v] = seen.get(v, 0) + 1
            if seen[v] > 1:
                out[i] = f"{v}__{seen[v]}"
    return out


def parse_stride(text) -> tuple[float, str]:
    """A window stride as ``tools/predict.py --window-stride`` takes it (``vidnl.long_video.parse_stride``):
    ``"16f"`` (frames) or ``"1s"`` / ``"0.5s"`` (seconds); a text without its unit is refused as
    the CLI refuses it (ambiguous); a Python int is frames. -> (value, "f" | "s").
    ClipFeatureError naming the text otherwise."""
    from .long_video import parse_stride as _parse

    if isinstance(text, (int, np.integer)) and not isinstance(text, bool):
        text = f"{int(text)}f"
    try:
        return _parse(text)
    except ValueError as e:
        raise ClipFeatureError(str(e)) from None


# ------------------------------------------------------------------------------------------------
# Settings and the output folder
# ------------------------------------------------------------------------------------------------
@dataclass
class WindowSettings:
    """How windows are cut and normalised: ``num_frames`` × ``sampling_rate`` clips every
    ``stride`` (``parse_stride``), frames short-side resized to ``crop_size`` and centre-cropped,
    normalised with ``mean`` / ``std`` (0-1 scale); ``short_video_mode`` (pad | loop) for videos
    shorter than one span; ``spatial_rounding`` (DATA.SPATIAL_ROUNDING) of the resize and crop;
    ``decode_full_size``: decode at full size, not scaled to ``crop_size`` by the decoder (the
    test does so with "pyslowfast" rounding); ``backend`` / ``threads`` of the decoder,
    ``frame_template`` of a folder of frames."""

    num_frames: int
    sampling_rate: int
    stride: tuple = (16.0, "f")
    crop_size: int = 224
    mean: Sequence[float] = (0.45, 0.45, 0.45)
    std: Sequence[float] = (0.225, 0.225, 0.225)
    short_video_mode: str = "pad"
    spatial_rounding: str = "vidnl"
    decode_full_size: bool = False
    backend: str = "auto"
    threads: int = 1
    frame_template: str = "img_{:05d}.jpg"

    @property
    def span_frames(self) -> int:
        return (self.num_frames - 1) * self.sampling_rate + 1

    def record(self) -> dict:
        """What must match between runs writing into one folder (not the decoder)."""
        d = asdict(self)
        d.pop("backend"), d.pop("threads"), d.pop("frame_template")
        d["stride"] = f"{d['stride'][0]:g}{d['stride'][1]}"
        d["mean"], d["std"] = [float(v) for v in self.mean], [float(v) for v in self.std]
        d["span_frames"] = self.span_frames
        return d


def check_output_folder(out_dir: str) -> None:
    """ClipFeatureError / OutputDirError if ``out_dir`` exists and is not a folder, or holds a
    symbolic link where vidnl writes a file (``<id>.npy``, the index, ``.parts/*``)."""
    from .engine.output_dir import OutputDirError, check_no_symlinked_outputs

    if not out_dir:
        raise ClipFeatureError("output folder: empty path; expected the folder to write the features to")
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ClipFeatureError(f"output folder {out_dir} is a file; expected a folder (the features are one .npy "
                               f"per video plus {INDEX_JSON} / {INDEX_CSV})")
    check_no_symlinked_outputs(out_dir)
    parts = os.path.join(out_dir, PARTS_DIR)
    if os.path.isdir(parts):
        for name in sorted(os.listdir(parts)):
            p = os.path.join(parts, name)
            if os.path.islink(p):
                raise OutputDirError(f"{p} is a symbolic link (to {os.readlink(p)}): vidnl writes its files as "
                                     f"regular files and would change the file it points to; remove the link")


def check_settings(out_dir: str, settings: dict) -> None:
    """Write ``out_dir/extraction.json`` (the run's settings) or, when it exists, check that it
    holds the same settings: ClipFeatureError naming the first that differs otherwise (features
    of two models or strides must not be mixed in one folder)."""
    from .engine.output_dir import write_json_atomic

    path = os.path.join(out_dir, SETTINGS_FILE)
    if os.path.isfile(path):
        try:
            with open(path, encoding="utf-8") as f:
                old = json.load(f)
        except (OSError, ValueError) as e:
            raise ClipFeatureError(f"{path}: cannot read the settings of the earlier run ({e}); delete the file "
                                   f"or choose another output folder") from None
        for key in sorted(set(old) | set(settings)):
            if old.get(key) != settings.get(key):
                raise ClipFeatureError(f"{out_dir} holds features made with other settings ({key}: "
                                       f"{old.get(key)!r} then, {settings.get(key)!r} now); choose another output "
                                       f"folder, or delete it to start again")
        return
    write_json_atomic(path, settings)


def _part_path(out_dir: str, vid: str, failed: bool = False) -> str:
    return os.path.join(out_dir, PARTS_DIR, f"{vid}.failed.json" if failed else f"{vid}.json")


def _read_json(path: str):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def finished_part(out_dir: str, vid: str) -> dict | None:
    """The part record of a finished video (its ``.npy`` exists, holds num_windows × feature_dim
    rows as its part file says), else None (not started, killed before the rename, or foreign)."""
    npy = os.path.join(out_dir, f"{vid}.npy")
    if not os.path.isfile(npy):
        return None
    part = _read_json(_part_path(out_dir, vid))
    if not isinstance(part, dict):
        return None
    try:
        shape = np.load(npy, mmap_mode="r").shape
    except (OSError, ValueError):
        return None
    return part if tuple(shape) == (part.get("num_windows"), part.get("feature_dim")) else None


def _save_video(out_dir: str, part: dict, features: np.ndarray) -> None:
    """The part file, then the features (atomic, durable): a ``.npy`` exists only complete and
    after its part file; a failure marker of an earlier run is removed."""
    from .engine.output_dir import write_bytes_atomic, write_json_atomic

    vid = part["id"]
    write_json_atomic(_part_path(out_dir, vid), part)
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(features, dtype=np.float32))
    write_bytes_atomic(os.path.join(out_dir, f"{vid}.npy"), buf.getbuffer(), durable=True)
    failed = _part_path(out_dir, vid, failed=True)
    if os.path.exists(failed):
        os.remove(failed)


def _save_failure(out_dir: str, vid: str, path: str, reason: str) -> None:
    from .engine.output_dir import write_json_atomic

    write_json_atomic(_part_path(out_dir, vid, failed=True), {"id": vid, "path": path, "reason": reason})


def window_part(vid: str, path: str, starts: Sequence[int], fps: float, num_video_frames: int,
                settings: WindowSettings, stride_frames: int, feature_dim: int) -> dict:
    """The index record of one video: window first/last frames (inclusive; the last frame a
    window samples, at most the video's last) and their times in seconds (start / fps,
    (last + 1) / fps)."""
    starts = [int(s) for s in starts]
    last = (settings.num_frames - 1) * settings.sampling_rate
    ends = [min(s + last, num_video_frames - 1) if num_video_frames > 0 else s + last for s in starts]
    ok_fps = bool(fps and math.isfinite(fps) and fps > 0)
    return {"id": vid, "path": path, "num_windows": len(starts), "feature_dim": int(feature_dim),
            "fps": float(fps) if ok_fps else None, "num_video_frames": int(num_video_frames),
            "stride_frames": int(stride_frames), "span_frames": settings.span_frames,
            "start_frames": starts, "end_frames": ends,
            "start_s": [round(s / fps, 6) for s in starts] if ok_fps else None,
            "end_s": [round((e + 1) / fps, 6) for e in ends] if ok_fps else None}


def write_index(out_dir: str, videos: Sequence[str], ids: Sequence[str], settings: dict) -> dict:
    """Rebuild ``index.json`` and ``index.csv`` of ``out_dir`` from its part files, for the
    videos ``videos`` (ids ``ids``) in order: status "done" (its ``.npy`` is complete), "failed"
    (with the reason) or "pending" (not extracted yet: a run stopped early). Atomic writes.
    Returns the index document."""
    from .engine.output_dir import write_json_atomic, write_text_atomic

    rows, failed, pending, dims = [], [], [], set()
    for path, vid in zip(videos, ids):
        part = finished_part(out_dir, vid)
        if part is not None:
            part = {**part, "path": path, "status": "done"}
            rows.append(part)
            dims.add(part["feature_dim"])
            continue
        bad = _read_json(_part_path(out_dir, vid, failed=True))
        if isinstance(bad, dict):
            failed.append({"id": vid, "path": path, "status": "failed", "reason": str(bad.get("reason", ""))})
        else:
            pending.append({"id": vid, "path": path, "status": "pending"})
    doc = {"layout": LAYOUT, "settings": settings, "feature_dim": dims.pop() if len(dims) == 1 else None,
           "num_videos": len(videos), "num_done": len(rows), "num_failed": len(failed), "num_pending": len(pending),
           "videos": rows, "failed": failed, "pending": pending}
    write_json_atomic(os.path.join(out_dir, INDEX_JSON), doc)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    by_id = {r["id"]: r for r in rows + failed + pending}
    for vid in ids:
        r = by_id[vid]
        done = r["status"] == "done"
        fps = r.get("fps") if done else None
        w.writerow([vid, r["path"], r["status"],
                    *([r["num_windows"], r["feature_dim"], f"{fps:.6g}" if fps else "", r["num_video_frames"],
                       f"{r['num_video_frames'] / fps:.6g}" if fps else "", r["stride_frames"], r["span_frames"],
                       r["start_frames"][0] if r["num_windows"] else "",
                       r["end_frames"][-1] if r["num_windows"] else ""] if done else [""] * 9),
                    r.get("reason", "")])
    write_text_atomic(os.path.join(out_dir, INDEX_CSV), buf.getvalue())
    return doc


def remove_stale_temporaries(out_dir: str) -> list[str]:
    """Remove the temporary files (``.tmp_*``) a killed run left in ``out_dir`` and its part
    folder (call only when no process writes there). Returns their paths."""
    gone = []
    for folder in (out_dir, os.path.join(out_dir, PARTS_DIR)):
        if os.path.isdir(folder):
            for name in sorted(os.listdir(folder)):
                p = os.path.join(folder, name)
                if name.startswith(".tmp_") and os.path.isfile(p) and not os.path.islink(p):
                    os.remove(p)
                    gone.append(p)
    return gone


# ------------------------------------------------------------------------------------------------
# Streaming windows (in loader workers)
# ------------------------------------------------------------------------------------------------
class _WindowStream(torch.utils.data.IterableDataset):
    """The windows of ``videos`` (list of (index, path)) as items: {"kind": "batch", "video",
    "starts", "clips" B×T×crop×crop×C uint8, "fps", "num_video_frames"} per streamed batch,
    then {"kind": "done", "video", "stride_frames"}, or {"kind": "failed", "video", "reason"}
    when the video cannot be read (batches already sent for it are then void). With loader
    workers, worker w streams the videos at positions w, w + workers, ...."""

    def __init__(self, videos: Sequence[tuple[int, str]], settings: WindowSettings, batch_size: int):
        self.videos, self.settings, self.batch_size = list(videos), settings, batch_size

    def __iter__(self):
        from .data.decoding import DecodeError
        from .long_video import iter_windows, stride_in_frames, video_fps

        info = torch.utils.data.get_worker_info()
        wid, nw = (info.id, info.num_workers) if info is not None else (0, 1)
        s = self.settings
        for j, (index, path) in enumerate(self.videos):
            if j % nw != wid:
                continue
            try:
                stride = int(s.stride[0]) if s.stride[1] == "f" else stride_in_frames(*s.stride, video_fps(path))
                for b in iter_windows(path, num_frames=s.num_frames, sampling_rate=s.sampling_rate,
                                      stride_frames=stride, short_side=None if s.decode_full_size else s.crop_size,
                                      crop_size=s.crop_size, backend=s.backend, threads=s.threads,
                                      batch_size=self.batch_size, short_video_mode=s.short_video_mode,
                                      frame_template=s.frame_template, spatial_rounding=s.spatial_rounding):
                    yield {"kind": "batch", "video": index, "starts": np.asarray(b.starts, dtype=np.int64),
                           "clips": torch.as_tensor(b.clips), "fps": float(b.fps),
                           "num_video_frames": int(b.num_video_frames)}
            except (DecodeError, OSError, RuntimeError, ValueError) as e:  # this file cannot be read: the run goes on
                reason = getattr(e, "reason", None) or f"{type(e).__name__}: {e}"
                yield {"kind": "failed", "video": index, "reason": str(reason).splitlines()[0] if reason else "?"}
                continue
            yield {"kind": "done", "video": index, "stride_frames": stride}


# ------------------------------------------------------------------------------------------------
# Extraction
# ------------------------------------------------------------------------------------------------
@dataclass
class _VideoState:
    path: str
    vid: str
    starts: list = field(default_factory=list)
    feats: dict = field(default_factory=dict)  # window position -> D float32
    fps: float = 0.0
    num_video_frames: int = 0
    stride_frames: int | None = None
    done: bool = False
    failed: str | None = None


def _first_item(item):
    return item


@torch.no_grad()
def extract_clip_features(videos: Sequence[str], model: nn.Module, out_dir: str, settings: WindowSettings, *,
                          batch_size: int = 8, device: torch.device | str | None = None, num_workers: int = 0,
                          compile_backend: str | None = None, rank: int = 0, world_size: int = 1,
                          max_videos: int | None = None, run_settings: dict | None = None,
                          progress: bool | None = None, on_video: Callable[[dict], None] | None = None) -> dict:
    """Write the clip features of ``videos`` (paths) to ``out_dir`` (layout: module docstring).

    ``model``: a classification model (eval mode is set); its classifier's input is the feature
    (:func:`feature_model`). Windows: ``settings`` (:class:`WindowSettings`). Forward passes of
    ``batch_size`` windows, from any videos (windows of short videos share a pass), through one
    ``torch.compile`` graph when ``compile_backend`` is given. ``num_workers`` loader processes
    decode (each streams whole videos). This process takes the videos ``i % world_size == rank``;
    a video whose ``.npy`` is complete is skipped; at most ``max_videos`` videos are extracted
    (then it stops, as a killed run would). ``run_settings``: what ``extraction.json`` records
    (default: ``settings.record()``). ``on_video(record)`` is called for each video finished,
    failed or skipped. The index is not written here (:func:`write_index`).

    Returns {"done": [ids], "skipped": [ids], "failed": [{"id", "path", "reason"}],
    "pending": [ids], "windows": n, "time_s": s}."""
    from .data.model_input import InputNormalizer
    from .engine.inference import compile_for_inference

    paths = [os.fspath(p) for p in videos]
    ids = video_ids(paths)
    check_output_folder(out_dir)
    os.makedirs(os.path.join(out_dir, PARTS_DIR), exist_ok=True)
    check_settings(out_dir, run_settings if run_settings is not None else settings.record())
    device = torch.device(device) if device is not None else next(model.parameters()).device
    net = feature_model(model.to(device).eval())
    net = compile_for_inference(net, batch_size, compile_backend)
    normalize = InputNormalizer(settings.mean, settings.std)

    mine = [i for i in range(len(paths)) if i % world_size == rank]
    out = {"done": [], "skipped": [], "failed": [], "pending": [], "windows": 0}
    todo = []
    for i in mine:
        if finished_part(out_dir, ids[i]) is not None:
            out["skipped"].append(ids[i])
            if on_video:
                on_video({"id": ids[i], "path": paths[i], "status": "skipped"})
        else:
            todo.append(i)
    if max_videos is not None and len(todo) > max_videos:
        out["pending"] = [ids[i] for i in todo[max_videos:]]
        todo = todo[:max_videos]
    states = {i: _VideoState(paths[i], ids[i]) for i in todo}
    stream = _WindowStream([(i, paths[i]) for i in todo], settings, batch_size)
    workers = min(num_workers, len(todo))
    loader = torch.utils.data.DataLoader(stream, batch_size=None, num_workers=workers, collate_fn=_first_item,
                                         persistent_workers=False, prefetch_factor=2 if workers else None)
    from tqdm import tqdm

    show = sys.stderr.isatty() if progress is None else progress
    bar = tqdm(total=len(todo), desc=f"clip features{f' (rank {rank})' if world_size > 1 else ''}", unit="video",
               disable=not show, leave=False, dynamic_ncols=True)
    pending: list[tuple[int, int, torch.Tensor]] = []  # (video, window position, T×h×w×C) waiting for a pass
    start_time = time.time()

    def finish(i: int) -> None:
        st = states.pop(i)
        if st.failed is None:
            feats = np.stack([st.feats[k] for k in range(len(st.starts))]) if st.starts else None
            if feats is None or not np.isfinite(feats).all():
                st.failed = ("no window" if feats is None else
                             f"features not finite (NaN or inf in {int((~np.isfinite(feats)).any(1).sum())} of "
                             f"{len(feats)} windows)")
            else:
                part = window_part(st.vid, st.path, st.starts, st.fps, st.num_video_frames, settings,
                                   st.stride_frames, feats.shape[1])
                _save_video(out_dir, part, feats)
                out["done"].append(st.vid)
                out["windows"] += len(st.starts)
                if on_video:
                    on_video({**part, "status": "done"})
        if st.failed is not None:
            _save_failure(out_dir, st.vid, st.path, st.failed)
            out["failed"].append({"id": st.vid, "path": st.path, "reason": st.failed})
            if on_video:
                on_video({"id": st.vid, "path": st.path, "status": "failed", "reason": st.failed})
            else:
                logger.warning("cannot extract %s: %s", st.path, st.failed)
        bar.update(1)
        bar.set_postfix(windows=out["windows"], refresh=False)

    def run(n: int) -> None:
        nonlocal pending
        chunk, pending = pending[:n], pending[n:]
        clips = torch.stack([c for _, _, c in chunk])
        feats = net(normalize(clips, device)).float().cpu().numpy()
        if feats.ndim != 2:
            raise ClipFeatureError(f"{type(model).__name__}: the classifier's input has shape "
                                   f"{tuple(feats.shape)}, expected windows x features")
        touched = {}  # the videos of this pass, in order
        for (i, k, _), f in zip(chunk, feats):
            st = states.get(i)
            if st is not None and st.failed is None:
                st.feats[k] = f
                touched[i] = True
        for i in touched:
            st = states[i]
            if st.done and len(st.feats) == len(st.starts):
                finish(i)

    try:
        for item in loader:
            i = int(item["video"])
            st = states[i]
            if item["kind"] == "batch":
                base = len(st.starts)
                st.starts += [int(s) for s in item["starts"]]
                st.fps, st.num_video_frames = float(item["fps"]), int(item["num_video_frames"])
                pending += [(i, base + k, c) for k, c in enumerate(item["clips"])]
            elif item["kind"] == "failed":
                st.failed = item["reason"]
                pending = [p for p in pending if p[0] != i]
                finish(i)
            else:
                st.done, st.stride_frames = True, int(item["stride_frames"])
                if len(st.feats) == len(st.starts):
                    finish(i)
            while len(pending) >= batch_size:
                run(batch_size)
        while pending:
            run(min(batch_size, len(pending)))
    finally:
        bar.close()
    out["time_s"] = time.time() - start_time
    return out


# ------------------------------------------------------------------------------------------------
# From the config (the builder part)
# ------------------------------------------------------------------------------------------------
def check_feature_model_config(cfg) -> None:
    """ConfigError unless ``cfg`` describes a video classifier whose windows can be cut from RGB
    video (``vidnl.predict.check_predictable``) and which takes clips (not an image model)."""
    from .models.build import IMAGE_ARCHS
    from .predict import check_predictable

    check_predictable(cfg)
    if cfg.MODEL.ARCH in IMAGE_ARCHS:
        raise ConfigError(f"MODEL.ARCH is {cfg.MODEL.ARCH!r}, an image model: clip features need a video model "
                          f"that takes clips of DATA.NUM_FRAMES frames (c2d, i3d, resnet3d, p3d, mars, vtn, vtn_vit)")


def window_settings(cfg, stride) -> WindowSettings:
    """The windows of ``cfg``'s single test view, as ``tools/predict.py --window-stride`` cuts
    them (``vidnl.predict.window_settings``: DATA.NUM_FRAMES, DATA.SAMPLING_RATE,
    DATA.TEST_CROP_SIZE, DATA.SPATIAL_ROUNDING, DATA.MEAN / STD, DATA.SHORT_VIDEO_MODE,
    DATA.DECODING_BACKEND / DECODING_THREADS; ConfigError for DATA.TEMPORAL_SAMPLING
    "pyslowfast") every ``stride`` (``parse_stride`` text or a number of frames)."""
    from .predict import window_settings as predict_windows

    w = predict_windows(cfg)
    return WindowSettings(num_frames=w["num_frames"], sampling_rate=w["sampling_rate"],
                          stride=parse_stride(stride) if not isinstance(stride, tuple) else stride,
                          crop_size=w["crop_size"], mean=list(w["mean"]), std=list(w["std"]),
                          short_video_mode=w["short_video_mode"], spatial_rounding=w["spatial_rounding"],
                          decode_full_size=w["short_side"] is None, backend=w["backend"], threads=w["threads"],
                          frame_template=cfg.DATA.FRAME_TEMPLATE)


def run_settings(cfg, settings: WindowSettings, weights: str, cfg_file: str | None = None) -> dict:
    """What ``extraction.json`` records: the windows, the model (MODEL.ARCH, RESNET.DEPTH,
    NONLOCAL.TYPE / LOCATION, MODEL.NUM_CLASSES) and the weights file (absolute path, size)."""
    weights = os.path.abspath(weights)
    return {**settings.record(), "arch": cfg.MODEL.ARCH, "depth": cfg.RESNET.DEPTH,
            "nonlocal": [cfg.NONLOCAL.TYPE, [list(x) for x in cfg.NONLOCAL.LOCATION]],
            "num_classes": cfg.MODEL.NUM_CLASSES, "weights": weights,
            "weights_bytes": os.path.getsize(weights) if os.path.isfile(weights) else None}


def extract_clip_features_from_config(cfg, weights: str, inputs: Iterable[str], out_dir: str, *,
                                      stride="16f", max_videos: int | None = None, device=None,
                                      progress: bool | None = None, on_video=None) -> dict:
    """Build ``cfg``'s model with ``weights``, and write the clip features of ``inputs`` (video
    files, folders, list files: ``vidnl.predict.expand_inputs``) to ``out_dir`` every ``stride``
    (:func:`parse_stride`). Batches of TEST.BATCH_SIZE windows (TEST.COMPILE applies),
    DATA_LOADER.NUM_WORKERS decoding processes. Under torchrun, each process extracts its share
    and rank 0 writes the index once all are done (gloo/nccl barrier). Returns the summary of
    :func:`extract_clip_features` of this process plus "index" (the index document, rank 0;
    None elsewhere) and "videos" (all input paths)."""
    from .engine import distributed as dist
    from .engine.inference import inference_compile_backend
    from .engine.output_dir import output_dir_lock
    from .engine.setup import get_device
    from .predict import build_predictor, expand_inputs

    check_feature_model_config(cfg)
    settings = window_settings(cfg, stride)
    check_output_folder(out_dir)
    d = cfg.DATA
    videos = list(dict.fromkeys(expand_inputs(inputs, path_prefix=d.PATH_PREFIX, separator=d.PATH_LABEL_SEPARATOR,
                                              frame_template=d.FRAME_TEMPLATE)))
    device = torch.device(device) if device is not None else get_device(cfg)
    dist.init_distributed(device.type == "cuda")
    rank, world = dist.get_rank(), dist.get_world_size()
    model = build_predictor(cfg, weights, device)
    record = run_settings(cfg, settings, weights)
    os.makedirs(out_dir, exist_ok=True)
    with output_dir_lock(out_dir, enabled=rank == 0):  # one run at a time in a folder
        summary = extract_clip_features(videos, model, out_dir, settings, batch_size=cfg.TEST.BATCH_SIZE,
                                        device=device, num_workers=cfg.DATA_LOADER.NUM_WORKERS,
                                        compile_backend=inference_compile_backend(cfg), rank=rank, world_size=world,
                                        max_videos=max_videos, run_settings=record, progress=progress,
                                        on_video=on_video)
        dist.barrier()
        summary["index"] = None
        if rank == 0:
            summary["index"] = write_index(out_dir, videos, video_ids(videos), record)
            remove_stale_temporaries(out_dir)
    summary["videos"] = videos
    summary["rank"], summary["world_size"] = rank, world
    return summary


__all__ = ["extract_clip_features", "extract_clip_features_from_config", "feature_model", "classifier_path",
           "video_ids", "parse_stride", "WindowSettings", "window_settings", "write_index",
           "ClipFeatureError", "LAYOUT"]
