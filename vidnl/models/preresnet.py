"""Pre-activation ResNets for CIFAR (He et al. 2016, "Identity mappings"), in two forms:

``PreResNetCifar`` (MODEL.ARCH ``preresnet``): the common CIFAR PreResNet (bearpaw/pytorch-
classification): 3×3 stem with 16 channels, three stages (res1, res2, res3 as Zhu et al. 2021
(SNL) name them) of n pre-activation basic blocks (BN-ReLU-conv-BN-ReLU-conv, 16/32/64 channels; a
1×1 conv projection of the raw input where the shape changes), depth = 6n + 2 (56: n = 9, 0.86 M
parameters for 100 classes), then BN-ReLU, global average pooling and the classifier.

``PreResNetBottleneckCifar`` (MODEL.ARCH ``preresnet_snl_code``): the network the SNL authors'
released classification code builds as "preresnet56" and trained for Tables 2-5 of Zhu et al. 2021
(SNL): pre-activation bottlenecks (BN-ReLU-1×1, BN-ReLU-3×3, BN-ReLU-1×1, 4× expansion) in
[9, 9, 9] blocks with 64/128/256 output channels, a 1×1 conv + BN projection of the raw input in the
first block of every stage, and the head BN-ReLU-1×1 conv-BN-ReLU-average pool-dropout 0.5-linear
(1.19 M parameters with their 1000-way classifier).

Images are clips with T = 1: input B×C×1×H×W (or B×C×H×W); logits B×num_classes. "A block right
after the second residual block of res1" (Zhu et al. 2021, §3.1) is NONLOCAL.LOCATION [[1], [], []].
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .layers import ResidualBlock, ResStage


class PreActBlock(ResidualBlock):
    """BN-ReLU-3×3-BN-ReLU-3×3 + shortcut (identity, or a 1×1 conv of the raw input)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.relu = nn.ReLU(inplace=False)
        self.shortcut = (nn.Conv2d(in_ch, out_ch, 1, stride, bias=False)
                         if stride != 1 or in_ch != out_ch else None)

    post_activation = False
    shortcut_attr = "shortcut"

    def branch(self, x):
        out = self.conv1(self.relu(self.bn1(x)))
        return self.conv2(self.relu(self.bn2(out)))


class PreActBottleneck(ResidualBlock):
    """BN-ReLU-1×1, BN-ReLU-3×3 (stride), BN-ReLU-1×1 (4× expansion) + shortcut (identity, or a
    1×1 conv + BN of the raw input)."""

    expansion = 4

    def __init__(self, in_ch: int, planes: int, stride: int, project: bool):
        super().__init__()
        out_ch = planes * self.expansion
        self.bn1 = nn.BatchNorm2d(in_ch)
        self.conv1 = nn.Conv2d(in_ch, planes, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_ch, 1, bias=False)
        self.relu = nn.ReLU(inplace=False)
        self.shortcut = (nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch))
                         if project else None)

    post_activation = False
    shortcut_attr = "shortcut"

    def branch(self, x):
        out = self.conv1(self.relu(self.bn1(x)))
        out = self.conv2(self.relu(self.bn2(out)))
        return self.conv3(self.relu(self.bn3(out)))


def _images(x: torch.Tensor, name: str) -> torch.Tensor:
    if x.dim() == 5:
        if x.shape[2] != 1:
            raise ValueError(f"{name} takes images (T = 1), got a clip of shape {tuple(x.shape)}")
        x = x.squeeze(2)
    return x


class _CifarPreResNet(nn.Module):
    """Shared trunk of the CIFAR PreResNets: ``conv1`` and the stages ``res1..res3``."""

    stage_names = ("res1", "res2", "res3")

    @property
    def stages(self) -> list[ResStage]:
        return [self.res1, self.res2, self.res3]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """B×C×(1×)H×W images -> B×F×H'×W' before the head."""
        x = self.conv1(_images(x, "PreResNet"))
        for stage in self.stages:
            x = stage(x)
        return x


class PreResNetCifar(_CifarPreResNet):

    def __init__(self, *, depth: int = 56, num_classes: int = 100, base_width: int = 16, in_channels: int = 3,
                 dropout: float = 0.0):
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"RESNET.DEPTH {depth} is not 6n + 2 (e.g. 20, 56, 110) as PreResNet needs")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_channels, base_width, 3, 1, 1, bias=False)
        in_ch = base_width
        stages = []
        for s in range(3):
            out_ch = base_width * 2 ** s
            blocks = [PreActBlock(in_ch if i == 0 else out_ch, out_ch, 2 if (s > 0 and i == 0) else 1) for i in range(n)]
            in_ch = out_ch
            stages.append(ResStage(blocks, out_ch))
        self.res1, self.res2, self.res3 = stages
        self.bn = nn.BatchNorm2d(in_ch)
        self.relu = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(in_ch, num_classes)
        self.num_features = in_ch
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn(self.forward_features(x))).mean((2, 3))
        return self.fc(self.dropout(x))


class PreResNetBottleneckCifar(_CifarPreResNet):
    """The SNL authors' CIFAR "preresnet56": ``blocks`` pre-activation bottlenecks per stage
    (planes 16/32/64 × 4), head BN-ReLU-1×1 conv-BN-ReLU-pool-dropout-linear. B×3×32×32 ->
    B×num_classes."""

    def __init__(self, *, blocks: int = 9, num_classes: int = 100, base_width: int = 16, in_channels: int = 3,
                 dropout: float = 0.5):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, base_width, 3, 1, 1, bias=False)
        in_ch = base_width
        stages = []
        for s in range(3):
            planes = base_width * 2 ** s
            layer = [PreActBottleneck(in_ch if i == 0 else planes * 4, planes, 2 if (s > 0 and i == 0) else 1,
                                      project=i == 0) for i in range(blocks)]
            in_ch = planes * 4
            stages.append(ResStage(layer, in_ch))
        self.res1, self.res2, self.res3 = stages
        self.head_bn1 = nn.BatchNorm2d(in_ch)
        self.head_conv = nn.Conv2d(in_ch, in_ch, 1, bias=False)
        self.head_bn2 = nn.BatchNorm2d(in_ch)
        self.relu = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(in_ch, num_classes)
        self.num_features = in_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_features(x)
        x = self.relu(self.head_bn2(self.head_conv(self.relu(self.head_bn1(x)))))
        return self.fc(self.dropout(x.mean((2, 3))))
