"""Errors a user can cause, each mapped to a documented exit code.

The CLI catches `SeqlmError` and prints its message as one line on stderr; anything else
is a bug (exit 1) and gets a traceback only with `--debug`.
"""

from __future__ import annotations

import errno
from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    UNEXPECTED = 1
    USAGE = 2  # bad command line, bad YAML, config that fails validation
    DATA = 3  # input files missing, empty, malformed, or inconsistent with the model
    OUTPUT = 4  # outputs cannot be written: disk full, permission denied, read-only file system
    INTERRUPTED = 130  # SIGINT / Ctrl-C
    TERMINATED = 143  # SIGTERM (128 + 15), e.g. a scheduler preempting the job


def first_line(exc: BaseException) -> str:
    """An exception's message cut to its first line (its type name when it has none), for one-line errors."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class SeqlmError(Exception):
    """Base class: a problem the user can fix; `message` says what and how."""

    exit_code: ExitCode = ExitCode.UNEXPECTED
    # Under torchrun: rank 0 has shown this error for the whole run, so this rank exits silently.
    reported_by_rank_0: bool = False


class NothingToDo(SeqlmError):
    """Not an error: the command has nothing left to do (e.g. `--resume` on a finished run); its message
    is shown as information and the exit code is 0."""

    exit_code = ExitCode.OK


class ConfigError(SeqlmError):
    """The command line or the config is wrong (exit 2)."""

    exit_code = ExitCode.USAGE


class DataError(SeqlmError):
    """An input file or dataset is missing, empty, malformed or mismatched (exit 3)."""

    exit_code = ExitCode.DATA


class OutputError(SeqlmError):
    """An output cannot be written: no space left, no permission, read-only (exit 4).
    Whatever was being written is removed; earlier complete outputs are left as they were."""

    exit_code = ExitCode.OUTPUT


# errno values that mean "the output cannot be written here", whatever the write was.
OUTPUT_ERRNOS = {
    errno.ENOSPC: "no space left on the device; free some space or choose another output_dir",
    errno.EDQUOT: "disk quota exceeded; free some space or choose another output_dir",
    errno.EFBIG: "file too large for this file system or ulimit; choose another output_dir",
    errno.EACCES: "permission denied; choose a writable output_dir",
    errno.EPERM: "permission denied; choose a writable output_dir",
    errno.EROFS: "read-only file system; choose a writable output_dir",
}


# Of those, the ones that can only mean a write failed (a read never runs out of space).
SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


class TrainingInterrupted(SeqlmError):
    """Training stopped on a signal after writing a checkpoint (exit 130 for SIGINT, 143 for SIGTERM)."""

    def __init__(self, message: str, exit_code: ExitCode):
        super().__init__(message)
        self.exit_code = exit_code


class TrainingDiverged(SeqlmError):
    """A NaN/inf loss or gradient under `on_nan: stop` (exit 1: the run, not the input, went wrong)."""

    exit_code = ExitCode.UNEXPECTED
