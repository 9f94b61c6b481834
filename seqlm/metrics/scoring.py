"""Score a model over batches: the numbers validation and `seqlm evaluate` report.

Sums are accumulated through seqlm's `evaluate` metric modules, so the loss is exactly
Σ NLL / Σ scored tokens over the whole set (not a mean of batch means).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch

from seqlm.data.batch import Batch
from seqlm.metrics import load_metric
from seqlm.runtime.device import Precision
from seqlm.runtime.distributed import SINGLE, Cluster, sharded_results
from seqlm.training.objective import Objective


class ScoreAccumulator:
    """Collects an objective's per-batch scores; `compute()` gives the flat metric dict."""

    def __init__(self) -> None:
        self.lm = load_metric("token_perplexity")
        self.lm_accuracy = load_metric("accuracy")
        self.nsp = load_metric("token_perplexity")
        self.nsp_accuracy = load_metric("accuracy")
        self.has_accuracy = False
        self.has_nsp = False

    def add(self, scores: dict[str, Any]) -> None:
        self.lm.add_batch(predictions=[scores["nll"]], references=[scores["tokens"]])
        if "predicted" in scores:
            self.has_accuracy = True
            self.lm_accuracy.add_batch(predictions=scores["predicted"].tolist(), references=scores["expected"].tolist())
        if "nsp_nll" in scores:
            self.has_nsp = True
            self.nsp.add_batch(predictions=[scores["nsp_nll"]], references=[scores["pairs"]])
            self.nsp_accuracy.add_batch(
                predictions=scores["nsp_predicted"].tolist(), references=scores["nsp_expected"].tolist()
            )

    def compute(self) -> dict[str, float]:
        lm = self.lm.compute()
        result = {"loss": lm["loss"], "perplexity": lm["perplexity"], "tokens": lm["tokens"]}
        if self.has_accuracy:
            result["accuracy"] = self.lm_accuracy.compute()["accuracy"]
        if self.has_nsp:
            result["nsp_loss"] = self.nsp.compute()["loss"]
            result["nsp_accuracy"] = self.nsp_accuracy.compute()["accuracy"]
        return result


def batch_scores(
    model: Any,
    objective: Objective,
    batches: Iterable[Batch],
    precision: Precision,
    device: torch.device,
    cluster: Cluster = SINGLE,
    lockstep: bool = False,
) -> Iterator[dict[str, Any]]:
    """`objective.score` of each batch in batch order (eval mode while it runs, restored after).

    Under torchrun each rank scores every W-th batch and every rank gets all the scores, so sums
    over them are the figures one process would compute. `lockstep`: `model` is FSDP-sharded, so
    every rank makes the same number of forward passes."""

    # The output layer only where a token is scored, when the objective can (a language model's logits over the
    # vocabulary at every position are most of an evaluation's memory); one process only: a wrapped (DDP/FSDP)
    # model is scored through its own forward.
    fast = objective.fast_score if not cluster.distributed else None
    inner = model.model if hasattr(model, "objective") else model  # training's ObjectiveModule: the HF model inside

    def score(batch: Batch) -> dict[str, Any]:
        batch = batch.to(device)
        with precision.inference():
            scores = fast(inner, batch) if fast is not None else None
            return scores if scores is not None else objective.score(model(**batch.inputs), batch)

    was_training = model.training
    model.eval()
    try:
        if cluster.distributed:
            yield from sharded_results(cluster, list(batches), score, lockstep)
        else:
            yield from (score(batch) for batch in batches)  # one batch in memory at a time
    finally:
        model.train(was_training)


def score_batches(
    model: Any,
    objective: Objective,
    batches: Iterable[Batch],
    precision: Precision,
    device: torch.device,
    cluster: Cluster = SINGLE,
    lockstep: bool = False,
) -> dict[str, float]:
    """Metrics of `model` over `batches` (see `batch_scores`)."""
    accumulator = ScoreAccumulator()
    for scores in batch_scores(model, objective, batches, precision, device, cluster, lockstep):
        accumulator.add(scores)
    return accumulator.compute()


def score_classifier(
    model: Any,
    objective: Objective,
    batches: list[Batch],
    names: list[str],
    precision: Precision,
    device: torch.device,
    cluster: Cluster = SINGLE,
    lockstep: bool = False,
) -> dict[str, float]:
    """loss (mean cross-entropy), accuracy and macro F1 of `model` over `batches` (see `batch_scores`)."""
    sums = ScoreAccumulator()
    report = load_metric("classification_report")
    for scores in batch_scores(model, objective, batches, precision, device, cluster, lockstep):
        sums.add(scores)
        report.add_batch(predictions=scores["predicted"].tolist(), references=scores["expected"].tolist())
    loss = sums.compute()
    classes = report.compute(num_labels=len(names), label_names=names)
    return {"loss": loss["loss"], "accuracy": classes["accuracy"], "macro_f1": classes["macro_f1"], "examples": loss["tokens"]}
