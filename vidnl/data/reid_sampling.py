"""Re-ID sampling: P×K identity batches, training clip frame indices, test chunks.

Everything random here is a pure function of (seed, epoch, position), so a resumed run sees the
same batches and clips as an uninterrupted one.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler

from ..errors import ConfigError

SAMPLE_MODES = ("random_consecutive", "restricted_random")


def train_frame_indices(num_frames: int, seq_len: int, mode: str, rng: np.random.Generator) -> np.ndarray:
    """Indices (``seq_len``, increasing) of the frames of one training clip of a tracklet with
    ``num_frames`` frames.

    ``random_consecutive``: ``seq_len`` consecutive frames from a uniformly random start.
    ``restricted_random``: the frames are cut into ``seq_len`` contiguous chunks of (nearly)
    equal length and one frame is drawn uniformly from each (Li et al. 2018's restricted random
    sampling). A tracklet shorter than ``seq_len`` repeats its last frame (both modes).
    """
    if num_frames < 1:
        raise ValueError(f"a tracklet needs at least one frame, got {num_frames}")
    if mode == "random_consecutive":
        if num_frames >= seq_len:
            start = int(rng.integers(0, num_frames - seq_len + 1))
            return np.arange(start, start + seq_len)
        return np.minimum(np.arange(seq_len), num_frames - 1)
    if mode == "restricted_random":
        if num_frames < seq_len:
            return np.minimum(np.arange(seq_len), num_frames - 1)
        edges = np.floor(np.linspace(0, num_frames, seq_len + 1)).astype(np.int64)
        return np.array([int(rng.integers(lo, hi)) for lo, hi in zip(edges[:-1], edges[1:])])
    raise ValueError(f"REID.SAMPLE_MODE must be one of {SAMPLE_MODES}, got {mode!r}")


def test_chunks(num_frames: int, seq_len: int) -> np.ndarray:
    """Every frame of a tracklet in chunks of ``seq_len``: (ceil(n / seq_len), seq_len) indices.

    The last chunk holds the r = n - (chunks - 1)·seq_len remaining frames (1 <= r <= seq_len)
    repeated cyclically: ``s, s+1, ..., s+r-1, s, s+1, ...`` (Gao & Nevatia's "dense" test
    sampling in Video-Person-ReID's ``video_loader.py``); e.g. 10 frames in chunks of 4 ->
    [0..3], [4..7], [8, 9, 8, 9]."""
    if num_frames < 1:
        raise ValueError(f"a tracklet needs at least one frame, got {num_frames}")
    if seq_len < 1:
        raise ValueError(f"seq_len must be >= 1, got {seq_len}")
    n_chunks = -(-num_frames // seq_len)
    start = (n_chunks - 1) * seq_len
    idx = np.arange(n_chunks * seq_len)
    idx[start:] = start + np.arange(seq_len) % (num_frames - start)
    return idx.reshape(n_chunks, seq_len)


test_chunks.__test__ = False  # not a pytest test despite the name


class RandomIdentitySampler(Sampler[list]):
    """Batches of P identities × K tracklets (``batch_size = P·K``), as a batch sampler.

    Every epoch, each identity contributes one group of K of its tracklets: K distinct ones
    drawn without replacement when it has at least K, otherwise K drawn with replacement. The
    groups are shuffled and cut into batches of P groups (the incomplete last batch is dropped);
    so an epoch has ``floor(num_identities / P)`` batches and the P identities of a batch are
    distinct. This is the epoch of Gao & Nevatia's reference code, which Table 9's 500 epochs
    count.

    ``batch_size`` is the *global* batch. With ``world_size`` W processes (torchrun), process
    ``rank`` yields its contiguous slice ``[rank·B/W, (rank+1)·B/W)`` of every global batch, so
    the W processes together see exactly the batches of one process (a slice may end inside an
    identity's group: the re-ID loss gathers the features of the whole global batch for the
    triplet term, see :func:`vidnl.engine.losses.reid_loss`).

    Yields lists of ``(tracklet_index, slot)``; ``slot`` (the sample's position in the epoch's
    global order) seeds the clip drawn from the tracklet, so repeated tracklets give different
    clips and a sample gets the same clip whatever W is. The order depends only on (seed,
    epoch): call :meth:`set_epoch` every epoch; ``start_step`` skips the first batches (resuming
    mid-epoch).
    """

    def __init__(self, pids: Sequence[int], batch_size: int, num_instances: int, seed: int = 0, rank: int = 0,
                 world_size: int = 1):
        if batch_size % num_instances:
            raise ValueError(f"batch size {batch_size} is not divisible by num_instances {num_instances}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} of {world_size} processes")
        if batch_size % world_size:
            raise ConfigError(f"TRAIN.BATCH_SIZE={batch_size} (the global P x K batch) must be divisible by the "
                              f"{world_size} processes")
        self.k = num_instances
        self.p = batch_size // num_instances
        self.rank, self.world = rank, world_size
        self.local = batch_size // world_size
        self.seed = seed
        self.epoch = 0
        self.start_step = 0
        self.index_of_pid: dict[int, list[int]] = {}
        for i, pid in enumerate(pids):
            self.index_of_pid.setdefault(int(pid), []).append(i)
        self.pids = sorted(self.index_of_pid)

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        self.epoch, self.start_step = epoch, start_step

    def num_steps(self) -> int:
        return len(self.pids) // self.p

    def __len__(self) -> int:
        return self.num_steps() - self.start_step

    def batches(self) -> list[list[int]]:
        """The epoch's global batches as tracklet indices (P·K each, every process alike)."""
        rng = np.random.default_rng([self.seed, self.epoch, 0x5EED])
        groups = []
        for pid in self.pids:
            idx = self.index_of_pid[pid]
            replace = len(idx) < self.k
            groups.append([idx[j] for j in rng.choice(len(idx), size=self.k, replace=replace)])
        order = rng.permutation(len(groups))
        n = self.num_steps()
        return [[t for g in order[b * self.p:(b + 1) * self.p] for t in groups[g]] for b in range(n)]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        size = self.p * self.k
        lo = self.rank * self.local
        for b, batch in enumerate(self.batches()):
            if b >= self.start_step:
                yield [(t, b * size + j) for j, t in enumerate(batch) if lo <= j < lo + self.local]
