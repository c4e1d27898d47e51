"""Re-ID training losses: identity cross-entropy (optionally label-smoothed) and the batch-hard
triplet loss (Hermans et al. 2017) with a margin; under torchrun the triplet term is taken over
the whole global batch (features gathered from every process, differentiably)."""

from __future__ import annotations

import torch
import torch.distributed as dist
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


class _GatherGlobalBatch(torch.autograd.Function):
    """B_local×D per process -> (W·B_local)×D, the processes' rows in rank order. Backward: the
    output gradients of all processes are summed and each process keeps the rows of its own
    input (every process's loss may depend on every row)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        ctx.rank, ctx.local = dist.get_rank(), x.shape[0]
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.local:(ctx.rank + 1) * ctx.local]


def gather_global_batch(features: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """This process's B_local features (×D, differentiable) and labels -> those of the global batch
    of all W processes ((W·B_local)×D and W·B_local, rank order = the global batch order of a
    sampler that gives each process a contiguous slice). Without torch.distributed: unchanged.
    Every process must pass the same B_local."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return features, labels
    parts = [torch.empty_like(labels) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, labels.contiguous())
    return _GatherGlobalBatch.apply(features), torch.cat(parts)


def reid_loss(logits: torch.Tensor, features: torch.Tensor, labels: torch.Tensor, *, ce_weight: float = 1.0,
              triplet_weight: float = 1.0, margin: float = 0.3, label_smoothing: float = 0.0,
              global_batch: bool = False) -> tuple[torch.Tensor, dict]:
    """``ce_weight`` · CE(logits, labels) + ``triplet_weight`` · batch-hard triplet(features).

    logits B×P, features B×D, labels B. Returns (total, {"ce": float, "triplet": float}).

    ``global_batch`` (training under torchrun, each process holding a contiguous slice of equal
    size B of the global batch, DDP averaging the gradients): the triplet term is the one of the
    *global* batch, computed on every process from the gathered features. Per-process triplet
    losses would not add up to the one-process loss even with whole identities on each process:
    an anchor's hardest negative is taken over the identities of its own process only (with one
    identity per process there would be none). With the gather, the loss of process r is
    CE_r + T (T = the global batch's triplet loss); DDP's mean over processes of the gradients
    is mean_r ∇CE_r + ∇T (the all-reduce in the gather's backward sums the W identical
    ∇T, DDP divides by W) = the gradient of one process's loss on the whole batch, since the mean
    of the per-process mean CE over equal shares is the global mean CE. The logged loss, summed
    over processes weighted by B, equals one process's loss too.
    """
    ce = F.cross_entropy(logits.float(), labels, label_smoothing=label_smoothing)
    if global_batch:
        features, labels = gather_global_batch(features, labels)
    tri = batch_hard_triplet_loss(features, labels, margin)
    total = ce_weight * ce + triplet_weight * tri
    return total, {"ce": float(ce.detach()), "triplet": float(tri.detach())}
