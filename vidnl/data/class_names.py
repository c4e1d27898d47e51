"""Class lists (``classes.txt``, ``--classes``): the one reader of the test, predict and the
datasets, so a file reads the same everywhere.

A class list is UTF-8 text (a byte-order mark is dropped, as every editor may write one) with
lines ``index name`` (indices 0..N-1, or 1..N as UCF-101's classInd.txt, in any order; the
index may be followed by spaces, a comma, a semicolon or a colon) or one name per line; blank
lines and the spaces around a name are ignored.
"""

from __future__ import annotations

import os
import re

from ..errors import DatasetError, VidnlUserError, decode_utf8

_INDEXED = re.compile(r"^\s*(\d+)[\s,;:]+(\S.*?)\s*$")


def read_class_names(path: str, error: type[VidnlUserError] = DatasetError) -> list[str]:
    """The class names of the file ``path``, in index order; ``error`` (naming the file, and the
    line where there is one) for a missing file, a folder, text that is not UTF-8, no names, or
    indices that do not number the classes once each."""
    if os.path.isdir(path):
        raise error(f"{path} is a folder; expected a class names file (lines 'index name' or one name per line)")
    if not os.path.isfile(path):
        raise error(f"class names file not found: {path}")
    with open(path, "rb") as f:
        text = decode_utf8(f.read(), path, error)
    lines = [ln.strip() for ln in text.splitlines()]
    lines = [ln for ln in lines if ln]
    if not lines:
        raise error(f"{path}: no class names (expected lines 'index name' or one name per line)")
    matches = [_INDEXED.match(ln) for ln in lines]
    if not all(matches):
        return lines
    n, index = len(lines), [int(m.group(1)) for m in matches]
    for base in (0, 1):
        if sorted(index) == list(range(base, base + n)):
            names = dict(zip(index, (m.group(2) for m in matches)))
            return [names[i] for i in range(base, base + n)]
    raise error(f"{path}: lines 'index name' must number the classes 0..{n - 1} (or 1..{n}) once each; "
                f"got indices {sorted(index)[:8]}{' ...' if n > 8 else ''}")


__all__ = ["read_class_names"]
