"""The fast LM losses equal the reference (full logits through the HF head): value and every
parameter's gradient, for GPT-2, Llama, BERT MLM and BERT MLM+NSP and T5 (with label smoothing);
chunking changes nothing."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformers import (
    BertConfig,
    BertForMaskedLM,
    BertForPreTraining,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    T5Config,
    T5ForConditionalGeneration,
)

import seqlm.models.lm_head_loss as lm_head_loss
from seqlm.data.batch import Batch
from seqlm.data.masking import IGNORE_INDEX
from seqlm.models.lm_head_loss import causal_lm_loss_sums, linear_cross_entropy_sum, masked_lm_loss_sums
from seqlm.tasks.objectives import OBJECTIVES

VOCAB = 101


def _gradients(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: param.grad.clone() for name, param in model.named_parameters() if param.grad is not None}


def _compare(model: torch.nn.Module, reference, fast, rtol: float = 1e-5, atol: float = 1e-6) -> None:
    model.zero_grad()
    expected = reference()
    sum(expected.values()).backward()
    expected_grads = _gradients(model)
    model.zero_grad()
    got = fast()
    assert got is not None
    sum(got.values()).backward()
    got_grads = _gradients(model)
    assert expected.keys() == got.keys()
    for term in expected:
        torch.testing.assert_close(got[term], expected[term], rtol=rtol, atol=atol)
    assert expected_grads.keys() == got_grads.keys()
    for name in expected_grads:
        torch.testing.assert_close(got_grads[name], expected_grads[name], rtol=rtol * 10, atol=atol * 10, msg=name)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("rows_per_chunk", [1, 7, 1000])
def test_linear_cross_entropy_matches_full_logits(rows_per_chunk: int, smoothing: float, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lm_head_loss, "CHUNK_LOGITS", rows_per_chunk * VOCAB)
    monkeypatch.setattr(lm_head_loss, "ROW_MULTIPLE", 1 if rows_per_chunk < 1000 else 64)  # 64: 34 ignored rows appended
    torch.manual_seed(0)
    hidden = torch.randn(30, 16, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(VOCAB, 16, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, VOCAB, (30,))
    labels[[3, 4, 17]] = IGNORE_INDEX
    expected = F.cross_entropy(hidden @ weight.t(), labels, ignore_index=IGNORE_INDEX, reduction="sum", label_smoothing=smoothing)
    expected_grads = torch.autograd.grad(expected * 0.37, (hidden, weight))
    got = linear_cross_entropy_sum(hidden, weight, labels, smoothing)
    got_grads = torch.autograd.grad(got * 0.37, (hidden, weight))
    # The logits and softmax are computed in fp32 whatever the input dtype, as the reference objective does.
    torch.testing.assert_close(got.double(), expected, rtol=1e-6, atol=1e-5)
    for g, e in zip(got_grads, expected_grads):
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-6)


def _clm_batch(completion_only: bool) -> Batch:
    torch.manual_seed(1)
    ids = torch.randint(0, VOCAB, (3, 12))
    labels = ids.clone()
    if completion_only:  # prompts of different lengths out of the loss: the head runs at the other rows only
        for row, prompt in enumerate((4, 9, 2)):
            labels[row, :prompt] = IGNORE_INDEX
    return Batch({"input_ids": ids}, {"labels": labels})


@pytest.mark.parametrize("completion_only", [False, True])
@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_causal_lm_loss_matches_the_reference_objective(family: str, completion_only: bool) -> None:
    torch.manual_seed(0)
    if family == "gpt2":  # tied input/output embeddings: the head's gradient lands on the shared weight
        model = GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB, n_layer=2, n_embd=32, n_head=2, n_positions=16))
    else:
        model = LlamaForCausalLM(
            LlamaConfig(vocab_size=VOCAB, num_hidden_layers=2, hidden_size=32, intermediate_size=64, num_attention_heads=2,
                        num_key_value_heads=2, max_position_embeddings=16)
        )  # fmt: skip
    model.eval()  # no dropout: both paths see the same network
    batch = _clm_batch(completion_only)
    objective = OBJECTIVES["clm"]
    _compare(
        model,
        lambda: objective.loss_sums(model(**batch.inputs), batch),
        lambda: causal_lm_loss_sums(model, batch.inputs, batch.targets["labels"]),
    )


def _mlm_batch(nsp: bool) -> Batch:
    torch.manual_seed(2)
    ids = torch.randint(5, VOCAB, (4, 10))
    labels = torch.full_like(ids, IGNORE_INDEX)
    labels[:, [2, 5]] = ids[:, [2, 5]]
    ids[:, [2, 5]] = 4  # [MASK]
    targets = {"labels": labels}
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)}
    if nsp:
        targets["next_sentence_label"] = torch.tensor([0, 1, 1, 0])
    return Batch(inputs, targets)


@pytest.mark.parametrize("nsp", [False, True])
def test_masked_lm_loss_runs_the_head_only_at_masked_positions_with_the_same_result(nsp: bool) -> None:
    torch.manual_seed(0)
    config = BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                        max_position_embeddings=16)  # fmt: skip
    model = (BertForPreTraining if nsp else BertForMaskedLM)(config).eval()
    batch = _mlm_batch(nsp)
    objective = OBJECTIVES["mlm+nsp" if nsp else "mlm"]
    _compare(
        model,
        lambda: objective.loss_sums(model(**batch.inputs), batch),
        lambda: masked_lm_loss_sums(model, batch.inputs, batch.targets),
    )


def test_unsupported_architectures_fall_back_to_the_reference() -> None:
    from transformers import RobertaConfig, RobertaForMaskedLM

    model = RobertaForMaskedLM(RobertaConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                             intermediate_size=64, max_position_embeddings=20))  # fmt: skip
    batch = _mlm_batch(nsp=False)
    assert masked_lm_loss_sums(model, batch.inputs, batch.targets) is None
    assert causal_lm_loss_sums(model, batch.inputs, batch.targets["labels"]) is None


def test_under_bf16_autocast_it_matches_the_reference_within_bf16_tolerance() -> None:
    from seqlm.runtime.device import cpu_can_run_bf16

    if not cpu_can_run_bf16():
        pytest.skip("this CPU cannot run bf16 autocast")
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB, n_layer=2, n_embd=32, n_head=2, n_positions=16)).eval()
    batch = _clm_batch(completion_only=True)

    def under_autocast(compute):
        def run():
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return compute()

        return run

    _compare(
        model,
        under_autocast(lambda: OBJECTIVES["clm"].loss_sums(model(**batch.inputs), batch)),
        under_autocast(lambda: causal_lm_loss_sums(model, batch.inputs, batch.targets["labels"])),
        rtol=2e-2,
        atol=2e-2,
    )


@pytest.mark.parametrize("completion_only", [False, True])
def test_scoring_without_full_logits_equals_the_reference_score(completion_only: bool) -> None:
    """`Objective.fast_score` (evaluation: the head only at scored tokens, no gradients) = `score` on full logits."""
    torch.manual_seed(0)
    model = LlamaForCausalLM(
        LlamaConfig(vocab_size=VOCAB, num_hidden_layers=2, hidden_size=32, intermediate_size=64, num_attention_heads=2,
                    num_key_value_heads=2, max_position_embeddings=16)
    ).eval()  # fmt: skip
    batch = _clm_batch(completion_only)
    for name in ("clm", "seq2seq"):  # seq2seq: a decoder-only model's prompt + target rows
        objective = OBJECTIVES[name]
        with torch.inference_mode():
            fast, reference = objective.fast_score(model, batch), objective.score(model(**batch.inputs), batch)
        assert fast["tokens"] == reference["tokens"] > 0
        assert fast["nll"] == pytest.approx(reference["nll"], rel=1e-5)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_t5_loss_runs_the_head_only_at_labelled_positions_with_the_same_result(smoothing: float) -> None:
    """The seq2seq objective's fused T5 path (decoder inputs shifted from the labels, head and label-smoothed loss
    fused) = its reference on HF's logits, in value and every gradient; evaluation's fast score too."""
    torch.manual_seed(0)
    config = T5Config(vocab_size=VOCAB, d_model=32, d_kv=16, d_ff=64, num_layers=2, num_decoder_layers=2, num_heads=2,
                      decoder_start_token_id=0, pad_token_id=0, eos_token_id=1, dropout_rate=0.0)  # fmt: skip
    model = T5ForConditionalGeneration(config).eval()
    ids = torch.randint(2, VOCAB, (3, 9))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    labels = torch.randint(2, VOCAB, (3, 7))
    labels[0, 5:] = IGNORE_INDEX  # padding of a shorter target
    batch = Batch({"input_ids": ids, "attention_mask": mask, "labels": labels}, {"label_smoothing": torch.full((3,), smoothing)})
    objective = OBJECTIVES["seq2seq"]
    _compare(model, lambda: objective.loss_sums(model(**batch.inputs), batch), lambda: objective.fast_loss_sums(model, batch))
    with torch.no_grad():
        fast, reference = objective.fast_score(model, batch), objective.score(model(**batch.inputs), batch)
    assert fast["tokens"] == reference["tokens"] == 19
    assert fast["nll"] == pytest.approx(reference["nll"], rel=1e-5)
