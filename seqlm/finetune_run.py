"""`seqlm finetune` (task: classification): setup() → fit() → save(), read top to bottom.

A pretrained model (any HF-format dir: a `seqlm pretrain` run's model/, or a hub id) gets a
freshly initialised sequence-classification head (`AutoModelForSequenceClassification`:
[CLS] pooling for BERT, last-token pooling for GPT-style models) and is trained on labelled
examples by the same loop as pretraining, with the "classification" objective. Validation
(loss, accuracy, macro F1) runs every `eval_every` steps (default: every epoch) and at the
end; each improvement of `early_stopping.metric` saves the model to best/, and `patience`
evaluations without one end training. The test file, when given, is scored with best/.
"""

from __future__ import annotations

import shutil
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from seqlm.checkpoint import save_model
from seqlm.classification_batches import ClassificationBatches
from seqlm.config_loading import to_yaml
from seqlm.config_schema import FinetuneConfig
from seqlm.console import Console
from seqlm.device import Precision, resolve_precision, seed_everything, select_device
from seqlm.errors import ConfigError, DataError, first_line
from seqlm.labelled_data import LabelledExamples, load_splits
from seqlm.lm_scoring import ScoreAccumulator
from seqlm.metrics import load_metric
from seqlm.model_loading import max_positions, model_source, quiet_transformers
from seqlm.objectives import OBJECTIVES, Batch, Objective
from seqlm.optim import build_optimizer, build_scheduler
from seqlm.run_dir import RunDir
from seqlm.run_lock import run_lock
from seqlm.train_loop import LoopHooks, LoopPlan, LoopState, train

# The validation metrics and which way is better; early_stopping.metric must be one of them.
METRIC_MODES = {"loss": "min", "accuracy": "max", "macro_f1": "max"}


@dataclass
class BestTracker:
    """The best validation result so far and how many evaluations since it improved."""

    metric: str
    mode: str
    patience: int | None
    value: float | None = None
    step: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    evaluations_since: int = 0

    def update(self, step: int, metrics: dict[str, float]) -> bool:
        """Record one validation; True when it is a new best (ties keep the earlier model)."""
        value = metrics[self.metric]
        better = value == value and (self.value is None or (value > self.value if self.mode == "max" else value < self.value))
        if better:
            self.value, self.step, self.metrics, self.evaluations_since = value, step, dict(metrics), 0
        else:
            self.evaluations_since += 1
        return better

    @property
    def exhausted(self) -> bool:
        return self.patience is not None and self.evaluations_since >= self.patience


@dataclass
class FinetuneRun:
    config: FinetuneConfig
    console: Console
    run_dir: RunDir
    splits: dict[str, LabelledExamples]
    names: list[str]
    tokenizer: Any
    model: torch.nn.Module
    objective: Objective
    batches: ClassificationBatches
    validation: list[Batch]
    plan: LoopPlan
    state: LoopState
    best: BestTracker
    precision: Precision
    device: torch.device


def run(config: FinetuneConfig, console: Console) -> dict[str, Any]:
    with ExitStack() as held:  # the run dir's lock, from setup() until the run ends
        finetune = setup(config, console, held)
        started = time.perf_counter()
        validation_metrics = fit(finetune)
        return save(finetune, validation_metrics, time.perf_counter() - started)


