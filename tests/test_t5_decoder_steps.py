"""T5's decoder step written out (`seqlm.tasks.t5_decoder_steps`): its logits equal, bit for bit, what the HF
module tree gives for the same steps (`seq2seq_decoding.EncoderDecoderSteps`), in fp32 and under bf16 autocast,
with padded sources, rows leaving the batch and beams reordered; only models it reproduces take it; and a T5's
merged decoding groups (sources encoded in slices) give the tokens of batches decoded alone."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError
from test_seq2seq_decoding import VOCAB, _bart, _batch, _model, _t5

from seqlm.config.generation import GenerationConfig
from seqlm.data.padding import pad_rows
from seqlm.runtime.device import Precision
from seqlm.tasks import seq2seq_decoding, seq2seq_generation
from seqlm.tasks.t5_decoder_steps import T5DecoderSteps, group_budget, supported

STEPS = 9


def _both(model, input_ids, mask, copies: int = 1):  # noqa: ANN001, ANN202
    reference = seq2seq_decoding.EncoderDecoderSteps(model, input_ids, mask, "cache", copies)
    source = seq2seq_decoding.EncoderDecoderSteps(model, input_ids, mask, "cache", copies)
    return reference, T5DecoderSteps(model, source, capacity=STEPS)


@pytest.mark.parametrize("autocast", [False, True], ids=["fp32", "bf16-autocast"])
def test_logits_equal_the_module_tree_while_rows_leave(autocast: bool) -> None:
    model = _model(_t5)
    input_ids, mask = _batch(decoder_only=False)  # sources of 9, 4, 7, 2 and 6 tokens, right-padded
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        reference, written_out = _both(model, input_ids, mask)
        for step in range(STEPS):
            expected, got = reference.logits(model), written_out.logits(model)
            assert torch.equal(got, expected), f"step {step}"
            next_ids = expected.argmax(-1, keepdim=True)
            if step in (2, 5):  # a row leaves, then two more
                keep = torch.arange(1, next_ids.shape[0]) if step == 2 else torch.tensor([0, 2])
                reference.select(keep, keep)
                written_out.select(keep, keep)
                next_ids = next_ids[keep]
            reference.advance(next_ids)
            written_out.advance(next_ids)


def test_logits_equal_the_module_tree_with_beams_reordered() -> None:
    model = _model(_t5)
    input_ids, mask = _batch(decoder_only=False)
    beams = 3
    with torch.no_grad():
        reference, written_out = _both(model, input_ids, mask, copies=beams)
        generator = torch.Generator().manual_seed(0)
        for step in range(STEPS):
            expected, got = reference.logits(model), written_out.logits(model)
            assert torch.equal(got, expected), f"step {step}"
            # beam search's reordering: each input's beams drawn from its own, some twice
            rows = torch.cat(
                [start + torch.randint(0, beams, (beams,), generator=generator) for start in range(0, len(expected), beams)]
            )
            reference.select(rows, None)
            written_out.select(rows, None)
            next_ids = expected[rows].argmax(-1, keepdim=True)
            reference.advance(next_ids)
            written_out.advance(next_ids)


def test_a_step_past_the_reserved_positions_is_an_error() -> None:
    model = _model(_t5)
    input_ids, mask = _batch(decoder_only=False)
    with torch.no_grad():
        steps = T5DecoderSteps(model, seq2seq_decoding.EncoderDecoderSteps(model, input_ids, mask, "cache", 1), capacity=1)
        steps.advance(steps.logits(model).argmax(-1, keepdim=True))
        with pytest.raises(RuntimeError, match="1 positions is full"):
            steps.logits(model)


def test_only_models_it_reproduces_take_it() -> None:
    t5 = _model(_t5)
    assert supported(t5)
    assert isinstance(seq2seq_decoding.model_steps(t5, *_batch(decoder_only=False), 1, 4), T5DecoderSteps)
    assert not supported(_model(_bart))
    t5.config._attn_implementation = "eager"  # eager attention adds the bias by hand: other rounding
    assert not supported(t5)
    t5.config._attn_implementation = "sdpa"
    assert not supported(t5.train())
    assert not supported(t5.eval().half())


def _sources() -> list[list[int]]:
    generator = torch.Generator().manual_seed(2)
    return [torch.randint(3, VOCAB, (length,), generator=generator).tolist() + [1] for length in (3, 11, 6, 9, 2, 12, 5)]


def test_merged_groups_give_the_tokens_of_batches_decoded_alone() -> None:
    model = _model(_t5)
    tokenizer = type(
        "Tokenizer", (), {"pad_token_id": 0, "eos_token_id": 1, "decode": lambda self, ids, **_: " ".join(map(str, ids))}
    )()
    sources = _sources()
    fp32 = Precision(torch.device("cpu"), "fp32")
    settings = GenerationConfig(max_new_tokens=8, streams=1)
    # twice the tiny decoder's weights hold every source's cache: all 7 rows in one group, not batches of 2
    assert [len(group) for group in seq2seq_generation._batches(model, sources, 2, settings)] == [7]
    merged = seq2seq_generation.generate(model, tokenizer, sources, settings, 2, fp32, 0)
    apart = seq2seq_generation.generate(model, tokenizer, sources, settings.model_copy(update={"decode_cache_mb": 0}), 2, fp32, 0)
    alone = seq2seq_generation.generate(model, tokenizer, sources, settings.model_copy(update={"decode_cache_mb": 0}), 1, fp32, 0)
    assert [c[0].token_ids for c in merged] == [c[0].token_ids for c in apart] == [c[0].token_ids for c in alone]
    for source, candidates in zip(sources, merged):
        with torch.no_grad():
            out = model.generate(torch.tensor([source]), max_new_tokens=8, do_sample=False, eos_token_id=[1], pad_token_id=0)
        expected = out[0, 1:].tolist()
        expected = expected[: expected.index(1) + 1 if 1 in expected else None]
        assert candidates[0].token_ids == [token for token in expected if token != 0]  # generate drops padding ids


def test_sources_encoded_in_slices_equal_one_pass_at_every_real_position() -> None:
    model = _model(_t5)
    rows = sorted(_sources(), key=len, reverse=True)  # 13, 12, 10, 7, 6, 4, 3 tokens
    input_ids, mask = pad_rows(rows, 0, left=False)
    with torch.no_grad():
        one_pass = seq2seq_decoding.EncoderDecoderSteps(model, input_ids, mask, "cache", 1).encoder_states
        sliced = seq2seq_decoding.EncoderDecoderSteps(model, input_ids, mask, "cache", 1, slice_rows=3).encoder_states
    real = mask.bool()
    assert torch.allclose(sliced[real], one_pass[real], atol=1e-6)
    # each slice of 3 cut to its own longest source, the rest padded with zeros
    assert not sliced[3:6, len(rows[3]) :].any() and not sliced[6:, len(rows[6]) :].any()


def test_the_auto_cache_budget_is_twice_the_decoders_weights() -> None:
    model = _model(_t5)
    decoder = model.get_decoder()
    weights = sum(p.numel() * 4 for p in decoder.parameters())  # the output layer shares the embeddings
    assert group_budget(model) == (2 * weights, 2 * 2 * 2 * 16 * 4)  # layers × keys and values × heads × d_kv × fp32
    assert GenerationConfig(decode_cache_mb=0).decode_cache_mb == 0
    with pytest.raises(ValidationError, match="at least 0"):
        GenerationConfig(decode_cache_mb=-1)


def test_a_t5_in_training_mode_merges_too(monkeypatch: pytest.MonkeyPatch) -> None:
    """finetune validation generates from the model while it is in training mode: its rows merge all the same."""
    model = _model(_t5).train()
    grouped: list[list[list[int]]] = []
    groups = seq2seq_generation.decoder_prefill.decode_groups
    monkeypatch.setattr(
        seq2seq_generation.decoder_prefill, "decode_groups", lambda *args: grouped.append(groups(*args)) or grouped[-1]
    )
    tokenizer = type("Tokenizer", (), {"pad_token_id": 0, "eos_token_id": 1, "decode": lambda self, ids, **_: ""})()
    seq2seq_generation.generate(
        model, tokenizer, _sources(), GenerationConfig(max_new_tokens=4), 2, Precision(torch.device("cpu"), "fp32"), 0
    )
    assert [len(group) for group in grouped[0]] == [7] and model.training
