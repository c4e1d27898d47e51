"""The generic CSV video dataset (PySlowFast format).

``{split}.csv`` in the data folder has one video per line: ``path label`` (separator
configurable; the label is the last field so paths may contain the separator). Relative paths
are joined to ``path_prefix`` (or to the CSV's folder when no prefix is given).

Items:
* ``mode="train"``: one random clip, T×H×W×C uint8 raw pixels (normalised on the device by
  ``dataset.normalizer``, see :mod:`vidnl.data.model_input`). If the video cannot be decoded another random
  video is tried (up to ``num_retries`` times); every failure travels with the item in
  ``failures`` so the trainer can count and report them, also from worker processes.
* ``mode="test"``: all K×S views of one video, (K·S)×T×H×W×C uint8, cut from a single decode. A video
  that cannot be decoded gives ``inputs=None`` and its failure, and is excluded from metrics.

Temporal sampling and spatial rounding follow DATA.TEMPORAL_SAMPLING / DATA.TARGET_FPS and
DATA.SPATIAL_ROUNDING: vidnl's own protocol by default, PySlowFast's with "pyslowfast" (see
:mod:`vidnl.data.sampling`, :mod:`vidnl.data.transforms` and docs/pretrained.md). PySlowFast's
sampling needs the video's frame rate, so it reads video files only (a frame folder is a
DatasetError), and its test views are cut from the full-size decode (PySlowFast resizes after
decoding), not from a decode at the test scale. With DATA.SPATIAL_ROUNDING "pyslowfast" the items
are model-ready float32 (train C×T×h×w, test (K·S)×C×T×h×w, like flow items): PySlowFast
normalises the frames first and resizes the float frames, which uint8 pixels cannot reproduce
(half a grey level of rounding).

A listed path may be a folder of frames (``source="frames"``, see ``decoding.read_frames``).
With ``modality`` "flow" or "rgb_flow" the items hold optical flow clips read from
``flow_dir`` (see ``datasets/flow.py``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from ...errors import DatasetError, decode_utf8
from .. import sampling, transforms
from ..decoding import DecodeError, read_frames, stream_timing
from ..model_input import InputNormalizer


@dataclass
class VideoRecord:
    path: str
    label: int


def decode_with_retries(records: Sequence[VideoRecord], index: int, num_retries: int, seed: int, epoch: int,
                        attempt, give_up: str):
    """The retry policy of every training item, written once: ``attempt(index, rng)`` decodes and
    transforms video ``index`` with ``rng`` = default_rng([seed, epoch, index, k]) for the k-th try;
    a ``DecodeError`` is recorded as ``(listed path, reason)`` and another video drawn with that
    rng is tried, up to ``num_retries`` more times (so the clip depends only on (seed, epoch,
    index, k): reproducible with any number of workers and after resuming). Returns
    ``(attempt's result, index of the video used, failures)``; after ``num_retries + 1`` failures
    in a row raises RuntimeError: "<n> videos in a row ...; the last: <path> (<reason>). <give_up>"."""
    failures = []
    for k in range(num_retries + 1):
        rng = np.random.default_rng([seed, epoch, index, k])
        path = records[index].path
        try:
            return attempt(index, rng), index, failures
        except DecodeError as e:
            failures.append((path, f"{e.path}: {e.reason}" if e.path and e.path != path else e.reason))
            index = int(rng.integers(0, len(records)))
    raise RuntimeError(f"{num_retries + 1} videos in a row could not be decoded; the last: "
                       f"{failures[-1][0]} ({failures[-1][1]}). {give_up}")


def read_text_lines(path: str) -> list[str]:
    """The lines of a UTF-8 text file (a byte-order mark is dropped); any other encoding is a
    DatasetError naming the file and the line of the first byte that is not UTF-8."""
    with open(path, "rb") as f:
        return decode_utf8(f.read(), path, DatasetError).splitlines()


def read_csv(csv_path: str, path_prefix: str = "", separator: str = " ",
             num_classes: int | None = None) -> list[VideoRecord]:
    """Parse a ``path label`` file (UTF-8, BOM allowed). Raises DatasetError naming file and line
    for malformed lines and for labels outside ``[0, num_classes)``."""
    if not os.path.isfile(csv_path):
        raise DatasetError(f"dataset file not found: {csv_path} (check DATA.PATH_TO_DATA_DIR)")
    base = path_prefix or os.path.dirname(os.path.abspath(csv_path))
    records = []
    for lineno, line in enumerate(read_text_lines(csv_path), 1):
        line = line.strip()
        if not line:
            continue
        parts = line.rsplit(separator, 1) if separator != " " else line.rsplit(None, 1)
        if len(parts) != 2:
            raise DatasetError(f"{csv_path}:{lineno}: expected 'path{separator}label', got {line!r}")
        path, label = parts[0].strip(), parts[1].strip()
        try:
            label_int = int(label)
        except ValueError:
            raise DatasetError(f"{csv_path}:{lineno}: label must be an integer, got {label!r}") from None
        if label_int < 0:
            raise DatasetError(f"{csv_path}:{lineno}: label must be >= 0, got {label_int}")
        if num_classes is not None and label_int >= num_classes:
            raise DatasetError(f"{csv_path}:{lineno}: label {label_int} is out of range for MODEL.NUM_CLASSES "
                               f"{num_classes} (labels must be 0..{num_classes - 1})")
        records.append(VideoRecord(path if os.path.isabs(path) else os.path.join(base, path), label_int))
    if not records:
        raise DatasetError(f"{csv_path}: no videos listed")
    return records


@dataclass
class ClipConfig:
    """Plain sampling/transform settings of a dataset (built from the config by ``from_cfg``)."""

    num_frames: int = 8
    sampling_rate: int = 8
    short_video_mode: str = "pad"
    jitter_scales: Sequence[int] = (256, 320)
    train_crop_size: int = 224
    test_crop_size: int = 256
    num_ensemble_views: int = 10
    num_spatial_crops: int = 3
    random_flip: bool = True
    mean: Sequence[float] = (0.45, 0.45, 0.45)
    std: Sequence[float] = (0.225, 0.225, 0.225)
    backend: str = "auto"
    decoding_threads: int = 1
    num_retries: int = 10
    seed: int = 0
    source: str = "video"
    frame_template: str = "img_{:05d}.jpg"
    modality: str = "rgb"
    flow_dir: str = ""
    flow_format: str = "jpg"
    flow_scale: float = 20.0
    video_root: str = ""  # folder relative paths were resolved against (flow folders mirror it)
    temporal_sampling: str = "vidnl"  # DATA.TEMPORAL_SAMPLING: "vidnl" or "pyslowfast"
    target_fps: float = 0.0  # DATA.TARGET_FPS (seconds per clip with "pyslowfast")
    spatial_rounding: str = "vidnl"  # DATA.SPATIAL_ROUNDING: "vidnl" or "pyslowfast"


def clip_keys(cfg) -> dict:
    """The ClipConfig fields of the protocol keys (shared by ``from_cfg`` and predict's
    ``test_clip_config``)."""
    d = cfg.DATA
    return {"temporal_sampling": d.TEMPORAL_SAMPLING, "target_fps": float(d.TARGET_FPS),
            "spatial_rounding": d.SPATIAL_ROUNDING}


def pyslowfast_timing(path: str, source: str) -> sampling.StreamTiming:
    """The frame rate and timestamps PySlowFast's sampling needs (``decoding.stream_timing``); a
    folder of frames has none: DatasetError naming it."""
    if source == "frames" or os.path.isdir(path):
        raise DatasetError(f"{path}: a folder of frames has no frame rate, which DATA.TEMPORAL_SAMPLING "
                           f"'pyslowfast' (DATA.TARGET_FPS) needs; list the video files, or set "
                           f"DATA.TEMPORAL_SAMPLING vidnl and DATA.TARGET_FPS 0")
    return stream_timing(path)


class VideoCSVDataset(Dataset):
    def __init__(self, records: Sequence[VideoRecord], mode: str, clip: ClipConfig):
        if mode not in ("train", "test"):
            raise ValueError(f"mode must be 'train' or 'test', got {mode!r}")
        self.records, self.mode, self.clip = list(records), mode, clip
        self.epoch = 0

    @classmethod
    def from_cfg(cls, cfg, split: str, single_view: bool = False) -> "VideoCSVDataset":
        """Dataset of ``{split}.csv`` in DATA.PATH_TO_DATA_DIR: training clips for "train",
        otherwise all TEST.NUM_ENSEMBLE_VIEWS × TEST.NUM_SPATIAL_CROPS views per video, or one
        centred clip and crop with ``single_view`` (PySlowFast-style validation)."""
        d = cfg.DATA
        clip = ClipConfig(
            num_frames=d.NUM_FRAMES, sampling_rate=d.SAMPLING_RATE, short_video_mode=d.SHORT_VIDEO_MODE,
            jitter_scales=list(d.TRAIN_JITTER_SCALES), train_crop_size=d.TRAIN_CROP_SIZE,
            test_crop_size=d.TEST_CROP_SIZE,
            num_ensemble_views=1 if single_view else cfg.TEST.NUM_ENSEMBLE_VIEWS,
            num_spatial_crops=1 if single_view else cfg.TEST.NUM_SPATIAL_CROPS,
            random_flip=d.RANDOM_FLIP, mean=list(d.MEAN), std=list(d.STD), backend=d.DECODING_BACKEND,
            decoding_threads=d.DECODING_THREADS, num_retries=cfg.DATA_LOADER.NUM_RETRIES,
            seed=cfg.RNG_SEED, source=d.SOURCE, frame_template=d.FRAME_TEMPLATE, modality=d.MODALITY,
            flow_dir=d.FLOW_DIR, flow_format=d.FLOW_FORMAT, flow_scale=d.FLOW_SCALE, **clip_keys(cfg),
        )
        csv_path = os.path.join(d.PATH_TO_DATA_DIR, f"{split}.csv")
        clip.video_root = d.PATH_PREFIX or os.path.dirname(os.path.abspath(csv_path))
        mode = "train" if split == "train" else "test"
        return cls(read_csv(csv_path, d.PATH_PREFIX, d.PATH_LABEL_SEPARATOR, cfg.MODEL.NUM_CLASSES), mode, clip)

    @property
    def normalizer(self) -> InputNormalizer:
        """Turns this dataset's batches into model inputs (DATA.MEAN / DATA.STD)."""
        return InputNormalizer(self.clip.mean, self.clip.std)

    @property
    def views_per_video(self) -> int:
        return 1 if self.mode == "train" else self.clip.num_ensemble_views * self.clip.num_spatial_crops

    def set_epoch(self, epoch: int) -> None:
        """Training clips depend on (seed, epoch, index, attempt) only: reproducible with any
        number of workers and after resuming."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.records)

    def labels(self) -> list[int]:
        return [r.label for r in self.records]

    # -- training ---------------------------------------------------------------------------
    def _train_item(self, index: int) -> dict:
        c = self.clip

        def attempt(i: int, rng: np.random.Generator) -> dict:
            record = self.records[i]
            if c.temporal_sampling == "pyslowfast":
                timing = pyslowfast_timing(record.path, c.source)
                span = sampling.pyslowfast_clip_size(c.num_frames, c.sampling_rate, timing.fps, c.target_fps)

                def choose(n):
                    return sampling.pyslowfast_train_clip_indices(n, timing, c.num_frames, c.sampling_rate,
                                                                  c.target_fps, rng)
            else:
                span = sampling.clip_span(c.num_frames, c.sampling_rate)

                def choose(n):
                    return sampling.train_clip_indices(n, c.num_frames, c.sampling_rate, rng, c.short_video_mode)
            decoded = read_frames(record.path, choose, c.backend, c.decoding_threads, source=c.source,
                                  frame_template=c.frame_template)
            notes = [(record.path, decoded.truncation_note)] if decoded.truncation_note else []
            if decoded.num_frames < span:
                notes.append((record.path, f"{decoded.num_frames} frames, shorter than one clip ({span:g} frames): "
                                           f"{'padded with its last frame' if c.short_video_mode == 'pad' else 'looped'}"))
            if c.spatial_rounding == "pyslowfast":  # PySlowFast resizes normalised float frames
                clip = transforms.pyslowfast_train_transform(
                    transforms.frames_to_tensor(decoded.frames), jitter_scales=c.jitter_scales,
                    crop_size=c.train_crop_size, flip=c.random_flip, rng=rng, mean=c.mean, std=c.std,
                )  # C×T×h×w float32, model-ready
            else:
                clip = transforms.train_transform(
                    transforms.frames_to_tensor(decoded.frames), jitter_scales=c.jitter_scales,
                    crop_size=c.train_crop_size, flip=c.random_flip, rng=rng, rounding=c.spatial_rounding,
                )  # T×h×w×C uint8
            return {"inputs": clip, "label": record.label, "notes": notes}

        item, index, failures = decode_with_retries(self.records, index, c.num_retries, c.seed, self.epoch, attempt,
                                                    "Check the dataset with its CSV.")
        return {**item, "index": index, "failures": failures}

    # -- testing ----------------------------------------------------------------------------
    def _test_item(self, index: int) -> dict:
        c = self.clip
        record = self.records[index]
        k = c.num_ensemble_views
        try:
            if c.temporal_sampling == "pyslowfast":
                timing = pyslowfast_timing(record.path, c.source)

                def choose(n):
                    return sampling.pyslowfast_test_clip_indices(n, timing, c.num_frames, c.sampling_rate,
                                                                 c.target_fps, k).reshape(-1)
            else:
                def choose(n):
                    return sampling.test_clip_indices(n, c.num_frames, c.sampling_rate, k, c.short_video_mode).reshape(-1)
            decoded = read_frames(
                record.path, choose, c.backend, c.decoding_threads, source=c.source, frame_template=c.frame_template,
                # decode at the test scale (test_views' resize is then a no-op); PySlowFast resizes the full-size frames
                short_side=None if c.spatial_rounding == "pyslowfast" else c.test_crop_size,
            )
        except DecodeError as e:
            return {"inputs": None, "label": record.label, "index": index, "failures": [(record.path, e.reason)]}
        frames = transforms.frames_to_tensor(decoded.frames)  # (K·T)×C×H×W, one decode
        t = c.num_frames
        if c.spatial_rounding == "pyslowfast":
            # PySlowFast normalises, then resizes the float frames: one clip at a time (memory)
            out = torch.stack([v for i in range(k) for v in transforms.pyslowfast_test_views(
                frames[i * t:(i + 1) * t], crop_size=c.test_crop_size, num_crops=c.num_spatial_crops,
                mean=c.mean, std=c.std)])  # (K·S)×C×T×h×w float32, model-ready
        else:
            views = transforms.test_views(frames, crop_size=c.test_crop_size, num_crops=c.num_spatial_crops,
                                          rounding=c.spatial_rounding)  # S × (K·T)×h×w×C
            out = torch.stack([v[i * t:(i + 1) * t] for i in range(k) for v in views])  # (K·S)×T×h×w×C uint8
        notes = [(record.path, decoded.truncation_note)] if decoded.truncation_note else []
        return {"inputs": out, "label": record.label, "index": index, "failures": [], "notes": notes}

    def __getitem__(self, index: int) -> dict:
        # rgb_flow test items are plain RGB: MARS predicts from RGB alone, test videos need no flow
        if self.clip.modality == "flow" or (self.clip.modality == "rgb_flow" and self.mode == "train"):
            from .flow import flow_item

            return flow_item(self, index)
        return self._train_item(index) if self.mode == "train" else self._test_item(index)

