"""Decoding, temporal sampling, spatial transforms, datasets and loaders."""

from .decoding import DecodeError, read_frames
from .loader import FailureLog, build_test_loader, build_train_loader

__all__ = ["DecodeError", "read_frames", "FailureLog", "build_test_loader", "build_train_loader"]
