"""A ViT-style video transformer (MODEL.ARCH ``vtn_vit``): a pre-norm transformer encoder with a
classification token (as in Neimark et al. 2021, *Video Transformer Network*) over per-frame
C2D-ResNet features. It is vidnl's own design, *not* the VTN of Kozlov et al. 2019 that Zhu et
al. 2021 (SNL) use in Table 8: that network is ``vidnl.models.vtn`` (MODEL.ARCH ``vtn``).

A 2D ResNet (C2D, so frames stay independent) embeds every frame; frame features (spatially
averaged, projected to ``dim``) get a learned positional embedding and a classification token,
pass through a transformer encoder, and the token's output is classified. Zhu et al. 2021
replace the encoder's self-attention with SNL: ``attention`` is "mha" (multi-head
self-attention), "snl" or "nl" (a 1D nonlocal block over the tokens, from vidnl.nonlocal_blocks).

Input B×C×T×H×W; logits B×num_classes.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..nonlocal_blocks import build_nonlocal_block
from .resnet import VideoResNet

ATTENTIONS = ("mha", "snl", "nl")


class EncoderLayer(nn.Module):
    """Pre-norm transformer layer: x + Attn(LN(x)), then x + MLP(LN(x)). Tokens B×L×D."""

    def __init__(self, dim: int, heads: int, attention: str, mlp_ratio: float = 4.0, dropout: float = 0.0):
        super().__init__()
        if attention not in ATTENTIONS:
            raise ValueError(f"VTN_VIT attention must be one of {ATTENTIONS}, got {attention!r}")
        self.attention = attention
        self.norm1 = nn.LayerNorm(dim)
        if attention == "mha":
            self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        else:  # the nonlocal block's residual branch on the token sequence (B×D×L, 1D form)
            self.attn = build_nonlocal_block(attention, dim, dim_inner=dim // 2, zero_init_final_bn=False)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim),
                                 nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        if self.attention == "mha":
            a = self.attn(h, h, h, need_weights=False)[0]
        else:
            t = h.transpose(1, 2)  # B×D×L
            a = (self.attn(t) - t).transpose(1, 2)
        x = x + a
        return x + self.mlp(self.norm2(x))


class VTNViT(nn.Module):
    """Args: depth/base_width of the 2D ResNet, ``dim`` token width, ``layers`` and ``heads`` of
    the encoder, ``attention`` (mha | snl | nl), ``max_frames`` for the positional embedding."""

    stage_names = ("res2", "res3", "res4", "res5")
    weights_prefix = "backbone."  # 2D ResNet weights (torchvision, PySlowFast, Caffe2) load into the backbone

    def __init__(self, *, num_classes: int = 101, depth: int = 50, base_width: int = 64, in_channels: int = 3,
                 dim: int = 512, layers: int = 3, heads: int = 8, attention: str = "mha", max_frames: int = 64,
                 dropout: float = 0.5):
        super().__init__()
        self.backbone = VideoResNet(depth=depth, arch="c2d", num_classes=1, base_width=base_width,
                                    in_channels=in_channels, temporal_pool=False, dropout=0.0)
        self.backbone.head = nn.Identity()
        self.project = nn.Linear(self.backbone.num_features, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, max_frames + 1, dim))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.encoder = nn.ModuleList(EncoderLayer(dim, heads, attention) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(dim, num_classes)
        self.max_frames = max_frames

    @property
    def stages(self):
        return self.backbone.stages

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = x.shape[2]
        if t > self.max_frames:
            raise ValueError(f"VTN got {t} frames, more than VTN.MAX_FRAMES={self.max_frames}")
        feats = self.backbone.forward_features(x).mean((3, 4)).transpose(1, 2)  # B×T×F
        tokens = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), self.project(feats)], dim=1)
        tokens = tokens + self.pos_embed[:, : t + 1]
        for layer in self.encoder:
            tokens = layer(tokens)
        return self.fc(self.dropout(self.norm(tokens[:, 0])))
