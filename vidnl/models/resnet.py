"""Video ResNets: C2D and I3D of seed 004 (Table 1 and §4), depths 18 / 50 / 101.

C2D: every kernel is 1×k×k (frame by frame); time is only pooled. I3D: the stem is 5×7×7 and
every other residual block has a temporal kernel (the first 1×1 of a bottleneck becomes 3×1×1,
the first 3×3 of a basic block becomes 3×3×3). Both have a 3×1×1 temporal max-pool (stride 2)
after res2 when ``temporal_pool`` is set.

Input B×C×T×H×W; output of ``forward_features`` B×(8·w·e)×T'×H/32×W/32 (e = 4 for bottleneck).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from .heads import ClassificationHead

STAGE_BLOCKS = {18: (2, 2, 2, 2), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}


def default_inflate_pattern(stage_blocks: Sequence[int]) -> list[list[int]]:
    """Seed 004's I3D: temporal kernels in every other block, starting at block 0 in res2-res4
    and at block 1 in res5 (the pattern of the released I3D-NL models)."""
    last = len(stage_blocks) - 1
    return [[int(i % 2 == (1 if s == last else 0)) for i in range(n)] for s, n in enumerate(stage_blocks)]


class BasicBlock3d(nn.Module):
    """Two 3×3 convs (the first t×3×3); used by ResNet-18/34."""

    expansion = 1

    def __init__(self, in_ch: int, width: int, stride: int, temporal_kernel: int, bn_eps: float, bn_mom: float):
        super().__init__()
        out_ch = width
        t = temporal_kernel
        self.conv1 = nn.Conv3d(in_ch, width, (t, 3, 3), (1, stride, stride), (t // 2, 1, 1), bias=False)
        self.bn1 = nn.BatchNorm3d(width, eps=bn_eps, momentum=bn_mom)
        self.conv2 = nn.Conv3d(width, out_ch, (1, 3, 3), 1, (0, 1, 1), bias=False)
        self.bn2 = nn.BatchNorm3d(out_ch, eps=bn_eps, momentum=bn_mom)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(in_ch, out_ch, stride, bn_eps, bn_mom)

    @property
    def final_bn(self) -> nn.Module:
        """The block's last BN (zero-initialised so the block starts as identity)."""
        return self.bn2

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck3d(nn.Module):
    """1×1 (t×1×1 when inflated), 3×3 (stride here, as in ResNet v1.5), 1×1 with 4× expansion."""

    expansion = 4

    def __init__(self, in_ch: int, width: int, stride: int, temporal_kernel: int, bn_eps: float, bn_mom: float):
        super().__init__()
        out_ch = width * self.expansion
        t = temporal_kernel
        self.conv1 = nn.Conv3d(in_ch, width, (t, 1, 1), 1, (t // 2, 0, 0), bias=False)
        self.bn1 = nn.BatchNorm3d(width, eps=bn_eps, momentum=bn_mom)
        self.conv2 = nn.Conv3d(width, width, (1, 3, 3), (1, stride, stride), (0, 1, 1), bias=False)
        self.bn2 = nn.BatchNorm3d(width, eps=bn_eps, momentum=bn_mom)
        self.conv3 = nn.Conv3d(width, out_ch, 1, bias=False)
        self.bn3 = nn.BatchNorm3d(out_ch, eps=bn_eps, momentum=bn_mom)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(in_ch, out_ch, stride, bn_eps, bn_mom)

    @property
    def final_bn(self) -> nn.Module:
        """The block's last BN (zero-initialised so the block starts as identity)."""
        return self.bn3

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


def _shortcut(in_ch: int, out_ch: int, stride: int, bn_eps: float, bn_mom: float) -> nn.Module | None:
    if stride == 1 and in_ch == out_ch:
        return None
    return nn.Sequential(
        nn.Conv3d(in_ch, out_ch, 1, (1, stride, stride), bias=False),
        nn.BatchNorm3d(out_ch, eps=bn_eps, momentum=bn_mom),
    )


class ResStage(nn.Module):
    """A stage of residual blocks with optional nonlocal blocks after some of them.

    ``nonlocal_blocks[str(i)]`` runs right after ``blocks[i]`` (see nonlocal_blocks.insert).
    """

    def __init__(self, blocks: Sequence[nn.Module], out_channels: int):
        super().__init__()
        self.blocks = nn.Sequential(*blocks)
        self.nonlocal_blocks = nn.ModuleDict()
        self.out_channels = out_channels

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, block in enumerate(self.blocks):
            x = block(x)
            key = str(i)
            if key in self.nonlocal_blocks:
                x = self.nonlocal_blocks[key](x)
        return x


class VideoResNet(nn.Module):
    """C2D / I3D ResNet backbone with a classification head.

    Args:
        depth: 18, 50 or 101.
        arch: "c2d" or "i3d".
        num_classes: classifier outputs.
        base_width: stem channels (64 standard; small values give tiny models).
        in_channels: input channels (3 for RGB).
        temporal_pool: 3×1×1 max-pool with temporal stride 2 after res2.
        inflate: I3D only, per stage a 0/1 list (1 = temporal kernel); None = paper pattern.
        dropout: dropout before the classifier.
    Input B×C×T×H×W -> logits B×num_classes.
    """

    def __init__(
        self,
        *,
        depth: int = 50,
        arch: str = "i3d",
        num_classes: int = 400,
        base_width: int = 64,
        in_channels: int = 3,
        temporal_pool: bool = True,
        inflate: Sequence[Sequence[int]] | None = None,
        dropout: float = 0.5,
        zero_init_final_bn: bool = True,
        bn_eps: float = 1e-5,
        bn_momentum: float = 0.1,
    ):
        super().__init__()
        if depth not in STAGE_BLOCKS:
            raise ValueError(f"depth must be one of {sorted(STAGE_BLOCKS)}, got {depth}")
        if arch not in ("c2d", "i3d"):
            raise ValueError(f"arch must be 'c2d' or 'i3d', got {arch!r}")
        stage_blocks = STAGE_BLOCKS[depth]
        block_cls = BasicBlock3d if depth < 50 else Bottleneck3d
        if arch == "c2d":
            inflate = [[0] * n for n in stage_blocks]
        elif not inflate:
            inflate = default_inflate_pattern(stage_blocks)
        self.arch, self.depth, self.inflate = arch, depth, [list(s) for s in inflate]

        t_stem = 5 if arch == "i3d" else 1
        self.stem = nn.Sequential(
            nn.Conv3d(in_channels, base_width, (t_stem, 7, 7), (1, 2, 2), (t_stem // 2, 3, 3), bias=False),
            nn.BatchNorm3d(base_width, eps=bn_eps, momentum=bn_momentum),
            nn.ReLU(inplace=True),
            nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1)),
        )
        in_ch = base_width
        stages = []
        for s, n in enumerate(stage_blocks):
            width = base_width * 2 ** s
            blocks = []
            for i in range(n):
                stride = 2 if (s > 0 and i == 0) else 1
                t = 3 if self.inflate[s][i] else 1
                blocks.append(block_cls(in_ch, width, stride, t, bn_eps, bn_momentum))
                in_ch = width * block_cls.expansion
            stages.append(ResStage(blocks, in_ch))
        self.res2, self.res3, self.res4, self.res5 = stages
        self.pool2 = nn.MaxPool3d((3, 1, 1), (2, 1, 1), (1, 0, 0)) if temporal_pool else nn.Identity()
        self.num_features = in_ch
        self.head = ClassificationHead(in_ch, num_classes, dropout)
        self._init_weights(zero_init_final_bn)

    @property
    def stages(self) -> list[ResStage]:
        return [self.res2, self.res3, self.res4, self.res5]

    stage_names = ("res2", "res3", "res4", "res5")

    def _init_weights(self, zero_init_final_bn: bool) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm3d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_final_bn:
            for m in self.modules():
                if isinstance(m, (BasicBlock3d, Bottleneck3d)):
                    nn.init.zeros_(m.final_bn.weight)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """B×C×T×H×W (or an image batch B×C×H×W, taken as T = 1) -> B×F×T'×H'×W' (before pooling)."""
        if x.dim() == 4:
            x = x.unsqueeze(2)
        x = self.stem(x)
        x = self.pool2(self.res2(x))
        x = self.res3(x)
        x = self.res4(x)
        return self.res5(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))

