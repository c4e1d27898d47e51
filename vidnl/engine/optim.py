"""Optimizers and the learning-rate schedule.

The schedule is a pure function of the fractional epoch (PySlowFast style): the trainer sets
``lr_at_epoch(cfg, epoch + iter / iters_per_epoch)`` before every step, so resuming at any
point reproduces the same learning rates without scheduler state.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn


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


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


def optimization_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer, scaler, model: nn.Module,
                      clip_grad_norm: float, where: str, base_lr: float) -> None:
    """Check the loss is finite, backpropagate (through the AMP scaler), clip the global gradient
    norm if asked, step the optimizer. ``where`` names the position for the error message."""
    if not math.isfinite(loss.item()):
        raise TrainingDiverged(f"loss is {loss.item()} at {where}; lower SOLVER.BASE_LR (now {base_lr})")
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if clip_grad_norm > 0:
        scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_(model.parameters(), clip_grad_norm)
    scaler.step(optimizer)
    scaler.update()
