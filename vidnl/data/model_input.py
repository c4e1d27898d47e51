"""Model inputs from loader batches: raw pixels are normalised where the model runs.

The video and image datasets hand clips as raw decoded pixels: uint8, channels last, exactly the
memory order the decoders produce (a clip is T×H×W×C, a training batch B×T×H×W×C, a test batch
V×T×H×W×C). Workers then do no float work, and 1 byte per value crosses between processes
instead of 4. :class:`InputNormalizer` turns such a batch into the model's float32 B×C×T×H×W on
the training device (the GPU when there is one), as mmaction2's data preprocessor does.

Float tensors are model-ready already (optical flow, scaled and normalised by its dataset,
B×C×T×H×W) and are only moved to the device.
"""

from __future__ import annotations

from typing import Sequence

import torch


def normalize_pixels(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 ...×T×H×W×C -> float32 ...×C×T×H×W, scaled to [0, 1] then (x - mean) / std per channel.

    One strided copy into a contiguous float tensor, then two in-place passes: the layout change
    and the conversion in one step are about twice as fast on a CPU as converting first."""
    if x.dtype != torch.uint8:
        raise TypeError(f"normalize_pixels expects uint8 pixels (…×T×H×W×C), got {x.dtype}")
    if x.dim() < 4 or x.shape[-1] != len(mean) or len(mean) != len(std):
        raise ValueError(f"pixels …×T×H×W×C with C = {len(mean)} (len of DATA.MEAN / DATA.STD) expected, "
                         f"got shape {tuple(x.shape)}")
    lead = x.dim() - 4
    order = list(range(lead)) + [lead + 3, lead, lead + 1, lead + 2]
    out = torch.empty([x.shape[i] for i in order], dtype=torch.float32, device=x.device)
    out.copy_(x.permute(order))
    shape = [1] * lead + [-1, 1, 1, 1]
    scale = torch.tensor([1.0 / (255.0 * s) for s in std], dtype=torch.float32, device=x.device).view(shape)
    shift = torch.tensor([m / s for m, s in zip(mean, std)], dtype=torch.float32, device=x.device).view(shape)
    return out.mul_(scale).sub_(shift)


class InputNormalizer:
    """``normalizer(batch_inputs, device)`` -> the model's float32 input on ``device``.

    uint8 inputs (…×T×H×W×C raw pixels) are moved first (4× fewer bytes) and normalised with
    ``mean`` / ``std`` (per channel, 0–1 scale) on the device; float inputs pass through."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        if len(mean) != len(std) or any(s <= 0 for s in std):
            raise ValueError(f"mean {list(mean)} and std {list(std)}: same length and positive std expected")
        self.mean, self.std = [float(m) for m in mean], [float(s) for s in std]

    def __call__(self, x: torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
        x = x.to(device, non_blocking=True)
        if x.dtype == torch.uint8:
            return normalize_pixels(x, self.mean, self.std)
        return x

    def __repr__(self) -> str:
        return f"InputNormalizer(mean={self.mean}, std={self.std})"
