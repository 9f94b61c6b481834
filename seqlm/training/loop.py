"""The one training loop: every objective, pretraining and fine-tuning alike, one process or many.

What is trained for is decided elsewhere: the model's head, the batches (`next_batch`) and
the `Objective` (summed losses and their target counts). The loop does the rest: gradient
accumulation normalised by the step's target count, mixed precision, clipping, the
optimizer and schedule, and calls back for logging, validation and checkpoints.

Under torchrun each rank gets its share of the step's batches; the target counts are summed
over all ranks before the forward pass, so the step's loss is the one a single process would
compute on the whole global batch (DDP/FSDP average the gradients over ranks: the loss is
scaled by the number of ranks to undo that).
"""

from __future__ import annotations

import math
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import torch

from seqlm.data.batch import Batch
from seqlm.errors import TrainingDiverged
from seqlm.runtime.device import Precision
from seqlm.training.objective import Objective
from seqlm.training.state import LoopState

if TYPE_CHECKING:
    from seqlm.training.parallel import ParallelModel


@dataclass(frozen=True)
class LoopPlan:
    max_steps: int
    grad_accum: int
    grad_clip: float | None
    log_every: int
    eval_every: int
    checkpoint_every: int | None
    on_nan: Literal["stop", "skip"] = "stop"


@dataclass
class LoopHooks:
    """Callbacks; each gets the state after the optimizer step it concerns."""

    log: Callable[[dict[str, Any]], None]
    evaluate: Callable[[LoopState], dict[str, float]]
    # Gets this step's validation result, or None when the step had no validation.
    checkpoint: Callable[[LoopState, dict[str, float] | None], None]
    progress: Callable[[LoopState, dict[str, float]], None] = field(default=lambda state, fields: None)
    # Early stopping: called with each validation result; True ends training after this step.
    should_stop: Callable[[LoopState, dict[str, float]], bool] = field(default=lambda state, metrics: False)
    # A stop signal received (SIGTERM/SIGINT), checked after every step: checkpoint, then `interrupted`.
    stop_signal: Callable[[], signal.Signals | None] = field(default=lambda: None)
    interrupted: Callable[[LoopState, signal.Signals], None] = field(default=lambda state, signum: None)


def train(
    parallel: ParallelModel,
    objective: Objective,
    next_batch: Callable[[int, int], Batch],
    state: LoopState,
    plan: LoopPlan,
    precision: Precision,
    hooks: LoopHooks,
) -> dict[str, float]:
    """Train from `state.step` to `plan.max_steps` (or until `hooks.should_stop`); returns the last validation metrics.
    Sets `state.finished_max_steps` when training is over; a state restored so returns at once.

    `next_batch(step, micro)` is this rank's share of the step's micro-batch `micro`."""
    parallel.module.train()
    while state.step < plan.max_steps and state.finished_max_steps is None:
        iteration_started = step_started = time.perf_counter()
        step_loss, terms, tokens, grad_norm = _optimizer_step(parallel, objective, next_batch, state, plan, precision)
        step_seconds = time.perf_counter() - step_started
        state.step += 1
        state.tokens_seen += tokens
        state.window.add(step_loss, terms, tokens, grad_norm)
        lr = state.scheduler.get_last_lr()[0]
        hooks.progress(state, {"loss": step_loss, "lr": lr, "tok/s": round(tokens / max(step_seconds, 1e-9))})
        done = state.step == plan.max_steps
        if state.step % plan.log_every == 0 or done:
            hooks.log({"step": state.step, **state.window.flush(), "lr": lr, "tokens_seen": state.tokens_seen})
        stop = False
        step_eval: dict[str, float] | None = None
        if state.step % plan.eval_every == 0 or done:
            state.validation = step_eval = hooks.evaluate(state)
            hooks.log({"step": state.step, "split": "validation", **{f"val_{k}": v for k, v in step_eval.items()}})
            stop = hooks.should_stop(state, step_eval)
        if done or stop:
            state.finished_max_steps = plan.max_steps
        state.train_seconds += time.perf_counter() - iteration_started
        # The last step is checkpointed too (when checkpoints are on): a run killed while writing its
        # final outputs resumes from there and only writes them again.
        checkpointed = bool(plan.checkpoint_every) and (state.step % plan.checkpoint_every == 0 or done or stop)
        if checkpointed:
            hooks.checkpoint(state, step_eval)
        received = hooks.stop_signal()
        if received is not None and not (done or stop):
            if not checkpointed:
                hooks.checkpoint(state, step_eval)
            hooks.interrupted(state, received)
    return state.validation


