"""Run checkpoints: atomic writes, the files of a run, resume state (model, optimizer, AMP, RNG).

Layout: ``OUTPUT_DIR/checkpoints/checkpoint_epoch_00005.pyth`` (state after 5 finished epochs),
``checkpoint_epoch_00005_iter_000120.pyth`` (5 epochs and 120 iterations of the 6th, written
every TRAIN.CHECKPOINT_PERIOD_ITERS iterations) and ``checkpoint_best.pyth`` (best validation
top-1). A checkpoint holds ``model_state``, ``optimizer_state``, ``scaler_state`` (AMP),
``epoch`` (finished epochs), ``iteration`` (iterations done in the next epoch), ``rng`` (python,
numpy, torch[, cuda]), ``best_metric``, ``lr_scheduler_state`` (the plateau policy's state, plain
numbers; None for the other policies, whose lr is a function of the position), ``cfg`` (YAML
text), ``vidnl_version`` and ``run_id``.

One run owns the checkpoints folder. Every training run has a ``run_id`` (a new one for a new
run, the resumed checkpoint's when it resumes; files of vidnl versions before run ids have
none); when a run is accepted (its config checked), :func:`claim_checkpoints` moves every file
named like a checkpoint that is not this run's (an earlier run's with ``TRAIN.AUTO_RESUME False``,
a converted weights file, an unreadable one) to ``checkpoints/set_aside/<time>/``, with a
warning: nothing is deleted, and resuming, pruning (``TRAIN.KEEP_CHECKPOINTS``) and the test
after training only ever see the run's own files. A file named like a checkpoint that is not a
training run's (no ``epoch`` or ``cfg``) is skipped with a warning by resume and test.

Reading weights into a model (safe loads with ``weights_only=True``, Caffe2 pickles, other
layouts, strict key matching) is ``vidnl.models.weights``: the engine uses it, models never
import the engine. ``load_weights`` and the other names re-exported below are kept for user
code written against this module; inside vidnl import them from ``vidnl.models.weights``.
"""

from __future__ import annotations

import io
import logging
import os
import random
import re
import shutil
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from ..models.weights import (CheckpointError, extract_model_state, load_caffe2_pickle, load_checkpoint_file,
                              load_model_weights, load_weights, unwrap)
from ..errors import VidnlUserError
from .logging import log_json_stats
from .output_dir import write_bytes_atomic

logger = logging.getLogger(__name__)

