"""Reading weights into a model: checkpoint files (``weights_only``), Caffe2 pickles, strict
key matching, other layouts (``MODEL.WEIGHTS_FORMAT``, converted by ``inflate`` and
``weight_formats``).

``load_weights(model, path, fmt=...)`` is what a builder, a tool or the trainer calls:
file -> state dict (``load_checkpoint_file`` / ``extract_model_state``) -> vidnl's key layout
(``convert_state_dict``) -> ``load_model_weights`` (every tensor accounted for, or a
:class:`CheckpointError` naming the file and keys). Saving, resuming a run and the run state
are the engine's (``vidnl.engine.checkpoint``); this module knows nothing of runs.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import pickle
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn

from ..errors import VidnlUserError
from .inflate import convert_state_dict

logger = logging.getLogger(__name__)


class CheckpointError(VidnlUserError, RuntimeError):
    """A checkpoint cannot be used; the message names the file and why."""


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside torch.compile's and DDP's wrappers."""
    model = getattr(model, "_orig_mod", model)
    return model.module if hasattr(model, "module") else model


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
    is an error unless ``allow_shape_mismatch`` (then skipped and logged). A tensor holding NaN or
    infinite values is an error (weights of a diverged run).
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
    nonfinite = [k for k, v in usable.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if nonfinite:
        raise CheckpointError(
            f"{source}: {len(nonfinite)} tensors hold NaN or infinite values (first: {', '.join(nonfinite[:5])}): "
            f"these weights come from a diverged or damaged run and would give NaN scores; use an earlier checkpoint")
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
        state = convert_state_dict(state, unwrap(model), fmt, inflate)
    return load_model_weights(model, state, source=path, allow_shape_mismatch=allow_shape_mismatch, skip=skip)
