"""Exact resume with real processes: kill a `seqlm pretrain` with SIGKILL after a checkpoint,
resume it, and get bit-identical weights and the same per-step losses as an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file
from typer.testing import CliRunner

from seqlm.cli import app

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()
# Dropout on, so the torch RNG state must be restored too; a checkpoint every 20 steps.
SETTINGS = [
    "--set", "training.max_steps=120", "--set", "training.checkpoint_every=20", "--set", "training.log_every=5",
    "--set", "training.eval_every=40", "--set", "model.dropout=0.1", "--device", "cpu",
]  # fmt: skip


def _pretrain_args(data: Path, output_dir: Path) -> list[str]:
    return ["pretrain", "configs/tiny/gpt_pretrain.yaml", "--set", f"data={data}", "--set", f"output_dir={output_dir}", *SETTINGS]


def _seqlm(*args: str) -> None:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("resume") / "data"
    _seqlm("tokenize", "configs/tiny/gpt_tokenize.yaml", "--set", f"output_dir={data}", "--set", "corpus.max_documents=1000", "-q")
    return data


@pytest.fixture(scope="module")
def uninterrupted(data: Path) -> Path:
    run = data.parent / "uninterrupted"
    _seqlm(*_pretrain_args(data, run), "-q")
    return run


def _losses(run: Path) -> dict[int, float]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in records if "split" not in r}


def test_sigkill_after_a_checkpoint_then_resume_is_bit_identical(data: Path, uninterrupted: Path) -> None:
    run = data.parent / "killed"
    process = subprocess.Popen(
        [sys.executable, "-m", "seqlm", *_pretrain_args(data, run), "-q"], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    marker = run / "checkpoints" / "step-000040" / "COMPLETE"
    deadline = time.monotonic() + 300
    while not marker.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert marker.exists(), process.stderr.read().decode() if process.stderr else "no checkpoint"
    assert not (run / "model").exists(), "the run finished before it could be killed"
    killed_at = max(_losses(run))

    result = runner.invoke(app, [*_pretrain_args(data, run), "--resume"])
    assert result.exit_code == 0, result.output
    assert "resumed from" in result.stderr and "restored the weights" in result.stderr
    assert killed_at >= 40

    expected, got = load_file(uninterrupted / "model" / "model.safetensors"), load_file(run / "model" / "model.safetensors")
    assert expected.keys() == got.keys()
    for name in expected:
        assert (expected[name] == got[name]).all(), f"{name} differs after resume"
    assert _losses(run) == _losses(uninterrupted), "per-step losses differ"


def test_resume_refuses_a_changed_model_and_lists_the_difference(data: Path, uninterrupted: Path) -> None:
    result = runner.invoke(app, [*_pretrain_args(data, uninterrupted), "--resume", "--set", "model.d_model=32"])
    assert result.exit_code == 2
    assert "model.d_model: 64 -> 32" in result.stderr and "cannot resume" in result.stderr


def test_resume_without_a_checkpoint_is_a_usage_error(data: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, [*_pretrain_args(data, tmp_path / "empty"), "--resume"])
    assert result.exit_code == 2 and "no complete checkpoint" in result.stderr


def test_an_incomplete_newest_checkpoint_is_skipped(data: Path, uninterrupted: Path, tmp_path: Path) -> None:
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(uninterrupted, run)
    (run / "checkpoints" / "step-000100" / "COMPLETE").unlink()  # as if killed while writing it
    os.truncate(run / "checkpoints" / "step-000080" / "model.safetensors", 100)  # damaged
    result = runner.invoke(app, [*_pretrain_args(data, run), "--resume"])
    assert result.exit_code == 0, result.output
    assert "resumed from" in result.stderr and "step-000060" in result.stderr
    expected, got = load_file(uninterrupted / "model" / "model.safetensors"), load_file(run / "model" / "model.safetensors")
    assert all((expected[name] == got[name]).all() for name in expected)


def test_harmless_changes_are_accepted_and_logged(data: Path, uninterrupted: Path, tmp_path: Path) -> None:
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(uninterrupted, run)
    result = runner.invoke(app, [*_pretrain_args(data, run), "--resume", "--set", "training.log_every=10"])
    assert result.exit_code == 0, result.output
    assert "accepted config change training.log_every: 5 -> 10" in result.stderr
    assert "resumed from" in result.stderr and "step-000100" in result.stderr


def _start_and_wait_for_training(data: Path, run: Path) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, "-m", "seqlm", *_pretrain_args(data, run)], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    marker = run / "checkpoints" / "step-000020" / "COMPLETE"  # training is under way
    deadline = time.monotonic() + 300
    while not marker.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert marker.exists(), process.communicate()[1]
    return process


@pytest.mark.parametrize(("signum", "exit_code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_stop_signal_checkpoints_the_current_step_and_resume_is_bit_identical(
    data: Path, uninterrupted: Path, tmp_path: Path, signum: signal.Signals, exit_code: int
) -> None:
    run = tmp_path / "signalled"
    process = _start_and_wait_for_training(data, run)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == exit_code, stderr
    last_line = stderr.strip().splitlines()[-1]
    assert f"{signum.name} at step" in last_line and "resume with: seqlm pretrain" in last_line and "--resume" in last_line
    step = int(last_line.split(" at step ")[1].split(":")[0])
    assert (run / "checkpoints" / f"step-{step:06d}" / "COMPLETE").is_file(), "the interrupted step's checkpoint is complete"
    assert not (run / "model").exists()

    result = runner.invoke(app, [*_pretrain_args(data, run), "--resume"])
    assert result.exit_code == 0, result.output
    assert f"step-{step:06d}" in result.stderr
    expected, got = load_file(uninterrupted / "model" / "model.safetensors"), load_file(run / "model" / "model.safetensors")
    assert all((expected[name] == got[name]).all() for name in expected)
    assert _losses(run) == _losses(uninterrupted)


def test_a_second_pretrain_on_a_locked_run_dir_is_refused(data: Path, tmp_path: Path) -> None:
    import socket

    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        run = tmp_path / "busy"
        run.mkdir()
        (run / ".seqlm.lock").write_text(f"{holder.pid} {socket.gethostname()}\n")
        result = runner.invoke(app, _pretrain_args(data, run))
        assert result.exit_code == 2 and f"in use by seqlm process {holder.pid}" in result.stderr
        assert not (run / "config.yaml").exists()
    finally:
        holder.kill()
        holder.wait()
