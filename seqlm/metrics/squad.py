"""SQuAD exact match and F1, offline: the official evaluation's normalisation and arithmetic.

Contract:
- `normalize_answer`, `f1_score`, `exact_match_score`: the SQuAD v1.1 evaluation script's functions (lower
  case, punctuation removed, the articles a/an/the removed, whitespace collapsed; F1 over the bag of
  normalised tokens, 0 when no token is shared).
- `squad_scores(predictions, golds)`: percentages (0-100), each question scored against its best gold answer
  (max over golds) and summed in question order, so the figures equal the v1.1 script's on the same
  predictions. A question with no gold answer (SQuAD v2's unanswerable) scores 1 when the prediction is empty
  after normalisation, else 0 (the v2 script's rule); with any such question the result adds the v2 script's
  HasAns / NoAns splits (`has_ans_*`, `no_ans_*`, with their counts).
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = set(string.punctuation)


def normalize_answer(s: str) -> str:
    """Lower text and remove punctuation, articles and extra whitespace (the official order of steps)."""
    text = "".join(ch for ch in s.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def f1_score(prediction: str, ground_truth: str) -> float:
    prediction_tokens = normalize_answer(prediction).split()
    ground_truth_tokens = normalize_answer(ground_truth).split()
    num_same = sum((Counter(prediction_tokens) & Counter(ground_truth_tokens)).values())
    if num_same == 0:
        return 0
    precision = 1.0 * num_same / len(prediction_tokens)
    recall = 1.0 * num_same / len(ground_truth_tokens)
    return (2 * precision * recall) / (precision + recall)


def exact_match_score(prediction: str, ground_truth: str) -> bool:
    return normalize_answer(prediction) == normalize_answer(ground_truth)


def _question_scores(prediction: str, golds: Sequence[str]) -> tuple[float, float]:
    if not golds:  # unanswerable: right only when nothing is answered
        right = float(normalize_answer(prediction) == "")
        return right, right
    return max(exact_match_score(prediction, gold) for gold in golds), max(f1_score(prediction, gold) for gold in golds)


def squad_scores(predictions: Sequence[str], golds: Sequence[Sequence[str]]) -> dict[str, float]:
    """exact_match and f1 (percent) of `predictions[i]` against `golds[i]` (see the module docstring)."""
    if len(predictions) != len(golds):
        raise ValueError(f"{len(predictions)} predictions for {len(golds)} questions")
    sums = {"has": [0.0, 0.0, 0], "no": [0.0, 0.0, 0]}
    exact_match = f1 = 0.0
    for prediction, gold in zip(predictions, golds):
        em, f = _question_scores(prediction, gold)
        exact_match += em
        f1 += f
        part = sums["has" if gold else "no"]
        part[0], part[1], part[2] = part[0] + em, part[1] + f, part[2] + 1
    total = len(predictions)
    result = {
        "exact_match": 100.0 * exact_match / total if total else float("nan"),
        "f1": 100.0 * f1 / total if total else float("nan"),
        "questions": float(total),
    }
    if sums["no"][2]:
        for name, (em, f, count) in (("has_ans", sums["has"]), ("no_ans", sums["no"])):
            result[f"{name}_exact_match"] = 100.0 * em / count if count else float("nan")
            result[f"{name}_f1"] = 100.0 * f / count if count else float("nan")
            result[f"{name}_questions"] = float(count)
    return result
