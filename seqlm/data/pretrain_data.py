"""Pretraining batches from a memory-mapped tokenized split, by index arithmetic.

The batch for (step, micro-batch) is a pure function of (seed, step, micro-batch), so a run
can restart at any step without replaying data, and memory does not grow with the corpus:
each batch reads only its own slices of the memory-mapped token array.

- Causal LM: blocks of `seq_len` consecutive tokens at random offsets (documents are
  packed back to back, separated by the tokenizer's separator, so there is no padding).
- Masked LM: `[CLS]` + `seq_len - 1` consecutive tokens.
- Masked LM + NSP: `[CLS] A [SEP] B [SEP]` where A is the tail of document i and B the head
  of document i+1 (label 0, "is next") or of a random other document (label 1), padded.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from seqlm.data.token_store import TokenSplit
from seqlm.errors import DataError

IS_NEXT, NOT_NEXT = 0, 1


TRAIN_STREAM, VALIDATION_STREAM = 0, 1


def step_rng(seed: int, stream: int, step: int, micro: int) -> np.random.Generator:
    """Independent, reproducible randomness for one micro-batch of one stream (train/validation)."""
    return np.random.default_rng([seed, stream, step, micro])


@dataclass(frozen=True)
class BlockSampler:
    """Fixed-length blocks; `prefix_id` (BERT's [CLS]) is put before each block when given."""

    split: TokenSplit
    seq_len: int
    prefix_id: int | None = None

    def __post_init__(self) -> None:
        if self.split.n_tokens < self.stream_len:
            raise DataError(
                f"the split holds {self.split.n_tokens} tokens, fewer than one block of {self.stream_len}; "
                "lower training.seq_len or give more text"
            )

    @property
    def stream_len(self) -> int:
        """Tokens taken from the stream per block."""
        return self.seq_len - (1 if self.prefix_id is not None else 0)

    def random(self, rng: np.random.Generator, n_blocks: int) -> np.ndarray:
        starts = rng.integers(0, self.split.n_tokens - self.stream_len + 1, size=n_blocks)
        return self._blocks(starts)

    def sequential(self, max_blocks: int | None) -> np.ndarray:
        """Non-overlapping blocks from the start; evenly spaced ones when capped (fixed, for validation)."""
        n_available = self.split.n_tokens // self.stream_len
        index = np.arange(n_available)
        if max_blocks is not None and n_available > max_blocks:
            index = np.linspace(0, n_available - 1, max_blocks).round().astype(np.int64)
        return self._blocks(index * self.stream_len)

    def _blocks(self, starts: np.ndarray) -> np.ndarray:
        if len(starts) == 0:  # e.g. sequential(0): np.stack refuses an empty list
            return np.empty((0, self.seq_len), dtype=np.int64)
        blocks = np.stack([self.split.tokens[s : s + self.stream_len] for s in starts]).astype(np.int64)
        if self.prefix_id is not None:
            prefix = np.full((len(starts), 1), self.prefix_id, dtype=np.int64)
            blocks = np.concatenate([prefix, blocks], axis=1)
        return blocks


@dataclass(frozen=True)
class SentencePairSampler:
    """Next-sentence-prediction pairs drawn at document boundaries, 50% true next / 50% random."""

    split: TokenSplit
    seq_len: int
    cls_id: int
    sep_id: int
    pad_id: int

    def __post_init__(self) -> None:
        if self.split.n_documents < 3:
            raise DataError(
                f"next-sentence prediction needs at least 3 documents, the split has {self.split.n_documents}; "
                "split the corpus into more documents (corpus.documents: line) or set nsp: false"
            )

    def random(self, rng: np.random.Generator, n_pairs: int) -> dict[str, np.ndarray]:
        n_docs = self.split.n_documents
        first = rng.integers(0, n_docs - 1, size=n_pairs)
        is_next = rng.random(n_pairs) < 0.5
        # A random "other" document: any but first and first + 1.
        other = rng.integers(0, n_docs - 2, size=n_pairs)
        other = np.where(other >= first, other + 2, other)
        second = np.where(is_next, first + 1, other)
        labels = np.where(is_next, IS_NEXT, NOT_NEXT)
        return self._pairs(first, second, labels)

    def _pairs(self, first: np.ndarray, second: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
        n = len(first)
        input_ids = np.full((n, self.seq_len), self.pad_id, dtype=np.int64)
        token_type_ids = np.zeros((n, self.seq_len), dtype=np.int64)
        attention_mask = np.zeros((n, self.seq_len), dtype=np.int64)
        budget = self.seq_len - 3
        for row, (i, j) in enumerate(zip(first, second)):
            a = self._without_separator(self.split.document(int(i)))
            b = self._without_separator(self.split.document(int(j)))
            len_a, len_b = _truncated_lengths(len(a), len(b), budget)
            a, b = a[len(a) - len_a :], b[:len_b]  # keep A's tail and B's head: the text around the boundary
            ids = np.concatenate([[self.cls_id], a, [self.sep_id], b, [self.sep_id]])
            input_ids[row, : len(ids)] = ids
            token_type_ids[row, len_a + 2 : len(ids)] = 1
            attention_mask[row, : len(ids)] = 1
        return {
            "input_ids": input_ids,
            "token_type_ids": token_type_ids,
            "attention_mask": attention_mask,
            "next_sentence_label": labels.astype(np.int64),
        }

    def _without_separator(self, document: np.ndarray) -> np.ndarray:
        return document[:-1] if len(document) and document[-1] == self.sep_id else document


def _truncated_lengths(len_a: int, len_b: int, budget: int) -> tuple[int, int]:
    """Lengths after trimming the longer segment first until both fit `budget` (BERT's truncate_seq_pair)."""
    excess = len_a + len_b - budget
    if excess <= 0:
        return len_a, len_b
    cut = min(excess, abs(len_a - len_b))
    if len_a > len_b:
        len_a -= cut
    else:
        len_b -= cut
    excess -= cut
    return len_a - (excess + 1) // 2, len_b - excess // 2
