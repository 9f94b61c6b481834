"""Batches of encoded examples for every fine-tuning task: epoch order, length grouping, padding.

A task encodes each split once into `EncodedExamples` (token rows plus targets, one per
example or one per token) and `ExampleBatches` does the rest, the same for every task.

`train(step, micro)` is a pure function of (seed, step, micro): micro-batch number
g = step · grad_accum + micro is batch g mod B of epoch g div B (B = batches per epoch), and
an epoch's batches come from a permutation seeded by (seed, epoch). With `group_by_length`,
each run of 50 · batch_size examples of that permutation is sorted by length and cut into
batches, and the batches are shuffled (seeded), so padding stays small while the order
stays random. Each row kind is padded to its longest row in the batch (a seq2seq batch's
sources and targets differ in width): input_ids with the pad id, `labels` rows (seq2seq
decoder labels, which go to the model as an input) and per-token targets with IGNORE_INDEX,
masks and segment ids with 0. Lengths (and length grouping) are those of input_ids. With
`pad_to_multiple_of` n, a batch's width is rounded up to a multiple of n, but never past the
split's longest row of that kind (so never past what the model already has to take).

`evaluation(split)` is every example of a split once, in batches sorted by length;
`targets["index"]` holds each example's position in the split, to restore input order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from seqlm.data.batch import Batch
from seqlm.data.masking import IGNORE_INDEX

MEGA_BATCHES = 50  # group_by_length sorts runs of this many batches' worth of examples
_TRAIN_STREAM, _ORDER_STREAM = 0, 1
TOKEN_ROWS = ("input_ids", "attention_mask", "token_type_ids", "position_ids")  # position_ids: packed rows (padded with 0)
LABEL_ROWS = "labels"  # a row kind padded like per-token targets, but passed to the model (seq2seq decoder labels)


@dataclass
class EncodedExamples:
    """One split, tokenized. `rows`: per example, an int array per model input (input_ids,
    attention_mask[, token_type_ids][, labels]); `targets`: per example either one value (an array over
    the examples) or one value per token (a list of arrays as long as the example's input_ids)."""

    rows: dict[str, list[np.ndarray]]
    targets: dict[str, np.ndarray | list[np.ndarray]] = field(default_factory=dict)
    truncated: int = 0  # examples cut to fit (reported by the task)

    def __post_init__(self) -> None:
        self.lengths = np.asarray([len(ids) for ids in self.rows["input_ids"]], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.lengths)


class ExampleBatches:
    def __init__(
        self,
        splits: dict[str, EncodedExamples],
        pad_id: int,
        batch_size: int,
        grad_accum: int,
        seed: int,
        group_by_length: bool = True,
        pad_to_multiple_of: int = 1,
    ):
        self.splits = splits
        self.pad_id = pad_id
        self.batch_size = batch_size
        self.grad_accum = grad_accum
        self.seed = seed
        self.group_by_length = group_by_length
        self.pad_to_multiple_of = pad_to_multiple_of
        self.n_train = len(splits["train"]) if "train" in splits else 0  # none: evaluation batches only
        self.batches_per_epoch = math.ceil(self.n_train / batch_size)
        self._epoch_cache: tuple[int, list[np.ndarray]] | None = None
        self._longest: dict[tuple[str, str], int] = {}

    @classmethod
    def for_training(cls, splits: dict[str, EncodedExamples], pad_id: int, training: Any, world_size: int) -> ExampleBatches:
        """A fine-tuning run's batches, as `training` (a finetune config's training section, its
        pad_to_multiple_of resolved to a number by the finetune command) sets them; one batch is the
        global batch of `world_size` processes."""
        return cls(
            splits, pad_id, training.batch_size * world_size, training.grad_accum, training.seed, training.group_by_length,
            training.pad_to_multiple_of,
        )

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(self.batches_per_epoch / self.grad_accum)

    def train(self, step: int, micro: int) -> Batch:
        position = step * self.grad_accum + micro
        epoch, index = divmod(position, self.batches_per_epoch)
        return self._batch("train", self._epoch(epoch)[index])

    def evaluation(self, split: str) -> list[Batch]:
        order = np.argsort(-self.splits[split].lengths, kind="stable")  # longest first: the peak memory shows at once
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
            lengths = self.splits["train"].lengths
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
        encoded = self.splits[split]
        pads = {"input_ids": self.pad_id, LABEL_ROWS: IGNORE_INDEX}
        widths = {key: self._width(split, key, rows, indices) for key, rows in (*encoded.rows.items(), *encoded.targets.items()) if isinstance(rows, list)}
        inputs = {
            key: _padded(encoded.rows[key], indices, pads.get(key, 0), widths[key]) for key in (*TOKEN_ROWS, LABEL_ROWS) if key in encoded.rows
        }
        targets = {
            key: _padded(values, indices, IGNORE_INDEX, widths[key]) if isinstance(values, list) else torch.from_numpy(values[indices])
            for key, values in encoded.targets.items()
        }
        if with_index:
            targets["index"] = torch.from_numpy(np.asarray(indices, dtype=np.int64))
        return Batch(inputs, targets)


    def _width(self, split: str, key: str, rows: list[np.ndarray], indices: np.ndarray) -> int:
        width = max(len(rows[i]) for i in indices)
        multiple = self.pad_to_multiple_of
        if multiple <= 1:
            return width
        if (split, key) not in self._longest:
            self._longest[split, key] = max(len(row) for row in rows)
        return min(-(-width // multiple) * multiple, self._longest[split, key])


def _padded(rows: list[np.ndarray], indices: np.ndarray, pad: int, width: int) -> torch.Tensor:
    out = np.full((len(indices), width), pad, dtype=np.int64)
    for row, i in enumerate(indices):
        values = rows[i]
        out[row, : len(values)] = values
    return torch.from_numpy(out)
