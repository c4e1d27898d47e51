"""Video ResNets: C2D and I3D of Wang et al. 2018 (NL), Table 1 and §4, depths 18 / 50 / 101.

C2D: every kernel is 1×k×k (frame by frame); time is only pooled. I3D: the stem is 5×7×7 and
some residual blocks have a temporal kernel: ``inflate_conv="1x1"`` turns the first 1×1 of a
bottleneck into 3×1×1 (I3D 3×1×1, the released models), ``"3x3"`` turns its 3×3 into 3×3×3
(I3D 3×3×3 of Wang et al. 2018 (NL) Table 2e); a basic block inflates its first 3×3.

The temporal strides and pools are arguments, so one class builds the networks of
``RESNET_PRESETS``: Wang et al. 2018 (NL) Table 1 (32 frames: conv1 stride 2,2,2, pool1 3×3×3 stride 2,
pool2 3×1×1 stride 2; res3-res5 at T = 4) and the released 8×8 models of PySlowFast,
pytorchvideo and the Caffe2 release (8 frames: stem stride 1, pool1 1×3×3, pool2 2×1×1 stride 2
without padding; res2 inflated in every block).

Input B×C×T×H×W; output of ``forward_features`` B×(8·w·e)×T'×H/32×W/32 (e = 4 for bottleneck).
"""

from __future__ import annotations

from functools import partial
from typing import Sequence

import torch
import torch.nn as nn

from .heads import ClassificationHead
from .layers import BasicBlock, Bottleneck, ResidualBlock, ResStage, projection_shortcut, zero_init_final_bns

STAGE_BLOCKS = {18: (2, 2, 2, 2), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}


def default_inflate_pattern(stage_blocks: Sequence[int]) -> list[list[int]]:
    """The I3D inflation of the released models (Caffe2 release, PySlowFast, pytorchvideo):
    every block of res2, every other block of res3 and res4 from block 0, and of res5 from
    block 1 (Wang et al. 2018: "we only inflate one kernel for every 2 residual blocks")."""
    last = len(stage_blocks) - 1
    return [[1] * n if s == 0 else [int(i % 2 == (1 if s == last else 0)) for i in range(n)]
            for s, n in enumerate(stage_blocks)]


def i3d_block(in_ch: int, width: int, stride: int, temporal_kernel: int, bn_eps: float, bn_mom: float,
              bottleneck: bool, inflate_conv: str = "1x1") -> ResidualBlock:
    """A C2D/I3D residual block (``layers.BasicBlock`` / ``layers.Bottleneck``) with the spatial
    ``stride`` and a temporal kernel ``temporal_kernel`` in the inflated conv: basic block: the
    first 3×3 becomes t×3×3; bottleneck: the first 1×1 becomes t×1×1 (``inflate_conv="1x1"``,
    the released models) or the 3×3 becomes t×3×3 (``"3x3"``); 4× expansion, stride in the 3×3
    (ResNet v1.5, PySlowFast)."""
    t = temporal_kernel
    norm = partial(nn.BatchNorm3d, eps=bn_eps, momentum=bn_mom)
    stride3 = (1, stride, stride)
    out_ch = width * 4 if bottleneck else width
    shortcut = projection_shortcut(in_ch, out_ch, stride3, norm)
    if not bottleneck:
        return BasicBlock(in_ch, out_ch, kernel1=(t, 3, 3), kernel2=(1, 3, 3), stride=stride3, shortcut=shortcut,
                          norm=norm)
    t1, t2 = (t, 1) if inflate_conv == "1x1" else (1, t)
    return Bottleneck(in_ch, width, out_ch, kernel1=(t1, 1, 1), kernel2=(t2, 3, 3), stride=stride3,
                      shortcut=shortcut, norm=norm)


INFLATE_CONVS = ("1x1", "3x3")


