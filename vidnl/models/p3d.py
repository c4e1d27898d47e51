"""Pseudo-3D ResNet (Qiu et al., ICCV 2017), one of the Table 8 backbones of
Zhu et al. 2021 (SNL).

Each bottleneck of res2..res4 factorises its 3×3×3 kernel into a spatial 1×3×3 conv S and a
temporal 3×1×1 conv T, cycling through the three P3D designs:
P3D-A (S then T), P3D-B (S and T in parallel, summed), P3D-C (S, then S + T(S)). res5 keeps
2D bottlenecks, as in the paper: P3D-199 is ResNet-152 with its 47 res2-res4 units made P3D
(152 + 47 layers), P3D-131 comes from ResNet-101 and P3D-63 from ResNet-50.

The layout is that of Qiu et al.'s released model (the PyTorch port of their Caffe P3D-199,
qijiezhao/pseudo-3d-pytorch): the spatial stride sits in the first 1×1×1 conv of a block; the
stem max-pool is 2×3×3 with stride 2 in time too; a 2×1×1 max-pool (stride 2) follows res2, res3
and res4, so a 16-frame clip reaches res5 at T = 1, where the blocks are 2D (here 1×k×k, the
same on T = 1, frame by frame otherwise); head: average pool, dropout 0.5, linear. For 16×160²
the stages give 8×40² (stem), 4×40² (res2 + pool), 2×20², 1×10², 1×5². The temporal pools round
up (``ceil_mode``), which equals the released floor pooling for even T and lets clips shorter
than 16 frames through.

Input B×C×T×H×W; logits B×num_classes. SNL "right before the last residual block of res3"
(Zhu et al. 2021, Table 8) is NONLOCAL.LOCATION [[], [6], [], []] for P3D-199 (res3 has 8 blocks).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .heads import ClassificationHead
from .layers import ResidualBlock, ResStage, projection_shortcut

P3D_BLOCKS = {63: (3, 4, 6, 3), 131: (3, 4, 23, 3), 199: (3, 8, 36, 3)}
P3D_TYPES = ("A", "B", "C")


def _conv_bn_relu(cin, cout, kernel, stride, padding):
    return nn.Sequential(nn.Conv3d(cin, cout, kernel, stride, padding, bias=False), nn.BatchNorm3d(cout),
                         nn.ReLU(inplace=True))


class P3DBottleneck(ResidualBlock):
    """1×1×1 reduce (with the spatial stride), the P3D-``kind`` S/T pair (or a 1×3×3 conv for
    ``kind=None``), 1×1×1 expand; shortcut 1×1×1 conv + BN with the same stride where the shape
    changes."""

    expansion = 4

    def __init__(self, in_ch: int, width: int, stride: int, kind: str | None):
        super().__init__()
        out_ch = width * self.expansion
        self.kind = kind
        self.reduce = _conv_bn_relu(in_ch, width, 1, (1, stride, stride), 0)
        self.spatial = _conv_bn_relu(width, width, (1, 3, 3), 1, (0, 1, 1))
        if kind is not None:
            self.temporal = _conv_bn_relu(width, width, (3, 1, 1), 1, (1, 0, 0))
        self.expand = nn.Conv3d(width, out_ch, 1, bias=False)
        self.bn = nn.BatchNorm3d(out_ch)
        self.downsample = projection_shortcut(in_ch, out_ch, (1, stride, stride))

    @property
    def final_bn(self) -> nn.Module:
        """The block's last BN (zero-initialised so the block starts as identity)."""
        return self.bn

    def branch(self, x):
        h = self.reduce(x)
        if self.kind is None:
            h = self.spatial(h)
        elif self.kind == "A":
            h = self.temporal(self.spatial(h))
        elif self.kind == "B":
            h = self.spatial(h) + self.temporal(h)
        else:  # "C"
            s = self.spatial(h)
            h = s + self.temporal(s)
        return self.bn(self.expand(h))


class P3DResNet(nn.Module):
    stage_names = ("res2", "res3", "res4", "res5")

    def __init__(self, *, depth: int = 199, num_classes: int = 400, base_width: int = 64, in_channels: int = 3,
                 dropout: float = 0.5, temporal_pool: bool = True):
        super().__init__()
        if depth not in P3D_BLOCKS:
            raise ValueError(f"RESNET.DEPTH {depth} is not available for P3D; choose one of {sorted(P3D_BLOCKS)}")
        self.stem = nn.Sequential(
            nn.Conv3d(in_channels, base_width, (1, 7, 7), (1, 2, 2), (0, 3, 3), bias=False),
            nn.BatchNorm3d(base_width), nn.ReLU(inplace=True), nn.MaxPool3d((2, 3, 3), 2, (0, 1, 1)))
        in_ch, unit = base_width, 0
        stages = []
        for s, n in enumerate(P3D_BLOCKS[depth]):
            width = base_width * 2 ** s
            blocks = []
            for i in range(n):
                kind = P3D_TYPES[unit % 3] if s < 3 else None
                unit += s < 3
                blocks.append(P3DBottleneck(in_ch, width, 2 if (s > 0 and i == 0) else 1, kind))
                in_ch = width * P3DBottleneck.expansion
            stages.append(ResStage(blocks, in_ch))
        self.res2, self.res3, self.res4, self.res5 = stages
        # after res2, res3 and res4
        self.temporal_pools = nn.ModuleList(
            nn.MaxPool3d((2, 1, 1), (2, 1, 1), ceil_mode=True) if temporal_pool else nn.Identity() for _ in range(3))
        self.num_features = in_ch
        self.head = ClassificationHead(in_ch, num_classes, dropout)
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    @property
    def stages(self) -> list[ResStage]:
        return [self.res2, self.res3, self.res4, self.res5]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for stage, pool in zip(self.stages[:3], self.temporal_pools):
            x = pool(stage(x))
        return self.res5(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))
