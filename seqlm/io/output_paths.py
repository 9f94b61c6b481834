"""Outputs that cannot be written are `OutputError`s (exit 4), found before the slow work when possible.

`check_output_dir` / `check_output_file` refuse, up front, an output path that is a file where a
directory is needed (or the reverse), that lies under a regular file, or whose nearest existing
directory is not writable (permission denied, read-only file system). `write_failure` turns an
OSError raised while writing (disk full, quota, permission, a path through a file) into one line
naming the output; any other OSError is left as it is.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from seqlm.errors import OUTPUT_ERRNOS, OutputError

# Raised when a component of the output path is a file, or the output itself is of the wrong kind.
_NOT_A_DIRECTORY = {errno.ENOTDIR, errno.EEXIST, errno.EISDIR}


def check_output_dir(path: Path, key: str = "output_dir") -> None:
    """OutputError unless `path` is, or can be created as, a writable directory."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{path}: {key} is an existing file, not a directory; choose another {key} or move the file")
    _check_ancestors(path, path, key)


def check_output_file(path: Path, key: str = "output") -> None:
    """OutputError unless `path` is, or can be created as, a file in a writable directory."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{path}: {key} is a directory; pass a file name (e.g. {path / 'predictions.jsonl'}) or '-'")
    _check_ancestors(path.parent, path, key)


def write_failure(exc: OSError, target: Path | str, key: str = "output_dir") -> OutputError | None:
    """The OutputError for a failed write to `target`, or None when `exc` is not about the output."""
    if exc.errno in _NOT_A_DIRECTORY:
        where = exc.filename or target
        return OutputError(f"{target}: not written, {where} is in the way ({exc.strerror}); choose another {key}")
    advice = OUTPUT_ERRNOS.get(exc.errno or 0)
    if advice is None:
        return None
    return OutputError(f"{target}: not written: {advice.replace('output_dir', key)}")


def _check_ancestors(start: Path, shown: Path, key: str) -> None:
    """The nearest existing directory of `start` (itself included) must be a writable directory."""
    for directory in (start.absolute(), *start.absolute().parents):
        if not os.path.lexists(directory):
            continue
        if not directory.is_dir():
            raise OutputError(f"{shown}: cannot create {key}: {directory} is a file, not a directory; choose another {key}")
        if not os.access(directory, os.W_OK | os.X_OK):
            raise OutputError(
                f"{shown}: cannot write {key}: {directory} is not writable (permission denied or a read-only "
                f"file system); choose a writable {key}"
            )
        return
