"""Run checkpoints: atomic writes, the files of a run, resume state (model, optimizer, AMP, RNG).

Layout: ``OUTPUT_DIR/checkpoints/checkpoint_epoch_00005.pyth`` (state after 5 finished epochs),
``checkpoint_epoch_00005_iter_000120.pyth`` (5 epochs and 120 iterations of the 6th, written
every TRAIN.CHECKPOINT_PERIOD_ITERS iterations) and ``checkpoint_best.pyth`` (best validation
top-1). A checkpoint holds ``model_state``, ``optimizer_state``, ``scaler_state`` (AMP),
``epoch`` (finished epochs), ``iteration`` (iterations done in the next epoch), ``rng`` (python,
numpy, torch[, cuda]), ``best_metric``, ``cfg`` (YAML text) and ``vidnl_version``.

Reading weights into a model (safe loads with ``weights_only=True``, Caffe2 pickles, other
layouts, strict key matching) is ``vidnl.models.weights``: the engine uses it, models never
import the engine. ``load_weights`` and the other names re-exported below are kept for user
code written against this module; inside vidnl import them from ``vidnl.models.weights``.
"""

from __future__ import annotations

import logging
import os
import random
import re
import tempfile
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from ..models.weights import (CheckpointError, extract_model_state, load_caffe2_pickle, load_checkpoint_file,
                              load_model_weights, load_weights, unwrap)
from .logging import log_json_stats

logger = logging.getLogger(__name__)

# Re-exported for user code (backwards compatibility); vidnl imports them from vidnl.models.weights.
__all__ = ["CheckpointError", "RunState", "atomic_torch_save", "checkpoint_dir", "epoch_checkpoint_path",
           "extract_model_state", "find_resume_checkpoint", "get_rng_state", "list_checkpoints", "load_caffe2_pickle",
           "load_checkpoint_file", "load_model_weights", "load_weights", "restore_run", "save_checkpoint",
           "set_rng_state", "unwrap"]

_EPOCH_RE = re.compile(r"^checkpoint_epoch_(\d+)(?:_iter_(\d+))?\.pyth$")


def checkpoint_dir(output_dir: str) -> str:
    return os.path.join(output_dir, "checkpoints")


def epoch_checkpoint_path(output_dir: str, epoch: int, iteration: int = 0) -> str:
    name = f"checkpoint_epoch_{epoch:05d}" + (f"_iter_{iteration:06d}" if iteration else "") + ".pyth"
    return os.path.join(checkpoint_dir(output_dir), name)


def list_checkpoints(output_dir: str) -> list[str]:
    """Epoch and mid-epoch checkpoints of a run, oldest first."""
    d = checkpoint_dir(output_dir)
    if not os.path.isdir(d):
        return []
    found = sorted((int(m.group(1)), int(m.group(2) or 0), f) for f in os.listdir(d) if (m := _EPOCH_RE.match(f)))
    return [os.path.join(d, f) for _, _, f in found]


def atomic_torch_save(obj: Any, path: str) -> None:
    """torch.save to a temporary file in the same folder, fsync, then os.replace: a reader
    sees the old file or the complete new one, never a partial one."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp_", suffix=".pyth", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    try:  # make the rename durable too
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass


def get_rng_state() -> dict:
    """RNG states as plain types and tensors (loadable with weights_only=True)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(_to_tuple(state["python"]))
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _to_tuple(x):
    return tuple(_to_tuple(v) for v in x) if isinstance(x, (list, tuple)) else x


def save_checkpoint(output_dir: str, epoch: int, model: nn.Module, optimizer, cfg, best_metric: float | None,
                    keep: int = 0, iteration: int = 0, scaler=None) -> str:
    """Write the state after ``epoch`` finished epochs and ``iteration`` iterations of the next;
    keep only the newest ``keep`` checkpoints (0: all)."""
    state = {
        "epoch": epoch,
        "iteration": iteration,
        "scaler_state": scaler.state_dict() if scaler is not None and scaler.is_enabled() else None,
        "model_state": unwrap(model).state_dict(),
        "optimizer_state": optimizer.state_dict() if optimizer is not None else None,
        "rng": get_rng_state(),
        "best_metric": best_metric,
        "cfg": cfg.dump(),
        "vidnl_version": _version(),
    }
    path = epoch_checkpoint_path(output_dir, epoch, iteration)
    atomic_torch_save(state, path)
    if keep > 0:
        for old in list_checkpoints(output_dir)[:-keep]:
            os.remove(old)
    return path


def _version() -> str:
    from .. import __version__
    return __version__


def find_resume_checkpoint(output_dir: str) -> tuple[str, dict] | None:
    """Newest readable epoch checkpoint of a run; an unreadable newest one is skipped with a
    warning (e.g. a disk that filled up) and the previous one is used."""
    for path in reversed(list_checkpoints(output_dir)):
        try:
            return path, load_checkpoint_file(path)
        except CheckpointError as e:
            logger.warning("skipping unreadable checkpoint: %s", e)
    return None


@dataclass
class RunState:
    """Where a run stands: ``epoch`` finished epochs, ``iteration`` iterations of the next, and
    the best validation metric so far."""

    epoch: int = 0
    iteration: int = 0
    best: float | None = None


def restore_run(path: str, ckpt: dict, model: nn.Module, optimizer, scaler) -> RunState:
    """Resume a run from its checkpoint: model, optimizer, AMP scaler and RNG states."""
    load_model_weights(model, extract_model_state(ckpt, path), source=path)
    if ckpt.get("optimizer_state") is not None:
        optimizer.load_state_dict(ckpt["optimizer_state"])
    if ckpt.get("scaler_state") is not None and scaler.is_enabled():
        scaler.load_state_dict(ckpt["scaler_state"])
    if ckpt.get("rng") is not None:
        set_rng_state(ckpt["rng"])
    state = RunState(int(ckpt["epoch"]), int(ckpt.get("iteration", 0)), ckpt.get("best_metric"))
    logger.info("resumed from %s: %d epochs and %d iterations done", path, state.epoch, state.iteration)
    log_json_stats({"_type": "resume", "epoch": state.epoch, "iteration": state.iteration, "checkpoint": path})
    return state
