"""A run directory's layout and its writers.

    <output_dir>/
      config.yaml              the resolved config of the run
      metrics.jsonl            one JSON object per logged step / evaluation
      metrics.json             final metrics, one flat JSON object
      checkpoints/step-NNNNNN/ periodic checkpoints (HF model + trainer_state.pt)
      model/                   the final model: HF format, loadable by plain transformers
      best/                    finetune: the model of the best validation result (same format)
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from seqlm.io.atomic_files import write_text_atomic


class RunDir:
    def __init__(self, path: Path):
        self.path = Path(path)

    @property
    def model_dir(self) -> Path:
        return self.path / "model"

    @property
    def best_dir(self) -> Path:
        """finetune: the model of the best validation result so far."""
        return self.path / "best"

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / "checkpoints"

    def checkpoint_dir(self, step: int) -> Path:
        return self.checkpoints_dir / f"step-{step:06d}"

    def start(self, config_yaml: str) -> None:
        """Start a fresh run in the (locked, so existing and writable) directory: previous logs and final outputs are cleared."""
        for stale in ("metrics.jsonl", "metrics.json"):
            (self.path / stale).unlink(missing_ok=True)
        write_text_atomic(self.path / "config.yaml", config_yaml)

    def resume(self, config_yaml: str, step: int) -> None:
        """Continue a run at `step`: log records past it (written after that checkpoint) are dropped."""
        log = self.path / "metrics.jsonl"
        if log.is_file():
            kept = [line for line in log.read_text(encoding="utf-8").splitlines() if _step_of(line) <= step]
            write_text_atomic(log, "".join(line + "\n" for line in kept))
        (self.path / "metrics.json").unlink(missing_ok=True)
        write_text_atomic(self.path / "config.yaml", config_yaml)

    def log(self, record: dict[str, Any]) -> None:
        with open(self.path / "metrics.jsonl", "a", encoding="utf-8") as handle:
            handle.write(json.dumps(_finite(record)) + "\n")

    def write_metrics(self, metrics: dict[str, Any]) -> None:
        write_text_atomic(self.path / "metrics.json", json.dumps(_finite(metrics), indent=2) + "\n")


def _step_of(line: str) -> float:
    """The step of a metrics.jsonl line; a torn last line (the process was killed mid-write) sorts last."""
    try:
        return float(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return math.inf


def _finite(record: dict[str, Any]) -> dict[str, Any]:
    """JSON has no NaN/inf: write them as null."""
    return {key: (None if isinstance(value, float) and not math.isfinite(value) else value) for key, value in record.items()}
