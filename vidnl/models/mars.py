"""MARS: Motion-Augmented RGB Stream (Crasto et al., CVPR 2019), one of the Table 8
backbones of Zhu et al. 2021 (SNL).

An RGB 3D-ResNeXt-101 is trained to classify and, at the same time, to reproduce the features
of a frozen optical-flow 3D-ResNeXt-101 teacher: loss = CE(RGB logits) + α · MSE(RGB features,
flow features), α = MODEL.MARS_ALPHA. Inference uses the RGB stream only (flow is never
computed at test time). Inputs: RGB clips B×3×T×H×W, flow clips B×2×T×H×W.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .resnet3d import ResNet3D


class MARS(nn.Module):
    stage_names = ("res2", "res3", "res4", "res5")
    weights_prefix = "rgb."  # other layouts' weights load into the RGB stream
    # an RGB checkpoint (official MARS, Hara) has no teacher: the teacher comes from MODEL.MARS_FLOW_CHECKPOINT
    optional_weights = ("flow.*",)

    def __init__(self, *, num_classes: int = 101, depth: int = 101, base_width: int = 64, cardinality: int = 32,
                 alpha: float = 50.0, dropout: float = 0.0):
        super().__init__()
        self.rgb = ResNet3D(depth=depth, num_classes=num_classes, base_width=base_width, in_channels=3,
                            cardinality=cardinality, dropout=dropout)
        self.flow = ResNet3D(depth=depth, num_classes=num_classes, base_width=base_width, in_channels=2,
                             cardinality=cardinality, dropout=0.0)
        self.alpha = alpha
        self.freeze_teacher()

    def freeze_teacher(self) -> None:
        """The flow stream is a fixed teacher: no gradients, BN statistics frozen."""
        for p in self.flow.parameters():
            p.requires_grad_(False)
        self.flow.eval()

    def train(self, mode: bool = True):
        super().train(mode)
        self.flow.eval()
        return self

    @property
    def stages(self):
        return self.rgb.stages

    uses_flow = True  # the trainer passes the batch's flow clips to forward()

    def forward(self, x: torch.Tensor, flow: torch.Tensor | None = None):
        """RGB clip -> logits; with ``flow`` (training) -> (logits, α · distillation term)."""
        feats = self.rgb.forward_features(x)
        logits = self.rgb.head(feats)
        if flow is None:
            return logits
        with torch.no_grad():
            teacher = self.flow.forward_features(flow).mean((2, 3, 4))
        return logits, self.alpha * F.mse_loss(feats.mean((2, 3, 4)), teacher)

    def distillation_loss(self, rgb: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
        """MSE between the pooled features of the RGB stream and of the frozen flow teacher."""
        return self.forward(rgb, flow)[1] / self.alpha