def _optimizer_step(
    parallel: ParallelModel,
    objective: Objective,
    next_batch: Callable[[int, int], Batch],
    state: LoopState,
    plan: LoopPlan,
    precision: Precision,
) -> tuple[float, dict[str, float], int, float]:
    """The step's loss, its terms, the tokens it trained on and the global gradient norm (before clipping)."""
    cluster = parallel.cluster
    micro_batches = [next_batch(state.step, micro) for micro in range(plan.grad_accum)]
    # Normalise by the whole step's target counts (over all ranks) so that k micro-batches of b on
    # each of n ranks == one batch of n*k*b. Counts are ints (targets) or floats (summed class
    # weights); a term with none divides by 1.
    local: dict[str, float] = {}
    for batch in micro_batches:
        for term, count in objective.target_counts(batch).items():
            local[term] = local.get(term, 0) + count
    terms_in_order = sorted(local)
    totals = {term: count if count > 0 else 1 for term, count in zip(terms_in_order, cluster.sum([local[t] for t in terms_in_order]))}
    term_losses = dict.fromkeys(terms_in_order, 0.0)
    tokens = 0
    for index, batch in enumerate(micro_batches):
        mask = batch.inputs.get("attention_mask")
        tokens += int(mask.sum()) if mask is not None else batch.inputs["input_ids"].numel()
        batch = batch.to(parallel.device)
        with parallel.gradient_sync(index == len(micro_batches) - 1):
            with precision.autocast():
                sums = parallel.module(targets=batch.targets, **batch.inputs)
            loss = sum(sums[term] / totals[term] for term in sums) * cluster.world_size
            for term, value in sums.items():
                term_losses[term] += float(value.detach()) / totals[term]
            (state.scaler.scale(loss) if state.scaler is not None else loss).backward()
    *summed, tokens_summed = cluster.sum([*(term_losses[t] for t in terms_in_order), tokens])
    term_losses, tokens = dict(zip(terms_in_order, summed)), int(tokens_summed)
    step_loss = sum(term_losses.values())
    if state.scaler is not None:
        state.scaler.unscale_(state.optimizer)
    # Clipping at inf only measures the global gradient norm (over all shards under FSDP).
    norm = torch.nn.utils.clip_grad_norm_(parallel.module.parameters(), plan.grad_clip or math.inf)
    grad_norm = float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)
    # With fp16 the grad scaler itself skips steps whose gradients overflow.
    if not math.isfinite(step_loss) or (state.scaler is None and not math.isfinite(grad_norm)):
        state.optimizer.zero_grad(set_to_none=True)
        if plan.on_nan == "stop":
            raise TrainingDiverged(
                f"step {state.step + 1}: the loss or a gradient is NaN/inf (loss {step_loss}, gradient norm {grad_norm}); "
                "lower optim.lr or raise warmup_steps, or set training.on_nan: skip; the last complete checkpoint is intact"
            )
        state.skipped_steps += 1
        return step_loss, term_losses, tokens, grad_norm
    if state.scaler is not None:
        state.scaler.step(state.optimizer)
        state.scaler.update()
    else:
        state.optimizer.step()
    state.scheduler.step()
    state.optimizer.zero_grad(set_to_none=True)
    return step_loss, term_losses, tokens, grad_norm
