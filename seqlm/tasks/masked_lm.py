"""Masked language modelling (BERT-style, optionally with next-sentence prediction).

evaluate — `[CLS]` + `seq_len - 1` tokens per window, 15% of tokens corrupted BERT-style with a
fixed seed: masked-token loss, perplexity and accuracy; plus pseudo-perplexity (Salazar et al.,
2020) on `pseudo_perplexity_windows` evenly spaced windows: every token is masked on its own and
scored given all others.

predict — {"input", "masks": one list per [MASK], in text order, of top_k {"token", "token_id",
"score" (softmax probability)} sorted by score, "filled": the input with each mask replaced by its
top-1 token}. An input without a mask token is a DataError.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any

import numpy as np
import torch

from seqlm.config.inference import EvaluateConfig, PredictConfig
from seqlm.console import Console
from seqlm.data.long_documents import token_prefix
from seqlm.data.padding import pad_rows
from seqlm.data.pretrain_batches import PretrainBatches
from seqlm.data.token_source import load_split
from seqlm.errors import DataError
from seqlm.io.predict_inputs import InputRecord, length_batches
from seqlm.metrics import load_metric
from seqlm.metrics.scoring import score_batches
from seqlm.models.loading import LoadedModel, token_limit
from seqlm.runtime.device import Precision
from seqlm.runtime.distributed import Cluster, sharded_results
from seqlm.tasks.objectives import OBJECTIVES, check_language_model_options
from seqlm.tasks.task import Predictions, Task


def evaluate(
    loaded: LoadedModel, config: EvaluateConfig, precision: Precision, device: torch.device, console: Console, cluster: Cluster
) -> dict[str, Any]:
    split = load_split(config.data, config.split, loaded.tokenizer, "mlm", config.model)
    seq_len = token_limit(config.seq_len, loaded.model.config, loaded.tokenizer, "seq_len")
    console.info(f"evaluate mlm: {config.model} on {config.data} [{config.split}], windows of {seq_len}")
    metrics = _masked_metrics(loaded.model, loaded.tokenizer, split, seq_len, config, precision, device, cluster)
    return {"model": str(config.model), "data": str(config.data), "split": config.split, **metrics}


def _masked_metrics(
    model: Any,
    tokenizer: Any,
    split: Any,
    seq_len: int,
    config: EvaluateConfig,
    precision: Precision,
    device: torch.device,
    cluster: Cluster,
) -> dict[str, Any]:
    batches = PretrainBatches(
        "mlm", split, split, tokenizer, seq_len, config.batch_size, config.seed, config.mlm_probability
    )
    n_windows = split.n_tokens // (seq_len - 1)
    n_batches = math.ceil(n_windows / config.batch_size)
    if config.max_batches is not None:
        n_batches = min(n_batches, config.max_batches)
    scores = score_batches(model, OBJECTIVES["mlm"], batches.validation(n_batches), precision, device, cluster)
    windows = batches.validation_blocks.sequential(config.pseudo_perplexity_windows)[: config.pseudo_perplexity_windows]
    pseudo = _pseudo_perplexity(model, tokenizer, windows, config.batch_size, precision, device, cluster)
    return {
        "objective": "mlm",
        "loss": scores["loss"],
        "perplexity": scores["perplexity"],
        "accuracy": scores["accuracy"],
        "masked_tokens": scores["tokens"],
        "pseudo_perplexity": pseudo["perplexity"],
        "pseudo_perplexity_tokens": pseudo["tokens"],
        "seq_len": seq_len,
        "mlm_probability": config.mlm_probability,
        "seed": config.seed,
    }


@torch.inference_mode()
def _pseudo_perplexity(
    model: Any,
    tokenizer: Any,
    windows: np.ndarray,
    batch_size: int,
    precision: Precision,
    device: torch.device,
    cluster: Cluster,
) -> dict[str, float]:
    """Mask each non-special token alone; PPPL = exp(mean NLL of the true token given all others)."""
    model.eval()
    special = set(tokenizer.all_special_ids)

    def window_nlls(window: np.ndarray) -> list[tuple[float, int]]:
        """(summed NLL, tokens) per forward pass over the window's masked copies."""
        nlls = []
        positions = [i for i, token in enumerate(window) if int(token) not in special]
        for start in range(0, len(positions), batch_size):
            chunk = positions[start : start + batch_size]
            input_ids = torch.from_numpy(np.repeat(window[None, :], len(chunk), axis=0))
            rows = torch.arange(len(chunk))
            cols = torch.tensor(chunk)
            input_ids[rows, cols] = tokenizer.mask_token_id
            with precision.autocast():
                outputs = model(input_ids=input_ids.to(device))
            logits = outputs.prediction_logits if hasattr(outputs, "prediction_logits") else outputs.logits
            log_probs = torch.log_softmax(logits[rows, cols].float(), dim=-1)
            nll = -log_probs[rows, torch.from_numpy(window[chunk]).to(device)].sum()
            nlls.append((float(nll), len(chunk)))
        return nlls

    metric = load_metric("token_perplexity")
    for nlls in sharded_results(cluster, list(windows), window_nlls):
        for nll, count in nlls:
            metric.add_batch(predictions=[nll], references=[count])
    if not len(windows):
        return {"perplexity": float("nan"), "tokens": 0}
    result = metric.compute()
    return {"perplexity": result["perplexity"], "tokens": result["tokens"]}


