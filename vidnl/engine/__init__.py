"""Training, evaluation, checkpoints, optimisation and logging."""

from .evaluate import evaluate, test
from .train import train

__all__ = ["evaluate", "test", "train"]
