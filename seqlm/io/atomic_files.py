"""Files and directories that appear only once complete: written beside their place, fsynced, renamed in.

`write_text_atomic(path, text)` (`write_bytes_atomic` for bytes): a hidden temporary sibling, fsynced, renamed over `path`.
`replace_dir_atomic(temporary, final)`: a fully written directory moved into place, replacing any
previous one (which is put back if the move fails); the rename is made durable.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def write_text_atomic(path: Path, text: str) -> None:
    """Write via a temporary sibling and rename, so readers never see a half-written file."""
    write_bytes_atomic(path, text.encode("utf-8"))


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """`write_text_atomic` for bytes (an image)."""
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(temporary, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def replace_dir_atomic(temporary: Path, final: Path) -> None:
    """Move a fully written directory into place, replacing any previous one."""
    for file in temporary.rglob("*"):
        if file.is_file():
            with open(file, "rb") as handle:
                os.fsync(handle.fileno())
    if not final.exists():
        os.replace(temporary, final)
        _sync_dir(final.parent)
        return
    retired = final.with_name(f".{final.name}.old-{os.getpid()}")
    shutil.rmtree(retired, ignore_errors=True)
    os.replace(final, retired)
    try:
        os.replace(temporary, final)
    except BaseException:
        os.replace(retired, final)  # put the previous one back
        raise
    _sync_dir(final.parent)
    shutil.rmtree(retired, ignore_errors=True)


def _sync_dir(directory: Path) -> None:
    """Make a rename in `directory` durable (a crash right after must not undo it)."""
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