def setup(config: FinetuneConfig, console: Console, held: ExitStack) -> FinetuneRun:
    training = config.training
    stopping = training.early_stopping
    if stopping.metric not in METRIC_MODES:
        raise ConfigError(
            f"training.early_stopping.metric: {stopping.metric!r} is not a validation metric; use one of {', '.join(METRIC_MODES)}"
        )
    splits, names = load_splits(config.data)
    device = select_device(config.device)
    precision = Precision(device, resolve_precision(training.precision, device))
    seed_everything(training.seed)  # the new head's initialisation, then dropout

    model, tokenizer, new_weights = load_classifier(config.model, names, training.max_length)
    if new_weights:
        shown = ", ".join(new_weights[:6]) + (f" (+{len(new_weights) - 6} more)" if len(new_weights) > 6 else "")
        console.warn(f"{config.model}: newly initialised weights, trained from scratch here: {shown}")
    trainable, total = freeze(model, training.freeze, new_weights)
    model.to(device)

    batches = ClassificationBatches(
        splits,
        names,
        tokenizer,
        max_length=training.max_length,
        batch_size=training.batch_size,
        grad_accum=training.grad_accum,
        seed=training.seed,
        group_by_length=training.group_by_length,
        class_weights=training.class_weights,
    )
    if batches.truncated("train"):
        console.info(
            f"{batches.truncated('train')} of {len(splits['train'])} training examples are longer than "
            f"training.max_length ({training.max_length} tokens) and are cut"
        )
    max_steps = training.max_steps or max(1, round(training.epochs * batches.batches_per_epoch / training.grad_accum))
    plan = LoopPlan(
        max_steps=max_steps,
        grad_accum=training.grad_accum,
        grad_clip=config.optim.grad_clip,
        log_every=training.log_every,
        eval_every=training.eval_every or batches.steps_per_epoch,
        checkpoint_every=None,
        on_nan=training.on_nan,
    )
    optimizer = build_optimizer(model, config.optim, device)
    scaler = torch.amp.GradScaler(device.type) if precision.needs_grad_scaler else None
    state = LoopState(optimizer, build_scheduler(optimizer, max_steps, config.optim), scaler)

    run_dir = RunDir(config.output_dir)
    held.enter_context(run_lock(run_dir.path, console.warn))
    run_dir.start(to_yaml(config))
    shutil.rmtree(run_dir.best_dir, ignore_errors=True)  # a previous run's best/ must not pass for this one's
    counts = ", ".join(f"{name} {len(examples)}" for name, examples in splits.items())
    console.info(
        f"finetune classification: {model.config.model_type} from {config.model}, {len(names)} labels, "
        f"{trainable:,} of {total:,} parameters trained (freeze: {training.freeze}), "
        f"{device.type}/{precision.name}; examples: {counts}; {training.batch_size}x{training.grad_accum} per step, "
        f"{max_steps} steps ({max_steps / batches.steps_per_epoch:.3g} epochs), validation every {plan.eval_every}"
    )
    best = BestTracker(stopping.metric, METRIC_MODES[stopping.metric], stopping.patience)
    return FinetuneRun(
        config, console, run_dir, splits, names, tokenizer, model, OBJECTIVES["classification"],
        batches, batches.evaluation("validation"), plan, state, best, precision, device,
    )  # fmt: skip


def fit(finetune: FinetuneRun) -> dict[str, float]:
    with finetune.console.progress("finetune", total=finetune.plan.max_steps, unit="steps") as bar:
        hooks = LoopHooks(
            log=lambda record: _log(finetune, record),
            evaluate=lambda state: validate_and_keep_best(finetune, state),
            checkpoint=lambda state: None,
            progress=lambda state, fields: bar.update(state.step, **fields),
            should_stop=lambda state, metrics: finetune.best.exhausted,
        )
        metrics = train(
            finetune.model,
            finetune.objective,
            finetune.batches.train,
            finetune.state,
            finetune.plan,
            finetune.precision,
            finetune.device,
            hooks,
        )
    if finetune.state.step < finetune.plan.max_steps:
        best = finetune.best
        since = f" on {best.value:.4g} (step {best.step})" if best.value is not None else ""
        finetune.console.info(
            f"early stopping at step {finetune.state.step}: validation {best.metric} has not improved{since} "
            f"for {best.evaluations_since} evaluations"
        )
    return metrics


def validate_and_keep_best(finetune: FinetuneRun, state: LoopState) -> dict[str, float]:
    metrics = score(finetune.model, finetune.objective, finetune.validation, finetune.names, finetune.precision, finetune.device)
    if finetune.best.update(state.step, metrics):
        save_model(finetune.run_dir.best_dir, finetune.model, finetune.tokenizer)
    return metrics


