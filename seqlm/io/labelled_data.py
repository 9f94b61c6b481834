"""Labelled examples for classification: read, check, split, and map labels to ids.

Contract:

- `read_labelled(location, format, text_field, text_pair_field, label_field)` reads every
  example of one file into a `LabelledExamples`. JSONL and CSV/TSV are read with the
  standard library, strictly as UTF-8, so each problem is reported at its exact line
  (`FILE:LINE: ...`, 1-based; a CSV record spanning lines is reported at its first line):
  bytes that are not UTF-8, a line that is not a JSON object, a missing or non-text text
  field, a missing label (the shared reading layer is `seqlm.io.records`). Parquet files, `save_to_disk` directories and hub ids (`ID` or
  `ID:SPLIT`, default split `train`; `DIR:SPLIT` picks a split of a saved DatasetDict) are
  read with `datasets`; their `lines` are 1-based row numbers. A missing column lists the
  columns there are. A missing file or a file without examples is a `DataError`.
- Labels are strings: integers in the file become `str(value)`; a `ClassLabel` column
  gives its names. With `require_labels=False` a missing label reads as "" (inputs to
  predict on).
- `label_names(train, configured)`: the configured order, else the sorted distinct train
  labels (numerically when they look like numbers: 2 before 10).
- `label_ids(examples, names)`: ids in `names` order; a label outside it is a `DataError`
  naming the file, the line and the known labels.
- `load_splits(config)`: "train", "validation" (a file, or a `validation_ratio` share of
  train drawn with `split_seed`), and "test" when given; every split's labels are checked.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from seqlm.config.finetune import LabelledDataConfig
from seqlm.errors import DataError
from seqlm.io import records

_EXTENSION_FORMATS = {
    ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl",
    ".csv": "csv", ".tsv": "csv",
    ".parquet": "parquet", ".pq": "parquet",
}  # fmt: skip


@dataclass(frozen=True)
class LabelledExamples:
    """Examples of one file, in file order; `lines[i]` is where example i is (1-based)."""

    texts: list[str]
    pairs: list[str] | None  # second texts (sentence pairs), when text_pair_field is set
    labels: list[str]
    lines: list[int]
    source: str

    def __len__(self) -> int:
        return len(self.texts)

    def where(self, index: int) -> str:
        """`FILE:LINE` of example `index`, for messages."""
        return f"{self.source}:{self.lines[index]}"

    def subset(self, indices: list[int] | np.ndarray) -> LabelledExamples:
        """The examples at `indices`, in that order (same source; lines kept)."""
        picked = [int(i) for i in indices]
        return LabelledExamples(
            texts=[self.texts[i] for i in picked],
            pairs=[self.pairs[i] for i in picked] if self.pairs is not None else None,
            labels=[self.labels[i] for i in picked],
            lines=[self.lines[i] for i in picked],
            source=self.source,
        )


def read_labelled(
    location: str,
    format: str,
    text_field: str,
    text_pair_field: str | None,
    label_field: str,
    require_labels: bool = True,
    config_section: str = "data.",
) -> LabelledExamples:
    """Every example of `location`; see the module docstring for formats and errors.

    `config_section` prefixes the config keys that messages tell the user to set
    (`data.label_field` in a finetune config, `label_field` in an evaluate config)."""
    resolved = records.resolve_format(location, format, _EXTENSION_FORMATS, "JSONL, CSV or Parquet", _format_fix(config_section))
    fields = _Fields(text_field, text_pair_field, label_field, require_labels, config_section)
    if resolved == "jsonl":
        rows = _jsonl_rows(Path(location), fields)
    elif resolved == "csv":
        rows = _csv_rows(Path(location), fields)
    else:
        rows = _dataset_rows(location, resolved, fields)
    texts: list[str] = []
    pairs: list[str] | None = [] if text_pair_field is not None else None
    labels: list[str] = []
    lines: list[int] = []
    for line, text, pair, label in rows:
        texts.append(text)
        if pairs is not None:
            pairs.append(pair or "")
        labels.append(label)
        lines.append(line)
    if not texts:
        raise DataError(f"{location}: no examples (the file is empty); give a file with one example per line/row")
    return LabelledExamples(texts, pairs, labels, lines, location)


def label_names(train: LabelledExamples, configured: list[str] | None) -> list[str]:
    """The label set in id order: `configured`, else train's distinct labels sorted (numerically if numbers)."""
    if configured is not None:
        duplicates = sorted({name for name in configured if configured.count(name) > 1})
        if duplicates:
            raise DataError(f"data.labels: {', '.join(map(repr, duplicates))} listed twice; list each label once")
        if len(configured) < 2:
            raise DataError("data.labels: a classifier needs at least 2 labels")
        return list(configured)
    names = sorted(set(train.labels), key=records.name_order)
    if len(names) < 2:
        raise DataError(f"{train.source}: every example has the label {names[0]!r}; a classifier needs at least 2 labels")
    return names