class VideoResNet(nn.Module):
    """C2D / I3D ResNet backbone with a classification head.

    Args:
        depth: 18, 50 or 101.
        arch: "c2d" (no temporal kernels) or "i3d".
        num_classes: classifier outputs.
        base_width: stem channels (64 standard; small values give tiny models).
        in_channels: input channels (3 for RGB).
        stem_temporal_kernel: t of the t×7×7 stem conv; None: 5 for I3D, 1 for C2D.
        stem_temporal_stride: temporal stride of the stem conv (spatial stride 2).
        pool1_temporal: (kernel, stride) in time of the stem max-pool (3×3 stride 2 in space,
            padding kernel // 2).
        pool2_temporal: (kernel, stride, padding) of the temporal max-pool after res2; None: none.
        temporal_pool: False removes the pool after res2 whatever ``pool2_temporal`` says.
        inflate: I3D only, per stage a 0/1 list (1 = temporal kernel 3); None = the released
            pattern (``default_inflate_pattern``).
        inflate_conv: which conv of an inflated bottleneck gets the temporal kernel, "1x1"
            (3×1×1) or "3x3" (3×3×3).
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
        stem_temporal_kernel: int | None = None,
        stem_temporal_stride: int = 1,
        pool1_temporal: Sequence[int] = (1, 1),
        pool2_temporal: Sequence[int] | None = (2, 2, 0),
        temporal_pool: bool = True,
        inflate: Sequence[Sequence[int]] | None = None,
        inflate_conv: str = "1x1",
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
        if inflate_conv not in INFLATE_CONVS:
            raise ValueError(f"inflate_conv must be one of {INFLATE_CONVS}, got {inflate_conv!r}")
        if len(pool1_temporal) != 2 or min(pool1_temporal) < 1:
            raise ValueError(f"pool1_temporal must be (kernel, stride) >= 1, got {tuple(pool1_temporal)}")
        if pool2_temporal is not None and (len(pool2_temporal) != 3 or min(pool2_temporal[:2]) < 1
                                           or not 0 <= pool2_temporal[2] <= pool2_temporal[0] // 2):
            raise ValueError(f"pool2_temporal must be (kernel, stride, padding) with kernel, stride >= 1 and "
                             f"0 <= padding <= kernel // 2, got {tuple(pool2_temporal)}")
        stage_blocks = STAGE_BLOCKS[depth]
        bottleneck = depth >= 50
        if arch == "c2d":
            inflate = [[0] * n for n in stage_blocks]
        elif not inflate:
            inflate = default_inflate_pattern(stage_blocks)
        if len(inflate) != 4 or any(len(s) != n for s, n in zip(inflate, stage_blocks)):
            raise ValueError(f"inflate must give one 0/1 per residual block {list(stage_blocks)}, got {inflate}")
        self.arch, self.depth, self.inflate = arch, depth, [list(s) for s in inflate]
        self.inflate_conv = inflate_conv

        t_stem = stem_temporal_kernel if stem_temporal_kernel else (5 if arch == "i3d" else 1)
        k1, s1 = pool1_temporal
        self.stem = nn.Sequential(
            nn.Conv3d(in_channels, base_width, (t_stem, 7, 7), (stem_temporal_stride, 2, 2), (t_stem // 2, 3, 3),
                      bias=False),
            nn.BatchNorm3d(base_width, eps=bn_eps, momentum=bn_momentum),
            nn.ReLU(inplace=True),
            nn.MaxPool3d((k1, 3, 3), (s1, 2, 2), (k1 // 2, 1, 1)),
        )
        in_ch = base_width
        stages = []
        for s, n in enumerate(stage_blocks):
            width = base_width * 2 ** s
            blocks = []
            for i in range(n):
                stride = 2 if (s > 0 and i == 0) else 1
                t = 3 if self.inflate[s][i] else 1
                blocks.append(i3d_block(in_ch, width, stride, t, bn_eps, bn_momentum, bottleneck, inflate_conv))
                in_ch = blocks[-1].out_channels
            stages.append(ResStage(blocks, in_ch))
        self.res2, self.res3, self.res4, self.res5 = stages
        if temporal_pool and pool2_temporal is not None:
            k2, s2, p2 = pool2_temporal
            self.pool2 = nn.MaxPool3d((k2, 1, 1), (s2, 1, 1), (p2, 0, 0))
        else:
            self.pool2 = nn.Identity()
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
            zero_init_final_bns(self)

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



# Temporal layout of the published networks (arguments of VideoResNet; depth, width, classes
# and dropout are chosen separately). Stage outputs for a 224² input are tested against the
# sources in tests/test_presets.py.
RESNET_PRESETS: dict[str, dict] = {
    # Wang et al. 2018 (NL) Table 1: 32×224² -> conv1 16×112², pool1 8×56², pool2 4×56², res5 4×7²
    "c2d_table1": dict(arch="c2d", stem_temporal_stride=2, pool1_temporal=(3, 2), pool2_temporal=(3, 2, 1)),
    "i3d_table1": dict(arch="i3d", stem_temporal_stride=2, pool1_temporal=(3, 2), pool2_temporal=(3, 2, 1)),
    # Wang et al. 2018 (NL) Table 2e: the 3×3 of every other block inflated to 3×3×3
    "i3d3x3x3_table1": dict(arch="i3d", stem_temporal_stride=2, pool1_temporal=(3, 2), pool2_temporal=(3, 2, 1),
                            inflate_conv="3x3"),
    # the released 8×8 models (PySlowFast C2D/I3D/I3D_NLN_8x8_R50, pytorchvideo c2d_r50 / i3d_r50):
    # 8×224² -> stem 8×112², pool1 8×56², pool2 4×56², res5 4×7²
    "c2d_8x8": dict(arch="c2d", stem_temporal_stride=1, pool1_temporal=(1, 1), pool2_temporal=(2, 2, 0)),
    "i3d_8x8": dict(arch="i3d", stem_temporal_stride=1, pool1_temporal=(1, 1), pool2_temporal=(2, 2, 0)),
    # Slow-only 8×8 (PySlowFast SLOW_8x8_R50, pytorchvideo slow_r50): 1×7×7 stem, no temporal
    # pool, 3×1×1 in every block of res4 and res5
    "slow_8x8": dict(arch="i3d", stem_temporal_kernel=1, stem_temporal_stride=1, pool1_temporal=(1, 1),
                     pool2_temporal=None, inflate="slow"),
}


def slow_inflate_pattern(stage_blocks: Sequence[int]) -> list[list[int]]:
    """Slow-only: no temporal kernels in res2 and res3, 3×1×1 in every block of res4 and res5."""
    return [[int(s >= 2)] * n for s, n in enumerate(stage_blocks)]


def video_resnet(preset: str, *, depth: int = 50, **kwargs) -> VideoResNet:
    """A VideoResNet of a named layout (``RESNET_PRESETS``); ``kwargs`` override any argument,
    e.g. ``video_resnet("i3d_8x8", depth=50, num_classes=101)``."""
    if preset not in RESNET_PRESETS:
        raise ValueError(f"unknown ResNet preset {preset!r}; choose one of {sorted(RESNET_PRESETS)}")
    args = dict(RESNET_PRESETS[preset])
    if args.get("inflate") == "slow":
        args["inflate"] = slow_inflate_pattern(STAGE_BLOCKS[depth])
    args.update(kwargs)
    return VideoResNet(depth=depth, **args)
