"""torch.distributed helpers. Launch with torchrun; each process reads RANK / WORLD_SIZE /
LOCAL_RANK from the environment. Backend: nccl on GPU, gloo on CPU.

    torchrun --nproc_per_node 2 tools/run_net.py --cfg X.yaml
    torchrun --nnodes 2 --node_rank R --nproc_per_node 8 --rdzv_endpoint HOST:29500 tools/run_net.py --cfg X.yaml

``TRAIN.BATCH_SIZE`` is the global batch (split evenly over the processes). What is identical
across process counts and what is not: docs/distributed.md. Scale ``SOLVER.BASE_LR`` linearly
with the global batch when you change it.
"""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Sampler

from ..errors import ConfigError


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1


def init_distributed(use_cuda: bool) -> None:
    """Join the process group when started by torchrun (no-op otherwise or if already joined)."""
    if not launched_by_torchrun() or is_initialized():
        return
    if use_cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_initialized() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_initialized() else 1


def is_main_process() -> bool:
    return get_rank() == 0


def barrier() -> None:
    if is_initialized():
        dist.barrier()


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    """Element-wise sum of ``values`` over all processes (``values`` itself without distribution).
    float64 on ``device`` (the backend's device: CUDA for nccl)."""
    if not is_initialized():
        return list(values)
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def all_gather_objects(obj) -> list:
    """Every process's ``obj``, in rank order (a one-element list without distribution)."""
    if not is_initialized():
        return [obj]
    out = [None] * get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj, src: int = 0):
    if not is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


class GlobalBatchSampler(Sampler[int]):
    """Shuffled training indices, cut into global batches of ``global_batch`` and split so that
    process ``rank`` takes its contiguous share of every global batch. With one process this is a
    plain shuffled, drop-last order; with W processes the union of their batches at each step is
    exactly the one-process batch, so W processes with the same global batch see the same data.
    The order depends only on (seed, epoch): call ``set_epoch`` every epoch."""

    def __init__(self, dataset_size: int, global_batch: int, seed: int, rank: int = 0, world_size: int = 1):
        if global_batch % world_size:
            raise ConfigError(f"TRAIN.BATCH_SIZE={global_batch} (global) must be divisible by the "
                              f"{world_size} processes")
        self.n, self.global_batch, self.seed = dataset_size, global_batch, seed
        self.rank, self.world = rank, world_size
        self.local = global_batch // world_size
        self.epoch = 0
        self.start_step = 0

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        """Select the epoch's order; ``start_step`` skips the first global batches (resuming a
        run from a mid-epoch checkpoint)."""
        self.epoch = epoch
        self.start_step = start_step

    def num_steps(self) -> int:
        return self.n // self.global_batch if self.n >= self.global_batch else (1 if self.world == 1 else 0)

    def __iter__(self):
        g = torch.Generator()
        g.manual_seed((self.seed * 1_000_003 + self.epoch) % 2**63)
        order = torch.randperm(self.n, generator=g).tolist()
        if self.n < self.global_batch:  # a single short batch (one process only)
            yield from order if self.world == 1 and self.start_step == 0 else []
            return
        for step in range(self.start_step, self.num_steps()):
            start = step * self.global_batch + self.rank * self.local
            yield from order[start:start + self.local]

    def __len__(self) -> int:
        if self.n < self.global_batch:
            return self.n if self.world == 1 and self.start_step == 0 else 0
        return (self.num_steps() - self.start_step) * self.local


def shard_indices(n: int, rank: int, world_size: int) -> list[int]:
    """Evaluation shard: every index exactly once over all processes (no padding)."""
    return np.arange(rank, n, world_size).tolist()
