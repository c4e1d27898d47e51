"""Spatial transforms of clips, on uint8 tensors T×C×H×W (torchvision.transforms.v2 functional).

Training: random short-side scale jitter, random square crop, optional horizontal flip.
Test: short-side resize, then 1 (centre) or 3 (both ends and centre of the long side) crops.
``rounding`` (DATA.SPATIAL_ROUNDING): "vidnl" rounds the resized long side to the nearest pixel,
resizes with antialiasing and puts a centre crop at floor((L − crop)/2); "pyslowfast" does as
PySlowFast's transform.py (random_short_side_scale_jitter, uniform_crop, random_crop): the long
side is floor(L·short/S), bilinear without antialiasing, the centre crop at ceil((L − crop)/2),
training crop offsets in [0, L − crop) (0 when L = crop).
The decoded frames are channels-last in memory (``frames_to_tensor`` is a view), torchvision's
uint8 resampling keeps that layout, and the results are handed on as raw pixels T×H×W×C uint8:
normalisation to the model's float C×T×H×W happens on the device
(:mod:`vidnl.data.model_input`).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF

from .decoding import scaled_size

SPATIAL_ROUNDINGS = ("vidnl", "pyslowfast")


def short_side_size(height: int, width: int, size: int, rounding: str = "vidnl") -> tuple[int, int]:
    """(h, w) with the shorter side ``size``: the long side rounded to the nearest pixel
    ("vidnl", ``decoding.scaled_size``) or floored ("pyslowfast")."""
    if rounding == "vidnl":
        return scaled_size(height, width, size)
    if rounding != "pyslowfast":
        raise ValueError(f"rounding must be one of {SPATIAL_ROUNDINGS}, got {rounding!r}")
    if width < height:
        return int(math.floor(height / width * size)), size
    return size, int(math.floor(width / height * size))


def frames_to_tensor(frames: np.ndarray) -> torch.Tensor:
    """T×H×W×C uint8 numpy -> T×C×H×W uint8 tensor."""
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)


def resize_short_side(video: torch.Tensor, size: int, rounding: str = "vidnl") -> torch.Tensor:
    """Resize so the shorter side is ``size`` (aspect kept; ``rounding`` in the module
    docstring). T×C×H×W -> T×C×H'×W'."""
    h, w = video.shape[-2:]
    if min(h, w) == size:
        return video
    return TF.resize(video, list(short_side_size(h, w, size, rounding)), antialias=rounding == "vidnl")


def random_crop(video: torch.Tensor, size: int, rng: np.random.Generator) -> torch.Tensor:
    h, w = video.shape[-2:]
    top = int(rng.integers(0, h - size + 1))
    left = int(rng.integers(0, w - size + 1))
    return video[..., top:top + size, left:left + size]


def uniform_crops(video: torch.Tensor, size: int, num_crops: int, rounding: str = "vidnl") -> list[torch.Tensor]:
    """1 crop: the centre. 3 crops: start, centre and end of the longer side (PySlowFast's
    left/centre/right for landscape videos). The centre offset is floor((L − size)/2) ("vidnl")
    or ceil ("pyslowfast")."""
    h, w = video.shape[-2:]
    if num_crops not in (1, 3):
        raise ValueError(f"num_crops must be 1 or 3, got {num_crops}")
    if rounding == "pyslowfast":
        cy, cx = -((size - h) // 2), -((size - w) // 2)  # ceil((h - size) / 2) in integers
    elif rounding == "vidnl":
        cy, cx = (h - size) // 2, (w - size) // 2
    else:
        raise ValueError(f"rounding must be one of {SPATIAL_ROUNDINGS}, got {rounding!r}")
    if num_crops == 1:
        offsets = [(cy, cx)]
    elif w >= h:
        offsets = [(cy, 0), (cy, cx), (cy, w - size)]
    else:
        offsets = [(0, cx), (cy, cx), (h - size, cx)]
    return [video[..., y:y + size, x:x + size] for y, x in offsets]


def channels_last(video: torch.Tensor) -> torch.Tensor:
    """T×C×H×W -> T×H×W×C contiguous (free when the memory is channels-last already)."""
    return video.permute(0, 2, 3, 1).contiguous()


def train_transform(video: torch.Tensor, *, jitter_scales: Sequence[int], crop_size: int,
                    flip: bool, rng: np.random.Generator, rounding: str = "vidnl") -> torch.Tensor:
    """T×C×H×W uint8 -> T×crop×crop×C uint8 (raw pixels, channels last).

    Equivalent to resizing the short side to a random size in ``jitter_scales`` and taking a
    random crop, but only the region that becomes the crop is resized (``resized_crop``).
    With ``rounding`` "pyslowfast" the resized size and the crop offsets are PySlowFast's
    (module docstring)."""
    scale = int(rng.integers(jitter_scales[0], jitter_scales[1] + 1))
    h, w = video.shape[-2:]
    if rounding == "pyslowfast":
        new_h, new_w = (h, w) if min(h, w) == scale else short_side_size(h, w, scale, rounding)
        new_h, new_w = max(crop_size, new_h), max(crop_size, new_w)
        top = int(rng.integers(0, new_h - crop_size)) if new_h > crop_size else 0
        left = int(rng.integers(0, new_w - crop_size)) if new_w > crop_size else 0
    else:
        factor = scale / min(h, w)
        new_h, new_w = max(crop_size, int(round(h * factor))), max(crop_size, int(round(w * factor)))
        top = int(rng.integers(0, new_h - crop_size + 1))
        left = int(rng.integers(0, new_w - crop_size + 1))
    fy, fx = h / new_h, w / new_w  # back to source pixels
    video = TF.resized_crop(video, int(round(top * fy)), int(round(left * fx)), max(1, int(round(crop_size * fy))),
                            max(1, int(round(crop_size * fx))), [crop_size, crop_size],
                            antialias=rounding != "pyslowfast")
    video = channels_last(video)
    if flip and rng.random() < 0.5:
        video = video.flip(2)
    return video


def test_views(video: torch.Tensor, *, crop_size: int, num_crops: int, rounding: str = "vidnl") -> list[torch.Tensor]:
    """T×C×H×W uint8 -> num_crops uint8 views T×crop×crop×C (slices, no copy). The frames are
    resized once, then the crops are cut (views share that work: decode once, transform once)."""
    frames = channels_last(resize_short_side(video, crop_size, rounding))  # T×H×W×C
    return [v.permute(0, 2, 3, 1)
            for v in uniform_crops(frames.permute(0, 3, 1, 2), crop_size, num_crops, rounding)]
