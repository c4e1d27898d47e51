"""Pre-activation ResNet for CIFAR (He et al. 2016, "Identity mappings"): the PreResNet-56 of
seed 000's CIFAR experiments (Tables 2-5).

3×3 stem with 16 channels, three stages (res1, res2, res3 in seed 000's naming) of n
pre-activation basic blocks (BN-ReLU-conv-BN-ReLU-conv) with 16/32/64 channels, depth = 6n + 2
(56: n = 9), then BN-ReLU, global average pooling and the classifier. Images are clips with
T = 1: input B×C×1×H×W (or B×C×H×W); logits B×num_classes. "A block right after the second
residual block of res1" (seed 000 §3.1) is NONLOCAL.LOCATION [[1], [], []].
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .resnet import ResStage


class PreActBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = (nn.Conv2d(in_ch, out_ch, 1, stride, bias=False)
                         if stride != 1 or in_ch != out_ch else None)

    def forward(self, x):
        out = self.relu(self.bn1(x))
        identity = x if self.shortcut is None else self.shortcut(out)
        out = self.conv1(out)
        out = self.conv2(self.relu(self.bn2(out)))
        return out + identity


class PreResNetCifar(nn.Module):
    stage_names = ("res1", "res2", "res3")

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

    @property
    def stages(self) -> list[ResStage]:
        return [self.res1, self.res2, self.res3]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 5:
            if x.shape[2] != 1:
                raise ValueError(f"PreResNet takes images (T = 1), got a clip of shape {tuple(x.shape)}")
            x = x.squeeze(2)
        x = self.conv1(x)
        for stage in self.stages:
            x = stage(x)
        x = self.relu(self.bn(x)).mean((2, 3))
        return self.fc(self.dropout(x))
