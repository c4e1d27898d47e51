"""Optical flow on disk: computing, quantising, storing and reading flow clips.

Layout written by ``data_prep/extract_flow.py`` (one folder per video under the flow root, at
``flow_key(video_path, root)``, i.e. the video's path below ``root`` without its extension)::

    FLOW_DIR/<key>/flow_x_00001.jpg, flow_y_00001.jpg, ...   ("jpg": the community format)
    FLOW_DIR/<key>/flow_00001.npz                            ("npz": float16 array "flow", 2×H×W)
    FLOW_DIR/<key>/done                                      JSON metadata, written last

Pair ``k`` (1-based in the file names) is the flow from decoded frame ``k-1`` to frame ``k``, so
a video of ``n`` frames has ``n-1`` pairs. The flow of frame index ``i`` (0-based, as in
:mod:`vidnl.data.sampling`) is pair ``min(i, n-2) + 1``: the flow leaving that frame, and for
the last frame the flow arriving at it. JPEGs hold ``round((clip(f, -B, B) + B) * 255 / 2B)``
with B = ``bound`` (20 px by default); :func:`dequantize` maps them back to pixels.
"""

from __future__ import annotations

import json
import os
from typing import Sequence

import numpy as np

from .decoding import DecodeError

FLOW_FORMATS = ("jpg", "npz")
DEFAULT_BOUND = 20.0
DONE_NAME = "done"


# -- names and keys ------------------------------------------------------------------------------
def flow_key(video_path: str, root: str) -> str:
    """The folder name of a video's flow: its path relative to ``root`` without the extension.
    Leading ``..`` components (videos outside ``root``) are dropped, so ``../videos/a/b.avi``
    becomes ``videos/a/b``."""
    rel = os.path.relpath(os.path.abspath(video_path), os.path.abspath(root))
    parts = [p for p in rel.split(os.sep) if p not in ("", ".")]
    while parts and parts[0] == "..":
        parts.pop(0)
    if not parts:
        raise ValueError(f"cannot derive a flow folder name for {video_path!r} below {root!r}")
    if not os.path.isdir(video_path):  # a frame folder keeps its whole name
        parts[-1] = os.path.splitext(parts[-1])[0] or parts[-1]
    return os.path.join(*parts)


def flow_file_names(pair: int, fmt: str) -> list[str]:
    """File names of pair ``pair`` (1-based): [x, y] JPEGs or the one npz."""
    if fmt == "jpg":
        return [f"flow_x_{pair:05d}.jpg", f"flow_y_{pair:05d}.jpg"]
    if fmt == "npz":
        return [f"flow_{pair:05d}.npz"]
    raise ValueError(f"flow format must be one of {FLOW_FORMATS}, got {fmt!r}")


# -- quantisation --------------------------------------------------------------------------------
def quantize(flow: np.ndarray, bound: float = DEFAULT_BOUND) -> np.ndarray:
    """Flow in pixels (any shape) -> uint8, clipped to ±bound and mapped linearly to 0..255."""
    q = (np.clip(flow, -bound, bound) + bound) * (255.0 / (2.0 * bound))
    return np.round(q).astype(np.uint8)


def dequantize(q: np.ndarray, bound: float = DEFAULT_BOUND) -> np.ndarray:
    """uint8 -> float32 flow in pixels (inverse of :func:`quantize`, error <= bound/255)."""
    return q.astype(np.float32) * np.float32(2.0 * bound / 255.0) - np.float32(bound)


# -- computing -----------------------------------------------------------------------------------
def flow_methods() -> tuple[str, ...]:
    """Available methods: "farneback" always, "tvl1" when OpenCV has the contrib optflow module."""
    import cv2

    return ("farneback", "tvl1") if hasattr(cv2, "optflow") else ("farneback",)


def make_flow_fn(method: str = "farneback"):
    """A function (prev, next) -> H×W×2 float32 flow (x, y) in pixels from grey uint8 H×W
    frames, such that ``prev[y, x] ≈ next[y + fy, x + fx]``."""
    import cv2

    if method == "farneback":
        def farneback(prev: np.ndarray, nxt: np.ndarray) -> np.ndarray:
            return cv2.calcOpticalFlowFarneback(prev, nxt, None, pyr_scale=0.5, levels=3, winsize=15,
                                                iterations=3, poly_n=5, poly_sigma=1.2, flags=0)
        return farneback
    if method == "tvl1":
        if not hasattr(cv2, "optflow"):
            raise ValueError("TV-L1 flow needs OpenCV's contrib module cv2.optflow (opencv-contrib-python); "
                             "use method 'farneback'")
        tvl1 = cv2.optflow.DualTVL1OpticalFlow_create()
        return lambda prev, nxt: tvl1.calc(prev, nxt, None)
    raise ValueError(f"flow method must be one of {flow_methods()}, got {method!r}")


