"""Checked merging and validation of configs.

Every user mistake (unknown key, wrong type, value outside the allowed set, a cross-key rule
broken) becomes one :class:`ConfigError` whose message names the key, the value given, where it
came from, and what is allowed.

The config package is a leaf: it knows keys, types, literal allowed values and rules between
keys, and imports nothing of vidnl but ``vidnl.errors`` (tests/test_import_direction.py). What
needs the code that uses a value is checked where that code is built, with the same kind of
ConfigError: MODEL.ARCH, RESNET.DEPTH, NONLOCAL.LOCATION, RESNET.INFLATE and the nonlocal block
options in ``vidnl.models.build`` (``build_model`` / ``check_model_config``), TRAIN.DATASET and
TEST.DATASET in ``vidnl.data.datasets.build_dataset``, an explicit DATA.DECODING_BACKEND decord
in ``vidnl.data.decoding.resolve_backend``. tools/run_net.py runs those checks right after
loading the config, before anything is written.
"""

from __future__ import annotations

import ast
import difflib
from typing import Any, Iterable

import yaml
from fvcore.common.config import CfgNode

from ..errors import ConfigError, decode_utf8
from . import defaults_data, defaults_reid

EXTENSIONS = (defaults_data, defaults_reid)  # config groups added by other areas (keys + rules)

# Allowed values of string / choice keys. Checked after every merge.
ALLOWED_VALUES = {
    "TRAIN.COMPILE_BACKEND": ("inductor", "aot_eager", "eager"),
    "TRAIN.AMP_DTYPE": ("auto", "bfloat16", "float16"),  # = vidnl.engine.precision.AMP_DTYPES (tested)
    "TEST.COMPILE_BACKEND": ("inductor", "aot_eager", "eager"),
    "MODEL.TASK": ("classification", "reid"),
    "TEST.NUM_SPATIAL_CROPS": (1, 3),
    "TEST.ENSEMBLE_METHOD": ("sum_softmax", "mean_logits"),
    "TEST.SPLIT": ("test", "val"),
    "DATA.SHORT_VIDEO_MODE": ("pad", "loop"),
    "DATA.DECODING_BACKEND": ("auto", "decord", "pyav"),  # = vidnl.data.decoding.BACKEND_CHOICES (tested)
    "DATA.TEMPORAL_SAMPLING": ("vidnl", "pyslowfast"),  # = vidnl.data.sampling.TEMPORAL_SAMPLINGS (tested)
    "DATA.SPATIAL_ROUNDING": ("vidnl", "pyslowfast"),  # = vidnl.data.transforms.SPATIAL_ROUNDINGS (tested)
    "MODEL.LOSS_FUNC": ("cross_entropy",),
    "BN.NORM_TYPE": ("auto", "batchnorm", "sync_batchnorm"),
    "MODEL.WEIGHTS_FORMAT": ("auto", "vidnl", "torchvision", "pyslowfast", "caffe2", "pytorchvideo", "mmaction2",
                             "snl_official", "cgnl_official", "bearpaw_preresnet", "snl_code_preresnet",
                             "reid_resnet50tp", "p3d_official"),  # = vidnl.models.weight_formats.FORMATS
    "MODEL.INFLATE": ("mean", "center"),
    "MODEL.TEST_HEAD": ("global", "fully_conv"),  # = vidnl.models.heads.TEST_HEADS (tested)
    "RESNET.INFLATE_CONV": ("1x1", "3x3"),
    "RESNET.SHORTCUT": ("A", "B"),
    # = ("mha",) + vidnl.nonlocal_blocks.list_blocks() (tested); vtn_vit takes mha, snl, nl (its builder)
    "VTN.ATTENTION": ("mha", "nl", "snl", "gsnl", "ns", "a2", "cgnl", "cc"),
    "NONLOCAL.KERNEL": ("", "embedded_gaussian", "gaussian", "dot", "relu_dot", "concatenation"),
    "NONLOCAL.NORM": ("", "softmax", "mean", "random_walk", "symmetric", "none"),
    "NONLOCAL.MODE": ("spacetime", "space", "time"),
    "NONLOCAL.IMPLEMENTATION": ("auto", "fast", "dense"),
    "NONLOCAL.STYLE": ("paper", "official"),
    "NONLOCAL.POOL_AT": ("", "projection", "input"),
    "NONLOCAL.OUTPUT_ACTIVATION": ("", "none", "relu"),
    "NONLOCAL.A_SIGN": (0, 1, -1),
    "NONLOCAL.CGNL_BETA": ("", "exact", "constant"),
    "NONLOCAL.CGNL_NORM": ("", "batch", "group"),
    "SOLVER.OPTIMIZING_METHOD": ("sgd", "adam", "adamw"),
    "SOLVER.LR_POLICY": ("cosine", "steps_with_relative_lrs", "constant", "plateau"),
    "SOLVER.PLATEAU_THRESHOLD_MODE": ("abs", "rel"),
}

