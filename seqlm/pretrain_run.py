"""`seqlm pretrain`: setup() → train() → save(), read top to bottom.

Causal LM (GPT-2 / Llama) or masked LM (BERT, optionally with next-sentence prediction),
from scratch or continued from an HF checkpoint, on packed blocks of a tokenized dataset.
"""

from __future__ import annotations

import shlex
import signal
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from seqlm.checkpoint import latest_checkpoint, load_trainer_state, save_checkpoint, save_model
from seqlm.config_loading import to_yaml
from seqlm.config_schema import PretrainConfig
from seqlm.console import Console
from seqlm.device import Precision, resolve_precision, seed_everything, select_device
from seqlm.errors import ConfigError, ExitCode, TrainingInterrupted
from seqlm.lm_scoring import score_batches
from seqlm.model_builder import build_model, head_for, load_pretrained, resolve_family
from seqlm.model_loading import max_positions
from seqlm.objectives import OBJECTIVES, Batch, Objective
from seqlm.optim import build_optimizer, build_scheduler
from seqlm.pretrain_batches import PretrainBatches, objective_name
from seqlm.resume import check_resumable
from seqlm.run_dir import RunDir
from seqlm.run_lock import run_lock
from seqlm.stop_signals import graceful_stop
from seqlm.token_store import TokenDataset
from seqlm.train_loop import LoopHooks, LoopPlan, LoopState, train


@dataclass
class PretrainRun:
    config: PretrainConfig
    console: Console
    run_dir: RunDir
    tokenizer: Any
    model: torch.nn.Module
    objective: Objective
    batches: PretrainBatches
    validation: list[Batch]
    state: LoopState
    precision: Precision
    device: torch.device


def run(config: PretrainConfig, console: Console) -> dict[str, Any]:
    with ExitStack() as held:  # the run dir's lock, from setup() until the run ends
        pretrain = setup(config, console, held)
        started = time.perf_counter()
        validation_metrics = fit(pretrain)
        return save(pretrain, validation_metrics, time.perf_counter() - started)


def setup(config: PretrainConfig, console: Console, held: ExitStack) -> PretrainRun:
    training = config.training
    dataset = TokenDataset.open(config.data)
    tokenizer = dataset.load_tokenizer()
    device = select_device(config.device)
    precision = Precision(device, resolve_precision(training.precision, device))
    seed_everything(training.seed)

    if config.model.from_pretrained is not None and _has_tokenizer(config.model.from_pretrained):
        from transformers import AutoTokenizer

        dataset.check_tokenizer(AutoTokenizer.from_pretrained(config.model.from_pretrained), config.model.from_pretrained)
    run_dir = RunDir(config.output_dir)
    held.enter_context(run_lock(run_dir.path, console.warn))
    checkpoint = _resume_checkpoint(config, run_dir, console)
    if checkpoint is None:
        model = build_model(config.model, config.objective, config.nsp, tokenizer).to(device)
    else:
        model = load_pretrained(str(checkpoint), head_for(config.objective, config.nsp)).to(device)
    positions = max_positions(model.config)
    if positions is not None and training.seq_len > positions:
        raise ConfigError(f"training.seq_len ({training.seq_len}) exceeds the model's {positions} positions")

    name = objective_name(config.objective, config.nsp)
    batches = PretrainBatches(
        name,
        dataset.split("train"),
        dataset.split("validation"),
        tokenizer,
        seq_len=training.seq_len,
        batch_size=training.batch_size,
        seed=training.seed,
        mlm_probability=config.mlm_probability,
        whole_word_mask=config.whole_word_mask,
    )
    optimizer = build_optimizer(model, config.optim, device)
    scaler = torch.amp.GradScaler(device.type) if precision.needs_grad_scaler else None
    state = LoopState(optimizer, build_scheduler(optimizer, training.max_steps, config.optim), scaler)

    if checkpoint is None:
        run_dir.start(to_yaml(config))
    else:
        state.load_state_dict(load_trainer_state(checkpoint))
        run_dir.resume(to_yaml(config), state.step)
        console.info(
            f"resumed from {checkpoint}: step {state.step}, {state.tokens_seen:,} tokens seen; restored the weights, "
            "optimizer, LR schedule, grad scaler and RNG states (python, numpy, torch); data continues at that step"
        )
    n_params = sum(p.numel() for p in model.parameters())
    origin = config.model.from_pretrained or "scratch"
    family = resolve_family(config.model, config.objective) if origin == "scratch" else model.config.model_type
    console.info(
        f"pretrain {name}: {family} ({origin}), {n_params / 1e6:.2f}M parameters, {device.type}/{precision.name}, "
        f"{training.batch_size}x{training.grad_accum}x{training.seq_len} tokens per step, {training.max_steps} steps"
    )
    validation = batches.validation(training.eval_batches)
    return PretrainRun(config, console, run_dir, tokenizer, model, OBJECTIVES[name], batches, validation, state, precision, device)


