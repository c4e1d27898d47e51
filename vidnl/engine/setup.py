"""Seeding and device selection."""

from __future__ import annotations

import logging
import os
import random
import numpy as np
import torch

logger = logging.getLogger(__name__)


def seed_everything(seed: int, num_threads: int = 0) -> None:
    """Seed python, numpy and torch; optionally fix torch's CPU thread count."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if num_threads > 0:
        torch.set_num_threads(num_threads)


def get_device(cfg) -> torch.device:
    if cfg.NUM_GPUS > 0 and torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", torch.cuda.current_device())))
    if cfg.NUM_GPUS > 0:
        logger.info("NUM_GPUS=%d but CUDA is not available: running on the CPU", cfg.NUM_GPUS)
    return torch.device("cpu")
