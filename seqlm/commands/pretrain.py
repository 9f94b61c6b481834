"""`seqlm pretrain`: setup() → train() → save(), read top to bottom.

Causal LM (GPT-2 / Llama) or masked LM (BERT, optionally with next-sentence prediction),
from scratch or continued from an HF checkpoint, on packed blocks of a tokenized dataset.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from seqlm.config.loading import to_yaml
from seqlm.config.schema import PretrainConfig
from seqlm.console import Console
from seqlm.data.batch import Batch
from seqlm.data.pretrain_batches import PretrainBatches, objective_name
from seqlm.data.token_store import TokenDataset
from seqlm.errors import ConfigError
from seqlm.metrics.scoring import score_batches
from seqlm.models.build import build_model, head_for, load_pretrained, resolve_family
from seqlm.models.gguf_files import is_gguf
from seqlm.models.loading import max_positions, model_source, remote_code_warning
from seqlm.models.lora import adapters_for_run, is_adapter_dir
from seqlm.models.packaged import PACKAGED_MODELS
from seqlm.reporting.build import report_at_end_of_run
from seqlm.runtime.allocator import keep_freed_memory
from seqlm.runtime.device import Precision, resolve_precision, seed_everything, select_device, speed_up
from seqlm.runtime.distributed import SINGLE, Cluster, joined, on_main
from seqlm.tasks.objectives import OBJECTIVES
from seqlm.training.batch_shards import shard_batch
from seqlm.training.checkpoint import is_sharded, save_model
from seqlm.training.checkpointer import Checkpointer
from seqlm.training.loop import LoopHooks, LoopPlan, train
from seqlm.training.objective import Objective
from seqlm.training.optim import build_optimizer, build_scheduler
from seqlm.training.parallel import ParallelModel, SaveableModel, global_batch_line, parallelize
from seqlm.training.run_dir import RunDir
from seqlm.training.session import agreed_stop, begin, log_record, open_run, stopped
from seqlm.training.signals import graceful_stop
from seqlm.training.state import LoopState


@dataclass
class PretrainRun:
    config: PretrainConfig
    console: Console
    run_dir: RunDir
    tokenizer: Any
    parallel: ParallelModel
    objective: Objective
    batches: PretrainBatches
    validation: list[Batch]
    state: LoopState
    precision: Precision
    checkpointer: Checkpointer


def run(config: PretrainConfig, console: Console) -> dict[str, Any]:
    # Every step allocates the same large buffers (packed blocks: one shape), which glibc would
    # otherwise hand back to the OS and fault in again (seqlm.runtime.allocator; fine-tuning differs).
    keep_freed_memory()
    with ExitStack() as held:  # the process group and the run dir's lock, from setup() until the run ends
        cluster = held.enter_context(joined(config.distributed.timeout_s, config.device))
        pretrain = setup(config, console, held, cluster)
        validation_metrics = fit(pretrain)
        return save(pretrain, validation_metrics)


def setup(config: PretrainConfig, console: Console, held: ExitStack, cluster: Cluster = SINGLE) -> PretrainRun:
    training = config.training
    dataset = TokenDataset.open(config.data)
    tokenizer = dataset.load_tokenizer()
    device = cluster.device_for(select_device(config.device))
    precision = Precision(device, resolve_precision(training.precision, device))
    seed_everything(training.seed)

    source, trust = config.model.from_pretrained, config.model.trust_remote_code
    if source is not None and trust:
        console.warn(remote_code_warning(source))
    if source is not None and _has_tokenizer(source):
        from transformers import AutoTokenizer

        found = model_source(source)
        dataset.check_tokenizer(AutoTokenizer.from_pretrained(found.path, trust_remote_code=trust, **found.file_kwargs), source)
    run_dir = RunDir(config.output_dir, training.report_to)
    checkpoint = open_run(run_dir, config, console, held, cluster)
    # A sharded checkpoint's weights are loaded by begin(), a LoRA checkpoint's adapters by adapters_for_run.
    if checkpoint is None or is_sharded(checkpoint) or is_adapter_dir(checkpoint):
        model = build_model(config.model, config.objective, config.nsp, tokenizer)
    else:
        model = load_pretrained(str(checkpoint), head_for(config.objective, config.nsp), config.model.trust_remote_code)
    adapters = adapters_for_run(model, training.lora, [], str(source), checkpoint, console.info)
    model.to(device)
    positions = max_positions(model.config)
    if positions is not None and training.seq_len > positions:
        raise ConfigError(f"training.seq_len ({training.seq_len}) exceeds the model's {positions} positions; set it to {positions} or less")

    name = objective_name(config.objective, config.nsp)
    # Batches are drawn whole, as one process would draw them; each rank trains on its rows (shard_batch).
    global_batch = training.batch_size * cluster.world_size
    batches = PretrainBatches(
        name,
        dataset.split("train"),
        dataset.split("validation"),
        tokenizer,
        seq_len=training.seq_len,
        batch_size=global_batch,
        seed=training.seed,
        mlm_probability=config.mlm_probability,
        whole_word_mask=config.whole_word_mask,
    )
    speed_up(model, training.compile, training.fast_dropout, device, training.max_steps)
    n_params = adapters.total if adapters is not None else sum(p.numel() for p in model.parameters())
    distributed = config.distributed
    parallel = parallelize(
        model, OBJECTIVES[name], training.fast_loss, cluster, distributed.strategy, device, distributed.checkpoint == "sharded", adapters
    )
    parallel.seed_dropout(training.seed)
    optimizer = build_optimizer(parallel.module, config.optim, device)
    scaler = torch.amp.GradScaler(device.type) if precision.needs_grad_scaler else None
    state = LoopState(optimizer, build_scheduler(optimizer, training.max_steps, config.optim), scaler)

    begin(run_dir, config, state, checkpoint, console, parallel, training.max_steps)
    origin = config.model.from_pretrained or "scratch"
    family = resolve_family(config.model, config.objective) if origin == "scratch" else model.config.model_type
    console.info(
        f"pretrain {name}: {family} ({origin}), {n_params / 1e6:.2f}M parameters, {device.type}/{precision.name}, "
        f"{training.max_steps} steps; {global_batch_line(training.batch_size, training.grad_accum, cluster, parallel.strategy)} "
        f"sequences of {training.seq_len} tokens per step (optim.lr as given: not rescaled)"
    )
    validation = batches.validation(training.eval_batches)
    checkpointer = Checkpointer(
        run_dir, parallel, tokenizer, to_yaml(config), training.keep_last, "loss", "min", checkpoint, console.info
    )
    return PretrainRun(
        config, console, run_dir, tokenizer, parallel, OBJECTIVES[name], batches, validation, state, precision, checkpointer
    )


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
    cluster = pretrain.parallel.cluster
    with graceful_stop() as stop_request, pretrain.console.progress("pretrain", total=training.max_steps, unit="steps") as bar:
        hooks = LoopHooks(
            log=lambda record: log_record(pretrain.run_dir, pretrain.console, record, pretrain.config.training.max_steps, pretrain.parallel.cluster),
            evaluate=lambda state: validate(pretrain),
            checkpoint=lambda state, validation: pretrain.checkpointer.save(state, validation, run_state={}),
            progress=lambda state, fields: bar.update(state.step, **fields),
            stop_signal=agreed_stop(cluster, stop_request),
            interrupted=lambda state, signum: stopped(pretrain.run_dir, state, signum, cluster),
        )
        return train(
            pretrain.parallel,
            pretrain.objective,
            lambda step, micro: shard_batch(pretrain.batches.train(step, micro), cluster),
            pretrain.state,
            plan,
            pretrain.precision,
            hooks,
        )


def validate(pretrain: PretrainRun) -> dict[str, float]:
    parallel = pretrain.parallel
    return score_batches(
        parallel.module, pretrain.objective, pretrain.validation, pretrain.precision, parallel.device, parallel.cluster, parallel.lockstep
    )


def save(pretrain: PretrainRun, validation_metrics: dict[str, float]) -> dict[str, Any]:
    """model/, metrics.json and, last, the FINISHED marker."""
    model = pretrain.parallel.saveable()  # every rank: under fsdp the full weights are gathered
    if pretrain.parallel.adapters is not None:  # training.lora: model/ holds the adapters merged, adapter/ them alone
        adapter = pretrain.parallel.saveable(for_checkpoint=True)
        on_main(pretrain.parallel.cluster, lambda: save_model(pretrain.run_dir.adapter_dir, adapter, pretrain.tokenizer))
    on_main(pretrain.parallel.cluster, lambda: _write_results(pretrain, model, validation_metrics))
    return _metrics(pretrain, validation_metrics)


def _write_results(pretrain: PretrainRun, model: SaveableModel, validation_metrics: dict[str, float]) -> None:
    save_model(pretrain.run_dir.model_dir, model, pretrain.tokenizer)
    pretrain.run_dir.write_metrics(_metrics(pretrain, validation_metrics))
    pretrain.run_dir.finish(pretrain.state.step)  # last: --resume then has nothing to do
    pretrain.console.info(f"model saved to {pretrain.run_dir.model_dir}; metrics in {pretrain.run_dir.path / 'metrics.json'}")
    if pretrain.config.report:
        report_at_end_of_run(pretrain.run_dir.path, pretrain.console)


def _metrics(pretrain: PretrainRun, validation_metrics: dict[str, float]) -> dict[str, Any]:
    return {
        "objective": pretrain.objective.name,
        "steps": pretrain.state.step,
        "tokens_seen": pretrain.state.tokens_seen,
        "skipped_steps": pretrain.state.skipped_steps,
        "train_time_s": round(pretrain.state.train_seconds, 3),
        **{f"val_{key}": value for key, value in validation_metrics.items()},
    }


def _has_tokenizer(model: str) -> bool:
    """A local model dir with tokenizer files, a .gguf file or a packaged model (a hub id is checked by its vocabulary size only)."""
    return (Path(model) / "tokenizer_config.json").is_file() or is_gguf(Path(model)) or model in PACKAGED_MODELS
