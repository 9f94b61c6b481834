"""Held-out tokens for `seqlm evaluate`: a `seqlm tokenize` dataset or a plain text file.

A dataset must have been tokenized with the model's own tokenizer (same vocabulary), else
every number would be meaningless: that is a data error. A text file (one document per
line, UTF-8) is tokenized on the fly with the model's tokenizer, in memory: meant for
held-out sets, not corpora.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from seqlm.data.token_store import TokenDataset, TokenSplit
from seqlm.errors import DataError
from seqlm.io.line_reader import raw_lines


def load_split(data: Path, split: str, tokenizer: Any, objective: str, model: str) -> TokenSplit:
    """The tokens of `split` of a dataset dir, or of a text file tokenized with `tokenizer`."""
    data = Path(data)
    if data.is_dir():
        dataset = TokenDataset.open(data)
        dataset.check_tokenizer(tokenizer, model)
        return dataset.split(split)
    if not data.is_file():
        raise DataError(f"{data}: not found; pass a `seqlm tokenize` dataset dir or a text file")
    return _tokenize_text_file(data, tokenizer, objective)


def _tokenize_text_file(path: Path, tokenizer: Any, objective: str) -> TokenSplit:
    documents = [line.strip() for line in _lines(path) if line.strip()]
    if not documents:
        raise DataError(f"{path}: no text (empty or blank lines only)")
    separator = tokenizer.eos_token_id if objective == "clm" else tokenizer.sep_token_id
    if separator is None:
        raise DataError(f"the model's tokenizer has no {'eos' if objective == 'clm' else 'sep'} token to separate documents")
    return documents_split(documents, tokenizer, separator)


def documents_split(documents: list[str], tokenizer: Any, separator: int) -> TokenSplit:
    """`documents` tokenized (no special tokens) and laid back to back, each ending with `separator`, in memory:
    the token stream `seqlm tokenize` writes to disk (and `seqlm.data.pretrain_data` cuts into blocks)."""
    encoded = tokenizer(documents, add_special_tokens=False)["input_ids"]
    ids = [token for document in encoded for token in [*document, separator]]
    lengths = np.array([len(document) + 1 for document in encoded], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    return TokenSplit(tokens=np.asarray(ids, dtype=np.int64), doc_offsets=offsets)


def _lines(path: Path) -> Iterator[str]:
    """The file's lines, each checked for UTF-8 and bounded in length (see seqlm.io.line_reader)."""
    try:
        handle = open(path, "rb")
    except PermissionError as exc:
        raise DataError(f"{path}: permission denied; make the file readable (chmod a+r) or copy it") from exc
    with handle:
        for number, raw in raw_lines(handle, str(path), "put one document per line"):
            try:
                yield from raw.decode("utf-8").splitlines()
            except UnicodeDecodeError as exc:
                raise DataError(f"{path}:{number}: not valid UTF-8 (byte {exc.start + 1} of the line); convert the file to UTF-8") from exc