# Re-exported for user code (backwards compatibility); vidnl imports them from vidnl.models.weights.
__all__ = ["CheckpointError", "RunState", "atomic_torch_save", "checkpoint_dir", "epoch_checkpoint_path",
           "extract_model_state", "find_resume_checkpoint", "claim_checkpoints", "newest_run_checkpoint",
           "get_rng_state", "list_checkpoints", "load_caffe2_pickle", "load_checkpoint_file", "load_model_weights", "load_weights", "restore_run", "save_checkpoint",
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


class CheckpointWriteError(VidnlUserError, OSError):
    """A checkpoint could not be written (disk full, quota, file size limit, permissions): the
    message names the file, the reason and what was kept."""


def atomic_torch_save(obj: Any, path: str) -> None:
    """torch.save, written atomically and durably (:func:`write_bytes_atomic`): a reader sees the
    old file or the complete new one, never a partial one. The object is serialised in memory
    first, so a failing write is an OSError with its reason (torch's own writer reports a full
    disk as "unexpected pos"); it becomes a :class:`CheckpointWriteError`."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    data = buffer.getbuffer()
    try:
        write_bytes_atomic(path, data, durable=True)
    except OSError as e:
        folder = os.path.dirname(os.path.abspath(path))
        try:
            free = f"{shutil.disk_usage(folder).free / 2 ** 20:.0f} MB free there"
        except OSError:
            free = "free space unknown"
        raise CheckpointWriteError(
            f"could not write {path} ({data.nbytes / 2 ** 20:.1f} MB; {free}): {e.strerror or e}. Free some space "
            f"(or fix the folder) and rerun the same command: it resumes from the last checkpoint written, which is "
            f"intact") from None


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
                    keep: int = 0, iteration: int = 0, scaler=None, run_id: str | None = None,
                    scheduler_state: dict | None = None) -> str:
    """Write the state after ``epoch`` finished epochs and ``iteration`` iterations of the next
    (``scheduler_state``: the lr schedule's state, if it has one); keep only the newest ``keep``
    checkpoints (0: all)."""
    state = {
        "run_id": run_id,
        "epoch": epoch,
        "iteration": iteration,
        "scaler_state": scaler.state_dict() if scaler is not None and scaler.is_enabled() else None,
        "model_state": unwrap(model).state_dict(),
        "optimizer_state": optimizer.state_dict() if optimizer is not None else None,
        "rng": get_rng_state(),
        "best_metric": best_metric,
        "lr_scheduler_state": scheduler_state,
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


RUN_KEYS = ("epoch", "model_state", "cfg")  # what a training run's checkpoint holds
BEST_NAME = "checkpoint_best.pyth"


def new_run_id() -> str:
    return uuid.uuid4().hex[:16]


def check_run_checkpoint(path: str, ckpt: dict) -> dict:
    """``ckpt`` if it is a training run's checkpoint, else CheckpointError naming the file."""
    missing = [k for k in RUN_KEYS if k not in ckpt]
    if missing:
        raise CheckpointError(
            f"{path} is not a checkpoint of a vidnl training run (no {' or '.join(repr(k) for k in missing)}; e.g. a "
            f"converted or exported weights file). Load such weights with TEST.CHECKPOINT_FILE_PATH or "
            f"TRAIN.CHECKPOINT_FILE_PATH, and keep them outside {os.path.dirname(path)}")
    return ckpt


def read_run_checkpoint(path: str) -> dict:
    """A training run's checkpoint (CheckpointError if unreadable or not a run's)."""
    return check_run_checkpoint(path, load_checkpoint_file(path))


def find_resume_checkpoint(output_dir: str) -> tuple[str, dict] | None:
    """Newest readable epoch checkpoint of a run; an unreadable newest one (e.g. a disk that
    filled up) or a file that is not a run's checkpoint is skipped with a warning and the
    previous one is used."""
    for path in reversed(list_checkpoints(output_dir)):
        try:
            return path, read_run_checkpoint(path)
        except CheckpointError as e:
            logger.warning("skipping %s", e)
    return None


def _peek_run(path: str) -> str | None:
    """The run_id of the run checkpoint ``path`` (None for one written before run ids), read
    without its tensors (memory-mapped load); CheckpointError naming the file if it is unreadable
    or not a training run's checkpoint."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # noqa: BLE001 - any failure means "not a readable checkpoint"
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise CheckpointError(f"{path}: unreadable checkpoint ({type(e).__name__}: {first})") from None
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path}: expected a dict (a checkpoint), got {type(ckpt).__name__}")
    return check_run_checkpoint(path, ckpt).get("run_id")


def _is_run_of(path: str, run_id: str | None) -> bool:
    try:
        return _peek_run(path) == run_id
    except CheckpointError:
        return False


def claim_checkpoints(output_dir: str, run_id: str | None) -> list[str]:
    """Move every file of ``OUTPUT_DIR/checkpoints`` named like a checkpoint (epoch, mid-epoch,
    best) that is not a readable checkpoint of run ``run_id`` to ``checkpoints/set_aside/<time>/``
    (a warning names them). Returns the moved files' new paths."""
    names = list_checkpoints(output_dir)
    best = os.path.join(checkpoint_dir(output_dir), BEST_NAME)
    if os.path.isfile(best):
        names.append(best)
    others = [p for p in names if not _is_run_of(p, run_id)]
    if not others:
        return []
    dest = os.path.join(checkpoint_dir(output_dir), "set_aside", time.strftime("%Y%m%d-%H%M%S"))
    while os.path.exists(dest):
        dest += "_"
    os.makedirs(dest)
    moved = []
    for p in others:
        target = os.path.join(dest, os.path.basename(p))
        shutil.move(p, target)
        moved.append(target)
    logger.warning("%d file(s) in %s are not this run's checkpoints (an earlier run's, or other files named like "
                   "checkpoints: %s); moved them to %s so that resuming, TRAIN.KEEP_CHECKPOINTS and the test see "
                   "only this run's", len(moved), checkpoint_dir(output_dir),
                   ", ".join(os.path.basename(p) for p in moved[:5]) + (", ..." if len(moved) > 5 else ""), dest)
    return moved


def newest_run_checkpoint(output_dir: str) -> str | None:
    """The newest readable run checkpoint in ``OUTPUT_DIR/checkpoints`` (what the test takes
    without TEST.CHECKPOINT_FILE_PATH); other files named like checkpoints are skipped with a
    warning."""
    for path in reversed(list_checkpoints(output_dir)):
        try:
            _peek_run(path)
            return path
        except CheckpointError as e:
            logger.warning("skipping %s", e)
    return None


@dataclass
class RunState:
    """Where a run stands: ``epoch`` finished epochs, ``iteration`` iterations of the next, the
    best validation metric so far and the lr schedule's saved state (``scheduler``, or None)."""

    epoch: int = 0
    iteration: int = 0
    best: float | None = None
    run_id: str | None = field(default_factory=new_run_id)
    scheduler: dict | None = None


def restore_run(path: str, ckpt: dict, model: nn.Module, optimizer, scaler) -> RunState:
    """Resume a run from its checkpoint: model, optimizer, AMP scaler and RNG states (the lr
    schedule's state is returned in ``RunState.scheduler`` for the trainer)."""
    load_model_weights(model, extract_model_state(ckpt, path), source=path)
    if ckpt.get("optimizer_state") is not None:
        optimizer.load_state_dict(ckpt["optimizer_state"])
    if ckpt.get("scaler_state") is not None and scaler.is_enabled():
        scaler.load_state_dict(ckpt["scaler_state"])
    if ckpt.get("rng") is not None:
        set_rng_state(ckpt["rng"])
    state = RunState(int(ckpt["epoch"]), int(ckpt.get("iteration", 0)), ckpt.get("best_metric"), ckpt.get("run_id"),
                     scheduler=ckpt.get("lr_scheduler_state"))
    logger.info("resumed from %s: %d epochs and %d iterations done", path, state.epoch, state.iteration)
    log_json_stats({"_type": "resume", "epoch": state.epoch, "iteration": state.iteration, "checkpoint": path})
    return state
