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
import torch.nn.functional as F
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


# ------------------------------------------------------------------------------------------------
# PySlowFast's transform on normalised float frames (DATA.SPATIAL_ROUNDING "pyslowfast" datasets)
# ------------------------------------------------------------------------------------------------
def pyslowfast_normalize(video: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """T×C×H×W uint8 -> float32 T×C×H×W as PySlowFast's ``utils.tensor_normalize`` computes it:
    ``(x / 255 − mean) / std`` in that order (float32 rounding included)."""
    shape = (1, -1, 1, 1)
    m = torch.tensor(list(mean), dtype=torch.float32).view(shape)
    s = torch.tensor(list(std), dtype=torch.float32).view(shape)
    return (video.float() / 255.0 - m) / s


def _pyslowfast_resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """float T×C×H×W -> short side ``size`` (long side floored), bilinear, align_corners False, no
    antialias: PySlowFast's ``random_short_side_scale_jitter`` with one scale (unchanged when
    the short side is ``size`` already)."""
    h, w = x.shape[-2:]
    if min(h, w) == size:
        return x
    return F.interpolate(x, size=short_side_size(h, w, size, "pyslowfast"), mode="bilinear", align_corners=False)


def pyslowfast_test_views(video: torch.Tensor, *, crop_size: int, num_crops: int, mean: Sequence[float],
                          std: Sequence[float]) -> list[torch.Tensor]:
    """T×C×H×W uint8 (full-size frames) -> ``num_crops`` float32 views C×T×crop×crop, model-ready:
    PySlowFast's test transform in its order: normalise (``pyslowfast_normalize``), resize the
    short side to ``crop_size`` on the float frames, then ``uniform_crops`` with its rounding. A
    resize of the uint8 frames instead would be up to half a grey level off."""
    frames = _pyslowfast_resize(pyslowfast_normalize(video, mean, std), crop_size)
    return [v.permute(1, 0, 2, 3) for v in uniform_crops(frames, crop_size, num_crops, "pyslowfast")]


def pyslowfast_train_transform(video: torch.Tensor, *, jitter_scales: Sequence[int], crop_size: int, flip: bool,
                               rng: np.random.Generator, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """T×C×H×W uint8 (full-size frames) -> float32 C×T×crop×crop, model-ready: PySlowFast's
    training transform in its order: normalise, resize the whole frame to a short side drawn
    from ``jitter_scales`` (as ``train_transform`` draws it), a random crop at offsets in
    [0, L − crop) (0 where L = crop), an optional horizontal flip. The same rng draws as
    ``train_transform`` with ``rounding`` "pyslowfast", so the same crops."""
    scale = int(rng.integers(jitter_scales[0], jitter_scales[1] + 1))
    h, w = video.shape[-2:]
    new_h, new_w = (h, w) if min(h, w) == scale else short_side_size(h, w, scale, "pyslowfast")
    new_h, new_w = max(crop_size, new_h), max(crop_size, new_w)  # as train_transform clamps
    x = pyslowfast_normalize(video, mean, std)
    if (new_h, new_w) != (h, w):
        x = F.interpolate(x, size=(new_h, new_w), mode="bilinear", align_corners=False)
    top = int(rng.integers(0, new_h - crop_size)) if new_h > crop_size else 0
    left = int(rng.integers(0, new_w - crop_size)) if new_w > crop_size else 0
    x = x[..., top:top + crop_size, left:left + crop_size]
    if flip and rng.random() < 0.5:
        x = x.flip(-1)
    return x.permute(1, 0, 2, 3).contiguous()
