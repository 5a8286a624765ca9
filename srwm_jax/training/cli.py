"""The shared start and error handling of every `python -m` program (few-shot and RL).

Each CLI module defines its flags and calls one library function; these two helpers are the
lines every `main(argv)` would otherwise repeat.
"""
from __future__ import annotations

import contextlib
import sys
import traceback
from collections.abc import Sequence

from absl import app
from absl import logging as absl_logging


def start_cli(argv: Sequence[str]) -> None:
    """Refuses stray positional arguments and keeps orbax's per-step INFO logs out of the output.

    Raises:
      app.UsageError: for any positional argument after the program name.
    """
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {list(argv[1:])}")
    absl_logging.set_verbosity(absl_logging.WARNING)


@contextlib.contextmanager
def errors_exit_2(*errors: type[BaseException]):
    """Turns the given exception types into one `error: <message>` line on stderr and exit 2.

    Bad input (a missing run directory, a corrupt checkpoint, a bad config value) is reported
    in one line instead of a traceback; anything else still raises with its traceback.
    """
    try:
        yield
    except errors as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def error_lines(error: BaseException, frames: int = 2) -> list[str]:
    """`error: <first line of the message>`, then the last `frames` frames of its cause (an
    exception raised in another thread, such as an RL actor's), one line each:
    `  at <file>:<line> in <function>: <code>` (the cause without a second long traceback)."""
    lines = [f"error: {str(error).splitlines()[0] if str(error) else type(error).__name__}"]
    cause = error.__cause__
    if cause is not None and cause.__traceback__ is not None:
        for f in traceback.extract_tb(cause.__traceback__)[-frames:]:
            lines.append(f"  at {f.filename}:{f.lineno} in {f.name}: {f.line}")
    return lines
