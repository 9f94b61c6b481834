"""One writer per run directory: a lock file naming the process that holds it.

`<output_dir>/.seqlm.lock` is created exclusively (O_EXCL) and holds "PID HOST". A second
seqlm process on the same directory is refused with the holder's PID; a lock whose process
is gone (same host, PID not running) is stale and taken over with a warning. The lock is
removed when the run ends, however it ends (a SIGKILL leaves it stale, to be taken over), and so
is the directory if the lock created it and the run wrote nothing (e.g. it failed on its config).
"""

from __future__ import annotations

import os
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
