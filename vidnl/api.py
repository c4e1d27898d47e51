"""Models by name, without a config file.

    import vidnl
    vidnl.list_models()                      # ['c2d_r50', 'i3d_r50', ..., 'resnet50tp', 'vtn_r34', 'vtn_vit_r50']
    model = vidnl.create_model("i3d_r50", num_classes=101,
                               nonlocal_blocks=dict(type="snl", location=[[], [1, 3], [1, 3, 5], []]),
                               pretrained="I3D_8x8_R50.pkl")  # any supported checkpoint layout
    logits = model(torch.randn(1, 3, 8, 224, 224))  # B×C×T×H×W -> B×num_classes

A name fixes the architecture (the config keys a shipped config would set); every other choice
is a keyword: ``num_classes``, ``nonlocal_blocks`` (the ``NONLOCAL.*`` keys in lower case:
``type``, ``location``, ``pool``, ``style``, ``order``, ...) and ``config`` (any other key, e.g.
``{"RESNET.BASE_WIDTH": 16, "MODEL.DROPOUT_RATE": 0.0}``). Values are checked like a config
file's; a bad one raises ``ConfigError`` naming the key. A name's keys other than the input
settings (``DATA.*``) are fixed: ``config`` may repeat them but not change them (another
architecture is another name), nor contradict ``num_classes`` or ``nonlocal_blocks``. An
argument of the wrong type (a string where a list or a dict is expected) raises ``TypeError``.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Iterable, Mapping

import torch.nn as nn

from .errors import ConfigError

logger = logging.getLogger(__name__)

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
    _add("vtn_r34", "Kozlov et al. 2019 VTN (Lightweight Network Architecture for Real-Time Action Recognition, "
         "arXiv 1905.08711), the VTN of Zhu et al. 2021 (SNL) Table 8: ResNet-34 per frame, 4-layer post-norm "
         "self-attention decoder, frame-averaged logits; 16 frames of 224², official checkpoints load as they are",
         MODEL__ARCH="vtn", RESNET__DEPTH=34, VTN__DIM=512, VTN__NUM_LAYERS=4, VTN__NUM_HEADS=8, DATA__NUM_FRAMES=16)
    _add("vtn_vit_r50", "vidnl's ViT-style video transformer: C2D ResNet-50 per frame, 3-layer pre-norm encoder "
         "with a classification token (as in Neimark et al. 2021); not Kozlov et al.'s VTN", MODEL__ARCH="vtn_vit",
         RESNET__DEPTH=50, VTN__NUM_LAYERS=3)
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


def list_models(pattern: str | Iterable[str] = "*") -> list[str]:
    """Names ``create_model`` accepts (fnmatch ``pattern``, e.g. ``"i3d*"``, or a list of
    patterns), sorted."""
    import fnmatch

    patterns = _strings(pattern, "pattern")
    return sorted(n for n in _names() if any(fnmatch.fnmatch(n, p) for p in patterns))


def describe_model(name: str) -> str:
    """One line on what ``name`` is."""
    return _lookup(name)[0]


def _lookup(name: str) -> tuple[str, dict[str, Any]]:
    if not isinstance(name, str):
        raise TypeError(f"model name: expected a string such as 'i3d_r50' (vidnl.list_models() lists them), "
                        f"got {name!r} ({type(name).__name__})")
    names = _names()
    if name not in names:
        import difflib

        close = difflib.get_close_matches(name, names, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(f"unknown model name {name!r}.{hint} vidnl.list_models() lists all {len(names)}.")
    return names[name]


def _strings(value: str | Iterable[str], what: str) -> tuple[str, ...]:
    """One string as a 1-tuple, an iterable of strings as a tuple; TypeError for anything else
    (a string is one pattern, never its letters)."""
    if isinstance(value, str):
        return (value,)
    if isinstance(value, Mapping) or not isinstance(value, Iterable):
        raise TypeError(f"{what}: expected a string or a list of strings, got {value!r}")
    items = tuple(value)
    bad = [v for v in items if not isinstance(v, str)]
    if bad:
        raise TypeError(f"{what}: expected a string or a list of strings, got {bad[0]!r} ({type(bad[0]).__name__}) "
                        f"in {value!r}")
    return items


def _flatten(config: Mapping, prefix: str = "") -> dict[str, Any]:
    """``{"RESNET": {"DEPTH": 18}}`` or ``{"RESNET.DEPTH": 18}`` -> ``{"RESNET.DEPTH": 18}``."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        if not isinstance(key, str):
            raise TypeError(f"config: keys must be strings such as 'RESNET.DEPTH', got {key!r}")
        if isinstance(value, Mapping):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _config_keys(config: Mapping | None) -> dict[str, Any]:
    if config is None:
        return {}
    if not isinstance(config, Mapping):
        raise TypeError(f"config: expected a dict of config keys, e.g. {{'RESNET.BASE_WIDTH': 16}}, got {config!r}")
    return _flatten(config)


