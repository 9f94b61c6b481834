"""T5's decoder step written out (`seqlm.tasks.t5_decoder_steps`): its logits equal, bit for bit, what the HF
module tree gives for the same steps (`seq2seq_decoding.EncoderDecoderSteps`), in fp32 and under bf16 autocast,
with padded sources, rows leaving the batch and beams reordered; and only models it reproduces take it."""

from __future__ import annotations

import pytest
import torch
from test_seq2seq_decoding import _bart, _batch, _model, _t5

from seqlm.tasks import seq2seq_decoding
from seqlm.tasks.t5_decoder_steps import T5DecoderSteps, supported

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
