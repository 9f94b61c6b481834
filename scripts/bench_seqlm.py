"""The seqlm side of `scripts/bench.py`: the command lines it runs and the figures it reads back.

seqlm is benchmarked as a user runs it: `python -m seqlm COMMAND CONFIG --set ...` in its own
process, with the config's defaults (e.g. `precision: auto`). Its figures come from what the
run itself writes, never from timing the whole process (which would count Python's start-up
and the model save):

- pretrain / finetune: `metrics.jsonl`. Each training record closes a log window of
  `log_every` steps and holds `tokens_per_s` (tokens of the window / its wall time) and the
  running `tokens_seen`, so a window's duration is its tokens / `tokens_per_s`. The bench sets
  `log_every` to the warm-up length, so the first window is exactly the warm-up, and
  validation only at the end, so no window holds an evaluation.
- tokenize: the `encoding X MB/s` of its closing log line (the encode-and-write phase only,
  after the tokenizer is loaded).
- predict: the `(X inputs/s)` of its closing log line (tokenization and forward passes,
  after the model is loaded), and the labels of its output file.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

_ENCODING_RATE = re.compile(r"encoding ([0-9.]+) MB/s")
_PREDICT_RATE = re.compile(r"predicted (\d+) inputs in ([0-9.]+)s \(([0-9.]+) inputs/s\)")


def command(python: str, name: str, config: Path, overrides: list[str]) -> list[str]:
    """The argv of `seqlm NAME CONFIG --set ...` run by `python` (the project's venv)."""
    argv = [python, "-m", "seqlm", name, str(config)]
    for assignment in overrides:
        argv += ["--set", assignment]
    return argv


@dataclass(frozen=True)
class Windows:
    """The training steps, tokens and seconds of the log windows after the warm-up."""

    steps: int
    tokens: int
    seconds: float

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds

    @property
    def steps_per_s(self) -> float:
        return self.steps / self.seconds


def steady_windows(metrics_jsonl: Path, warmup_steps: int) -> Windows:
    """Sum the training log windows that start after step `warmup_steps` (see the module docstring).

    ValueError when there is no such window, or when a window's boundaries do not line up with
    the warm-up (the first window must end exactly at `warmup_steps`).
    """
    records = [json.loads(line) for line in metrics_jsonl.read_text(encoding="utf-8").splitlines() if line.strip()]
    training = [r for r in records if "split" not in r and "tokens_per_s" in r]
    if not any(r["step"] == warmup_steps for r in training):
        raise ValueError(f"{metrics_jsonl}: no log record at the end of the warm-up (step {warmup_steps})")
    steps = tokens = 0
    seconds = 0.0
    previous_step, previous_tokens = 0, 0
    for record in training:
        window_tokens = record["tokens_seen"] - previous_tokens
        if record["step"] > warmup_steps:
            rate = record["tokens_per_s"]
            if not rate:
                raise ValueError(f"{metrics_jsonl}: step {record['step']}: no tokens_per_s")
            steps += record["step"] - previous_step
            tokens += window_tokens
            seconds += window_tokens / rate
        previous_step, previous_tokens = record["step"], record["tokens_seen"]
    if steps == 0:
        raise ValueError(f"{metrics_jsonl}: no log window after the {warmup_steps} warm-up steps")
    return Windows(steps, tokens, seconds)


def final_metrics(run_dir: Path) -> dict:
    """The run's `metrics.json` (final validation / test scores)."""
    return json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))


def encoding_mb_per_s(log: str) -> float:
    """The encoding rate `seqlm tokenize` reports on its last line."""
    found = _ENCODING_RATE.findall(log)
    if not found:
        raise ValueError("no 'encoding X MB/s' line in the seqlm tokenize log")
    return float(found[-1])


def predict_inputs_per_s(log: str) -> float:
    """The rate `seqlm predict` reports: inputs / seconds of its prediction loop."""
    found = _PREDICT_RATE.findall(log)
    if not found:
        raise ValueError("no 'predicted N inputs in Xs' line in the seqlm predict log")
    return float(found[-1][2])


def predicted_labels(predictions_jsonl: Path) -> list[str]:
    """The top label of every record of a `seqlm predict` output file, in input order."""
    lines = predictions_jsonl.read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["label"] for line in lines if line.strip()]
