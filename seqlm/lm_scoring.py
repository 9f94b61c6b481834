"""Score a model over batches: the numbers validation and `seqlm evaluate` report.

Sums are accumulated through seqlm's `evaluate` metric modules, so the loss is exactly
Σ NLL / Σ scored tokens over the whole set (not a mean of batch means).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from seqlm.device import Precision
from seqlm.distributed import SINGLE, Cluster, sharded_results
from seqlm.metrics import load_metric
from seqlm.objectives import Batch, Objective


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


@torch.inference_mode()
def score_batches(
    model: Any,
    objective: Objective,
    batches: Iterable[Batch],
    precision: Precision,
    device: torch.device,
    cluster: Cluster = SINGLE,
    lockstep: bool = False,
) -> dict[str, float]:
    """Metrics of `model` over `batches` (eval mode for the duration, restored after).

    Under torchrun each rank scores every W-th batch and the per-batch scores are gathered and
    summed in batch order: the same figures as one process scoring them all. `lockstep`: `model`
    is FSDP-sharded, so every rank makes the same number of forward passes."""

    def score(batch: Batch) -> dict[str, Any]:
        batch = batch.to(device)
        with precision.autocast():
            outputs = model(**batch.inputs)
        return objective.score(outputs, batch)

    was_training = model.training
    model.eval()
    accumulator = ScoreAccumulator()
    try:
        if cluster.distributed:
            scores = sharded_results(cluster, list(batches), score, lockstep)
        else:
            scores = (score(batch) for batch in batches)  # one batch in memory at a time
        for batch_scores in scores:
            accumulator.add(batch_scores)
    finally:
        model.train(was_training)
    return accumulator.compute()


@torch.inference_mode()
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
    """loss (mean cross-entropy), accuracy and macro F1 of `model` over `batches` (eval mode, restored after).

    Under torchrun each rank scores every W-th batch; the scores are gathered in batch order, so
    every rank gets the figures one process would compute (`lockstep`: FSDP, see score_batches)."""

    def score_one(batch: Batch) -> dict[str, Any]:
        batch = batch.to(device)
        with precision.autocast():
            outputs = model(**batch.inputs)
        return objective.score(outputs, batch)

    was_training = model.training
    model.eval()
    sums = ScoreAccumulator()
    report = load_metric("classification_report")
    try:
        for scores in sharded_results(cluster, batches, score_one, lockstep):
            sums.add(scores)
            report.add_batch(predictions=scores["predicted"].tolist(), references=scores["expected"].tolist())
    finally:
        model.train(was_training)
    loss = sums.compute()
    classes = report.compute(num_labels=len(names), label_names=names)
    return {"loss": loss["loss"], "accuracy": classes["accuracy"], "macro_f1": classes["macro_f1"], "examples": loss["tokens"]}