def _location_hint(name: str) -> str:
    """What NONLOCAL.LOCATION indexes in model ``name`` and an example that fits it (every
    other block of the inner stages: Wang et al.'s 5 blocks on a ResNet-50)."""
    from .config.validate import config_from_dict
    from .models.build import model_stages

    flat = dict(_lookup(name)[1])
    if flat.get("MODEL.TASK") == "reid":
        flat.update({"TRAIN.BATCH_SIZE": 8, "REID.NUM_INSTANCES": 4})
    stages, blocks = model_stages(config_from_dict(_nest(flat), source=name))
    example = [[] if s in (0, len(blocks) - 1) else list(range(1, b, 2)) for s, b in enumerate(blocks)]
    return (f"location: one list per stage of the residual block indices after which a block goes; {name} has "
            f"stages {', '.join(stages)} of {list(blocks)} blocks, e.g. location={example}")


def _nonlocal_keys(nonlocal_blocks: Mapping | None, name: str) -> dict[str, Any]:
    if nonlocal_blocks is None:
        return {}
    if not isinstance(nonlocal_blocks, Mapping):
        block = nonlocal_blocks if isinstance(nonlocal_blocks, str) else "snl"
        raise TypeError(
            f"nonlocal_blocks: expected a dict of NONLOCAL.* keys in lower case such as dict(type={block!r}, "
            f"location=...), got {nonlocal_blocks!r}; a block type alone does not say where the blocks go (there "
            f"are no default locations). {_location_hint(name)}")
    out = {}
    for key, value in nonlocal_blocks.items():
        if not isinstance(key, str):
            raise TypeError(f"nonlocal_blocks: keys must be strings such as 'type', 'location', got {key!r}")
        out[f"NONLOCAL.{key.upper()}"] = value
    return out


def _plain(value: Any) -> Any:
    """Tuples as lists, recursively: the form a config holds, for comparing values."""
    return [_plain(v) for v in value] if isinstance(value, (list, tuple)) else value


def _check_agrees(config: dict[str, Any], fixed: dict[str, Any], by: str) -> None:
    """ConfigError for a key of ``config`` that ``fixed`` (set by ``by``) sets to another value."""
    for key, value in config.items():
        if key in fixed and _plain(value) != _plain(fixed[key]):
            raise ConfigError(f"config {{{key!r}: {value!r}}} contradicts {by}, which sets {key} to "
                              f"{fixed[key]!r}; give it once.")


def _nest(flat: dict[str, Any]) -> dict:
    out: dict = {}
    for key, value in flat.items():
        node = out
        parts = key.split(".")
        for i, p in enumerate(parts[:-1]):
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{'.'.join(parts[:i + 1])}: a group of keys, but config gives it the value "
                                  f"{node!r} as well as {key}")
        node[parts[-1]] = value
    return out


# Keys a model name sets that ``config`` may still change (prefixes).
FREE_NAMED_KEYS = ("DATA.", "RESNET.BASE_WIDTH")


def model_config(name: str, *, num_classes: int | None = None, nonlocal_blocks: dict | None = None,
                 config: dict | None = None):
    """The validated config ``create_model`` builds from (a frozen CfgNode): keys and values
    checked by the config package, and what it says about the model (MODEL.ARCH, RESNET.DEPTH,
    NONLOCAL.LOCATION, RESNET.INFLATE) by ``vidnl.models.build.check_model_config``; the block
    options are checked when ``create_model`` builds the blocks.

    ``config`` (flat ``"KEY.SUB"`` keys or nested dicts) may not change a key the name sets
    (except ``FREE_NAMED_KEYS``: the ``DATA.*`` input settings and the width, e.g. a narrow
    network for a quick test), nor contradict ``num_classes`` or
    ``nonlocal_blocks``: ConfigError naming both. ``nonlocal_blocks`` must say where the blocks
    go (``location``, there or in ``config``)."""
    from .config.validate import config_from_dict
    from .models.build import check_model_config

    named = dict(_lookup(name)[1])
    extra = _config_keys(config)
    blocks = _nonlocal_keys(nonlocal_blocks, name)
    fixed = {k: v for k, v in named.items() if not k.startswith(FREE_NAMED_KEYS)}
    _check_agrees(extra, fixed, f"the model name {name!r}")
    if num_classes is not None:
        _check_agrees(extra, {"MODEL.NUM_CLASSES": num_classes}, f"num_classes={num_classes!r}")
    _check_agrees(extra, blocks, f"nonlocal_blocks={nonlocal_blocks!r}")
    flat = dict(named)
    if num_classes is not None:
        flat["MODEL.NUM_CLASSES"] = num_classes
    flat.update(blocks)
    if flat.get("MODEL.TASK") == "reid" and "TRAIN.BATCH_SIZE" not in extra:
        flat.update({"TRAIN.BATCH_SIZE": 8, "REID.NUM_INSTANCES": 4})
    flat.update(extra)
    cfg = config_from_dict(_nest(flat), source=f"create_model({name!r}, ...)")
    if blocks and "NONLOCAL.LOCATION" not in blocks and "NONLOCAL.LOCATION" not in extra:
        raise ConfigError(f"nonlocal_blocks={nonlocal_blocks!r} does not say where the blocks go (there are no "
                          f"default locations; without one no block is inserted). {_location_hint(name)}")
    check_model_config(cfg)
    return cfg


