"""Backbones, heads and the model registry."""

from .build import MODEL_REGISTRY, build_model, register_model
from .heads import ClassificationHead
from .resnet import RESNET_PRESETS, STAGE_BLOCKS, VideoResNet, default_inflate_pattern, video_resnet
from . import reid as _reid  # registers resnet50tp (video re-ID)

__all__ = ["MODEL_REGISTRY", "build_model", "register_model", "ClassificationHead", "VideoResNet",
           "STAGE_BLOCKS", "default_inflate_pattern", "RESNET_PRESETS", "video_resnet"]
