"""Checkpoints: atomic writes, safe loads (``weights_only=True``), resume state, weight loading.

Layout: ``OUTPUT_DIR/checkpoints/checkpoint_epoch_00005.pyth`` (state after 5 finished epochs),
``checkpoint_epoch_00005_iter_000120.pyth`` (5 epochs and 120 iterations of the 6th, written
every TRAIN.CHECKPOINT_PERIOD_ITERS iterations) and ``checkpoint_best.pyth`` (best validation
top-1). A checkpoint holds ``model_state``, ``optimizer_state``, ``scaler_state`` (AMP),
``epoch`` (finished epochs), ``iteration`` (iterations done in the next epoch), ``rng`` (python,
numpy, torch[, cuda]), ``best_metric``, ``cfg`` (YAML text) and ``vidnl_version``.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import pickle
import random
import re
import tempfile
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn as nn

from ..errors import VidnlUserError
from .logging import log_json_stats

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


# What a Caffe2 .pkl of the video-nonlocal-net release may contain besides plain containers,
# strings and numbers: numpy arrays, dtypes and scalars (module names of numpy 1 and 2).
_NUMPY_PICKLE_GLOBALS = {
    (mod, name) for mod in ("numpy.core.multiarray", "numpy._core.multiarray") for name in ("_reconstruct", "scalar")
} | {("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays, dtypes and plain containers only; any other class is refused."""

    def find_class(self, module, name):
        if (module, name) in _NUMPY_PICKLE_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refused to unpickle {module}.{name} (only numpy arrays are accepted)")


def load_caffe2_pickle(path: str) -> dict:
    """The blobs of a Caffe2 ``.pkl`` (``{'blobs': {name: ndarray}}`` or a flat dict, Python 2
    pickles included) as a dict of tensors. Anything but numpy arrays and plain values is refused."""
    try:
        with open(path, "rb") as f:
            obj = _NumpyOnlyUnpickler(f, encoding="latin1").load()
    except pickle.UnpicklingError as e:
        raise CheckpointError(f"{path}: refused to load: {e}") from None
    except Exception as e:
        raise CheckpointError(f"{path}: unreadable Caffe2 pickle ({type(e).__name__}: {e})") from None
    blobs = obj.get("blobs", obj) if isinstance(obj, dict) else None
    if not isinstance(blobs, dict):
        raise CheckpointError(f"{path}: expected a dict of blobs (a Caffe2 .pkl), got {type(obj).__name__}")
    out = {}
    for k, v in blobs.items():
        k = k.decode("latin1") if isinstance(k, bytes) else str(k)
        if isinstance(v, np.ndarray) and v.dtype.kind in "fiub":
            out[k] = torch.from_numpy(np.ascontiguousarray(v))
    if not out:
        raise CheckpointError(f"{path}: no numeric arrays found in the Caffe2 pickle")
    return out


def load_checkpoint_file(path: str) -> dict:
    """Load with ``weights_only=True``; files that need arbitrary unpickling are refused. A
    ``.pkl`` file is read as a Caffe2 blob pickle (numpy arrays only)."""
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.endswith(".pkl"):
        return load_caffe2_pickle(path)
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
    """The model inside torch.compile's and DDP's wrappers."""
    model = getattr(model, "_orig_mod", model)
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


def extract_model_state(ckpt: dict, source: str = "checkpoint") -> dict:
    """The model state dict of a vidnl checkpoint or of a plain state dict (``module.`` and
    ``model.`` prefixes of wrapped models removed)."""
    state = ckpt.get("model_state", ckpt.get("state_dict", ckpt))
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{source}: no model state dict found (expected 'model_state' or 'state_dict' holding "
                              f"a dict of tensors, or a dict of tensors)")
    for prefix in ("module.",):
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


ALWAYS_OPTIONAL = ("*.num_batches_tracked",)  # BN step counters: not part of the function


def _matches(key: str, patterns) -> bool:
    return any(fnmatch.fnmatchcase(key, p) for p in patterns)


