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


def _wait_for(marker: Path, process: subprocess.Popen) -> None:
    """Until `marker` exists (a checkpoint is complete), the process ends, or 5 minutes pass."""
    deadline = time.monotonic() + 300
    while not marker.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)


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
    _wait_for(marker, process)
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


def test_tensorboard_curves_after_sigkill_and_resume_have_each_step_once(data: Path) -> None:
    """training.report_to: [tensorboard], killed after step 10's checkpoint once it logged past it: read back
    with TensorBoard's EventAccumulator, the event files hold metrics.jsonl's records, each step once."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = data.parent / "tensorboard-killed"
    shorter = ["training.max_steps=30", "training.checkpoint_every=10", "training.eval_every=20", "training.eval_batches=2"]
    shorter += ["training.report_to=[tensorboard]"]
    args = [*_pretrain_args(data, run), *(arg for setting in shorter for arg in ("--set", setting))]
    process = subprocess.Popen([sys.executable, "-m", "seqlm", *args, "-q"], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    marker = run / "checkpoints" / "step-000010" / "COMPLETE"
    _wait_for(marker, process)
    deadline = time.monotonic() + 120
    while max(_losses_so_far(run), default=0) <= 10 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)  # until it logged a step after the checkpoint: those records are dropped on resume
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert marker.exists() and not (run / "model").exists(), process.stderr.read().decode() if process.stderr else "not killed mid-run"
    assert max(_losses_so_far(run)) > 10

    result = runner.invoke(app, [*args, "--resume"])
    assert result.exit_code == 0, result.output
    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0, "tensors": 0}).Reload()
    losses = _losses(run)
    assert [event.step for event in events.Scalars("train/loss")] == list(range(5, 31, 5)) == sorted(losses)
    assert [event.value for event in events.Scalars("train/loss")] == pytest.approx([losses[step] for step in sorted(losses)])
    assert [event.step for event in events.Scalars("train/grad_norm")] == sorted(losses)
    assert [event.step for event in events.Scalars("validation/loss")] == [20, 30]
    assert "report_to" in events.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "final/val_loss" in events.Tags()["scalars"]
    assert "_hparams_/session_start_info" in events.PluginTagToContent("hparams")


def _losses_so_far(run: Path) -> set[int]:
    """The steps of the training records metrics.jsonl holds now (a torn last line is skipped)."""
    try:
        lines = (run / "metrics.jsonl").read_text().splitlines(keepends=True)
    except FileNotFoundError:
        return set()
    return {json.loads(line)["step"] for line in lines if line.endswith("\n") and '"split"' not in line}


def test_resume_refuses_a_changed_model_and_lists_the_difference(data: Path, uninterrupted: Path) -> None:
    result = runner.invoke(app, [*_pretrain_args(data, uninterrupted), "--resume", "--set", "model.d_model=32"])
    assert result.exit_code == 2
    assert "model.d_model: 64 -> 32" in result.stderr and "cannot resume" in result.stderr


def test_resume_without_a_checkpoint_is_a_usage_error(data: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, [*_pretrain_args(data, tmp_path / "empty"), "--resume"])
    assert result.exit_code == 2 and "no complete checkpoint" in result.stderr


def test_an_incomplete_newest_checkpoint_is_skipped(data: Path, uninterrupted: Path, tmp_path: Path) -> None:

    run = _unfinished_copy(uninterrupted, tmp_path / "copy")
    (run / "checkpoints" / "step-000100" / "COMPLETE").unlink()  # as if killed while writing it
    os.truncate(run / "checkpoints" / "step-000080" / "model.safetensors", 100)  # damaged
    result = runner.invoke(app, [*_pretrain_args(data, run), "--resume"])
    assert result.exit_code == 0, result.output
    assert "resumed from" in result.stderr and "step-000060" in result.stderr
    assert "step-000080: model.safetensors is damaged (100 bytes, written as" in result.stderr
    expected, got = load_file(uninterrupted / "model" / "model.safetensors"), load_file(run / "model" / "model.safetensors")
    assert all((expected[name] == got[name]).all() for name in expected)


def test_harmless_changes_are_accepted_and_logged(data: Path, uninterrupted: Path, tmp_path: Path) -> None:

    run = _unfinished_copy(uninterrupted, tmp_path / "copy")
    result = runner.invoke(app, [*_pretrain_args(data, run), "--resume", "--set", "training.log_every=10"])
    assert result.exit_code == 0, result.output
    assert "accepted config change training.log_every: 5 -> 10" in result.stderr
    assert "resumed from" in result.stderr and "step-000100" in result.stderr


def _unfinished_copy(run: Path, copy: Path) -> Path:
    """A copy of a finished run as a kill before its last checkpoint left it: a run to resume."""
    import shutil

    shutil.copytree(run, copy)
    for name in ("FINISHED", "metrics.json"):
        (copy / name).unlink()
    shutil.rmtree(copy / "model")
    final = max((copy / "checkpoints").glob("step-*"))
    shutil.rmtree(final)
    return copy


def _snapshot(run: Path) -> dict[str, tuple[int, bytes]]:
    return {str(path.relative_to(run)): (path.stat().st_mtime_ns, path.read_bytes()) for path in run.rglob("*") if path.is_file()}


@pytest.mark.parametrize("how", [["--resume"], ["--set", "resume=auto"], ["--set", "resume=auto", "-q"]])
def test_resuming_a_finished_run_says_so_and_touches_nothing(data: Path, uninterrupted: Path, how: list[str]) -> None:
    """It used to resume from the last checkpoint, retrain the steps after it and rewrite model/."""
    before = _snapshot(uninterrupted)
    result = runner.invoke(app, [*_pretrain_args(data, uninterrupted), *how])
    assert result.exit_code == 0, result.output
    assert "this run finished at step 120" in result.stderr and "nothing to do" in result.stderr
    assert "--overwrite" in result.stderr and "error" not in result.stderr
    assert _snapshot(uninterrupted) == before


def test_a_finished_run_given_more_steps_trains_on_from_its_last_checkpoint(data: Path, uninterrupted: Path, tmp_path: Path) -> None:
    import shutil

    run = tmp_path / "longer"
    shutil.copytree(uninterrupted, run)
    result = runner.invoke(app, [*_pretrain_args(data, run), "--resume", "--set", "training.max_steps=125"])
    assert result.exit_code == 0, result.output
    assert "training had finished at step 120 of 120; training on to step 125" in result.stderr
    steps = [r["step"] for r in _records(run) if "split" not in r]
    assert steps == sorted(set(steps)) and steps[-1] == 125  # each step's record once
    assert json.loads((run / "FINISHED").read_text())["step"] == 125


def test_a_run_killed_during_its_final_writes_finishes_them_without_training(data: Path, uninterrupted: Path, tmp_path: Path) -> None:
    """Killed after its last step's checkpoint, while writing model/ (a temporary of a dead pid is left):
    the resume writes model/, metrics.json and FINISHED as the run would have, and trains no step."""
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(uninterrupted, run)
    (run / "FINISHED").unlink()
    (run / "metrics.json").unlink()
    (run / "model").rename(run / ".model.tmp-999999999")
    result = runner.invoke(app, [*_pretrain_args(data, run), "--resume"])
    assert result.exit_code == 0, result.output
    assert "training had finished at step 120" in result.stderr and "step-000120" in result.stderr
    assert "step 120/120" not in result.stderr, "a step was trained again"
    _same_weights(uninterrupted / "model", run / "model")
    assert (run / "metrics.jsonl").read_text() == (uninterrupted / "metrics.jsonl").read_text()
    assert json.loads((run / "metrics.json").read_text()) == json.loads((uninterrupted / "metrics.json").read_text())
    assert json.loads((run / "FINISHED").read_text())["step"] == 120
    assert not (run / ".model.tmp-999999999").exists()


def test_a_damaged_loop_state_falls_back_to_the_previous_checkpoint(data: Path, uninterrupted: Path, tmp_path: Path) -> None:
    """A truncated trainer_state.pt used to be `exit 1: unexpected RuntimeError: PytorchStreamReader failed`."""
    run = _unfinished_copy(uninterrupted, tmp_path / "copy")
    state = run / "checkpoints" / "step-000100" / "trainer_state.pt"
    os.truncate(state, state.stat().st_size // 2)
    # Bit-identical resume is tested above; here 5 steps show that the run goes on from step 80.
    result = runner.invoke(app, [*_pretrain_args(data, run), "--resume", "--set", "training.max_steps=85"])
    assert result.exit_code == 0, result.output
    assert "step-000100: trainer_state.pt is damaged" in result.stderr and "falling back to an older checkpoint" in result.stderr
    assert "resumed from" in result.stderr and "step-000080: step 80" in result.stderr
    assert max(_losses(run)) == 85 and "Traceback" not in result.stderr


def test_a_file_changed_in_place_is_found_by_its_checksum(data: Path, uninterrupted: Path, tmp_path: Path) -> None:
    """Same size, other bytes: only the manifest's SHA-256 can tell; with no trustworthy checkpoint left,
    a one-line data error (exit 3) and nothing written."""
    run = _unfinished_copy(uninterrupted, tmp_path / "copy")
    for checkpoint in (run / "checkpoints").glob("step-*"):
        with open(checkpoint / "trainer_state.pt", "r+b") as handle:
            handle.seek(200)
            byte = handle.read(1)
            handle.seek(200)
            handle.write(bytes([byte[0] ^ 0xFF]))
    before = _snapshot(run)
    result = runner.invoke(app, [*_pretrain_args(data, run), "--resume"])
    assert result.exit_code == 3, result.output
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("seqlm: error:") and "no checkpoint can be trusted" in error
    assert "step-000100: trainer_state.pt is damaged (its SHA-256 differs" in error and "--overwrite" in error
    assert "Traceback" not in result.stderr
    assert _snapshot(run) == before


def _start_and_wait_for_training(data: Path, run: Path) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, "-m", "seqlm", *_pretrain_args(data, run)], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    marker = run / "checkpoints" / "step-000020" / "COMPLETE"  # training is under way
    _wait_for(marker, process)
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


# --------------------------------------------------------------------------- a fresh start never clobbers a run


def test_a_fresh_start_into_a_dir_holding_a_run_is_refused(data: Path, uninterrupted: Path) -> None:
    before = {path: path.stat().st_mtime_ns for path in uninterrupted.rglob("*")}
    result = runner.invoke(app, _pretrain_args(data, uninterrupted))
    assert result.exit_code == 2
    assert "already holds a run" in result.stderr and "--overwrite" in result.stderr and "--resume" in result.stderr
    assert {path: path.stat().st_mtime_ns for path in uninterrupted.rglob("*")} == before, "the refused start changed the run"


def test_resume_auto_without_a_checkpoint_never_overwrites_results(data: Path, tmp_path: Path) -> None:
    run = tmp_path / "finished"
    (run / "model").mkdir(parents=True)
    (run / "model" / "config.json").write_text("{}")
    result = runner.invoke(app, [*_pretrain_args(data, run), "--set", "resume=auto"])
    assert result.exit_code == 2 and "already holds a run (model/)" in result.stderr


def test_overwrite_deletes_the_previous_run_and_starts_afresh(data: Path, uninterrupted: Path, tmp_path: Path) -> None:
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(uninterrupted, run)
    result = runner.invoke(app, [*_pretrain_args(data, run), "--overwrite", "--set", "training.max_steps=20"])
    assert result.exit_code == 0, result.output
    assert "--overwrite deleted the previous run" in result.stderr
    # The old ones are deleted; step 20 is the end, checkpointed as such.
    assert sorted(path.name for path in (run / "checkpoints").iterdir()) == ["step-000020"]
    assert max(_losses(run)) == 20


def test_resume_and_overwrite_together_are_refused(data: Path, uninterrupted: Path) -> None:
    result = runner.invoke(app, [*_pretrain_args(data, uninterrupted), "--resume", "--overwrite"])
    assert result.exit_code == 2 and "pass one of them" in result.stderr


# --------------------------------------------------------------------------- disk full while checkpointing


def test_disk_full_while_checkpointing_is_exit_4_and_the_run_resumes_exactly(
    data: Path, uninterrupted: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    import seqlm.training.checkpoint as checkpoint_module

    real = checkpoint_module._write_part
    run = tmp_path / "full"

    def no_space_at_step_40(name: str, write) -> None:
        if name == "trainer_state.pt" and (run / "checkpoints" / "step-000020" / "COMPLETE").is_file() and not list(
            (run / "checkpoints").glob("step-00004*")
        ):
            raise OSError(errno.ENOSPC, "No space left on device")
        real(name, write)

    monkeypatch.setattr(checkpoint_module, "_write_part", no_space_at_step_40)
    result = runner.invoke(app, _pretrain_args(data, run))
    assert result.exit_code == 4, result.output
    assert "step-000040: not written" in result.stderr and "earlier checkpoints are intact" in result.stderr
    assert sorted(path.name for path in (run / "checkpoints").iterdir()) == ["step-000020"]
    assert not (run / "model").exists() and not (run / "metrics.json").exists()

    monkeypatch.setattr(checkpoint_module, "_write_part", real)  # space freed
    result = runner.invoke(app, [*_pretrain_args(data, run), "--resume"])
    assert result.exit_code == 0, result.output
    expected, got = load_file(uninterrupted / "model" / "model.safetensors"), load_file(run / "model" / "model.safetensors")
    assert all((expected[name] == got[name]).all() for name in expected)
    assert _losses(run) == _losses(uninterrupted)


def test_a_second_sigint_stops_at_once_and_leaves_nothing_that_looks_complete(data: Path, tmp_path: Path) -> None:
    from seqlm.training.checkpoint import latest_checkpoint

    run = tmp_path / "impatient"
    process = _start_and_wait_for_training(data, run)
    process.send_signal(signal.SIGINT)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    for checkpoint in (run / "checkpoints").glob("step-*"):
        if (checkpoint / "COMPLETE").is_file():  # whatever claims to be complete is loadable
            assert latest_checkpoint(run / "checkpoints", lambda message: None) is not None
            assert load_file(checkpoint / "model.safetensors")
    assert not (run / "model").exists()
    assert not (run / ".seqlm.lock").exists()


# --------------------------------------------------------------------------- fine-tuning: resume mid-epoch


def _classify_files(root: Path) -> tuple[Path, Path]:
    """1,200 training verses (38 batches of 32: an epoch is 38 steps) and 200 validation verses."""
    rows = (REPO / "data" / "classify" / "train.jsonl").read_text(encoding="utf-8").splitlines()
    train, validation = root / "train.jsonl", root / "validation.jsonl"
    train.write_text("\n".join(rows[:1200]) + "\n", encoding="utf-8")
    validation.write_text("\n".join(rows[1200:1400]) + "\n", encoding="utf-8")
    return train, validation


def _finetune_args(model: Path, train: Path, validation: Path, output_dir: Path) -> list[str]:
    settings = {
        "model": model, "output_dir": output_dir, "data.train": train, "data.validation": validation, "data.test": "null",
        "training.max_steps": 60, "training.checkpoint_every": 10, "training.eval_every": 15, "training.log_every": 5,
        "training.keep_last": 2, "training.early_stopping.patience": "null",
    }  # fmt: skip
    args = ["finetune", "configs/tiny/gpt_finetune.yaml", "--device", "cpu"]
    for key, value in settings.items():
        args += ["--set", f"{key}={value}"]
    return args


@pytest.fixture(scope="module")
def finetuned(uninterrupted: Path) -> tuple[list[str], Path]:
    """An uninterrupted fine-tuning run of the pretrained tiny GPT (dropout 0.1), and its arguments' files."""
    root = uninterrupted.parent / "finetune"
    root.mkdir()
    train, validation = _classify_files(root)
    run = root / "uninterrupted"
    _seqlm(*_finetune_args(uninterrupted / "model", train, validation, run), "-q")
    return [str(uninterrupted / "model"), str(train), str(validation)], run


