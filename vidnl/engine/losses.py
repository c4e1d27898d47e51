"""Re-ID training losses: identity cross-entropy (optionally label-smoothed) and the batch-hard
triplet loss (Hermans et al. 2017) with a margin."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def pairwise_euclidean(x: torch.Tensor) -> torch.Tensor:
    """B×D -> B×B Euclidean distances (squared distances clamped at 1e-12 before the square
    root, so the gradient stays finite on the diagonal)."""
    sq = x.pow(2).sum(1)
    d2 = sq[:, None] + sq[None, :] - 2.0 * (x @ x.t())
    d2 = d2 - torch.diag_embed(d2.diagonal())  # exact zeros where rounding left |x|² - |x|² ≠ 0
    return d2.clamp_min(1e-12).sqrt()


def batch_hard_triplet_loss(features: torch.Tensor, labels: torch.Tensor, margin: float = 0.3) -> torch.Tensor:
    """Batch-hard triplet loss.

    For every anchor a: d_p = the largest distance to another sample of its identity, d_n = the
    smallest distance to a sample of another identity; loss = mean over anchors that have both
    of max(0, d_p - d_n + margin). ``features`` B×D, ``labels`` B; returns a scalar (0 when no
    anchor has both a positive and a negative).
    """
    dist = pairwise_euclidean(features.float())
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    pos = same & ~eye
    neg = ~same
    d_p = dist.masked_fill(~pos, float("-inf")).amax(1)
    d_n = dist.masked_fill(~neg, float("inf")).amin(1)
    valid = pos.any(1) & neg.any(1)
    if not valid.any():
        return features.sum() * 0.0
    return F.relu(d_p[valid] - d_n[valid] + margin).mean()


def reid_loss(logits: torch.Tensor, features: torch.Tensor, labels: torch.Tensor, *, ce_weight: float = 1.0,
              triplet_weight: float = 1.0, margin: float = 0.3, label_smoothing: float = 0.0
              ) -> tuple[torch.Tensor, dict]:
    """``ce_weight`` · CE(logits, labels) + ``triplet_weight`` · batch-hard triplet(features).

    logits B×P, features B×D, labels B. Returns (total, {"ce": float, "triplet": float}).
    """
    ce = F.cross_entropy(logits.float(), labels, label_smoothing=label_smoothing)
    tri = batch_hard_triplet_loss(features, labels, margin)
    total = ce_weight * ce + triplet_weight * tri
    return total, {"ce": float(ce.detach()), "triplet": float(tri.detach())}
