"""OUTPUT_DIR before any work: it must be a writable folder, and one run at a time uses it.

``prepare_output_dir`` creates ``OUTPUT_DIR/checkpoints`` and writes a probe file there, so a
read-only or misplaced folder stops the run at once (exit 2) instead of after an epoch.
``output_dir_lock`` holds an exclusive ``flock`` on ``OUTPUT_DIR/.vidnl.lock`` (rank 0 only)
for the whole run: a second run on the same folder stops with the PID of the one that holds it.
The kernel drops the lock when its process dies, so a killed run leaves no stale lock.
"""

from __future__ import annotations

import fcntl
import os
import socket
import tempfile
from contextlib import contextmanager

from ..errors import VidnlUserError

LOCK_NAME = ".vidnl.lock"


class OutputDirError(VidnlUserError, OSError):
    """OUTPUT_DIR cannot be used; the message names it and why."""


def prepare_output_dir(output_dir: str) -> None:
    """Create OUTPUT_DIR/checkpoints and check that a file can be written there."""
    if not output_dir:
        raise OutputDirError("OUTPUT_DIR is empty: set it to the folder for checkpoints, logs and results")
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise OutputDirError(f"OUTPUT_DIR {output_dir} exists and is not a folder")
    folder = os.path.join(output_dir, "checkpoints")
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write_probe_"):
            pass
    except OSError as e:
        raise OutputDirError(f"OUTPUT_DIR {output_dir} is not writable ({e.strerror or e}: {e.filename or folder}); "
                             f"choose another OUTPUT_DIR or fix its permissions") from None


@contextmanager
def output_dir_lock(output_dir: str, enabled: bool = True):
    """Hold OUTPUT_DIR/.vidnl.lock for the duration of the block (no-op when not ``enabled``)."""
    if not enabled:
        yield
        return
    path = os.path.join(output_dir, LOCK_NAME)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode(errors="replace").strip() or "unknown"
            raise OutputDirError(f"OUTPUT_DIR {output_dir} is in use by another vidnl run ({holder}); wait for it "
                                 f"to finish or choose another OUTPUT_DIR") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"PID {os.getpid()} on {socket.gethostname()}\n".encode())
        yield
    finally:
        os.close(fd)  # releases the flock
