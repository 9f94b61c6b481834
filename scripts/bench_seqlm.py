"""The seqlm side of `scripts/bench.py`: the command lines it runs and the figures it reads back.

seqlm is benchmarked as a user runs it: `python -m seqlm COMMAND CONFIG --set ...` in its own
process, with the config's defaults (e.g. `precision: auto`). Its figures come from what the
run itself writes, never from timing the whole process (which would count Python's start-up
and the model save):

- pretrain / finetune: `metrics.jsonl`. Each training record closes a log window of
  `log_every` steps and holds `tokens_per_s` (tokens of the window / its wall time) and the
  running `tokens_seen`, so a window's duration is its tokens / `tokens_per_s`. The bench sets
  `log_every` to the warm-up length, so the first window is exactly the warm-up, and
  validation only at the end, so no window holds an evaluation. `steady_windows` sums the
  windows after the warm-up, up to `last_step` (a longer run is measured on the same steps).
- tokenize: the `encoding X MB/s` of its closing log line (the encode-and-write phase only,
  after the tokenizer is loaded).
- predict: run as this file's `predict` task (below), which gives seqlm the pipeline's warm-up;
  the labels (classification), generated texts (seq2seq) or answers (extractive QA) come from its output file.

    python scripts/bench_seqlm.py predict --config PREDICT.yaml --result OUT.json [--set key=value ...]

runs, in one process, `seqlm.commands.predict.run` (what `seqlm predict` runs) twice: first on the input's first `batch_size` inputs (a warm-up, as
bench_hf's `classifier(texts[:batch_size])`; its output goes to a temporary file), then on the
whole input. OUT.json holds the second run's own summary: `value` = its `inputs_per_s`
(inputs / seconds of the prediction loop, after the model is loaded, before the output is
written), `unit`, `seconds`, `n_inputs`, `warmup_inputs`, `precision` (what `precision` resolved to).

    python scripts/bench_seqlm.py evaluate --config EVALUATE.yaml --result OUT.json [--set key=value ...]

runs `seqlm.commands.evaluate.run` on one batch (a warm-up, written to a temporary directory), then on the
whole split; OUT.json: `value` = scored tokens / seconds of the second run (loading the model and the split
included: a small share for the benchmark's GPT-2), `unit`, `seconds`, `tokens`, `perplexity`, `precision`. The process's peak RSS covers both
runs (the warm-up's model is dropped before the second loads its own). Exit 0 after writing OUT.json; any
error is a traceback and a non-zero exit. `save_initial_model` writes the fine-tuning start
(see bench_tasks.prepare) with seqlm's own model builder.
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_ENCODING_RATE = re.compile(r"encoding ([0-9.]+) MB/s")


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


def steady_windows(metrics_jsonl: Path, warmup_steps: int, last_step: int | None = None) -> Windows:
    """Sum the training log windows after step `warmup_steps` up to `last_step` (None: the last one).

    ValueError when there is no such window, or when window boundaries do not line up with the
    warm-up (a window must end exactly at `warmup_steps`) or with `last_step`.
    """
    records = [json.loads(line) for line in metrics_jsonl.read_text(encoding="utf-8").splitlines() if line.strip()]
    training = [r for r in records if "split" not in r and "tokens_per_s" in r]
    for boundary, what in ((warmup_steps, "the end of the warm-up"), (last_step, "the last measured step")):
        if boundary is not None and not any(r["step"] == boundary for r in training):
            raise ValueError(f"{metrics_jsonl}: no log record at {what} (step {boundary})")
    steps = tokens = 0
    seconds = 0.0
    previous_step, previous_tokens = 0, 0
    for record in training:
        window_tokens = record["tokens_seen"] - previous_tokens
        if last_step is not None and record["step"] > last_step:
            break
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


def predicted_labels(predictions_jsonl: Path) -> list[str]:
    """The top label of every record of a `seqlm predict` output file, in input order."""
    lines = predictions_jsonl.read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["label"] for line in lines if line.strip()]


def predicted_outputs(predictions_jsonl: Path) -> list[str]:
    """The generated text of every record of a seq2seq `seqlm predict` output file, in input order."""
    lines = predictions_jsonl.read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["output"] for line in lines if line.strip()]


def predicted_answers(predictions_jsonl: Path) -> list[list]:
    """[answer, start, end] of every record of an extractive QA `seqlm predict` output file, in input order."""
    lines = predictions_jsonl.read_text(encoding="utf-8").splitlines()
    return [[record["answer"], record["start"], record["end"]] for record in map(json.loads, filter(str.strip, lines))]


def save_initial_model(config: Any, directory: Path) -> None:
    """The model `seqlm pretrain CONFIG` starts from (seeded, built, untrained), saved as its model/ would be."""
    from transformers import AutoTokenizer

    from seqlm.models.build import build_model
    from seqlm.models.loading import quiet_transformers
    from seqlm.runtime.device import seed_everything
    from seqlm.training.checkpoint import save_model

    tokenizer = AutoTokenizer.from_pretrained(str(config.data))  # as TokenDataset.load_tokenizer
    seed_everything(config.training.seed)
    with quiet_transformers():
        save_model(directory, build_model(config.model, config.objective, config.nsp, tokenizer), tokenizer)


def predict(config_path: Path, overrides: list[str]) -> dict[str, Any]:
    """seqlm predict's own summary of a run after a one-batch warm-up run (see the module docstring)."""
    from seqlm.commands import predict as predict_run
    from seqlm.config.inference import PredictConfig
    from seqlm.config.loading import load_config
    from seqlm.console import Console

    config = load_config(PredictConfig, config_path, overrides)
    console = Console()
    lines = [line for line in Path(config.input).read_text(encoding="utf-8").splitlines(keepends=True) if line.strip()]
    header = 1 if config.input_format == "csv" or (config.input_format == "auto" and config.input.endswith(".csv")) else 0
    with tempfile.TemporaryDirectory() as temporary:
        warm_input, warm_output = Path(temporary) / f"warmup{Path(config.input).suffix}", Path(temporary) / "warmup.jsonl"
        warm_input.write_text("".join(lines[: header + config.batch_size]), encoding="utf-8")
        warm = [f"input={warm_input}", f"output={warm_output}", "output_format=jsonl"]
        predict_run.run(load_config(PredictConfig, config_path, [*overrides, *warm]), console)
    summary = predict_run.run(config, console)
    return {"value": summary["inputs_per_s"], "unit": "examples/s", "seconds": summary["seconds"], "n_inputs": summary["n_inputs"],
            "warmup_inputs": min(config.batch_size, len(lines) - header), "precision": summary["precision"]}


