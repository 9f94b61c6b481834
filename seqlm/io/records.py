"""User record files: the reading layer shared by `labelled_data` and `tagged_words` (and predict's JSONL).

Contract:

- Every problem a user can cause is a `DataError` of one line, `FILE:LINE: what is wrong; what to do`
  (`FILE: ...` when it concerns the whole file). Line numbers are 1-based physical lines.
- `resolve_format(location, format, extensions, kinds, format_fix)`: "hub" when asked for; "disk" for a
  `save_to_disk` directory or `DIR:SPLIT`; for a file, `format` or (auto) the format its extension maps to
  in `extensions`; an `ID`/`ID:SPLIT` that is not a path but looks like a hub id is "hub". Anything else
  is "file not found", with the working directory the path is relative to.
- `decoded_lines(path, fix)`: `(number, text)` of each line (its line break kept), read in bounded chunks
  (`line_reader`) and decoded strictly as UTF-8, a leading BOM dropped; a bad byte is a DataError at its line.
- `json_object(line)`: the line as one JSON object, else a `RecordProblem` (problem, fix) — raised, not
  formatted, so predict's reader can skip the line instead of failing.
- `jsonl_records(path, fix)`: `(number, object)` of every non-blank line of a JSON Lines file, strictly.
- `csv_records(path, required)`: `(number, {column: cell})` of every non-blank row of a CSV file (TSV for
  `.tsv`) after its header row, which must name the `required` columns; a row is numbered by its first line
  (a quoted cell may span lines); malformed CSV is a DataError at its line.
- `open_dataset(location, format, format_fix)`: a Parquet file, `save_to_disk` dir (`DIR:SPLIT` picks a
  split, default "train") or hub id through `datasets`; any failure to read it is a DataError.
- `check_columns`, `missing_field`: the errors for a column / field that is not there; they list the ones
  that are, and name the config key that picks another.
- `name_order`, `shown`: how label and tag names sort (numbers numerically: 2 before 10) and are listed.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from seqlm.errors import DataError, SeqlmError, first_line
from seqlm.io.line_reader import raw_lines

ONE_PER_LINE = "put one example per line (JSONL) or per CSV row"
_SAVED_DATASET_FILES = ("state.json", "dataset_dict.json")  # what save_to_disk writes at the top
_SHOWN_NAMES = 20  # an error lists at most this many known labels / tags


class RecordProblem(ValueError):
    """A line that cannot be read as a record: what is wrong, and what to do."""

    def __init__(self, problem: str, fix: str):
        super().__init__(f"{problem}; {fix}")
        self.problem = problem
        self.fix = fix

    def at(self, where: str) -> DataError:
        return DataError(f"{where}: {self.problem}; {self.fix}")


def resolve_format(location: str, format: str, extensions: dict[str, str], kinds: str, format_fix: str) -> str:
    """The format `location` is read as; `kinds` ("JSONL, CSV or Parquet") and `format_fix` go into messages."""
    path = Path(location).expanduser()
    if format == "hub":
        return "hub"
    if path.is_dir():
        if not any((path / name).is_file() for name in _SAVED_DATASET_FILES):
            raise DataError(f"{location}: a directory, but not one written by Dataset.save_to_disk; pass a {kinds} file")
        return "disk"
    if path.is_file():
        if format != "auto":
            return format
        suffix = path.suffix.lower()
        if suffix not in extensions:
            raise DataError(f"{location}: unknown extension {suffix!r}; {format_fix}")
        return extensions[suffix]
    base, sep, _ = location.rpartition(":")
    if sep and Path(base).expanduser().is_dir():
        return "disk"  # DIR:SPLIT, a split of a saved DatasetDict
    if format == "auto" and path.suffix.lower() not in extensions and _looks_like_hub_id(location):
        return "hub"
    raise DataError(f"{location}: file not found; check the path (relative to {Path.cwd()}) in data.train/validation/test")


def _looks_like_hub_id(location: str) -> bool:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(location.partition(":")[0])
    except HFValidationError:
        return False
    return True


def decoded_lines(path: Path, fix: str = ONE_PER_LINE) -> Iterator[tuple[int, str]]:
    """(line number, text) of each line, decoded strictly; a bad byte is a DataError at its line."""
    try:
        handle = open(path, "rb")
    except FileNotFoundError as exc:
        raise DataError(f"{path}: file not found; check data.train/validation/test") from exc
    except PermissionError as exc:
        raise DataError(f"{path}: permission denied; make the file readable (chmod a+r) or copy it") from exc
    with handle:
        for number, raw in raw_lines(handle, str(path), fix):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(
                    f"{path}:{number}: not UTF-8 text (byte {exc.start + 1} of the line: {exc.reason}); re-encode the file as UTF-8"
                ) from exc
            if number == 1:
                text = text.removeprefix("\ufeff")  # a byte-order mark (Excel's UTF-8) is not part of the data
            yield number, text


def json_object(line: str) -> dict[str, Any]:
    """`line` parsed as one JSON object; anything else is a RecordProblem."""
    fix = "one JSON object per line"
    try:
        record = json.loads(line.rstrip("\r\n"))  # so that an error's column is on this line, not past its end
    except json.JSONDecodeError as exc:
        raise RecordProblem(f"not valid JSON ({exc.msg}, column {exc.colno})", fix) from exc
    except (ValueError, RecursionError) as exc:  # an integer over 4300 digits; nesting past the recursion limit
        reason = "nested too deeply" if isinstance(exc, RecursionError) else "a number too long to read"
        raise RecordProblem(f"not valid JSON ({reason})", fix) from exc
    if not isinstance(record, dict):
        raise RecordProblem(f"a JSON {type(record).__name__}, not an object", fix)
    return record


def jsonl_records(path: Path, fix: str = ONE_PER_LINE) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) of every non-blank line; a line that is not a JSON object is a DataError."""
    for number, line in decoded_lines(path, fix):
        if not line.strip():
            continue
        try:
            yield number, json_object(line)
        except RecordProblem as problem:
            raise problem.at(f"{path}:{number}") from problem.__cause__


