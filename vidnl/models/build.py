"""Model registry: ``build_model(cfg)`` reads the config; modules themselves take plain arguments."""

from __future__ import annotations

from typing import Callable

import torch.nn as nn
from fvcore.common.config import CfgNode

from ..nonlocal_blocks import build_nonlocal_block, insert_nonlocal
from .p3d import P3D_BLOCKS
from .resnet import STAGE_BLOCKS, VideoResNet
from .resnet3d import RESNET3D_BLOCKS

MODEL_REGISTRY: dict[str, Callable[[CfgNode], nn.Module]] = {}
# name -> function cfg -> (stage names, residual blocks per stage): what NONLOCAL.LOCATION indexes.
MODEL_STAGES: dict[str, Callable[[CfgNode], tuple[tuple[str, ...], tuple[int, ...]]]] = {}


def register_model(name: str, stages: Callable[[CfgNode], tuple[tuple[str, ...], tuple[int, ...]]]):
    """Register a builder ``fn(cfg) -> nn.Module`` under MODEL.ARCH ``name``. ``stages(cfg)``
    returns the stage names and block counts of the configured model (raise ValueError naming
    the key for an unsupported depth); config validation checks NONLOCAL.LOCATION against it."""
    def wrap(fn):
        if name in MODEL_REGISTRY:
            raise KeyError(f"model {name!r} registered twice")
        MODEL_REGISTRY[name] = fn
        MODEL_STAGES[name] = stages
        return fn
    return wrap


def model_stages(cfg: CfgNode) -> tuple[tuple[str, ...], tuple[int, ...]]:
    if cfg.MODEL.ARCH not in MODEL_STAGES:
        raise ValueError(f"MODEL.ARCH {cfg.MODEL.ARCH!r} is not registered; known: {sorted(MODEL_STAGES)}")
    return MODEL_STAGES[cfg.MODEL.ARCH](cfg)


def _resnet_stages(cfg: CfgNode) -> tuple[tuple[str, ...], tuple[int, ...]]:
    if cfg.RESNET.DEPTH not in STAGE_BLOCKS:
        raise ValueError(f"RESNET.DEPTH: {cfg.RESNET.DEPTH} is not available for {cfg.MODEL.ARCH}; "
                         f"choose one of {sorted(STAGE_BLOCKS)}.")
    return ("res2", "res3", "res4", "res5"), STAGE_BLOCKS[cfg.RESNET.DEPTH]


def nonlocal_options(cfg: CfgNode) -> dict:
    """Block arguments from cfg.NONLOCAL; options left at their defaults are passed as None so
    that a type which does not take them accepts the config, and the style decides them."""
    nl = cfg.NONLOCAL
    return {
        "style": nl.STYLE,
        "pool_size": list(nl.POOL) or None,
        "mode": nl.MODE,
        "implementation": nl.IMPLEMENTATION,
        "zero_init_final_bn": nl.ZERO_INIT_FINAL_BN,
        "bn_eps": cfg.BN.EPSILON,
        "bn_momentum": cfg.BN.MOMENTUM,
        "kernel": nl.KERNEL or None,
        "norm": nl.NORM or None,
        "order": nl.ORDER or None,
        "groups": nl.GROUPS if nl.GROUPS != 1 else None,
        "recurrence": nl.RECURRENCE if nl.RECURRENCE != 2 else None,
        "num_stages": nl.NS_STAGES if nl.NS_STAGES != 1 else None,
        "num_descriptors": nl.NUM_DESCRIPTORS or None,
        "bias": nl.BIAS,
        "softmax_scale": nl.SOFTMAX_SCALE,
        "pool_at": nl.POOL_AT or None,
        "pool_ceil_mode": nl.POOL_CEIL_MODE,
        "output_activation": nl.OUTPUT_ACTIVATION or None,
        "a_sign": nl.A_SIGN or None,
        "gamma": nl.CGNL_GAMMA or None,
        "beta": nl.CGNL_BETA or None,
        "norm_layer": nl.CGNL_NORM or None,
    }


def nonlocal_inner_channels(cfg: CfgNode, dim: int) -> int:
    return cfg.NONLOCAL.INNER_CHANNELS or max(1, int(round(dim * cfg.NONLOCAL.INNER_RATIO)))


def nonlocal_factory(cfg: CfgNode) -> Callable[[int], nn.Module]:
    """A function channels -> nonlocal block, configured by cfg.NONLOCAL and cfg.BN."""
    options = nonlocal_options(cfg)

    def make(dim: int) -> nn.Module:
        return build_nonlocal_block(cfg.NONLOCAL.TYPE, dim, dim_inner=nonlocal_inner_channels(cfg, dim), **options)
    return make


