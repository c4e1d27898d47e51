"""Run logging: readable lines to stdout and OUTPUT_DIR/log.txt, ``json_stats:`` lines (one
JSON object each, easy to grep and parse), and TensorBoard scalars."""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time

from ..errors import printable

logger = logging.getLogger("vidnl")


class _ConsoleHandler(logging.StreamHandler):
    """Console lines written through ``tqdm.write``, so a progress bar on the terminal is cleared
    and redrawn around them instead of sharing their line."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm import tqdm

            tqdm.write(self.format(record), file=self.stream)
            self.flush()
        except Exception:  # noqa: BLE001 - logging must never raise
            self.handleError(record)


class _PrintableFilter(logging.Filter):
    """Writes a record's message with its control characters escaped (:func:`vidnl.errors.printable`):
    names from files and class lists reach the terminal and log.txt as one inert line."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        safe = printable(message)
        if safe != message:
            record.msg, record.args = safe, None
        return True


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
    handlers = [_ConsoleHandler(sys.stdout)]
    if output_dir:
        os.makedirs(output_dir, exist_ok=True)
        log = os.path.join(output_dir, "log.txt")
        if os.path.islink(log):
            from .output_dir import OutputDirError

            raise OutputDirError(f"{log} is a symbolic link (to {os.readlink(log)}): the log would be appended to the "
                                 f"file it points to; remove the link or choose another OUTPUT_DIR")
        handlers.append(logging.FileHandler(log))
    for h in handlers:
        h.setFormatter(fmt)
        h.addFilter(_PrintableFilter())
        h._vidnl = True
        root.addHandler(h)
    root.setLevel(logging.WARNING if quiet else level)


class StepTimer:
    """Mean training-step times since the last ``report``: call ``data_ready()`` when a batch
    has arrived and ``step_done()`` after the optimiser step. ``dt`` = ``dt_data`` (waiting for
    the loader) + ``dt_net`` (forward, backward, step); ``eta`` extrapolates ``dt``."""

    def __init__(self):
        self.t_ready = self.t_data = time.perf_counter()
        self.sums = [0.0, 0.0, 0.0]
        self.steps = 0

    def data_ready(self) -> None:
        self.t_data = time.perf_counter()

    def step_done(self) -> None:
        now = time.perf_counter()
        for i, v in enumerate((now - self.t_ready, self.t_data - self.t_ready, now - self.t_data)):
            self.sums[i] += v
        self.steps += 1
        self.t_ready = now

    def report(self, steps_left: int) -> dict:
        """``{"dt", "dt_data", "dt_net", "eta"}`` over the steps since the last report (reset)."""
        k = max(self.steps, 1)
        dt, dt_data, dt_net = (v / k for v in self.sums)
        self.sums, self.steps = [0.0, 0.0, 0.0], 0
        return {"dt": dt, "dt_data": dt_data, "dt_net": dt_net, "eta": format_eta(dt * steps_left)}


def format_eta(seconds: float) -> str:
    """``H:MM:SS`` (PySlowFast's ``eta`` format)."""
    seconds = max(int(round(seconds)), 0)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def memory_stats(device) -> dict:
    """Peak memory so far: ``gpu_mem`` (GiB allocated by torch on ``device``) on CUDA, else
    ``rss_mem`` (GiB, the process's peak resident set, from /proc when available)."""
    import torch

    if getattr(device, "type", "cpu") == "cuda":
        return {"gpu_mem": round(torch.cuda.max_memory_allocated(device) / 2**30, 3)}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return {"rss_mem": round(int(line.split()[1]) / 2**20, 3)}
    except OSError:
        pass
    import resource

    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"rss_mem": round(kib / (2**30 if sys.platform == "darwin" else 2**20), 3)}


def run_header(cfg) -> dict:
    """What a run was started with: command line, versions, git commit (when the code is a git
    checkout), and a hash of the full config (sha256 of its YAML dump, first 12 hex digits)."""
    import hashlib
    import platform
    import subprocess

    import torch

    from .. import __version__

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    commit = None
    try:
        out = subprocess.run(["git", "-C", root, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        if out.returncode == 0:
            commit = out.stdout.strip()
            dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--untracked-files=no"],
                                   capture_output=True, text=True, timeout=5).stdout.strip()
            commit += "+dirty" if dirty else ""
    except (OSError, subprocess.SubprocessError):
        pass
    return {"command": " ".join(sys.argv), "python": platform.python_version(), "torch": torch.__version__,
            "cuda": torch.version.cuda if torch.cuda.is_available() else None, "vidnl": __version__,
            "git_commit": commit, "config_sha256": hashlib.sha256(cfg.dump().encode()).hexdigest()[:12],
            "host": platform.node(), "pid": os.getpid()}


def log_run_header(cfg) -> None:
    """One ``json_stats`` line of ``_type`` ``run_header`` (see ``run_header``)."""
    log_json_stats({"_type": "run_header", **run_header(cfg)})


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
