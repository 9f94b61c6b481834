"""Source → target pairs for seq2seq tasks (translation, summarization): read and check them.

Contract:

- `read_seq2seq(location, format, source_field, target_field, references_field, source_prefix, ...)` reads every
  example of one file into `Seq2SeqRecords`, in file order. Formats, under "auto" by extension:
  - jsonl (.jsonl/.json/.ndjson): one JSON object per line; blank lines are skipped.
  - csv (.csv, .tsv tab-separated): a header row naming the columns, then one row per example; an empty cell
    is a missing value. A references cell holds a JSON array of strings (`["one", "two"]`).
  - parquet (.parquet/.pq), a `save_to_disk` dir (`DIR:SPLIT`) or a hub id (`ID[:SPLIT]`): rows, numbered from 1.
  Every problem is a `DataError` of one line, `FILE:LINE: what is wrong; what to do` (the shared reading layer is
  `seqlm.io.records`): a missing source or target field (the message lists the fields there are and the config
  key to set, `data.source_field` / `data.target_field`); a field that is not a string ("holds an int (5)",
  "holds null"); a source or target that is empty or only whitespace; a references field that is not a
  non-empty list of non-empty strings; bad UTF-8 or JSON; a missing file or one without examples.
- `source_prefix` is prepended to every source as given (no space is added: end it with one, as in T5's
  "translate Spanish to English: "). The source is checked for emptiness before the prefix is added.
- Texts are kept exactly as written (no strip): only the emptiness check looks at the stripped text.
- references: with `references_field` set and the field present in a record (not null), its list is the
  example's full reference set, in order (the target is not added to it; SciTLDR's first reference is its
  target). Absent or null — a table column has no other way to say "none for this row" — the target is the
  one reference. With `references_field=None` the target is always the one reference.
- `require_target=False` (inputs to predict on, or to evaluate against references alone): a missing, null or
  empty target reads as None; an example without target and without references has no references (()).
- `Seq2SeqRecords` has `len`, iteration, indexing, `source` (the location) and `subset(indices)`, so
  `seqlm.io.records.split_by_ratio` splits it into train and validation.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from seqlm.errors import ConfigError, DataError
from seqlm.io import records

_EXTENSION_FORMATS = {
    ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl",
    ".csv": "csv", ".tsv": "csv",
    ".parquet": "parquet", ".pq": "parquet",
}  # fmt: skip
FORMATS = ("auto", "jsonl", "csv", "parquet", "disk", "hub")


@dataclass(frozen=True)
class Seq2SeqExample:
    """One example: the model's input (prefix included), the text to generate, what it is scored against."""

    source: str
    target: str | None  # None: read with require_target=False and the record has no target
    references: tuple[str, ...]  # the target alone unless the record has a references field; () without either
    where: str  # FILE:LINE (1-based), for messages
    extra: dict[str, Any] = field(default_factory=dict, compare=False)  # the record's other fields (an "id"), for predict


@dataclass(frozen=True)
class Seq2SeqRecords:
    """The examples of one file, in file order; `source` is the file (or dataset) they were read from."""

    examples: tuple[Seq2SeqExample, ...]
    source: str

    def __len__(self) -> int:
        return len(self.examples)

    def __iter__(self) -> Iterator[Seq2SeqExample]:
        return iter(self.examples)

    def __getitem__(self, index: int) -> Seq2SeqExample:
        return self.examples[index]

    def subset(self, indices: list[int] | np.ndarray) -> Seq2SeqRecords:
        """The examples at `indices`, in that order (same source; locations kept)."""
        return Seq2SeqRecords(tuple(self.examples[int(i)] for i in indices), self.source)