def first_jsonl_record(path: Path) -> dict[str, Any] | None:
    """The first object of a JSON Lines file (.jsonl/.json/.ndjson), which tells what kind of records it holds;
    None for a missing file, another suffix, or no record."""
    if not path.is_file() or path.suffix.lower() not in (".jsonl", ".json", ".ndjson"):
        return None
    return next((row for _, row in jsonl_records(path)), None)


def csv_records(path: Path, required: dict[str, str]) -> Iterator[tuple[int, dict[str, str]]]:
    """(first line, {column: cell}) of every non-blank row; `required` maps column → config key for the header check."""
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    numbered = decoded_lines(path)
    current = [0]  # the line the csv reader last consumed

    def lines() -> Iterator[str]:
        for number, text in numbered:
            current[0] = number
            yield text

    reader = csv.reader(lines(), delimiter=delimiter)
    try:
        header = next(reader, None)
        if header is None:
            return
        columns = [name.strip() for name in header]
        check_columns(str(path), columns, required, where=f"{path}:1")
        while True:
            start = current[0] + 1  # a quoted field may span lines: report the record's first line
            row = next(reader, None)
            if row is None:
                return
            if any(cell.strip() for cell in row):
                yield start, dict(zip(columns, row))
    except csv.Error as exc:
        raise DataError(f"{path}:{current[0]}: malformed CSV ({exc}); check the quoting") from exc


def missing_field(where: str, record: dict[str, Any], field: str, setting: str) -> DataError:
    """The error for a record without `field`: the fields it has, and the config key to set."""
    present = ", ".join(map(repr, record)) or "(none)"
    return DataError(f"{where}: no {field!r} field (fields: {present}); add it or set {setting}")


def check_columns(location: str, columns: list[str], wanted: dict[str, str], where: str | None = None) -> None:
    """A DataError for the first of `wanted` (column → config key) not in `columns`."""
    for name, setting in wanted.items():
        if name not in columns:
            raise DataError(f"{where or location}: no column {name!r} (columns: {', '.join(map(repr, columns))}); set {setting}")