def _pretrained_path(pretrained) -> str | None:
    """The checkpoint path of ``pretrained`` (a path; None / False / "": none)."""
    if pretrained is None or pretrained is False or pretrained == "":
        return None
    if pretrained is True:
        raise TypeError("pretrained=True: vidnl downloads no weights; give the path of a checkpoint file (any layout "
                        "vidnl reads: docs/pretrained.md)")
    if not isinstance(pretrained, (str, os.PathLike)):
        raise TypeError(f"pretrained: expected the path of a checkpoint file, got {pretrained!r}")
    path = os.fspath(pretrained)
    if os.path.isdir(path):
        from .models.weights import CheckpointError

        raise CheckpointError(f"pretrained: {path} is a folder; expected a checkpoint file (.pyth, .pt, .pth, .pkl)")
    return path


def _check_skip(model: nn.Module, path: str, skip: tuple[str, ...], report: dict) -> None:
    """Every ``skip`` pattern matched a tensor of the model or of the file, and something was
    loaded; a pattern that matches nothing is a typo, a load of nothing is no pretraining."""
    import fnmatch

    from .models.weights import CheckpointError

    skipped = report["skipped"]
    for pattern in skip:
        if not any(fnmatch.fnmatchcase(k, pattern) for k in skipped):
            raise ConfigError(f"skip: the pattern {pattern!r} matches no tensor of the model or of {path} (patterns "
                              f"match whole keys, e.g. 'head.*' or '*.nonlocal_blocks.*')")
    params = dict(model.named_parameters())
    not_loaded = set(skipped) | set(report["shape_mismatch"])
    loaded = sum(p.numel() for k, p in params.items() if k not in not_loaded)
    total = sum(p.numel() for p in params.values())
    if total and not loaded:
        raise CheckpointError(f"{path}: skip={list(skip)!r} leaves no model parameter to load from it (every one "
                              f"matches a pattern); nothing would be pretrained")
    if loaded < total / 2:
        logger.warning("%s: only %d of %d model parameters (%.0f%%) were loaded; skip=%r", path, loaded, total,
                       100 * loaded / total, list(skip))


def create_model(name: str, *, num_classes: int | None = None, nonlocal_blocks: dict | None = None,
                 pretrained: str | os.PathLike | None = None, weights_format: str = "auto",
                 skip: str | Iterable[str] = (), config: dict | None = None) -> nn.Module:
    """The model ``name`` (see ``list_models``) as an ``nn.Module`` in training mode.

    Args:
        num_classes: classifier outputs (re-ID: training identities).
        nonlocal_blocks: ``NONLOCAL.*`` keys in lower case, e.g. ``dict(type="snl",
            location=[[], [1, 3], [1, 3, 5], []], pool=[1, 2, 2])``; location lists block indices
            per stage and is required (there are no default locations, so a block type alone
            such as ``"snl"`` is a TypeError).
        pretrained: the path of a checkpoint in any layout vidnl reads (vidnl, PySlowFast,
            Caffe2 .pkl, pytorchvideo, mmaction2, torchvision, official SNL/CGNL, ...); every
            model tensor must come from it except those matching ``skip``. vidnl downloads
            nothing: ``pretrained=True`` is a TypeError.
        weights_format: MODEL.WEIGHTS_FORMAT of ``pretrained`` ("auto": detected).
        skip: one fnmatch pattern (``"head.*"``) or a list of them (``["head.*",
            "*.nonlocal_blocks.*"]``) of keys not loaded; each must match a key of the model or
            the file (ConfigError otherwise), and patterns that leave nothing to load are an error.
        config: any other config key, e.g. ``{"RESNET.BASE_WIDTH": 16}``.
    """
    from .config.validate import ALLOWED_VALUES
    from .models import build_model

    path = _pretrained_path(pretrained)
    patterns = _strings(skip, "skip")
    formats = ALLOWED_VALUES["MODEL.WEIGHTS_FORMAT"]
    if weights_format not in formats:
        raise ConfigError(f"weights_format: {weights_format!r} is not allowed; choose one of "
                          f"{', '.join(map(repr, formats))}")
    unused = ([f"skip={skip!r}"] if patterns else []) + ([f"weights_format={weights_format!r}"]
                                                          if weights_format != "auto" else [])
    if path is None and unused:
        raise ConfigError(f"{' and '.join(unused)} concern pretrained weights, but no pretrained checkpoint was given")
    cfg = model_config(name, num_classes=num_classes, nonlocal_blocks=nonlocal_blocks, config=config)
    model = build_model(cfg)
    if path is not None:
        from .models.weights import load_weights

        report = load_weights(model, path, fmt=weights_format, inflate=cfg.MODEL.INFLATE, skip=patterns)
        _check_skip(model, path, patterns, report)
    return model


__all__ = ["list_models", "create_model", "describe_model", "model_config"]
