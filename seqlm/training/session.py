"""What `pretrain` and `finetune` share around the one loop: taking the run directory,
logging, marking the run finished, and stopping on a signal.

- `open_run` locks the output dir and decides how the run starts: from the newest complete
  checkpoint (`resume: auto|always`, after checking the config still matches), or afresh;
  a finished run (`FINISHED`) has nothing to do unless it is given more steps.
  A fresh start into a dir that holds another run is refused unless `overwrite`, which
  deletes that run first: a typo in `output_dir` must not cost anyone their results.
- `begin` starts the run's records afresh or restores the loop state from the checkpoint.
- `Checkpointer` (seqlm.training.checkpointer) writes the checkpoints and applies retention.
- `stopped` ends a run after a stop signal's checkpoint with the exact resume command.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import sys
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any, NoReturn

import yaml

from seqlm.config.loading import to_yaml
from seqlm.console import Console
from seqlm.errors import ConfigError, ExitCode, NothingToDo, TrainingInterrupted
from seqlm.runtime.distributed import LAUNCHED_NPROC, SINGLE, Cluster, on_main
from seqlm.training.checkpoint import latest_checkpoint, load_trainer_state
from seqlm.training.parallel import ParallelModel
from seqlm.training.report_sinks import SINK_OUTPUTS
from seqlm.training.resume import check_resumable
from seqlm.training.run_dir import FINISHED, RunDir
from seqlm.training.run_lock import run_lock
from seqlm.training.state import LoopState

# What a run leaves in its output dir; any of them means the dir holds a run.
RUN_OUTPUTS = (
    "config.yaml", "metrics.jsonl", "metrics.json", "checkpoints", "model", "best", "adapter", "best-adapter", *SINK_OUTPUTS, FINISHED,
)  # fmt: skip
# The results a run is for: with `resume: auto` and no checkpoint, these are never overwritten silently.
RUN_RESULTS = ("model", "best", "adapter", "best-adapter", "metrics.json")


def open_run(run_dir: RunDir, config: Any, console: Console, held: ExitStack, cluster: Cluster = SINGLE) -> Path | None:
    """Lock `run_dir` (released when `held` closes); the checkpoint to resume from, or None to start afresh.

    `config` is a pretrain or finetune config (it has `resume` and `overwrite`). Under torchrun
    rank 0 takes the lock and decides, and every rank gets its decision (or its error)."""
    return on_main(cluster, lambda: _open_run(run_dir, config, console, held))


def _open_run(run_dir: RunDir, config: Any, console: Console, held: ExitStack) -> Path | None:
    held.enter_context(run_lock(run_dir.path, console.warn))
    held.callback(run_dir.close)  # before the lock is released
    if config.overwrite:
        return None  # the previous run is deleted by begin(), once the new one has been set up without error
    finished = run_dir.finished()
    if finished is not None and config.resume != "never":
        _check_finished_run(run_dir, config, finished)  # returns when the run is given more steps
    if config.resume != "never":
        checkpoint = latest_checkpoint(run_dir.checkpoints_dir, console.warn)
        if checkpoint is not None:
            saved = yaml.safe_load((checkpoint / "config.yaml").read_text(encoding="utf-8"))
            for change in check_resumable(saved, config.model_dump(mode="json"), str(checkpoint)):
                console.info(f"resume: accepted config change {change}")
            return checkpoint
        if finished is not None:
            raise ConfigError(
                f"{run_dir.path}: this run finished and kept no checkpoint to train on from (training.checkpoint_every "
                f"was unset); start a new run from {run_dir.model_dir}"
            )
        if config.resume == "always":
            raise ConfigError(f"{run_dir.path}: no complete checkpoint to resume from; start the run without --resume")
    # `resume: auto` without a checkpoint may start over an attempt that saved nothing yet, never over results.
    blocking = _present(run_dir, RUN_RESULTS if config.resume == "auto" else RUN_OUTPUTS)
    if blocking:
        raise ConfigError(
            f"{run_dir.path}: already holds a run ({', '.join(blocking)}); pass --overwrite to delete it and start afresh, "
            "--resume to continue it, or choose another output_dir"
        )
    if config.resume == "auto":
        console.info(f"{run_dir.path}: no complete checkpoint yet; starting a new run (resume: auto)")
    return None


# The keys of a run's length: a finished run given other values trains on (from its last checkpoint).
_LENGTH_KEYS = ("max_steps", "epochs")


def _check_finished_run(run_dir: RunDir, config: Any, finished: dict[str, Any]) -> None:
    """A finished run asked to resume: NothingToDo, unless its config asks for another length
    (`training.max_steps` / `epochs`); a change of what it computes is refused as for any resume."""
    saved_config = run_dir.path / "config.yaml"
    saved = yaml.safe_load(saved_config.read_text(encoding="utf-8")) if saved_config.is_file() else None
    current = config.model_dump(mode="json")
    if isinstance(saved, dict):
        check_resumable(saved, current, str(run_dir.path))
        saved_training = saved.get("training") or {}
        if any(saved_training.get(key) != current["training"].get(key) for key in _LENGTH_KEYS if key in current["training"]):
            return
    at = f" at step {finished['step']}" if finished.get("step") is not None else ""
    when = f" ({finished['finished_at']})" if finished.get("finished_at") else ""
    raise NothingToDo(
        f"{run_dir.path}: this run finished{at}{when}; nothing to do, its results are as they were. To train it "
        "again pass --overwrite; to train it longer, resume with a larger training.max_steps (or epochs)"
    )


def begin(
    run_dir: RunDir,
    config: Any,
    state: LoopState,
    checkpoint: Path | None,
    console: Console,
    parallel: ParallelModel,
    max_steps: int,
) -> dict[str, Any]:
    """Start the run's records afresh (deleting the previous run under `overwrite`), or restore `state`
    from `checkpoint` (the model is loaded by the caller); returns the run's own state saved with
    the checkpoint (empty for a fresh start). A checkpoint of finished training trains on when the
    run now has more than the `max_steps` it finished under. Files are written by rank 0 only."""
    config_yaml = to_yaml(config)
    if checkpoint is None:

        def start() -> None:
            if config.overwrite:
                deleted = _delete_run(run_dir)
                if deleted:
                    console.warn(f"{run_dir.path}: --overwrite deleted the previous run ({', '.join(deleted)})")
            run_dir.start(config_yaml)

        on_main(parallel.cluster, start)
        return {}
    parallel.load_loop_state(state, load_trainer_state(checkpoint), checkpoint)
    records = _saved_summary(checkpoint).get("log_records")
    on_main(parallel.cluster, lambda: run_dir.resume(config_yaml, state.step, records))
    extended = state.finished_max_steps is not None and state.finished_max_steps != max_steps and state.step < max_steps
    if extended:
        console.info(f"training had finished at step {state.step} of {state.finished_max_steps}; training on to step {max_steps}")
        state.finished_max_steps = None
    if state.finished_max_steps is not None:
        console.info(
            f"resumed from {checkpoint}: training had finished at step {state.step}; writing the final outputs "
            "(the run stopped while writing them)"
        )
    else:
        console.info(
            f"resumed from {checkpoint}: step {state.step}, {state.tokens_seen:,} tokens seen; restored the weights, "
            "optimizer, LR schedule, grad scaler and RNG states (python, numpy, torch); data continues at that step"
        )
    return load_run_state(checkpoint)


def load_run_state(checkpoint: Path) -> dict[str, Any]:
    """The run's own state saved with a checkpoint by `Checkpointer.save(run_state=...)`."""
    return _saved_summary(checkpoint).get("run", {})


