"""The shared start and error handling of every `python -m` program (few-shot and RL).

Each CLI module defines its flags and calls one library function; `run(main)` starts it with
every flag error reported in one line, and `start_cli` / `errors_exit_2` are the lines every
`main(argv)` would otherwise repeat.
"""
from __future__ import annotations

import contextlib
import os
import sys
import traceback
from collections.abc import Sequence

from absl import app, flags
from absl import logging as absl_logging

from .config_schema import closest
from .run_config import config_flag_problem


def one_line(message: str) -> str:
    """`message` on one line: its lines joined; a traceback embedded in it (ml_collections
    puts the config file's own in its error) is cut to its last line, the exception."""
    lines = [line.strip() for line in str(message).splitlines() if line.strip()]
    starts = [i for i, line in enumerate(lines) if line.startswith("Traceback")]
    if starts:
        lines = lines[:starts[0]] + lines[-1:]
    return " ".join(lines)


def exit_with_error(message: str, status: int = 2) -> None:
    """Prints `error: <message>` (one line) on stderr and exits with `status` at once (2: bad
    input; 1: a run that failed, e.g. diverged or a full disk).

    At once (os._exit after flushing): the interpreter's normal shutdown would let background
    threads of libraries (orbax's asyncio loop after a failed restore) print their own
    tracebacks after the one line. Every caller reaches this before anything is written or
    after the trainers closed their writers and checkpoint managers."""
    print(f"error: {one_line(message)}", file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def parse_flags(argv: Sequence[str]) -> list[str]:
    """absl's flag parsing with each error (unknown flag or config key, a value of the wrong
    type or out of its bounds, an unreadable --config file) as one `error:` line and exit 2,
    instead of absl's two-line FATAL message or ml_collections' traceback. Unknown names get
    the closest known one. Returns the positional arguments, as absl's parser."""
    problem = config_flag_problem(argv[1:])
    if problem:
        exit_with_error(problem)
    try:
        return flags.FLAGS(argv)
    except flags.UnrecognizedFlagError as e:
        known = [n for n in flags.FLAGS if not n.startswith("config.")]
        match = closest(e.flagname, known)
        hint = f": did you mean --{match}?" if match else " (--helpfull lists the flags)"
        exit_with_error(f"unknown flag --{e.flagname}{hint}")
    except (flags.Error, OSError, AttributeError, TypeError, ValueError) as e:
        # OSError: a missing --config file; AttributeError/TypeError/ValueError: ml_collections
        # applying an override it cannot (a field that is not a sub-config, a bad tuple).
        exit_with_error(str(e) or type(e).__name__)


def run(main) -> None:
    """`absl.app.run(main)` with `parse_flags`: bad flags exit 2 with one `error:` line."""
    app.run(main, flags_parser=parse_flags)


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
        exit_with_error(str(e))


@contextlib.contextmanager
def run_failures_exit_1():
    """A run that fails after it started (non-finite loss or parameters, a full disk during a
    save) ends with one `error:` line and exit status 1 (its workdir was closed on the way)."""
    from .checkpoints import DiskFullError, NonFiniteError  # noqa: PLC0415 - orbax import

    try:
        yield
    except (NonFiniteError, DiskFullError) as e:
        exit_with_error(str(e), status=1)


def define_defaults_flag(path: str | None):
    """Defines the `--defaults` flag of an evaluation CLI: the config file whose fields fill
    those an older run's config.json lacks, by default `path` (the caller's default config file,
    e.g. fewshot.config_checks.DEFAULT_CONFIG_FILE; None where there is none, as in an installed
    copy: a run's own config.json is then used as it is, which is complete for runs written by
    the current trainers). Returns its absl FlagHolder; pass
    `srwm_jax.training.run_config.load_config_file(holder.value)` as `defaults`."""
    return flags.DEFINE_string("defaults", path, "Config file whose fields fill those an older "
                               "run's config.json lacks.")


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
