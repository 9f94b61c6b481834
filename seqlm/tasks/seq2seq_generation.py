"""Encoding and generation for the seq2seq task (`seqlm.tasks.seq2seq`): finetune validation, evaluate and predict.

- `encode_sources` / `encode_targets`: token ids as the tokenizer gives them (special tokens included),
  cut to a limit and counted; a target always ends with eos (appended when the tokenizer adds none, kept
  when cutting), so the model learns to stop.
- `generate`: `model.generate` (KV cache on) over sources batched by length, longest first, each batch
  right-padded with an attention mask; results come back in input order. Per input, `num_return_sequences`
  candidates: the text (special tokens dropped), its generated ids (decoder start dropped, padding dropped,
  eos kept) and, with beam search, its sequence score (the length-penalised log-probability).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from seqlm.config.generation import GenerationConfig
from seqlm.data.example_batches import EncodedExamples
from seqlm.data.padding import pad_rows
from seqlm.io.predict_inputs import length_batches
from seqlm.io.seq2seq_records import Seq2SeqRecords
from seqlm.runtime.device import Precision

NO_LIMIT = 1_000_000  # tokenizers without a limit report a huge model_max_length


@dataclass
class Generated:
    text: str
    token_ids: list[int]
    score: float | None  # beam search only


def encode_sources(tokenizer: Any, texts: list[str], limit: int | None) -> tuple[list[list[int]], int]:
    """Source ids (cut to `limit`, keeping a final eos the tokenizer adds) and how many were cut."""
    if not texts:  # eval_generate_examples: 0 (fast tokenizers fail on an empty list)
        return [], 0
    rows = tokenizer(texts, add_special_tokens=True, verbose=False)["input_ids"]
    return _cut(rows, limit, tokenizer.eos_token_id)


def encode_targets(tokenizer: Any, texts: list[str], limit: int) -> tuple[list[list[int]], int]:
    """Target ids ending with eos (cut to `limit` tokens, eos kept last) and how many were cut."""
    eos = tokenizer.eos_token_id
    rows = tokenizer(texts, add_special_tokens=True, verbose=False)["input_ids"]
    rows = [ids if ids and ids[-1] == eos else [*ids, eos] for ids in rows]
    return _cut(rows, limit, eos)


def _cut(rows: list[list[int]], limit: int | None, eos: int | None) -> tuple[list[list[int]], int]:
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
    options: dict[str, Any] = {
        "max_new_tokens": settings.max_new_tokens, "do_sample": settings.do_sample, "num_beams": settings.num_beams,
        "num_return_sequences": settings.num_return_sequences, "no_repeat_ngram_size": settings.no_repeat_ngram_size,
        "use_cache": True, "return_dict_in_generate": True, "output_scores": settings.num_beams > 1,
    }  # fmt: skip
    if settings.num_beams > 1:
        options.update(length_penalty=settings.length_penalty, early_stopping=settings.early_stopping)
    if settings.do_sample:
        # top_k=0 / top_p=1.0 switch the filters off; None would fall back to the model's defaults (top_k 50).
        options.update(temperature=settings.temperature, top_k=settings.top_k or 0, top_p=settings.top_p or 1.0)
    was_training = model.training
    model.eval()
    results: list[list[Generated]] = [[] for _ in sources]
    n = settings.num_return_sequences
    device = model.device
    try:
        # Its own RNG stream: a validation mid-training must not reset the training's (dropout, each rank's own).
        with torch.random.fork_rng(devices=[] if device.type == "cpu" else [device], device_type=device.type):
            torch.manual_seed(settings.seed if settings.seed is not None else seed)
            for done, batch in length_batches(sources, batch_size):
                input_ids, mask = pad_rows([sources[i] for i in batch], pad_id, left=False)
                with torch.inference_mode(), precision.autocast():
                    output = model.generate(input_ids=input_ids.to(device), attention_mask=mask.to(device), **options)
                scores = output.sequences_scores.tolist() if getattr(output, "sequences_scores", None) is not None else None
                for row, ids in enumerate(output.sequences[:, 1:].tolist()):  # [:, 1:]: the decoder start token
                    kept = [token for token in ids if token != pad_id]
                    text = tokenizer.decode(kept, skip_special_tokens=True)
                    results[batch[row // n]].append(Generated(text, kept, scores[row] if scores is not None else None))
                if report is not None:
                    report(done)
    finally:
        model.train(was_training)
    return results
