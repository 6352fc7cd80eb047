"""Errors a user can fix, and how the ``lit-block`` command reports them.

Raise :class:`UsageError` (or a plain ``ValueError`` / ``OSError``) with a message that names the
culprit: the file, the config key, the value or the request field. The command's top level
(:func:`report`) prints such an error as one line, ``lit-block SUBCOMMAND: message``, and exits
with status 2; the traceback is shown only with ``--debug`` or ``LIT_BLOCK_DEBUG=1``. Anything
else (a bug) keeps its traceback.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys

DEBUG_ENV = "LIT_BLOCK_DEBUG"


class UsageError(ValueError):
    """Bad input or settings; the message names the file, key, value or field."""


class OutputExistsError(UsageError):
    """An output path that lit-block would have to replace but did not write itself."""


def debug_enabled() -> bool:
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


def is_expected(err: BaseException) -> bool:
    """Errors that mean bad input or environment, not a bug: reported in one line."""
    if isinstance(err, (ValueError, OSError, argparse.ArgumentError)):  # UsageError, UnicodeDecodeError, FileNotFoundError, ConnectionError ...
        return True
    # parse errors of the config formats lit-block reads, matched by name so that no parser is imported here
    names = {f"{c.__module__}.{c.__qualname__}" for c in type(err).__mro__}
    return bool(names & {"yaml.error.YAMLError", "jsonargparse._common.ArgumentError", "sqlalchemy.exc.DatabaseError",
                         "mlflow.exceptions.MlflowException"})


def _root_cause(err: BaseException) -> BaseException:
    """The first expected error ``err`` was raised from, or ``err`` itself: jsonargparse wraps a class's own
    ``ValueError`` in a long "Does not validate against any of the Union subtypes" message."""
    seen, found = set(), err
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, UsageError):
            return err
        if isinstance(err, (ValueError, OSError)):
            found = err  # the deepest one wins: the message closest to the cause
        err = err.__cause__ or err.__context__
    return found


def one_line(err: BaseException) -> str:
    """The error's message on one line: a wrapped UsageError's own message, with the class that raised it."""
    cause = err if isinstance(err, argparse.ArgumentError) else _root_cause(err)  # a parser's message names the option
    if cause is not err:
        where = re.search(r"class_path='([\w.]+)'", str(err))  # jsonargparse names the class being instantiated
        text = f"{where[1]}: {cause}" if where else str(cause)
    else:
        text = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
    text = " ".join(text.split()) or type(err).__name__
    return text if len(text) <= 2000 else text[:2000] + " ..."


def report(subcommand: str, err: BaseException) -> int:
    """Print an expected error in one line (exit status 2); re-raise anything else."""
    if debug_enabled() or not is_expected(err):
        raise err
    print(f"lit-block {subcommand}: {one_line(err)}  (traceback: --debug or {DEBUG_ENV}=1)", file=sys.stderr, flush=True)
    return 2


# ---------------------------------------------------------------- checks where settings are declared


def check_number(name: str, value, *, low: float | None = None, high: float | None = None, low_open: bool = False,
                 high_open: bool = False, integer: bool = False) -> None:
    """``name`` must be a finite number (an integer when ``integer``) in the given range; the message names
    the setting and its value."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not isinstance(value, int)):
        kind = "an integer" if integer else "a number"
        raise UsageError(f"{name} must be {kind}, got {value!r}")
    if not math.isfinite(value):
        raise UsageError(f"{name} must be finite, got {value!r}")
    if low is not None and (value <= low if low_open else value < low):
        raise UsageError(f"{name} must be {'>' if low_open else '>='} {low}, got {value!r}")
    if high is not None and (value >= high if high_open else value > high):
        raise UsageError(f"{name} must be {'<' if high_open else '<='} {high}, got {value!r}")
