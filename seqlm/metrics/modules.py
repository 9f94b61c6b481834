"""seqlm's metric modules: `evaluate.Metric` subclasses shipped in the package.

`evaluate.load("accuracy")` fetches code from the Hugging Face hub, which fails offline and
is a moving target; these modules run anywhere and give the same numbers every time.
Load them with `seqlm.metrics.load_metric(name)`; each follows the `evaluate` protocol
(`add_batch`, `compute`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import datasets
import evaluate
import numpy as np

from seqlm.metrics.generation import generation_scores
from seqlm.metrics.sequence_labelling import sequence_labelling_scores


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


class ClassificationReport(_Metric):
    """Single-label classification: accuracy, macro / weighted precision, recall, F1, per-class
    scores and the confusion matrix, from predicted and true class ids.

    `compute(num_labels=..., label_names=[...])`: `num_labels` fixes the classes
    0..num_labels-1 (default: len(label_names), else max id + 1); `label_names[i]` names class
    i in `per_class` and `labels` (default: "0", "1", ...). A ratio with a zero denominator is
    0.0 (scikit-learn's zero_division=0). Macro averages are over the classes that occur in
    the references or the predictions (scikit-learn's default); weighted averages weight every
    class by its support. `confusion_matrix[i][j]` counts examples of true class i predicted as j.
    """

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description="Accuracy, macro/weighted precision, recall and F1, per-class scores and the confusion matrix.",
            citation="",
            inputs_description="predictions: int class ids; references: int class ids; "
            "compute kwargs: num_labels (int), label_names (list of str)",
            features=datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
        )

    def _compute(
        self,
        predictions: Sequence[int],
        references: Sequence[int],
        num_labels: int | None = None,
        label_names: Sequence[str] | None = None,
    ) -> dict[str, Any]:
        predicted = np.asarray(predictions, dtype=np.int64).reshape(-1)
        expected = np.asarray(references, dtype=np.int64).reshape(-1)
        if num_labels is None:
            num_labels = len(label_names) if label_names is not None else int(max(predicted.max(initial=-1), expected.max(initial=-1))) + 1
        if label_names is not None and len(label_names) != num_labels:
            raise ValueError(f"label_names has {len(label_names)} names for {num_labels} labels")
        names = [str(name) for name in label_names] if label_names is not None else [str(i) for i in range(num_labels)]
        if len(set(names)) != len(names):
            raise ValueError(f"label_names repeat a name: {names}")
        for what, ids in (("predictions", predicted), ("references", expected)):
            if ids.size and (ids.min() < 0 or ids.max() >= num_labels):
                raise ValueError(f"{what} hold class ids outside 0..{num_labels - 1}")

        matrix = np.zeros((num_labels, num_labels), dtype=np.int64)
        np.add.at(matrix, (expected, predicted), 1)
        true_positives = np.diag(matrix).astype(np.float64)
        support = matrix.sum(axis=1)  # true examples per class
        predicted_count = matrix.sum(axis=0)
        precision = _ratio(true_positives, predicted_count)
        recall = _ratio(true_positives, support)
        f1 = _ratio(2 * true_positives, support + predicted_count)  # = 2PR / (P + R), 0 when undefined

        present = (support + predicted_count) > 0
        total = int(support.sum())
        nan = float("nan")

        def macro(values: np.ndarray) -> float:
            return float(values[present].mean()) if present.any() else nan

        def weighted(values: np.ndarray) -> float:
            return float((values * support).sum() / total) if total else nan

        return {
            "accuracy": float(true_positives.sum() / total) if total else nan,
            "macro_precision": macro(precision),
            "macro_recall": macro(recall),
            "macro_f1": macro(f1),
            "weighted_precision": weighted(precision),
            "weighted_recall": weighted(recall),
            "weighted_f1": weighted(f1),
            "examples": total,
            "per_class": {
                name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]), "support": int(support[i])}
                for i, name in enumerate(names)
            },
            "labels": names,
            "confusion_matrix": matrix.tolist(),
        }


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator element-wise, 0.0 where the denominator is 0."""
    denominator = np.asarray(denominator, dtype=np.float64)
    out = np.zeros_like(denominator)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


class SequenceLabelling(_Metric):
    """Token classification (NER, POS) from tag sequences: `seqlm.metrics.sequence_labelling_scores`.

    predictions / references: one list of tag strings per sequence (words, not word pieces).
    `compute(scheme=..., mode=...)`: scheme "auto" (default: detected from the tags), "IOB1", "IOB2",
    "IOE1", "IOE2", "IOBES", "BILOU" for entity precision / recall / F1 (seqeval's), or None for
    per-tag scores and the confusion matrix (scikit-learn's); mode "default" (conlleval) or "strict".
    """

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description="Token accuracy plus entity (seqeval) or per-tag (scikit-learn) precision, recall and F1.",
            citation="",
            inputs_description="predictions: lists of tag strings; references: lists of tag strings; "
            "compute kwargs: scheme (str or None), mode ('default' or 'strict')",
            features=datasets.Features(
                {"predictions": datasets.Sequence(datasets.Value("string")), "references": datasets.Sequence(datasets.Value("string"))}
            ),
        )

    def _compute(
        self,
        predictions: Sequence[Sequence[str]],
        references: Sequence[Sequence[str]],
        scheme: str | None = "auto",
        mode: str = "default",
    ) -> dict[str, Any]:
        return sequence_labelling_scores(references, predictions, scheme=scheme, mode=mode)


class Generation(_Metric):
    """Generated text (translation, summarization): `seqlm.metrics.generation.generation_scores`.

    predictions: generated strings; references: per example one string, or a list of strings (several
    references; keep one form per metric instance, as `evaluate` fixes the format at the first batch).
    `compute(token_ids=..., pad_token_id=..., bleu_tokenize="13a")`: with the generated ids, `gen_len` is in
    non-pad tokens, else in whitespace words. Corpus BLEU and chrF (sacrebleu, 0–100, with its signatures),
    ROUGE-1/2/L/Lsum F-measure ×100 (rouge-score, Porter stemming, mean over examples, best reference).
    """

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description="Corpus BLEU and chrF (sacrebleu), ROUGE-1/2/L/Lsum F-measure (rouge-score) and mean generated length.",
            citation="",
            inputs_description="predictions: generated strings; references: a string or a list of strings per example; "
            "compute kwargs: token_ids (lists of generated ids), pad_token_id (int), bleu_tokenize (str)",
            features=[
                datasets.Features(
                    {"predictions": datasets.Value("string"), "references": datasets.Sequence(datasets.Value("string"))}
                ),
                datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Value("string")}),
            ],
        )

    def _compute(
        self,
        predictions: Sequence[str],
        references: Sequence[str | Sequence[str]],
        token_ids: Sequence[Sequence[int]] | None = None,
        pad_token_id: int | None = None,
        bleu_tokenize: str = "13a",
    ) -> dict[str, Any]:
        return generation_scores(predictions, references, token_ids=token_ids, pad_token_id=pad_token_id, bleu_tokenize=bleu_tokenize)


METRICS: dict[str, type[evaluate.Metric]] = {
    "token_perplexity": TokenPerplexity,
    "accuracy": Accuracy,
    "classification_report": ClassificationReport,
    "sequence_labelling": SequenceLabelling,
    "generation": Generation,
}
