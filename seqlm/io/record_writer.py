"""Write prediction records: JSON Lines or CSV, to a file (atomically) or stdout.

`write_records(records, output, output_format)`: `output` '-' is stdout (UTF-8 bytes whatever the
locale, written as the records are serialized; a reader that leaves early, `| head`, is not an
error); a file is written to a hidden temporary sibling and renamed into place, so it appears only
once complete. A failed write (disk full, no permission) is an OutputError (exit 4) and leaves no
partial file. CSV columns are the records' keys in first-seen order; nested fields (and JSON
literals) are JSON strings. A `StreamedList` value is a JSON array written item by item, as
`json.dumps` would write the list, so that an output too large to hold as Python objects (the
words of a huge input) is never built whole; in a CSV cell it is built whole.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

from seqlm.io.output_paths import write_failure

_ITEMS_PER_WRITE = 1000


@dataclass(frozen=True)
class StreamedList:
    """A record value serialized as a JSON array of what `items()` yields (a fresh iterator each call)."""

    items: Callable[[], Iterator[Any]]


def write_records(records: list[dict[str, Any]], output: str, output_format: str) -> None:
    """Write JSONL or CSV to `output` ('-' is stdout); a file appears only once fully written."""
    if output_format == "auto":
        output_format = "csv" if output != "-" and Path(output).suffix.lower() == ".csv" else "jsonl"
    if output == "-":
        sys.stdout.flush()
        # UTF-8 bytes, not the locale's encoding (LANG=C in cron jobs), written as they come.
        stream = io.TextIOWrapper(sys.stdout.buffer, encoding="utf-8", newline="")
        try:
            _serialize(records, output_format, stream)
            stream.flush()
        except BrokenPipeError:  # the reader left early (`| head`): nothing more to deliver
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        finally:
            stream.detach()  # sys.stdout stays open
        return
    path = Path(output)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        failure = write_failure(exc, path, "output")
        if failure is None:
            raise
        raise failure from exc
    try:
        with open(handle, "w", encoding="utf-8", newline="") as stream:
            _serialize(records, output_format, stream)
        os.replace(temp, path)
    except BaseException as exc:
        Path(temp).unlink(missing_ok=True)
        failure = write_failure(exc, path, "output") if isinstance(exc, OSError) else None
        if failure is not None:
            raise failure from exc  # e.g. disk full: exit 4, no partial file left
        raise


def _serialize(records: list[dict[str, Any]], output_format: str, stream: Any) -> None:
    if output_format == "jsonl":
        for record in records:
            if any(isinstance(value, StreamedList) for value in record.values()):
                _write_streamed(record, stream)
            else:
                stream.write(json.dumps(record, ensure_ascii=False) + "\n")
        return
    columns = list(dict.fromkeys(key for record in records for key in record))  # first-seen order
    writer = csv.DictWriter(stream, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for record in records:
        writer.writerow({key: _csv_cell(value) for key, value in record.items()})


def _write_streamed(record: dict[str, Any], stream: Any) -> None:
    """`json.dumps(record)` + newline, each StreamedList written a thousand items at a time."""
    stream.write("{")
    for position, (key, value) in enumerate(record.items()):
        stream.write((", " if position else "") + json.dumps(key, ensure_ascii=False) + ": ")
        if not isinstance(value, StreamedList):
            stream.write(json.dumps(value, ensure_ascii=False))
            continue
        items, separator = value.items(), "["
        while chunk := list(islice(items, _ITEMS_PER_WRITE)):
            stream.write(separator + ", ".join(json.dumps(item, ensure_ascii=False) for item in chunk))
            separator = ", "
        stream.write("[]" if separator == "[" else "]")
    stream.write("}\n")


def _csv_cell(value: Any) -> Any:
    if isinstance(value, StreamedList):
        value = list(value.items())
    if isinstance(value, (dict, list, bool)) or value is None:
        return json.dumps(value, ensure_ascii=False)  # nested fields (and JSON literals) stay parseable
    return value
