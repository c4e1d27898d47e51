"""The model for testing and prediction, optionally compiled (TEST.COMPILE).

``compile_for_inference(model, batch_size, backend)`` wraps an eval-mode model so that every
forward pass of at most ``batch_size`` clips runs through one ``torch.compile`` graph: a
smaller pass (a video's last views, the last tracklet chunks) is padded with zero clips to
``batch_size`` and their outputs dropped, so the graph is compiled once, for one shape, instead
of again for every remainder size. That is exact because an eval-mode model scores each clip
of a batch on its own (BN uses its running statistics; every nonlocal block attends within a
clip). If compiling fails on the first pass, the log says why and inference goes on with the
eager model.
"""

from __future__ import annotations

import logging
import time

import torch
import torch.nn as nn

logger = logging.getLogger(__name__)


class CompiledInference(nn.Module):
    """``model`` (in eval mode) through ``torch.compile(model, backend=backend, dynamic=False)``
    for inputs B×... with B ≤ ``batch_size`` (padded to ``batch_size``); outputs as
    ``model``'s, B×.... ``key`` names the config key in log lines."""

    def __init__(self, model: nn.Module, batch_size: int, backend: str = "inductor", key: str = "TEST.COMPILE"):
        super().__init__()
        self.model = model
        self.batch_size = int(batch_size)
        self.backend = backend
        self.key = key
        # Not a registered submodule: the compiled wrapper shares ``model``'s parameters, which
        # state_dict() and parameters() must list once.
        self.__dict__["compiled"] = torch.compile(model, backend=backend, dynamic=False)
        self.compiled_ok = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.compiled is None:
            return self.model(x)
        n = x.shape[0]
        padded = x if n >= self.batch_size else torch.cat([x, x.new_zeros((self.batch_size - n,) + x.shape[1:])])
        if self.compiled_ok:
            return self.compiled(padded)[:n]
        start = time.time()
        try:
            out = self.compiled(padded)[:n]
        except Exception as e:  # noqa: BLE001 - any compiler failure falls back to eager mode
            logger.warning("%s: compiling failed (%s: %s); inference in eager mode", self.key, type(e).__name__,
                           str(e).splitlines()[0][:300] if str(e) else "")
            self.__dict__["compiled"] = None
            return self.model(x)
        self.compiled_ok = True
        logger.info("%s: compiled the model (backend %s) for forward passes of %d clips in %.1f s", self.key,
                    self.backend, self.batch_size, time.time() - start)
        return out


def compile_for_inference(model: nn.Module, batch_size: int, backend: str | None) -> nn.Module:
    """``model`` itself when ``backend`` is None, else a :class:`CompiledInference` of it."""
    return model if backend is None else CompiledInference(model, batch_size, backend)


def inference_compile_backend(cfg) -> str | None:
    """TEST.COMPILE_BACKEND when TEST.COMPILE is set, else None (eager inference)."""
    return cfg.TEST.COMPILE_BACKEND if cfg.TEST.COMPILE else None


def build_inference_model(cfg, model: nn.Module) -> nn.Module:
    """``model`` for the test and prediction loops of ``cfg``: compiled for forward passes of
    TEST.BATCH_SIZE clips when TEST.COMPILE is set."""
    return compile_for_inference(model, cfg.TEST.BATCH_SIZE, inference_compile_backend(cfg))


__all__ = ["CompiledInference", "compile_for_inference", "build_inference_model", "inference_compile_backend"]
