"""Which dataset indices each process reads: training batches split over processes, sharded evaluation.

``GlobalBatchSampler`` makes the union of the processes' batches at every step exactly the
one-process batch (so a run's data does not depend on the process count, docs/distributed.md);
``shard_indices`` gives every evaluation index to exactly one process. Plain arguments (sizes,
rank, world size): the engine's distributed helpers supply them.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Sampler

from ..errors import ConfigError


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
