"""Causal language modelling (GPT-style): perplexity for `evaluate`, continuations for `predict`.

evaluate — token-level perplexity. The split's token stream (documents in order, each ending with
the separator token) is cut into windows of `seq_len` tokens that start every `stride` tokens.
Each window scores only the tokens no earlier window scored, using the window's preceding tokens
as context; with `stride == seq_len` (the default) windows do not overlap and the first token of
each window, having no context inside it, is not scored — exactly what validation during
`seqlm pretrain` computes. A smaller stride gives every scored token more context (and costs
seq_len/stride times more compute). perplexity = exp(Σ NLL / Σ scored tokens).

predict — {"input", "generated" (the continuation only, special tokens removed),
"n_generated_tokens" (new tokens before EOS, the EOS itself not counted)}. An empty prompt starts
from the BOS token. Prompts longer than the model's positions minus max_new_tokens keep their
most recent tokens; how many were cut is reported as a warning at the end.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import numpy as np
import torch

from seqlm.config.inference import EvaluateConfig, PredictConfig
from seqlm.console import Console
from seqlm.data.batch import Batch
from seqlm.data.long_documents import token_suffix
from seqlm.data.masking import IGNORE_INDEX
from seqlm.data.token_source import load_split
from seqlm.errors import ConfigError, DataError
from seqlm.io.predict_inputs import InputRecord
from seqlm.metrics.scoring import score_batches
from seqlm.models.loading import LoadedModel, token_limit
from seqlm.runtime.device import Precision
from seqlm.runtime.distributed import Cluster
from seqlm.tasks import seq2seq_generation as generation
from seqlm.tasks.objectives import OBJECTIVES, check_language_model_options
from seqlm.tasks.task import Predictions, Task


def evaluate(
    loaded: LoadedModel, config: EvaluateConfig, precision: Precision, device: torch.device, console: Console, cluster: Cluster
) -> dict[str, Any]:
    split = load_split(config.data, config.split, loaded.tokenizer, "clm", config.model)
    seq_len = token_limit(config.seq_len, loaded.model.config, loaded.tokenizer, "seq_len")
    console.info(f"evaluate clm: {config.model} on {config.data} [{config.split}], windows of {seq_len}")
    metrics = _causal_metrics(loaded.model, split, seq_len, config, precision, device, cluster)
    return {"model": str(config.model), "data": str(config.data), "split": config.split, **metrics}


def causal_windows(n_tokens: int, seq_len: int, stride: int) -> list[tuple[int, int, int]]:
    """(begin, end, n_context) per window: tokens[begin:end], the first n_context only as context."""
    windows = []
    scored_until = 0
    for begin in range(0, n_tokens - 1, stride):
        end = min(begin + seq_len, n_tokens)
        # Every token in [max(scored_until, begin + 1), end) is scored here; the rest is context.
        n_context = max(scored_until, begin + 1) - begin
        if end - begin > n_context:
            windows.append((begin, end, n_context))
        scored_until = end
        if end == n_tokens:
            break
    return windows


def _causal_metrics(
    model: Any, split: Any, seq_len: int, config: EvaluateConfig, precision: Precision, device: torch.device, cluster: Cluster
) -> dict[str, Any]:
    stride = min(config.stride or seq_len, seq_len)
    windows = causal_windows(split.n_tokens, seq_len, stride)
    if config.max_batches is not None:
        windows = windows[: config.max_batches * config.batch_size]
    groups = [windows[i : i + config.batch_size] for i in range(0, len(windows), config.batch_size)]
    scores = score_batches(model, OBJECTIVES["clm"], _CausalBatches(split, groups), precision, device, cluster)
    return {
        "objective": "clm",
        "loss": scores["loss"],
        "perplexity": scores["perplexity"],
        "tokens": scores["tokens"],
        "windows": len(windows),
        "seq_len": seq_len,
        "stride": stride,
    }


class _CausalBatches(Sequence[Batch]):
    """The batches of a split's windows, each built when it is scored (by the rank that scores it)."""

    def __init__(self, split: Any, groups: list[list[tuple[int, int, int]]]):
        self.split, self.groups = split, groups

    def __len__(self) -> int:
        return len(self.groups)

    def __getitem__(self, index: int) -> Batch:  # type: ignore[override]
        return _causal_batch(self.split, self.groups[index])


