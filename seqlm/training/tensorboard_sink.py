"""The `tensorboard` report sink: a run's records as TensorBoard event files in RUN/tensorboard/.

Tags: `train/<key>` for the loop's records (loss, each objective term's `<term>_loss`, lr, grad_norm,
tokens_per_s, tokens_seen), `validation/<metric>` and `test/<metric>` for the evaluation records (their
`val_` / `test_` prefix dropped); `config`, the resolved config.yaml as text at step 0; and at the end the
HParams view: the config's settings (dotted keys) as hyperparameters, metrics.json's numbers as the
`final/<key>` metrics. The step is the record's step (a test record's is the best step).

The writer is TensorBoard's own (torch.utils.tensorboard on the tensorboard package), imported only when
a run opens the sink: `seqlm --help` does not pay for it. Each open deletes the directory and writes
the records the run keeps into a new event file, so a resumed run shows each step once and nothing it
discarded; each rebuilt point keeps the wall time the deleted files gave it (metrics.jsonl has none). A
TensorBoard left open across a resume replaces a curve's points from the step the new file repeats, but
keeps discarded points of a metric that the run has not logged again yet (e.g. a validation past the
checkpoint) until it is restarted.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import yaml


class TensorBoardSink:
    output = "tensorboard"

    def __init__(self) -> None:
        self._writer: Any = None
        self._config_yaml = ""
        self._last_step = 0

    def open(self, run_dir: Path, config_yaml: str, history: list[dict[str, Any]]) -> None:
        from torch.utils.tensorboard import SummaryWriter

        directory = run_dir / self.output
        written = _wall_times(directory) if history else {}
        if directory.exists():
            shutil.rmtree(directory)
        self._config_yaml = config_yaml
        self._writer = SummaryWriter(str(directory))
        self._writer.add_text("config", _code_block(config_yaml), global_step=0)
        for record in history:
            self._add(record, written)
        self._writer.flush()

    def log(self, record: dict[str, Any]) -> None:
        self._add(record)
        # Flushed at each record (every log_every steps): a killed run's file holds what metrics.jsonl holds.
        self._writer.flush()

    def close(self, final_metrics: dict[str, Any] | None) -> None:
        if self._writer is None:
            return
        if final_metrics is not None:
            from torch.utils.tensorboard.summary import hparams

            metrics = {f"final/{key}": float(value) for key, value in final_metrics.items() if _is_number(value)}
            for summary in hparams(hyperparameters(self._config_yaml), metrics):
                self._writer.file_writer.add_summary(summary, self._last_step)
            for tag, value in metrics.items():
                self._writer.add_scalar(tag, value, self._last_step)
        self._writer.close()
        self._writer = None

    def _add(self, record: dict[str, Any], written: dict[tuple[str, int], float] | None = None) -> None:
        step, split = int(record["step"]), record.get("split", "train")
        for key, value in record.items():
            if key not in ("step", "split") and _is_number(value):
                tag = f"{split}/{_metric_name(key, split)}"
                self._writer.add_scalar(tag, value, step, walltime=(written or {}).get((tag, step)))
        self._last_step = max(self._last_step, step)


def _wall_times(directory: Path) -> dict[tuple[str, int], float]:
    """When each point (tag, step) of the event files in `directory` was written (a torn last record is left out)."""
    from tensorboard.backend.event_processing.event_file_loader import LegacyEventFileLoader

    times: dict[tuple[str, int], float] = {}
    for path in sorted(directory.glob("events.out.tfevents.*")):
        for event in LegacyEventFileLoader(str(path)).Load():
            for value in event.summary.value:
                times[(value.tag, event.step)] = event.wall_time
    return times


def hyperparameters(config_yaml: str) -> dict[str, bool | int | float | str]:
    """The config's settings by dotted key, as the HParams view takes them: lists as JSON text, nulls left out."""
    flat: dict[str, bool | int | float | str] = {}

    def visit(value: Any, key: str) -> None:
        if isinstance(value, dict):
            for name, inner in value.items():
                visit(inner, f"{key}.{name}" if key else str(name))
        elif isinstance(value, (bool, int, float, str)):
            flat[key] = value
        elif value is not None:
            flat[key] = json.dumps(value)

    visit(yaml.safe_load(config_yaml) or {}, "")
    return flat


def _metric_name(key: str, split: str) -> str:
    """`val_f1` of a validation record is validation/f1, `test_f1` of a test record test/f1."""
    return key.removeprefix("val_") if split == "validation" else key.removeprefix(f"{split}_")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _code_block(text: str) -> str:
    """TensorBoard renders text as Markdown: indented, the YAML shows as it is."""
    return "\n".join(f"    {line}" for line in text.splitlines())
