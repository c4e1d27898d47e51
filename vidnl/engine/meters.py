"""Multi-view aggregation: a video's K temporal clips × S spatial crops become one score vector.

``MultiViewMeter`` collects the views' logits of whole videos (possibly this process's shard),
counts clip-level top-1/top-5 hits, and keeps per video the two aggregates of the literature:
``sum_softmax`` (sum of the views' softmax, Wang et al. 2018 (NL), §4.1) and ``mean_logits``. Meters
of several processes merge into one (``merged``), each video counted once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .metrics import topk_correct

ENSEMBLE_METHODS = ("sum_softmax", "mean_logits")


@dataclass
class MultiViewMeter:
    """Per-video aggregated scores and clip-level hits (see the module docstring)."""

    videos: list[dict] = field(default_factory=list)  # {"index", "label", "sum_softmax", "mean_logits"}
    clip_hits: dict = field(default_factory=lambda: {1: 0, 5: 0})
    num_clips: int = 0

    def add(self, logits: torch.Tensor, labels: torch.Tensor, views: list[int], indices: list[int]) -> None:
        """``logits`` (Σ views)×K of consecutive videos, video j owning ``views[j]`` rows;
        ``labels`` and ``indices`` (dataset indices) one per video."""
        view_labels = torch.repeat_interleave(labels, torch.tensor(views))
        hits = topk_correct(logits, view_labels)
        self.clip_hits = {k: self.clip_hits[k] + hits[k] for k in (1, 5)}
        self.num_clips += logits.shape[0]
        for chunk, label, index in zip(torch.split(logits, views), labels.tolist(), indices):
            self.videos.append({"index": int(index), "label": int(label),
                                "sum_softmax": F.softmax(chunk, dim=1).sum(0), "mean_logits": chunk.mean(0)})

    @classmethod
    def merged(cls, meters: list["MultiViewMeter"]) -> "MultiViewMeter":
        """One meter of several processes' shards, videos ordered by dataset index."""
        out = cls()
        out.videos = sorted((v for m in meters for v in m.videos), key=lambda v: v["index"])
        out.clip_hits = {k: sum(m.clip_hits[k] for m in meters) for k in (1, 5)}
        out.num_clips = sum(m.num_clips for m in meters)
        return out

    @property
    def labels(self) -> torch.Tensor:
        return torch.tensor([v["label"] for v in self.videos], dtype=torch.long)

    def scores(self, method: str) -> torch.Tensor:
        """Videos × K aggregated scores (``ENSEMBLE_METHODS``); 0×1 without videos."""
        if method not in ENSEMBLE_METHODS:
            raise ValueError(f"ensemble method must be one of {ENSEMBLE_METHODS}, got {method!r}")
        return torch.stack([v[method] for v in self.videos]) if self.videos else torch.zeros(0, 1)

    def clip_accuracy(self, k: int) -> float:
        return 100.0 * self.clip_hits[k] / max(self.num_clips, 1)

    def video_accuracy(self, method: str, k: int) -> float:
        labels = self.labels
        return 100.0 * topk_correct(self.scores(method), labels, (k,))[k] / max(len(labels), 1)
