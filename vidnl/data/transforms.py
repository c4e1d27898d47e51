"""Spatial transforms of clips, on uint8 tensors T×C×H×W (torchvision.transforms.v2 functional).

Training: random short-side scale jitter, random square crop, optional horizontal flip.
Test: short-side resize, then 1 (centre) or 3 (both ends and centre of the long side) crops.
``normalize`` turns T×C×H×W uint8 into the model's C×T×H×W float layout.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF


def frames_to_tensor(frames: np.ndarray) -> torch.Tensor:
    """T×H×W×C uint8 numpy -> T×C×H×W uint8 tensor."""
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)


def resize_short_side(video: torch.Tensor, size: int) -> torch.Tensor:
    """Resize so the shorter side is ``size`` (aspect kept). T×C×H×W -> T×C×H'×W'."""
    h, w = video.shape[-2:]
    if min(h, w) == size:
        return video
    if h <= w:
        new_h, new_w = size, max(size, int(round(w * size / h)))
    else:
        new_h, new_w = max(size, int(round(h * size / w))), size
    return TF.resize(video, [new_h, new_w], antialias=True)


def random_crop(video: torch.Tensor, size: int, rng: np.random.Generator) -> torch.Tensor:
    h, w = video.shape[-2:]
    top = int(rng.integers(0, h - size + 1))
    left = int(rng.integers(0, w - size + 1))
    return video[..., top:top + size, left:left + size]


def uniform_crops(video: torch.Tensor, size: int, num_crops: int) -> list[torch.Tensor]:
    """1 crop: the centre. 3 crops: start, centre and end of the longer side (PySlowFast's
    left/centre/right for landscape videos)."""
    h, w = video.shape[-2:]
    if num_crops not in (1, 3):
        raise ValueError(f"num_crops must be 1 or 3, got {num_crops}")
    cy, cx = (h - size) // 2, (w - size) // 2
    if num_crops == 1:
        offsets = [(cy, cx)]
    elif w >= h:
        offsets = [(cy, 0), (cy, cx), (cy, w - size)]
    else:
        offsets = [(0, cx), (cy, cx), (h - size, cx)]
    return [video[..., y:y + size, x:x + size] for y, x in offsets]


def normalize(video: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """T×C×H×W uint8 -> C×T×H×W float32, scaled to [0, 1] then (x - mean) / std per channel.

    One strided copy into a contiguous float tensor, then two in-place passes (the layout change
    and the conversion in one step are several times faster than ``.float()`` then ``permute``)."""
    t, c, h, w = video.shape
    out = torch.empty((c, t, h, w), dtype=torch.float32)
    out.copy_(video.permute(1, 0, 2, 3))
    scale = torch.tensor([1.0 / (255.0 * s) for s in std], dtype=torch.float32).view(-1, 1, 1, 1)
    shift = torch.tensor([m / s for m, s in zip(mean, std)], dtype=torch.float32).view(-1, 1, 1, 1)
    return out.mul_(scale).sub_(shift)


def train_transform(video: torch.Tensor, *, jitter_scales: Sequence[int], crop_size: int,
                    flip: bool, mean, std, rng: np.random.Generator) -> torch.Tensor:
    """T×C×H×W uint8 -> C×T×crop×crop float.

    Equivalent to resizing the short side to a random size in ``jitter_scales`` and taking a
    random crop, but only the region that becomes the crop is resized (``resized_crop``)."""
    scale = int(rng.integers(jitter_scales[0], jitter_scales[1] + 1))
    h, w = video.shape[-2:]
    factor = scale / min(h, w)
    new_h, new_w = max(crop_size, int(round(h * factor))), max(crop_size, int(round(w * factor)))
    top = int(rng.integers(0, new_h - crop_size + 1))
    left = int(rng.integers(0, new_w - crop_size + 1))
    fy, fx = h / new_h, w / new_w  # back to source pixels
    video = TF.resized_crop(video, int(round(top * fy)), int(round(left * fx)), max(1, int(round(crop_size * fy))),
                            max(1, int(round(crop_size * fx))), [crop_size, crop_size], antialias=True)
    if flip and rng.random() < 0.5:
        video = TF.horizontal_flip(video)
    return normalize(video, mean, std)


def test_views(video: torch.Tensor, *, crop_size: int, num_crops: int, mean, std) -> list[torch.Tensor]:
    """T×C×H×W uint8 -> num_crops tensors C×T×crop×crop. The frames are resized and normalised
    once, then the crops are cut (views share that work: decode once, transform once)."""
    return uniform_crops(normalize(resize_short_side(video, crop_size), mean, std), crop_size, num_crops)
