"""The one training loop: accumulation equals a bigger batch; loop state round-trips."""

from __future__ import annotations

import copy

import pytest
import torch
import transformers

from seqlm.config.schema import OptimConfig
from seqlm.data.batch import Batch
from seqlm.data.masking import IGNORE_INDEX
from seqlm.runtime.device import Precision
from seqlm.runtime.distributed import SINGLE
from seqlm.tasks.objectives import OBJECTIVES
from seqlm.training.loop import LoopHooks, LoopPlan, train
from seqlm.training.optim import build_scheduler, lr_multiplier, parameter_groups
from seqlm.training.parallel import ParallelModel, parallelize
from seqlm.training.state import LoopState

VOCAB = 50
CPU = torch.device("cpu")



def _single(model: torch.nn.Module, objective) -> ParallelModel:
    """The model as one process trains it (no DDP/FSDP wrapper)."""
    return parallelize(model, objective, True, SINGLE, "ddp", CPU)

def _tiny(kind: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if kind == "clm":
        config = transformers.GPT2Config(vocab_size=VOCAB, n_positions=16, n_embd=32, n_layer=2, n_head=2, resid_pdrop=0, embd_pdrop=0, attn_pdrop=0)
        return transformers.GPT2LMHeadModel(config)
    config = transformers.BertConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=16, hidden_dropout_prob=0, attention_probs_dropout_prob=0,
    )
    return transformers.BertForMaskedLM(config)


def _batches(kind: str) -> list[Batch]:
    """Two micro-batches; for mlm with very different numbers of targets, so a mean of means would differ."""
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(5, VOCAB, (8, 16), generator=generator)
    if kind == "clm":
        return [Batch({"input_ids": ids[:4]}, {"labels": ids[:4]}), Batch({"input_ids": ids[4:]}, {"labels": ids[4:]})]
    labels = torch.full_like(ids, IGNORE_INDEX)
    labels[:4, :2] = ids[:4, :2]  # 8 targets in the first micro-batch
    labels[4:, :12] = ids[4:, :12]  # 48 in the second
    return [Batch({"input_ids": ids[:4]}, {"labels": labels[:4]}), Batch({"input_ids": ids[4:]}, {"labels": labels[4:]})]


def _one_step(kind: str, micro_batches: list[Batch]) -> dict[str, torch.Tensor]:
    model = _tiny(kind)
    # Plain SGD: the update is proportional to the gradient, so any normalisation error shows
    # (Adam's first step is ~lr·sign(g) and would hide a wrongly scaled gradient).
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    state = LoopState(optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0))
    plan = LoopPlan(max_steps=1, grad_accum=len(micro_batches), grad_clip=None, log_every=1, eval_every=1, checkpoint_every=None)
    hooks = LoopHooks(log=lambda record: None, evaluate=lambda state: {}, checkpoint=lambda state, validation: None)
    train(_single(model, OBJECTIVES[kind]), OBJECTIVES[kind], lambda step, micro: micro_batches[micro], state, plan, Precision(CPU, "fp32"), hooks)
    return {name: param.detach().clone() for name, param in model.named_parameters()}


def _merged(micro_batches: list[Batch]) -> Batch:
    inputs = {key: torch.cat([b.inputs[key] for b in micro_batches]) for key in micro_batches[0].inputs}
    targets = {key: torch.cat([b.targets[key] for b in micro_batches]) for key in micro_batches[0].targets}
    return Batch(inputs, targets)


@pytest.mark.parametrize("kind", ["clm", "mlm"])
def test_accumulating_k_micro_batches_equals_one_batch_k_times_larger(kind: str) -> None:
    micro_batches = _batches(kind)
    accumulated = _one_step(kind, micro_batches)
    big_batch = _one_step(kind, [_merged(micro_batches)])
    untouched = {name: param.detach() for name, param in _tiny(kind).named_parameters()}
    for name, value in accumulated.items():
        assert not torch.equal(value, untouched[name]) or name.endswith("position_ids"), f"{name} did not move"
        torch.testing.assert_close(value, big_batch[name], rtol=1e-5, atol=1e-6, msg=f"{name} differs")


