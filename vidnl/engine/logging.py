"""Run logging: readable lines to stdout and OUTPUT_DIR/log.txt, ``json_stats:`` lines (one
JSON object each, easy to grep and parse), and TensorBoard scalars."""

from __future__ import annotations

import json
import logging
import math
import os
import sys

logger = logging.getLogger("vidnl")


def setup_logging(output_dir: str | None = None, level: int = logging.INFO, quiet: bool = False) -> None:
    """Log to stdout and, if given, to ``output_dir/log.txt`` (appending, so resumed runs keep
    one log). ``quiet`` (processes other than rank 0) shows warnings only. Safe to call again:
    handlers are replaced, not duplicated."""
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_vidnl", False):
            root.removeHandler(h)
            h.close()
    fmt = logging.Formatter("[%(asctime)s %(levelname)s %(name)s] %(message)s", "%m/%d %H:%M:%S")
    handlers = [logging.StreamHandler(sys.stdout)]
    if output_dir:
        os.makedirs(output_dir, exist_ok=True)
        handlers.append(logging.FileHandler(os.path.join(output_dir, "log.txt")))
    for h in handlers:
        h.setFormatter(fmt)
        h._vidnl = True
        root.addHandler(h)
    root.setLevel(logging.WARNING if quiet else level)


def _clean(v):
    if isinstance(v, float):
        return None if math.isnan(v) or math.isinf(v) else round(v, 6)
    return v


def log_json_stats(stats: dict) -> None:
    """One line ``json_stats: {...}``."""
    logger.info("json_stats: %s", json.dumps({k: _clean(v) for k, v in stats.items()}, sort_keys=True))


class TensorBoardWriter:
    """SummaryWriter under OUTPUT_DIR/tensorboard, or a no-op when disabled/unavailable."""

    def __init__(self, output_dir: str, enable: bool = True):
        self.writer = None
        if enable:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.writer = SummaryWriter(os.path.join(output_dir, "tensorboard"))
            except ImportError as e:
                logger.warning("TensorBoard disabled: %s", e)

    def add_scalars(self, stats: dict, step: int, prefix: str) -> None:
        if self.writer is None:
            return
        for k, v in stats.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                self.writer.add_scalar(f"{prefix}/{k}", v, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