def label_ids(examples: LabelledExamples, names: list[str]) -> list[int]:
    """Each example's label as its index in `names`; an unknown label is a DataError at its line."""
    index = {name: i for i, name in enumerate(names)}
    ids = []
    for i, label in enumerate(examples.labels):
        if label not in index:
            raise DataError(
                f"{examples.where(i)}: label {label!r} was not seen in training (known: {records.shown(names)}); "
                "fix the label or add examples of it to the training data"
            )
        ids.append(index[label])
    return ids


def load_splits(config: LabelledDataConfig) -> tuple[dict[str, LabelledExamples], list[str]]:
    """{"train", "validation"[, "test"]} and the label names; every label is checked against them."""

    def read(location: str) -> LabelledExamples:
        return read_labelled(location, config.format, config.text_field, config.text_pair_field, config.label_field)

    splits = records.read_splits(config, read)
    train = splits["train"]
    names = label_names(train, config.labels)
    for examples in splits.values():
        if config.labels is not None:
            _check_configured(examples, names)
        label_ids(examples, names)
    return splits, names


def _check_configured(examples: LabelledExamples, names: list[str]) -> None:
    known = set(names)
    for i, label in enumerate(examples.labels):
        if label not in known:
            raise DataError(
                f"{examples.where(i)}: label {label!r} is not in data.labels ({records.shown(names)}); add it there or fix the line"
            )


# --------------------------------------------------------------------------- readers


@dataclass(frozen=True)
class _Fields:
    text: str
    pair: str | None
    label: str
    require_labels: bool
    section: str

    def setting(self, field: str) -> str:
        key = {self.text: "text_field", self.label: "label_field"}.get(field, "text_pair_field")
        return self.section + key

    def columns(self) -> dict[str, str]:
        """The columns a table must have (column → config key); the label only when it is required."""
        names = [self.text, self.pair, self.label if self.require_labels else None]
        return {name: self.setting(name) for name in names if name is not None}


Row = tuple[int, str, "str | None", str]


def _jsonl_rows(path: Path, fields: _Fields) -> Iterator[Row]:
    for number, record in records.jsonl_records(path):
        yield _row(f"{path}:{number}", number, record, fields)


def _csv_rows(path: Path, fields: _Fields) -> Iterator[Row]:
    for number, record in records.csv_records(path, fields.columns()):
        yield _row(f"{path}:{number}", number, record, fields, empty_is_missing=True)


def _row(where: str, number: int, record: dict[str, Any], fields: _Fields, empty_is_missing: bool = False) -> Row:
    text = _text(where, record, fields.text, fields)
    pair = _text(where, record, fields.pair, fields) if fields.pair is not None else None
    label = _label(where, record.get(fields.label), fields, empty_is_missing)
    return number, text, pair, label


def _text(where: str, record: dict[str, Any], field: str, fields: _Fields) -> str:
    value = record.get(field)
    if value is None and field in record:
        raise DataError(f"{where}: field {field!r} is null; give every example a text or drop the line")
    if value is None:
        raise records.missing_field(where, record, field, fields.setting(field))
    if not isinstance(value, str):
        raise DataError(f"{where}: field {field!r} holds {records.described(value)}, not text; set {fields.setting(field)}")
    return value


def _label(where: str, value: Any, fields: _Fields, empty_is_missing: bool) -> str:
    if value is None or (empty_is_missing and isinstance(value, str) and not value.strip()):
        if not fields.require_labels:
            return ""
        fix = f"give every example a label or set {fields.setting(fields.label)}"
        raise DataError(f"{where}: missing label (field {fields.label!r}); {fix}")
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise DataError(
            f"{where}: label {value!r} is a {type(value).__name__}; labels must be strings or integers ({fields.label!r})"
        )
    return str(value)


def _format_fix(section: str) -> str:
    """How to name the format: a finetune config has `data.format`, evaluate/predict go by extension."""
    if section:
        return f"set {section}format (jsonl, csv or parquet)"
    return "name the file .jsonl, .csv or .parquet"


def _dataset_rows(location: str, format: str, fields: _Fields) -> Iterator[Row]:
    dataset = records.open_dataset(location, format, _format_fix(fields.section))
    records.check_columns(location, list(dataset.column_names), fields.columns())
    names = records.class_label_names(dataset.features.get(fields.label))
    number = 0
    for batch in dataset.iter(batch_size=1000):
        for i in range(len(batch[fields.text])):
            number += 1
            record = {column: batch[column][i] for column in batch}
            if names is not None and isinstance(record.get(fields.label), int) and record[fields.label] >= 0:
                record[fields.label] = names[record[fields.label]]
            elif names is not None and record.get(fields.label) == -1:
                record[fields.label] = None  # ClassLabel's "no label" (e.g. a hidden test split)
            yield _row(f"{location}:{number}", number, record, fields)
