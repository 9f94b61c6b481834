"""One writer per run directory."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from seqlm.errors import ConfigError
from seqlm.training.run_lock import LOCK_NAME, run_lock


def test_the_lock_names_its_holder_and_is_removed_at_the_end(tmp_path: Path) -> None:
    with run_lock(tmp_path / "run", lambda message: None) as lock:
        assert lock.read_text().split() == [str(os.getpid()), socket.gethostname()]
    assert not lock.exists()


def test_a_second_writer_is_refused_with_the_holders_pid(tmp_path: Path) -> None:
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        run = tmp_path / "run"
        run.mkdir()
        (run / LOCK_NAME).write_text(f"{holder.pid} {socket.gethostname()}\n")
        with pytest.raises(ConfigError, match=rf"in use by seqlm process {holder.pid} on"):
            with run_lock(run, lambda message: None):
                pass
        assert (run / LOCK_NAME).exists(), "another process's lock is left alone"
    finally:
        holder.kill()
        holder.wait()


def test_a_stale_lock_is_taken_over_with_a_warning(tmp_path: Path) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    run = tmp_path / "run"
    run.mkdir()
    (run / LOCK_NAME).write_text(f"{gone.pid} {socket.gethostname()}\n")
    warnings: list[str] = []
    with run_lock(run, warnings.append) as lock:
        assert lock.read_text().split()[0] == str(os.getpid())
    assert warnings and f"stale lock of process {gone.pid}" in warnings[0]


def test_the_lock_is_released_when_the_run_fails(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError):
        with run_lock(tmp_path / "run", lambda message: None):
            raise RuntimeError("boom")
    assert not (tmp_path / "run" / LOCK_NAME).exists()


def test_taking_the_lock_removes_temporaries_of_dead_writers_only(tmp_path: Path) -> None:
    """A process killed inside a checkpoint or metrics write leaves `.NAME.tmp-PID` behind (as large as a
    checkpoint): the next lock holder removes those of dead PIDs and keeps those of running ones."""
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        checkpoints = tmp_path / "checkpoints"
        dead_checkpoint = checkpoints / f".step-000020.tmp-{gone.pid}"
        dead_checkpoint.mkdir(parents=True)
        (dead_checkpoint / "model.safetensors").write_bytes(b"x" * 2_000_000)
        dead_metrics = tmp_path / f".metrics.json.tmp-{gone.pid}"
        dead_metrics.write_text("{")
        live_checkpoint = checkpoints / f".step-000030.tmp-{alive.pid}"
        live_checkpoint.mkdir()
        complete = checkpoints / "step-000010"
        complete.mkdir()
        warnings: list[str] = []
        with run_lock(tmp_path, warnings.append):
            pass
        assert not dead_checkpoint.exists() and not dead_metrics.exists()
        assert live_checkpoint.is_dir() and complete.is_dir()
        assert len(warnings) == 1 and "removed 2 temporary file(s)" in warnings[0] and "freeing 2.0 MB" in warnings[0]
        assert f"checkpoints/.step-000020.tmp-{gone.pid}" in warnings[0]
    finally:
        alive.kill()
        alive.wait()
