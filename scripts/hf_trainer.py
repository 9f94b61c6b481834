"""The Hugging Face side's Trainer setup, for every reference script (bench_hf.py, hf_seq2seq.py, hf_extractive_qa.py): its
`TrainingArguments` from a seqlm config (one translation of seqlm's optimizer settings, so that both sides
train alike), the clock its throughput is read from, and the command line the bench's HF-side scripts share.

`optimizer_arguments(optim)`: the TrainingArguments keywords of seqlm's `optim:` section (AdamW betas, eps,
weight decay, warm-up, schedule with its floor, gradient clipping). `training_arguments(...)`: those, plus
batch size, accumulation, steps, seed and precision, with saving, evaluation, reporting and tqdm off; any
other keyword goes through, and `arguments_class` picks e.g. Seq2SeqTrainingArguments. `step_clock()`: a
TrainerCallback whose `ends` lists the wall time at the end of every optimizer step; `steady_rate(ends, warmup,
measure, units_per_step)` the rate over the `measure` steps after the first `warmup` (`steps_run` says which). transformers is
imported on call: a script that measures a process without it (bench_hf.py tokenize-raw) must not load it.
`run_task(description, tasks, *options)`: `SCRIPT TASK --config C [--set K=V ...] --result OUT.json [--warmup N]
[--measure N]` plus the script's own `options` (argparse `add_argument` (args, kwargs) pairs), as
`bench_core.Bench.script` calls it; runs `tasks[TASK](args)` and writes its result dict to OUT.json.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from seqlm.config.schema import OptimConfig

SCHEDULES = {"linear": "linear", "cosine": "cosine_with_min_lr", "constant": "constant_with_warmup"}


def optimizer_arguments(optim: OptimConfig) -> dict[str, Any]:
    """seqlm's optimizer settings as TrainingArguments keywords."""
    return {
        "learning_rate": optim.lr, "weight_decay": optim.weight_decay, "adam_beta1": optim.betas[0],
        "adam_beta2": optim.betas[1], "adam_epsilon": optim.eps, "warmup_steps": optim.warmup_steps,
        "lr_scheduler_type": SCHEDULES[optim.schedule],
        "lr_scheduler_kwargs": {"min_lr_rate": optim.min_lr_ratio} if optim.schedule == "cosine" else None,
        "max_grad_norm": optim.grad_clip or 0.0,
    }  # fmt: skip


def training_arguments(
    output_dir: Path, optim: OptimConfig, batch_size: int, grad_accum: int, max_steps: int, seed: int, bf16: bool,
    arguments_class: Any = None, **extra: Any,
) -> Any:
    """TrainingArguments (or `arguments_class`) with seqlm's settings (see the module docstring)."""
    if arguments_class is None:
        from transformers import TrainingArguments as arguments_class
    return arguments_class(
        output_dir=str(output_dir), per_device_train_batch_size=batch_size, gradient_accumulation_steps=grad_accum,
        max_steps=max_steps, bf16=bf16, seed=seed, save_strategy="no", eval_strategy="no", report_to="none", disable_tqdm=True,
        **{"use_cpu": True, "logging_steps": max(1, max_steps // 4), **optimizer_arguments(optim), **extra},
    )  # fmt: skip


def step_clock() -> Any:
    """A TrainerCallback whose `ends` lists the wall time at the end of every optimizer step."""
    from transformers import TrainerCallback

    class StepClock(TrainerCallback):
        def __init__(self) -> None:
            self.ends: list[float] = []

        def on_step_end(self, *args: Any, **kwargs: Any) -> None:
            self.ends.append(time.perf_counter())

    return StepClock()


def steady_rate(ends: list[float], warmup: int, measure: int | None, units_per_step: float) -> float:
    """Units per second over the `measure` steps (None: all) after the first `warmup`, from the step end times `ends`."""
    last = len(ends) if measure is None else warmup + measure
    if not 0 < warmup < last <= len(ends):
        raise SystemExit(f"{len(ends)} steps ran, need {warmup} warm-up steps and {measure or 'some'} more")
    return (last - warmup) * units_per_step / (ends[last - 1] - ends[warmup - 1])


def steps_run(clock: Any, args: argparse.Namespace) -> dict[str, int]:
    """The steps a `step_clock` saw, and how many of them `steady_rate(..., args.warmup, args.measure, ...)` measures."""
    return {"steps": len(clock.ends), "measured_steps": args.measure or len(clock.ends) - args.warmup}


def run_task(description: str, tasks: dict[str, Callable[[argparse.Namespace], dict[str, Any]]], *options: tuple[tuple, dict]) -> None:
    """The shared command line of the bench's HF-side scripts (see the module docstring)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("task", choices=sorted(tasks))
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="key.path=value, as seqlm's --set")
    parser.add_argument("--result", type=Path, required=True)
    parser.add_argument("--warmup", type=int, default=1, help="optimizer steps left out of the throughput")
    parser.add_argument("--measure", type=int, default=None, help="steps measured after the warm-up (default: the rest)")
    for names, settings in options:
        parser.add_argument(*names, **settings)
    args = parser.parse_args()
    args.result.parent.mkdir(parents=True, exist_ok=True)
    result = tasks[args.task](args)
    args.result.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
