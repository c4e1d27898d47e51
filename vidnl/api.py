"""Models by name, without a config file.

    import vidnl
    vidnl.list_models()                      # ['c2d_r50', 'i3d_r50', ..., 'resnet50tp', 'vtn_r50']
    model = vidnl.create_model("i3d_r50", num_classes=101,
                               nonlocal_blocks=dict(type="snl", location=[[], [1, 3], [1, 3, 5], []]),
                               pretrained="I3D_8x8_R50.pkl")  # any supported checkpoint layout
    logits = model(torch.randn(1, 3, 8, 224, 224))  # B×C×T×H×W -> B×num_classes

A name fixes the architecture (the config keys a shipped config would set); every other choice
is a keyword: ``num_classes``, ``nonlocal_blocks`` (the ``NONLOCAL.*`` keys in lower case:
``type``, ``location``, ``pool``, ``style``, ``order``, ...) and ``config`` (any other key, e.g.
``{"RESNET.BASE_WIDTH": 16, "MODEL.DROPOUT_RATE": 0.0}``). Values are checked like a config
file's; a bad one raises ``ConfigError`` naming the key.
"""

from __future__ import annotations

from typing import Any, Iterable

import torch.nn as nn

from .errors import ConfigError

# name -> (what it is, config keys)
_MODELS: dict[str, tuple[str, dict[str, Any]]] = {}


def _add(name: str, doc: str, **keys) -> None:
    _MODELS[name] = (doc, {k.replace("__", "."): v for k, v in keys.items()})


def _register_names() -> None:
    from .models.resnet import STAGE_BLOCKS, slow_inflate_pattern

    for d in sorted(STAGE_BLOCKS):
        _add(f"c2d_r{d}", f"C2D ResNet-{d}, the released 8×8 layout (PySlowFast C2D_8x8)", MODEL__ARCH="c2d",
             RESNET__DEPTH=d)
        _add(f"i3d_r{d}", f"I3D ResNet-{d} (3×1×1 inflation), the released 8×8 layout (PySlowFast I3D_8x8, "
             "pytorchvideo i3d_r50)", MODEL__ARCH="i3d", RESNET__DEPTH=d)
        _add(f"slow_r{d}", f"Slow-only ResNet-{d}, 8×8 (PySlowFast SLOW_8x8, pytorchvideo slow_r50)",
             MODEL__ARCH="i3d", RESNET__DEPTH=d, RESNET__STEM_TEMPORAL_KERNEL=1, RESNET__POOL2_TEMPORAL=[],
             RESNET__INFLATE=slow_inflate_pattern(STAGE_BLOCKS[d]))
        table1 = dict(RESNET__DEPTH=d, RESNET__STEM_TEMPORAL_STRIDE=2, RESNET__POOL1_TEMPORAL=[3, 2],
                      RESNET__POOL2_TEMPORAL=[3, 2, 1])
        _add(f"c2d_table1_r{d}", f"C2D ResNet-{d} of Wang et al. 2018 (NL) Table 1 (32 frames)", MODEL__ARCH="c2d",
             **table1)
        _add(f"i3d_table1_r{d}", f"I3D ResNet-{d} (3×1×1) of Wang et al. 2018 (NL) Table 1 (32 frames)",
             MODEL__ARCH="i3d", **table1)
        _add(f"i3d3x3x3_table1_r{d}", f"I3D ResNet-{d} (3×3×3) of Wang et al. 2018 (NL) Table 2e",
             MODEL__ARCH="i3d", RESNET__INFLATE_CONV="3x3", **table1)
        _add(f"resnet2d_r{d}", f"2D ResNet-{d} (torchvision layout; images are clips with T = 1)",
             MODEL__ARCH="resnet2d", RESNET__DEPTH=d, DATA__NUM_FRAMES=1)
    for d in (10, 18, 34, 50, 101, 152, 200):
        _add(f"resnet3d_r{d}", f"Hara et al. 2018 3D-ResNet-{d}", MODEL__ARCH="resnet3d", RESNET__DEPTH=d,
             RESNET__SHORTCUT="A" if d < 50 else "B")
    for d in (50, 101, 152):
        _add(f"resnext3d_r{d}", f"Hara et al. 2018 3D-ResNeXt-{d} (cardinality 32)", MODEL__ARCH="resnet3d",
             RESNET__DEPTH=d, RESNET__CARDINALITY=32)
    for d in (63, 131, 199):
        _add(f"p3d{d}", f"Qiu et al. 2017 Pseudo-3D ResNet-{d} (the released P3D{d})", MODEL__ARCH="p3d",
             RESNET__DEPTH=d, DATA__NUM_FRAMES=16, DATA__TRAIN_CROP_SIZE=160, DATA__TEST_CROP_SIZE=160)
    _add("mars_rx101", "Crasto et al. 2019 MARS: RGB 3D-ResNeXt-101 with a flow teacher", MODEL__ARCH="mars",
         RESNET__DEPTH=101, RESNET__CARDINALITY=32, DATA__NUM_FRAMES=16)
    _add("vtn_r50", "Kozlov et al. 2019 VTN: ResNet-50 per frame + transformer encoder", MODEL__ARCH="vtn",
         RESNET__DEPTH=50)
    for d in (20, 56, 110):
        _add(f"preresnet{d}", f"He et al. 2016 pre-activation ResNet-{d} for CIFAR (basic blocks)",
             MODEL__ARCH="preresnet", RESNET__DEPTH=d, RESNET__BASE_WIDTH=16, DATA__NUM_FRAMES=1)
    for d in (56, 110):
        _add(f"preresnet_snl_code{d}", f"the SNL authors' CIFAR bottleneck PreResNet-{d}",
             MODEL__ARCH="preresnet_snl_code", RESNET__DEPTH=d, RESNET__BASE_WIDTH=16, DATA__NUM_FRAMES=1)
    _add("resnet50tp", "video re-ID ResNet-50 with temporal average pooling (Gao & Nevatia 2018)",
         MODEL__TASK="reid", MODEL__ARCH="resnet50tp", RESNET__DEPTH=50)


