"""seqlm's own greedy/sampling decoder (`seqlm.tasks.seq2seq_decoding`) against `model.generate`, on tiny random
models of each kind: the same tokens under greedy search (rows ending early, left-padded prompts, forced
tokens, n-gram blocking), the same draws for one sampled row, and `model.generate` kept for what it does not do."""

from __future__ import annotations

import pytest
import torch
from transformers import (
    BartConfig,
    BartForConditionalGeneration,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    T5Config,
    T5ForConditionalGeneration,
)

from seqlm.config.generation import GenerationConfig
from seqlm.data.padding import pad_rows
from seqlm.tasks import seq2seq_beams, seq2seq_decoding

VOCAB = 96


def _t5() -> T5ForConditionalGeneration:
    config = T5Config(vocab_size=VOCAB, d_model=32, d_kv=16, d_ff=64, num_layers=2, num_decoder_layers=2, num_heads=2,
                      decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)  # fmt: skip
    return T5ForConditionalGeneration(config)


def _bart() -> BartForConditionalGeneration:
    config = BartConfig(vocab_size=VOCAB, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2,
                        decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=64,
                        forced_eos_token_id=2)  # fmt: skip
    model = BartForConditionalGeneration(config)
    model.generation_config.forced_bos_token_id = 0  # as mBART forces its language id
    return model


def _gpt2() -> GPT2LMHeadModel:
    return GPT2LMHeadModel(
        GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=2, n_positions=64, bos_token_id=1, eos_token_id=1)
    )


def _llama() -> LlamaForCausalLM:
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                         num_key_value_heads=1, max_position_embeddings=64, bos_token_id=1, eos_token_id=2, pad_token_id=0)  # fmt: skip
    return LlamaForCausalLM(config)


def _model(build):  # noqa: ANN001, ANN202
    torch.manual_seed(0)
    model = build().eval()
    with torch.no_grad():  # weights far from the init's, whose tiny models give one token everywhere
        for name, weight in model.named_parameters():
            if weight.dim() == 2:
                weight.normal_(0.0, 0.5 if "shared" in name or "embed" in name or "wte" in name else 0.2)
    return model


def _batch(decoder_only: bool) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    rows = [torch.randint(3, VOCAB, (length,), generator=generator).tolist() for length in (9, 4, 7, 2, 6)]
    return pad_rows(rows, 0, left=decoder_only)


def _reference(model, input_ids, mask, stop: list[int], **options) -> list[list[int]]:  # noqa: ANN001
    """`model.generate`'s new tokens per row, up to and including the first of `stop`."""
    with torch.inference_mode():
        out = model.generate(
            input_ids=input_ids, attention_mask=mask, eos_token_id=stop, pad_token_id=0, use_cache=True, **options
        )
    start = 1 if model.config.is_encoder_decoder else input_ids.shape[1]
    rows = []
    for ids in out[:, start:].tolist():
        end = next((i + 1 for i, token in enumerate(ids) if token in stop), len(ids))
        rows.append(ids[:end])
    return rows


def _decode(model, input_ids, mask, stop: list[int], **settings) -> list[list[int]]:  # noqa: ANN001
    with torch.inference_mode():
        return seq2seq_decoding.decode(model, input_ids, mask, GenerationConfig(**settings), set(stop))


def _stop_that_ends_some_rows(model, input_ids, mask) -> list[int]:  # noqa: ANN001
    """A token greedy search emits early in some rows but not all, so rows leave the batch at different steps."""
    free = _reference(model, input_ids, mask, [VOCAB + 1], max_new_tokens=10, do_sample=False)
    counts = {token: sum(token in row[:6] for row in free) for row in free for token in row[:6]}
    return [min(counts, key=lambda token: (abs(counts[token] - len(free) / 2), token))]


@pytest.mark.parametrize("build", [_t5, _bart, _gpt2, _llama], ids=["t5", "bart", "gpt2", "llama"])
def test_greedy_equals_generate_with_rows_ending_at_different_steps(build) -> None:  # noqa: ANN001
    model = _model(build)
    input_ids, mask = _batch(decoder_only=not model.config.is_encoder_decoder)
    stop = _stop_that_ends_some_rows(model, input_ids, mask)
    mine = _decode(model, input_ids, mask, stop, max_new_tokens=10)
    theirs = _reference(model, input_ids, mask, stop, max_new_tokens=10, do_sample=False)
    assert mine == theirs
    assert len({len(row) for row in mine}) > 1  # some rows ended before others
    forced = model.generation_config
    if forced.forced_eos_token_id is not None:  # BART: its first and (at the limit) last token are forced
        assert {row[0] for row in mine} == {forced.forced_bos_token_id}
        assert all(row[-1] in {*stop, forced.forced_eos_token_id} for row in mine)


