"""Model registry: ``build_model(cfg)`` reads the config; modules themselves take plain arguments."""

from __future__ import annotations

from typing import Callable

import torch.nn as nn
from fvcore.common.config import CfgNode

from ..nonlocal_blocks import build_nonlocal_block, insert_nonlocal
from .resnet import VideoResNet

MODEL_REGISTRY: dict[str, Callable[[CfgNode], nn.Module]] = {}


def register_model(name: str):
    def wrap(fn):
        if name in MODEL_REGISTRY:
            raise KeyError(f"model {name!r} registered twice")
        MODEL_REGISTRY[name] = fn
        return fn
    return wrap


def nonlocal_factory(cfg: CfgNode) -> Callable[[int], nn.Module]:
    """A function channels -> nonlocal block, configured by cfg.NONLOCAL and cfg.BN."""
    nl = cfg.NONLOCAL

    def make(dim: int) -> nn.Module:
        return build_nonlocal_block(
            nl.TYPE, dim,
            dim_inner=max(1, int(round(dim * nl.INNER_RATIO))),
            pool_size=list(nl.POOL) or None,
            mode=nl.MODE,
            implementation=nl.IMPLEMENTATION,
            zero_init_final_bn=nl.ZERO_INIT_FINAL_BN,
            bn_eps=cfg.BN.EPSILON,
            bn_momentum=cfg.BN.MOMENTUM,
        )
    return make


def _video_resnet(cfg: CfgNode) -> nn.Module:
    model = VideoResNet(
        depth=cfg.RESNET.DEPTH,
        arch=cfg.MODEL.ARCH,
        num_classes=cfg.MODEL.NUM_CLASSES,
        base_width=cfg.RESNET.BASE_WIDTH,
        in_channels=cfg.DATA.INPUT_CHANNEL_NUM,
        temporal_pool=cfg.RESNET.TEMPORAL_POOL,
        inflate=[list(s) for s in cfg.RESNET.INFLATE] or None,
        dropout=cfg.MODEL.DROPOUT_RATE,
        zero_init_final_bn=cfg.RESNET.ZERO_INIT_FINAL_BN,
        bn_eps=cfg.BN.EPSILON,
        bn_momentum=cfg.BN.MOMENTUM,
    )
    insert_nonlocal(model.stages, cfg.NONLOCAL.LOCATION, nonlocal_factory(cfg), model.stage_names)
    return model


register_model("c2d")(_video_resnet)
register_model("i3d")(_video_resnet)


def build_model(cfg: CfgNode) -> nn.Module:
    """The model named by cfg.MODEL.ARCH, with nonlocal blocks at cfg.NONLOCAL.LOCATION."""
    if cfg.MODEL.ARCH not in MODEL_REGISTRY:
        raise KeyError(f"MODEL.ARCH {cfg.MODEL.ARCH!r} is not registered; known: {sorted(MODEL_REGISTRY)}")
    return MODEL_REGISTRY[cfg.MODEL.ARCH](cfg)
