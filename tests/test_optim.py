"""seqlm.training.optim: the AdamW seqlm builds (parameter groups, the fused kernel) and the schedules."""

from __future__ import annotations

import pytest
import torch

from seqlm.config.schema import OptimConfig
from seqlm.training.optim import build_optimizer, build_scheduler, lr_multiplier


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Embedding(50, 16), torch.nn.Linear(16, 16), torch.nn.LayerNorm(16), torch.nn.Linear(16, 50))


def test_matrices_decay_and_embeddings_biases_and_norms_do_not() -> None:
    model = _model()
    decay, no_decay = build_optimizer(model, OptimConfig(weight_decay=0.1), torch.device("cpu")).param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert {id(p) for p in decay["params"]} == {id(model[1].weight), id(model[3].weight)}
    expected = [model[0].weight, model[1].bias, model[2].weight, model[2].bias, model[3].bias]
    assert {id(p) for p in no_decay["params"]} == {id(p) for p in expected}


def test_the_cpu_optimizer_is_fused_and_steps_like_the_reference_adamw() -> None:
    """The fused CPU kernel (faster than foreach) updates as torch's reference loop, within float rounding."""
    config = OptimConfig(lr=1e-2, weight_decay=0.1, warmup_steps=3)
    fused_model, reference_model = _model(), _model()
    fused = build_optimizer(fused_model, config, torch.device("cpu"))
    assert fused.defaults["fused"] is True
    groups = [{**group, "params": [dict(reference_model.named_parameters())[n] for n, p in fused_model.named_parameters()
                                   if any(p is q for q in group["params"])]} for group in fused.param_groups]  # fmt: skip
    reference = torch.optim.AdamW(groups, foreach=False, fused=False)
    schedulers = [build_scheduler(optimizer, 20, config) for optimizer in (fused, reference)]
    ids = torch.randint(0, 50, (8, 5))
    for _ in range(20):
        for model, optimizer, scheduler in zip((fused_model, reference_model), (fused, reference), schedulers, strict=True):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(ids).flatten(0, 1), ids.flatten()).backward()
            optimizer.step()
            scheduler.step()
    for (name, got), want in zip(fused_model.named_parameters(), reference_model.parameters(), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize(("step", "expected"), [(0, 0.25), (3, 1.0), (4, 1.0), (12, 0.0)])
def test_linear_warmup_then_linear_decay(step: int, expected: float) -> None:
    config = OptimConfig(warmup_steps=4, schedule="linear", min_lr_ratio=0.0)
    assert lr_multiplier(step, 12, config) == pytest.approx(expected)
