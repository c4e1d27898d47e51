"""Layers whose training output does not depend on how a global batch is split over processes.

With ``TRAIN.BATCH_SIZE`` = B split over W torchrun processes (B/W each), two layers make W
processes differ from one process even when the data and the averaged gradients are the same:

* **BatchNorm** in training mode normalises with the statistics of the process's own B/W
  clips. ``GlobalBatchNorm`` all-reduces the per-channel sum, sum of squares and count
  (differentiably, any backend incl. gloo on the CPU), so every process normalises with the
  statistics of the whole global batch; on CUDA ``nn.SyncBatchNorm`` does the same.
* **Dropout** draws its mask from the process's RNG. ``GlobalBatchDropout`` draws the mask of
  the *whole* global batch from a generator seeded by (seed, global step, layer) on every
  process and keeps the rows of its own shard, so sample i gets the same mask whatever W is
  (and a resumed run gets the masks an uninterrupted one would).

``make_split_invariant(model, ...)`` swaps them in; state-dict keys do not change.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F


class _AllReduceSum(torch.autograd.Function):
    """Sum over processes; the gradient of each process's input is the sum of all processes'
    output gradients (every process's loss depends on every input through the sum)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm (any of 1d/2d/3d) with training statistics over all processes.
    B×C×... -> B×C×... . Evaluation mode (and frozen BN) uses the running statistics as usual."""

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected a B×C×... input, got {x.dim()}D")

    @torch.compiler.disable  # a collective per layer: run eagerly under TRAIN.COMPILE
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or not (dist.is_available() and dist.is_initialized()):
            return super().forward(x)
        c = x.shape[1]
        dims = [0] + list(range(2, x.dim()))
        xf = x.float()
        count = torch.full((1,), x.numel() // c, dtype=torch.float32, device=x.device)
        stats = _AllReduceSum.apply(torch.cat([xf.sum(dims), (xf * xf).sum(dims), count]))
        n = stats[-1]
        mean = stats[:c] / n
        var = (stats[c:2 * c] / n - mean * mean).clamp_min(0)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(var.detach() * (n / (n - 1).clamp_min(1)), alpha=m)
        shape = [1, c] + [1] * (x.dim() - 2)
        y = (xf - mean.view(shape)) * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype)


class GlobalBatchDropout(nn.Module):
    """Dropout whose mask for sample i of global step s depends only on (seed, s, layer, i).

    ``rank``/``world`` say which rows of the global batch this process holds (contiguous shares
    of B, as vidnl's GlobalBatchSampler gives them); ``set_step`` must be called before each
    training forward (``set_dropout_step``); without a step it falls back to ``F.dropout``."""

    def __init__(self, p: float, layer: int, seed: int = 0, rank: int = 0, world: int = 1):
        super().__init__()
        self.p, self.layer, self.seed, self.rank, self.world = float(p), layer, seed, rank, world
        self.step: int | None = None

    @torch.compiler.disable  # the step changes every call: not a graph constant under TRAIN.COMPILE
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        if self.step is None:
            return F.dropout(x, self.p, True)
        g = torch.Generator(device=x.device)
        g.manual_seed((self.seed * 1_000_003 + self.step * 4_099 + self.layer) % 2**63)
        local = x.shape[0]
        keep = torch.rand((local * self.world,) + tuple(x.shape[1:]), generator=g, device=x.device) >= self.p
        keep = keep[self.rank * local:(self.rank + 1) * local]
        return x * keep.to(x.dtype) / (1.0 - self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}, layer={self.layer}, rank={self.rank}/{self.world}"


def _replace(module: nn.Module, make) -> nn.Module:
    new = make(module)
    if new is not None:
        return new
    for name, child in module.named_children():
        setattr(module, name, _replace(child, make))
    return module


def make_split_invariant(model: nn.Module, *, seed: int, rank: int, world: int, sync_bn: str) -> nn.Module:
    """Swap every ``nn.Dropout`` for ``GlobalBatchDropout`` and, per ``sync_bn``, every BatchNorm:
    ``"global"`` -> ``GlobalBatchNorm``, ``"cuda"`` -> ``nn.SyncBatchNorm``, ``"none"`` -> kept."""
    layers = iter(range(1 << 30))

    def dropout(m):
        if type(m) is nn.Dropout:
            return GlobalBatchDropout(m.p, next(layers), seed, rank, world)
        return None

    model = _replace(model, dropout)
    if sync_bn == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if sync_bn == "global":
        def batchnorm(m):
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and not isinstance(m, (GlobalBatchNorm, nn.SyncBatchNorm)):
                new = GlobalBatchNorm(m.num_features, m.eps, m.momentum, m.affine, m.track_running_stats)
                new.load_state_dict(m.state_dict())
                new.train(m.training)
                return new.to(next(iter(m.buffers()), torch.empty(0)).device)
            return None
        model = _replace(model, batchnorm)
    return model


def set_dropout_step(model: nn.Module, step: int) -> None:
    """Select the masks of global step ``step`` in every GlobalBatchDropout of ``model``."""
    for m in model.modules():
        if isinstance(m, GlobalBatchDropout):
            m.step = step