def _saved_summary(checkpoint: Path) -> dict[str, Any]:
    return json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8"))


def agreed_stop(cluster: Cluster, received: Callable[[], signal.Signals | None]) -> Callable[[], signal.Signals | None]:
    """The loop's stop check: under torchrun all ranks stop at the same step, when any of them got a signal
    (one small collective per step; SIGTERM wins over SIGINT)."""
    if not cluster.distributed:
        return received

    def check() -> signal.Signals | None:
        local = received()
        agreed = cluster.max(int(local) if local is not None else 0)
        return signal.Signals(agreed) if agreed else None

    return check


def stopped(run_dir: RunDir, state: LoopState, signum: signal.Signals, cluster: Cluster = SINGLE) -> NoReturn:
    """After the checkpoint of the step in progress: say how to continue, exit 130 (SIGINT) / 143 (SIGTERM)."""
    argv = ["seqlm", *sys.argv[1:]]
    argv = [arg for arg in argv if arg != "--overwrite"]  # resuming must not delete what it resumes
    if not cluster.distributed:
        how = ""
    elif LAUNCHED_NPROC in os.environ:  # started by `seqlm ... --nproc N`
        argv += ["--nproc", os.environ[LAUNCHED_NPROC]]
        how = ""
    else:
        how = f" (under torchrun, with {cluster.world_size} processes again)"
    command = shlex.join(argv if "--resume" in argv else [*argv, "--resume"])
    code = ExitCode.TERMINATED if signum == signal.SIGTERM else ExitCode.INTERRUPTED
    interrupted = TrainingInterrupted(
        f"{signum.name} at step {state.step}: checkpoint {run_dir.checkpoint_dir(state.step)} is complete; "
        f"resume with: {command}{how}",
        code,
    )
    interrupted.reported_by_rank_0 = not cluster.is_main  # every rank stops at this step; rank 0 says so
    raise interrupted


def log_record(run_dir: RunDir, console: Console, record: dict[str, Any], max_steps: int, cluster: Cluster = SINGLE) -> None:
    """Append a loop record to metrics.jsonl (rank 0 alone: one record per step, whatever the number of
    processes) and show it as one line (`step 20/100  loss 3.1 ...`)."""
    on_main(cluster, lambda: run_dir.log(record))
    shown = "  ".join(f"{key} {short(value)}" for key, value in record.items() if key not in ("step", "split"))
    prefix = "validation" if record.get("split") == "validation" else "step"
    console.info(f"{prefix} {record['step']}/{max_steps}  {shown}")


def short(value: Any) -> str:
    """A metric as a log line shows it: 4 significant digits, thousands separators."""
    if isinstance(value, float):
        return f"{value:.4g}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _present(run_dir: RunDir, names: tuple[str, ...]) -> list[str]:
    found = []
    for name in names:
        path = run_dir.path / name
        if path.is_dir() and any(path.iterdir()) or path.is_file():
            found.append(f"{name}/" if path.is_dir() else name)
    return found


def _delete_run(run_dir: RunDir) -> list[str]:
    deleted = _present(run_dir, RUN_OUTPUTS)
    for name in RUN_OUTPUTS:
        path = run_dir.path / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    return deleted
