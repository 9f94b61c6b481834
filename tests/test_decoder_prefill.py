"""Prompts run in slices, then decoded as one batch (`seqlm.tasks.decoder_prefill`), on tiny random causal LMs:
the merged cache equals one left-padded forward pass's, decoding from it gives `model.generate`'s tokens, steps
write the reserved cache in place, groups respect the cache budget, and models whose cache is not plain keys and
values are left to the one-batch path."""

from __future__ import annotations

import pytest
import torch
from test_seq2seq_decoding import VOCAB, _gpt2, _llama, _model
from transformers import MistralConfig
from transformers.cache_utils import DynamicCache

from seqlm.config.generation import GenerationConfig
from seqlm.data.padding import pad_rows
from seqlm.runtime.device import Precision
from seqlm.tasks import decoder_prefill, seq2seq_decoding
from seqlm.tasks.seq2seq_generation import generate

LENGTHS = (11, 10, 9, 4, 3, 7, 2)  # a slice cut where a prompt is under 3/4 of its slice's longest, then by count


def _prompts() -> list[list[int]]:
    generator = torch.Generator().manual_seed(1)
    return [torch.randint(3, VOCAB, (length,), generator=generator).tolist() for length in LENGTHS]


def _steps(model, input_ids, mask, slice_rows):  # noqa: ANN001, ANN202
    return seq2seq_decoding.model_steps(model, input_ids, mask, 1, 4, slice_rows=slice_rows)


def test_prompt_slices_cut_at_count_and_at_much_shorter_prompts() -> None:
    _, mask = pad_rows(_prompts(), 0, left=True)
    assert decoder_prefill.prompt_slices(mask, 2) == [(0, 2), (2, 3), (3, 5), (5, 6), (6, 7)]
    assert decoder_prefill.prompt_slices(mask, 8) == [(0, 3), (3, 6), (6, 7)]  # a longer prompt joins (7 after 3)


@pytest.mark.parametrize("build", [_llama, _gpt2], ids=["llama", "gpt2"])
def test_sliced_prompts_leave_the_cache_one_left_padded_pass_leaves(build) -> None:  # noqa: ANN001
    model = _model(build)
    input_ids, mask = pad_rows(_prompts(), 0, left=True)
    with torch.no_grad():
        whole, sliced = _steps(model, input_ids, mask, None), _steps(model, input_ids, mask, 2)
        whole_logits, sliced_logits = whole.logits(model), sliced.logits(model)
    torch.testing.assert_close(sliced_logits, whole_logits, rtol=1e-5, atol=1e-5)
    real = mask.bool()[:, None, :, None]
    for mine, theirs in zip(sliced.cache.layers, whole.cache.layers):
        assert isinstance(mine, decoder_prefill.ReservedLayer)
        assert mine.keys.shape == theirs.keys.shape and mine.buffer_keys.shape[2] == input_ids.shape[1] + 4
        torch.testing.assert_close(mine.keys * real, theirs.keys * real, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(mine.values * real, theirs.values * real, rtol=1e-5, atol=1e-5)


def test_a_step_writes_the_reserved_cache_in_place_and_dropped_rows_leave_it() -> None:
    model = _model(_llama)
    input_ids, mask = pad_rows(_prompts(), 0, left=True)
    steps = _steps(model, input_ids, mask, 3)
    with torch.no_grad():
        steps.logits(model)
        layer = steps.cache.layers[0]
        buffer = layer.buffer_keys.data_ptr()
        steps.advance(torch.full((len(LENGTHS), 1), 5))
        steps.logits(model)
        assert layer.buffer_keys.data_ptr() == buffer and layer.get_seq_length() == input_ids.shape[1] + 1
        expected = layer.keys[[2, 0, 2]].clone()
        steps.select(torch.tensor([2, 0, 2]), torch.tensor([2, 0, 2]))  # reordered, one twice (beams): in place
        assert layer.buffer_keys.data_ptr() == buffer and torch.equal(layer.keys, expected)
        assert layer.keys.shape[0] == 3 and steps.cache.get_seq_length() == input_ids.shape[1] + 1


@pytest.mark.parametrize("build", [_llama, _gpt2], ids=["llama", "gpt2"])
def test_sliced_merged_decoding_gives_generates_tokens_in_input_order(build) -> None:  # noqa: ANN001
    model = _model(build)
    tokenizer = type(
        "Tokenizer", (), {"pad_token_id": 0, "eos_token_id": 2, "decode": lambda self, ids, **_: " ".join(map(str, ids))}
    )()
    prompts = _prompts()
    fp32 = Precision(torch.device("cpu"), "fp32")
    settings = {"max_new_tokens": 6, "streams": 1}
    one_batch = generate(model, tokenizer, prompts, GenerationConfig(**settings, decode_cache_mb=0), 16, fp32, 0)
    merged = generate(model, tokenizer, prompts, GenerationConfig(**settings), 2, fp32, 0)
    alone = generate(model, tokenizer, prompts, GenerationConfig(**settings, decode_cache_mb=0), 1, fp32, 0)
    assert [c[0].token_ids for c in merged] == [c[0].token_ids for c in one_batch] == [c[0].token_ids for c in alone]
    for prompt, candidates in zip(prompts, merged):
        with torch.no_grad():
            out = model.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long), max_new_tokens=6,
                                 do_sample=False, eos_token_id=[2], pad_token_id=0)  # fmt: skip
        expected = out[0, len(prompt) :].tolist()
        assert candidates[0].token_ids == expected[: expected.index(2) + 1 if 2 in expected else None]


def test_groups_merge_prompt_batches_within_the_cache_budget() -> None:
    lengths = [100, 10, 12, 90, 11, 10, 9, 8]
    # longest first; at least a batch (2) even over budget, more while rows × (longest + 4 new) ≤ 250
    assert decoder_prefill.decode_groups(lengths, 2, 4, 250) == [[0, 3], [2, 4, 1, 5, 6, 7]]
    assert decoder_prefill.decode_groups(lengths, 2, 4, 0) == [[0, 3], [2, 4], [1, 5], [6, 7]]
    llama = _llama().config
    assert decoder_prefill.cache_bytes_per_token(llama) == 2 * 2 * 1 * 16 * 4  # layers × (k, v) × kv heads × head dim × fp32


def test_models_whose_cache_has_other_layer_kinds_keep_the_one_batch_prompt() -> None:
    assert decoder_prefill.cache_supported(_llama())
    mistral = MistralConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                            num_key_value_heads=1, sliding_window=8)  # fmt: skip
    assert not decoder_prefill.cache_supported(type("Model", (), {"config": mistral})())
    assert not isinstance(DynamicCache(config=mistral).layers[0], decoder_prefill.ReservedLayer)


def test_a_slice_of_empty_prompts_decodes_as_in_one_pass() -> None:
    model = _model(_llama)
    input_ids, mask = pad_rows([*_prompts(), []], 0, left=True)  # the empty prompt is a slice of its own
    settings = GenerationConfig(max_new_tokens=5)
    with torch.no_grad():
        whole = seq2seq_decoding.decode(model, input_ids, mask, settings, {2})
        sliced = seq2seq_decoding.decode(model, input_ids, mask, settings, {2}, slice_rows=2)
    assert sliced == whole and len(sliced[-1]) > 0
