"""Video decoding: decord first (fast random access), PyAV as fallback or by choice.

``read_frames(path, choose_indices, backend)`` opens a video once, asks ``choose_indices`` for
the frame indices it wants given the frame count, decodes each distinct frame once and returns
them in the requested order (repeats allowed). A test video's K×S views are all cut from one
such call ("decode once").
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

import numpy as np

BACKENDS = ("decord", "pyav")


class DecodeError(RuntimeError):
    """A video could not be read; the message names the file and every backend's reason."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = path, reason


@dataclass
class DecodedFrames:
    """frames: len(indices)×H×W×3 uint8; indices: the frame indices they came from;
    num_frames: frames in the video; backend: which decoder delivered them."""

    frames: np.ndarray
    indices: np.ndarray
    num_frames: int
    backend: str


def _decode_decord(path: str, choose_indices: Callable[[int], np.ndarray], threads: int) -> DecodedFrames:
    import decord

    vr = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=threads)
    n = len(vr)
    if n <= 0:
        raise RuntimeError("decord reports 0 frames")
    idx = np.asarray(choose_indices(n), dtype=np.int64)
    unique, inverse = np.unique(idx, return_inverse=True)
    frames = vr.get_batch(unique.tolist()).asnumpy()
    if frames.shape[0] != len(unique):
        raise RuntimeError(f"decord returned {frames.shape[0]} frames, expected {len(unique)}")
    return DecodedFrames(frames[inverse], idx, n, "decord")


def _pyav_frame_count(path: str, threads: int) -> int:
    import av

    with av.open(path) as container:
        stream = container.streams.video[0]
        if stream.frames and stream.frames > 0:
            return int(stream.frames)
        return sum(1 for _ in container.decode(video=0))


def _decode_pyav(path: str, choose_indices: Callable[[int], np.ndarray], threads: int) -> DecodedFrames:
    import av

    n = _pyav_frame_count(path, threads)
    if n <= 0:
        raise RuntimeError("PyAV finds no video frames")
    idx = np.asarray(choose_indices(n), dtype=np.int64)
    wanted = set(idx.tolist())
    last = int(idx.max())
    got: dict[int, np.ndarray] = {}
    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        if threads:
            stream.codec_context.thread_count = threads
        for i, frame in enumerate(container.decode(stream)):
            if i in wanted:
                got[i] = frame.to_ndarray(format="rgb24")
            if i >= last:
                break
    missing = wanted - got.keys()
    if missing:
        # the header over-counted: re-map the missing tail onto the last decoded frame
        if not got:
            raise RuntimeError("PyAV decoded no frames")
        last_ok = max(got)
        for m in missing:
            got[m] = got[last_ok]
    return DecodedFrames(np.stack([got[i] for i in idx.tolist()]), idx, n, "pyav")


_DECODERS = {"decord": _decode_decord, "pyav": _decode_pyav}


def read_frames(
    path: str,
    choose_indices: Callable[[int], np.ndarray],
    backend: str = "decord",
    threads: int = 1,
) -> DecodedFrames:
    """Decode the frames ``choose_indices(num_frames)`` of ``path`` in one pass.

    With ``backend="decord"``, PyAV is tried when decord fails on the file. Raises
    :class:`DecodeError` naming the file and the reasons when no backend can read it.
    """
    if backend not in BACKENDS:
        raise ValueError(f"decoding backend must be one of {BACKENDS}, got {backend!r}")
    if not os.path.exists(path):
        raise DecodeError(path, "file does not exist")
    if os.path.getsize(path) == 0:
        raise DecodeError(path, "file is empty (0 bytes)")
    order = [backend] + [b for b in BACKENDS if b != backend and backend == "decord"]
    reasons = []
    for name in order:
        try:
            return _DECODERS[name](path, choose_indices, threads)
        except Exception as e:  # decoders raise many types; all mean "cannot read this file"
            reasons.append(f"{name}: {type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}")
    raise DecodeError(path, "cannot decode (" + "; ".join(reasons) + ")")
