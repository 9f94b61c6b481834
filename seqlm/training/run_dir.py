"""A run directory's layout and its writers.

    <output_dir>/
      config.yaml              the resolved config of the run
      metrics.jsonl            one JSON object per logged step / evaluation
      metrics.json             final metrics, one flat JSON object
      tensorboard/             training.report_to: [tensorboard]: the records as TensorBoard event files
      checkpoints/step-NNNNNN/ periodic checkpoints (HF model + trainer_state.pt)
      model/                   the final model: HF format, loadable by plain transformers
      best/                    finetune: the model of the best validation result (same format)
      adapter/, best-adapter/  training.lora: the adapters of model/ and best/ (peft adapter dirs; those two hold them merged)
      FINISHED                 written last, once every final output is in place: the run is over

Records are appended to metrics.jsonl by rank 0 alone, which counts them; each checkpoint stores
that count, and a resume keeps exactly the records written before its checkpoint (by position in
the file, never by the step a record mentions: the test record names the best step).
The report sinks of `training.report_to` (seqlm.training.report_sinks) get what metrics.jsonl and
metrics.json get, and on a resume the records it keeps.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from seqlm.io.atomic_files import write_text_atomic
from seqlm.training.report_sinks import ReportSinks

FINISHED = "FINISHED"


class RunDir:
    def __init__(self, path: Path, report_to: Sequence[str] = ()):
        self.path = Path(path)
        self.records = 0  # the lines of metrics.jsonl, as this process has written or kept them
        self.sinks = ReportSinks(report_to)

    @property
    def model_dir(self) -> Path:
        return self.path / "model"

    @property
    def best_dir(self) -> Path:
        """finetune: the model of the best validation result so far."""
        return self.path / "best"

    @property
    def adapter_dir(self) -> Path:
        """training.lora: the final model's adapters (model/ holds them merged)."""
        return self.path / "adapter"

    @property
    def best_adapter_dir(self) -> Path:
        """training.lora: best/'s adapters."""
        return self.path / "best-adapter"

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / "checkpoints"

    def checkpoint_dir(self, step: int) -> Path:
        return self.checkpoints_dir / f"step-{step:06d}"

    def start(self, config_yaml: str) -> None:
        """Start a fresh run in the (locked, so existing and writable) directory: previous logs and final outputs are cleared."""
        for stale in ("metrics.jsonl", "metrics.json", FINISHED):
            (self.path / stale).unlink(missing_ok=True)
        self.records = 0
        write_text_atomic(self.path / "config.yaml", config_yaml)
        self.sinks.open(self.path, config_yaml, [])

    def resume(self, config_yaml: str, step: int, records: int | None) -> None:
        """Continue a run from its checkpoint of `step`, which was written when metrics.jsonl held
        `records` lines: the lines after those are dropped (None, a checkpoint of an older seqlm:
        the records of steps past `step`), and so are the final outputs' marks."""
        log = self.path / "metrics.jsonl"
        lines = log.read_text(encoding="utf-8").splitlines(keepends=True) if log.is_file() else []
        if records is not None:
            kept = [line for line in lines[:records] if line.endswith("\n")]  # a torn line was never counted
        else:
            kept = [line for line in lines if line.endswith("\n") and _step_of(line) <= step]
        if log.is_file():
            write_text_atomic(log, "".join(kept))
        self.records = len(kept)
        for stale in ("metrics.json", FINISHED):
            (self.path / stale).unlink(missing_ok=True)
        write_text_atomic(self.path / "config.yaml", config_yaml)
        self.sinks.open(self.path, config_yaml, _parsed(kept))

    def log(self, record: dict[str, Any]) -> None:
        record = _finite(record)
        with open(self.path / "metrics.jsonl", "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        self.records += 1
        self.sinks.log(record)

    def write_metrics(self, metrics: dict[str, Any]) -> None:
        metrics = _finite(metrics)
        write_text_atomic(self.path / "metrics.json", json.dumps(metrics, indent=2) + "\n")
        self.sinks.close(metrics)

    def close(self) -> None:
        """The run ends (its lock is released next): report sinks still open are closed without final metrics."""
        self.sinks.close(None)

    def finish(self, step: int) -> None:
        """Mark the run finished: written last, after every final output (model/, best/, metrics.json)."""
        marker = {"step": step, "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        write_text_atomic(self.path / FINISHED, json.dumps(marker) + "\n")

    def finished(self) -> dict[str, Any] | None:
        """The FINISHED marker ({"step", "finished_at"}) of a run that is over, or None."""
        try:
            marker = json.loads((self.path / FINISHED).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {"step": None, "finished_at": None}  # damaged, but written last: the run is over
        return marker if isinstance(marker, dict) else {"step": None, "finished_at": None}


def _step_of(line: str) -> float:
    """The step of a metrics.jsonl line; a torn last line (the process was killed mid-write) sorts last."""
    try:
        return float(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return math.inf


def _parsed(lines: list[str]) -> list[dict[str, Any]]:
    """The records of metrics.jsonl lines; a damaged line is left out (it is kept in the file as it was)."""
    records = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int):
            records.append(record)
    return records


def _finite(record: dict[str, Any]) -> dict[str, Any]:
    """JSON has no NaN/inf: write them as null."""
    return {key: (None if isinstance(value, float) and not math.isfinite(value) else value) for key, value in record.items()}
