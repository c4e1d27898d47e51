"""Loading weights from other layouts: torchvision 2D ResNets (inflated to 3D), PySlowFast and
Caffe2 (the original non-local release) key names.

``convert_state_dict(state, model, fmt, inflate)`` renames the keys of ``state`` to vidnl's and,
where a 2D kernel (O×I×k×k) meets a 3D parameter (O×I×t×k×k), inflates it over time:
"mean" puts w / t in each of the t planes (seed 004: a static clip then gives the 2D network's
response), "center" puts w in the middle plane. Keys it cannot map are kept as they are, so
``load_model_weights`` reports them as unexpected.
"""

from __future__ import annotations

import logging
import re

import torch
import torch.nn as nn

logger = logging.getLogger(__name__)

FORMATS = ("auto", "vidnl", "torchvision", "pyslowfast", "caffe2")


def detect_format(state: dict) -> str:
    keys = set(state)
    if any(k.startswith(("stem.", "res2.", "res1.", "backbone.", "rgb.")) for k in keys):
        return "vidnl"
    if "conv1.weight" in keys and any(k.startswith("layer1.") for k in keys):
        return "torchvision"
    if any(k.startswith("s1.pathway0_stem") for k in keys):
        return "pyslowfast"
    if "conv1_w" in keys or any(k.startswith("res2_0_branch2a") for k in keys):
        return "caffe2"
    return "vidnl"


_BN_CAFFE2 = {"s": "weight", "b": "bias", "rm": "running_mean", "riv": "running_var"}
_BRANCH2 = {"a": "1", "b": "2", "c": "3"}


def torchvision_key(k: str) -> str | None:
    """torchvision ResNet (and Hara's 3D-ResNet) names -> vidnl's."""
    if k == "fc.weight" or k == "fc.bias":
        return "head." + k
    m = re.fullmatch(r"(conv1|bn1)\.(.+)", k)
    if m:
        return ("stem.0." if m.group(1) == "conv1" else "stem.1.") + m.group(2)
    m = re.fullmatch(r"layer(\d)\.(\d+)\.(.+)", k)
    if m:
        return f"res{int(m.group(1)) + 1}.blocks.{m.group(2)}.{m.group(3)}"
    return None


def pyslowfast_key(k: str) -> str | None:
    """PySlowFast ResNet/NL names (single pathway) -> vidnl's."""
    m = re.fullmatch(r"s1\.pathway0_stem\.(conv|bn)\.(.+)", k)
    if m:
        return ("stem.0." if m.group(1) == "conv" else "stem.1.") + m.group(2)
    m = re.fullmatch(r"s(\d)\.pathway0_res(\d+)\.branch1(_bn)?\.(.+)", k)
    if m:
        return f"res{m.group(1)}.blocks.{m.group(2)}.downsample.{1 if m.group(3) else 0}.{m.group(4)}"
    m = re.fullmatch(r"s(\d)\.pathway0_res(\d+)\.branch2\.([abc])(_bn)?\.(.+)", k)
    if m:
        layer = ("bn" if m.group(4) else "conv") + _BRANCH2[m.group(3)]
        return f"res{m.group(1)}.blocks.{m.group(2)}.{layer}.{m.group(5)}"
    m = re.fullmatch(r"s(\d)\.pathway0_nonlocal(\d+)\.(conv_theta|conv_phi|conv_g|conv_out|bn)\.(.+)", k)
    if m:
        part = {"conv_theta": "theta", "conv_phi": "phi", "conv_g": "g", "conv_out": "out_proj.0", "bn": "bn"}
        return f"res{m.group(1)}.nonlocal_blocks.{m.group(2)}.{part[m.group(3)]}.{m.group(4)}"
    m = re.fullmatch(r"head\.projection\.(weight|bias)", k)
    if m:
        return f"head.fc.{m.group(1)}"
    return None


def caffe2_key(k: str) -> str | None:
    """Caffe2 blob names of the original non-local release (blobs as tensors) -> vidnl's."""
    if k == "conv1_w":
        return "stem.0.weight"
    m = re.fullmatch(r"res_conv1_bn_(s|b|rm|riv)", k)
    if m:
        return "stem.1." + _BN_CAFFE2[m.group(1)]
    m = re.fullmatch(r"res(\d)_(\d+)_branch2([abc])_w", k)
    if m:
        return f"res{m.group(1)}.blocks.{m.group(2)}.conv{_BRANCH2[m.group(3)]}.weight"
    m = re.fullmatch(r"res(\d)_(\d+)_branch2([abc])_bn_(s|b|rm|riv)", k)
    if m:
        return f"res{m.group(1)}.blocks.{m.group(2)}.bn{_BRANCH2[m.group(3)]}.{_BN_CAFFE2[m.group(4)]}"
    m = re.fullmatch(r"res(\d)_(\d+)_branch1_w", k)
    if m:
        return f"res{m.group(1)}.blocks.{m.group(2)}.downsample.0.weight"
    m = re.fullmatch(r"res(\d)_(\d+)_branch1_bn_(s|b|rm|riv)", k)
    if m:
        return f"res{m.group(1)}.blocks.{m.group(2)}.downsample.1.{_BN_CAFFE2[m.group(3)]}"
    m = re.fullmatch(r"pred_(w|b)", k)
    if m:
        return "head.fc." + ("weight" if m.group(1) == "w" else "bias")
    return None


KEY_MAPS = {"torchvision": torchvision_key, "pyslowfast": pyslowfast_key, "caffe2": caffe2_key}


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
    """Rename ``state`` to ``model``'s layout and inflate 2D kernels where the model is 3D."""
    if fmt not in FORMATS:
        raise ValueError(f"MODEL.WEIGHTS_FORMAT must be one of {FORMATS}, got {fmt!r}")
    if fmt == "auto":
        fmt = detect_format(state)
    own = model.state_dict()
    prefix = getattr(model, "weights_prefix", "")
    out = {}
    renamed = inflated = 0
    for k, v in state.items():
        new = k
        if fmt in KEY_MAPS:
            mapped = KEY_MAPS[fmt](k)
            if mapped is not None:
                new, renamed = prefix + mapped, renamed + 1
        target = own.get(new)
        kernel_2d = v[:, :, 0] if v.dim() == 5 and v.shape[2] == 1 else v  # O×I×k×k or O×I×1×k×k
        if (target is not None and kernel_2d.dim() == 4 and target.dim() == 5 and v.shape != target.shape
                and kernel_2d.shape == target.shape[:2] + target.shape[3:]):
            v = inflate_weight(kernel_2d, target.shape[2], inflate)
            inflated += 1
        out[new] = v
    if fmt != "vidnl":
        logger.info("weights in %s layout: %d keys renamed, %d kernels inflated (%s)", fmt, renamed, inflated, inflate)
    return out