def _video_resnet(cfg: CfgNode) -> nn.Module:
    model = VideoResNet(
        depth=cfg.RESNET.DEPTH,
        arch=cfg.MODEL.ARCH,
        num_classes=cfg.MODEL.NUM_CLASSES,
        base_width=cfg.RESNET.BASE_WIDTH,
        in_channels=cfg.DATA.INPUT_CHANNEL_NUM,
        stem_temporal_kernel=cfg.RESNET.STEM_TEMPORAL_KERNEL or None,
        stem_temporal_stride=cfg.RESNET.STEM_TEMPORAL_STRIDE,
        pool1_temporal=tuple(cfg.RESNET.POOL1_TEMPORAL),
        pool2_temporal=tuple(cfg.RESNET.POOL2_TEMPORAL) or None,
        temporal_pool=cfg.RESNET.TEMPORAL_POOL,
        inflate=[list(s) for s in cfg.RESNET.INFLATE] or None,
        inflate_conv=cfg.RESNET.INFLATE_CONV,
        dropout=cfg.MODEL.DROPOUT_RATE,
        zero_init_final_bn=cfg.RESNET.ZERO_INIT_FINAL_BN,
        bn_eps=cfg.BN.EPSILON,
        bn_momentum=cfg.BN.MOMENTUM,
    )
    insert_nonlocal(model.stages, cfg.NONLOCAL.LOCATION, nonlocal_factory(cfg), model.stage_names)
    return model


register_model("c2d", _resnet_stages)(_video_resnet)
register_model("i3d", _resnet_stages)(_video_resnet)


def _with_nonlocal(cfg: CfgNode, model: nn.Module) -> nn.Module:
    insert_nonlocal(model.stages, cfg.NONLOCAL.LOCATION, nonlocal_factory(cfg), model.stage_names)
    return model


def _depth_stages(table: dict, names=("res2", "res3", "res4", "res5")):
    def stages(cfg: CfgNode):
        if cfg.RESNET.DEPTH not in table:
            raise ValueError(f"RESNET.DEPTH: {cfg.RESNET.DEPTH} is not available for {cfg.MODEL.ARCH}; "
                             f"choose one of {sorted(table)}.")
        return names, tuple(table[cfg.RESNET.DEPTH])
    return stages


@register_model("resnet2d", _resnet_stages)
def _resnet2d(cfg: CfgNode) -> nn.Module:
    """2D ResNet-18/50/101 (torchvision layout as 1×k×k kernels); images are clips with T = 1."""
    model = VideoResNet(depth=cfg.RESNET.DEPTH, arch="c2d", num_classes=cfg.MODEL.NUM_CLASSES,
                        base_width=cfg.RESNET.BASE_WIDTH, in_channels=cfg.DATA.INPUT_CHANNEL_NUM, temporal_pool=False,
                        dropout=cfg.MODEL.DROPOUT_RATE, zero_init_final_bn=cfg.RESNET.ZERO_INIT_FINAL_BN,
                        bn_eps=cfg.BN.EPSILON, bn_momentum=cfg.BN.MOMENTUM)
    return _with_nonlocal(cfg, model)


def _preresnet_stages(cfg: CfgNode):
    d = cfg.RESNET.DEPTH
    if d < 8 or (d - 2) % 6:
        raise ValueError(f"RESNET.DEPTH: {d} is not available for preresnet; it must be 6n + 2 (20, 56, 110, ...).")
    n = (d - 2) // 6
    return ("res1", "res2", "res3"), (n, n, n)


@register_model("preresnet", _preresnet_stages)
def _preresnet(cfg: CfgNode) -> nn.Module:
    from .preresnet import PreResNetCifar

    model = PreResNetCifar(depth=cfg.RESNET.DEPTH, num_classes=cfg.MODEL.NUM_CLASSES,
                           base_width=cfg.RESNET.BASE_WIDTH, in_channels=cfg.DATA.INPUT_CHANNEL_NUM,
                           dropout=cfg.MODEL.DROPOUT_RATE)
    return _with_nonlocal(cfg, model)


# The SNL authors' CIFAR bottleneck PreResNets by their names: "preresnet56" = [9, 9, 9], "110" = [18]*3.
SNL_CODE_PRERESNET_BLOCKS = {56: (9, 9, 9), 110: (18, 18, 18)}


