"""ResNet50tp (Gao & Nevatia 2018, "Revisiting Temporal Modeling for Video-based Person ReID"):
a 2D ResNet-50 applied to every frame, spatial then temporal average pooling, optional BN-neck,
an identity classifier for training; MODEL.ARCH "resnet50tp" (MODEL.TASK "reid").

Nonlocal blocks (NONLOCAL.*) sit beside the residual blocks of the 2D network and see the clip as
a whole: around each block the (B·T)×C×H×W frame features are viewed as B×C×T×H×W, so a
"spacetime" block relates every position of every frame of the clip. Table 9 of Zhu et al. 2021
(SNL) puts one block right before the last residual block of res4:
``NONLOCAL.LOCATION [[], [], [4], []]``.

With RESNET.BASE_WIDTH 64 the backbone is ``torchvision.models.resnet50(weights=None)`` (its
parameter names unchanged, so a torchvision state dict loads into ``model.backbone``); other
widths build the same structure from torchvision's Bottleneck with 1/64 of the width per unit
(tiny models for tests).
"""

from __future__ import annotations

import functools
import logging

import torch
import torch.nn as nn
import torchvision
from fvcore.common.config import CfgNode
from torchvision.models.resnet import Bottleneck, conv1x1

from ..nonlocal_blocks import insert_nonlocal
from .build import nonlocal_factory, register_model
from .layers import ResStage

logger = logging.getLogger(__name__)

RESNET50_BLOCKS = (3, 4, 6, 3)
STAGE_NAMES = ("res2", "res3", "res4", "res5")


def FrameStage(layer: nn.Sequential, out_channels: int) -> ResStage:
    """One torchvision ResNet layer run on frames, with nonlocal blocks over the clip: a
    ``layers.ResStage`` whose residual blocks are children ``"0"``..``"n-1"`` (torchvision's
    names, e.g. ``layer3.4.conv1.weight``), called as ``stage(frames, num_frames)``."""
    return ResStage(list(layer), out_channels, flat_names=True)


def _make_layer(inplanes: int, planes: int, blocks: int, stride: int, norm_layer) -> nn.Sequential:
    """A torchvision-style ResNet layer of Bottlenecks (stride in the 3×3, projection shortcut)."""
    downsample = None
    if stride != 1 or inplanes != planes * Bottleneck.expansion:
        downsample = nn.Sequential(conv1x1(inplanes, planes * Bottleneck.expansion, stride),
                                   norm_layer(planes * Bottleneck.expansion))
    layers = [Bottleneck(inplanes, planes, stride, downsample, norm_layer=norm_layer)]
    layers += [Bottleneck(planes * Bottleneck.expansion, planes, norm_layer=norm_layer) for _ in range(1, blocks)]
    return nn.Sequential(*layers)


class FrameResNet50(nn.Module):
    """2D ResNet-50 on the frames of clips: B×C×T×H×W -> per-clip features B×(32·width)
    (spatial average per frame, then average over the T frames)."""

    stage_names = STAGE_NAMES

    def __init__(self, base_width: int = 64, zero_init_residual: bool = False, bn_eps: float = 1e-5,
                 bn_momentum: float = 0.1):
        super().__init__()
        norm_layer = functools.partial(nn.BatchNorm2d, eps=bn_eps, momentum=bn_momentum)
        if base_width == 64:
            tv = torchvision.models.resnet50(weights=None, zero_init_residual=zero_init_residual,
                                             norm_layer=norm_layer)
            stem = (tv.conv1, tv.bn1, tv.relu, tv.maxpool)
            layers = [tv.layer1, tv.layer2, tv.layer3, tv.layer4]
        else:
            stem = (nn.Conv2d(3, base_width, 7, 2, 3, bias=False), norm_layer(base_width), nn.ReLU(inplace=True),
                    nn.MaxPool2d(3, 2, 1))
            layers, inplanes = [], base_width
            for s, n in enumerate(RESNET50_BLOCKS):
                planes = base_width * 2 ** s
                layers.append(_make_layer(inplanes, planes, n, 1 if s == 0 else 2, norm_layer))
                inplanes = planes * Bottleneck.expansion
            self._init_like_torchvision(stem, layers, zero_init_residual)
        self.conv1, self.bn1, self.relu, self.maxpool = stem
        widths = [base_width * 2 ** s * Bottleneck.expansion for s in range(4)]
        self.layer1, self.layer2, self.layer3, self.layer4 = (FrameStage(l, w) for l, w in zip(layers, widths))
        self.num_features = widths[-1]

    @staticmethod
    def _init_like_torchvision(stem, layers, zero_init_residual: bool) -> None:
        for m in [*stem, *layers]:
            for mod in m.modules():
                if isinstance(mod, nn.Conv2d):
                    nn.init.kaiming_normal_(mod.weight, mode="fan_out", nonlinearity="relu")
                elif isinstance(mod, nn.BatchNorm2d):
                    nn.init.ones_(mod.weight)
                    nn.init.zeros_(mod.bias)
        if zero_init_residual:
            for layer in layers:
                for block in layer:
                    nn.init.zeros_(block.bn3.weight)

    @property
    def stages(self) -> list[ResStage]:
        return [self.layer1, self.layer2, self.layer3, self.layer4]

    def forward_maps(self, x: torch.Tensor) -> torch.Tensor:
        """B×C×T×H×W -> (B·T)×F×H/32×W/32 frame feature maps."""
        b, c, t, h, w = x.shape
        x = x.transpose(1, 2).reshape(b * t, c, h, w).contiguous()  # NCHW frames, whatever the input strides
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for stage in self.stages:
            x = stage(x, t)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """B×C×T×H×W -> B×F: spatial average per frame, temporal average over the clip."""
        b, t = x.shape[0], x.shape[2]
        f = self.forward_maps(x).mean(dim=(2, 3))  # (B·T)×F
        return f.view(b, t, -1).mean(dim=1)


