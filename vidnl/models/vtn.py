"""Video Transformer Network of Kozlov, Andronov and Gritsenko 2019 (*Lightweight Network
Architecture for Real-Time Action Recognition*, arXiv 1905.08711), the "VTN" of Zhu et al. 2021
(SNL) Table 8, as the official code builds it (openvinotoolkit/training_extensions,
``pytorch_toolkit/action_recognition``, ``models/video_transformer.py`` and
``models/modules/self_attention.py``):

- every frame through a 2D ResNet (torchvision layout, ResNet-34 in the paper) without its
  average pool and classifier, a 1×1 conv to ``dim`` only where the ResNet's width is not
  ``dim``, then ``avg_pool2d`` with a 7×7 kernel and its top-left output (at 224² input the whole
  7×7 map; at larger sizes the official code also pools only the top-left 7×7 window; below 224²,
  where the official code fails, the whole map is averaged): B×T×dim;
- a trainable position table (``nn.Embedding``, ``padding_idx`` 0: row 0 is zeros and gets no
  gradient; rows 1… sinusoids) added to the frame features;
- ``layers`` post-norm decoder blocks: multi-head self-attention with per-head bias-free q/k/v
  (``heads`` × ``dim / heads``), softmax temperature √dim (not √(dim / heads)), heads concatenated
  with no output projection, dropout, residual, LayerNorm; then a position-wise FFN (1×1 Conv1d
  dim→2·dim, ReLU, 2·dim→dim), dropout, residual, LayerNorm. Their LayerNorm divides by the
  unbiased standard deviation plus ε = 1e-3 and is the identity for a one-frame sequence;
  dropout 0.1 on the attention weights, the merged heads and the FFN output;
- a linear classifier on every frame; the logits are averaged over the frames.

Parameter names are the official ones (``resnet.N`` = the ResNet's children, ``reduce_conv``,
``self_attention_decoder.…``, ``fc``), so an official checkpoint (with or without DataParallel's
``module.`` prefix) loads strictly with no key map. Input B×C×T×H×W (vidnl's layout; the official
code takes B×T×C×H×W); logits B×num_classes. T may not exceed the position table's rows
(``max_frames``; the official code builds it with the clip length, 16).

``attention`` other than "mha" is a nonlocal block type of ``vidnl.nonlocal_blocks`` ("snl" for
Zhu et al. 2021 (SNL) Appendix C.1, "nl", "ns", ...): it replaces each multi-head self-attention
by that block over the frame sequence (:class:`NonlocalAttention`), everything else unchanged.
The parameters of such a sublayer are ``slf_attn.nonlocal_block.*`` (and ``slf_attn.layer_norm``);
it has no ``w_qs``/``w_ks``/``w_vs``.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

from ..nonlocal_blocks import build_nonlocal_block, list_blocks
from .weight_formats import DROP

DEPTHS = (18, 34, 50, 101, 152)  # torchvision ResNets; the paper's encoder is ResNet-34
POOL = 7  # the official avg_pool2d kernel (224² input / 32)
ATTENTIONS = ("mha",) + tuple(list_blocks())  # "mha": the official attention; else a nonlocal block type


class LayerNormalization(nn.Module):
    """The official code's LayerNorm over the last dim: (z − mean) / (unbiased std + eps) · a_2 + b_2;
    the identity when dim 1 (time) has one element."""

    def __init__(self, dim: int, eps: float = 1e-3):
        super().__init__()
        self.eps = eps
        self.a_2 = nn.Parameter(torch.ones(dim))
        self.b_2 = nn.Parameter(torch.zeros(dim))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.shape[1] == 1:
            return z
        mean = z.mean(-1, keepdim=True)
        std = z.std(-1, keepdim=True)  # unbiased, as torch.std's default
        return (z - mean) / (std + self.eps) * self.a_2 + self.b_2


class MultiHeadAttention(nn.Module):
    """Post-norm self-attention sublayer: LN(x + Dropout(concat_h softmax(q_h k_hᵀ / √dim) v_h)).
    ``w_qs``/``w_ks``/``w_vs`` are heads × dim × head_dim (no biases); no output projection."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.1, attn_dropout: float = 0.1):
        super().__init__()
        if dim % heads:
            raise ValueError(f"VTN width {dim} must be divisible by its {heads} heads")
        head_dim = dim // heads
        self.heads = heads
        self.temperature = math.sqrt(dim)
        self.w_qs = nn.Parameter(torch.empty(heads, dim, head_dim))
        self.w_ks = nn.Parameter(torch.empty(heads, dim, head_dim))
        self.w_vs = nn.Parameter(torch.empty(heads, dim, head_dim))
        for w in (self.w_qs, self.w_ks, self.w_vs):
            nn.init.xavier_normal_(w)
        self.attn_dropout = nn.Dropout(attn_dropout)
        self.layer_norm = LayerNormalization(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # B×T×D
        q = torch.einsum("btd,hde->bhte", x, self.w_qs)
        k = torch.einsum("btd,hde->bhte", x, self.w_ks)
        v = torch.einsum("btd,hde->bhte", x, self.w_vs)
        attn = self.attn_dropout(torch.softmax(q @ k.transpose(-1, -2) / self.temperature, dim=-1))
        out = (attn @ v).permute(0, 2, 1, 3).reshape(x.shape[0], x.shape[1], -1)  # heads concatenated
        return self.layer_norm(self.dropout(out) + x)


class PositionwiseFeedForward(nn.Module):
    """LN(x + Dropout(w_2(ReLU(w_1(x))))), w_1/w_2 1×1 Conv1d over time."""

    def __init__(self, dim: int, hidden: int, dropout: float = 0.1):
        super().__init__()
        self.w_1 = nn.Conv1d(dim, hidden, 1)
        self.w_2 = nn.Conv1d(hidden, dim, 1)
        self.layer_norm = LayerNormalization(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # B×T×D
        out = self.w_2(F.relu(self.w_1(x.transpose(1, 2)))).transpose(1, 2)
        return self.layer_norm(self.dropout(out) + x)


class NonlocalAttention(nn.Module):
    """The attention sublayer with a nonlocal block in place of the multi-head attention (Zhu et
    al. 2021 (SNL), Appendix C.1): LN(x + Dropout(NL(x) − x)).

    The frames are the block's graph: x (B×T×D) enters as B×D×T×1×1, so θ/φ/g are 1×1×1
    convolutions applied per frame and the affinity is T×T, as the attention weights were.
    NL(x) − x is the block's own normalised filter output (for SNL: BN(Z W1 + A Z W2)); the
    block's residual is taken out because the decoder's residual and LayerNorm stay as they are
    (one residual, not two). The merged-heads dropout of the official sublayer stays on that
    output; there are no attention weights to drop out. With the block's output BN scale at zero
    (``zero_init_final_bn``) a new sublayer is LN(x)."""

    def __init__(self, block_type: str, dim: int, dropout: float = 0.1, **block_options):
        super().__init__()
        mode = block_options.get("mode") or "spacetime"
        if mode == "space":
            raise ValueError(f"mode={mode!r} makes one graph per frame (one node each); a nonlocal block over the "
                             f"VTN's frame sequence needs mode 'spacetime' or 'time' (the same graph here)")
        pool = block_options.get("pool_size")
        if pool and any(k != 1 for k in tuple(pool)[1:]):
            raise ValueError(f"pool_size={list(pool)} pools in space, but a VTN frame is one node (1×1): only the "
                             f"time entry may be > 1, e.g. [2, 1, 1]")
        self.nonlocal_block = build_nonlocal_block(block_type, dim, **block_options)
        self.layer_norm = LayerNormalization(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # B×T×D
        nodes = x.transpose(1, 2)[..., None, None]  # B×D×T×1×1
        branch = (self.nonlocal_block(nodes) - nodes)[..., 0, 0].transpose(1, 2)  # B×T×D
        return self.layer_norm(self.dropout(branch) + x)


class DecoderBlock(nn.Module):
    def __init__(self, dim: int, heads: int, hidden: int, dropout: float = 0.1, attention: str = "mha",
                 nonlocal_options: dict | None = None):
        super().__init__()
        if attention == "mha":
            self.slf_attn = MultiHeadAttention(dim, heads, dropout)
        else:
            self.slf_attn = NonlocalAttention(attention, dim, dropout, **(nonlocal_options or {}))
        self.pos_ffn = PositionwiseFeedForward(dim, hidden, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pos_ffn(self.slf_attn(x))


def torchvision_encoder_key(k: str) -> str | None:
    """A torchvision ResNet's key -> the VTN's (its children as ``resnet.N``: conv1 0, bn1 1,
    layer1-4 4-7); the ImageNet classifier ``fc.*`` is dropped (not part of the encoder)."""
    head, _, rest = k.partition(".")
    if head in ("conv1", "bn1"):
        return f"resnet.{0 if head == 'conv1' else 1}.{rest}"
    if head in ("layer1", "layer2", "layer3", "layer4"):
        return f"resnet.{int(head[5]) + 3}.{rest}"
    return DROP if head == "fc" else None


def position_table(rows: int, dim: int) -> torch.Tensor:
    """rows×dim: row 0 zeros; row p ≥ 1 is sin(p / 10000^(2⌊j/2⌋/dim)) at even j, cos at odd j."""
    pos = torch.arange(rows, dtype=torch.float64)[:, None]
    j = torch.arange(dim)
    angle = pos / torch.pow(10000.0, (2 * (j // 2)).double() / dim)
    table = torch.where(j % 2 == 0, torch.sin(angle), torch.cos(angle))
    table[0] = 0
    return table.float()


class PositionEncoding(nn.Module):
    def __init__(self, rows: int, dim: int):
        super().__init__()
        self.enc = nn.Embedding(rows, dim, padding_idx=0)
        with torch.no_grad():
            self.enc.weight.copy_(position_table(rows, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.enc(torch.arange(x.shape[1], device=x.device))


class SelfAttentionDecoder(nn.Module):
    def __init__(self, dim: int, heads: int, layers: int, rows: int, hidden_factor: int = 2, dropout: float = 0.1,
                 attention: str = "mha", nonlocal_options: dict | None = None):
        super().__init__()
        self.position_encoding = PositionEncoding(rows, dim)
        self.layers = nn.ModuleList(DecoderBlock(dim, heads, dim * hidden_factor, dropout, attention, nonlocal_options)
                                    for _ in range(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.position_encoding(x)
        for layer in self.layers:
            x = layer(x)
        return x


class VTN(nn.Module):
    """Args: ``depth`` of the per-frame torchvision ResNet (34 in the paper), ``dim`` (512),
    ``layers`` (4) and ``heads`` (8) of the decoder, ``max_frames``: rows of the position table
    (the official clip length, 16), ``dropout`` inside the decoder (0.1), ``attention``: "mha"
    (the official multi-head self-attention) or a nonlocal block type (``ATTENTIONS``) built with
    ``nonlocal_options`` (``build_nonlocal_block`` keyword arguments, e.g. ``dim_inner``)."""

    # torchvision ImageNet ResNets (MODEL.WEIGHTS_FORMAT torchvision) load into the per-frame encoder
    key_maps = {"torchvision": torchvision_encoder_key}

    def __init__(self, *, num_classes: int = 400, depth: int = 34, in_channels: int = 3, dim: int = 512,
                 layers: int = 4, heads: int = 8, max_frames: int = 16, dropout: float = 0.1, attention: str = "mha",
                 nonlocal_options: dict | None = None):
        super().__init__()
        if depth not in DEPTHS:
            raise ValueError(f"VTN's per-frame ResNet depth must be one of {DEPTHS}, got {depth}")
        if attention not in ATTENTIONS:
            raise ValueError(f"VTN attention must be one of {ATTENTIONS}, got {attention!r}")
        net = getattr(torchvision.models, f"resnet{depth}")(weights=None)
        if in_channels != 3:
            net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.resnet = nn.Sequential(*list(net.children())[:-2])  # conv1 bn1 relu maxpool layer1-4 as 0…7
        width = net.fc.in_features
        self.reduce_conv = nn.Conv2d(width, dim, 1) if width != dim else nn.Identity()
        self.self_attention_decoder = SelfAttentionDecoder(dim, heads, layers, max_frames, dropout=dropout,
                                                           attention=attention, nonlocal_options=nonlocal_options)
        self.fc = nn.Linear(dim, num_classes)
        nn.init.normal_(self.fc.weight, 0.0, 0.02)
        nn.init.zeros_(self.fc.bias)
        self.max_frames = max_frames

    def frame_features(self, x: torch.Tensor) -> torch.Tensor:
        """B×C×T×H×W -> B×T×dim."""
        b, c, t, h, w = x.shape
        if t > self.max_frames:
            raise ValueError(f"VTN got {t} frames, more than its position table's {self.max_frames} rows")
        f = self.reduce_conv(self.resnet(x.transpose(1, 2).reshape(b * t, c, h, w)))
        f = F.avg_pool2d(f, (min(POOL, f.shape[2]), min(POOL, f.shape[3])))[:, :, 0, 0]
        return f.reshape(b, t, -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.self_attention_decoder(self.frame_features(x))).mean(1)