def save(finetune: FinetuneRun, validation_metrics: dict[str, float], elapsed_s: float) -> dict[str, Any]:
    run_dir, best, state = finetune.run_dir, finetune.best, finetune.state
    save_model(run_dir.model_dir, finetune.model, finetune.tokenizer)
    if best.step is None:  # no validation result was a number (a diverged run): best/ is the final model
        finetune.console.warn(f"validation {best.metric} was never a number; best/ holds the final model")
        save_model(run_dir.best_dir, finetune.model, finetune.tokenizer)
    metrics: dict[str, Any] = {
        "task": "classification",
        "n_labels": len(finetune.names),
        "steps": state.step,
        "skipped_steps": state.skipped_steps,
        "epochs": round(state.step * finetune.plan.grad_accum / finetune.batches.batches_per_epoch, 3),
        "stopped_early": state.step < finetune.plan.max_steps,
        "train_time_s": round(elapsed_s, 3),
        **{f"val_{key}": value for key, value in validation_metrics.items()},
        "best_step": best.step if best.step is not None else state.step,
        **{f"best_val_{key}": value for key, value in (best.metrics or validation_metrics).items()},
    }
    if "test" in finetune.splits:
        best_model = load_saved_classifier(run_dir.best_dir).to(finetune.device)
        test = score(
            best_model,
            finetune.objective,
            finetune.batches.evaluation("test"),
            finetune.names,
            finetune.precision,
            finetune.device,
        )
        metrics.update({f"test_{key}": value for key, value in test.items()})
        run_dir.log({"step": metrics["best_step"], "split": "test", **{f"test_{key}": value for key, value in test.items()}})
    run_dir.write_metrics(metrics)
    shown = "  ".join(
        f"{key} {_short(metrics[key])}" for key in ("best_step", "best_val_accuracy", "test_accuracy") if key in metrics
    )
    finetune.console.info(
        f"{shown}; model saved to {run_dir.model_dir}, best to {run_dir.best_dir}; metrics in {run_dir.path / 'metrics.json'}"
    )
    return metrics


# --------------------------------------------------------------------------- scoring


@torch.inference_mode()
def score(
    model: Any, objective: Objective, batches: list[Batch], names: list[str], precision: Precision, device: torch.device
) -> dict[str, float]:
    """loss (mean cross-entropy), accuracy and macro F1 of `model` over `batches` (eval mode, restored after)."""
    was_training = model.training
    model.eval()
    sums = ScoreAccumulator()
    report = load_metric("classification_report")
    try:
        for batch in batches:
            batch = batch.to(device)
            with precision.autocast():
                outputs = model(**batch.inputs)
            scores = objective.score(outputs, batch)
            sums.add(scores)
            report.add_batch(predictions=scores["predicted"].tolist(), references=scores["expected"].tolist())
    finally:
        model.train(was_training)
    loss = sums.compute()
    classes = report.compute(num_labels=len(names), label_names=names)
    return {"loss": loss["loss"], "accuracy": classes["accuracy"], "macro_f1": classes["macro_f1"], "examples": loss["tokens"]}


# --------------------------------------------------------------------------- the model