def _same_weights(expected_dir: Path, got_dir: Path) -> None:
    expected, got = load_file(expected_dir / "model.safetensors"), load_file(got_dir / "model.safetensors")
    assert expected.keys() == got.keys()
    for name in expected:
        assert (expected[name] == got[name]).all(), f"{got_dir}: {name} differs"


def _records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _without_speed(records: list[dict]) -> list[dict]:
    return [{key: value for key, value in record.items() if key != "tokens_per_s"} for record in records]


def _kill_after_step_20_resume_and_compare(args: list[str], run: Path, expected: Path) -> None:
    """SIGKILL a fine-tuning process once step 20's checkpoint is complete, resume it in-process, and
    require the uninterrupted run's weights (model/ and best/) and metrics.jsonl records, bit for bit."""
    process = subprocess.Popen([sys.executable, "-m", "seqlm", *args, "-q"], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    marker = run / "checkpoints" / "step-000020" / "COMPLETE"
    _wait_for(marker, process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert marker.exists(), process.stderr.read().decode() if process.stderr else "no checkpoint"
    assert not (run / "model").exists(), "the run finished before it could be killed"

    result = runner.invoke(app, [*args, "--resume"])
    assert result.exit_code == 0, result.output
    assert "resumed from" in result.stderr
    _same_weights(expected / "model", run / "model")
    _same_weights(expected / "best", run / "best")
    assert _without_speed(_records(run)) == _without_speed(_records(expected)), "losses or validation results differ"


def test_finetune_sigkill_mid_epoch_then_resume_is_bit_identical(finetuned, tmp_path: Path) -> None:
    (model, train, validation), expected = finetuned
    run = tmp_path / "killed"
    # Step 20 of a 38-step epoch.
    _kill_after_step_20_resume_and_compare(_finetune_args(Path(model), Path(train), Path(validation), run), run, expected)
    metrics, expected_metrics = json.loads((run / "metrics.json").read_text()), json.loads((expected / "metrics.json").read_text())
    assert metrics["best_step"] == expected_metrics["best_step"] and metrics["val_accuracy"] == expected_metrics["val_accuracy"]


def test_finetune_keeps_the_last_two_checkpoints_and_the_best(finetuned) -> None:
    _, run = finetuned
    # Checkpoints every 10 steps, validation every 15 and at the end (step 60): of steps 30 and 60, the
    # checkpoints with a validation result, the better one is kept beside the newest two.
    kept = sorted(path.name for path in (run / "checkpoints").iterdir())
    accuracy = {r["step"]: r["val_accuracy"] for r in _records(run) if r.get("split") == "validation"}
    best_is_30 = accuracy[30] >= accuracy[60]  # ties: the earlier checkpoint
    assert kept == (["step-000030"] if best_is_30 else []) + ["step-000050", "step-000060"]
    final = json.loads((run / "checkpoints" / "step-000060" / "trainer_state.json").read_text())
    assert final["validation"]["accuracy"] == accuracy[60]  # the last step is checkpointed with its validation


def test_finetune_sigterm_checkpoints_and_resume_is_bit_identical(finetuned, tmp_path: Path) -> None:
    (model, train, validation), expected = finetuned
    run = tmp_path / "terminated"
    args = _finetune_args(Path(model), Path(train), Path(validation), run)
    process = subprocess.Popen([sys.executable, "-m", "seqlm", *args], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    marker = run / "checkpoints" / "step-000010" / "COMPLETE"
    _wait_for(marker, process)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr
    last_line = stderr.strip().splitlines()[-1]
    assert "SIGTERM at step" in last_line and "resume with: seqlm finetune" in last_line and last_line.endswith("--resume")
    step = int(last_line.split(" at step ")[1].split(":")[0])
    assert (run / "checkpoints" / f"step-{step:06d}" / "COMPLETE").is_file()

    result = runner.invoke(app, [*args, "--resume"])
    assert result.exit_code == 0, result.output
    _same_weights(expected / "model", run / "model")
    _same_weights(expected / "best", run / "best")
    assert _without_speed(_records(run)) == _without_speed(_records(expected))


def test_finetune_killed_after_its_test_record_finishes_without_a_second_one(finetuned, tmp_path: Path) -> None:
    """The test record names the best step, so dropping records by step kept the stale copy: two
    `split: test` records. Records are dropped by position now, and a finished run is left alone."""
    (model, train, validation), _ = finetuned
    run = tmp_path / "tested"
    args = [*_finetune_args(Path(model), Path(train), Path(validation), run), "--set", "training.max_steps=20", "--set", f"data.test={validation}"]
    _seqlm(*args, "-q")
    finished = {name: (run / name).read_text() for name in ("metrics.jsonl", "metrics.json")}
    assert [r["split"] for r in _records(run) if r.get("split") == "test"] == ["test"]

    before = _snapshot(run)
    result = runner.invoke(app, [*args, "--resume"])
    assert result.exit_code == 0 and "this run finished at step 20" in result.stderr, result.output
    assert _snapshot(run) == before

    (run / "FINISHED").unlink()  # killed after the test record, before metrics.json
    (run / "metrics.json").unlink()
    result = runner.invoke(app, [*args, "--resume"])
    assert result.exit_code == 0, result.output
    assert "training had finished at step 20" in result.stderr
    assert (run / "metrics.jsonl").read_text() == finished["metrics.jsonl"]
    assert json.loads((run / "metrics.json").read_text()) == json.loads(finished["metrics.json"])
    assert (run / "FINISHED").is_file()


# --------------------------------------------------------------------------- token classification


@pytest.fixture(scope="module")
def tagged(uninterrupted: Path) -> tuple[list[str], Path]:
    """An uninterrupted token-classification run of the pretrained tiny GPT-2 (byte-level BPE, dropout 0.1)
    on 600 POS sentences, and its arguments."""
    root = uninterrupted.parent / "tagging"
    root.mkdir()
    rows = (REPO / "data" / "tasks" / "token_classification" / "pos_ud_ewt" / "train.jsonl").read_text(encoding="utf-8").splitlines()
    train, validation = root / "train.jsonl", root / "validation.jsonl"
    train.write_text("\n".join(rows[:600]) + "\n", encoding="utf-8")
    validation.write_text("\n".join(rows[600:800]) + "\n", encoding="utf-8")
    args = _tagging_args(uninterrupted / "model", train, validation, root / "uninterrupted")
    _seqlm(*args, "-q")
    return [str(uninterrupted / "model"), str(train), str(validation)], root / "uninterrupted"


def _tagging_args(model: Path, train: Path, validation: Path, output_dir: Path) -> list[str]:
    args = _finetune_args(model, train, validation, output_dir)
    args[1] = "configs/tiny/bert_pos_finetune.yaml"  # task: token_classification, from the GPT-2 here
    return [*args, "--set", "training.batch_size=16"]  # 600 sentences: about 38 batches per epoch, so step 20 is mid-epoch


def test_token_classification_sigkill_mid_epoch_then_resume_is_bit_identical(tagged, tmp_path: Path) -> None:
    (model, train, validation), expected = tagged
    run = tmp_path / "killed"
    _kill_after_step_20_resume_and_compare(_tagging_args(Path(model), Path(train), Path(validation), run), run, expected)
    metrics = json.loads((run / "metrics.json").read_text())
    steps_per_epoch = metrics["steps"] / metrics["epochs"]
    assert metrics["task"] == "token_classification" and 20 < steps_per_epoch < 60, metrics  # the kill landed mid-epoch
