"""Errors caused by the user's input (config, files); tools print their message without a
traceback and exit non-zero."""

import re


class VidnlUserError(Exception):
    """Base class of errors whose message is meant for the user."""


class DatasetError(VidnlUserError, ValueError):
    """A dataset file is missing or malformed; the message names the file (and line)."""


class ConfigError(VidnlUserError, ValueError):
    """A user error in a config file or override; the message names the key and what is allowed."""


def decode_utf8(data: bytes, path: str, error: type[VidnlUserError]) -> str:
    """The text of a file's bytes as UTF-8 (a byte-order mark dropped); any other encoding raises
    ``error`` naming the file, the line and the first byte that is not UTF-8 ("path:3: not
    UTF-8 text (byte 0xe9); save the file as UTF-8")."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise error(f"{path}:{line}: not UTF-8 text (byte {data[e.start]:#04x}); save the file as UTF-8") from None


_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """``text`` with its control characters (C0 but the tab, DEL, C1: terminal escapes, carriage
    returns, newlines) written as ``\\xNN``, so that a name taken from a file or a class list
    cannot move the cursor, recolour the terminal or forge a line of the log."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
