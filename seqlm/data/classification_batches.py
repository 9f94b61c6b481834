"""Classification batches: every example tokenized once, batched by epoch, padded per batch.

`train(step, micro)` is a pure function of (seed, step, micro): micro-batch number
g = step · grad_accum + micro is batch g mod B of epoch g div B (B = batches per epoch), and
an epoch's batches come from a permutation seeded by (seed, epoch). With `group_by_length`,
each run of 50 · batch_size examples of that permutation is sorted by length and cut into
batches, and the batches are shuffled (seeded), so padding stays small while the order
stays random. Each batch is padded to its longest example.

`evaluation(split)` is every example of a split once, in batches sorted by length;
`targets["index"]` holds each example's position in the split, to restore input order.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from seqlm.data.batch import Batch
from seqlm.io.labelled_data import LabelledExamples, label_ids

MEGA_BATCHES = 50  # group_by_length sorts runs of this many batches' worth of examples
_TRAIN_STREAM, _ORDER_STREAM = 0, 1


class ClassificationBatches:
    def __init__(
        self,
        splits: dict[str, LabelledExamples],
        names: list[str],
        tokenizer: Any,
        max_length: int,
        batch_size: int,
        grad_accum: int,
        seed: int,
        group_by_length: bool = True,
        class_weights: str = "none",
    ):
        if tokenizer.pad_token_id is None:
            raise ValueError("the tokenizer needs a pad token (set it before building batches)")
        self.pad_id = int(tokenizer.pad_token_id)
        self.batch_size = batch_size
        self.grad_accum = grad_accum
        self.seed = seed
        self.group_by_length = group_by_length
        self.names = names
        self.encoded = {name: _encode(examples, tokenizer, max_length) for name, examples in splits.items()}
        self.labels = {name: np.asarray(label_ids(examples, names), dtype=np.int64) for name, examples in splits.items()}
        self.weights = _balanced_weights(self.labels["train"], len(names)) if class_weights == "balanced" else None
        self.n_train = len(self.labels["train"])
        self.batches_per_epoch = math.ceil(self.n_train / batch_size)
        self._epoch_cache: tuple[int, list[np.ndarray]] | None = None

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(self.batches_per_epoch / self.grad_accum)

    def truncated(self, split: str) -> int:
        """How many examples of `split` were cut to max_length."""
        return int(self.encoded[split]["truncated"])

    def train(self, step: int, micro: int) -> Batch:
        position = step * self.grad_accum + micro
        epoch, index = divmod(position, self.batches_per_epoch)
        return self._batch("train", self._epoch(epoch)[index])

    def evaluation(self, split: str) -> list[Batch]:
        lengths = self.encoded[split]["lengths"]
        order = np.argsort(-lengths, kind="stable")  # longest first: the peak memory shows at once
        return [
            self._batch(split, order[start : start + self.batch_size], with_index=True)
            for start in range(0, len(order), self.batch_size)
        ]

    def epoch_order(self, epoch: int) -> list[np.ndarray]:
        """The example indices of each batch of `epoch`, in training order."""
        return self._epoch(epoch)

    def _epoch(self, epoch: int) -> list[np.ndarray]:
        if self._epoch_cache is not None and self._epoch_cache[0] == epoch:
            return self._epoch_cache[1]
        rng = np.random.default_rng([self.seed, _TRAIN_STREAM, epoch])
        permutation = rng.permutation(self.n_train)
        size = self.batch_size
        if not self.group_by_length:
            batches = [permutation[start : start + size] for start in range(0, self.n_train, size)]
        else:
            lengths = self.encoded["train"]["lengths"]
            batches = []
            mega = MEGA_BATCHES * size
            for start in range(0, self.n_train, mega):
                chunk = permutation[start : start + mega]
                chunk = chunk[np.argsort(-lengths[chunk], kind="stable")]
                batches.extend(chunk[i : i + size] for i in range(0, len(chunk), size))
            order = np.random.default_rng([self.seed, _ORDER_STREAM, epoch]).permutation(len(batches))
            batches = [batches[i] for i in order]
        self._epoch_cache = (epoch, batches)
        return batches

    def _batch(self, split: str, indices: np.ndarray, with_index: bool = False) -> Batch:
        encoded = self.encoded[split]
        width = int(encoded["lengths"][indices].max())
        inputs: dict[str, torch.Tensor] = {}
        for key in ("input_ids", "attention_mask", "token_type_ids"):
            if key not in encoded:
                continue
            pad = self.pad_id if key == "input_ids" else 0
            rows = np.full((len(indices), width), pad, dtype=np.int64)
            for row, i in enumerate(indices):
                values = encoded[key][i]
                rows[row, : len(values)] = values
            inputs[key] = torch.from_numpy(rows)
        labels = self.labels[split][indices]
        targets = {"labels": torch.from_numpy(labels)}
        if self.weights is not None and split == "train":
            targets["weights"] = torch.from_numpy(self.weights[labels])
        if with_index:
            targets["index"] = torch.from_numpy(np.asarray(indices, dtype=np.int64))
        return Batch(inputs, targets)


def _encode(examples: LabelledExamples, tokenizer: Any, max_length: int) -> dict[str, Any]:
    """Token ids of every example (one fast-tokenizer call), truncated to max_length."""
    encoding = tokenizer(
        examples.texts,
        examples.pairs,
        truncation=True,
        max_length=max_length,
        padding=False,
        return_attention_mask=True,
        return_overflowing_tokens=False,
        return_length=False,
    )
    keys = [key for key in ("input_ids", "attention_mask", "token_type_ids") if key in encoding]
    encoded: dict[str, Any] = {key: [np.asarray(ids, dtype=np.int64) for ids in encoding[key]] for key in keys}
    encoded["lengths"] = np.asarray([len(ids) for ids in encoded["input_ids"]], dtype=np.int64)
    if encoding.encodings is not None:  # a fast tokenizer keeps what truncation cut off
        encoded["truncated"] = sum(bool(item.overflowing) for item in encoding.encodings)
    else:  # a slow one: examples at max_length (an upper bound, for the log only)
        encoded["truncated"] = int((encoded["lengths"] >= max_length).sum())
    return encoded


def _balanced_weights(labels: np.ndarray, n_labels: int) -> np.ndarray:
    """sklearn's 'balanced': n / (k · count_c), so the weights average 1 over the training set."""
    counts = np.bincount(labels, minlength=n_labels).astype(np.float64)
    weights = np.zeros(n_labels, dtype=np.float32)
    present = counts > 0
    weights[present] = len(labels) / (present.sum() * counts[present])
    return weights
