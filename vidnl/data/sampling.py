"""Temporal sampling: which frame indices form a clip.

A clip is ``num_frames`` frames ``sampling_rate`` apart, spanning
``(num_frames - 1) * sampling_rate + 1`` decoded frames. Indices past the last frame are
padded with the last frame (``"pad"``) or wrap around to the start (``"loop"``).
"""

from __future__ import annotations

import numpy as np

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
