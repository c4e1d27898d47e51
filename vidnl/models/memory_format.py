"""Channels-last 3D memory format (TRAIN.CHANNELS_LAST).

A B×C×T×H×W tensor stored channels-last keeps its shape and values; only its memory order is
B×T×H×W×C. oneDNN (CPU) and cuDNN (GPU) have convolution and pooling kernels for that order, and
max pooling in particular is ~10× faster on a CPU (1×3×3 stem pool, 2×64×8×112²: 83 → 7 ms).
Whether the whole network gains depends on the machine: ``benchmarks/peers.py --vidnl-mode
channels_last`` measures it against the peers.

:func:`use_channels_last` stores every Conv3d weight channels-last and converts the model's 5-D
input on entry (a forward pre-hook), so training, testing, prediction and export all run in it.
Parameter names and values are unchanged: checkpoints load either way.
"""

from __future__ import annotations

import torch
import torch.nn as nn


def _inputs_channels_last(module: nn.Module, args: tuple) -> tuple:
    return tuple(a.contiguous(memory_format=torch.channels_last_3d) if torch.is_tensor(a) and a.dim() == 5 else a
                 for a in args)


def uses_2d_convolutions(model: nn.Module) -> bool:
    """True for networks that run 2-D convolutions on frames (re-ID frame backbones, CIFAR
    PreResNets): their B×C×H×W activations are not 3-D channels-last."""
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


def use_channels_last(model: nn.Module) -> nn.Module:
    """``model`` with its 5-D weights in torch.channels_last_3d and a pre-hook that hands its 5-D
    inputs over in that layout (in place; returns ``model``). Raises ValueError for a network
    with 2-D convolutions (see :func:`uses_2d_convolutions`)."""
    if uses_2d_convolutions(model):
        raise ValueError(f"{type(model).__name__} runs 2-D convolutions per frame; channels-last 3D applies to "
                         "networks of 3-D convolutions")
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 5:
                p.data = p.data.contiguous(memory_format=torch.channels_last_3d)
    model.register_forward_pre_hook(_inputs_channels_last)
    return model