def evaluate(config_path: Path, overrides: list[str]) -> dict[str, Any]:
    """tokens/s of `seqlm evaluate` (a causal LM's perplexity) after a one-batch warm-up run (see the module docstring)."""
    import time

    from seqlm.commands import evaluate as evaluate_run
    from seqlm.config.inference import EvaluateConfig
    from seqlm.config.loading import load_config
    from seqlm.console import Console

    console = Console()
    with tempfile.TemporaryDirectory() as temporary:
        evaluate_run.run(load_config(EvaluateConfig, config_path, [*overrides, "max_batches=1", f"output_dir={temporary}"]), console)
    started = time.perf_counter()
    metrics = evaluate_run.run(load_config(EvaluateConfig, config_path, overrides), console)
    seconds = time.perf_counter() - started
    return {"value": metrics["tokens"] / seconds, "unit": "tokens/s", "seconds": seconds, "tokens": metrics["tokens"],
            "perplexity": metrics["perplexity"], "precision": metrics["inference_precision"]}


def main() -> None:
    parser = argparse.ArgumentParser(description="seqlm predict or evaluate after a one-batch warm-up (see the module docstring)")
    parser.add_argument("task", choices=["predict", "evaluate"])
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="key.path=value, as seqlm's --set")
    parser.add_argument("--result", type=Path, required=True)
    args = parser.parse_args()
    result = (predict if args.task == "predict" else evaluate)(args.config, args.overrides)
    args.result.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