class ResNet50TP(nn.Module):
    """ResNet50tp for video re-ID.

    Args:
        num_classes: training identities (the classifier's outputs).
        base_width: 64 for the torchvision ResNet-50; small values give tiny models.
        embed_dim: 0 uses the pooled backbone features (32·base_width = 2048); > 0 adds
            Linear + BatchNorm1d to ``embed_dim``.
        bnneck: BatchNorm1d between the features and the classifier (Luo et al. 2019); the
            test embedding is then taken after it.
    Forward: B×C×T×H×W -> training: (logits B×num_classes, features B×D) (the triplet loss takes
    the features before the BN-neck); eval: embeddings B×D.
    """

    stage_names = STAGE_NAMES

    def __init__(self, num_classes: int, *, base_width: int = 64, embed_dim: int = 0, bnneck: bool = False,
                 zero_init_residual: bool = False, bn_eps: float = 1e-5, bn_momentum: float = 0.1):
        super().__init__()
        self.backbone = FrameResNet50(base_width, zero_init_residual, bn_eps, bn_momentum)
        dim = self.backbone.num_features
        self.embed = None
        if embed_dim > 0:
            self.embed = nn.Sequential(nn.Linear(dim, embed_dim), nn.BatchNorm1d(embed_dim, eps=bn_eps,
                                                                                  momentum=bn_momentum))
            dim = embed_dim
        self.feature_dim = dim
        self.neck = None
        if bnneck:
            self.neck = nn.BatchNorm1d(dim, eps=bn_eps, momentum=bn_momentum)
            self.neck.bias.requires_grad_(False)  # no shift, as in the BNNeck paper
        self.classifier = nn.Linear(dim, num_classes, bias=not bnneck)
        nn.init.normal_(self.classifier.weight, std=0.001)
        if self.classifier.bias is not None:
            nn.init.zeros_(self.classifier.bias)

    @property
    def stages(self) -> list[ResStage]:
        return self.backbone.stages

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """B×C×T×H×W -> B×D (before the BN-neck)."""
        f = self.backbone(x)
        return self.embed(f) if self.embed is not None else f

    def forward(self, x: torch.Tensor):
        f = self.features(x)
        g = self.neck(f) if self.neck is not None else f
        if self.training:
            return self.classifier(g), f
        return g

    def load_backbone_weights(self, path: str) -> dict:
        """Load a torchvision-layout ResNet-50 state dict (``conv1.weight``, ``layer1.0.conv1.weight``,
        ...) from ``path`` into the backbone, strictly except for ``fc.*`` (the ImageNet classifier)
        and the nonlocal blocks (new). Never downloads."""
        from .weights import extract_model_state, load_checkpoint_file, load_model_weights

        state = extract_model_state(load_checkpoint_file(path))
        if state and all(k.startswith("backbone.") for k in state):
            state = {k[len("backbone."):]: v for k, v in state.items()}
        # an ImageNet classifier has fc.*; nonlocal blocks are new (they start as the identity)
        return load_model_weights(self.backbone, state, source=path, skip=("fc.*", "*.nonlocal_blocks.*"))


def _stages(cfg: CfgNode) -> tuple[tuple[str, ...], tuple[int, ...]]:
    if cfg.RESNET.DEPTH != 50:
        raise ValueError(f"RESNET.DEPTH: {cfg.RESNET.DEPTH} is not available for resnet50tp (a ResNet-50); "
                         f"choose one of [50].")
    return STAGE_NAMES, RESNET50_BLOCKS


@register_model("resnet50tp", _stages)
def build_resnet50tp(cfg: CfgNode) -> ResNet50TP:
    """ResNet50tp from the config, nonlocal blocks at NONLOCAL.LOCATION (per stage res2..res5)."""
    model = ResNet50TP(cfg.MODEL.NUM_CLASSES, base_width=cfg.RESNET.BASE_WIDTH, embed_dim=cfg.REID.EMBED_DIM,
                       bnneck=cfg.REID.BNNECK, zero_init_residual=cfg.RESNET.ZERO_INIT_FINAL_BN,
                       bn_eps=cfg.BN.EPSILON, bn_momentum=cfg.BN.MOMENTUM)
    insert_nonlocal(model.stages, list(cfg.NONLOCAL.LOCATION)[:len(STAGE_NAMES)], nonlocal_factory(cfg), STAGE_NAMES)
    return model
