"""Write prediction records: JSON Lines or CSV, to a file (atomically) or stdout.

`write_records(records, output, output_format)`: `output` '-' is stdout (UTF-8 bytes whatever the
locale; a reader that leaves early, `| head`, is not an error); a file is written to a hidden
temporary sibling and renamed into place, so it appears only once complete. A failed write (disk
full, no permission) is an OutputError (exit 4) and leaves no partial file. CSV columns are the
records' keys in first-seen order; nested fields (and JSON literals) are JSON strings.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from seqlm.io.output_paths import write_failure


def write_records(records: list[dict[str, Any]], output: str, output_format: str) -> None:
    """Write JSONL or CSV to `output` ('-' is stdout); a file appears only once fully written."""
    if output_format == "auto":
        output_format = "csv" if output != "-" and Path(output).suffix.lower() == ".csv" else "jsonl"
    if output == "-":
        text = io.StringIO()
        _serialize(records, output_format, text)
        sys.stdout.flush()
        try:
            # Bytes, not text: stdout's locale encoding may not be UTF-8 (LANG=C in cron jobs).
            sys.stdout.buffer.write(text.getvalue().encode("utf-8"))
            sys.stdout.buffer.flush()
        except BrokenPipeError:  # the reader left early (`| head`): nothing more to deliver
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
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
            stream.write(json.dumps(record, ensure_ascii=False) + "\n")
        return
    columns = list(dict.fromkeys(key for record in records for key in record))  # first-seen order
    writer = csv.DictWriter(stream, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for record in records:
        writer.writerow({key: _csv_cell(value) for key, value in record.items()})


def _csv_cell(value: Any) -> Any:
    if isinstance(value, (dict, list, bool)) or value is None:
        return json.dumps(value, ensure_ascii=False)  # nested fields (and JSON literals) stay parseable
    return value