def test_loop_state_round_trips_through_state_dict() -> None:
    model = _tiny("clm")
    config = OptimConfig(lr=1e-3, warmup_steps=2)
    optimizer = torch.optim.AdamW(parameter_groups(model, 0.1), lr=config.lr)
    state = LoopState(optimizer, build_scheduler(optimizer, 10, config))
    micro = _batches("clm")[:1]
    plan = LoopPlan(max_steps=3, grad_accum=1, grad_clip=1.0, log_every=1, eval_every=10, checkpoint_every=None)
    hooks = LoopHooks(log=lambda record: None, evaluate=lambda state: {}, checkpoint=lambda state, validation: None)
    train(_single(model, OBJECTIVES["clm"]), OBJECTIVES["clm"], lambda step, m: micro[0], state, plan, Precision(CPU, "fp32"), hooks)
    saved = copy.deepcopy(state.state_dict())
    expected_random = torch.rand(3)

    fresh_optimizer = torch.optim.AdamW(parameter_groups(model, 0.1), lr=config.lr)
    restored = LoopState(fresh_optimizer, build_scheduler(fresh_optimizer, 10, config))
    restored.load_state_dict(saved)
    assert restored.step == 3 and restored.tokens_seen == state.tokens_seen
    assert restored.scheduler.get_last_lr() == state.scheduler.get_last_lr()
    assert torch.equal(torch.rand(3), expected_random), "torch RNG state not restored"
    for group, fresh_group in zip(state.optimizer.state_dict()["state"].values(), restored.optimizer.state_dict()["state"].values()):
        torch.testing.assert_close(group["exp_avg"], fresh_group["exp_avg"])


def test_weight_decay_skips_biases_norms_and_embeddings() -> None:
    model = _tiny("clm")
    decay, no_decay = parameter_groups(model, 0.1)
    decayed = {id(p) for p in decay["params"]}
    for name, param in model.named_parameters():
        expect_decay = param.ndim >= 2 and "wte" not in name and "wpe" not in name
        assert (id(param) in decayed) == expect_decay, name
    assert no_decay["weight_decay"] == 0.0


@pytest.mark.parametrize("schedule", ["cosine", "linear", "constant"])
def test_schedule_warms_up_then_decays_to_min_ratio(schedule: str) -> None:
    config = OptimConfig(warmup_steps=10, schedule=schedule, min_lr_ratio=0.1)
    values = [lr_multiplier(step, 100, config) for step in range(101)]
    assert values[0] == pytest.approx(0.1) and values[9] == pytest.approx(1.0)
    assert all(a <= b + 1e-12 for a, b in zip(values[:10], values[1:10]))
    if schedule == "constant":
        assert values[100] == 1.0
    else:
        assert values[100] == pytest.approx(0.1)
        assert all(a >= b - 1e-12 for a, b in zip(values[10:], values[11:]))


def _poisoned_objective(bad_steps: set[int]):
    """clm, but the loss of the given (0-based) steps is NaN."""
    clm = OBJECTIVES["clm"]
    calls = {"step": 0}

    def loss_sums(outputs, batch):
        sums = clm.loss_sums(outputs, batch)
        step = calls["step"]
        calls["step"] += 1
        return {k: v * float("nan") for k, v in sums.items()} if step in bad_steps else sums

    from seqlm.training.objective import Objective

    return Objective("clm", clm.target_counts, loss_sums, clm.score)


def _run_with_nan(on_nan: str) -> tuple[LoopState, torch.nn.Module]:
    """Four steps whose third loss is NaN."""
    model = _tiny("clm")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    state = LoopState(optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0))
    plan = LoopPlan(max_steps=4, grad_accum=1, grad_clip=1.0, log_every=1, eval_every=10, checkpoint_every=None, on_nan=on_nan)
    hooks = LoopHooks(log=lambda record: None, evaluate=lambda state: {}, checkpoint=lambda state, validation: None)
    batch = _batches("clm")[0]
    objective = _poisoned_objective({2})
    train(_single(model, objective), objective, lambda step, micro: batch, state, plan, Precision(CPU, "fp32"), hooks)
    return state, model


def test_a_nan_loss_stops_training_with_an_error_naming_the_step() -> None:
    from seqlm.errors import TrainingDiverged

    with pytest.raises(TrainingDiverged, match=r"^step 3: the loss or a gradient is NaN/inf"):
        _run_with_nan("stop")


def test_on_nan_skip_skips_the_batch_counts_it_and_goes_on() -> None:
    state, model = _run_with_nan("skip")
    assert state.step == 4 and state.skipped_steps == 1
    assert all(torch.isfinite(p).all() for p in model.parameters()), "no NaN reached the weights"
    assert state.state_dict()["skipped_steps"] == 1
