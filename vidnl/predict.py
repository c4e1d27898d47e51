"""Predict the classes of your own videos with a trained model: the multi-view test of one video.

Each video is decoded once at the test scale (at full size with DATA.SPATIAL_ROUNDING
pyslowfast, which resizes after decoding as PySlowFast does) and cut into TEST.NUM_ENSEMBLE_VIEWS ×
TEST.NUM_SPATIAL_CROPS views by the test dataset itself (``VideoCSVDataset`` in test mode, the
same item ``tools/run_net.py`` tests with), the views are scored in forward passes of
TEST.BATCH_SIZE clips and aggregated as TEST.ENSEMBLE_METHOD says; so a video's scores are the
ones its entry in ``predictions_<split>.json`` of a test run holds.

    from vidnl.predict import predict, predict_from_config
    results = predict_from_config(cfg, "checkpoint.pyth", ["a.mp4", "b.avi"], topk=3)
    results = predict(["a.mp4"], model, cfg=cfg, class_names=["left", "right"])  # a model in hand

Every result is a dict: ``{"path", "scores", "ensemble", "views", "topk": [{"index", "name",
"score", "prob"}, ...], "notes"}``, or ``{"path", "error"}`` for a video that cannot be read or
whose scores are not finite (the others are scored; nothing is raised for a bad file). Every
number in a result is finite, so results dump as strict JSON (``allow_nan=False``).
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
import types
from typing import Iterable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .data import class_names as _class_names
from .data.datasets.video_csv import ClipConfig, VideoCSVDataset, VideoRecord, clip_keys, read_text_lines
from .data.decoding import DEFAULT_FRAME_TEMPLATE, count_frame_files
from .errors import ConfigError, VidnlUserError

logger = logging.getLogger(__name__)

# Extensions taken as videos inside a folder (case-insensitive); any file named explicitly is tried.
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".3gp",
                    ".ts", ".mts", ".ogv", ".vob")
# Extensions of list files (one video per line, the first column the path, like the dataset CSVs).
LIST_EXTENSIONS = (".csv", ".txt")
ENSEMBLE_METHODS = ("sum_softmax", "mean_logits")


class PredictInputError(VidnlUserError, ValueError):
    """An input of a prediction (video list, class names, top-k) is missing or malformed; the
    message names it and what was expected."""


# ------------------------------------------------------------------------------------------------
# Settings from the config (the builder part)
# ------------------------------------------------------------------------------------------------
def test_clip_config(cfg) -> ClipConfig:
    """The test-view settings of ``VideoCSVDataset.from_cfg(cfg, split)`` (not single-view):
    the same mapping of DATA.* / TEST.* keys, so predict cuts the views the test cuts."""
    d = cfg.DATA
    return ClipConfig(
        num_frames=d.NUM_FRAMES, sampling_rate=d.SAMPLING_RATE, short_video_mode=d.SHORT_VIDEO_MODE,
        jitter_scales=list(d.TRAIN_JITTER_SCALES), train_crop_size=d.TRAIN_CROP_SIZE,
        test_crop_size=d.TEST_CROP_SIZE, num_ensemble_views=cfg.TEST.NUM_ENSEMBLE_VIEWS,
        num_spatial_crops=cfg.TEST.NUM_SPATIAL_CROPS, random_flip=d.RANDOM_FLIP, mean=list(d.MEAN),
        std=list(d.STD), backend=d.DECODING_BACKEND, decoding_threads=d.DECODING_THREADS,
        num_retries=cfg.DATA_LOADER.NUM_RETRIES, seed=cfg.RNG_SEED, source=d.SOURCE,
        frame_template=d.FRAME_TEMPLATE, modality=d.MODALITY, flow_dir=d.FLOW_DIR, flow_format=d.FLOW_FORMAT,
        flow_scale=d.FLOW_SCALE, **clip_keys(cfg),
    )


test_clip_config.__test__ = False  # not a pytest test despite the name


def check_predictable(cfg) -> None:
    """ConfigError unless ``cfg`` describes a video classifier whose test views predict can cut."""
    from .data.datasets import DATASET_REGISTRY

    if cfg.MODEL.TASK == "reid":
        raise ConfigError("MODEL.TASK is 'reid': a re-ID model gives embeddings, not classes; use "
                          "tools/extract_features.py for it")
    name = cfg.TEST.DATASET
    if name in DATASET_REGISTRY and not issubclass(DATASET_REGISTRY[name], VideoCSVDataset):
        raise ConfigError(f"TEST.DATASET is {name!r}, an image dataset; predict scores videos with the views of the "
                          f"video datasets (csv, ucf101, kinetics)")
    if cfg.DATA.MODALITY == "flow":
        raise ConfigError("DATA.MODALITY is 'flow': this model reads optical flow, not video pixels; predict "
                          "scores RGB videos (rgb, or rgb_flow whose test input is RGB)")


# ------------------------------------------------------------------------------------------------
# Class names
# ------------------------------------------------------------------------------------------------
def read_class_names(path: str) -> list[str]:
    """Class names of a text file, read as every class list is (``vidnl.data.class_names``:
    UTF-8, a byte-order mark dropped; lines ``index name`` (0..N-1 or 1..N, any order) or one
    name per line). Raises PredictInputError naming the file."""
    return _class_names.read_class_names(path, PredictInputError)


def _paths(items, what: str) -> list[str]:
    """One path (a string or os.PathLike) as a list of one, a sequence of paths as a list of
    strings; TypeError for anything else (a string is one path, never its letters)."""
    if isinstance(items, (str, os.PathLike)):
        return [os.fspath(items)]
    if isinstance(items, (bytes, dict)) or not isinstance(items, Iterable):
        raise TypeError(f"{what}: expected a path or a list of paths, got {items!r}")
    out = list(items)
    bad = [p for p in out if not isinstance(p, (str, os.PathLike))]
    if bad:
        raise TypeError(f"{what}: expected a path or a list of paths, got {bad[0]!r} ({type(bad[0]).__name__}) "
                        f"among them")
    return [os.fspath(p) for p in out]


def _check_class_names(class_names) -> list[str] | None:
    if class_names is None:
        return None
    if isinstance(class_names, (str, os.PathLike)):
        raise TypeError(f"class_names: expected a list of names, got {class_names!r}; to read them from a file "
                        f"pass classes_file= (or read_class_names(path))")
    return [str(n) for n in class_names]


def resolve_class_names(num_classes: int, classes_file: str | None = None,
                        data_dir: str | None = None) -> tuple[list[str] | None, str]:
    """(names, where they came from): ``classes_file`` if given (it must be readable and list
    ``num_classes`` names, else PredictInputError), else ``data_dir/classes.txt`` if it exists
    and fits (a malformed one or one with another count is a warning, as in the test), else
    (None, "indices")."""
    if classes_file:
        names = read_class_names(classes_file)
        if len(names) != num_classes:
            raise PredictInputError(f"{classes_file} lists {len(names)} class names but the model has {num_classes} "
                                    f"classes (MODEL.NUM_CLASSES)")
        return names, classes_file
    path = os.path.join(data_dir, "classes.txt") if data_dir else ""
    if not (path and os.path.isfile(path)):
        return None, "indices"
    try:
        names = read_class_names(path)
    except PredictInputError as e:
        logger.warning("class names not read (%s); classes are named by their index (give them with --classes)", e)
        return None, "indices"
    if len(names) != num_classes:
        logger.warning("%s lists %d classes but the model has %d (MODEL.NUM_CLASSES); classes are named by their "
                       "index (give the names with --classes)", path, len(names), num_classes)
        return None, "indices"
    return names, path


# ------------------------------------------------------------------------------------------------
# Inputs
# ------------------------------------------------------------------------------------------------
def _is_video_name(name: str) -> bool:
    return name.lower().endswith(VIDEO_EXTENSIONS)


def videos_in_folder(folder: str, frame_template: str = DEFAULT_FRAME_TEMPLATE) -> list[str]:
    """The videos under ``folder`` (by extension, recursively, sorted); a folder holding no video
    but frames named ``frame_template`` (numbered from 1) is itself one video of frames."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        found += [os.path.join(root, f) for f in sorted(files) if _is_video_name(f)]
    if not found and count_frame_files(folder, frame_template) > 0:
        return [folder]
    if not found:
        raise PredictInputError(f"{folder}: no videos in this folder (extensions {', '.join(VIDEO_EXTENSIONS)}) "
                                f"and no frames named {frame_template.format(1)!r}")
    return found