def load_model_weights(model: nn.Module, state: dict, *, skip: Sequence[str] = (), allow_shape_mismatch: bool = False,
                       source: str = "checkpoint") -> dict:
    """Copy the tensors of ``state`` into ``model``; every other outcome is an error.

    Strict: a model tensor missing from the file (except a model's ``optional_weights`` patterns,
    e.g. MARS's flow teacher, which RGB checkpoints do not have) or a file tensor the model does not have raises
    :class:`CheckpointError` naming the file and the first keys, unless the key matches one of
    the ``skip`` patterns (fnmatch, e.g. ``"head.*"``, ``"*.nonlocal_blocks.*"``): those are not
    loaded and may be missing, extra or shaped differently (logged). A tensor with another shape
    is an error unless ``allow_shape_mismatch`` (then skipped and logged).
    Returns {"missing": [...], "unexpected": [...], "shape_mismatch": [...], "skipped": [...]}.
    """
    model = unwrap(model)
    own = model.state_dict()
    skipped = sorted(k for k in set(own) | set(state) if _matches(k, skip))
    state = {k: v for k, v in state.items() if not _matches(k, skip)}
    mismatched = [(k, tuple(v.shape), tuple(own[k].shape)) for k, v in state.items()
                  if k in own and tuple(v.shape) != tuple(own[k].shape)]
    if mismatched and not allow_shape_mismatch:
        lines = "; ".join(f"{k}: {s} in file vs {o} in model" for k, s, o in mismatched[:10])
        raise CheckpointError(
            f"{source}: {len(mismatched)} tensors have other shapes than the model ({lines}). Set "
            f"TRAIN.CHECKPOINT_SKIP to patterns of keys not to load (e.g. ['head.*'] for another number of "
            f"classes) or TRAIN.CHECKPOINT_ALLOW_SHAPE_MISMATCH True to skip every mismatch."
        )
    bad_shape = {k for k, _, _ in mismatched}
    usable = {k: v for k, v in state.items() if k in own and k not in bad_shape}
    optional = ALWAYS_OPTIONAL + tuple(getattr(model, "optional_weights", ()))
    missing = sorted(k for k in own if k not in usable and k not in bad_shape and not _matches(k, skip)
                     and not _matches(k, optional))
    unexpected = sorted(k for k in state if k not in own)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} model tensors are not in the file (first: {', '.join(missing[:5])})")
        if unexpected:
            parts.append(f"{len(unexpected)} tensors of the file are not in the model (first: "
                         f"{', '.join(unexpected[:5])})")
        raise CheckpointError(
            f"{source}: the weights do not fit the model: {'; '.join(parts)}. Loaded {len(usable)} of {len(own)} "
            f"model tensors. If the layout was detected wrongly set MODEL.WEIGHTS_FORMAT; if these keys may "
            f"differ (a new head, nonlocal blocks the pretrained net lacks) list them in TRAIN.CHECKPOINT_SKIP, "
            f"e.g. ['head.*', '*.nonlocal_blocks.*'] (docs/pretrained.md)."
        )
    model.load_state_dict(usable, strict=False)
    for what, keys in (("not loaded (allowed to differ; kept as initialised)", skipped),
                       ("shape mismatch (skipped)", sorted(bad_shape))):
        if keys:
            logger.warning("%s: %d keys %s: %s", source, len(keys), what, ", ".join(keys[:20]) +
                           (" ..." if len(keys) > 20 else ""))
    logger.info("%s: loaded %d of %d model tensors", source, len(usable), len(own))
    return {"missing": missing, "unexpected": unexpected, "shape_mismatch": sorted(bad_shape), "skipped": skipped}


def load_weights(model: nn.Module, path: str, *, ckpt: dict | None = None, fmt: str | None = None,
                 inflate: str = "mean", allow_shape_mismatch: bool = False, skip: Sequence[str] = ()) -> dict:
    """Load the model weights of the file ``path`` (or of its already loaded ``ckpt``) into
    ``model``, strictly (see :func:`load_model_weights`). ``fmt`` (MODEL.WEIGHTS_FORMAT)
    converts other layouts and inflates 2D kernels (see ``vidnl.models.inflate``); None takes the
    keys as they are. Returns the key report of :func:`load_model_weights`."""
    state = extract_model_state(ckpt if ckpt is not None else load_checkpoint_file(path), path)
    if fmt is not None:
        from ..models.inflate import convert_state_dict

        state = convert_state_dict(state, unwrap(model), fmt, inflate)
    return load_model_weights(model, state, source=path, allow_shape_mismatch=allow_shape_mismatch, skip=skip)


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
