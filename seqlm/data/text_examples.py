"""Texts (and optional second texts) to token rows, the one way every classification path encodes them.

`encode_texts(tokenizer, texts, pairs, max_length, targets)` makes one batched tokenizer call
(`tokenizer(texts, pairs)`, as `seqlm finetune` trains: an empty pair is an empty second segment;
pairs lose tokens from the longer side first), truncated to `max_length`, unpadded, and returns
`EncodedExamples` whose `truncated` counts the examples that were cut (a fast tokenizer reports
exactly what truncation removed; for a slow one, examples at `max_length`: an upper bound).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from seqlm.data.example_batches import TOKEN_ROWS, EncodedExamples


def encode_texts(
    tokenizer: Any, texts: list[str], pairs: list[str] | None, max_length: int, targets: dict[str, Any] | None = None
) -> EncodedExamples:
    encoding = tokenizer(
        texts,
        pairs,
        truncation=True,
        max_length=max_length,
        padding=False,
        return_attention_mask=True,
        return_overflowing_tokens=False,
        return_length=False,
        verbose=False,  # over-long examples are counted, not warned about
    )
    rows = {key: [np.asarray(ids, dtype=np.int64) for ids in encoding[key]] for key in TOKEN_ROWS if key in encoding}
    lengths = np.asarray([len(ids) for ids in rows["input_ids"]], dtype=np.int64)
    if encoding.encodings is not None:
        truncated = sum(bool(item.overflowing) for item in encoding.encodings)
    else:
        truncated = int((lengths >= max_length).sum())
    return EncodedExamples(rows, dict(targets or {}), truncated)
