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
from seqlm.tasks.t5_decoder_steps import T5DecoderSteps, cache_bytes_per_position, supported

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
    # 1024 MB hold every source's cache: all 7 rows in one group, not batches of 2
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


def test_sources_encode_in_slices_each_cut_to_its_longest_two_at_once() -> None:
    model = _model(_t5)
    rows = sorted(_sources(), key=len, reverse=True)  # 13, 12, 10, 7, 6, 4, 3 tokens
    input_ids, mask = pad_rows(rows, 0, left=False)
    with torch.no_grad():
        one_pass = seq2seq_decoding.EncoderDecoderSteps(model, input_ids, mask, "cache", 1)
        sliced = {
            streams: seq2seq_decoding.EncoderDecoderSteps(model, input_ids, mask, "cache", 2, slice_rows=3, streams=streams)
            for streams in (1, 2)
        }
    # slices of at most 3, a new one where a source is under 3/4 of its slice's longest; two copies of each row
    for steps in sliced.values():
        assert [tuple(states.shape[:2]) for states in steps.source_states] == [(6, 13), (4, 7), (4, 4)]
    for one, two in zip(sliced[1].source_states, sliced[2].source_states):
        assert not two.requires_grad  # the caller's no_grad held in the encoding threads
        torch.testing.assert_close(two, one, rtol=1e-6, atol=1e-6)
    states, real = sliced[2].encoder_states, sliced[2].attention_mask.bool()
    torch.testing.assert_close(states[real], one_pass.encoder_states.repeat_interleave(2, 0)[real], rtol=1e-6, atol=1e-6)
    assert not states[6:10, 7:].any() and not states[10:, 4:].any()  # each slice padded back with zeros


def test_sliced_sources_give_each_slice_the_logits_of_the_module_tree_on_its_rows_alone() -> None:
    model = _model(_t5)
    rows = sorted(_sources(), key=len, reverse=True)  # slices of rows 0-2 (13 tokens wide), 3-4 (7), 5-6 (4)
    input_ids, mask = pad_rows(rows, 0, left=False)
    with torch.no_grad():
        written_out = T5DecoderSteps(
            model, seq2seq_decoding.EncoderDecoderSteps(model, input_ids, mask, "cache", 1, slice_rows=3), capacity=STEPS
        )
        references = [
            seq2seq_decoding.EncoderDecoderSteps(model, input_ids[first:end, :width], mask[first:end, :width], "cache", 1)
            for first, end, width in ((0, 3, 13), (3, 5, 7), (5, 7, 4))
        ]
        sizes = [3, 2, 2]
        for step in range(STEPS):
            expected, got = torch.cat([reference.logits(model) for reference in references]), written_out.logits(model)
            torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6, msg=f"step {step}")
            assert torch.equal(got.argmax(-1), expected.argmax(-1))
            next_ids = expected.argmax(-1, keepdim=True)
            if step == 3:  # row 1 leaves its slice, the second slice leaves whole: the third is not copied
                untouched = written_out.slices[2].states[0][0]
                keep = torch.tensor([0, 2, 5, 6])
                written_out.select(keep, keep)
                references[0].select(torch.tensor([0, 2]), torch.tensor([0, 2]))
                del references[1]
                sizes = [2, 2]
                next_ids = next_ids[keep]
                assert written_out.slices[1].states[0][0] is untouched
            for reference, ids in zip(references, next_ids.split(sizes)):
                reference.advance(ids)
            written_out.advance(next_ids)


def test_the_auto_cache_budget_is_1024_mb_of_keys_and_values() -> None:
    model = _model(_t5)
    per_position = cache_bytes_per_position(model)
    assert per_position == 2 * 2 * 2 * 16 * 4  # layers × keys and values × heads × d_kv × fp32
    sources = [[5] * 100 + [1]] * 300
    fits = 2**20 // ((101 + 8) * per_position)  # rows × (longest source + new tokens) within 1 MB
    groups = seq2seq_generation._batches(model, sources, 4, GenerationConfig(max_new_tokens=8, decode_cache_mb=1))
    assert [len(group) for group in groups[:-1]] == [fits] * (300 // fits)
    assert len(seq2seq_generation._batches(model, sources, 4, GenerationConfig(max_new_tokens=8))) == 1  # auto: 1024 MB
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
