"""`Checkpointer`: a run's periodic checkpoints and their retention.

`save` writes `checkpoints/step-N` atomically (seqlm.training.checkpoint) with the loop state,
the run's own state (finetune's best-so-far), the step's validation result and how many records
metrics.jsonl held, then keeps the `keep_last` newest complete checkpoints plus the best one and
the one resumed from.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from seqlm.errors import OutputError, first_line
from seqlm.runtime.distributed import on_main
from seqlm.training.checkpoint import COMPLETE, SHARDED, save_checkpoint, sharded_temporary
from seqlm.training.parallel import ParallelModel
from seqlm.training.run_dir import RunDir
from seqlm.training.state import LoopState


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
            summary["log_records"] = self.run_dir.records  # rank 0 writes the log: its count is the run's
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


def _step_of(directory: Path) -> int:
    try:
        return int(directory.name.removeprefix("step-"))
    except ValueError:
        return -1