def test_no_repeat_ngram_and_several_returned_sequences_equal_generate() -> None:
    model = _model(_gpt2)
    input_ids, mask = _batch(decoder_only=True)
    mine = _decode(model, input_ids, mask, [1], max_new_tokens=12, no_repeat_ngram_size=2)
    assert mine == _reference(model, input_ids, mask, [1], max_new_tokens=12, do_sample=False, no_repeat_ngram_size=2)
    twice = _decode(
        model, input_ids, mask, [1], max_new_tokens=12, no_repeat_ngram_size=2, do_sample=True, top_k=1, num_return_sequences=2
    )
    assert twice == [row for row in mine for _ in range(2)]  # top-k 1 sampling is greedy; candidates row-major


def test_one_sampled_row_draws_what_generate_draws_from_the_same_seed() -> None:
    model = _model(_t5)
    input_ids, mask = _batch(decoder_only=False)
    options = {"max_new_tokens": 10, "do_sample": True, "temperature": 1.5, "top_k": 20, "top_p": 0.9}
    torch.manual_seed(7)
    mine = _decode(model, input_ids[:1], mask[:1], [VOCAB + 1], **options)
    torch.manual_seed(7)
    assert mine == _reference(model, input_ids[:1], mask[:1], [VOCAB + 1], **options)


def test_beam_sampling_and_settings_it_does_not_apply_go_to_generate() -> None:
    model = _model(_t5)
    assert seq2seq_decoding.supports(model, GenerationConfig())
    assert seq2seq_decoding.supports(model, GenerationConfig(num_beams=2))
    assert not seq2seq_decoding.supports(model, GenerationConfig(num_beams=2, do_sample=True))
    model.generation_config.min_length = 5  # a model's own setting this decoder does not apply
    assert not seq2seq_decoding.supports(model, GenerationConfig())


def _reference_beams(model, input_ids, mask, stop: list[int], **options) -> list[tuple[list[int], float]]:  # noqa: ANN001
    """`model.generate`'s beam candidates (new tokens up to the first of `stop`) and their scores, row-major."""
    with torch.inference_mode():
        out = model.generate(input_ids=input_ids, attention_mask=mask, eos_token_id=stop, pad_token_id=0, use_cache=True,
                             return_dict_in_generate=True, output_scores=True, **options)  # fmt: skip
    start = 1 if model.config.is_encoder_decoder else input_ids.shape[1]
    rows = []
    for ids, score in zip(out.sequences[:, start:].tolist(), out.sequences_scores.tolist()):
        end = next((i + 1 for i, token in enumerate(ids) if token in stop), len(ids))
        rows.append((ids[:end], score))
    return rows


@pytest.mark.parametrize(
    ("build", "options", "inputs_leave"),
    [(_t5, {}, False), (_bart, {"early_stopping": True, "length_penalty": 0.6}, True),
     (_gpt2, {"no_repeat_ngram_size": 2, "length_penalty": 1.5}, True), (_llama, {"num_return_sequences": 2}, False)],
    ids=["t5", "bart-early-stopping", "gpt2-ngrams-no-improvement", "llama-two-returned"],
)  # fmt: skip
def test_beam_search_equals_generate_with_inputs_ending_at_different_steps(build, options, inputs_leave: bool) -> None:  # noqa: ANN001
    model = _model(build)
    input_ids, mask = _batch(decoder_only=not model.config.is_encoder_decoder)
    stop = _stop_that_ends_some_rows(model, input_ids, mask)
    settings = {"max_new_tokens": 10, "num_beams": 3, **options}
    rows_per_step: list[int] = []
    # the output layer runs once per step on every row (T5's decoder step does not go through model.forward)
    hook = model.get_output_embeddings().register_forward_pre_hook(lambda _, args: rows_per_step.append(len(args[0])))
    with torch.inference_mode():
        found = seq2seq_beams.beam_search(model, input_ids, mask, GenerationConfig(**settings), set(stop))
    hook.remove()
    mine = [pair for pairs in found for pair in pairs]
    theirs = _reference_beams(model, input_ids, mask, stop, do_sample=False, **settings)
    assert [ids for ids, _ in mine] == [ids for ids, _ in theirs]
    assert [score for _, score in mine] == pytest.approx([score for _, score in theirs], abs=1e-4)
    assert rows_per_step[0] == len(input_ids) * 3
    assert (rows_per_step[-1] < rows_per_step[0]) == inputs_leave  # inputs whose search ended left the batch

