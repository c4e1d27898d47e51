"""How every command-line entry point (tools/, data_prep/) ends.

    @cli_entry()                      # main(argv) itself ends as below (tests call it directly)
    def main(argv=None) -> int: ...

    if __name__ == "__main__":
        sys.exit(main())              # or sys.exit(run_cli(main)) for an undecorated main

* a user error (``VidnlUserError``: config, dataset, checkpoint; or an ``OSError`` on a file or
  folder: missing, unreadable, not writable, disk full) -> one line ``<tool>: error: ...`` on
  stderr, exit status 2, no traceback;
* Ctrl-C -> exit 130 with a note;
* anything else is a bug in vidnl -> the traceback, then a one-line hint on what to report,
  exit status 1.
"""

from __future__ import annotations

import functools
import os
import re
import sys
import traceback
from typing import Callable

from .errors import VidnlUserError, printable

EXIT_USER_ERROR = 2
EXIT_INTERNAL_ERROR = 1
EXIT_INTERRUPTED = 130

INTERNAL_ERROR_HINT = (
    "{tool}: internal error: this is a bug in vidnl, not a problem with your input. Please report it with "
    "the command line, the traceback above and OUTPUT_DIR/log.txt if there is one.")


_CONFIG_KEY = re.compile(r"^[A-Z][A-Z0-9_]*(\.[A-Z][A-Z0-9_]*)*$")


class UsageError(VidnlUserError, ValueError):
    """A missing file or a bad value on a tool's command line."""


def split_opts_flag(argv: list[str] | None) -> tuple[list[str], list[str]]:
    """Command line (``sys.argv[1:]`` when None) -> (arguments before ``--opts``, the KEY VALUE
    overrides after it; [] without ``--opts``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--opts" in argv:
        i = argv.index("--opts")
        return argv[:i], argv[i + 1:]
    return argv, []


def split_overrides(items: list[str]) -> tuple[list[str], list[str]]:
    """Positionals -> (inputs, KEY VALUE overrides): the first item that looks like a config key
    (``TEST.NUM_ENSEMBLE_VIEWS``, ``NUM_GPUS``) and is not an existing path starts the overrides."""
    for i, item in enumerate(items):
        if _CONFIG_KEY.match(item) and not os.path.exists(item):
            return list(items[:i]), list(items[i:])
    return list(items), []


def check_files(weights: str, inputs: list[str], what: str, expected: str) -> None:
    """UsageError unless the weights file and every input exist (checked before the config and
    the model are loaded)."""
    if os.path.isdir(weights):
        raise UsageError(f"weights {weights} is a folder; expected a checkpoint file (.pyth, .pt, .pth, .pkl)")
    if not os.path.isfile(weights):
        raise UsageError(f"weights file not found: {weights}")
    if not inputs:
        raise UsageError(f"no {what} given (expected {expected} before the KEY VALUE overrides)")
    for item in inputs:
        if not os.path.exists(item):
            raise UsageError(f"input not found: {item} (expected {expected})")


def user_error_message(e: BaseException) -> str:
    """The one-line message for a user error."""
    if isinstance(e, OSError) and not isinstance(e, VidnlUserError):
        where = f": {e.filename!r}" if getattr(e, "filename", None) else ""
        return printable(f"{e.strerror or e}{where}")
    return printable(str(e))


def run_cli(main: Callable[..., int | None], argv: list[str] | None = None, tool: str | None = None,
            interrupted: str = "interrupted") -> int:
    """Run ``main(argv)`` (or ``main()`` when argv is None) and turn its outcome into an exit
    status as described in the module docstring; ``interrupted`` is the note after Ctrl-C."""
    tool = tool or os.path.basename(sys.argv[0] or "vidnl")
    try:
        code = main(argv) if argv is not None else main()
        return int(code or 0)
    except VidnlUserError as e:
        print(f"{tool}: error: {user_error_message(e)}", file=sys.stderr)
        return EXIT_USER_ERROR
    except OSError as e:
        print(f"{tool}: error: {user_error_message(e)}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(f"{tool}: {interrupted}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except SystemExit:
        raise
    except Exception:  # noqa: BLE001 - the one place that reports bugs
        traceback.print_exc()
        print(INTERNAL_ERROR_HINT.format(tool=tool), file=sys.stderr)
        return EXIT_INTERNAL_ERROR


def cli_entry(*, tool: str = "vidnl", interrupted: str = "interrupted"):
    """Decorator for a tool's ``main(argv=None)``: calling the decorated ``main`` runs it through
    :func:`run_cli` (messages as ``<tool>: error: ...``) and returns the exit status, so the tool
    writes no error handling of its own and a test calling ``main([...])`` sees what the shell
    would."""
    def wrap(fn: Callable[..., int | None]) -> Callable[..., int]:
        @functools.wraps(fn)
        def main(argv: list[str] | None = None) -> int:
            return run_cli(fn, argv, tool=tool, interrupted=interrupted)
        return main
    return wrap
