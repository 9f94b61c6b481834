"""Question + context pairs to model windows for extractive QA, with the character offsets to read answers back.

Contract (`encode_qa(tokenizer, questions, contexts, max_length, doc_stride, answers)`):

- One fast-tokenizer call for the whole set: `[CLS] question [SEP] context piece [SEP]`, truncated on the
  context only ("only_second"); a context longer than one window is cut into overlapping windows, each
  sharing `doc_stride` context tokens with the one before (`return_overflowing_tokens`, as run_qa.py and
  transformers' former question-answering pipeline do). Leading whitespace of a question is dropped (it only
  costs tokens; run_qa.py does the same). A question so long that a window would have no room for
  `doc_stride + 1` context tokens is cut to its first tokens that leave that room (`n_cut_questions`; run_qa.py
  fails on such a question instead).
- `offsets[w]`: per token, its (start, end) character span in the example's context, -1 for every token
  that is not context (question, special tokens), so an answer is always read from the context as given:
  whitespace, case, accents and multi-byte characters kept.
- `answers[e]`: the (start, end) character span training points at (the first gold answer), or None for an
  unanswerable question. A window that does not hold the whole span is labelled with the [CLS] token
  (index of `cls_token_id`, else 0), as run_qa.py does; otherwise the first and last tokens covering it.
- `example[w]`: the example each window belongs to (windows are in example order).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from seqlm.errors import ConfigError, DataError


@dataclass
class QAWindows:
    input_ids: list[np.ndarray]
    attention_mask: list[np.ndarray]
    token_type_ids: list[np.ndarray] | None
    offsets: list[np.ndarray]  # (tokens, 2) int64 character spans into the context; -1 outside the context
    example: np.ndarray  # the example of each window
    start_positions: np.ndarray | None  # token index per window (None: no answers given)
    end_positions: np.ndarray | None
    n_split: int  # examples needing more than one window
    n_cut_questions: int = 0  # questions cut to leave room for the context

    def __len__(self) -> int:
        return len(self.input_ids)


def default_stride(max_length: int) -> int:
    """`qa.doc_stride: null`: a third of the window, run_qa.py's 128 of 384."""
    return max_length // 3


def encode_qa(
    tokenizer: Any,
    questions: list[str],
    contexts: list[str],
    max_length: int,
    doc_stride: int,
    answers: list[tuple[int, int] | None] | None = None,
) -> QAWindows:
    """Windows of at most `max_length` tokens over every (question, context); see the module docstring."""
    if not getattr(tokenizer, "is_fast", False):
        raise DataError("extractive QA needs a fast tokenizer (offsets into the context); the model's tokenizer is not one")
    questions, n_cut = _fitted_questions(tokenizer, [question.lstrip() for question in questions], max_length, doc_stride)
    encoded = tokenizer(
        questions, contexts, truncation="only_second", max_length=max_length, stride=doc_stride,
        return_overflowing_tokens=True, return_offsets_mapping=True, padding=False, verbose=False,
    )  # fmt: skip
    owner = np.asarray(encoded["overflow_to_sample_mapping"], dtype=np.int64)
    has_types = "token_type_ids" in encoded
    offsets, starts, ends = [], [], []
    for w in range(len(owner)):
        spans = np.asarray(encoded["offset_mapping"][w], dtype=np.int64).reshape(-1, 2)
        context = np.asarray([sequence == 1 for sequence in encoded.sequence_ids(w)])
        spans[~context] = -1
        offsets.append(spans)
        if answers is not None:
            start, end = _label(spans, encoded["input_ids"][w], tokenizer.cls_token_id, answers[owner[w]])
            starts.append(start)
            ends.append(end)
    counts = np.bincount(owner, minlength=len(questions))
    return QAWindows(
        input_ids=[np.asarray(ids, dtype=np.int64) for ids in encoded["input_ids"]],
        attention_mask=[np.asarray(mask, dtype=np.int64) for mask in encoded["attention_mask"]],
        token_type_ids=[np.asarray(types, dtype=np.int64) for types in encoded["token_type_ids"]] if has_types else None,
        offsets=offsets,
        example=owner,
        start_positions=np.asarray(starts, dtype=np.int64) if answers is not None else None,
        end_positions=np.asarray(ends, dtype=np.int64) if answers is not None else None,
        n_split=int((counts > 1).sum()),
        n_cut_questions=n_cut,
    )


def _label(spans: np.ndarray, input_ids: list[int], cls_id: int | None, answer: tuple[int, int] | None) -> tuple[int, int]:
    """(start token, end token) of the answer in this window, or ([CLS], [CLS]) when it is not wholly inside."""
    cls_index = input_ids.index(cls_id) if cls_id is not None and cls_id in input_ids else 0
    inside = np.flatnonzero(spans[:, 0] >= 0)
    if answer is None or not len(inside):
        return cls_index, cls_index
    start_char, end_char = answer
    first, last = inside[0], inside[-1]
    if spans[first, 0] > start_char or spans[last, 1] < end_char:
        return cls_index, cls_index
    # The first context token that ends after the answer starts, and the last that starts before it ends.
    start = first + int(np.argmax(spans[first : last + 1, 1] > start_char))
    end = last - int(np.argmax(spans[first : last + 1, 0][::-1] < end_char))
    return int(start), int(max(end, start))


def _fitted_questions(tokenizer: Any, questions: list[str], max_length: int, doc_stride: int) -> tuple[list[str], int]:
    """The questions, each cut (at a token's end) to leave room for doc_stride + 1 context tokens; how many were cut."""
    limit = max_length - tokenizer.num_special_tokens_to_add(pair=True) - doc_stride - 1
    if limit < 1:
        raise ConfigError(
            f"max_length {max_length} leaves no room for a question beside qa.doc_stride ({doc_stride}) context tokens; "
            "raise max_length or lower qa.doc_stride"
        )
    encoded = tokenizer(questions, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
    fitted, cut = [], 0
    for question, offsets in zip(questions, encoded["offset_mapping"]):
        if len(offsets) > limit:
            question, cut = question[: offsets[limit - 1][1]], cut + 1
        fitted.append(question)
    return fitted, cut