# -- reading -------------------------------------------------------------------------------------
def read_flow_meta(video_flow_dir: str) -> dict:
    """The ``done`` metadata of a video's flow folder: format, bound, num_pairs, height, width.
    Raises :class:`DecodeError` when the folder or its marker is missing (flow not extracted or
    extraction unfinished)."""
    marker = os.path.join(video_flow_dir, DONE_NAME)
    if not os.path.isfile(marker):
        why = "no flow folder" if not os.path.isdir(video_flow_dir) else f"no '{DONE_NAME}' marker (extraction unfinished)"
        raise DecodeError(video_flow_dir, f"{why}; run data_prep/extract_flow.py")
    try:
        with open(marker) as f:
            meta = json.load(f)
        meta["num_pairs"] = int(meta["num_pairs"])
    except (ValueError, KeyError, TypeError) as e:
        raise DecodeError(video_flow_dir, f"unreadable '{DONE_NAME}' marker: {type(e).__name__}: {e}") from None
    if meta["num_pairs"] < 1:
        raise DecodeError(video_flow_dir, "the video had fewer than 2 frames: no flow")
    return meta


def read_flow_clip(video_flow_dir: str, frame_indices: Sequence[int], fmt: str | None = None) -> np.ndarray:
    """Flow of the given frame indices (0-based decoded frames of the video) of one video.

    Returns a 2×T×H×W float32 array in pixels (channel 0: x, positive to the right; 1: y,
    positive downwards), T = len(frame_indices). Frame ``i`` gets pair ``min(i, num_pairs-1)``
    (0-based), so indices of the RGB clip of the same video line up. ``fmt`` defaults to the
    format recorded in the folder's ``done`` marker; a different one is an error.
    Raises :class:`DecodeError` naming the folder or file when something cannot be read.
    """
    meta = read_flow_meta(video_flow_dir)
    stored = meta.get("format", "jpg")
    if fmt is not None and fmt != stored:
        raise DecodeError(video_flow_dir, f"flow stored as {stored!r} but {fmt!r} was asked for (DATA.FLOW_FORMAT)")
    bound = float(meta.get("bound", DEFAULT_BOUND))
    idx = np.asarray(frame_indices, dtype=np.int64)
    if idx.size == 0:
        raise ValueError("read_flow_clip needs at least one frame index")
    if idx.min() < 0:
        raise ValueError(f"frame indices must be >= 0, got {idx.min()}")
    pairs = np.minimum(idx, meta["num_pairs"] - 1)
    unique, inverse = np.unique(pairs, return_inverse=True)
    out = []
    for p in unique.tolist():
        names = [os.path.join(video_flow_dir, n) for n in flow_file_names(p + 1, stored)]
        out.append(_read_pair(names, stored, bound))
        if out[-1].shape != out[0].shape:
            raise DecodeError(names[0], f"flow of size {out[-1].shape[1:]} differs from the first read {out[0].shape[1:]}")
    return np.ascontiguousarray(np.stack(out, axis=1)[:, inverse])


def _read_pair(names: list[str], fmt: str, bound: float) -> np.ndarray:
    """-> 2×H×W float32 flow in pixels."""
    if fmt == "npz":
        try:
            with np.load(names[0]) as z:
                arr = z["flow"].astype(np.float32)
        except Exception as e:  # missing, truncated or not an npz
            raise DecodeError(names[0], f"cannot read flow: {type(e).__name__}: {e}") from None
        if arr.ndim != 3 or arr.shape[0] != 2:
            raise DecodeError(names[0], f"expected a 2×H×W array 'flow', got shape {arr.shape}")
        return arr
    import cv2

    planes = []
    for name in names:
        img = cv2.imread(name, cv2.IMREAD_GRAYSCALE)
        if img is None:
            raise DecodeError(name, "missing or unreadable flow JPEG")
        planes.append(dequantize(img, bound))
    if planes[0].shape != planes[1].shape:
        raise DecodeError(names[1], f"size {planes[1].shape} differs from {names[0]} {planes[0].shape}")
    return np.stack(planes)


# -- spatial transforms of flow (they change the values, not only the pixels) ---------------------
def resize_flow(flow, size: tuple[int, int]):
    """Resize T×2×H×W float flow to ``size`` = (h, w), scaling x by w/W and y by h/H."""
    import torchvision.transforms.v2.functional as TF

    h0, w0 = flow.shape[-2:]
    if (h0, w0) == tuple(size):
        return flow
    out = TF.resize(flow, list(size), antialias=True)
    out[:, 0] *= size[1] / w0
    out[:, 1] *= size[0] / h0
    return out


def hflip_flow(flow):
    """Mirror T×2×H×W flow left-right: the pixels move and x changes sign."""
    import torchvision.transforms.v2.functional as TF

    out = TF.horizontal_flip(flow)
    out[:, 0] = -out[:, 0]
    return out
