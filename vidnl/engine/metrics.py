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


def topk_reported(num_classes: int, k: int = 5) -> bool:
    """Whether top-``k`` accuracy means anything: with ``num_classes <= k`` every label is in the
    top k and the accuracy is 100 % by construction, so it is not reported (``null``)."""
    return num_classes > k


def confusion_matrix(preds: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """K×K counts (int64): row = true label, column = predicted label. preds, labels: N."""
    if preds.numel() == 0:
        return torch.zeros(num_classes, num_classes, dtype=torch.long)
    for name, v in (("labels", labels), ("predictions", preds)):
        if int(v.min()) < 0 or int(v.max()) >= num_classes:
            raise ValueError(f"{name} must be in 0..{num_classes - 1}, got {int(v.min())}..{int(v.max())}")
    flat = labels.long() * num_classes + preds.long()
    return torch.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def per_class_accuracy(confusion: torch.Tensor, names: list[str]) -> list[dict]:
    """One row per class of a K×K confusion matrix (rows = true labels): ``index``, ``name``,
    ``num_videos`` (row sum), ``correct`` (diagonal) and ``top1`` in % (``None`` when the class
    has no test video)."""
    rows = []
    for i, name in enumerate(names):
        n, c = int(confusion[i].sum()), int(confusion[i, i])
        rows.append({"index": i, "name": name, "num_videos": n, "correct": c,
                     "top1": 100.0 * c / n if n else None})
    return rows
