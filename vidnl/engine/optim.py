"""Optimizers and the learning-rate schedule.

The schedule is a pure function of the fractional epoch (PySlowFast style): the trainer sets
``lr_at_epoch(cfg, epoch + iter / iters_per_epoch)`` before every step, so resuming at any
point reproduces the same learning rates without scheduler state.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from ..errors import VidnlUserError


def lr_at_epoch(cfg, epoch: float) -> float:
    """Learning rate at fractional epoch ``epoch`` (warm-up, then the policy)."""
    s = cfg.SOLVER
    lr = _policy_lr(cfg, epoch)
    if epoch < s.WARMUP_EPOCHS:
        end = _policy_lr(cfg, s.WARMUP_EPOCHS)
        lr = s.WARMUP_START_LR + (end - s.WARMUP_START_LR) * epoch / s.WARMUP_EPOCHS
    return lr


def _policy_lr(cfg, epoch: float) -> float:
    s = cfg.SOLVER
    if s.LR_POLICY == "constant":
        return s.BASE_LR
    if s.LR_POLICY == "cosine":
        progress = min(max(epoch / s.MAX_EPOCH, 0.0), 1.0)
        return s.COSINE_END_LR + (s.BASE_LR - s.COSINE_END_LR) * 0.5 * (1.0 + math.cos(math.pi * progress))
    if s.LR_POLICY == "steps_with_relative_lrs":
        stage = max(i for i, start in enumerate(s.STEPS) if start <= epoch)
        return s.BASE_LR * s.LRS[stage]
    raise ValueError(f"SOLVER.LR_POLICY {s.LR_POLICY!r} is not supported")


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
