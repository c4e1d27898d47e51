"""Data loaders, collate functions and the bad-video bookkeeping.

Training batches: {"inputs": B×C×T×H×W, "labels": B, "indices": B, "failures": [(path, why)]}.
Test batches hold whole videos: {"inputs": (ΣV)×C×T×H×W for the decodable videos, "views":
views per video, "labels", "indices" of those videos, "failures" of the rest}.
"""

from __future__ import annotations

import logging
from collections import Counter

import torch
from torch.utils.data import DataLoader

from .datasets import build_dataset
from .samplers import GlobalBatchSampler, shard_indices

logger = logging.getLogger(__name__)


def collate_train(items: list[dict]) -> dict:
    batch = {
        "inputs": torch.stack([it["inputs"] for it in items]),
        "labels": torch.tensor([it["label"] for it in items], dtype=torch.long),
        "indices": torch.tensor([it["index"] for it in items], dtype=torch.long),
        "failures": [f for it in items for f in it["failures"]],
        "notes": [n for it in items for n in it.get("notes", ())],
    }
    if "flow" in items[0]:  # DATA.MODALITY rgb_flow (MARS): flow clips aligned with the RGB clips
        batch["flow"] = torch.stack([it["flow"] for it in items])
    return batch


def collate_test(items: list[dict]) -> dict:
    ok = [it for it in items if it["inputs"] is not None]
    return {
        "inputs": torch.cat([it["inputs"] for it in ok]) if ok else None,
        "views": [it["inputs"].shape[0] for it in ok],
        "labels": torch.tensor([it["label"] for it in ok], dtype=torch.long),
        "indices": torch.tensor([it["index"] for it in ok], dtype=torch.long),
        "failed_indices": [it["index"] for it in items if it["inputs"] is None],
        "failures": [f for it in items for f in it["failures"]],
        "notes": [n for it in items for n in it.get("notes", ())],
    }


class FailureLog:
    """Per-file bookkeeping of training videos that could not be decoded (``failures``: the
    sample was replaced), were truncated or shorter than one clip (``notes``: used).
    Each file is logged the first time; ``end_epoch`` reports the epoch's counts."""

    def __init__(self):
        self.total: Counter = Counter()
        self.epoch: Counter = Counter()
        self.reasons: dict[str, str] = {}
        self.kinds: dict[str, str] = {}

    def add(self, failures, notes=()) -> None:
        """``failures``: (path, reason) of videos that could not be decoded (replaced); ``notes``:
        (path, reason) of videos that were used, "truncated: ..." (fewer frames decode than the
        container promises) or shorter than one clip. One entry per file; truncated wins over short."""
        entries = [("undecodable", f) for f in failures] + [
            ("truncated" if reason.startswith("truncated:") else "short", (path, reason)) for path, reason in notes]
        for kind, (path, reason) in entries:
            old = self.kinds.get(path)
            if old is None or (kind == "truncated" and old == "short"):
                if kind == "undecodable":
                    logger.warning("cannot decode %s: %s (skipped; another video is used instead)", path, reason)
                else:
                    logger.warning("%s video %s: %s", kind, path, reason)
                self.reasons[path] = reason if old is None else f"{reason}; {self.reasons[path]}"
                self.kinds[path] = kind
            elif kind != old:
                continue  # the same decode reported twice (short and truncated): counted once
            self.total[path] += 1
            self.epoch[path] += 1

    @property
    def bad_files(self) -> list[str]:
        return [p for p in self.total if self.kinds[p] == "undecodable"]

    def end_epoch(self, epoch: int) -> dict:
        bad = {p: n for p, n in self.epoch.items() if self.kinds[p] == "undecodable"}
        short = {p: n for p, n in self.epoch.items() if self.kinds[p] == "short"}
        truncated = {p: n for p, n in self.epoch.items() if self.kinds[p] == "truncated"}
        summary = {"epoch": epoch, "decode_failures": sum(bad.values()), "bad_files": len(bad),
                   "short_videos": len(short), "truncated_videos": len(truncated)}
        if bad:
            logger.warning("epoch %d: %d decode failures in %d files (%s)", epoch, summary["decode_failures"],
                           len(bad), ", ".join(f"{p} x{n}" for p, n in sorted(bad.items())))
        if short:
            logger.warning("epoch %d: %d videos shorter than one clip (%s)", epoch, len(short),
                           ", ".join(sorted(short)))
        if truncated:
            logger.warning("epoch %d: %d truncated videos, used with the frames that decode (%s)", epoch,
                           len(truncated), ", ".join(sorted(truncated)))
        self.epoch = Counter()
        return summary

    def as_dict(self) -> dict:
        return {p: {"count": n, "reason": self.reasons[p], "kind": self.kinds[p]} for p, n in sorted(self.total.items())}


def build_train_loader(cfg, dataset=None, sampler=None) -> DataLoader:
    """Loader of training clips. ``sampler`` (default: a one-process GlobalBatchSampler) gives
    this process's share of every global batch; call its ``set_epoch`` every epoch."""
    dataset = dataset if dataset is not None else build_dataset(cfg.TRAIN.DATASET, cfg, "train")
    if sampler is None:
        sampler = GlobalBatchSampler(len(dataset), cfg.TRAIN.BATCH_SIZE, cfg.RNG_SEED)
    return DataLoader(
        dataset,
        batch_size=sampler.local,
        sampler=sampler,
        num_workers=cfg.DATA_LOADER.NUM_WORKERS,
        pin_memory=cfg.DATA_LOADER.PIN_MEMORY and torch.cuda.is_available(),
        drop_last=False,  # the sampler yields whole batches only
        collate_fn=collate_train,
        generator=torch.Generator().manual_seed(cfg.RNG_SEED),  # keeps the global RNG for the model
    )


def build_test_loader(cfg, split: str, single_view: bool = False, dataset=None, rank: int = 0,
                      world_size: int = 1) -> DataLoader:
    """Loader of whole videos (all their views), about TEST.BATCH_SIZE clips per batch. With
    several processes each takes every ``world_size``-th video: all videos exactly once."""
    dataset = dataset if dataset is not None else build_dataset(cfg.TEST.DATASET, cfg, split, single_view)
    videos = max(1, cfg.TEST.BATCH_SIZE // dataset.views_per_video)
    return DataLoader(
        dataset,
        batch_size=videos,
        sampler=shard_indices(len(dataset), rank, world_size),
        num_workers=cfg.DATA_LOADER.NUM_WORKERS,
        pin_memory=cfg.DATA_LOADER.PIN_MEMORY and torch.cuda.is_available(),
        collate_fn=collate_test,
        generator=torch.Generator().manual_seed(cfg.RNG_SEED),
    )