def fit(pretrain: PretrainRun) -> dict[str, float]:
    training = pretrain.config.training
    plan = LoopPlan(
        max_steps=training.max_steps,
        grad_accum=training.grad_accum,
        grad_clip=pretrain.config.optim.grad_clip,
        log_every=training.log_every,
        eval_every=training.eval_every,
        checkpoint_every=training.checkpoint_every,
        on_nan=training.on_nan,
    )
    with graceful_stop() as stop_request, pretrain.console.progress("pretrain", total=training.max_steps, unit="steps") as bar:
        hooks = LoopHooks(
            log=lambda record: _log(pretrain, record),
            evaluate=lambda state: validate(pretrain),
            checkpoint=lambda state: save_checkpoint(
                pretrain.run_dir.checkpoint_dir(state.step), pretrain.model, pretrain.tokenizer, state, to_yaml(pretrain.config)
            ),
            progress=lambda state, fields: bar.update(state.step, **fields),
            stop_signal=stop_request,
            interrupted=lambda state, signum: _interrupted(pretrain, state, signum),
        )
        return train(
            pretrain.model,
            pretrain.objective,
            pretrain.batches.train,
            pretrain.state,
            plan,
            pretrain.precision,
            pretrain.device,
            hooks,
        )


def validate(pretrain: PretrainRun) -> dict[str, float]:
    return score_batches(pretrain.model, pretrain.objective, pretrain.validation, pretrain.precision, pretrain.device)


def save(pretrain: PretrainRun, validation_metrics: dict[str, float], elapsed_s: float) -> dict[str, Any]:
    save_model(pretrain.run_dir.model_dir, pretrain.model, pretrain.tokenizer)
    metrics = {
        "objective": pretrain.objective.name,
        "steps": pretrain.state.step,
        "tokens_seen": pretrain.state.tokens_seen,
        "skipped_steps": pretrain.state.skipped_steps,
        "train_time_s": round(elapsed_s, 3),
        **{f"val_{key}": value for key, value in validation_metrics.items()},
    }
    pretrain.run_dir.write_metrics(metrics)
    pretrain.console.info(f"model saved to {pretrain.run_dir.model_dir}; metrics in {pretrain.run_dir.path / 'metrics.json'}")
    return metrics


def _interrupted(pretrain: PretrainRun, state: LoopState, signum: signal.Signals) -> None:
    """After the checkpoint of the step in progress: say how to continue, exit 130 (SIGINT) / 143 (SIGTERM)."""
    argv = ["seqlm", *sys.argv[1:]]
    command = shlex.join(argv if "--resume" in argv else [*argv, "--resume"])
    code = ExitCode.TERMINATED if signum == signal.SIGTERM else ExitCode.INTERRUPTED
    raise TrainingInterrupted(
        f"{signum.name} at step {state.step}: checkpoint {pretrain.run_dir.checkpoint_dir(state.step)} is complete; "
        f"resume with: {command}",
        code,
    )


def _resume_checkpoint(config: PretrainConfig, run_dir: RunDir, console: Console) -> Path | None:
    """The checkpoint to continue from (`resume: auto|always`), after checking the config still matches."""
    if config.resume == "never":
        return None
    checkpoint = latest_checkpoint(run_dir.checkpoints_dir, console.warn)
    if checkpoint is None:
        if config.resume == "always":
            raise ConfigError(f"{run_dir.path}: no complete checkpoint to resume from; start the run without --resume")
        console.info(f"{run_dir.path}: no complete checkpoint yet; starting a new run (resume: auto)")
        return None
    saved = yaml.safe_load((checkpoint / "config.yaml").read_text(encoding="utf-8"))
    for change in check_resumable(saved, config.model_dump(mode="json"), str(checkpoint)):
        console.info(f"resume: accepted config change {change}")
    return checkpoint


def _has_tokenizer(model: str) -> bool:
    """A local model dir with tokenizer files (a hub id is checked by its vocabulary size only)."""
    return (Path(model) / "tokenizer_config.json").is_file()


def _log(pretrain: PretrainRun, record: dict[str, Any]) -> None:
    pretrain.run_dir.log(record)
    shown = "  ".join(f"{key} {_short(value)}" for key, value in record.items() if key not in ("step", "split"))
    prefix = "validation" if record.get("split") == "validation" else "step"
    pretrain.console.info(f"{prefix} {record['step']}/{pretrain.config.training.max_steps}  {shown}")


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return f"{value:,}" if isinstance(value, int) else str(value)
