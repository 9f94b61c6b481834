"""`seqlm finetune`: setup() → fit() → save(), read top to bottom, for every task.

The config's `task:` names a task in `seqlm.tasks`, which supplies what differs: how its
records are read and checked, encoded and batched, its head and objective, and its validation
metrics. A pretrained model (any HF-format dir: a `seqlm pretrain` run's model/, or a hub id)
gets the task's freshly initialised head and is trained by the same loop as pretraining.
Validation runs every `eval_every` steps (default: every epoch) and at the end; each
improvement of `early_stopping.metric` saves the model to best/, and `patience` evaluations
without one end training. The test file, when given, is scored with best/.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import torch

from seqlm import tasks
from seqlm.config.finetune import FinetuneConfig
from seqlm.config.loading import to_yaml
from seqlm.console import Console
from seqlm.data.batch import Batch
from seqlm.errors import ConfigError
from seqlm.models.fine_tuning import freeze, load_saved, load_with_head
from seqlm.models.loading import remote_code_warning
from seqlm.models.lora import adapters_for_run, is_adapter_dir
from seqlm.reporting.build import report_at_end_of_run
from seqlm.runtime.allocator import release_large_buffers
from seqlm.runtime.device import Precision, resolve_precision, seed_everything, select_device, speed_up
from seqlm.runtime.distributed import SINGLE, Cluster, joined, on_main
from seqlm.tasks.task import SupervisedBatches, Task
from seqlm.training.batch_shards import shard_batch
from seqlm.training.best import BestTracker
from seqlm.training.checkpoint import is_sharded, save_model
from seqlm.training.checkpointer import Checkpointer
from seqlm.training.loop import LoopHooks, LoopPlan, train
from seqlm.training.objective import Objective
from seqlm.training.optim import build_optimizer, build_scheduler
from seqlm.training.parallel import ParallelModel, global_batch_line, parallelize
from seqlm.training.run_dir import RunDir
from seqlm.training.session import agreed_stop, begin, load_run_state, log_record, open_run, short, stopped
from seqlm.training.signals import graceful_stop
from seqlm.training.state import LoopState


@dataclass
class FinetuneRun:
    config: FinetuneConfig
    console: Console
    run_dir: RunDir
    task: Task
    splits: dict[str, Any]
    names: list[str]
    tokenizer: Any
    parallel: ParallelModel
    objective: Objective
    batches: SupervisedBatches
    validation: list[Batch]
    plan: LoopPlan
    state: LoopState
    best: BestTracker
    precision: Precision
    checkpointer: Checkpointer
    new_weights: list[str]  # initialised by this run, not the pretrained model: saved so a resume can freeze the same


def run(config: FinetuneConfig, console: Console) -> dict[str, Any]:
    # Batches vary in shape: big buffers go back to the OS instead of fragmenting the heap (seqlm.runtime.allocator).
    release_large_buffers()
    with ExitStack() as held:  # the process group and the run dir's lock, from setup() until the run ends
        cluster = held.enter_context(joined(config.distributed.timeout_s, config.device))
        finetune = setup(config, console, held, cluster)
        validation_metrics = fit(finetune)
        return save(finetune, validation_metrics)


def padding_resolved(config: FinetuneConfig, precision: Precision) -> FinetuneConfig:
    """`config` with training.pad_to_multiple_of "auto" made a number: 16 under autocast, where oneDNN (CPU) keeps
    kernels and scratch buffers per matmul shape, so a run's distinct batch widths cost memory (the benchmark's
    length-grouped fine-tuning peaked 0.5 GB higher with every width) and kernel builds; 1 in fp32."""
    if config.training.pad_to_multiple_of != "auto":
        return config
    multiple = 1 if precision.name == "fp32" else 16
    return config.model_copy(update={"training": config.training.model_copy(update={"pad_to_multiple_of": multiple})})


def setup(config: FinetuneConfig, console: Console, held: ExitStack, cluster: Cluster = SINGLE) -> FinetuneRun:
    training = config.training
    task = tasks.get(config.task)
    supervised = task.finetuning
    modes = supervised.metric_modes
    if training.early_stopping.metric is not None and training.early_stopping.metric not in modes:
        raise ConfigError(
            f"training.early_stopping.metric: {training.early_stopping.metric!r} is not a validation metric; use one of {', '.join(modes)}"
        )
    splits, names = supervised.load(config.data)
    selectable = supervised.selectable(names)
    metric = training.early_stopping.metric or selectable[0]
    if metric not in selectable:
        raise ConfigError(
            f"training.early_stopping.metric: {metric!r} is not reported for this data's labels "
            f"(e.g. entity f1 needs IOB tags); use one of {', '.join(selectable)}"
        )
    device = cluster.device_for(select_device(config.device))
    precision = Precision(device, resolve_precision(training.precision, device))
    run_dir = RunDir(config.output_dir, training.report_to)
    checkpoint = open_run(run_dir, config, console, held, cluster)
    seed_everything(training.seed)  # the new head's initialisation, then dropout (a resume restores the RNG)

    if config.trust_remote_code:
        console.warn(remote_code_warning(config.model))
    # A sharded checkpoint's weights are loaded into the shards by begin(), a LoRA checkpoint's adapters after
    # attach_lora: start from the model as at first.
    resumes_weights = checkpoint is not None and not is_sharded(checkpoint) and not is_adapter_dir(checkpoint)
    source = checkpoint if resumes_weights else config.model
    if supervised.load_model is not None:
        model, tokenizer, new_weights = supervised.load_model(source, config)
    else:
        model, tokenizer, new_weights = load_with_head(
            str(source), task.head, names, training.max_length, config.trust_remote_code
        )
    if checkpoint is not None:  # weights the checkpoint has were new at the start: `freeze: body` still trains them
        new_weights = load_run_state(checkpoint)["new_weights"]
    elif len(new_weights) == sum(1 for _ in model.parameters()):  # built from scratch: nothing to warn about
        console.info(f"{config.model}: every weight newly initialised (a model built from scratch)")
    elif new_weights:
        shown = ", ".join(new_weights[:6]) + (f" (+{len(new_weights) - 6} more)" if len(new_weights) > 6 else "")
        console.warn(f"{config.model}: newly initialised weights, trained from scratch here: {shown}")
    adapters = adapters_for_run(model, training.lora, new_weights, str(config.model), checkpoint, console.info)
    trainable, total = freeze(model, training.freeze, new_weights)
    total = adapters.total if adapters is not None else total  # the model's own: not the adapters, nor the head's trained copy
    model.to(device)

    # Batches are drawn whole, as one process would draw them; each rank trains on its rows (shard_batch).
    batches = supervised.batches(splits, names, tokenizer, padding_resolved(config, precision), cluster.world_size, console.info)
    max_steps = training.max_steps or max(1, round(training.epochs * batches.batches_per_epoch / training.grad_accum))
    plan = LoopPlan(
        max_steps=max_steps,
        grad_accum=training.grad_accum,
        grad_clip=config.optim.grad_clip,
        log_every=training.log_every,
        eval_every=training.eval_every or batches.steps_per_epoch,
        checkpoint_every=training.checkpoint_every,
        on_nan=training.on_nan,
    )
    speed_up(model, training.compile, training.fast_dropout, device, max_steps)
    distributed = config.distributed
    # fast_loss: an objective's fused loss where it has one for this model (seq2seq on T5 or a decoder-only model), else the reference.
    parallel = parallelize(
        model, task.objective, True, cluster, distributed.strategy, device, distributed.checkpoint == "sharded", adapters
    )
    parallel.seed_dropout(training.seed)
    optimizer = build_optimizer(parallel.module, config.optim, device)
    scaler = torch.amp.GradScaler(device.type) if precision.needs_grad_scaler else None
    state = LoopState(optimizer, build_scheduler(optimizer, max_steps, config.optim), scaler)
    best = BestTracker(metric, modes[metric], training.early_stopping.patience)
    run_state = begin(run_dir, config, state, checkpoint, console, parallel, max_steps)
    if checkpoint is not None:
        best.load_state_dict(run_state["best"])
    counts = ", ".join(f"{name} {len(examples)}" for name, examples in splits.items())
    console.info(
        f"finetune {task.name}: {model.config.model_type} from {config.model}, "
        + (f"{len(names)} labels, " if names else "")
        + f"{trainable:,} of {total:,} parameters trained ({'lora, ' if adapters is not None else ''}freeze: {training.freeze}), "
        f"{device.type}/{precision.name}; examples: {counts}; "
        f"{global_batch_line(training.batch_size, training.grad_accum, cluster, parallel.strategy)} examples per step "
        f"(optim.lr as given: not rescaled), {max_steps} steps ({max_steps / batches.steps_per_epoch:.3g} epochs), "
        f"validation every {plan.eval_every}"
    )
    checkpointer = Checkpointer(
        run_dir, parallel, tokenizer, to_yaml(config), training.keep_last, best.metric, best.mode, checkpoint, console.info
    )
    return FinetuneRun(
        config, console, run_dir, task, splits, names, tokenizer, parallel, task.objective,
        batches, batches.evaluation("validation"), plan, state, best, precision, checkpointer, new_weights,
    )  # fmt: skip


def fit(finetune: FinetuneRun) -> dict[str, float]:
    progress = finetune.console.progress("finetune", total=finetune.plan.max_steps, unit="steps")
    cluster = finetune.parallel.cluster
    with graceful_stop() as stop_request, progress as bar:
        hooks = LoopHooks(
            log=lambda record: log_record(
                finetune.run_dir, finetune.console, record, finetune.plan.max_steps, finetune.parallel.cluster
            ),
            evaluate=lambda state: validate_and_keep_best(finetune, state),
            checkpoint=lambda state, validation: finetune.checkpointer.save(
                state, validation, run_state={"best": finetune.best.state_dict(), "new_weights": finetune.new_weights}
            ),
            progress=lambda state, fields: bar.update(state.step, **fields),
            should_stop=lambda state, metrics: finetune.best.exhausted,
            stop_signal=agreed_stop(cluster, stop_request),
            interrupted=lambda state, signum: stopped(finetune.run_dir, state, signum, cluster),
        )
        metrics = train(
            finetune.parallel,
            finetune.objective,
            lambda step, micro: shard_batch(finetune.batches.train(step, micro), cluster),
            finetune.state,
            finetune.plan,
            finetune.precision,
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
    parallel = finetune.parallel
    metrics = finetune.task.finetuning.score(
        parallel.module, finetune.objective, finetune.validation, finetune.names, finetune.precision,
        parallel.device, parallel.cluster, parallel.lockstep,
    )  # fmt: skip
    if finetune.best.update(state.step, metrics):  # the same on every rank: the metrics are
        model, run_dir = parallel.saveable(), finetune.run_dir
        on_main(parallel.cluster, lambda: save_model(run_dir.best_dir, model, finetune.tokenizer))
        if parallel.adapters is not None:  # training.lora: best/ holds the adapters merged, best-adapter/ them alone
            adapter = parallel.saveable(for_checkpoint=True)
            on_main(parallel.cluster, lambda: save_model(run_dir.best_adapter_dir, adapter, finetune.tokenizer))
    return metrics


def save(finetune: FinetuneRun, validation_metrics: dict[str, float]) -> dict[str, Any]:
    """model/ (and best/ when no validation result was a number), the test scores with best/, the test
    record, metrics.json and, last, the FINISHED marker."""
    run_dir, best, state, parallel = finetune.run_dir, finetune.best, finetune.state, finetune.parallel
    model = parallel.saveable()  # every rank: under fsdp the full weights are gathered

    adapter = parallel.saveable(for_checkpoint=True) if parallel.adapters is not None else None

    def write_models() -> None:
        save_model(run_dir.model_dir, model, finetune.tokenizer)
        if adapter is not None:  # training.lora: model/ holds the adapters merged, adapter/ them alone
            save_model(run_dir.adapter_dir, adapter, finetune.tokenizer)
        if best.step is None:  # no validation result was a number (a diverged run): best/ is the final model
            finetune.console.warn(f"validation {best.metric} was never a number; best/ holds the final model")
            save_model(run_dir.best_dir, model, finetune.tokenizer)

    on_main(parallel.cluster, write_models)
    metrics: dict[str, Any] = {
        "task": finetune.task.name,
        "n_labels": len(finetune.names),
        "steps": state.step,
        "skipped_steps": state.skipped_steps,
        "epochs": round(state.step * finetune.plan.grad_accum / finetune.batches.batches_per_epoch, 3),
        "stopped_early": state.step < finetune.plan.max_steps,
        "train_time_s": round(state.train_seconds, 3),
        **{f"val_{key}": value for key, value in validation_metrics.items()},
        "best_step": best.step if best.step is not None else state.step,
        **{f"best_val_{key}": value for key, value in (best.metrics or validation_metrics).items()},
    }
    if "test" in finetune.splits:  # every rank scores its share with best/, as written by rank 0 above
        best_model = load_saved(run_dir.best_dir, finetune.task.head).to(parallel.device)
        test = finetune.task.finetuning.score(
            best_model, finetune.objective, finetune.batches.evaluation("test"), finetune.names, finetune.precision,
            parallel.device, parallel.cluster,
        )  # fmt: skip
        metrics.update({f"test_{key}": value for key, value in test.items()})
    on_main(parallel.cluster, lambda: _write_metrics(finetune, metrics))
    return metrics


def _write_metrics(finetune: FinetuneRun, metrics: dict[str, Any]) -> None:
    run_dir = finetune.run_dir
    if "test_loss" in metrics:
        run_dir.log(
            {
                "step": metrics["best_step"],
                "split": "test",
                **{key: value for key, value in metrics.items() if key.startswith("test_")},
            }
        )
    run_dir.write_metrics(metrics)
    run_dir.finish(finetune.state.step)  # last: --resume then has nothing to do
    names = dict.fromkeys((finetune.best.metric, *finetune.task.finetuning.shown_metrics))  # the one that picked best/ first
    keys = ["best_step"] + [f"{prefix}_{name}" for prefix in ("best_val", "test") for name in names]
    shown = "  ".join(f"{key} {short(metrics[key])}" for key in keys if key in metrics)
    finetune.console.info(
        f"{shown}; model saved to {run_dir.model_dir}, best to {run_dir.best_dir}; metrics in {run_dir.path / 'metrics.json'}"
    )
    if finetune.config.report:
        report_at_end_of_run(run_dir.path, finetune.console)
