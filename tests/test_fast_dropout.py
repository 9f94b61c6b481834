"""seqlm.models.fast_dropout: the cheap dropout masks, the attention math they run in, and the model swap."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    BertConfig,
    BertForSequenceClassification,
    GPT2Config,
    GPT2LMHeadModel,
)
from typer.testing import CliRunner

from seqlm.cli import app
from seqlm.models.fast_dropout import (
    ATTENTION_NAME,
    FastDropout,
    attention_math,
    attention_with_fast_dropout,
    fast_dropout,
    keep_mask,
    use_fast_dropout,
)


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9, 1e-5])
def test_the_mask_keeps_the_rounded_probability_and_its_scale_keeps_the_expectation(p: float) -> None:
    torch.manual_seed(0)
    shape = torch.Size([64, 33, 101])  # an odd element count: the last 64-bit draw is partly used
    keep, scale = keep_mask(shape, p)
    kept = 1 - round(p * 65536) / 65536
    n = shape.numel()
    assert keep.shape == shape and keep.dtype == torch.bool
    assert abs(keep.float().mean().item() - kept) < 5 * math.sqrt(kept * (1 - kept) / n) + 1e-12
    assert scale == pytest.approx(1 / kept)


def test_the_masks_are_seeded_by_torch_and_differ_from_draw_to_draw() -> None:
    torch.manual_seed(3)
    first, _ = keep_mask(torch.Size([1000]), 0.3)
    second, _ = keep_mask(torch.Size([1000]), 0.3)
    torch.manual_seed(3)
    again, _ = keep_mask(torch.Size([1000]), 0.3)
    assert torch.equal(first, again) and not torch.equal(first, second)


def test_dropout_zeroes_the_dropped_scales_the_kept_and_its_gradient_follows_the_same_mask() -> None:
    inputs = torch.randn(32, 50, requires_grad=True)
    torch.manual_seed(1)
    output = fast_dropout(inputs, 0.25)
    torch.manual_seed(1)
    keep, scale = keep_mask(inputs.shape, 0.25)
    assert torch.equal(output, torch.where(keep, inputs * scale, 0.0))
    output.backward(torch.ones_like(output))
    assert torch.equal(inputs.grad, keep.float() * scale)


def test_p_zero_and_eval_mode_are_the_identity_and_p_is_kept_for_transformers() -> None:
    inputs = torch.randn(4, 5)
    assert fast_dropout(inputs, 0.0) is inputs
    module = FastDropout(0.2).eval()
    assert module(inputs) is inputs and module.p == 0.2
    assert not torch.equal(module.train()(inputs), inputs)


def test_off_the_cpu_it_is_torchs_dropout_and_draws_no_cpu_mask() -> None:
    torch.manual_seed(0)
    before = torch.get_rng_state()
    output = fast_dropout(torch.empty(3, 4, device="meta"), 0.1)
    assert output.device.type == "meta" and output.shape == (3, 4)
    assert torch.equal(torch.get_rng_state(), before)  # the CPU generator was not drawn from


@pytest.mark.parametrize("case", ["causal", "bool mask", "float mask", "no mask"])
def test_the_attention_math_equals_sdpa_in_values_and_gradients(case: str) -> None:
    torch.manual_seed(0)
    q, k, v = (torch.randn(3, 2, 9, 8, requires_grad=True) for _ in range(3))
    mask = None
    if case == "bool mask":
        mask = torch.rand(3, 1, 9, 9) > 0.4
        mask[..., 0] = True  # every query sees a key, as with real padding masks
    elif case == "float mask":
        mask = torch.randn(3, 1, 9, 9)
    ours = attention_math(q, k, v, mask, case == "causal", 0.3, 0.0)
    theirs = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=case == "causal", scale=0.3)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    grads = torch.autograd.grad(ours.sum(), (q, k, v))
    expected = torch.autograd.grad(theirs.sum(), (q, k, v))
    for got, want in zip(grads, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_the_attention_function_applies_dropout_to_the_probabilities_with_the_cheap_mask() -> None:
    torch.manual_seed(0)
    module = torch.nn.Module()
    q, k, v = (torch.randn(2, 4, 16, 8) for _ in range(3))
    torch.manual_seed(5)
    output, weights = attention_with_fast_dropout(module, q, k, v, None, dropout=0.2, scaling=0.25, is_causal=True)
    torch.manual_seed(5)
    expected = attention_math(q, k, v, None, True, 0.25, 0.2).transpose(1, 2)
    assert weights is None and output.shape == (2, 16, 4, 8)
    assert torch.equal(output, expected)
    # Without dropout it is transformers' SDPA attention.
    plain, _ = attention_with_fast_dropout(module, q, k, v, None, dropout=0.0, scaling=0.25, is_causal=True)
    sdpa = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=0.25).transpose(1, 2)
    torch.testing.assert_close(plain, sdpa)


def _tiny_models() -> list[torch.nn.Module]:
    torch.manual_seed(0)
    gpt = GPT2LMHeadModel._from_config(
        GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=64, n_positions=32, bos_token_id=0, eos_token_id=0),
        attn_implementation="sdpa",
    )
    bert = BertForSequenceClassification._from_config(
        BertConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=2, intermediate_size=64, vocab_size=64,
                   max_position_embeddings=32, num_labels=3),  # fmt: skip
        attn_implementation="sdpa",
    )
    return [gpt, bert]


@pytest.mark.parametrize("index", [0, 1], ids=["gpt2", "bert-classifier"])
def test_a_swapped_model_predicts_as_before_trains_reproducibly_and_saves_a_plain_checkpoint(index: int, tmp_path: Path) -> None:
    model = _tiny_models()[index]
    reference = _tiny_models()[index]
    ids = torch.randint(1, 64, (3, 12))
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0  # padding: the attention gets a mask, not just causality
    assert use_fast_dropout(model) == sum(type(m) is torch.nn.Dropout for m in reference.modules()) > 0
    assert model.config._attn_implementation == ATTENTION_NAME

    model.eval(), reference.eval()
    torch.testing.assert_close(model(input_ids=ids, attention_mask=mask).logits, reference(input_ids=ids, attention_mask=mask).logits)

    model.train()
    losses = []
    for _ in range(2):
        torch.manual_seed(7)
        out = model(input_ids=ids, attention_mask=mask, labels=ids if index == 0 else torch.tensor([0, 1, 2]))
        losses.append(out.loss)
    assert torch.equal(losses[0], losses[1]) and torch.isfinite(losses[0])
    losses[0].backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)

    model.save_pretrained(tmp_path)
    assert ATTENTION_NAME not in json.dumps(json.loads((tmp_path / "config.json").read_text()))
    auto = (AutoModelForCausalLM, AutoModelForSequenceClassification)[index]
    loaded = auto.from_pretrained(tmp_path).eval()
    torch.testing.assert_close(loaded(input_ids=ids, attention_mask=mask).logits, reference(input_ids=ids, attention_mask=mask).logits)


@pytest.mark.parametrize("index", [0, 1], ids=["gpt2", "bert-classifier"])
def test_a_swapped_model_trains_under_cpu_bf16_autocast(index: int) -> None:
    """precision: auto picks bf16 autocast on CPUs with native bf16: the masks and the attention math take bf16 tensors."""
    model = _tiny_models()[index]
    use_fast_dropout(model)
    ids = torch.randint(1, 64, (3, 12))
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(input_ids=ids, attention_mask=mask, labels=ids if index == 0 else torch.tensor([0, 1, 2])).loss
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.slow
def test_pretraining_with_fast_dropout_learns_as_with_torch_dropout_and_repeats_itself(tmp_path: Path) -> None:
    runner = CliRunner()
    data = tmp_path / "data"
    result = runner.invoke(app, ["tokenize", "configs/tiny/gpt_tokenize.yaml", "--set", f"output_dir={data}",
                                 "--set", "corpus.max_documents=300", "-q"])  # fmt: skip
    assert result.exit_code == 0, result.output
    losses = {}
    for name, fast in (("fast", "true"), ("fast-again", "true"), ("torch", "false")):
        run = tmp_path / name
        args = ["pretrain", "configs/tiny/gpt_pretrain.yaml", "--set", f"data={data}", "--set", f"output_dir={run}",
                "--set", "training.max_steps=40", "--set", "training.log_every=5", "--set", "training.eval_every=40",
                "--set", "training.checkpoint_every=null", "--set", "model.dropout=0.1",
                "--set", f"training.fast_dropout={fast}", "--device", "cpu", "-q"]  # fmt: skip
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        losses[name] = [r["loss"] for r in records if "split" not in r]
        assert ATTENTION_NAME not in (run / "model" / "config.json").read_text()
    assert losses["fast"] == losses["fast-again"]  # seeded by torch's generator: a run repeats itself
    assert losses["fast"] != losses["torch"]  # another random stream
    assert losses["fast"][-1] < losses["fast"][0] - 1.0  # it learns...
    assert losses["fast"][-1] == pytest.approx(losses["torch"][-1], rel=0.05)  # ...as much as with nn.Dropout
