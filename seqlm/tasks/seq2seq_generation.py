"""Encoding and generation for the seq2seq task (`seqlm.tasks.seq2seq`): finetune validation, evaluate and predict.

- `encode_sources` / `encode_targets`: an encoder-decoder's token ids as the tokenizer gives them (special tokens
  included), cut to a limit and counted; a target always ends with eos (appended when the tokenizer adds none,
  kept when cutting), so the model learns to stop. `encode_inputs` / `encode_examples`: the same for either kind
  of model: with a `PromptFormat` (a decoder-only model, `seqlm.tasks.seq2seq_prompts`) its prompts and
  prompt + target rows, else the encoder-decoder's sources and source/target rows.
- `generate`: greedy search, sampling (`seqlm.tasks.seq2seq_decoding`) and beam search (`seq2seq_beams`) by
  seqlm's own loops (rows leave the batch as they end) where they give what `model.generate` would, else
  `model.generate` (beam sampling, settings of the model's generation_config they do not apply); KV cache on,
  inputs batched by length, longest first (greedy and sampled rows of a decoder-only model or a T5 decode in larger
  groups within `generation.decode_cache_mb`, their prompts or sources run in slices: `seqlm.tasks.decoder_prefill`,
  `seqlm.tasks.seq2seq_decoding`); an encoder-decoder's
  sources right-padded, a decoder-only model's prompts left-padded (so every row's continuation starts at the
  same position), each with an attention mask; results come back in input order. Per input,
  `num_return_sequences` candidates: the text (special tokens dropped) of the new tokens only (an
  encoder-decoder's decoder start, a decoder-only model's prompt left out), their ids (up to and including the
  first eos, padding dropped) and, with beam search, the sequence score (the length-penalised log-probability).
- `GenerationCheck` / `generating_model`: what finetune validation generates from, shared by the seq2seq and
  causal_lm tasks (a task imports no other task).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from seqlm.config.generation import GenerationConfig
from seqlm.data.batch import Batch
from seqlm.data.example_batches import EncodedExamples
from seqlm.data.padding import pad_rows
from seqlm.io.predict_inputs import length_batches
from seqlm.io.seq2seq_records import Seq2SeqRecords
from seqlm.metrics.generation import generation_scores
from seqlm.runtime.concurrent_batches import resolve_streams, run_batches
from seqlm.runtime.device import Precision
from seqlm.tasks import decoder_prefill, seq2seq_beams, seq2seq_decoding, t5_decoder_steps

if TYPE_CHECKING:
    from seqlm.tasks.seq2seq_prompts import PromptFormat

NO_LIMIT = 1_000_000  # tokenizers without a limit report a huge model_max_length
# SmolLM2's 64 bench prompts: 19.2 s merged within 1024 MB, 20.9 s in 512, 22.1 s in 2048; the bench T5's 435 sources
# (one group within 1024 MB, 2 AMD EPYC cores): 4.4-4.7 s against 5.1-5.5 s in groups of twice its decoder's weights.
AUTO_CACHE_MB = 1024


@dataclass
class Generated:
    text: str
    token_ids: list[int]
    score: float | None  # beam search only


def encode_sources(tokenizer: Any, texts: list[str], limit: int | None) -> tuple[list[list[int]], int]:
    """Source ids (cut to `limit`, keeping a final eos the tokenizer adds) and how many were cut."""
    if not texts:  # e.g. eval_generate_examples: 0; a fast tokenizer fails on an empty batch
        return [], 0
    rows = tokenizer(texts, add_special_tokens=True, verbose=False)["input_ids"]
    return cut_rows(rows, limit, end_token_id(tokenizer))


def encode_targets(tokenizer: Any, texts: list[str], limit: int) -> tuple[list[list[int]], int]:
    """Target ids ending with eos (cut to `limit` tokens, eos kept last) and how many were cut."""
    eos = end_token_id(tokenizer)
    rows = tokenizer(texts, add_special_tokens=True, verbose=False)["input_ids"]
    rows = [ids if ids and ids[-1] == eos else [*ids, eos] for ids in rows]
    return cut_rows(rows, limit, eos)


def end_token_id(tokenizer: Any) -> int | None:
    """The token a sequence ends with: eos, else sep (BERT-style vocabularies, as in a warm start; their
    targets also keep the leading cls the tokenizer adds, as HF's bert2bert recipe does)."""
    return tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id


def cut_rows(rows: list[list[int]], limit: int | None, eos: int | None) -> tuple[list[list[int]], int]:
    """Rows cut to `limit`; a row that ended with eos still does (the model saw every sequence end so)."""
    cut, out = 0, []
    for ids in rows:
        if limit is not None and len(ids) > limit:
            cut += 1
            ids = [*ids[: limit - 1], eos] if eos is not None and ids[-1] == eos else ids[:limit]
        out.append(list(ids))
    return out, cut


def encode_split(
    tokenizer: Any, examples: Seq2SeqRecords, max_source_length: int | None, max_target_length: int
) -> tuple[EncodedExamples, int, int]:
    """One split as model rows (input_ids, attention_mask, labels), and how many sources and targets were cut."""
    sources, cut_sources = encode_sources(tokenizer, [e.source for e in examples], max_source_length)
    targets, cut_targets = encode_targets(tokenizer, [e.target or "" for e in examples], max_target_length)
    rows = {
        "input_ids": [np.asarray(ids, dtype=np.int64) for ids in sources],
        "attention_mask": [np.ones(len(ids), dtype=np.int64) for ids in sources],
        "labels": [np.asarray(ids, dtype=np.int64) for ids in targets],
    }
    return EncodedExamples(rows, truncated=cut_sources + cut_targets), cut_sources, cut_targets


def encode_examples(
    tokenizer: Any, prompt: PromptFormat | None, examples: Seq2SeqRecords, max_source_length: int | None, max_target_length: int,
    key: str,
) -> tuple[EncodedExamples, int, int]:
    """Model rows of a split for either kind of model (see the module docstring), cut sources/prompts, cut targets."""
    if prompt is not None:
        return prompt.encode_split(tokenizer, examples, max_source_length, max_target_length, key)
    return encode_split(tokenizer, examples, max_source_length, max_target_length)


def encode_inputs(tokenizer: Any, prompt: PromptFormat | None, sources: list[str], limit: int | None, key: str) -> tuple[list[list[int]], int]:
    """What `generate` starts from for each source, for either kind of model, and how many were cut."""
    if prompt is not None:
        return prompt.encode_prompts(tokenizer, sources, limit, key)
    return encode_sources(tokenizer, sources, limit)


def source_limit(requested: int | None, model_config: Any, tokenizer: Any) -> int | None:
    """Source tokens: `requested`, else the model's positions (BART), else the tokenizer's limit, else none (T5)."""
    if requested is not None:
        return requested
    positions = getattr(model_config, "max_position_embeddings", None)
    if isinstance(positions, int) and positions > 0:
        return positions
    limit = getattr(tokenizer, "model_max_length", None)
    return limit if isinstance(limit, int) and 0 < limit < NO_LIMIT else None


def generate(
    model: Any, tokenizer: Any, sources: list[list[int]], settings: GenerationConfig, batch_size: int, precision: Precision,
    seed: int, report: Any = None,
) -> list[list[Generated]]:
    """`settings.num_return_sequences` candidates per source, in input order (see the module docstring)."""
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    decoder_only = not getattr(model.config, "is_encoder_decoder", False)
    stop = stop_ids(model, tokenizer)
    options: dict[str, Any] = {
        "max_new_tokens": settings.max_new_tokens, "do_sample": settings.do_sample, "num_beams": settings.num_beams,
        "num_return_sequences": settings.num_return_sequences, "no_repeat_ngram_size": settings.no_repeat_ngram_size,
        "use_cache": True, "return_dict_in_generate": True, "output_scores": settings.num_beams > 1,
    }  # fmt: skip
    if decoder_only:  # a causal LM's generation_config may lack both (left padding is masked; any id works)
        options.update(pad_token_id=pad_id, eos_token_id=sorted(stop) or None)
    if settings.num_beams > 1:
        options.update(length_penalty=settings.length_penalty, early_stopping=settings.early_stopping)
    if settings.do_sample:
        # top_k=0 / top_p=1.0 switch the filters off; None would fall back to the model's defaults (top_k 50).
        options.update(temperature=settings.temperature, top_k=settings.top_k or 0, top_p=settings.top_p or 1.0)
    fast = seq2seq_decoding.supports(model, settings)
    # Greedy and sampled rows decode in merged groups, their prompts or sources run in slices (decoder_prefill)
    sliced = fast and settings.num_beams == 1 and (decoder_only or t5_decoder_steps.is_t5(model))
    batches = _batches(model, sources, batch_size, settings) if sliced else [b for _, b in length_batches(sources, batch_size)]
    # Sampling draws from the one global RNG stream, whose order concurrent batches would not fix. Merged groups
    # keep the cores busy by themselves: `auto` runs them one at a time (SmolLM2 on 2 cores: 19.2 s in one stream,
    # 21.8 s in two), a T5's sources then encoded in slices `streams` at a time (seq2seq_decoding).
    concurrent = fast and not settings.do_sample and not (sliced and settings.streams == "auto")
    streams = resolve_streams(settings.streams, model.device, len(batches)) if concurrent else 1
    was_training = model.training
    model.eval()
    results: list[list[Generated]] = [[] for _ in sources]
    n = settings.num_return_sequences
    device = model.device

    def run(batch: list[int]) -> tuple[list[list[int]], list[float] | None]:
        """The batch's `n` candidates per input (new token ids) and their beam scores (None without beams)."""
        input_ids, mask = pad_rows([sources[i] for i in batch], pad_id, left=decoder_only)
        input_ids, mask = input_ids.to(device), mask.to(device)
        with precision.inference():
            if fast and settings.num_beams > 1:
                found = [pair for pairs in seq2seq_beams.beam_search(model, input_ids, mask, settings, stop) for pair in pairs]
                return [ids for ids, _ in found], [score for _, score in found]
            if fast:
                return seq2seq_decoding.decode(model, input_ids, mask, settings, stop, batch_size if sliced else None), None
            output = model.generate(input_ids=input_ids, attention_mask=mask, **options)
        scores = output.sequences_scores.tolist() if getattr(output, "sequences_scores", None) is not None else None
        # New tokens only: after the (left-padded) prompt, or after the decoder start token.
        return output.sequences[:, input_ids.shape[1] if decoder_only else 1 :].tolist(), scores

    try:
        # Its own RNG stream: a validation mid-training must not reset the training's (dropout, each rank's own).
        with torch.random.fork_rng(devices=[] if device.type == "cpu" else [device], device_type=device.type):
            torch.manual_seed(settings.seed if settings.seed is not None else seed)
            done = 0
            for batch, (sequences, scores) in run_batches(run, batches, streams):
                for row, ids in enumerate(sequences):
                    end = next((pos + 1 for pos, token in enumerate(ids) if token in stop), len(ids))
                    kept = [token for token in ids[:end] if token != pad_id or token in stop]
                    text = tokenizer.decode(kept, skip_special_tokens=True)
                    results[batch[row // n]].append(Generated(text, kept, scores[row] if scores is not None else None))
                done += len(batch)
                if report is not None:
                    report(done)
    finally:
        model.train(was_training)
    return results


def _batches(model: Any, sources: list[list[int]], batch_size: int, settings: GenerationConfig) -> list[list[int]]:
    """Decoding groups: batches of prompts (a T5's sources) merged within `settings.decode_cache_mb` (auto: 1024
    MB), counted as rows × (longest prompt or source + new tokens) cache positions."""
    if model.config.is_encoder_decoder:
        per_token = t5_decoder_steps.cache_bytes_per_position(model)
    else:
        per_token = decoder_prefill.cache_bytes_per_token(model.config)
    megabytes = AUTO_CACHE_MB if settings.decode_cache_mb == "auto" else settings.decode_cache_mb
    budget = megabytes * 2**20 // per_token if per_token else 0
    return decoder_prefill.decode_groups([len(ids) for ids in sources], batch_size, settings.max_new_tokens, budget)


def stop_ids(model: Any, tokenizer: Any) -> set[int]:
    """The ids generation stops at: the model's generation_config eos ids and the tokenizer's eos."""
    configured = model.generation_config.eos_token_id
    ids = set(configured if isinstance(configured, list) else [configured])
    return {int(i) for i in ids | {tokenizer.eos_token_id} if i is not None}


# --------------------------------------------------------------------------- finetune validation (seq2seq, causal_lm)


class GenerationCheck(list):
    """Validation batches (for the loss), plus what `score` generates from: the first examples' source ids,
    their references, the generation settings and the tokenizer."""

    def __init__(self, batches: list[Batch], sources: list[list[int]], references: list[tuple[str, ...]], settings: GenerationConfig,
                 tokenizer: Any, batch_size: int, seed: int):  # fmt: skip
        super().__init__(batches)
        self.sources, self.references, self.settings = sources, references, settings
        self.tokenizer, self.batch_size, self.seed = tokenizer, batch_size, seed


def generating_model(model: Any) -> Any:
    """The HF model inside the training wrappers (DDP's `.module`, the objective wrapper's `.model`), which can generate."""
    while not hasattr(model, "generate"):
        model = model.module if hasattr(model, "module") else model.model
    return model


def generated_scores(model: Any, check: GenerationCheck, precision: Precision) -> tuple[list[str], dict[str, Any]]:
    """The best output's text for each of `check.sources` (generated by the model inside the training wrappers)
    and their `seqlm.metrics.generation.generation_scores` against `check.references`."""
    generated = generate(generating_model(model), check.tokenizer, check.sources, check.settings, check.batch_size, precision, check.seed)
    best = [candidates[0] for candidates in generated]
    texts = [g.text for g in best]
    return texts, generation_scores(texts, check.references, [g.token_ids for g in best], check.tokenizer.pad_token_id)
