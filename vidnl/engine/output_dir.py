"""OUTPUT_DIR before any work: it must be a writable folder, and one run at a time uses it.

``prepare_output_dir`` creates ``OUTPUT_DIR/checkpoints`` and writes a probe file there, so a
read-only or misplaced folder stops the run at once (exit 2) instead of after an epoch.
Symbolic links to files inside it are refused (``check_no_symlinked_outputs``) and outputs
are written with ``write_text_atomic`` / ``write_json_atomic`` (strict JSON), which replace a link
instead of writing through it. ``output_dir_lock`` holds an exclusive ``flock`` on ``OUTPUT_DIR/.vidnl.lock`` (rank 0 only)
for the whole run: a second run on the same folder stops with the PID of the one that holds it.
The kernel drops the lock when its process dies, so a killed run leaves no stale lock.
"""

from __future__ import annotations

import fcntl
import json
import math
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
    check_no_symlinked_outputs(output_dir)
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


def _finite(obj):
    """``obj`` with every non-finite float (NaN, ±inf) replaced by None, so that it is valid JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def new_file_mode() -> int:
    """The permissions ``open(path, "w")`` gives a new file: 0o666 less the process umask (read
    from /proc where it can be, since setting the umask to read it races with other threads)."""
    try:
        with open("/proc/self/status") as f:
            umask = next(int(line.split()[1], 8) for line in f if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError, IndexError):
        umask = os.umask(0o022)
        os.umask(umask)
    return 0o666 & ~umask


def write_bytes_atomic(path: str, data, durable: bool = False) -> str:
    """Write ``data`` (bytes-like) to ``path`` through a temporary file in the same folder and
    ``os.replace``: a reader sees the old or the complete new file, no temporary file is left
    behind whatever fails, and a symbolic link at ``path`` is replaced, never written through.
    ``durable``: fsync the file and the folder, so the new file survives a crash."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=".tmp_", dir=folder)
        os.fchmod(fd, new_file_mode())  # mkstemp's 0600 -> what open() would give (0666 & ~umask)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if tmp and os.path.exists(tmp):
            os.remove(tmp)
        raise
    if durable:
        try:  # make the rename durable too
            dir_fd = os.open(folder, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError:
            pass
    return path


def write_text_atomic(path: str, text: str) -> str:
    """``text`` as UTF-8 via :func:`write_bytes_atomic`."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str, obj) -> str:
    """``obj`` as strict JSON (non-finite numbers become null) via :func:`write_text_atomic`."""
    return write_text_atomic(path, json.dumps(_finite(obj), indent=1, allow_nan=False))


def check_no_symlinked_outputs(output_dir: str) -> None:
    """OutputDirError if a file vidnl writes in OUTPUT_DIR (any file of the folder, of
    ``checkpoints/`` or of a ``split_XX/`` run) is a symbolic link: writing through it would change
    a file outside the run. Linked folders (e.g. ``checkpoints`` on another disk) are fine."""
    folders = [output_dir, os.path.join(output_dir, "checkpoints")]
    if os.path.isdir(output_dir):
        folders += [os.path.join(output_dir, d, s) for d in sorted(os.listdir(output_dir)) if d.startswith("split_")
                    for s in ("", "checkpoints")]
    for folder in folders:
        if not os.path.isdir(folder):
            continue
        for name in sorted(os.listdir(folder)):
            p = os.path.join(folder, name)
            if os.path.islink(p) and not os.path.isdir(p):
                raise OutputDirError(
                    f"{p} is a symbolic link (to {os.readlink(p)}): vidnl writes its outputs as regular files inside "
                    f"OUTPUT_DIR and would change the file it points to; remove the link or choose another OUTPUT_DIR")
