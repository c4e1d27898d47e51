"""Layers shared by every residual backbone: one residual-block family, one stage class that
carries the nonlocal hook, and the shortcuts.

* ``ResidualBlock``: y = act(branch(x) + shortcut(x)); a subclass builds its branch's layers as
  attributes (their names are the parameter names of the checkpoints it loads) and says which
  BN ends the branch (``final_bn``, zero-initialised so a new block starts as the identity).
  ``BasicBlock`` and ``Bottleneck`` are the branch shapes of C2D/I3D (Wang et al. 2018 (NL)) and
  of Hara et al.'s 3D-ResNets, parametrised by their kernel shapes and strides; P3D and the
  pre-activation CIFAR blocks are ``ResidualBlock`` subclasses with their own branch.
* ``ResStage``: residual blocks with nonlocal blocks after chosen ones (``nonlocal_blocks[str(i)]``
  runs right after block ``i``; see ``vidnl.nonlocal_blocks.insert``, whose ``NonlocalStage``
  protocol it implements). It also serves 2D backbones that run frames as a batch (re-ID):
  with ``num_frames`` the features (B·T)×C×H×W are viewed as the clip B×C×T×H×W for the
  nonlocal block.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn as nn

Norm = Callable[[int], nn.Module]
Triple = tuple[int, int, int]


def _same_padding(kernel: Triple) -> Triple:
    return tuple(k // 2 for k in kernel)


def projection_shortcut(in_ch: int, out_ch: int, stride: Triple, norm: Norm = nn.BatchNorm3d) -> nn.Module | None:
    """None (identity) when the shape is kept, else a 1×1×1 conv with ``stride`` + norm (ResNet's
    shortcut "B")."""
    if tuple(stride) == (1, 1, 1) and in_ch == out_ch:
        return None
    return nn.Sequential(nn.Conv3d(in_ch, out_ch, 1, stride, bias=False), norm(out_ch))


class ResidualBlock(nn.Module):
    """y = act(branch(x) + shortcut(x)), act = ReLU (``post_activation``) or none (pre-activation
    blocks). Subclasses implement ``branch`` and ``final_bn`` and set the shortcut module (None:
    identity) under the attribute named by ``shortcut_attr`` (its checkpoint name)."""

    post_activation = True
    shortcut_attr = "downsample"

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @property
    def final_bn(self) -> nn.Module | None:
        """The BN that ends the branch (zero-initialised so the block starts as the identity)."""
        return None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = getattr(self, self.shortcut_attr)
        out, skip = self.branch(x), (x if shortcut is None else shortcut(x))
        # In place, as PySlowFast's blocks are: the branch's last layer (a norm or a conv) keeps its
        # input for backward, not its output, so the sum and the ReLU can reuse that buffer; one
        # activation-sized allocation less per op (a fresh buffer costs page faults on a CPU).
        out = out.add_(skip) if out.dtype == skip.dtype and out is not x else out + skip
        if not self.post_activation:
            return out
        return out.relu_()


class BasicBlock(ResidualBlock):
    """conv1 (``kernel1``, ``stride``)-bn1-ReLU-conv2 (``kernel2``)-bn2 + shortcut, ReLU.
    C2D/I3D-18: kernel1 t×3×3, kernel2 1×3×3, stride 1×s×s; Hara et al.: 3×3×3 both, stride s."""

    def __init__(self, in_ch: int, out_ch: int, *, kernel1: Triple = (1, 3, 3), kernel2: Triple = (1, 3, 3),
                 stride: Triple = (1, 1, 1), shortcut: nn.Module | None = None, norm: Norm = nn.BatchNorm3d):
        super().__init__()
        self.conv1 = nn.Conv3d(in_ch, out_ch, kernel1, stride, _same_padding(kernel1), bias=False)
        self.bn1 = norm(out_ch)
        self.conv2 = nn.Conv3d(out_ch, out_ch, kernel2, 1, _same_padding(kernel2), bias=False)
        self.bn2 = norm(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = shortcut
        self.out_channels = out_ch

    @property
    def final_bn(self) -> nn.Module:
        return self.bn2

    def branch(self, x):
        return self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))


class Bottleneck(ResidualBlock):
    """conv1 (``kernel1``)-bn1-ReLU-conv2 (``kernel2``, ``stride``, ``groups``)-bn2-ReLU-conv3
    (1×1×1)-bn3 + shortcut, ReLU. C2D/I3D: kernel1 t×1×1 or kernel2 t×3×3 (inflated), stride
    1×s×s (ResNet v1.5: the stride in the 3×3); Hara et al.: 1×1×1, 3×3×3 (grouped for ResNeXt),
    stride s."""

    def __init__(self, in_ch: int, width: int, out_ch: int, *, kernel1: Triple = (1, 1, 1),
                 kernel2: Triple = (1, 3, 3), stride: Triple = (1, 1, 1), groups: int = 1,
                 shortcut: nn.Module | None = None, norm: Norm = nn.BatchNorm3d):
        super().__init__()
        self.conv1 = nn.Conv3d(in_ch, width, kernel1, 1, _same_padding(kernel1), bias=False)
        self.bn1 = norm(width)
        self.conv2 = nn.Conv3d(width, width, kernel2, stride, _same_padding(kernel2), groups=groups, bias=False)
        self.bn2 = norm(width)
        self.conv3 = nn.Conv3d(width, out_ch, 1, bias=False)
        self.bn3 = norm(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = shortcut
        self.out_channels = out_ch

    @property
    def final_bn(self) -> nn.Module:
        return self.bn3

    def branch(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.bn3(self.conv3(out))


def zero_init_final_bns(model: nn.Module) -> None:
    """Zero the scale of every residual block's final BN: each block starts as the identity."""
    for m in model.modules():
        if isinstance(m, ResidualBlock) and m.final_bn is not None:
            nn.init.zeros_(m.final_bn.weight)


