"""The on-disk format of a tokenized dataset, written by `seqlm tokenize`, read by the rest.

A dataset directory holds, per split (`train`, `validation`):

- `{split}.tokens.bin`: the token ids of all documents back to back (each document ends
  with the tokenizer's separator token), raw little-endian uint16 or uint32;
- `{split}.docs.bin`: int64 offsets, `n_documents + 1` of them: document `i` is
  `tokens[docs[i]:docs[i+1]]`;

plus `meta.json` (format, dtype, vocab size, counts, fingerprints) and the tokenizer files,
so that `transformers.AutoTokenizer.from_pretrained(dir)` loads the tokenizer. Readers
memory-map the arrays: opening a dataset reads only `meta.json`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from seqlm.errors import DataError

FORMAT = "seqlm-tokens/1"
SPLITS = ("train", "validation")


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 when every id fits, else uint32."""
    return np.dtype(np.uint16) if vocab_size <= 2**16 else np.dtype(np.uint32)


class SplitWriter:
    """Appends encoded documents to one split in constant memory (each call writes through)."""

    def __init__(self, directory: Path, split: str, dtype: np.dtype):
        self.dtype = dtype
        self._tokens = open(directory / f"{split}.tokens.bin", "wb")  # noqa: SIM115 - closed in close()
        self._docs = open(directory / f"{split}.docs.bin", "wb")  # noqa: SIM115
        self._docs.write(np.zeros(1, dtype=np.int64).tobytes())
        self.n_tokens = 0
        self.n_documents = 0

    def append(self, documents: list[list[int]], ends: list[bool] | None = None) -> None:
        """Write a batch of documents (already ending with the separator token). With `ends`, the lists are
        runs of tokens and only a run with `ends[i]` True finishes a document: a long document comes in pieces."""
        if ends is None:
            documents = [ids for ids in documents if ids]
            ends = [True] * len(documents)
        if not documents:
            return
        lengths = np.fromiter((len(ids) for ids in documents), dtype=np.int64, count=len(documents))
        flat = np.concatenate([np.asarray(ids, dtype=self.dtype) for ids in documents])
        self._tokens.write(flat.tobytes())
        self._docs.write((self.n_tokens + np.cumsum(lengths)[np.asarray(ends, dtype=bool)]).tobytes())
        self.n_tokens += int(lengths.sum())
        self.n_documents += sum(ends)

    def close(self) -> dict[str, int]:
        for handle in (self._tokens, self._docs):
            handle.flush()
            handle.close()
        return {"n_tokens": self.n_tokens, "n_documents": self.n_documents}


@dataclass(frozen=True)
class TokenSplit:
    """One split, memory-mapped: nothing is read until it is indexed."""

    tokens: np.ndarray
    doc_offsets: np.ndarray

    @property
    def n_tokens(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def n_documents(self) -> int:
        return int(self.doc_offsets.shape[0]) - 1

    def document(self, index: int) -> np.ndarray:
        return np.asarray(self.tokens[self.doc_offsets[index] : self.doc_offsets[index + 1]])


@dataclass(frozen=True)
class TokenDataset:
    path: Path
    meta: dict[str, Any]

    @classmethod
    def open(cls, path: Path) -> TokenDataset:
        meta_path = Path(path) / "meta.json"
        if not meta_path.is_file():
            raise DataError(f"{path}: not a tokenized dataset (no meta.json); create one with `seqlm tokenize CONFIG`")
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DataError(f"{meta_path}: unreadable ({exc}); rerun `seqlm tokenize`") from exc
        if meta.get("format") != FORMAT:
            raise DataError(f"{meta_path}: format {meta.get('format')!r}, expected {FORMAT!r}; rerun `seqlm tokenize`")
        return cls(Path(path), meta)

    @property
    def vocab_size(self) -> int:
        return int(self.meta["vocab_size"])

    @property
    def separator_id(self) -> int:
        return int(self.meta["separator_id"])

    def split(self, name: str) -> TokenSplit:
        info = self.meta["splits"].get(name)
        if info is None:
            raise DataError(f"{self.path}: no split {name!r} (has: {', '.join(self.meta['splits'])})")
        dtype = np.dtype(self.meta["dtype"])
        tokens_path = self.path / f"{name}.tokens.bin"
        docs_path = self.path / f"{name}.docs.bin"
        expected = {tokens_path: info["n_tokens"] * dtype.itemsize, docs_path: (info["n_documents"] + 1) * 8}
        for file, size in expected.items():
            if not file.is_file() or file.stat().st_size != size:
                raise DataError(f"{file}: missing or truncated (expected {size} bytes); rerun `seqlm tokenize`")
        if info["n_tokens"] == 0:
            raise DataError(f"{self.path}: split {name!r} holds no tokens; give it more text")
        tokens = np.memmap(tokens_path, dtype=dtype, mode="r")
        offsets = np.memmap(docs_path, dtype=np.int64, mode="r")
        return TokenSplit(tokens=tokens, doc_offsets=offsets)

    def load_tokenizer(self) -> Any:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(self.path))

    def check_tokenizer(self, tokenizer: Any, model: str) -> None:
        """DataError unless the ids were written by `tokenizer` (the same vocabulary), the model's own."""
        if self.load_tokenizer().get_vocab() != tokenizer.get_vocab():
            raise DataError(
                f"{self.path}: tokenized with a different tokenizer than the model {model}; "
                f"re-tokenize with tokenizer.pretrained: {model}"
            )