def _names() -> dict[str, tuple[str, dict[str, Any]]]:
    if not _MODELS:
        _register_names()
    return _MODELS


def list_models(pattern: str = "*") -> list[str]:
    """Names ``create_model`` accepts (fnmatch ``pattern``, e.g. ``"i3d*"``), sorted."""
    import fnmatch

    return sorted(n for n in _names() if fnmatch.fnmatch(n, pattern))


def describe_model(name: str) -> str:
    """One line on what ``name`` is."""
    return _lookup(name)[0]


def _lookup(name: str) -> tuple[str, dict[str, Any]]:
    names = _names()
    if name not in names:
        import difflib

        close = difflib.get_close_matches(name, names, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(f"unknown model name {name!r}.{hint} vidnl.list_models() lists all {len(names)}.")
    return names[name]


def _nest(flat: dict[str, Any]) -> dict:
    out: dict = {}
    for key, value in flat.items():
        node = out
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return out


def model_config(name: str, *, num_classes: int | None = None, nonlocal_blocks: dict | None = None,
                 config: dict | None = None):
    """The validated config ``create_model`` builds from (a frozen CfgNode): keys and values
    checked by the config package, and what it says about the model (MODEL.ARCH, RESNET.DEPTH,
    NONLOCAL.LOCATION, RESNET.INFLATE) by ``vidnl.models.build.check_model_config``; the block
    options are checked when ``create_model`` builds the blocks."""
    from .config.validate import config_from_dict
    from .models.build import check_model_config

    flat = dict(_lookup(name)[1])
    if num_classes is not None:
        flat["MODEL.NUM_CLASSES"] = num_classes
    for key, value in (nonlocal_blocks or {}).items():
        flat[f"NONLOCAL.{key.upper()}"] = value
    if flat.get("MODEL.TASK") == "reid" and "TRAIN.BATCH_SIZE" not in (config or {}):
        flat.update({"TRAIN.BATCH_SIZE": 8, "REID.NUM_INSTANCES": 4})
    flat.update(config or {})
    cfg = config_from_dict(_nest(flat), source=f"create_model({name!r}, ...)")
    check_model_config(cfg)
    return cfg


def create_model(name: str, *, num_classes: int | None = None, nonlocal_blocks: dict | None = None,
                 pretrained: str | None = None, weights_format: str = "auto", skip: Iterable[str] = (),
                 config: dict | None = None) -> nn.Module:
    """The model ``name`` (see ``list_models``) as an ``nn.Module`` in training mode.

    Args:
        num_classes: classifier outputs (re-ID: training identities).
        nonlocal_blocks: ``NONLOCAL.*`` keys in lower case, e.g. ``dict(type="snl",
            location=[[], [1, 3], [1, 3, 5], []], pool=[1, 2, 2])``; location lists block indices
            per stage.
        pretrained: a checkpoint in any layout vidnl reads (vidnl, PySlowFast, Caffe2 .pkl,
            pytorchvideo, mmaction2, torchvision, official SNL/CGNL, ...); every model tensor must
            come from it except those matching ``skip`` (fnmatch patterns such as ``"head.*"``).
        config: any other config key, e.g. ``{"RESNET.BASE_WIDTH": 16}``.
    """
    from .models import build_model

    cfg = model_config(name, num_classes=num_classes, nonlocal_blocks=nonlocal_blocks, config=config)
    model = build_model(cfg)
    if pretrained:
        from .models.weights import load_weights

        load_weights(model, pretrained, fmt=weights_format, inflate=cfg.MODEL.INFLATE, skip=tuple(skip))
    return model


__all__ = ["list_models", "create_model", "describe_model", "model_config"]
