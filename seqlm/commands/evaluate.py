"""`seqlm evaluate`: measure a causal or masked LM on held-out text, or a classifier on a
labelled file (see `seqlm.tasks.classification_report`).

Causal LM — token-level perplexity. The split's token stream (documents in order, each
ending with the separator token) is cut into windows of `seq_len` tokens that start every
`stride` tokens. Each window scores only the tokens no earlier window scored, using the
window's preceding tokens as context; with `stride == seq_len` (the default) windows do not
overlap and the first token of each window, having no context inside it, is not scored —
exactly what validation during `seqlm pretrain` computes. A smaller stride gives every
scored token more context (and costs seq_len/stride times more compute).
perplexity = exp(Σ NLL / Σ scored tokens).

Masked LM — `[CLS]` + `seq_len - 1` tokens per window, 15% of tokens corrupted BERT-style
with a fixed seed: masked-token loss, perplexity and accuracy; plus pseudo-perplexity
(Salazar et al., 2020) on `pseudo_perplexity_windows` evenly spaced windows: every token is
masked on its own and scored given all others.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from seqlm.config.schema import EvaluateConfig
from seqlm.console import Console
from seqlm.data.batch import Batch
from seqlm.data.masking import IGNORE_INDEX
from seqlm.data.pretrain_batches import PretrainBatches
from seqlm.data.token_source import load_split
from seqlm.io.output_paths import check_output_dir, write_failure
from seqlm.metrics import load_metric
from seqlm.metrics.report import print_metrics
from seqlm.metrics.scoring import score_batches
from seqlm.models.loading import load_for_inference, remote_code_warning, token_limit
from seqlm.runtime.device import Precision, resolve_precision, select_device
from seqlm.runtime.distributed import DEFAULT_TIMEOUT_S, Cluster, joined, on_main, sharded_results
from seqlm.tasks.classification_report import evaluate_classifier
from seqlm.tasks.objectives import OBJECTIVES
from seqlm.training.run_dir import write_text_atomic


def run(config: EvaluateConfig, console: Console, json_output: bool = False) -> dict[str, Any]:
    """Under torchrun every rank holds the model and scores its share of the batches; rank 0
    gathers the scores and writes the same metrics.json one process would."""
    with joined(DEFAULT_TIMEOUT_S, config.device) as cluster:
        output_dir = config.output_dir or _default_output_dir(config.model)
        # Before the model runs: an unwritable output_dir is exit 4 at once.
        on_main(cluster, lambda: check_output_dir(output_dir))
        device = cluster.device_for(select_device(config.device))
        precision = Precision(device, resolve_precision(config.precision, device))
        if config.trust_remote_code:
            console.warn(remote_code_warning(config.model))
        loaded = load_for_inference(config.model, device, trust_remote_code=config.trust_remote_code)
        if loaded.objective == "classification":
            metrics = evaluate_classifier(loaded, config, precision, device, console, cluster)
        else:
            metrics = _language_model_metrics(loaded, config, precision, device, console, cluster)
        on_main(cluster, lambda: _write_metrics(metrics, output_dir, console, json_output))
        return metrics


def _write_metrics(metrics: dict[str, Any], output_dir: Path, console: Console, json_output: bool) -> None:
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(output_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    except OSError as exc:
        failure = write_failure(exc, output_dir / "metrics.json")
        if failure is None:
            raise
        raise failure from exc
    console.info(f"metrics written to {output_dir / 'metrics.json'}")
    print_metrics(metrics, json_output)


def _language_model_metrics(
    loaded: Any, config: EvaluateConfig, precision: Precision, device: torch.device, console: Console, cluster: Cluster
) -> dict[str, Any]:
    split = load_split(config.data, config.split, loaded.tokenizer, loaded.objective, config.model)
    seq_len = token_limit(config.seq_len, loaded.model.config, loaded.tokenizer, "seq_len")
    console.info(f"evaluate {loaded.objective}: {config.model} on {config.data} [{config.split}], windows of {seq_len}")
    if loaded.objective == "clm":
        metrics = _causal_metrics(loaded.model, split, seq_len, config, precision, device, cluster)
    else:
        metrics = _masked_metrics(loaded.model, loaded.tokenizer, split, seq_len, config, precision, device, cluster)
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


def _default_output_dir(model: str) -> Path:
    """Beside a local model (a run's model/ → the run's eval/); for a hub id, ./eval/<id>."""
    path = Path(model)
    if path.is_dir():
        return path.resolve().parent / "eval"
    return Path("eval") / model.replace("/", "--")

