"""Classification metrics."""

from __future__ import annotations

import torch


def topk_correct(scores: torch.Tensor, labels: torch.Tensor, ks=(1, 5)) -> dict[int, int]:
    """Number of rows whose label is among the top-k scores. scores N×K, labels N."""
    out = {}
    if scores.numel() == 0:
        return {k: 0 for k in ks}
    maxk = min(max(ks), scores.shape[1])
    top = scores.topk(maxk, dim=1).indices
    hit = top == labels[:, None]
    for k in ks:
        out[k] = int(hit[:, :min(k, maxk)].any(dim=1).sum())
    return out
