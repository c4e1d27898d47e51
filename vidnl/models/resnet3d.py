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
from .layers import BasicBlock, Bottleneck, ResidualBlock, ResStage, projection_shortcut, zero_init_final_bns

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


def hara_block(in_ch: int, planes: int, stride: int, cardinality: int = 1, shortcut: str = "B",
               bottleneck: bool = True) -> ResidualBlock:
    """A block of Hara et al.'s 3D-ResNet(Xt): k×k×k kernels, ``stride`` in time and space.
    Basic: two 3×3×3 convs, ``planes`` out. Bottleneck: 1×1×1 – 3×3×3 – 1×1×1; ResNet (cardinality
    1): width = planes, output 4·planes; ResNeXt (groups = cardinality > 1, Hara et al.'s variant):
    width = cardinality · planes / 32, output 2·planes. Shortcut where the shape changes: "B"
    (1×1×1 conv + BN) or "A" (``ShortcutA``, no parameters)."""
    if not bottleneck:
        width = out_ch = planes
    elif cardinality > 1:
        width, out_ch = cardinality * max(1, planes // 32), planes * 2  # at least one channel per group
    else:
        width, out_ch = planes, planes * 4
    if shortcut == "A" and (stride != 1 or in_ch != out_ch):
        short = ShortcutA(out_ch, stride)
    else:
        short = projection_shortcut(in_ch, out_ch, (stride,) * 3)
    k3, s3 = (3, 3, 3), (stride,) * 3
    if not bottleneck:
        return BasicBlock(in_ch, out_ch, kernel1=k3, kernel2=k3, stride=s3, shortcut=short)
    return Bottleneck(in_ch, width, out_ch, kernel1=(1, 1, 1), kernel2=k3, stride=s3, groups=cardinality,
                      shortcut=short)


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
                blocks.append(hara_block(in_ch, planes, stride, cardinality, shortcut, bottleneck=not basic))
                in_ch = blocks[-1].out_channels
            stages.append(ResStage(blocks, in_ch))
        self.res2, self.res3, self.res4, self.res5 = stages
        self.num_features = in_ch
        self.head = ClassificationHead(in_ch, num_classes, dropout)
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        if zero_init_final_bn:
            zero_init_final_bns(self)

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
