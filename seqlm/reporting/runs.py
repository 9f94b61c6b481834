"""Read what a run directory holds (`seqlm.training.run_dir` describes the layout) into plain arrays and dicts.

A run is a directory holding config.yaml and metrics.jsonl (`pretrain` / `finetune` write both at its start);
it can be reported once metrics.jsonl holds a record or metrics.json exists. Beside those the report uses,
when they are there: eval/metrics.json (`seqlm evaluate`'s default output: a confusion matrix and per-label
scores) and predictions.jsonl (`seqlm predict`: a sample of inputs and outputs). Anything else is a DataError
(exit 3) naming the directory and what to pass instead.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from seqlm.errors import DataError

# Record keys that are not curves: the step, the split's name, and running totals.
NOT_CURVES = frozenset({"step", "split", "tokens_seen"})
SAMPLE_RECORDS = 5  # predictions.jsonl records shown


@dataclass
class Run:
    """One run's data. `train[key]` and `validation[key]` are (steps, values) arrays, NaN where a record
    held null; `metrics` is metrics.json (empty while the run is going); `evaluation` eval/metrics.json."""

    path: Path
    label: str
    config: dict[str, Any]
    train: dict[str, tuple[np.ndarray, np.ndarray]]
    validation: dict[str, tuple[np.ndarray, np.ndarray]]
    test: dict[str, Any]
    metrics: dict[str, Any]
    evaluation: dict[str, Any] = field(default_factory=dict)
    samples: list[dict[str, Any]] = field(default_factory=list)
    finished: bool = False

    @property
    def task(self) -> str:
        return str(self.metrics.get("task") or self.config.get("task") or self.config.get("objective") or "")


def read_runs(paths: list[Path]) -> list[Run]:
    """Every run of `paths`, labelled by its directory name (its path where two names are equal)."""
    names = [Path(path).resolve().name for path in paths]
    return [read_run(Path(path), name if names.count(name) == 1 else str(path)) for path, name in zip(paths, names)]


def read_run(path: Path, label: str | None = None) -> Run:
    if not path.is_dir():
        what = "does not exist" if not path.exists() else "is a file"
        raise DataError(f"{path}: {what}; pass a run directory (the output_dir of seqlm pretrain or finetune)")
    log, config_file = path / "metrics.jsonl", path / "config.yaml"
    if not log.is_file() and not config_file.is_file():
        raise DataError(f"{path}: not a run directory (no config.yaml or metrics.jsonl); pass the output_dir of seqlm pretrain or finetune")
    records = _read_records(log) if log.is_file() else []
    metrics = _read_json(path / "metrics.json") or {}
    if not records and not metrics:
        raise DataError(f"{path}: no metrics yet (metrics.jsonl is empty or missing); report the run once it has logged a step")
    train, validation, test = _curves(records)
    evaluation = _read_json(path / "eval" / "metrics.json") or {}
    return Run(
        path=path, label=label or path.name, config=_read_config(config_file), train=train, validation=validation,
        test=test, metrics=metrics, evaluation=evaluation, samples=_read_samples(path / "predictions.jsonl"),
        finished=(path / "FINISHED").is_file(),
    )  # fmt: skip


def _read_records(log: Path) -> list[dict[str, Any]]:
    """metrics.jsonl's records; a torn last line (a run killed mid-write, or still writing) is left out."""
    try:
        lines = log.read_bytes().split(b"\n")
    except OSError as exc:
        raise DataError(f"{log}: cannot read ({exc.strerror}); make it readable") from exc
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as exc:
            if number == len(lines):  # no newline after it: being written, or torn
                break
            raise DataError(f"{log}:{number}: not a JSON object ({exc}); the file is damaged, fix or delete that line") from exc
        if isinstance(record, dict) and isinstance(record.get("step"), (int, float)):
            records.append(record)
    return records


def _curves(records: list[dict[str, Any]]) -> tuple[dict, dict, dict[str, Any]]:
    """Training records' and validation records' numeric keys as (steps, values) arrays; the last test record."""
    grouped: dict[str, dict[str, tuple[list[float], list[float]]]] = {"train": {}, "validation": {}}
    test: dict[str, Any] = {}
    for record in records:
        split = record.get("split", "train")
        if split == "test":
            test = record
            continue
        curves = grouped.get(split)
        if curves is None:
            continue
        step = float(record["step"])
        for key, value in record.items():
            if key in NOT_CURVES or not (value is None or isinstance(value, (int, float))) or isinstance(value, bool):
                continue
            steps, values = curves.setdefault(key, ([], []))
            steps.append(step)
            values.append(np.nan if value is None else float(value))
    arrays = {
        split: {key: (np.asarray(steps), np.asarray(values)) for key, (steps, values) in curves.items()}
        for split, curves in grouped.items()
    }
    return arrays["train"], arrays["validation"], test


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not readable JSON ({exc}); rerun the command that wrote it, or delete it") from exc
    return data if isinstance(data, dict) else None


def _read_config(path: Path) -> dict[str, Any]:
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, yaml.YAMLError) as exc:
        raise DataError(f"{path}: not readable YAML ({str(exc).splitlines()[0]}); restore the run's config.yaml") from exc
    return config if isinstance(config, dict) else {}


def _read_samples(path: Path) -> list[dict[str, Any]]:
    """The first records of predictions.jsonl (seqlm predict), when the run holds one; nothing when unreadable."""
    samples: list[dict[str, Any]] = []
    try:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                if len(samples) == SAMPLE_RECORDS:
                    break
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if isinstance(record, dict):
                    samples.append(record)
    except (OSError, UnicodeDecodeError):
        return []
    return samples


def flat_config(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"training.max_steps": 100, …}: nested sections as dotted keys, for comparing runs key by key."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            flat.update(flat_config(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