def predict(loaded: LoadedModel, records: list[InputRecord], config: PredictConfig, precision: Precision, report: Any) -> Predictions:
    return Predictions(fill_masks(loaded, records, config, precision, report))


def fill_masks(
    loaded: LoadedModel, records: list[InputRecord], config: PredictConfig, precision: Precision, report: Any
) -> list[dict[str, Any]]:
    """Top-k candidates for every mask token of every input, in input order."""
    tokenizer, model = loaded.tokenizer, loaded.model
    mask_token, mask_id = tokenizer.mask_token, tokenizer.mask_token_id
    name = "<stdin>" if config.input == "-" else config.input
    limit = loaded.max_positions
    # Of a long input only a prefix with more than `limit` tokens is encoded: enough to know it is too long.
    texts = [token_prefix(tokenizer, r.text, limit) if limit is not None else r.text for r in records]
    encoded = tokenizer(texts, verbose=False)["input_ids"]
    for record, text, ids in zip(records, texts, encoded):
        if mask_id not in ids and (text is record.text or mask_token not in record.text):
            raise DataError(f"{name}:{record.line}: no {mask_token} token in the input; mark each word to predict with {mask_token}")
        if limit is not None and len(ids) > limit:
            count = f"{len(ids)}" if text is record.text else f"over {len(ids)}"
            raise DataError(f"{name}:{record.line}: {count} tokens, more than the model's {limit}; shorten it")
    top_k = min(config.top_k, model.config.vocab_size)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    results: list[dict[str, Any]] = [{} for _ in records]
    for done, batch in length_batches(encoded, config.batch_size):
        input_ids, attention = pad_rows([encoded[i] for i in batch], pad_id, left=False)
        with precision.inference():
            logits = model(input_ids=input_ids.to(model.device), attention_mask=attention.to(model.device)).logits
        for row, index in enumerate(batch):
            positions = (input_ids[row] == mask_id).nonzero().flatten().to(logits.device)
            probs = logits[row, positions].float().softmax(-1)  # fp32 softmax: autocast logits may be bf16
            scores, ids = probs.topk(top_k, dim=-1)
            masks = [
                [{"token": tokenizer.decode([i]), "token_id": i, "score": s} for i, s in zip(id_row, score_row)]
                for id_row, score_row in zip(ids.tolist(), scores.tolist())
            ]
            text = records[index].text
            filled = _fill(text, mask_token, [m[0]["token"] for m in masks])
            results[index] = {"input": text, "masks": masks, "filled": filled}
        report(done)
    return results


def _fill(text: str, mask_token: str, tokens: list[str]) -> str:
    """Replace the mask tokens of `text` in order; word pieces ('##ing') lose their marker."""
    parts = text.split(mask_token)
    if len(parts) != len(tokens) + 1:  # the tokenizer matched masks the plain text search did not
        return text
    pieces = [parts[0]]
    for token, rest in zip(tokens, parts[1:]):
        pieces += [token.strip().removeprefix("##"), rest]
    return "".join(pieces)


TASK = Task(
    name="mlm",
    head="masked_lm",
    objective=OBJECTIVES["mlm"],
    evaluate=evaluate,
    predict=predict,
    check_predict=partial(check_language_model_options, "mlm"),
    output_fields=frozenset({"input", "masks", "filled"}),
)
