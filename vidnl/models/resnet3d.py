"""3D-ResNets and 3D-ResNeXts of Hara et al. (CVPR 2018): k×k×k kernels in every block.

This is the "I3D following Hara et al." of Zhu et al. 2021 (SNL) Table 7 and, as ResNeXt-101, the
backbone of MARS. Stem: 7×7×7 conv (stride 1×2×2) and 3×3×3 max-pool (stride 2); stages res2..res5
with stride 2 in time and space from res3 on; shortcut type B (1×1×1 conv + BN when the shape
changes; ``shortcut="A"``, zero-padded subsampling without parameters, is the shortcut of their v1
ResNet-18/34 Kinetics checkpoints). Input B×C×T×H×W; logits B×num_classes.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from .heads import ClassificationHead
from .resnet import ResStage

RESNET3D_BLOCKS = {10: (1, 1, 1, 1), 18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3),
                   152: (3, 8, 36, 3), 200: (3, 24, 36, 3)}


class ShortcutA(nn.Module):
    """Hara et al.'s parameter-free shortcut "A": subsample by ``stride`` and pad the new channels
    with zeros (their v1 ResNet-18/34 Kinetics models). B×C×T×H×W -> B×out×T'×H'×W'."""

    def __init__(self, out_ch: int, stride: int):
        super().__init__()
        self.out_ch, self.stride = out_ch, stride

    def forward(self, x):
        x = x[:, :, ::self.stride, ::self.stride, ::self.stride]
        return torch.cat([x, x.new_zeros(x.shape[0], self.out_ch - x.shape[1], *x.shape[2:])], 1)


def _shortcut(in_ch: int, out_ch: int, stride: int, kind: str = "B") -> nn.Module | None:
    """None (identity), type B (1×1×1 conv + BN) or type A (subsample and zero channels) where the
    shape changes."""
    if stride == 1 and in_ch == out_ch:
        return None
    if kind == "A":
        return ShortcutA(out_ch, stride)
    return nn.Sequential(nn.Conv3d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm3d(out_ch))


class BasicBlock3D(nn.Module):
    """Two 3×3×3 convs."""

    expansion = 1

    def __init__(self, in_ch: int, planes: int, stride: int = 1, groups: int = 1, shortcut: str = "B"):
        super().__init__()
        self.conv1 = nn.Conv3d(in_ch, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm3d(planes)
        self.conv2 = nn.Conv3d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm3d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(in_ch, planes, stride, shortcut)

    @property
    def final_bn(self) -> nn.Module:
        """The block's last BN (zero-initialised so the block starts as identity)."""
        return self.bn2

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class Bottleneck3D(nn.Module):
    """1×1×1 – 3×3×3 (grouped for ResNeXt) – 1×1×1.

    ResNet: width = planes, output 4·planes. ResNeXt (groups = cardinality > 1, Hara et al.'s
    variant): width = cardinality · planes / 32, output 2·planes.
    """

    def __init__(self, in_ch: int, planes: int, stride: int = 1, groups: int = 1, shortcut: str = "B"):
        super().__init__()
        if groups > 1:
            width, out_ch = groups * max(1, planes // 32), planes * 2  # at least one channel per group
        else:
            width, out_ch = planes, planes * 4
        self.out_channels = out_ch
        self.conv1 = nn.Conv3d(in_ch, width, 1, bias=False)
        self.bn1 = nn.BatchNorm3d(width)
        self.conv2 = nn.Conv3d(width, width, 3, stride, 1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm3d(width)
        self.conv3 = nn.Conv3d(width, out_ch, 1, bias=False)
        self.bn3 = nn.BatchNorm3d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(in_ch, out_ch, stride, shortcut)

    @property
    def final_bn(self) -> nn.Module:
        """The block's last BN (zero-initialised so the block starts as identity)."""
        return self.bn3

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + identity)


class ResNet3D(nn.Module):
    """Hara et al.'s 3D-ResNet (``cardinality=1``) or 3D-ResNeXt (``cardinality=32``).

    Args:
        depth: 10, 18, 34 (basic blocks) or 50, 101, 152, 200 (bottlenecks).
        base_width: stem channels and res2 planes (64 standard; ResNeXt uses 128 planes in res2).
        in_channels: 3 for RGB, 2 for optical flow.
    """

    stage_names = ("res2", "res3", "res4", "res5")

    def __init__(self, *, depth: int = 18, num_classes: int = 400, base_width: int = 64, in_channels: int = 3,
                 cardinality: int = 1, dropout: float = 0.0, zero_init_final_bn: bool = False, shortcut: str = "B"):
        super().__init__()
        if shortcut not in ("A", "B"):
            raise ValueError(f"RESNET.SHORTCUT must be 'A' or 'B', got {shortcut!r}")
        if depth not in RESNET3D_BLOCKS:
            raise ValueError(f"RESNET.DEPTH {depth} is not available for 3D-ResNets; choose one of "
                             f"{sorted(RESNET3D_BLOCKS)}")
        basic = depth < 50
        if basic and cardinality > 1:
            raise ValueError("ResNeXt needs a bottleneck depth (50 or more)")
        self.stem = nn.Sequential(
            nn.Conv3d(in_channels, base_width, 7, (1, 2, 2), 3, bias=False), nn.BatchNorm3d(base_width),
            nn.ReLU(inplace=True), nn.MaxPool3d(3, 2, 1))
        in_ch = base_width
        planes0 = base_width * (2 if cardinality > 1 else 1)
        stages = []
        for s, n in enumerate(RESNET3D_BLOCKS[depth]):
            planes = planes0 * 2 ** s
            blocks = []
            for i in range(n):
                stride = 2 if (s > 0 and i == 0) else 1
                block = (BasicBlock3D if basic else Bottleneck3D)(in_ch, planes, stride, cardinality, shortcut)
                in_ch = planes if basic else block.out_channels
                blocks.append(block)
            stages.append(ResStage(blocks, in_ch))
        self.res2, self.res3, self.res4, self.res5 = stages
        self.num_features = in_ch
        self.head = ClassificationHead(in_ch, num_classes, dropout)
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        if zero_init_final_bn:
            for m in self.modules():
                if isinstance(m, (BasicBlock3D, Bottleneck3D)):
                    nn.init.zeros_(m.final_bn.weight)

    @property
    def stages(self) -> list[ResStage]:
        return [self.res2, self.res3, self.res4, self.res5]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))


def stage_blocks(depth: int) -> Sequence[int]:
    return RESNET3D_BLOCKS[depth]
