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
from the BOS token. A chat input (jsonl "messages"; "input" is its last message) is rendered with the
tokenizer's chat template, ready for the assistant's turn, and the model's answer is "generated"; so is a text
input with `apply_chat_template` (as one user message). A messages input without a chat template is a DataError. Prompts longer than the model's positions minus max_new_tokens keep their
most recent tokens; how many were cut is reported as a warning at the end.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from pathlib import Path
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
from seqlm.io.records import first_jsonl_record
from seqlm.metrics.scoring import score_batches
from seqlm.models.heads import MARKER_KEY
from seqlm.models.loading import LoadedModel, token_limit
from seqlm.runtime.device import Precision
from seqlm.runtime.distributed import Cluster
from seqlm.tasks import seq2seq_generation as generation
from seqlm.tasks.objectives import OBJECTIVES, check_language_model_options
from seqlm.tasks.seq2seq_prompts import PromptFormat
from seqlm.tasks.task import Predictions, Task


def evaluate(
    loaded: LoadedModel, config: EvaluateConfig, precision: Precision, device: torch.device, console: Console, cluster: Cluster
) -> dict[str, Any]:
    if holds_records(Path(config.data), config.source_field):
        # Prompt/completion, chat or source/target records: the causal LM scored as a prompted generator (its chat
        # template, else the default prompt template), as `task: causal_lm` trains one: the zero-shot baseline of
        # such a fine-tune, with the same prompt. Imported here: seq2seq_inference serves the fine-tuned ones.
        from seqlm.tasks import seq2seq_inference

        setattr(loaded.model.config, MARKER_KEY, PromptFormat.choose(None, loaded.tokenizer).metadata())
        return seq2seq_inference.evaluate(loaded, config, precision, device, console, cluster)
    split = load_split(config.data, config.split, loaded.tokenizer, "clm", config.model)
    seq_len = token_limit(config.seq_len, loaded.model.config, loaded.tokenizer, "seq_len")
    console.info(f"evaluate clm: {config.model} on {config.data} [{config.split}], windows of {seq_len}")
    metrics = _causal_metrics(loaded.model, split, seq_len, config, precision, device, cluster)
    return {"model": str(config.model), "data": str(config.data), "split": config.split, **metrics}


def holds_records(path: Path, source_field: str) -> bool:
    """Whether `path` is a JSON Lines file of generation records: its first record has `messages`, `prompt` and
    `completion`, or `source_field` (the documents a causal LM's perplexity is measured on are text files)."""
    row = first_jsonl_record(path)
    return row is not None and ("messages" in row or {"prompt", "completion"} <= row.keys() or source_field in row)


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


def _prompt_ids(tokenizer: Any, records: list[InputRecord], limit: int | None, chat: bool) -> list[list[int]]:
    """Each record's prompt ids: its text as written (of a long one only an end of more than `limit` tokens is
    encoded: the same last tokens are kept), or rendered with the chat template (see the module docstring)."""
    texts: dict[bool, list[tuple[int, str]]] = {False: [], True: []}  # rendered? → (record index, text)
    for index, record in enumerate(records):
        if record.messages is None and not chat:
            texts[False].append((index, token_suffix(tokenizer, record.text, limit) if limit is not None else record.text))
            continue
        if not getattr(tokenizer, "chat_template", None):
            raise DataError(f"input line {record.line}: a messages input needs a tokenizer with a chat template, and this model's "
                            "has none: give text prompts (they are continued as written)")  # fmt: skip
        messages = record.messages if record.messages is not None else [{"role": "user", "content": record.text}]
        texts[True].append((index, tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)))
    ids: list[list[int]] = [[] for _ in records]
    for rendered, pairs in texts.items():
        if pairs:  # verbose=False: over-long prompts are cut (and reported) by the caller; a rendering holds its special tokens
            encoded = tokenizer([text for _, text in pairs], add_special_tokens=not rendered, verbose=False)["input_ids"]
            for (index, _), row in zip(pairs, encoded):
                ids[index] = row
    return ids


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
    for record, ids in zip(records, _prompt_ids(tokenizer, records, limit, config.apply_chat_template)):
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
    check_predict=partial(check_language_model_options, "clm", chat=True),
    output_fields=frozenset({"input", "generated", "n_generated_tokens"}),
    takes_messages=True,
)