@register_model("preresnet_snl_code", _depth_stages(SNL_CODE_PRERESNET_BLOCKS, ("res1", "res2", "res3")))
def _preresnet_snl_code(cfg: CfgNode) -> nn.Module:
    """The bottleneck PreResNet of the SNL authors' classification code (Zhu et al. 2021 (SNL), Tables 2-5)."""
    from .preresnet import PreResNetBottleneckCifar

    model = PreResNetBottleneckCifar(blocks=SNL_CODE_PRERESNET_BLOCKS[cfg.RESNET.DEPTH][0],
                                     num_classes=cfg.MODEL.NUM_CLASSES, base_width=cfg.RESNET.BASE_WIDTH,
                                     in_channels=cfg.DATA.INPUT_CHANNEL_NUM, dropout=cfg.MODEL.DROPOUT_RATE)
    return _with_nonlocal(cfg, model)


@register_model("resnet3d", _depth_stages(RESNET3D_BLOCKS))
def _resnet3d(cfg: CfgNode) -> nn.Module:
    """Hara et al.'s 3D-ResNet (RESNET.CARDINALITY 1) or 3D-ResNeXt (e.g. 32)."""
    from .resnet3d import ResNet3D

    model = ResNet3D(depth=cfg.RESNET.DEPTH, num_classes=cfg.MODEL.NUM_CLASSES, base_width=cfg.RESNET.BASE_WIDTH,
                     in_channels=cfg.DATA.INPUT_CHANNEL_NUM, cardinality=cfg.RESNET.CARDINALITY,
                     dropout=cfg.MODEL.DROPOUT_RATE, zero_init_final_bn=cfg.RESNET.ZERO_INIT_FINAL_BN,
                     shortcut=cfg.RESNET.SHORTCUT)
    return _with_nonlocal(cfg, model)


@register_model("p3d", _depth_stages(P3D_BLOCKS))
def _p3d(cfg: CfgNode) -> nn.Module:
    from .p3d import P3DResNet

    model = P3DResNet(depth=cfg.RESNET.DEPTH, num_classes=cfg.MODEL.NUM_CLASSES, base_width=cfg.RESNET.BASE_WIDTH,
                      in_channels=cfg.DATA.INPUT_CHANNEL_NUM, dropout=cfg.MODEL.DROPOUT_RATE,
                      temporal_pool=cfg.RESNET.TEMPORAL_POOL)
    return _with_nonlocal(cfg, model)


@register_model("mars", _depth_stages(RESNET3D_BLOCKS))
def _mars(cfg: CfgNode) -> nn.Module:
    """RGB 3D-ResNeXt with a frozen flow teacher (loaded from MODEL.MARS_FLOW_CHECKPOINT)."""
    from .mars import MARS

    model = MARS(num_classes=cfg.MODEL.NUM_CLASSES, depth=cfg.RESNET.DEPTH, base_width=cfg.RESNET.BASE_WIDTH,
                 cardinality=cfg.RESNET.CARDINALITY, alpha=cfg.MODEL.MARS_ALPHA, dropout=cfg.MODEL.DROPOUT_RATE)
    if cfg.MODEL.MARS_FLOW_CHECKPOINT:
        from ..engine.checkpoint import load_weights

        # the teacher's classifier is never used (it may have other classes): not loaded
        load_weights(model.flow, cfg.MODEL.MARS_FLOW_CHECKPOINT, fmt="auto", skip=("head.*",))
        model.freeze_teacher()
    return _with_nonlocal(cfg, model)


@register_model("vtn", _resnet_stages)
def _vtn(cfg: CfgNode) -> nn.Module:
    from .vtn import VTN

    v = cfg.VTN
    model = VTN(num_classes=cfg.MODEL.NUM_CLASSES, depth=cfg.RESNET.DEPTH, base_width=cfg.RESNET.BASE_WIDTH,
                in_channels=cfg.DATA.INPUT_CHANNEL_NUM, dim=v.DIM, layers=v.NUM_LAYERS, heads=v.NUM_HEADS,
                attention=v.ATTENTION, max_frames=v.MAX_FRAMES, dropout=cfg.MODEL.DROPOUT_RATE)
    return _with_nonlocal(cfg, model)


def build_model(cfg: CfgNode) -> nn.Module:
    """The model named by cfg.MODEL.ARCH, with nonlocal blocks at cfg.NONLOCAL.LOCATION."""
    if cfg.MODEL.ARCH not in MODEL_REGISTRY:
        raise KeyError(f"MODEL.ARCH {cfg.MODEL.ARCH!r} is not registered; known: {sorted(MODEL_REGISTRY)}")
    return MODEL_REGISTRY[cfg.MODEL.ARCH](cfg)