# Keys that must be > 0 (or >= 0).
POSITIVE = (
    "TRAIN.BATCH_SIZE", "TEST.BATCH_SIZE", "TEST.NUM_ENSEMBLE_VIEWS", "DATA.NUM_FRAMES",
    "DATA.SAMPLING_RATE", "DATA.TRAIN_CROP_SIZE", "DATA.TEST_CROP_SIZE", "MODEL.NUM_CLASSES",
    "RESNET.BASE_WIDTH", "SOLVER.MAX_EPOCH", "LOG_PERIOD", "DATA.INPUT_CHANNEL_NUM", "NONLOCAL.GROUPS",
    "NONLOCAL.RECURRENCE", "NONLOCAL.NS_STAGES", "RESNET.CARDINALITY", "RESNET.STEM_TEMPORAL_STRIDE", "VTN.DIM", "VTN.NUM_LAYERS",
    "VTN.NUM_HEADS", "VTN.MAX_FRAMES",
)
NON_NEGATIVE = (
    "TRAIN.EVAL_PERIOD", "TRAIN.CHECKPOINT_PERIOD", "TRAIN.KEEP_CHECKPOINTS", "NUM_GPUS",
    "DATA_LOADER.NUM_WORKERS", "DATA_LOADER.NUM_RETRIES", "SOLVER.BASE_LR",
    "SOLVER.WEIGHT_DECAY", "SOLVER.WARMUP_EPOCHS", "TRAIN.CLIP_GRAD_NORM", "NUM_THREADS",
    "DATA.DECODING_THREADS", "MODEL.LABEL_SMOOTHING", "NONLOCAL.INNER_CHANNELS", "NONLOCAL.ORDER",
    "NONLOCAL.NUM_DESCRIPTORS", "TRAIN.CHECKPOINT_PERIOD_ITERS", "RESNET.STEM_TEMPORAL_KERNEL",
    "SOLVER.PLATEAU_PATIENCE", "SOLVER.PLATEAU_THRESHOLD", "SOLVER.PLATEAU_COOLDOWN", "SOLVER.PLATEAU_MIN_LR",
)





def _all_keys(node: CfgNode, prefix: str = "") -> list[str]:
    keys = []
    for k, v in node.items():
        full = f"{prefix}{k}"
        keys.append(full)
        if isinstance(v, CfgNode):
            keys.extend(_all_keys(v, full + "."))
    return keys


def _suggest(key: str, root: CfgNode) -> str:
    candidates = _all_keys(root)
    close = difflib.get_close_matches(key, candidates, n=1, cutoff=0.5)
    if not close:  # try the last component alone (e.g. LOCATON -> NONLOCAL.LOCATION)
        last = key.split(".")[-1]
        by_last = {c.split(".")[-1]: c for c in candidates}
        close = [by_last[m] for m in difflib.get_close_matches(last, list(by_last), n=1, cutoff=0.6)]
    return f" Did you mean '{close[0]}'?" if close else ""


