"""Loading weights from other layouts: rename keys (``weight_formats``) and inflate 2D kernels.

``convert_state_dict(state, model, fmt, inflate)`` renames the keys of ``state`` to vidnl's and,
where a 2D kernel (O×I×k×k) meets a 3D parameter (O×I×t×k×k), inflates it over time:
"mean" puts w / t in each of the t planes (Wang et al. 2018: a static clip then gives the
2D network's response), "center" puts w in the middle plane. Keys it cannot map are kept as
they are, so loading reports them as unexpected.
"""

from __future__ import annotations

import logging

import torch
import torch.nn as nn

from .weight_formats import FORMATS, detect_format, rename_state

logger = logging.getLogger(__name__)

def inflate_weight(w: torch.Tensor, t: int, mode: str = "mean") -> torch.Tensor:
    """O×I×k×k -> O×I×t×k×k."""
    if mode == "mean":
        return w.unsqueeze(2).repeat(1, 1, t, 1, 1) / t
    if mode == "center":
        out = torch.zeros(w.shape[0], w.shape[1], t, *w.shape[2:], dtype=w.dtype)
        out[:, :, t // 2] = w
        return out
    raise ValueError(f"MODEL.INFLATE must be 'mean' or 'center', got {mode!r}")


def convert_state_dict(state: dict, model: nn.Module, fmt: str = "auto", inflate: str = "mean") -> dict:
    """Rename ``state`` to ``model``'s layout and inflate 2D kernels where the model is 3D.

    mmaction2's NonLocal3d has no bias on its output conv: where the model has one (NL with
    biases, the official style) it is set to zero, which is the same function."""
    if fmt not in FORMATS:
        raise ValueError(f"MODEL.WEIGHTS_FORMAT must be one of {FORMATS}, got {fmt!r}")
    if fmt == "auto":
        fmt = detect_format(state)
        if fmt == "unknown":
            fmt = "vidnl"
    own = model.state_dict()
    prefix = getattr(model, "weights_prefix", "")
    renamed, unmapped = rename_state(state, fmt, getattr(model, "key_maps", {}).get(fmt))  # a model's own map first
    out = {}
    inflated = 0
    for k, v in renamed.items():
        new = k if k in unmapped else prefix + k
        target = own.get(new)
        kernel_2d = v[:, :, 0] if v.dim() == 5 and v.shape[2] == 1 else v  # O×I×k×k or O×I×1×k×k
        if (target is not None and kernel_2d.dim() == 4 and target.dim() == 5 and v.shape != target.shape
                and kernel_2d.shape == target.shape[:2] + target.shape[3:]):
            v = inflate_weight(kernel_2d, target.shape[2], inflate)
            inflated += 1
        out[new] = v
    if fmt == "mmaction2":
        for k in own:
            if k.endswith("out_proj.0.bias") and ".nonlocal_blocks." in k and k not in out:
                out[k] = torch.zeros_like(own[k])
    if fmt != "vidnl":
        logger.info("weights in %s layout: %d keys renamed, %d kernels inflated (%s)", fmt,
                    len(renamed) - len(unmapped), inflated, inflate)
    return out