def open_dataset(location: str, format: str, format_fix: str) -> Any:
    """A `datasets.Dataset` for a Parquet file, `save_to_disk` dir (or `DIR:SPLIT`) or hub id (`ID[:SPLIT]`)."""
    try:
        return _load_dataset(location, format)
    except SeqlmError:
        raise
    except Exception as exc:  # the readers' parse and hub errors share no base class
        raise DataError(f"{location}: cannot read it as {format} ({first_line(exc)}); check the file, or {format_fix}") from exc


def _load_dataset(location: str, format: str) -> Any:
    from datasets import DatasetDict, load_dataset, load_from_disk

    if format == "parquet":
        import pyarrow.parquet as pq
        from datasets import Dataset
        from datasets.table import InMemoryTable

        # Read in memory (no conversion into the datasets cache); the schema metadata keeps ClassLabel names.
        return Dataset(InMemoryTable(pq.read_table(location)))
    if format == "disk":
        path, split = (location, None) if Path(location).is_dir() else location.rsplit(":", 1)
        dataset = load_from_disk(path)
        if isinstance(dataset, DatasetDict):
            split = split or "train"
            if split not in dataset:
                raise DataError(f"{path}: no split {split!r} (splits: {', '.join(dataset)}); write it as {path}:SPLIT")
            dataset = dataset[split]
        return dataset
    name, _, split = location.partition(":")
    return load_dataset(name, split=split or "train")


def class_label_names(feature: Any) -> list[str] | None:
    """The names of a `ClassLabel` feature (or of a sequence of them); None for any other feature."""
    from datasets import ClassLabel

    if not isinstance(feature, ClassLabel):
        feature = getattr(feature, "feature", None)  # List / LargeList / Sequence: the feature of each item
    return list(feature.names) if isinstance(feature, ClassLabel) else None


def name_order(name: str) -> tuple[int, float, str]:
    """Sort key for label / tag names: numbers first, numerically (2 before 10), then text."""
    try:
        number = float(name)
    except ValueError:
        return (1, 0.0, name)
    return (0, number, name) if math.isfinite(number) else (1, 0.0, name)


def shown(names: list[str]) -> str:
    """`names` for a message, the first 20 of them."""
    listed = ", ".join(names[:_SHOWN_NAMES])
    return listed + (f", … ({len(names)} in all)" if len(names) > _SHOWN_NAMES else "")


def split_by_ratio(examples: Any, ratio: float, seed: int) -> tuple[Any, Any]:
    """(train, validation) of any record set with `len`, `subset(indices)` and `source`: a seeded `ratio`
    share (at least one record, never all) held out; each part keeps file order, so messages follow the file."""
    n = len(examples)
    if n < 2:
        raise DataError(f"{examples.source}: {n} example cannot be split into train and validation; add data.validation")
    n_validation = min(n - 1, max(1, round(n * ratio)))
    order = np.random.default_rng(seed).permutation(n)
    return examples.subset(np.sort(order[n_validation:])), examples.subset(np.sort(order[:n_validation]))


def read_splits(files: Any, read: Callable[[str], Any]) -> dict[str, Any]:
    """{"train", "validation"[, "test"]} read with `read` from a split-files config (`train`, `validation`,
    `test`, `validation_ratio`, `split_seed`): validation is its file, else a seeded share of train."""
    train = read(files.train)
    if files.validation is not None:
        validation = read(files.validation)
    else:
        train, validation = split_by_ratio(train, files.validation_ratio, files.split_seed)
    splits = {"train": train, "validation": validation}
    if files.test is not None:
        splits["test"] = read(files.test)
    return splits


def described(value: Any) -> str:
    """'null', 'a str ("The cat")', 'an int (5)': a value's JSON-ish kind and a short view of it."""
    if value is None:
        return "null"
    kind = type(value).__name__
    view = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
    return f"{'an' if kind[0] in 'aeiou' else 'a'} {kind} ({view})"