def videos_in_list(path: str, path_prefix: str = "", separator: str = " ") -> list[str]:
    """The videos of a list file: one per line, the path first, optionally followed by a label
    (``path label`` as the dataset CSVs; the label is ignored). Relative paths are joined to
    ``path_prefix``, or to the list's folder when it is empty (as the datasets do)."""
    base = path_prefix or os.path.dirname(os.path.abspath(path))
    try:
        lines = read_text_lines(path)
    except VidnlUserError as e:
        raise PredictInputError(str(e)) from None
    out = []
    for line in lines:
        line = line.strip()
        if not line:
            continue
        parts = line.rsplit(separator, 1) if separator != " " else line.rsplit(None, 1)
        video = parts[0].strip() if len(parts) == 2 and re.fullmatch(r"-?\d+", parts[1].strip()) else line
        out.append(video if os.path.isabs(video) else os.path.join(base, video))
    if not out:
        raise PredictInputError(f"{path}: no videos listed (expected one 'path [label]' per line)")
    return out


def expand_inputs(items: Iterable[str], *, path_prefix: str = "", separator: str = " ",
                  frame_template: str = DEFAULT_FRAME_TEMPLATE) -> list[str]:
    """Video paths from files, folders (the videos inside) and list files (``.csv`` / ``.txt``,
    see :func:`videos_in_list`). A named path that does not exist is a PredictInputError; a path
    listed inside a list file is returned as it is (predict reports it if it cannot be read)."""
    out = []
    for item in _paths(items, "inputs"):
        if os.path.isdir(item):
            out += videos_in_folder(item, frame_template)
        elif os.path.isfile(item) and item.lower().endswith(LIST_EXTENSIONS):
            out += videos_in_list(item, path_prefix, separator)
        elif os.path.exists(item):
            out.append(item)
        else:
            raise PredictInputError(f"input not found: {item} (expected a video file, a folder of videos or a "
                                    f"{'/'.join(LIST_EXTENSIONS)} list of videos)")
    return out


