"""Pretraining batches for each objective: samplers (what text) + corruption (what to predict).

`train(step, micro)` is a pure function of (seed, step, micro): resuming at step k needs
no replay. `validation()` is the same fixed set of batches at every evaluation.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from seqlm.data.batch import Batch
from seqlm.data.masking import MaskedLMCorruption
from seqlm.data.pretrain_data import (
    TRAIN_STREAM,
    VALIDATION_STREAM,
    BlockSampler,
    SentencePairSampler,
    step_rng,
)
from seqlm.data.token_store import TokenSplit


def objective_name(objective: str, nsp: bool) -> str:
    return "mlm+nsp" if nsp else objective


class PretrainBatches:
    def __init__(
        self,
        objective: str,
        train: TokenSplit,
        validation: TokenSplit,
        tokenizer: Any,
        seq_len: int,
        batch_size: int,
        seed: int,
        mlm_probability: float = 0.15,
        whole_word_mask: bool = False,
    ):
        self.objective = objective
        self.batch_size = batch_size
        self.seed = seed
        self.corruption = (
            MaskedLMCorruption(tokenizer, mlm_probability, whole_word_mask) if objective != "clm" else None
        )
        if objective == "mlm+nsp":
            ids = (tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id)
            self.train_pairs = SentencePairSampler(train, seq_len, *ids)
            self.validation_pairs = SentencePairSampler(validation, seq_len, *ids)
        else:
            prefix = tokenizer.cls_token_id if objective == "mlm" else None
            self.train_blocks = BlockSampler(train, seq_len, prefix)
            self.validation_blocks = BlockSampler(validation, seq_len, prefix)

    def train(self, step: int, micro: int) -> Batch:
        return self._batch(step_rng(self.seed, TRAIN_STREAM, step, micro), validation=False)

    def validation(self, n_batches: int) -> list[Batch]:
        if self.objective == "mlm+nsp":
            return [self._batch(step_rng(self.seed, VALIDATION_STREAM, 0, i), validation=True) for i in range(n_batches)]
        blocks = self.validation_blocks.sequential(n_batches * self.batch_size)
        batches = []
        for i, start in enumerate(range(0, len(blocks), self.batch_size)):
            rng = step_rng(self.seed, VALIDATION_STREAM, 0, i)
            batches.append(self._from_blocks(blocks[start : start + self.batch_size], rng))
        return batches

    def _batch(self, rng: np.random.Generator, validation: bool) -> Batch:
        if self.objective == "mlm+nsp":
            sampler = self.validation_pairs if validation else self.train_pairs
            pairs = {key: torch.from_numpy(value) for key, value in sampler.random(rng, self.batch_size).items()}
            corrupted, labels = self._corrupt(pairs["input_ids"], rng)
            inputs = {"input_ids": corrupted, "token_type_ids": pairs["token_type_ids"], "attention_mask": pairs["attention_mask"]}
            return Batch(inputs, {"labels": labels, "next_sentence_label": pairs["next_sentence_label"]})
        sampler = self.validation_blocks if validation else self.train_blocks
        return self._from_blocks(sampler.random(rng, self.batch_size), rng)

    def _from_blocks(self, blocks: np.ndarray, rng: np.random.Generator) -> Batch:
        input_ids = torch.from_numpy(blocks)
        if self.corruption is None:
            return Batch({"input_ids": input_ids}, {"labels": input_ids})
        corrupted, labels = self._corrupt(input_ids, rng)
        return Batch({"input_ids": corrupted}, {"labels": labels})

    def _corrupt(self, input_ids: torch.Tensor, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        assert self.corruption is not None
        generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
        return self.corruption(input_ids, generator)
