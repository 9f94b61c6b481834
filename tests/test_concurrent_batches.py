"""Concurrent inference batches (`seqlm.runtime.concurrent_batches`, `generation.streams`): every batch run once,
each stream on its share of the threads (restored after), and generation with two streams equal to one."""

from __future__ import annotations

import threading

import pytest
import torch
from transformers import T5Config, T5ForConditionalGeneration

from seqlm.config.generation import GenerationConfig
from seqlm.runtime.concurrent_batches import in_callers_contexts, resolve_streams, run_batches
from seqlm.runtime.device import Precision
from seqlm.tasks.seq2seq_generation import generate


def test_every_batch_runs_once_in_its_own_thread_on_its_share_of_the_threads() -> None:
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    seen: list[tuple[int, str, int]] = []

    def work(batch: int) -> int:
        seen.append((batch, threading.current_thread().name, torch.get_num_threads()))
        return batch * 10

    try:
        results = dict(run_batches(work, iter(range(7)), streams=2))
        assert results == {batch: batch * 10 for batch in range(7)}
        assert sorted(batch for batch, _, _ in seen) == list(range(7))
        assert all(name.startswith("seqlm-batch") and threads == 1 for _, name, threads in seen)
        assert torch.get_num_threads() == 2  # restored
        assert dict(run_batches(work, [3], streams=1)) == {3: 30}
    finally:
        torch.set_num_threads(before)


def test_a_failing_batch_fails_the_call_and_restores_the_threads() -> None:
    before = torch.get_num_threads()

    def work(batch: int) -> int:
        if batch == 2:
            raise ValueError("batch 2")
        return batch

    with pytest.raises(ValueError, match="batch 2"):
        list(run_batches(work, range(5), streams=2))
    assert torch.get_num_threads() == before


def test_work_wrapped_in_the_callers_contexts_runs_under_its_grad_mode_and_autocast() -> None:
    def contexts(batch: int) -> tuple[bool, bool, torch.dtype]:
        return torch.is_grad_enabled(), torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")

    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        wrapped = in_callers_contexts(contexts)
        bare = dict(run_batches(contexts, range(4), streams=2))
    assert set(dict(run_batches(wrapped, range(4), streams=2)).values()) == {(False, True, torch.bfloat16)}
    assert all(grad and not autocast for grad, autocast, _ in bare.values())  # both are thread-local


def test_streams_resolution() -> None:
    cpu, threads = torch.device("cpu"), torch.get_num_threads()
    assert resolve_streams("auto", torch.device("cuda"), 10) == 1
    assert resolve_streams("auto", cpu, 10) == min(2, threads)
    assert resolve_streams(8, cpu, 3) == min(3, threads)
    assert resolve_streams("auto", cpu, 1) == 1
    assert dict(run_batches(lambda _: resolve_streams("auto", cpu, 10), [0], streams=2)) == {0: 1}  # a stream never nests


@pytest.mark.parametrize("beams", [1, 3])
def test_generation_with_two_streams_equals_one(beams: int) -> None:
    torch.manual_seed(0)
    config = T5Config(vocab_size=64, d_model=32, d_kv=16, d_ff=64, num_layers=2, num_decoder_layers=2, num_heads=2,
                      decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)  # fmt: skip
    model = T5ForConditionalGeneration(config).eval()
    with torch.no_grad():
        for weight in model.parameters():
            if weight.dim() == 2:
                weight.normal_(0.0, 0.3)

    class Tokenizer:  # what generate reads of a tokenizer
        pad_token_id, eos_token_id = 0, 1

        def decode(self, ids: list[int], skip_special_tokens: bool) -> str:
            return " ".join(map(str, ids))

    generator = torch.Generator().manual_seed(1)
    sources = [torch.randint(2, 64, (int(n),), generator=generator).tolist() + [1] for n in torch.randint(3, 12, (23,), generator=generator)]
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        outputs = {}
        for streams in (1, 2):
            settings = GenerationConfig(max_new_tokens=9, num_beams=beams, streams=streams)
            generated = generate(model, Tokenizer(), sources, settings, 4, Precision(torch.device("cpu"), "fp32"), 0)
            outputs[streams] = [[(g.token_ids, g.score) for g in candidates] for candidates in generated]
    finally:
        torch.set_num_threads(before)
    assert outputs[1] == outputs[2]
    assert len({tuple(ids) for candidates in outputs[1] for ids, _ in candidates}) > 3  # not one output everywhere