# ------------------------------------------------------------------------------------------------
# Prediction
# ------------------------------------------------------------------------------------------------
def aggregate_views(logits: torch.Tensor, method: str) -> torch.Tensor:
    """V×K view logits -> K video scores: the sum of the views' softmax ("sum_softmax") or the
    mean of their logits ("mean_logits"), as the multi-view test aggregates them."""
    if method == "sum_softmax":
        return F.softmax(logits, dim=1).sum(0)
    if method == "mean_logits":
        return logits.mean(0)
    raise ValueError(f"ensemble method must be one of {ENSEMBLE_METHODS}, got {method!r}")


def _probabilities(scores: torch.Tensor, method: str, views: int) -> torch.Tensor:
    """K scores -> K probabilities: the mean of the views' softmax, or the softmax of the mean logits."""
    return scores / views if method == "sum_softmax" else F.softmax(scores, dim=0)


def _first(items):
    return items[0]


@torch.no_grad()
def predict(videos: Sequence[str], model: nn.Module, *, cfg=None, clip: ClipConfig | None = None,
            ensemble: str = "sum_softmax", batch_size: int = 16, class_names: Sequence[str] | None = None,
            topk: int = 5, device: torch.device | str | None = None, num_workers: int = 0,
            on_result=None, compile_backend: str | None = None) -> list[dict]:
    """Score each video of ``videos`` (file paths, or folders of frames) with ``model``.

    The test views come from ``cfg`` (DATA.*, TEST.NUM_ENSEMBLE_VIEWS, TEST.NUM_SPATIAL_CROPS,
    TEST.ENSEMBLE_METHOD, TEST.BATCH_SIZE), or explicitly from ``clip`` (a
    :class:`ClipConfig`: frames, sampling rate, test crop size, views, crops, mean/std, decoder),
    ``ensemble`` and ``batch_size`` (clips per forward pass). Each video is decoded once, its
    V = views × crops clips (V×C×T×crop×crop after normalisation) are scored and aggregated.

    Returns one dict per video, in order: ``path``; ``scores`` (K floats, the test's per-video
    scores); ``ensemble``; ``views`` (V); ``topk``: the min(topk, K) best classes as
    ``{"index", "name", "score", "prob"}`` (``name`` from ``class_names``, else the index as
    text; ``prob`` the mean of the views' softmax, or the softmax of the mean logits); ``notes``
    (e.g. a truncated file). A video that cannot be read gives ``{"path", "error"}`` instead.
    ``on_result(result)`` is called as each video is done. ``compile_backend`` (e.g. "inductor";
    from TEST.COMPILE / TEST.COMPILE_BACKEND with ``cfg``) runs the forward passes through one
    ``torch.compile`` graph (:mod:`vidnl.engine.inference`).
    """
    from .engine.inference import compile_for_inference, inference_compile_backend

    videos = _paths(videos, "videos")
    class_names = _check_class_names(class_names)
    if (cfg is None) == (clip is None):
        raise ValueError("give either cfg or clip (the test-view settings), not both or neither")
    if cfg is not None:
        check_predictable(cfg)
        clip, ensemble, batch_size = test_clip_config(cfg), cfg.TEST.ENSEMBLE_METHOD, cfg.TEST.BATCH_SIZE
        compile_backend = inference_compile_backend(cfg)
    if clip.modality == "flow":
        raise ValueError("clip.modality 'flow': predict scores RGB videos")
    if ensemble not in ENSEMBLE_METHODS:
        raise ValueError(f"ensemble must be one of {ENSEMBLE_METHODS}, got {ensemble!r}")
    if int(topk) < 1:
        raise PredictInputError(f"top-k must be at least 1, got {topk}")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model = compile_for_inference(model.to(device).eval(), batch_size, compile_backend)
    dataset = VideoCSVDataset([VideoRecord(str(p), 0) for p in videos], "test", clip)
    normalize = dataset.normalizer
    loader = torch.utils.data.DataLoader(_SafeItems(dataset), batch_size=1, shuffle=False,
                                         num_workers=num_workers, collate_fn=_first)
    results = []
    tick = time.time()
    for path, item in zip(dataset.records, loader):
        if item["inputs"] is None:
            res = {"path": path.path, "error": item["failures"][0][1] if item["failures"] else "cannot decode"}
        else:
            inputs = item["inputs"]  # V×T×H×W×C uint8 (V×C×T×H×W float with DATA.SPATIAL_ROUNDING pyslowfast)
            logits = torch.cat([model(normalize(inputs[i:i + batch_size], device)).float().cpu()
                                for i in range(0, inputs.shape[0], batch_size)])  # V×K
            scores = aggregate_views(logits, ensemble)
            if class_names is not None and len(class_names) != scores.numel():
                raise PredictInputError(f"{len(class_names)} class names given but the model scores "
                                        f"{scores.numel()} classes")
            probs = _probabilities(scores, ensemble, inputs.shape[0])
            if not (torch.isfinite(scores).all() and torch.isfinite(probs).all()):
                bad = int((~torch.isfinite(logits)).any(1).sum())
                res = {"path": path.path, "error": f"not scored: the model's scores are not finite (NaN or inf in "
                                                   f"the logits of {bad} of {logits.shape[0]} views)"}
            else:
                k = min(int(topk), scores.numel())
                best = torch.topk(scores, k).indices.tolist()
                res = {"path": path.path, "scores": [float(s) for s in scores], "ensemble": ensemble,
                       "views": int(inputs.shape[0]),
                       "topk": [{"index": i, "name": class_names[i] if class_names is not None else str(i),
                                 "score": float(scores[i]), "prob": float(probs[i])} for i in best],
                       "notes": [reason for _, reason in item.get("notes", ())]}
        res["time_s"] = round(time.time() - tick, 4)  # decoding (or waiting for it) and scoring
        tick = time.time()
        results.append(res)
        if on_result is not None:
            on_result(res)
    return results


