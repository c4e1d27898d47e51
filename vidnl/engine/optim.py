"""Optimizers and the learning-rate schedule.

The schedule is a pure function of the fractional epoch (PySlowFast style): the trainer sets
``lr_at_epoch(cfg, epoch + iter / iters_per_epoch)`` before every step, so resuming at any
point reproduces the same learning rates without scheduler state. The one exception is
``SOLVER.LR_POLICY plateau`` (:class:`PlateauSchedule`): its learning rate depends on the
validation metrics seen so far, so its small state travels in the run's checkpoints.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from ..errors import VidnlUserError


def lr_at_epoch(cfg, epoch: float, plateau: "PlateauSchedule | None" = None) -> float:
    """Learning rate at fractional epoch ``epoch`` (warm-up, then the policy). The plateau
    policy needs its schedule ``plateau`` (the current lr; the warm-up ramps towards it)."""
    s = cfg.SOLVER
    lr = _policy_lr(cfg, epoch, plateau)
    if epoch < s.WARMUP_EPOCHS:
        end = _policy_lr(cfg, s.WARMUP_EPOCHS, plateau)
        lr = s.WARMUP_START_LR + (end - s.WARMUP_START_LR) * epoch / s.WARMUP_EPOCHS
    return lr


def _policy_lr(cfg, epoch: float, plateau: "PlateauSchedule | None" = None) -> float:
    s = cfg.SOLVER
    if s.LR_POLICY == "plateau":
        if plateau is None:
            raise ValueError("SOLVER.LR_POLICY plateau: lr_at_epoch needs the PlateauSchedule of the run")
        return plateau.lr
    if s.LR_POLICY == "constant":
        return s.BASE_LR
    if s.LR_POLICY == "cosine":
        progress = min(max(epoch / s.MAX_EPOCH, 0.0), 1.0)
        return s.COSINE_END_LR + (s.BASE_LR - s.COSINE_END_LR) * 0.5 * (1.0 + math.cos(math.pi * progress))
    if s.LR_POLICY == "steps_with_relative_lrs":
        stage = max(i for i, start in enumerate(s.STEPS) if start <= epoch)
        return s.BASE_LR * s.LRS[stage]
    raise ValueError(f"SOLVER.LR_POLICY {s.LR_POLICY!r} is not supported")


class PlateauSchedule:
    """The learning rate of ``SOLVER.LR_POLICY plateau``: torch's ``ReduceLROnPlateau`` rules,
    stepped once per validation with its metric (our own state object, so that the per-step
    warm-up can still set the optimizer's lr and the state is plain data for checkpoints).

    ``step(metric)``: the metric improves if ``metric > best + threshold`` (mode "max", "abs"),
    ``> best * (1 + threshold)`` ("max", "rel"), ``< best - threshold`` / ``< best * (1 -
    threshold)`` (mode "min"); an improvement sets ``best`` and zeroes the count of bad steps,
    otherwise it grows by one. During a cooldown the counter of cooldown steps drops by one and
    bad steps are not counted. When more than ``patience`` bad steps have been counted the lr
    becomes ``max(lr * factor, min_lr)`` (kept if that changes it by ``eps`` or less), the
    cooldown starts (``cooldown`` steps) and the count restarts from 0. ``best`` starts at -inf
    (mode "max") or +inf ("min"); NaN never improves.
    """

    def __init__(self, lr: float, factor: float = 0.1, patience: int = 10, threshold: float = 1e-4,
                 threshold_mode: str = "rel", cooldown: int = 0, min_lr: float = 0.0, mode: str = "max",
                 eps: float = 1e-8):
        if mode not in ("min", "max") or threshold_mode not in ("rel", "abs"):
            raise ValueError(f"PlateauSchedule: mode {mode!r} / threshold_mode {threshold_mode!r}")
        if not 0.0 < factor < 1.0:
            raise ValueError(f"PlateauSchedule: factor must be in (0, 1), got {factor!r}")
        self.factor, self.patience, self.threshold, self.threshold_mode = factor, patience, threshold, threshold_mode
        self.cooldown, self.min_lr, self.mode, self.eps = cooldown, min_lr, mode, eps
        self.lr = float(lr)
        self.best = -math.inf if mode == "max" else math.inf
        self.num_bad = 0
        self.cooldown_counter = 0
        self.steps = 0  # validations seen

    @classmethod
    def from_cfg(cls, cfg) -> "PlateauSchedule":
        s = cfg.SOLVER
        return cls(s.BASE_LR, factor=s.PLATEAU_FACTOR, patience=s.PLATEAU_PATIENCE, threshold=s.PLATEAU_THRESHOLD,
                   threshold_mode=s.PLATEAU_THRESHOLD_MODE, cooldown=s.PLATEAU_COOLDOWN, min_lr=s.PLATEAU_MIN_LR,
                   mode="max")

    def improves(self, metric: float) -> bool:
        if self.mode == "max":
            ref = self.best * (1.0 + self.threshold) if self.threshold_mode == "rel" else self.best + self.threshold
            return metric > ref
        ref = self.best * (1.0 - self.threshold) if self.threshold_mode == "rel" else self.best - self.threshold
        return metric < ref

    def step(self, metric: float) -> bool:
        """Account for one validation's ``metric``; True if the lr was reduced."""
        metric = float(metric)
        self.steps += 1
        if self.improves(metric):
            self.best, self.num_bad = metric, 0
        else:
            self.num_bad += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad = 0
        if self.num_bad <= self.patience:
            return False
        self.cooldown_counter, self.num_bad = self.cooldown, 0
        new = max(self.lr * self.factor, self.min_lr)
        if self.lr - new <= self.eps:
            return False
        self.lr = new
        return True

    _STATE = ("lr", "best", "num_bad", "cooldown_counter", "steps")

    def state_dict(self) -> dict:
        """Plain numbers (what a checkpoint holds under ``lr_scheduler_state``)."""
        return {"policy": "plateau", **{k: getattr(self, k) for k in self._STATE}}

    def load_state_dict(self, state: dict) -> None:
        missing = [k for k in self._STATE if k not in state]
        if state.get("policy") != "plateau" or missing:
            raise ValueError(f"not a plateau schedule's state (policy {state.get('policy')!r}, missing {missing})")
        self.lr, self.best = float(state["lr"]), float(state["best"])
        self.num_bad, self.cooldown_counter, self.steps = (int(state[k]) for k in ("num_bad", "cooldown_counter",
                                                                                     "steps"))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def param_groups(model: nn.Module, weight_decay: float, decay_on_bn: bool) -> list[dict]:
    """Weight decay on conv/linear weights; BN parameters and biases get none unless asked."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if (p.ndim <= 1 and not decay_on_bn) else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def build_optimizer(cfg, model: nn.Module) -> torch.optim.Optimizer:
    s = cfg.SOLVER
    groups = param_groups(model, s.WEIGHT_DECAY, cfg.BN.WEIGHT_DECAY_ON_BN)
    if s.OPTIMIZING_METHOD == "sgd":
        return torch.optim.SGD(groups, lr=s.BASE_LR, momentum=s.MOMENTUM,
                               nesterov=s.NESTEROV and s.MOMENTUM > 0)
    if s.OPTIMIZING_METHOD == "adam":
        return torch.optim.Adam(groups, lr=s.BASE_LR, betas=(s.MOMENTUM, 0.999))
    if s.OPTIMIZING_METHOD == "adamw":
        return torch.optim.AdamW(groups, lr=s.BASE_LR, betas=(s.MOMENTUM, 0.999))
    raise ValueError(f"SOLVER.OPTIMIZING_METHOD {s.OPTIMIZING_METHOD!r} is not supported")


class TrainingDiverged(VidnlUserError, ArithmeticError):
    """Training diverged (a NaN or infinite loss or gradient): the message says where and what to
    change; tools exit 2 without a traceback."""


class NonFiniteStep(ArithmeticError):
    """A training step's loss or gradient norm is NaN or infinite; the weights were not changed.
    ``what`` is "loss" or "gradient norm", ``value`` its value."""

    def __init__(self, what: str, value: float):
        super().__init__(f"{what} is {value}")
        self.what, self.value = what, value


def optimization_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer, scaler, model: nn.Module,
                      clip_grad_norm: float) -> None:
    """Backpropagate ``loss`` (through the AMP scaler), clip the global gradient norm if asked and
    step the optimizer. Raises :class:`NonFiniteStep` before touching the weights when the loss,
    or (without a float16 gradient scaler, which skips such steps itself) the gradient norm, is
    not finite. The backward pass runs first, so under DDP every process takes part in its
    gradient all-reduce and sees the same non-finite norm."""
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    value = loss.item()
    if not math.isfinite(value):
        optimizer.zero_grad(set_to_none=True)
        raise NonFiniteStep("loss", value)
    params = [p for p in model.parameters() if p.grad is not None]
    if clip_grad_norm > 0:
        scaler.unscale_(optimizer)
        norm = nn.utils.clip_grad_norm_(params, clip_grad_norm)
    elif not scaler.is_enabled():
        norm = nn.utils.get_total_norm([p.grad for p in params])
    else:
        norm = None
    if norm is not None and not scaler.is_enabled() and not math.isfinite(norm.item()):
        optimizer.zero_grad(set_to_none=True)
        raise NonFiniteStep("gradient norm", norm.item())
    scaler.step(optimizer)
    scaler.update()