def _type_name(value: Any) -> str:
    return {bool: "bool", int: "int", float: "float", str: "string", list: "list",
            tuple: "list", dict: "mapping"}.get(type(value), type(value).__name__)


def _coerce(key: str, default: Any, value: Any, source: str) -> Any:
    """Return ``value`` converted to the type of ``default`` or raise a ConfigError."""
    def fail():
        raise ConfigError(
            f"{key}: expected a {_type_name(default)} (like {default!r}), got {value!r} "
            f"({_type_name(value)}) from {source}."
        )

    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        fail()
    if isinstance(default, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        fail()
    if isinstance(default, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        fail()
    if isinstance(default, str):
        if isinstance(value, str):
            return value
        fail()
    if isinstance(default, (list, tuple)):
        if isinstance(value, (list, tuple)):
            return list(value)
        fail()
    return value


def merge_checked(cfg: CfgNode, data: dict, source: str, prefix: str = "") -> None:
    """Merge the nested mapping ``data`` into ``cfg`` key by key, checking names and types."""
    for k, v in data.items():
        full = f"{prefix}{k}"
        if k not in cfg:
            raise ConfigError(f"Unknown config key '{full}' in {source}.{_suggest(full, _ROOT[0])}")
        default = cfg[k]
        if isinstance(default, CfgNode):
            if not isinstance(v, dict):
                raise ConfigError(f"{full}: expected a group of keys, got {v!r} from {source}.")
            merge_checked(default, v, source, full + ".")
        else:
            cfg[k] = _coerce(full, default, v, source)


# The defaults tree used for suggestions (set by load_config; a list so it can be rebound).
_ROOT: list[CfgNode] = [CfgNode()]


def _read_yaml_with_base(path: str, seen: tuple = ()) -> dict:
    """Read a YAML file; a ``_BASE_`` key names a file (relative to this one) merged first."""
    import os

    path = os.path.abspath(path)
    if path in seen:
        raise ConfigError(f"_BASE_ cycle: {' -> '.join(seen + (path,))}")
    if os.path.isdir(path):
        raise ConfigError(f"Config file {path} is a folder; expected a YAML file (e.g. configs/UCF101/I3D_R50_SNL.yaml)")
    if not os.path.isfile(path):
        raise ConfigError(f"Config file not found: {path}")
    with open(path, "rb") as f:
        text = decode_utf8(f.read(), f"Config file {path}", ConfigError)
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"Config file {path} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"Config file {path} must contain a mapping of keys, got {type(data).__name__}.")
    base = data.pop("_BASE_", None)
    if base is None:
        return data
    if not isinstance(base, str) or not base:
        raise ConfigError(f"_BASE_ in {path}: expected the path of another config file (a string), got {base!r}.")
    base_path = base if os.path.isabs(base) else os.path.join(os.path.dirname(path), base)
    merged = _read_yaml_with_base(base_path, seen + (path,))
    _deep_update(merged, data)
    return merged


def _deep_update(dst: dict, src: dict) -> None:
    for k, v in src.items():
        if isinstance(v, dict) and isinstance(dst.get(k), dict):
            _deep_update(dst[k], v)
        else:
            dst[k] = v


def parse_override_value(text: str) -> Any:
    """Turn a command-line value into a Python value: literals, YAML, else the string itself."""
    if not isinstance(text, str):
        return text
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        pass
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def overrides_to_dict(opts: Iterable[str]) -> list[tuple[str, Any]]:
    opts = list(opts)
    if len(opts) % 2:
        raise ConfigError(
            f"Overrides must come in KEY VALUE pairs; got an odd number of items: {opts}."
        )
    return [(opts[i], parse_override_value(opts[i + 1])) for i in range(0, len(opts), 2)]


def merge_overrides(cfg: CfgNode, opts: Iterable[str]) -> None:
    for key, value in overrides_to_dict(opts):
        nested: dict = {}
        node = nested
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
        merge_checked(cfg, nested, source=f"command-line override '{key} {value}'")


def _get(cfg: CfgNode, key: str) -> Any:
    node = cfg
    for p in key.split("."):
        node = node[p]
    return node


def _check_finite(node: CfgNode, prefix: str = "") -> None:
    """Every float in the config is finite (nan / inf pass range checks and crash later)."""
    import math

    for k, v in node.items():
        key = f"{prefix}{k}"
        if isinstance(v, CfgNode):
            _check_finite(v, key + ".")
        values = v if isinstance(v, (list, tuple)) else [v]
        for x in values:
            if isinstance(x, float) and not math.isfinite(x):
                raise ConfigError(f"{key}: must be a finite number, got {v!r}.")


def validate(cfg: CfgNode) -> None:
    """Check value ranges and cross-key rules of a fully merged config."""
    allowed_values = dict(ALLOWED_VALUES)
    for ext in EXTENSIONS:
        allowed_values.update(getattr(ext, "ALLOWED_VALUES", {}))
    for key, allowed in allowed_values.items():
        value = _get(cfg, key)
        if value not in allowed:
            raise ConfigError(
                f"{key}: {value!r} is not allowed; choose one of {', '.join(map(repr, allowed))}."
            )
    _check_finite(cfg)
    if not 0.0 <= cfg.SOLVER.MOMENTUM < 1.0:
        raise ConfigError(f"SOLVER.MOMENTUM: must be in [0, 1), got {cfg.SOLVER.MOMENTUM!r}.")
    if cfg.RNG_SEED < 0:
        raise ConfigError(f"RNG_SEED: must be >= 0, got {cfg.RNG_SEED!r}.")
    if cfg.DATA.PATH_LABEL_SEPARATOR == "" or cfg.DATA.PATH_LABEL_SEPARATOR in ("\n", "\r"):
        raise ConfigError(f"DATA.PATH_LABEL_SEPARATOR: must be a non-empty string within a line (e.g. ' ' or ','), "
                          f"got {cfg.DATA.PATH_LABEL_SEPARATOR!r}.")
    for key in POSITIVE:
        if _get(cfg, key) <= 0:
            raise ConfigError(f"{key}: must be > 0, got {_get(cfg, key)!r}.")
    for key in NON_NEGATIVE:
        if _get(cfg, key) < 0:
            raise ConfigError(f"{key}: must be >= 0, got {_get(cfg, key)!r}.")
    for key in ("DATA.MEAN", "DATA.STD"):
        v = _get(cfg, key)
        if len(v) != cfg.DATA.INPUT_CHANNEL_NUM or not all(isinstance(x, (int, float)) for x in v):
            raise ConfigError(
                f"{key}: expected {cfg.DATA.INPUT_CHANNEL_NUM} numbers (DATA.INPUT_CHANNEL_NUM), got {v!r}."
            )
    if any(s == 0 for s in cfg.DATA.STD):
        raise ConfigError(f"DATA.STD: values must be non-zero, got {list(cfg.DATA.STD)!r}.")
    js = cfg.DATA.TRAIN_JITTER_SCALES
    if len(js) != 2 or not all(isinstance(x, int) for x in js) or not 0 < js[0] <= js[1]:
        raise ConfigError(f"DATA.TRAIN_JITTER_SCALES: expected [min, max] ints with 0 < min <= max, got {js!r}.")
    if js[0] < cfg.DATA.TRAIN_CROP_SIZE:
        raise ConfigError(
            f"DATA.TRAIN_JITTER_SCALES: the smallest short side {js[0]} is below "
            f"DATA.TRAIN_CROP_SIZE {cfg.DATA.TRAIN_CROP_SIZE}; a crop would not fit."
        )
    if cfg.VTN.DIM % cfg.VTN.NUM_HEADS:
        raise ConfigError(f"VTN.DIM {cfg.VTN.DIM} must be divisible by VTN.NUM_HEADS {cfg.VTN.NUM_HEADS}.")
    if not 0.0 <= cfg.DATA_LOADER.MAX_BAD_FRACTION <= 1.0:
        raise ConfigError(f"DATA_LOADER.MAX_BAD_FRACTION: must be in [0, 1], got {cfg.DATA_LOADER.MAX_BAD_FRACTION!r}.")
    if cfg.MODEL.TEST_HEAD == "fully_conv" and cfg.MODEL.TASK != "classification":
        raise ConfigError(f"MODEL.TEST_HEAD: 'fully_conv' is a classification head; MODEL.TASK {cfg.MODEL.TASK!r} "
                          f"tests embeddings. Set MODEL.TEST_HEAD global.")
    if not 0.0 <= cfg.MODEL.DROPOUT_RATE < 1.0:
        raise ConfigError(f"MODEL.DROPOUT_RATE: must be in [0, 1), got {cfg.MODEL.DROPOUT_RATE!r}.")
    if not 0.0 < cfg.NONLOCAL.INNER_RATIO <= 1.0:
        raise ConfigError(f"NONLOCAL.INNER_RATIO: must be in (0, 1], got {cfg.NONLOCAL.INNER_RATIO!r}.")
    for key in ("BIAS", "SOFTMAX_SCALE", "POOL_CEIL_MODE"):
        if cfg.NONLOCAL[key] is not None and not isinstance(cfg.NONLOCAL[key], bool):
            raise ConfigError(f"NONLOCAL.{key}: expected True, False or None (the style's), "
                              f"got {cfg.NONLOCAL[key]!r}.")
    if cfg.NONLOCAL.CGNL_GAMMA < 0:
        raise ConfigError(f"NONLOCAL.CGNL_GAMMA: must be > 0 (0: the style's), got {cfg.NONLOCAL.CGNL_GAMMA!r}.")
    pool = list(cfg.NONLOCAL.POOL)
    if pool and (len(pool) != 3 or not all(isinstance(p, int) and p >= 1 for p in pool)):
        raise ConfigError(f"NONLOCAL.POOL: expected [] or three ints >= 1 (T, H, W), got {pool!r}.")
    for ext in EXTENSIONS:
        if hasattr(ext, "validate"):
            ext.validate(cfg)
    _validate_solver(cfg)
    _validate_temporal_layout(cfg)
    _validate_sampling_protocol(cfg)


def _validate_solver(cfg: CfgNode) -> None:
    s = cfg.SOLVER
    if s.LR_POLICY == "steps_with_relative_lrs":
        if len(s.STEPS) != len(s.LRS):
            raise ConfigError(
                f"SOLVER.STEPS {list(s.STEPS)} and SOLVER.LRS {list(s.LRS)} must have the same length."
            )
        if not s.STEPS or s.STEPS[0] != 0 or list(s.STEPS) != sorted(s.STEPS):
            raise ConfigError(f"SOLVER.STEPS: must start at 0 and increase, got {list(s.STEPS)}.")
    if not 0.0 < s.PLATEAU_FACTOR < 1.0:
        raise ConfigError(f"SOLVER.PLATEAU_FACTOR: must be in (0, 1), got {s.PLATEAU_FACTOR!r}.")
    if s.LR_POLICY == "plateau" and cfg.TRAIN.ENABLE and cfg.TRAIN.EVAL_PERIOD <= 0:
        raise ConfigError(
            f"SOLVER.LR_POLICY plateau lowers the lr when the validation metric stops improving, but "
            f"TRAIN.EVAL_PERIOD is {cfg.TRAIN.EVAL_PERIOD} (no validation): set TRAIN.EVAL_PERIOD >= 1 (the "
            f"official VTN recipe validates every epoch) or choose another SOLVER.LR_POLICY.")


def _validate_sampling_protocol(cfg: CfgNode) -> None:
    """DATA.TEMPORAL_SAMPLING / DATA.TARGET_FPS (docs/pretrained.md, the protocol table)."""
    d = cfg.DATA
    if d.TEMPORAL_SAMPLING == "pyslowfast":
        if not d.TARGET_FPS > 0:
            raise ConfigError(f"DATA.TARGET_FPS: must be > 0 with DATA.TEMPORAL_SAMPLING 'pyslowfast' (a clip spans "
                              f"NUM_FRAMES x SAMPLING_RATE / TARGET_FPS seconds; PySlowFast uses 30), got {d.TARGET_FPS!r}.")
        if d.SOURCE == "frames":
            raise ConfigError("DATA.TEMPORAL_SAMPLING: 'pyslowfast' samples in seconds and needs the videos' frame "
                              "rate, which DATA.SOURCE 'frames' (folders of frames) does not have; list video files "
                              "or set DATA.TEMPORAL_SAMPLING vidnl.")
        if d.MODALITY != "rgb":
            raise ConfigError(f"DATA.TEMPORAL_SAMPLING: 'pyslowfast' applies to RGB video clips; DATA.MODALITY "
                              f"{d.MODALITY!r} reads flow folders: set DATA.TEMPORAL_SAMPLING vidnl.")
        if d.SHORT_VIDEO_MODE != "pad":
            raise ConfigError(f"DATA.SHORT_VIDEO_MODE: PySlowFast's sampling pads a short video with its last frame; "
                              f"'{d.SHORT_VIDEO_MODE}' is only for DATA.TEMPORAL_SAMPLING vidnl: set it to pad.")
    elif d.TARGET_FPS != 0:
        raise ConfigError(f"DATA.TARGET_FPS: {d.TARGET_FPS!r} is only used with DATA.TEMPORAL_SAMPLING 'pyslowfast' "
                          f"(DATA.TEMPORAL_SAMPLING is {d.TEMPORAL_SAMPLING!r}, which strides in frames): set it to 0, "
                          f"or set DATA.TEMPORAL_SAMPLING pyslowfast.")


def _validate_temporal_layout(cfg: CfgNode) -> None:
    p1, p2 = list(cfg.RESNET.POOL1_TEMPORAL), list(cfg.RESNET.POOL2_TEMPORAL)
    if len(p1) != 2 or not all(isinstance(v, int) and v >= 1 for v in p1):
        raise ConfigError(f"RESNET.POOL1_TEMPORAL: expected [kernel, stride], both integers >= 1, got {p1!r}.")
    if p2 and (len(p2) != 3 or not all(isinstance(v, int) for v in p2) or min(p2[:2]) < 1
               or not 0 <= p2[2] <= p2[0] // 2):
        raise ConfigError(f"RESNET.POOL2_TEMPORAL: expected [] or [kernel, stride, padding], integers with "
                          f"kernel, stride >= 1 and 0 <= padding <= kernel // 2, got {p2!r}.")


def config_from_dict(data: dict, source: str) -> CfgNode:
    """Defaults <- the nested mapping ``data`` (``{"MODEL": {"ARCH": "i3d"}}``, what a YAML file
    holds), validated; errors name ``source``."""
    from .defaults import get_cfg

    cfg = get_cfg()
    _ROOT[0] = get_cfg()
    merge_checked(cfg, data, source=source)
    validate(cfg)
    cfg.freeze()
    return cfg


def load_config(cfg_file: str | None = None, opts: Iterable[str] = ()) -> CfgNode:
    """Defaults <- YAML file (with _BASE_) <- KEY VALUE overrides, then validated."""
    from .defaults import get_cfg

    cfg = get_cfg()
    _ROOT[0] = get_cfg()
    if cfg_file:
        merge_checked(cfg, _read_yaml_with_base(cfg_file), source=f"config file {cfg_file}")
    merge_overrides(cfg, opts)
    validate(cfg)
    cfg.freeze()
    return cfg