class _SafeItems(torch.utils.data.Dataset):
    """The test items of ``dataset``; an exception the dataset does not catch itself (it catches
    decoding errors) becomes a failed item too, so one bad file never stops the others."""

    def __init__(self, dataset: VideoCSVDataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        try:
            return self.dataset[index]
        except Exception as e:
            return {"inputs": None, "failures": [(self.dataset.records[index].path, f"{type(e).__name__}: {e}")]}


def build_predictor(cfg, weights: str, device: torch.device | str | None = None) -> nn.Module:
    """The model of ``cfg`` with the weights of the file ``weights`` (any format
    MODEL.WEIGHTS_FORMAT reads), in eval mode on ``device`` (default: as NUM_GPUS says)."""
    from .models.weights import CheckpointError, load_weights
    from .engine.setup import get_device
    from .models import build_model

    check_predictable(cfg)
    weights = os.fspath(weights)
    if os.path.isdir(weights):
        raise CheckpointError(f"weights: {weights} is a folder; expected a checkpoint file (.pyth, .pt, .pkl, ...)")
    if not os.path.isfile(weights):
        raise CheckpointError(f"weights file not found: {weights}")
    model = build_model(cfg)
    load_weights(model, weights, fmt=cfg.MODEL.WEIGHTS_FORMAT, inflate=cfg.MODEL.INFLATE)
    return model.to(torch.device(device) if device is not None else get_device(cfg)).eval()


def window_settings(cfg) -> dict:
    """The keyword arguments of ``vidnl.long_video.predict_timeline`` / ``iter_windows`` that
    ``cfg`` sets: a window is one test view (DATA.NUM_FRAMES frames DATA.SAMPLING_RATE apart, the
    centre crop of DATA.TEST_CROP_SIZE, decoded at the test scale) scored in forward passes of
    TEST.BATCH_SIZE. Windows follow vidnl's protocol: ConfigError for DATA.TEMPORAL_SAMPLING
    "pyslowfast" (its clips are measured in seconds, DATA.TARGET_FPS; windows slide over the
    file's frames) and for DATA.SPATIAL_ROUNDING "pyslowfast" (its test views resize normalised
    float frames; windows crop each uint8 frame as it is decoded)."""
    check_predictable(cfg)
    d = cfg.DATA
    if getattr(d, "TEMPORAL_SAMPLING", "vidnl") != "vidnl":
        raise ConfigError(f"DATA.TEMPORAL_SAMPLING is {d.TEMPORAL_SAMPLING!r}: sliding windows (--window-stride) "
                          f"take DATA.NUM_FRAMES frames DATA.SAMPLING_RATE apart in the file's own frames; set "
                          f"DATA.TEMPORAL_SAMPLING vidnl DATA.TARGET_FPS 0 DATA.SPATIAL_ROUNDING vidnl to score "
                          f"windows")
    if getattr(d, "SPATIAL_ROUNDING", "vidnl") != "vidnl":
        raise ConfigError(f"DATA.SPATIAL_ROUNDING is {d.SPATIAL_ROUNDING!r}: sliding windows (--window-stride) crop "
                          f"each decoded uint8 frame with vidnl's rounding (PySlowFast's resizes normalised float "
                          f"clips); set DATA.SPATIAL_ROUNDING vidnl to score windows")
    rounding = getattr(d, "SPATIAL_ROUNDING", "vidnl")
    return {"num_frames": d.NUM_FRAMES, "sampling_rate": d.SAMPLING_RATE, "crop_size": d.TEST_CROP_SIZE,
            # the test decodes at the test scale, or at full size with PySlowFast's rounding
            "short_side": None if rounding == "pyslowfast" else d.TEST_CROP_SIZE,
            "mean": list(d.MEAN), "std": list(d.STD), "batch_size": cfg.TEST.BATCH_SIZE,
            "backend": d.DECODING_BACKEND, "threads": d.DECODING_THREADS,
            "short_video_mode": d.SHORT_VIDEO_MODE, "spatial_rounding": rounding}


def predict_from_config(cfg, weights: str, videos: Sequence[str], *, classes_file: str | None = None,
                        class_names: Sequence[str] | None = None, topk: int = 5,
                        device: torch.device | str | None = None, on_result=None) -> list[dict]:
    """Build the model of ``cfg``, load ``weights`` and :func:`predict` ``videos`` with the test
    views of ``cfg``. Class names: ``class_names``, else ``classes_file``, else
    DATA.PATH_TO_DATA_DIR/classes.txt when it exists, else the indices."""
    check_predictable(cfg)
    videos = _paths(videos, "videos")
    class_names = _check_class_names(class_names)
    if class_names is None:
        class_names, _ = resolve_class_names(cfg.MODEL.NUM_CLASSES, classes_file, cfg.DATA.PATH_TO_DATA_DIR)
    model = build_predictor(cfg, weights, device)
    return predict(videos, model, cfg=cfg, class_names=class_names, topk=topk,
                   num_workers=cfg.DATA_LOADER.NUM_WORKERS, on_result=on_result)


__all__ = ["predict", "predict_from_config", "build_predictor", "window_settings", "aggregate_views", "expand_inputs",
           "read_class_names", "resolve_class_names", "test_clip_config", "PredictInputError", "VIDEO_EXTENSIONS"]


class _CallablePredictModule(types.ModuleType):
    """``vidnl.predict`` names both this module and :func:`predict` (``import vidnl;
    vidnl.predict(videos, model, cfg=cfg)``): once the module is imported, the package attribute
    is the module, so calling the module calls :func:`predict`."""

    def __call__(self, *args, **kwargs) -> list[dict]:
        return predict(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePredictModule
