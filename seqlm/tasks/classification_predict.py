"""`seqlm predict` for sequence-classification models (`*ForSequenceClassification` checkpoints).

Inputs (with their `text_pair_field` values, for sentence pairs) are tokenized in one batched call,
`tokenizer(texts, text_pairs)`, by the same `seqlm.data.text_examples.encode_texts` as `seqlm finetune`
encodes its examples (an empty pair is an empty second segment; a single-input call, as in
transformers' pipeline, would drop it). Inputs longer than `max_length` tokens (default: the model's
positions) are cut to it (pairs lose tokens from the longer side first) and counted; of a long input only a
prefix that still has more than `max_length` tokens is tokenized (`seqlm.data.long_documents.token_prefix`:
the kept tokens are the same, and memory does not grow with the input). Batches of similar length are padded on the right. GPT-style models pool the
last token that is not the pad token, so padding uses the pad id the model knows (`config.pad_token_id`,
which `model_loading` fills in from the tokenizer): batched predictions equal one-at-a-time ones. An
input that tokenizes to nothing (an empty line, with a tokenizer that adds no special tokens) is scored
as the lone BOS/EOS token.

Record: {"input", "input_pair" (pairs only), "label": the top class's name from config.id2label,
"score": its probability, "scores": the `top_k` most probable classes as [{"label", "score"}], sorted
by score, descending}. Probabilities are those of the pipeline: a softmax over the classes (they sum
to 1 with top_k ≥ the number of classes), a sigmoid per class for multi-label or one-label models, the
raw logit for regression.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch

from seqlm.config.inference import PredictConfig
from seqlm.data.long_documents import token_prefix
from seqlm.data.text_examples import encode_texts
from seqlm.errors import DataError
from seqlm.io.predict_inputs import InputRecord, length_batches
from seqlm.models.loading import LoadedModel, token_limit
from seqlm.runtime.device import Precision

OUTPUT_FIELDS = ("input", "input_pair", "label", "score", "scores")


def length_limit(loaded: LoadedModel, max_length: int | None) -> int:
    """Tokens per input: `max_length`, else the model's positions (or the tokenizer's limit, if lower)."""
    return token_limit(max_length, loaded.model.config, loaded.tokenizer, "max_length")


def classify(
    loaded: LoadedModel, records: list[InputRecord], config: PredictConfig, precision: Precision, limit: int | None,
    report: Any,
) -> tuple[list[dict[str, Any]], int]:
    """One record per input, in input order, and how many inputs were truncated to `limit` tokens."""
    tokenizer, model = loaded.tokenizer, loaded.model
    pairs = config.text_pair_field is not None
    # Only a prefix with more than `limit` tokens of a long input is encoded: the same tokens survive truncation.
    texts = [token_prefix(tokenizer, r.text, limit) for r in records]
    pair_texts = [token_prefix(tokenizer, r.pair or "", limit) for r in records]
    examples = encode_texts(tokenizer, texts, pair_texts if pairs else None, limit)
    encoded = [{key: rows[i].tolist() for key, rows in examples.rows.items()} for i in range(len(texts))]
    for index, features in enumerate(encoded):
        if not features["input_ids"]:
            encoded[index] = _lone_start_token(tokenizer, list(features), records[index], config.input)
    pad_id = model.config.pad_token_id
    pad_id = pad_id if pad_id is not None else (tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0)
    pad_values = {"input_ids": pad_id, "token_type_ids": getattr(tokenizer, "pad_token_type_id", 0)}
    extra_kwargs = {"use_cache": False} if "use_cache" in inspect.signature(model.forward).parameters else {}
    scoring = _scoring_function(model.config)
    id2label = model.config.id2label or {}
    results: list[dict[str, Any]] = [{} for _ in records]
    for done, batch in length_batches([e["input_ids"] for e in encoded], config.batch_size):
        inputs = _pad([encoded[i] for i in batch], pad_values)
        with precision.inference():
            logits = model(**{k: v.to(model.device) for k, v in inputs.items()}, **extra_kwargs).logits
        probs = scoring(logits.float())  # fp32: autocast logits may be bf16
        top_k = min(config.top_k, probs.shape[-1])
        scores, ids = probs.topk(top_k, dim=-1)
        for index, id_row, score_row in zip(batch, ids.tolist(), scores.tolist()):
            ranked = [{"label": str(id2label.get(i, f"LABEL_{i}")), "score": s} for i, s in zip(id_row, score_row)]
            result: dict[str, Any] = {"input": records[index].text}
            if pairs:
                result["input_pair"] = records[index].pair
            results[index] = {**result, "label": ranked[0]["label"], "score": ranked[0]["score"], "scores": ranked}
        report(done)
    return results, examples.truncated


def _lone_start_token(tokenizer: Any, keys: list[str], record: InputRecord, source: str) -> dict[str, list[int]]:
    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if start is None:
        name = "<stdin>" if source == "-" else source
        raise DataError(f"{name}:{record.line}: the input gives no tokens, and the tokenizer has no BOS/EOS token to score")
    return {key: [start] if key == "input_ids" else [1] if key == "attention_mask" else [0] for key in keys}


def _scoring_function(config: Any) -> Any:
    """The text-classification pipeline's default: softmax, sigmoid (multi-label / one label) or none (regression)."""
    if config.problem_type == "regression":
        return lambda logits: logits
    if config.problem_type == "multi_label_classification" or config.num_labels == 1:
        return torch.sigmoid
    return lambda logits: logits.softmax(-1)


def _pad(batch: list[dict[str, list[int]]], pad_values: dict[str, int]) -> dict[str, torch.Tensor]:
    """Right-pad every field of the batch to its longest row (attention masks and others with 0)."""
    width = max(len(features["input_ids"]) for features in batch)
    return {
        key: torch.tensor([row[key] + [pad_values.get(key, 0)] * (width - len(row[key])) for row in batch], dtype=torch.long)
        for key in batch[0]
    }
