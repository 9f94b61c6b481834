"""seqlm's metric modules: `evaluate.Metric` subclasses shipped in the package.

`evaluate.load("accuracy")` fetches code from the Hugging Face hub, which fails offline and
is a moving target; these modules run anywhere and give the same numbers every time.
Use `load_metric(name)`; each metric follows the `evaluate` protocol (`add_batch`, `compute`).
"""

from __future__ import annotations

import math
from typing import Any

import datasets
import evaluate


class _Metric(evaluate.Metric):
    def compute(self, *, predictions: Any = None, references: Any = None, **kwargs: Any) -> dict[str, Any] | None:
        """`evaluate.Metric.compute`; with nothing added, the metric's empty result (not a crash).\n"""
        if self.writer is None and predictions is None and references is None:
            # Nothing added (no batch at all): evaluate would fail on its missing buffer.
            return self._compute(predictions=[], references=[], **kwargs)
        return super().compute(predictions=predictions, references=references, **kwargs)


class TokenPerplexity(_Metric):
    """Token-level loss and perplexity from per-window sums.

    predictions: summed negative log-likelihood (nats) of a window; references: the number
    of tokens it scored. loss = Σ nll / Σ tokens; perplexity = exp(loss).
    """

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description="Token-level cross-entropy and perplexity from summed NLL and token counts.",
            citation="",
            inputs_description="predictions: float NLL sums; references: int token counts",
            features=datasets.Features({"predictions": datasets.Value("float64"), "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions: list[float], references: list[int]) -> dict[str, float]:
        tokens = sum(references)
        if tokens == 0:
            return {"loss": float("nan"), "perplexity": float("nan"), "tokens": 0}
        loss = sum(predictions) / tokens
        return {"loss": loss, "perplexity": math.exp(min(loss, 700.0)), "tokens": tokens}


class Accuracy(_Metric):
    """Fraction of predictions equal to their references (class ids or token ids)."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description="Accuracy: the fraction of predictions equal to the references.",
            citation="",
            inputs_description="predictions: int ids; references: int ids",
            features=datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions: list[int], references: list[int]) -> dict[str, float]:
        if not references:
            return {"accuracy": float("nan")}
        return {"accuracy": sum(p == r for p, r in zip(predictions, references)) / len(references)}


METRICS: dict[str, type[evaluate.Metric]] = {"token_perplexity": TokenPerplexity, "accuracy": Accuracy}


def load_metric(name: str, **kwargs: Any) -> evaluate.Metric:
    """An in-memory instance of one of seqlm's metrics (no hub access, no cache files)."""
    return METRICS[name](keep_in_memory=True, **kwargs)
