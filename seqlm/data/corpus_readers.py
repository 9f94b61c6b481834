"""The documents of one corpus file that is not plain text: JSON Lines, CSV, Parquet, a save_to_disk dir, a hub id.

Contract (`seqlm.data.corpus` resolves the sources and reads plain text itself):

- `jsonl_documents(location, column)`: JSON Lines (also .json/.ndjson, optionally compressed), read
  line by line with the bounded `seqlm.io.line_reader` and parsed by `seqlm.io.records.json_object`,
  as `finetune`, `evaluate` and `predict` read theirs; blank lines are skipped.
- `column_documents(format, location, config)`: CSV/TSV, Parquet, save_to_disk and hub datasets
  through `datasets` (streamed, or memory-mapped Arrow), `_ROWS_PER_READ` rows at a time. A CSV cell
  is always text ("NA", "null" and "1" included), an empty or missing cell an empty string.
- `columns` are `corpus.text_columns` (one or more fields): each field of a record is a document of its
  own, yielded in the order the fields are listed, record after record (parallel data with
  `[source, target]`: source 1, target 1, source 2, ...).
- Every record must hold a string in each column: a record without it, with null, or with a number
  there is a `DataError` at `FILE:LINE` (JSON Lines, 1-based physical lines; a line that is not a
  JSON object or not UTF-8 is one too), or at `FILE: row N` (Parquet, Arrow, hub: 1-based rows). A
  file without the column at all names the columns there are. Empty or whitespace-only strings are
  not mistakes: they are skipped, as blank lines of a text file are.
- `open_binary(path)`: the file's bytes, decompressed by extension (.gz, .bz2, .xz, .zst).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from seqlm.config.schema import CorpusConfig
from seqlm.errors import DataError, first_line
from seqlm.io.line_reader import raw_lines
from seqlm.io.records import RecordProblem, described, json_object, missing_field

COMPRESSIONS = {".gz": "gzip", ".bz2": "bz2", ".xz": "xz", ".zst": "zstd", ".zstd": "zstd"}
_BUILDERS = {"csv": "csv", "parquet": "parquet"}
_ROWS_PER_READ = 1000
_ONE_PER_LINE = "put one JSON object per line"


def open_binary(path: Path) -> Any:
    """A context manager giving the file's (decompressed) bytes."""
    compression = COMPRESSIONS.get(path.suffix.lower())
    if compression is None:
        return open(path, "rb")  # noqa: SIM115 - used in a with statement
    import fsspec

    return fsspec.open(str(path), "rb", compression=compression)


def jsonl_documents(location: str, columns: tuple[str, ...]) -> Iterator[str]:
    """The non-blank texts in fields `columns` (in that order) of every line of a JSON Lines file."""
    with open_binary(Path(location)) as handle:
        for number, raw in raw_lines(handle, location, _ONE_PER_LINE):
            where = f"{location}:{number}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(
                    f"{where}: not UTF-8 text (byte {exc.start + 1} of the line: {exc.reason}); re-encode the file as UTF-8"
                ) from exc
            del raw  # a long line is not kept twice
            if number == 1:
                line = line.removeprefix("\ufeff")  # a byte-order mark is not part of the data
            if not line.strip():
                continue
            try:
                record = json_object(line)
            except RecordProblem as problem:
                raise problem.at(where) from problem.__cause__
            for column in columns:  # every field is checked before any of the record's documents is used
                if column not in record:
                    raise missing_field(where, record, column, "corpus.text_column")
            for text in [_text(record[column], column, where, "line") for column in columns]:
                if text.strip():
                    yield text


def column_documents(format: str, location: str, config: CorpusConfig) -> Iterator[str]:
    """The non-blank texts of the columns `config.text_columns`, row by row (see the module docstring)."""
    columns = config.text_columns
    row = 0
    for batch in _column_batches(format, location, config):
        if row == 0:
            for column in columns:
                if column not in batch:
                    names = ", ".join(repr(name) for name in batch) or "(none)"
                    raise DataError(f"{location}: no column {column!r} (columns: {names}); set corpus.text_column")
        for values in zip(*(batch[column] for column in columns)):
            row += 1
            for text in [_text(value, column, f"{location}: row {row}", "row") for value, column in zip(values, columns)]:
                if text.strip():
                    yield text


def _text(value: Any, column: str, where: str, unit: str) -> str:
    """`value` if it is a string; null or any other value is the user's mistake, at `where` (a `unit`: line, row)."""
    if value is None:
        raise DataError(f"{where}: field {column!r} is null; give every document a text or drop the {unit}")
    if not isinstance(value, str):
        raise DataError(f"{where}: field {column!r} holds {described(value)}, not text; set corpus.text_column")
    return value


def _column_batches(format: str, location: str, config: CorpusConfig) -> Iterator[dict[str, list[Any]]]:
    from datasets import DatasetDict, load_dataset, load_from_disk

    if format == "disk":
        dataset = load_from_disk(location)
        if isinstance(dataset, DatasetDict):
            if config.hub_split not in dataset:
                splits = ", ".join(dataset)
                raise DataError(f"{location}: no split {config.hub_split!r} (splits: {splits}); set corpus.hub_split")
            dataset = dataset[config.hub_split]
        # Arrow files are memory-mapped: iterating pages them in, nothing is copied.
        yield from dataset.iter(batch_size=_ROWS_PER_READ)
        return
    if format == "hub":
        try:
            stream = load_dataset(location, split=config.hub_split, streaming=True)
        except Exception as exc:
            first = first_line(exc)
            raise DataError(
                f"{location}: not a local file or directory, and not loadable as a hub dataset ({first}); "
                "check the path, or the hub id, split and network"
            ) from exc
        yield from stream.iter(batch_size=_ROWS_PER_READ)
        return
    builder = _BUILDERS[format]
    options: dict[str, Any] = {}
    if builder == "csv":
        # Every cell of the text column is text: no "NA"/"null"/"nan" -> missing, no "1" -> int.
        options.update(keep_default_na=False, na_filter=False, converters=dict.fromkeys(config.text_columns, str))
        path = Path(location)
        if (path.with_suffix("") if path.suffix.lower() in COMPRESSIONS else path).suffix.lower() == ".tsv":
            options["sep"] = "\t"
    stream = load_dataset(builder, data_files=[location], split="train", streaming=True, **options)
    yield from stream.iter(batch_size=_ROWS_PER_READ)
