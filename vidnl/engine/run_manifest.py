"""What a run is: ``OUTPUT_DIR/run_manifest.json`` (config, vidnl version, model signature), and
the check that an auto-resumed run is the same run.

Auto-resume continues the newest checkpoint of OUTPUT_DIR. If the config changed since that
checkpoint in a key that alters the model, the optimizer, the data or the schedule, resuming
would silently mix two experiments; it stops instead (exit 2), naming each key with both values.
Keys that only change how the run is observed or executed may differ: ``RESUME_FREE``.
"""

from __future__ import annotations

import logging
import os

import yaml

from ..errors import ConfigError
from .output_dir import write_json_atomic

logger = logging.getLogger(__name__)

# Keys (or groups, ending in ".") that may change between a checkpoint and the run resuming it.
RESUME_FREE = (
    "TEST.", "DATA_LOADER.", "TENSORBOARD.", "LOG_PERIOD", "OUTPUT_DIR", "NUM_GPUS", "NUM_THREADS",
    "TRAIN.ENABLE", "TRAIN.EVAL_PERIOD", "TRAIN.CHECKPOINT_PERIOD", "TRAIN.CHECKPOINT_PERIOD_ITERS",
    "TRAIN.KEEP_CHECKPOINTS", "TRAIN.AUTO_RESUME", "TRAIN.CHECKPOINT_FILE_PATH", "TRAIN.CHECKPOINT_SKIP",
    "TRAIN.CHECKPOINT_ALLOW_SHAPE_MISMATCH", "TRAIN.CHECKPOINT_LOAD_OPTIMIZER", "TRAIN.REQUIRE_CHECKPOINT_FILE",
    "TRAIN.MIXED_PRECISION", "TRAIN.AMP_DTYPE",  # a run that diverged in AMP may resume in float32
    "DATA.DECODING_BACKEND", "DATA.DECODING_THREADS", "NONLOCAL.IMPLEMENTATION", "MODEL.WEIGHTS_FORMAT",
    "MODEL.INFLATE", "MODEL.MARS_FLOW_CHECKPOINT", "REID.PRETRAINED",
)
# Keys that may change with a warning: extending a run (SOLVER.MAX_EPOCH) keeps a step schedule
# but reshapes the rest of a cosine one.
RESUME_WARN = ("SOLVER.MAX_EPOCH",)


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _free(key: str) -> bool:
    return any(key.startswith(f) if f.endswith(".") else key == f for f in RESUME_FREE)


def config_changes(saved_yaml: str, cfg) -> list[tuple[str, object, object]]:
    """(key, saved value, current value) for every key that differs and is not ``RESUME_FREE``.
    Keys the saved config does not have (added in a later vidnl) are not compared."""
    saved = _flatten(yaml.safe_load(saved_yaml) or {})
    current = _flatten(yaml.safe_load(cfg.dump()))
    norm = (lambda v: [norm(x) for x in v] if isinstance(v, (list, tuple)) else v)  # noqa: E731
    return [(k, saved[k], v) for k, v in sorted(current.items())
            if k in saved and not _free(k) and norm(saved[k]) != norm(v)]


def check_resume_config(path: str, ckpt: dict, cfg) -> None:
    """Raise ConfigError if ``cfg`` is another experiment than the one that wrote checkpoint ``path``."""
    if not ckpt.get("cfg"):
        return
    changes = config_changes(ckpt["cfg"], cfg)
    for k, old, new in [c for c in changes if c[0] in RESUME_WARN]:
        logger.warning("resuming %s with %s %r (the checkpoint's run had %r)", path, k, new, old)
    changes = [c for c in changes if c[0] not in RESUME_WARN]
    if cfg.SOLVER.LR_POLICY == "plateau":
        saved = (yaml.safe_load(ckpt["cfg"]) or {}).get("TRAIN", {}).get("EVAL_PERIOD")
        if saved is not None and saved != cfg.TRAIN.EVAL_PERIOD:
            logger.warning("resuming %s with TRAIN.EVAL_PERIOD %r (the checkpoint's run had %r): the plateau lr "
                           "schedule counts validations, so from here on it differs from the original run's",
                           path, cfg.TRAIN.EVAL_PERIOD, saved)
    if changes:
        lines = "; ".join(f"{k}: {old!r} in the checkpoint, {new!r} now" for k, old, new in changes[:10])
        raise ConfigError(
            f"OUTPUT_DIR {cfg.OUTPUT_DIR} holds a run with another configuration ({path}): {lines}"
            f"{' ...' if len(changes) > 10 else ''}. Resuming would mix two experiments: use a new OUTPUT_DIR, or "
            f"TRAIN.AUTO_RESUME False to start over there (its checkpoints are then moved to checkpoints/set_aside/).")


def write_manifest(cfg, model) -> str:
    """OUTPUT_DIR/run_manifest.json: the config, vidnl version and model signature (parameter
    and buffer names with shapes) of this run."""
    from .. import __version__

    path = os.path.join(cfg.OUTPUT_DIR, "run_manifest.json")
    manifest = {"vidnl_version": __version__, "config": cfg.dump(),
                "model_signature": {k: list(v.shape) for k, v in model.state_dict().items()}}
    return write_json_atomic(path, manifest)