def load_classifier(model: str, names: list[str], max_length: int) -> tuple[Any, Any, list[str]]:
    """`model` with a sequence-classification head for `names`, its tokenizer (with a pad token),
    and the names of the weights that were newly initialised (the head, and any the checkpoint lacks)."""
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer
    from transformers.models.auto.modeling_auto import MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING

    source, load_kwargs = model_source(model)
    with quiet_transformers():
        try:
            config = AutoConfig.from_pretrained(
                source,
                num_labels=len(names),
                id2label=dict(enumerate(names)),
                label2id={name: i for i, name in enumerate(names)},
                problem_type="single_label_classification",
                trust_remote_code=False,
            )
        except (OSError, ValueError, KeyError) as exc:
            raise DataError(f"{model}: could not load the model config ({first_line(exc)}); check the path or hub id") from exc
        if type(config) not in MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING:
            raise DataError(f"{model}: a {type(config).__name__} model has no sequence-classification head in transformers")
        positions = max_positions(config)
        if positions is not None and max_length > positions:
            raise ConfigError(
                f"training.max_length ({max_length}) exceeds the model's {positions} positions; set it to {positions} or less"
            )
        try:
            tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=False)
        except (OSError, ValueError, KeyError) as exc:
            raise DataError(f"{model}: could not load the tokenizer ({first_line(exc)}); the dir needs tokenizer files") from exc
        if tokenizer.pad_token is None:
            if tokenizer.eos_token is None:
                raise DataError(f"{model}: the tokenizer has neither a pad nor an eos token; add a pad token to it")
            tokenizer.pad_token = tokenizer.eos_token  # padding is masked, and pooling skips it (pad_token_id below)
        config.pad_token_id = tokenizer.pad_token_id  # GPT-style last-token pooling finds the last non-pad token
        if positions is not None and tokenizer.model_max_length > positions:
            tokenizer.model_max_length = positions  # so `truncation=True` (e.g. in a pipeline) fits the model
        try:
            loaded, info = _from_pretrained(AutoModelForSequenceClassification, source, config, load_kwargs)
        except Exception as exc:  # safetensors, torch and hub errors share no base class; all mean "unloadable"
            raise DataError(
                f"{model}: could not load the weights ({first_line(exc)}); re-save the model with save_pretrained"
            ) from exc
    new_weights = sorted(set(info.get("missing_keys") or []) | {key[0] for key in info.get("mismatched_keys") or []})
    return loaded, tokenizer, new_weights


def load_saved_classifier(directory: Path) -> Any:
    """A classifier this command saved (best/ or model/), as plain transformers loads it."""
    from transformers import AutoModelForSequenceClassification

    with quiet_transformers():
        return AutoModelForSequenceClassification.from_pretrained(directory, dtype=torch.float32)


def freeze(model: Any, mode: str, new_weights: list[str]) -> tuple[int, int]:
    """Stop gradients per `training.freeze`; returns (trainable, total) parameter counts.

    embeddings: the base model's embeddings (BERT's embeddings block; else its nn.Embedding
    layers). body: every pretrained weight, so only the head — and any weight the checkpoint
    lacked, e.g. BERT's pooler after masked-LM pretraining — is trained.
    """
    if mode == "embeddings":
        base = model.base_model
        blocks = (
            [base.embeddings]
            if isinstance(getattr(base, "embeddings", None), torch.nn.Module)
            else [module for module in base.modules() if isinstance(module, torch.nn.Embedding)]
        )
        for block in blocks:
            block.requires_grad_(False)
    elif mode == "body":
        new = set(new_weights)
        body = {id(param) for param in model.base_model.parameters()}
        for name, param in model.named_parameters():
            param.requires_grad_(id(param) not in body or name in new)
    trainable = sum(param.numel() for param in model.parameters() if param.requires_grad)
    if trainable == 0:
        raise ConfigError(f"training.freeze {mode}: no parameter is left to train; use freeze: none or embeddings")
    return trainable, sum(param.numel() for param in model.parameters())


def _from_pretrained(auto_class: Any, source: str, config: Any, load_kwargs: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    kwargs = {
        "config": config,
        "dtype": torch.float32,
        "ignore_mismatched_sizes": True,
        "output_loading_info": True,
        "trust_remote_code": False,
        **load_kwargs,
    }
    try:
        return auto_class.from_pretrained(source, attn_implementation="sdpa", **kwargs)
    except ValueError as exc:
        if "sdpa" not in str(exc).lower() and "scaled_dot_product" not in str(exc).lower():
            raise
        return auto_class.from_pretrained(source, **kwargs)  # an architecture without SDPA support: its default


def _log(finetune: FinetuneRun, record: dict[str, Any]) -> None:
    finetune.run_dir.log(record)
    shown = "  ".join(f"{key} {_short(value)}" for key, value in record.items() if key not in ("step", "split"))
    prefix = "validation" if record.get("split") == "validation" else "step"
    finetune.console.info(f"{prefix} {record['step']}/{finetune.plan.max_steps}  {shown}")


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return f"{value:,}" if isinstance(value, int) else str(value)
