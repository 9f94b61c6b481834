"""Rows of packed tokens for causal fine-tuning (`task: causal_lm`): plain text cut into blocks, and short examples
packed together.

- `text_blocks(documents, tokenizer, length)`: continued pretraining. The documents are laid back to back, each
  ending with the tokenizer's eos, as `seqlm tokenize` / `seqlm pretrain` lay them (`documents_split`), and cut
  into consecutive blocks of `length` tokens (`BlockSampler.sequential`, pretraining's validation blocks), the
  last one shorter (no token is left out; a last piece of one token, which predicts nothing, is dropped). The
  labels are the ids: the loss is on every token, and attention runs across documents, as in pretraining.
- `pack_examples(encoded, length)`: encoded examples (input_ids, attention_mask; labels) packed into rows of at
  most `length` tokens, best fit by decreasing length (each example, longest first, into the fullest row that has
  room for it). A row carries `position_ids` restarting at 0 for each example and no attention_mask:
  transformers 5 (models built on its `create_causal_mask`: Llama, GPT-2, Qwen, Mistral, ...; eager and sdpa
  tested; flash attention reads the same position ids for its varlen path) then keeps attention inside each
  example when the model runs without a KV cache (`model.config.use_cache = False`, which the task sets), as if
  each ran alone.
  The first label of each example is IGNORE_INDEX (nothing before it in the example predicts it; unpacked it is
  never a target either), so the summed loss and the target count of a packed row are those of its examples
  run one by one. Padding (after a row) gets position 0, a sequence of its own, and ignored labels.
"""

from __future__ import annotations

import bisect
from typing import Any

import numpy as np

from seqlm.data.example_batches import EncodedExamples
from seqlm.data.masking import IGNORE_INDEX
from seqlm.data.pretrain_data import BlockSampler
from seqlm.data.token_source import documents_split
from seqlm.errors import DataError


def text_blocks(documents: list[str], tokenizer: Any, length: int, where: str) -> EncodedExamples:
    """The blocks of `documents` (see the module docstring); `where` names the split's file in errors."""
    if tokenizer.eos_token_id is None:
        raise DataError(
            f"{where}: the model's tokenizer has no eos token to end each document with; give prompt/completion records"
        )
    split = documents_split(documents, tokenizer, int(tokenizer.eos_token_id))
    whole = split.n_tokens // length
    blocks = list(BlockSampler(split, length).sequential(None)) if whole else []
    tail = np.asarray(split.tokens[whole * length :], dtype=np.int64)
    if len(tail) > 1:
        blocks.append(tail)
    if not blocks:
        raise DataError(f"{where}: the text holds {split.n_tokens} token(s), nothing to predict; give more text")
    rows = {"input_ids": blocks, "attention_mask": [np.ones(len(block), dtype=np.int64) for block in blocks]}
    return EncodedExamples(rows, {"labels": [block.copy() for block in blocks]})


def pack_examples(encoded: EncodedExamples, length: int) -> EncodedExamples:
    """The examples of `encoded` packed into rows of at most `length` tokens (see the module docstring)."""
    ids, labels = encoded.rows["input_ids"], encoded.targets["labels"]
    rows, spaces = [], []  # spaces: sorted (room left, row index) of the rows that still have room
    for index in np.argsort(-encoded.lengths, kind="stable"):
        size = int(encoded.lengths[index])
        at = bisect.bisect_left(spaces, (size, -1))  # the fullest row this example fits in
        if at == len(spaces):
            rows.append([index])
            room, row = length - size, len(rows) - 1
        else:
            room, row = spaces.pop(at)
            rows[row].append(index)
            room -= size
        if room > 0:
            bisect.insort(spaces, (room, row))
    packed: dict[str, list[np.ndarray]] = {"input_ids": [], "position_ids": []}
    packed_labels = []
    for members in rows:
        packed["input_ids"].append(np.concatenate([ids[i] for i in members]))
        packed["position_ids"].append(np.concatenate([np.arange(len(ids[i]), dtype=np.int64) for i in members]))
        row_labels = [labels[i].copy() for i in members]
        for example in row_labels:
            example[0] = IGNORE_INDEX
        packed_labels.append(np.concatenate(row_labels))
    return EncodedExamples(packed, {"labels": packed_labels}, truncated=encoded.truncated)
