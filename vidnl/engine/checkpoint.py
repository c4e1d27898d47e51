"""Checkpoints: atomic writes, safe loads (``weights_only=True``), resume state, weight loading.

Layout: ``OUTPUT_DIR/checkpoints/checkpoint_epoch_00005.pyth`` (state after 5 finished epochs),
``checkpoint_epoch_00005_iter_000120.pyth`` (5 epochs and 120 iterations of the 6th, written
every TRAIN.CHECKPOINT_PERIOD_ITERS iterations) and ``checkpoint_best.pyth`` (best validation
top-1). A checkpoint holds ``model_state``, ``optimizer_state``, ``scaler_state`` (AMP),
``epoch`` (finished epochs), ``iteration`` (iterations done in the next epoch), ``rng`` (python,
numpy, torch[, cuda]), ``best_metric``, ``cfg`` (YAML text) and ``vidnl_version``.
"""

from __future__ import annotations

import logging
import os
import pickle
import random
import re
import tempfile
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from ..errors import VidnlUserError

logger = logging.getLogger(__name__)

_EPOCH_RE = re.compile(r"^checkpoint_epoch_(\d+)(?:_iter_(\d+))?\.pyth$")


class CheckpointError(VidnlUserError, RuntimeError):
    """A checkpoint cannot be used; the message names the file and why."""


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


def load_checkpoint_file(path: str) -> dict:
    """Load with ``weights_only=True``; files that need arbitrary unpickling are refused."""
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"{path}: refused to load: it contains objects that need arbitrary code to unpickle "
            f"(only tensors, numbers, strings and containers are accepted): {str(e).splitlines()[0]}"
        ) from None
    except Exception as e:
        raise CheckpointError(f"{path}: unreadable checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a dict (a checkpoint or a state dict), got {type(obj).__name__}")
    return obj


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


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") else model


def find_resume_checkpoint(output_dir: str) -> tuple[str, dict] | None:
    """Newest readable epoch checkpoint of a run; an unreadable newest one is skipped with a
    warning (e.g. a disk that filled up) and the previous one is used."""
    for path in reversed(list_checkpoints(output_dir)):
        try:
            return path, load_checkpoint_file(path)
        except CheckpointError as e:
            logger.warning("skipping unreadable checkpoint: %s", e)
    return None


def extract_model_state(ckpt: dict) -> dict:
    """The model state dict of a vidnl checkpoint or of a plain state dict (``module.`` and
    ``model.`` prefixes of wrapped models removed)."""
    state = ckpt.get("model_state", ckpt.get("state_dict", ckpt))
    if not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError("no model state dict found (expected 'model_state' or a dict of tensors)")
    for prefix in ("module.",):
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def load_model_weights(model: nn.Module, state: dict, *, allow_shape_mismatch: bool = False,
                       source: str = "checkpoint") -> dict:
    """Copy matching tensors of ``state`` into ``model``.

    Missing and unexpected keys are logged (never silently ignored). A parameter whose shape
    differs is an error unless ``allow_shape_mismatch``, then it is skipped and logged.
    Returns {"missing": [...], "unexpected": [...], "shape_mismatch": [...]}.
    """
    model = unwrap(model)
    own = model.state_dict()
    mismatched = [(k, tuple(v.shape), tuple(own[k].shape)) for k, v in state.items()
                  if k in own and tuple(v.shape) != tuple(own[k].shape)]
    if mismatched and not allow_shape_mismatch:
        lines = "; ".join(f"{k}: {s} in file vs {o} in model" for k, s, o in mismatched[:10])
        raise CheckpointError(
            f"{source}: {len(mismatched)} tensors have other shapes than the model ({lines}). "
            f"Set TRAIN.CHECKPOINT_ALLOW_SHAPE_MISMATCH True to skip them."
        )
    skip = {k for k, _, _ in mismatched}
    usable = {k: v for k, v in state.items() if k in own and k not in skip}
    missing = sorted(k for k in own if k not in usable)
    unexpected = sorted(k for k in state if k not in own)
    model.load_state_dict(usable, strict=False)
    for what, keys in (("missing in file (kept as initialised)", missing), ("unexpected (ignored)", unexpected),
                       ("shape mismatch (skipped)", [k for k, _, _ in mismatched])):
        if keys:
            logger.warning("%s: %d keys %s: %s", source, len(keys), what, ", ".join(keys[:20]) +
                           (" ..." if len(keys) > 20 else ""))
    logger.info("%s: loaded %d of %d model tensors", source, len(usable), len(own))
    return {"missing": missing, "unexpected": unexpected, "shape_mismatch": [k for k, _, _ in mismatched]}


def load_weights(model: nn.Module, path: str, *, ckpt: dict | None = None, fmt: str | None = None,
                 inflate: str = "mean", allow_shape_mismatch: bool = False) -> dict:
    """Load the model weights of the file ``path`` (or of its already loaded ``ckpt``) into
    ``model``. ``fmt`` (MODEL.WEIGHTS_FORMAT) converts other layouts and inflates 2D kernels
    (see ``vidnl.models.inflate``); None takes the keys as they are. Returns the key report of
    :func:`load_model_weights`."""
    state = extract_model_state(ckpt if ckpt is not None else load_checkpoint_file(path))
    if fmt is not None:
        from ..models.inflate import convert_state_dict

        state = convert_state_dict(state, unwrap(model), fmt, inflate)
    return load_model_weights(model, state, source=path, allow_shape_mismatch=allow_shape_mismatch)


@dataclass
class RunState:
    """Where a run stands: ``epoch`` finished epochs, ``iteration`` iterations of the next, and
    the best validation metric so far."""

    epoch: int = 0
    iteration: int = 0
    best: float | None = None


def restore_run(path: str, ckpt: dict, model: nn.Module, optimizer, scaler) -> RunState:
    """Resume a run from its checkpoint: model, optimizer, AMP scaler and RNG states."""
    load_model_weights(model, extract_model_state(ckpt), source=path)
    if ckpt.get("optimizer_state") is not None:
        optimizer.load_state_dict(ckpt["optimizer_state"])
    if ckpt.get("scaler_state") is not None and scaler.is_enabled():
        scaler.load_state_dict(ckpt["scaler_state"])
    if ckpt.get("rng") is not None:
        set_rng_state(ckpt["rng"])
    state = RunState(int(ckpt["epoch"]), int(ckpt.get("iteration", 0)), ckpt.get("best_metric"))
    logger.info("resumed from %s: %d epochs and %d iterations done", path, state.epoch, state.iteration)
    return state
