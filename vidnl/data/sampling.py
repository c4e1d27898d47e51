"""Temporal sampling: which frame indices form a clip.

vidnl's sampling (DATA.TEMPORAL_SAMPLING "vidnl", the default): a clip is ``num_frames`` frames
``sampling_rate`` apart, spanning ``(num_frames - 1) * sampling_rate + 1`` decoded frames; test
clips are spread from the first to the last frame. Indices past the last frame are padded with
the last frame (``"pad"``) or wrap around to the start (``"loop"``).

PySlowFast's sampling ("pyslowfast", with DATA.TARGET_FPS): the ``pyslowfast_*`` functions below.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

SHORT_VIDEO_MODES = ("pad", "loop")


def clip_span(num_frames: int, sampling_rate: int) -> int:
    return (num_frames - 1) * sampling_rate + 1


def fit_to_length(indices: np.ndarray, video_frames: int, mode: str = "pad") -> np.ndarray:
    """Map indices >= video_frames back into the video (pad with the last frame, or loop)."""
    if mode == "pad":
        return np.clip(indices, 0, video_frames - 1)
    if mode == "loop":
        return np.mod(indices, video_frames)
    raise ValueError(f"short video mode must be one of {SHORT_VIDEO_MODES}, got {mode!r}")


def train_clip_indices(video_frames: int, num_frames: int, sampling_rate: int,
                       rng: np.random.Generator, mode: str = "pad") -> np.ndarray:
    """One clip at a uniformly random start. -> (num_frames,) int64."""
    span = clip_span(num_frames, sampling_rate)
    start = int(rng.integers(0, max(0, video_frames - span) + 1))
    return fit_to_length(start + np.arange(num_frames) * sampling_rate, video_frames, mode)


def test_clip_starts(video_frames: int, num_frames: int, sampling_rate: int, num_clips: int) -> np.ndarray:
    """Starts of ``num_clips`` uniformly spaced clips. With more than one clip, the first starts
    at frame 0 and the last ends at the last frame, so together they cover the whole video; a
    single clip is centred."""
    slack = max(0, video_frames - clip_span(num_frames, sampling_rate))
    if num_clips == 1:
        return np.array([slack // 2], dtype=np.int64)
    return np.round(np.linspace(0, slack, num_clips)).astype(np.int64)


def test_clip_indices(video_frames: int, num_frames: int, sampling_rate: int, num_clips: int,
                      mode: str = "pad") -> np.ndarray:
    """-> (num_clips, num_frames) int64 frame indices of the test clips."""
    starts = test_clip_starts(video_frames, num_frames, sampling_rate, num_clips)
    idx = starts[:, None] + np.arange(num_frames)[None, :] * sampling_rate
    return fit_to_length(idx, video_frames, mode)


# ------------------------------------------------------------------------------------------------
# PySlowFast's temporal sampling (DATA.TEMPORAL_SAMPLING "pyslowfast"), written from its
# slowfast/datasets/decoder.py (get_start_end_idx, pyav_decode, pyav_decode_stream, decode and
# temporal_sampling of the model-zoo era, e.g. commit c22c7c9): a clip spans a fixed time,
# NUM_FRAMES·SAMPLING_RATE / TARGET_FPS seconds, i.e. ``size`` frames of the file at its own rate.
# ------------------------------------------------------------------------------------------------
TEMPORAL_SAMPLINGS = ("vidnl", "pyslowfast")


@dataclass(frozen=True)
class StreamTiming:
    """What PySlowFast's sampling needs from a video's header: ``fps``, the stream's average
    frame rate (None: not stated), and ``pts_per_frame``, its duration divided by its frame
    count in the stream's time base (None: the container states no duration or no count; then
    PySlowFast decodes the whole video and so does this sampling)."""

    fps: float | None
    pts_per_frame: float | None


def pyslowfast_clip_size(num_frames: int, sampling_rate: int, fps: float, target_fps: float) -> float:
    """Frames of the file one clip spans (float), in PySlowFast's order of operations:
    ``sampling_rate * num_frames / target_fps * fps`` (64 at 30 fps for 8×8, 53.3 at 25 fps)."""
    return sampling_rate * num_frames / target_fps * fps


def _floor_linspace(start: float, end: float, num: int, upper: int) -> np.ndarray:
    """floor(linspace(start, end, num)) clamped to [0, upper], in float32 as PySlowFast's
    ``torch.linspace`` computes it. -> (num,) int64."""
    idx = torch.linspace(float(start), float(end), num)
    return torch.clamp(idx, 0, upper).long().numpy()


def pyslowfast_clip(video_frames: int, size: float, start: float, num_frames: int,
                    pts_per_frame: float | None) -> np.ndarray:
    """The ``num_frames`` file frames of the clip starting at frame ``start`` (float) and
    spanning ``size`` frames, as PySlowFast's PyAV backend reads them -> (num_frames,) int64.

    With ``pts_per_frame`` (selective decoding; frame j taken to have the timestamp
    j·pts_per_frame): PySlowFast decodes the frames whose timestamps lie in
    [int(start·ppf), int((start + size − 1)·ppf)] plus the next one, and takes
    floor(linspace(0, size − 1, num_frames)) of that segment (clamped to its end). Without it
    (the whole video decoded): floor(linspace(start, start + size − 1, num_frames)) of the video,
    clamped to its last frame."""
    end = start + size - 1
    if pts_per_frame is None:
        return _floor_linspace(start, end, num_frames, video_frames - 1)
    ppf = float(pts_per_frame)
    start_pts, end_pts = int(start * ppf), int(end * ppf)
    first = max(0, math.ceil(start_pts / ppf))
    while first > 0 and (first - 1) * ppf >= start_pts:  # exact comparisons, as on integer timestamps
        first -= 1
    while first * ppf < start_pts:
        first += 1
    last = math.floor(end_pts / ppf)
    while (last + 1) * ppf <= end_pts:
        last += 1
    while last * ppf > end_pts:
        last -= 1
    seg_end = min(last + 1, video_frames - 1)  # the first frame past end_pts is kept too
    first = min(first, seg_end)
    return first + _floor_linspace(0.0, size - 1, num_frames, seg_end - first)


def pyslowfast_test_starts(video_frames: int, size: float, num_clips: int) -> np.ndarray:
    """PySlowFast's test clip starts (float frames): clip i starts at (N − size)·i / num_clips
    (so the last one starts at (K−1)/K of the free range; one clip starts at 0). -> (K,)."""
    delta = max(video_frames - size, 0)
    return np.array([delta * i / num_clips for i in range(num_clips)], dtype=np.float64)


def pyslowfast_test_clip_indices(video_frames: int, timing: StreamTiming, num_frames: int, sampling_rate: int,
                                 target_fps: float, num_clips: int) -> np.ndarray:
    """-> (num_clips, num_frames) int64: PySlowFast's test clips of a video with ``timing``."""
    size = pyslowfast_clip_size(num_frames, sampling_rate, timing.fps, target_fps)
    return np.stack([pyslowfast_clip(video_frames, size, s, num_frames, timing.pts_per_frame)
                     for s in pyslowfast_test_starts(video_frames, size, num_clips)])


def pyslowfast_train_clip_indices(video_frames: int, timing: StreamTiming, num_frames: int, sampling_rate: int,
                                  target_fps: float, rng: np.random.Generator) -> np.ndarray:
    """-> (num_frames,) int64: one training clip at a start uniform in [0, N − size] (float),
    as PySlowFast's ``random.uniform(0, delta)``."""
    size = pyslowfast_clip_size(num_frames, sampling_rate, timing.fps, target_fps)
    start = float(rng.uniform(0.0, max(video_frames - size, 0.0)))
    return pyslowfast_clip(video_frames, size, start, num_frames, timing.pts_per_frame)
