"""One writer per run directory: a lock file naming the process that holds it.

`<output_dir>/.seqlm.lock` is created exclusively (O_EXCL) and holds "PID HOST". A second
seqlm process on the same directory is refused with the holder's PID; a lock whose process
is gone (same host, PID not running) is stale and taken over with a warning. The lock is
removed when the run ends, however it ends (a SIGKILL leaves it stale, to be taken over), and so
is the directory if the lock created it and the run wrote nothing (e.g. it failed on its config).

Whoever takes the lock also removes what killed writers left: the hidden temporaries of
checkpoints, `model/`, `best/` and metrics files (`.NAME.tmp-PID`, `.NAME.old-PID`, in the run
dir and in `checkpoints/`) whose PID is not running, and says how much it freed. A temporary
of a running process is never touched.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from seqlm.errors import ConfigError
from seqlm.io.output_paths import check_output_dir, write_failure

LOCK_NAME = ".seqlm.lock"


@contextmanager
def run_lock(directory: Path, warn: Callable[[str], None]) -> Iterator[Path]:
    lock = directory / LOCK_NAME
    check_output_dir(directory)  # a file, under a file, not writable: OutputError (exit 4) before anything is written
    created = not directory.exists()
    try:
        directory.mkdir(parents=True, exist_ok=True)
        _acquire(lock, warn)
        _remove_dead_temporaries(directory, warn)
    except OSError as exc:
        failure = write_failure(exc, directory)
        if failure is None:
            raise
        raise failure from exc
    try:
        yield lock
    finally:
        lock.unlink(missing_ok=True)
        if created and not any(directory.iterdir()):
            directory.rmdir()  # a run that failed before writing anything leaves no trace


def _acquire(lock: Path, warn: Callable[[str], None]) -> None:
    me = f"{os.getpid()} {socket.gethostname()}\n"
    for _ in range(2):  # a second try after removing a stale lock
        try:
            descriptor = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _holder(lock)
            if holder is None:
                continue  # released meanwhile
            pid, host = holder
            if host == socket.gethostname() and not _alive(pid):
                warn(f"{lock}: taking over a stale lock of process {pid}, which is gone")
                lock.unlink(missing_ok=True)
                continue
            raise ConfigError(
                f"{lock.parent}: in use by seqlm process {pid} on {host}; wait for it to finish, "
                f"or use another output_dir (if that process is gone, delete {lock})"
            ) from None
        with os.fdopen(descriptor, "w") as handle:
            handle.write(me)
        return
    raise ConfigError(f"{lock}: could not take the lock; retry, or delete the file if no seqlm run uses the directory")


def _holder(lock: Path) -> tuple[int, str] | None:
    try:
        pid, host = lock.read_text(encoding="utf-8").split()
        return int(pid), host
    except FileNotFoundError:
        return None
    except ValueError:
        return 0, socket.gethostname()  # unreadable: treat as stale


_TEMPORARY = re.compile(r"\.(?P<name>.+)\.(?:tmp|old)-(?P<pid>\d+)")


def _remove_dead_temporaries(directory: Path, warn: Callable[[str], None]) -> None:
    removed, freed = [], 0
    for parent in (directory, directory / "checkpoints"):
        for path in sorted(parent.iterdir()) if parent.is_dir() else ():
            match = _TEMPORARY.fullmatch(path.name)
            if match is None or _alive(int(match["pid"])):
                continue
            freed += _size(path)
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
            removed.append(path.relative_to(directory).as_posix())
    if removed:
        shown = ", ".join(removed[:3]) + (f" (+{len(removed) - 3} more)" if len(removed) > 3 else "")
        warn(f"{directory}: removed {len(removed)} temporary file(s) of seqlm processes that were killed while writing ({shown}), freeing {freed / 1e6:.1f} MB")


def _size(path: Path) -> int:
    if path.is_file() or path.is_symlink():
        return path.lstat().st_size
    return sum(item.lstat().st_size for item in path.rglob("*") if item.is_file())


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True
