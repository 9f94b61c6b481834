"""Answers from the start/end logits of every window of a context: spans back to context characters, with scores.

Contract (`read_answers(windows, logits, contexts, top_k, max_answer_length, null_threshold)`):

- Per window, as transformers' question-answering pipeline did (its `select_starts_ends` / `decode_spans`,
  still shipped in `transformers.pipelines.document_question_answering`): logits of tokens outside the
  context (question, special tokens, padding) are masked, except [CLS]; start and end logits each go through a
  softmax over the window; a span (s, e) with s ≤ e < s + `max_answer_length` tokens scores P(start = s) ·
  P(end = e). Every span of every window is a candidate (not an n-best cut of starts and ends), so the best
  span is exact.
- An answer is `context[offset(s).start : offset(e).end]`: the context's own characters, unchanged.
  Candidates of all windows of a context are ranked by score; the same character span found in two
  overlapping windows is listed once, with its higher score. `top_k` answers per question.
- No answer (SQuAD v2): the null score is the smallest P(start = [CLS]) · P(end = [CLS]) over the windows (the
  pipeline's `min_null_score`). With `null_threshold` set, the answer is "" (start = end = 0) when
  log(null score) − log(best span score) > `null_threshold`; within one window this difference is exactly
  run_qa.py's `null_score_diff_threshold` rule on logits. The empty answer then heads the list.
- `logits[w]` is a (2, tokens) array (start row, end row) at least as long as window w.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from seqlm.data.qa_windows import QAWindows

_MASKED = -10000.0  # the pipeline's value: a masked token's probability is exactly 0 in float32


@dataclass(frozen=True)
class Answer:
    text: str
    start: int  # character offsets into the context
    end: int
    score: float

    def record(self) -> dict[str, object]:
        return {"answer": self.text, "start": self.start, "end": self.end, "score": self.score}


def window_spans(
    start_logits: np.ndarray, end_logits: np.ndarray, offsets: np.ndarray, top_k: int, max_answer_length: int
) -> tuple[list[tuple[int, int, float]], float]:
    """The `top_k` best (start char, end char, score) spans of one window, and its null score."""
    n = len(offsets)
    context = offsets[:, 0] >= 0
    allowed = context.copy()
    allowed[0] = True  # [CLS] (first in BERT-style windows) keeps its share of the softmax: the null score
    start = _softmax(np.where(allowed, start_logits[:n], _MASKED))
    end = _softmax(np.where(allowed, end_logits[:n], _MASKED))
    null = float(start[0] * end[0])
    start[~context], end[~context] = 0.0, 0.0
    candidates = np.tril(np.triu(np.outer(start, end)), max_answer_length - 1)
    flat = candidates.ravel()
    k = min(top_k, flat.size)
    best = np.argpartition(-flat, k - 1)[:k] if k < flat.size else np.arange(flat.size)
    best = best[np.argsort(-flat[best], kind="stable")]
    spans = []
    for index in best:
        s, e = divmod(int(index), n)
        if flat[index] > 0 and context[s] and context[e]:
            spans.append((int(offsets[s, 0]), int(offsets[e, 1]), float(flat[index])))
    return spans, null


def read_answers(
    windows: QAWindows,
    logits: list[np.ndarray],
    contexts: list[str],
    top_k: int,
    max_answer_length: int,
    null_threshold: float | None,
) -> list[list[Answer]]:
    """Per example, its answers best first (see the module docstring)."""
    found: list[dict[tuple[int, int], float]] = [{} for _ in contexts]
    nulls = [math.inf] * len(contexts)
    for w, example in enumerate(windows.example.tolist()):
        spans, null = window_spans(logits[w][0], logits[w][1], windows.offsets[w], top_k, max_answer_length)
        nulls[example] = min(nulls[example], null)
        for start, end, score in spans:
            if score > found[example].get((start, end), -1.0):
                found[example][(start, end)] = score
    answers = []
    for example, context in enumerate(contexts):
        ranked = sorted(found[example].items(), key=lambda item: (-item[1], item[0]))[:top_k]
        listed = [Answer(context[start:end], start, end, score) for (start, end), score in ranked]
        if null_threshold is not None and _says_none(nulls[example], listed, null_threshold):
            listed = [Answer("", 0, 0, nulls[example]), *listed][:top_k]
        answers.append(listed or [Answer("", 0, 0, 0.0)])
    return answers


def _says_none(null: float, listed: list[Answer], threshold: float) -> bool:
    if not listed or listed[0].score <= 0.0:
        return True
    if null <= 0.0:
        return False
    return math.log(null) - math.log(listed[0].score) > threshold


def _softmax(values: np.ndarray) -> np.ndarray:
    shifted = np.exp(values - values.max())
    return shifted / shifted.sum()