def _causal_batch(split: Any, windows: list[tuple[int, int, int]]) -> Batch:
    width = max(end - begin for begin, end, _ in windows)
    input_ids = torch.zeros((len(windows), width), dtype=torch.long)
    attention_mask = torch.zeros_like(input_ids)
    labels = torch.full_like(input_ids, IGNORE_INDEX)
    for row, (begin, end, n_context) in enumerate(windows):
        ids = torch.from_numpy(np.asarray(split.tokens[begin:end], dtype=np.int64))
        input_ids[row, : len(ids)] = ids
        attention_mask[row, : len(ids)] = 1
        labels[row, n_context : len(ids)] = ids[n_context:]
    # labels[t] is predicted from position t-1: context positions keep IGNORE_INDEX.
    return Batch({"input_ids": input_ids, "attention_mask": attention_mask}, {"labels": labels})


def predict(loaded: LoadedModel, records: list[InputRecord], config: PredictConfig, precision: Precision, report: Any) -> Predictions:
    results, n_truncated = generate(loaded, records, config, precision, report)
    warnings = []
    if n_truncated:
        limit = (loaded.max_positions or 0) - config.generation.max_new_tokens
        warnings.append(
            f"{n_truncated} input(s) were longer than {limit} tokens (the model's {loaded.max_positions} positions "
            f"minus generation.max_new_tokens) and kept only their last {limit} tokens"
        )
    return Predictions(results, warnings)


def generate(
    loaded: LoadedModel, records: list[InputRecord], config: PredictConfig, precision: Precision, report: Any
) -> tuple[list[dict[str, Any]], int]:
    """Continuations of every prompt, in input order, and how many prompts were truncated."""
    tokenizer, model, gen = loaded.tokenizer, loaded.model, config.generation
    start_id = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    eos_ids = generation.stop_ids(model, tokenizer)
    limit = None
    if loaded.max_positions is not None:
        limit = loaded.max_positions - gen.max_new_tokens
        if limit < 1:
            raise ConfigError(
                f"generation.max_new_tokens ({gen.max_new_tokens}) leaves no room for a prompt in the model's "
                f"{loaded.max_positions} positions; lower it"
            )
    prompts, n_truncated = [], 0
    # verbose=False: over-long prompts are handled (and reported) below, not by a tokenizer warning.
    # Of a long prompt only an end with more than `limit` tokens is encoded: the same last tokens are kept.
    texts = [token_suffix(tokenizer, r.text, limit) if limit is not None else r.text for r in records]
    for record, ids in zip(records, tokenizer(texts, verbose=False)["input_ids"]):
        if not ids:
            if start_id is None:
                raise DataError(f"line {record.line}: empty prompt, and the tokenizer has no BOS/EOS token to start from")
            ids = [start_id]
        if limit is not None and len(ids) > limit:
            ids, n_truncated = ids[-limit:], n_truncated + 1  # keep the most recent context
        prompts.append(ids)
    # seqlm's decoding loops (rows leave the batch as they end, batches decoded at once on a CPU), left padding,
    # KV cache, batches by length; `generation.seed` or the command's seed fixes sampling.
    generated = generation.generate(model, tokenizer, prompts, gen, config.batch_size, precision, config.seed, report)
    results: list[dict[str, Any]] = []
    for record, (best, *_) in zip(records, generated):
        ids = best.token_ids[:-1] if best.token_ids and best.token_ids[-1] in eos_ids else best.token_ids
        results.append({"input": record.text, "generated": tokenizer.decode(ids, skip_special_tokens=True), "n_generated_tokens": len(ids)})
    return results, n_truncated


TASK = Task(
    name="clm",
    head="causal_lm",
    objective=OBJECTIVES["clm"],
    evaluate=evaluate,
    predict=predict,
    check_predict=partial(check_language_model_options, "clm"),
    output_fields=frozenset({"input", "generated", "n_generated_tokens"}),
)