def read_seq2seq(
    location: str,
    format: str = "auto",
    source_field: str = "source",
    target_field: str = "target",
    references_field: str | None = "references",
    source_prefix: str = "",
    require_target: bool = True,
    config_section: str = "data.",
) -> Seq2SeqRecords:
    """Every example of `location`; see the module docstring for formats and errors.

    `config_section` prefixes the config keys that messages tell the user to set (`data.target_field`)."""
    if format not in FORMATS:
        raise ConfigError(
            f"{config_section}format {format!r}: not a format for seq2seq examples; use one of {', '.join(FORMATS)}"
        )
    fix = f"set {config_section}format (jsonl, csv or parquet)" if config_section else "name the file .jsonl, .csv or .parquet"
    resolved = records.resolve_format(location, format, _EXTENSION_FORMATS, "JSONL, CSV or Parquet", fix)
    fields = _Fields(source_field, target_field, references_field, source_prefix, require_target, config_section)
    if resolved == "jsonl":
        read = (fields.example(f"{location}:{number}", record) for number, record in records.jsonl_records(Path(location)))
    elif resolved == "csv":
        rows = records.csv_records(Path(location), fields.required())
        read = (fields.example(f"{location}:{number}", record, table=True) for number, record in rows)
    else:
        read = _dataset_examples(location, resolved, fields, fix)
    examples = tuple(read)
    if not examples:
        raise DataError(f"{location}: no examples (the file is empty); give one source/target pair per line or row")
    return Seq2SeqRecords(examples, location)


@dataclass(frozen=True)
class _Fields:
    source: str
    target: str
    references: str | None
    prefix: str
    require_target: bool
    section: str

    def setting(self, name: str) -> str:
        key = {self.source: "source_field", self.target: "target_field"}.get(name, "references_field")
        return self.section + key

    def required(self) -> dict[str, str]:
        """The columns a table must have (column → config key)."""
        names = [self.source, self.target] if self.require_target else [self.source]
        return {name: self.setting(name) for name in names}

    def example(self, where: str, record: dict[str, Any], table: bool = False) -> Seq2SeqExample:
        """The example in `record`; `table`: a CSV row, whose references cell is JSON text (empty: none)."""
        source = self._text(where, record, self.source, required=True)
        target = self._text(where, record, self.target, required=self.require_target)
        references = self._references(where, record, table)
        if references is None:
            references = (target,) if target is not None else ()
        used = {self.source, self.target, self.references}
        extra = {key: value for key, value in record.items() if key not in used}
        return Seq2SeqExample(self.prefix + source, target, references, where, extra)

    def _text(self, where: str, record: dict[str, Any], name: str, required: bool) -> str | None:
        if name not in record:
            if not required:
                return None
            raise records.missing_field(where, record, name, self.setting(name))
        value = record[name]
        empty = isinstance(value, str) and not value.strip()
        if not required and (value is None or empty):
            return None
        if not isinstance(value, str):
            fix = f"give every example its {name} as a string, or set {self.setting(name)}"
            raise DataError(f"{where}: field {name!r} holds {records.described(value)}, not text; {fix}")
        if empty:
            raise DataError(f"{where}: field {name!r} is empty; give every example a non-empty {name}, or drop the line")
        return value

    def _references(self, where: str, record: dict[str, Any], table: bool) -> tuple[str, ...] | None:
        """The record's references, or None when it has none (absent, null, an empty CSV cell)."""
        name = self.references
        if name is None or record.get(name) is None:
            return None
        value = record[name]
        if table:
            if not value.strip():
                return None
            try:
                value = json.loads(value)
            except (ValueError, RecursionError):  # JSONDecodeError, a number too long, nesting too deep
                fix = 'write the cell as a JSON array of strings, e.g. ["first", "second"]'
                raise DataError(
                    f"{where}: field {name!r} holds {records.described(record[name])}, not a JSON list; {fix}"
                ) from None
        fix = f"give a list of reference strings, or set {self.setting(name)}"
        if isinstance(value, np.ndarray):
            value = value.tolist()
        if not isinstance(value, (list, tuple)):
            raise DataError(f"{where}: field {name!r} holds {records.described(value)}, not a list of strings; {fix}")
        if not value:
            raise DataError(f"{where}: field {name!r} is an empty list; {fix} (drop the field to use the target)")
        for k, reference in enumerate(value):
            if not isinstance(reference, str):
                raise DataError(f"{where}: {name}[{k}] holds {records.described(reference)}, not text; {fix}")
            if not reference.strip():
                raise DataError(f"{where}: {name}[{k}] is empty; give every reference some text, or remove it")
        return tuple(value)


def _dataset_examples(location: str, format: str, fields: _Fields, fix: str) -> Iterator[Seq2SeqExample]:
    dataset = records.open_dataset(location, format, fix)
    records.check_columns(location, list(dataset.column_names), fields.required())
    for number, record in enumerate(dataset, start=1):
        yield fields.example(f"{location}:{number}", record)