class ResStage(nn.Module):
    """A stage of residual blocks with optional nonlocal blocks after some of them.

    ``nonlocal_blocks[str(i)]`` runs right after block ``i``. Blocks are the children of
    ``blocks`` (parameter names ``blocks.<i>.*``) or, with ``flat_names`` (torchvision's
    layout, ``layer3.4.conv1.weight``), the stage's own children ``"0"``..``"n-1"``.
    ``forward(x)`` takes B×C×T×H×W; ``forward(x, num_frames)`` takes frames (B·T)×C×H×W of
    consecutive clips and gives each nonlocal block the clip view B×C×T×H×W.
    """

    def __init__(self, blocks: Sequence[nn.Module], out_channels: int, *, flat_names: bool = False):
        super().__init__()
        if flat_names:
            for i, block in enumerate(blocks):
                self.add_module(str(i), block)
        else:
            self.blocks = nn.Sequential(*blocks)
        self._flat, self._num_blocks = flat_names, len(blocks)
        self.nonlocal_blocks = nn.ModuleDict()
        self.out_channels = out_channels

    @property
    def num_blocks(self) -> int:
        return self._num_blocks

    def block(self, i: int) -> nn.Module:
        return self._modules[str(i)] if self._flat else self.blocks[i]

    def forward(self, x: torch.Tensor, num_frames: int | None = None) -> torch.Tensor:
        for i in range(self._num_blocks):
            x = self.block(i)(x)
            key = str(i)
            if key in self.nonlocal_blocks:
                x = self.nonlocal_blocks[key](x) if num_frames is None else self._on_clips(key, x, num_frames)
        return x

    def _on_clips(self, key: str, x: torch.Tensor, num_frames: int) -> torch.Tensor:
        """Frames (B·T)×C×H×W -> the nonlocal block on B×C×T×H×W -> frames again."""
        bt, c, h, w = x.shape
        clip = x.view(bt // num_frames, num_frames, c, h, w).transpose(1, 2)
        return self.nonlocal_blocks[key](clip).transpose(1, 2).reshape(bt, c, h, w)
