"""What `pretrain` and `finetune` share around the one loop: taking the run directory,
writing checkpoints (with retention), and stopping on a signal.

- `open_run` locks the output dir and decides how the run starts: from the newest complete
  checkpoint (`resume: auto|always`, after checking the config still matches), or afresh.
  A fresh start into a dir that holds another run is refused unless `overwrite`, which
  deletes that run first: a typo in `output_dir` must not cost anyone their results.
- `Checkpointer.save` writes `checkpoints/step-N` atomically, with the loop state, the run's
  own state (finetune's best-so-far) and the validation result of that step, then keeps the
  `keep_last` newest complete checkpoints plus the best one and the one resumed from.
- `stopped` ends a run after a stop signal's checkpoint with the exact resume command.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NoReturn

import yaml

from seqlm.config.loading import to_yaml
from seqlm.console import Console
from seqlm.errors import ConfigError, ExitCode, OutputError, TrainingInterrupted, first_line
from seqlm.runtime.distributed import LAUNCHED_NPROC, SINGLE, Cluster, on_main
from seqlm.training.checkpoint import COMPLETE, SHARDED, latest_checkpoint, load_trainer_state, save_checkpoint, sharded_temporary
from seqlm.training.parallel import ParallelModel
from seqlm.training.resume import check_resumable
from seqlm.training.run_dir import RunDir
from seqlm.training.run_lock import run_lock
from seqlm.training.state import LoopState

# What a run leaves in its output dir; any of them means the dir holds a run.
RUN_OUTPUTS = ("config.yaml", "metrics.jsonl", "metrics.json", "checkpoints", "model", "best")
# The results a run is for: with `resume: auto` and no checkpoint, these are never overwritten silently.
RUN_RESULTS = ("model", "best", "metrics.json")


def open_run(run_dir: RunDir, config: Any, console: Console, held: ExitStack, cluster: Cluster = SINGLE) -> Path | None:
    """Lock `run_dir` (released when `held` closes); the checkpoint to resume from, or None to start afresh.

    `config` is a pretrain or finetune config (it has `resume` and `overwrite`). Under torchrun
    rank 0 takes the lock and decides, and every rank gets its decision (or its error)."""
    return on_main(cluster, lambda: _open_run(run_dir, config, console, held))


def _open_run(run_dir: RunDir, config: Any, console: Console, held: ExitStack) -> Path | None:
    held.enter_context(run_lock(run_dir.path, console.warn))
    if config.overwrite:
        return None  # the previous run is deleted by begin(), once the new one has been set up without error
    if config.resume != "never":
        checkpoint = latest_checkpoint(run_dir.checkpoints_dir, console.warn)
        if checkpoint is not None:
            saved = yaml.safe_load((checkpoint / "config.yaml").read_text(encoding="utf-8"))
            for change in check_resumable(saved, config.model_dump(mode="json"), str(checkpoint)):
                console.info(f"resume: accepted config change {change}")
            return checkpoint
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


def begin(
    run_dir: RunDir, config: Any, state: LoopState, checkpoint: Path | None, console: Console, parallel: ParallelModel
) -> dict[str, Any]:
    """Start the run's records afresh (deleting the previous run under `overwrite`), or restore `state`
    from `checkpoint` (the model is loaded by the caller); returns the run's own state saved with
    the checkpoint (empty for a fresh start). Files are written by rank 0 only."""
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
    on_main(parallel.cluster, lambda: run_dir.resume(config_yaml, state.step))
    console.info(
        f"resumed from {checkpoint}: step {state.step}, {state.tokens_seen:,} tokens seen; restored the weights, "
        "optimizer, LR schedule, grad scaler and RNG states (python, numpy, torch); data continues at that step"
    )
    return load_run_state(checkpoint)


def load_run_state(checkpoint: Path) -> dict[str, Any]:
    """The run's own state saved with a checkpoint by `Checkpointer.save(run_state=...)`."""
    return json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8")).get("run", {})


@dataclass
class Checkpointer:
    """Writes the run's checkpoints and applies retention after each one."""

    run_dir: RunDir
    parallel: ParallelModel | None  # None: only retention is used (tests)
    tokenizer: Any
    config_yaml: str
    keep_last: int | None
    metric: str  # the validation metric that makes a checkpoint "the best", and which way is better
    mode: Literal["min", "max"]
    resumed_from: Path | None
    info: Callable[[str], None]

    def save(self, state: LoopState, validation: dict[str, float] | None, run_state: dict[str, Any]) -> Path:
        """Checkpoint `state.step`; `validation` is that step's validation result, when there was one.

        Every rank calls it (the weights, optimizer state and RNG states are gathered); rank 0 writes."""
        assert self.parallel is not None
        parallel, cluster = self.parallel, self.parallel.cluster
        directory = self.run_dir.checkpoint_dir(state.step)
        started = time.perf_counter()
        model = parallel.saveable(for_checkpoint=True)
        trainer_state = parallel.loop_state_dict(state)
        summary = {"validation": validation or {}, "run": run_state, "world_size": cluster.world_size}
        prepared = None
        if parallel.sharded_checkpoints:  # every rank writes its shards into the directory's temporary sibling
            pid = os.getpid()
            prepared = on_main(cluster, lambda: sharded_temporary(directory, pid))
            try:
                parallel.save_shards(prepared / SHARDED, state.optimizer)
            except Exception as exc:  # on every rank: DCP reports any rank's failure to all
                on_main(cluster, lambda: shutil.rmtree(prepared, ignore_errors=True))
                raise OutputError(f"{directory}: writing the sharded checkpoint failed ({first_line(exc)}); earlier checkpoints are intact") from exc

        def write() -> None:
            save_checkpoint(directory, model, self.tokenizer, state, self.config_yaml, summary, trainer_state, prepared)
            # The save time is what a scheduler's grace period (SIGTERM → SIGKILL) must leave room for.
            self.info(f"checkpoint {directory} written in {time.perf_counter() - started:.2f} s")
            if self.keep_last is not None:
                self._retain(state.step)

        on_main(cluster, write)
        return directory

    def _retain(self, step: int) -> None:
        """Delete all but the `keep_last` newest complete checkpoints, the best one and the one resumed from.

        Checkpoints past `step` (left by a run that was resumed from an earlier one) are left:
        the resumed run rewrites them when it gets there."""
        complete, other = [], []
        for directory in sorted(self.run_dir.checkpoints_dir.glob("step-*"), key=_step_of):
            if _step_of(directory) > step:
                continue
            (complete if (directory / COMPLETE).is_file() else other).append(directory)
        keep = set(complete[-self.keep_last :] if self.keep_last else [])
        best = self._best(complete)
        if best is not None:
            keep.add(best)
        if self.resumed_from is not None:
            keep.add(self.resumed_from)
        for directory in complete + other:
            if directory not in keep:
                shutil.rmtree(directory, ignore_errors=True)

    def _best(self, checkpoints: list[Path]) -> Path | None:
        scored = []
        for directory in checkpoints:
            try:
                value = json.loads((directory / "trainer_state.json").read_text(encoding="utf-8"))["validation"][self.metric]
            except (OSError, ValueError, KeyError, TypeError):
                continue
            if isinstance(value, (int, float)) and value == value:
                scored.append((value if self.mode == "min" else -value, _step_of(directory), directory))
        return min(scored)[2] if scored else None  # ties: the earlier checkpoint


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


def _step_of(directory: Path) -> int:
    try:
        return int(directory.name.removeprefix("step-"))
    except ValueError:
        return -1
