"""Causal fine-tuning records (`task: causal_lm`): read and check one JSON Lines file.

Contract: `read_completions(location, format)` gives every record of `location` as `CompletionRecords`, in file
order; a line is a JSON object, either `{"prompt": str, "completion": str}` (other field names: `prompt_field`, `completion_field`) or a chat `{"messages": [{role,
content}, ...]}` (checked by `seqlm.tasks.completion_rows.record_from`; other fields are ignored). Blank lines are
skipped. Every problem is a one-line `DataError` `FILE:LINE: what is wrong; what to do` (bad UTF-8 or JSON, a
missing field, a conversation without an assistant turn), a missing or empty file too. `CompletionRecords` has
`len`, iteration, indexing, `source` and `subset(indices)`, so `seqlm.io.records.split_by_ratio` splits it.

`read_documents(location, documents, text_field)`: plain text (`data.format: text`) as `TextDocuments` (the same
container shape, of strings): a text file's lines or blank-line-separated paragraphs (`seqlm.data.text_documents`,
as `seqlm tokenize` reads them; compressed files too), or a JSON Lines file's `text_field` values. Blank documents
are skipped; a record without a string `text_field`, or a file with no text, is a one-line DataError.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from seqlm.data.text_documents import text_documents
from seqlm.errors import ConfigError, DataError
from seqlm.io import records
from seqlm.tasks.completion_rows import CompletionRecord, record_from

FORMATS = ("auto", "jsonl")
_FIX = "put one JSON object per line: {\"prompt\": ..., \"completion\": ...} or {\"messages\": [...]}"


@dataclass(frozen=True)
class CompletionRecords:
    records: tuple[CompletionRecord, ...]
    source: str

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[CompletionRecord]:
        return iter(self.records)

    def __getitem__(self, index: int) -> CompletionRecord:
        return self.records[index]

    def subset(self, indices: list[int] | np.ndarray) -> CompletionRecords:
        """The records at `indices`, in that order."""
        return CompletionRecords(tuple(self.records[int(i)] for i in indices), self.source)


def read_completions(location: str, format: str = "auto", prompt_field: str = "prompt", completion_field: str = "completion") -> CompletionRecords:
    """Every record of `location` (see the module docstring); the pair's fields are named by `prompt_field` /
    `completion_field`."""
    if format not in FORMATS:
        raise ConfigError(f"data.format {format!r}: causal_lm records are JSON Lines; use one of {', '.join(FORMATS)}")
    rows = records.jsonl_records(Path(location), _FIX)
    read = tuple(record_from(row, f"{location}:{number}", prompt_field, completion_field) for number, row in rows)
    if not read:
        raise DataError(f"{location}: no records (the file is empty); {_FIX}")
    return CompletionRecords(read, location)


@dataclass(frozen=True)
class TextDocuments:
    records: tuple[str, ...]
    source: str

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[str]:
        return iter(self.records)

    def subset(self, indices: list[int] | np.ndarray) -> TextDocuments:
        return TextDocuments(tuple(self.records[int(i)] for i in indices), self.source)


def read_documents(location: str, documents: str = "line", text_field: str = "text") -> TextDocuments:
    """Every plain-text document of `location` (see the module docstring)."""
    path = Path(location)
    if not path.is_file():
        raise DataError(f"{location}: file not found; check the path (relative to {Path.cwd()}) in data.train/validation/test")
    suffixes = [suffix.lower() for suffix in path.suffixes]
    if any(suffix in (".jsonl", ".json", ".ndjson") for suffix in suffixes[-2:]):
        texts = []
        for number, row in records.jsonl_records(path, f"put one JSON object with a {text_field!r} field per line"):
            text = row.get(text_field)
            if not isinstance(text, str):
                fields = ", ".join(repr(name) for name in row) or "none"
                raise DataError(f"{location}:{number}: field {text_field!r} missing or not a string (fields: {fields}); set data.text_field")
            if text.strip():
                texts.append(text)
    else:
        texts = list(text_documents(path, location, documents))
    if not texts:
        raise DataError(f"{location}: no text (empty or blank documents only); give the documents to train on")
    return TextDocuments(tuple(texts), location)
