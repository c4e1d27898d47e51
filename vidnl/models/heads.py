"""Heads on top of backbone features."""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

TEST_HEADS = ("global", "fully_conv")  # MODEL.TEST_HEAD


class ClassificationHead(nn.Module):
    """Global average pool + dropout + linear. B×F×T×H×W -> B×num_classes.

    In training mode, and in eval mode without ``test_pool_kernel``, it is the global head: the
    feature map is averaged over T×H×W, then the linear layer gives the logits.

    With ``test_pool_kernel`` (kT, kH, kW), the *eval*-mode forward is PySlowFast's fully
    convolutional test head (``ResNetBasicHead`` with ``MODEL.HEAD_ACT softmax``; pytorchvideo's
    ``ResNetBasicHead`` with ``activation=nn.Softmax`` and ``output_with_global_average``): an
    average pool with that kernel and stride 1 (the feature size of the *training* clip, so at
    the training size it is the global pool) gives P = T'×H'×W' positions (1×2×2 for an
    8×224²-trained I3D-R50 tested at 256); the linear layer is applied at each position, a
    softmax at each, and the probabilities are averaged: p̄ = mean_P softmax(W x_P + b).
    Where the test map is smaller than the kernel in a dimension (PySlowFast: a RuntimeError
    of its AvgPool3d) the window is the whole map in that dimension. With ``fc`` replaced by
    another module (feature extraction replaces it by the identity: ``vidnl.clip_features``)
    the head pools globally, so the features are the globally pooled B×F whatever the test head.

    The eval output is then **log p̄** (computed as logsumexp_P log_softmax − log P), not p̄,
    so that everything downstream that takes logits keeps working unchanged: softmax(log p̄) =
    p̄ exactly (p̄ sums to 1), hence the multi-view ``sum_softmax`` aggregation (vidnl's test,
    ``vidnl.predict``) is the sum of the head's probabilities over the views, exactly
    PySlowFast's TestMeter sum; argmax, clip accuracy, the loss (the NLL of p̄) and the export
    are unaffected. ``mean_logits`` then averages log p̄ over the views: the normalised
    geometric mean of the views' probabilities. An explicit "outputs are probabilities" flag
    read by the meters was the alternative; it would have made every consumer of model outputs
    (meters, predict, report, export, compiled models) branch on it.
    """

    def __init__(self, in_features: int, num_classes: int, dropout: float = 0.5,
                 test_pool_kernel: Sequence[int] | None = None):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(in_features, num_classes)
        nn.init.normal_(self.fc.weight, std=0.01)
        nn.init.zeros_(self.fc.bias)
        self.test_pool_kernel: tuple[int, int, int] | None = None
        self.set_test_pool_kernel(test_pool_kernel)

    def set_test_pool_kernel(self, kernel: Sequence[int] | None) -> None:
        """None: the global head at test time; (kT, kH, kW) ints >= 1: the fully convolutional
        test head with that average-pool kernel (see the class docstring)."""
        if kernel is not None:
            kernel = tuple(kernel)
            if len(kernel) != 3 or not all(isinstance(k, int) and k >= 1 for k in kernel):
                raise ValueError(f"test_pool_kernel must be None or three ints >= 1 (T, H, W), got {kernel!r}")
        self.test_pool_kernel = kernel

    def extra_repr(self) -> str:
        return f"test_pool_kernel={self.test_pool_kernel}" if self.test_pool_kernel else ""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """B×F×T×H×W -> B×num_classes: logits (training, global head) or log p̄ (eval, fully
        convolutional head)."""
        if self.training or self.test_pool_kernel is None or not isinstance(self.fc, nn.Linear):
            return self.fc(self.dropout(self.pool(x).flatten(1)))
        kernel = tuple(min(k, s) for k, s in zip(self.test_pool_kernel, x.shape[2:]))
        x = F.avg_pool3d(x, kernel, stride=1)  # B×F×T'×H'×W'
        z = self.fc(self.dropout(x.flatten(2).transpose(1, 2)))  # B×P×K logits per position
        return torch.logsumexp(F.log_softmax(z, dim=-1), dim=1) - math.log(z.shape[1])
