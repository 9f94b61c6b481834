"""Read the inputs of `seqlm predict` (a file, or '-' for stdin) into records, and batch them by length.

Bytes are decoded line by line as strict UTF-8 (a leading BOM and each line's trailing '\\r' are dropped).
  - text: every line is one input, empty and whitespace-only lines included, so output record N belongs to
    input line N (a final newline does not start an extra input; a file with no lines has no inputs).
    `Inputs.blank_message()` is the warning predict shows when some inputs are blank.
  - jsonl: one JSON object per line; `text_field` (and `text_pair_field`, for sentence pairs) hold the
    input, every other field is passed through to the output record (e.g. an "id"). Blank lines are skipped.
    Lines are parsed by `seqlm.io.records.json_object`, as the training data readers parse theirs. A line
    without `text_field` but with "messages" (a list of {"role", "content"} strings) is a chat input:
    `InputRecord.messages`, its text the last message's content, the messages passed through too.
  - csv: a header row naming the columns, then one row per input; `text_field` / `text_pair_field` are
    columns, the other columns are passed through (as strings). Blank rows are skipped.
Under input_format auto, `.jsonl`/`.json` files are jsonl, `.csv` files csv, everything else (and stdin) text.

Lines are read in bounded chunks: one longer than 100 MiB (`seqlm.io.line_reader.MAX_LINE_BYTES`) is always a
DataError, even with `skip_bad_lines`. A bad line — not UTF-8, not a JSON object (jsonl), not a well-formed row
(csv) — is a DataError naming the file and line; with `skip_bad_lines` it is skipped instead, produces no
record, and is listed in `Inputs.skipped` (so with text input, record numbers no longer match line numbers
after a skipped line). A record that parses
but lacks the text field (or holds a non-string there) is always an error: it usually means a wrong text_field.
An input with no records at all is a DataError too.
"""

from __future__ import annotations

import codecs
import csv
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from seqlm.errors import ConfigError, DataError
from seqlm.io.line_reader import raw_lines
from seqlm.io.records import RecordProblem, described, json_object

SKIP_HINT = "or pass --skip-bad-lines (skip_bad_lines: true) to skip such lines"
_ONE_PER_LINE = "give one input per line"


@dataclass
class InputRecord:
    text: str
    line: int  # 1-based line number in the input, for error messages
    extra: dict[str, Any] = field(default_factory=dict)  # jsonl/csv fields passed through to the output
    pair: str | None = None  # the text_pair_field value (sentence-pair classification)
    words: list[str] | None = None  # the words_field value (token classification of pre-split words); text: them joined by spaces
    messages: list[dict[str, str]] | None = None  # a chat input (jsonl "messages"); text: its last message's content


@dataclass
class Inputs:
    name: str  # the file name, or "<stdin>", for messages
    skip_bad_lines: bool = False
    records: list[InputRecord] = field(default_factory=list)
    skipped: list[tuple[int, str]] = field(default_factory=list)  # (line, problem) of every skipped line

    def bad(self, line: int, problem: str, fix: str) -> None:
        """A malformed line: skip it (and remember it) or fail, as configured."""
        if not self.skip_bad_lines:
            raise DataError(f"{self.name}:{line}: {problem}; {fix}, {SKIP_HINT}")
        self.skipped.append((line, problem))

    def blank_message(self, shown: int = 10) -> str | None:
        """'FILE: K of N inputs are blank (lines 3, 7, ...)' when some inputs (and their pairs) hold only
        whitespace, else None: they still get records, which is rarely what was meant."""
        blank = [r.line for r in self.records if _blank(r.text) and _blank(r.pair)]
        if not blank:
            return None
        listed = ", ".join(map(str, blank[:shown])) + (", …" if len(blank) > shown else "")
        verb, lines = ("is", "line") if len(blank) == 1 else ("are", "lines")
        return f"{self.name}: {len(blank)} of {len(self.records)} inputs {verb} blank ({lines} {listed}); each gets a record"

    def skipped_message(self, shown: int = 20) -> str:
        """'skipped N bad lines: 3, 17, ... (file; first problem: ...)' for the end-of-run warning."""
        numbers = [str(line) for line, _ in self.skipped]
        listed = ", ".join(numbers[:shown]) + (f", … (+{len(numbers) - shown} more)" if len(numbers) > shown else "")
        plural = "s" if len(numbers) != 1 else ""
        first_line, first_problem = self.skipped[0]
        return (f"skipped {len(numbers)} bad line{plural}: {listed} "
                f"(no record written; first problem: {self.name}:{first_line}: {first_problem})")


def _blank(text: str | None) -> bool:
    return not text or text.isspace()  # no stripped copy of a long input


def resolve_input_format(source: str, input_format: str) -> str:
    if input_format != "auto":
        return input_format
    suffix = Path(source).suffix.lower() if source != "-" else ""
    return {".jsonl": "jsonl", ".json": "jsonl", ".csv": "csv"}.get(suffix, "text")


def read_inputs(
    source: str, input_format: str, text_field: str, console: Any = None, *,
    text_pair_field: str | None = None, skip_bad_lines: bool = False, words_field: str | None = None,
) -> Inputs:
    """Parse `source` ('-' is stdin) into records; see the module docstring for the rules."""
    inputs = Inputs(name="<stdin>" if source == "-" else source, skip_bad_lines=skip_bad_lines)
    input_format = _checked_format(source, input_format, text_pair_field, words_field)
    if input_format == "csv":
        lines = _decoded_lines(_raw_lines(source, inputs.name, console), inputs, keep_cr=True)
        inputs.records = _csv_records(lines, inputs, text_field, text_pair_field)
    else:
        inputs.records = list(_line_records(source, input_format, text_field, console, inputs, text_pair_field, words_field))
    if not inputs.records:
        also = f" ({len(inputs.skipped)} bad line(s) skipped)" if inputs.skipped else ""
        raise DataError(f"{inputs.name}: no inputs{also}; give one input per line (a JSON object per line for jsonl, "
                        "a header and rows for csv)")
    return inputs


def stream_inputs(source: str, input_format: str, text_field: str, console: Any, inputs: Inputs) -> Iterator[InputRecord]:
    """The records of a text or JSONL `source`, each yielded as soon as its line is read (`predict --stream`:
    interactive use and pipes); bad lines go through `inputs.bad`. CSV is refused (ConfigError): a row may span lines."""
    input_format = _checked_format(source, input_format, None, None)
    if input_format == "csv":
        raise ConfigError(f"--stream reads text or jsonl inputs; {inputs.name} is read as csv (set input_format)")
    yield from _line_records(source, input_format, text_field, console, inputs, None, None)


def _checked_format(source: str, input_format: str, text_pair_field: str | None, words_field: str | None) -> str:
    input_format = resolve_input_format(source, input_format)
    name = "<stdin>" if source == "-" else source
    if text_pair_field is not None and input_format == "text":
        raise ConfigError(f"text_pair_field ({text_pair_field!r}) needs jsonl or csv input (input_format); {name} is read as text lines")
    if words_field is not None and input_format != "jsonl":
        raise ConfigError(f"words_field ({words_field!r}) needs jsonl input (input_format: jsonl); {name} is read as {input_format}")
    return input_format


def _line_records(
    source: str, input_format: str, text_field: str, console: Any, inputs: Inputs, text_pair_field: str | None, words_field: str | None
) -> Iterator[InputRecord]:
    """The records of a text or JSONL `source`, one per line as it is read."""
    for number, line in _decoded_lines(_raw_lines(source, inputs.name, console), inputs):
        if input_format == "text":
            yield InputRecord(text=line, line=number)
        elif line.strip():
            record = _parse_json_line(line, number, inputs, text_field, text_pair_field, words_field)
            if record is not None:
                yield record


def _raw_lines(source: str, name: str, console: Any) -> Iterator[tuple[int, bytes]]:
    """(number, bytes) of every line of `source` ('-' is stdin), each read with a bounded length."""
    if source == "-":
        if console is not None and sys.stdin.isatty():
            console.info("reading inputs from the terminal; end with Ctrl-D")
        yield from raw_lines(sys.stdin.buffer, name, _ONE_PER_LINE)
        return
    path = Path(source)
    if path.is_dir():
        raise DataError(f"{source}: is a directory; pass a text, JSONL or CSV file, or '-' for stdin")
    if not path.is_file():
        raise DataError(f"{source}: input file not found; pass a text, JSONL or CSV file, or '-' for stdin")
    try:
        handle = open(path, "rb")
    except PermissionError as exc:
        raise DataError(f"{source}: permission denied; make the file readable (chmod a+r) or copy it") from exc
    with handle:
        yield from raw_lines(handle, name, _ONE_PER_LINE)


def _decoded_lines(raw: Iterator[tuple[int, bytes]], inputs: Inputs, keep_cr: bool = False) -> Iterator[tuple[int, str]]:
    """(line number, text) of every line that decodes; the others go through `inputs.bad`.
    A final newline ends the last line; it does not start an empty input."""
    for number, line in raw:
        line = line.removesuffix(b"\n")
        if not keep_cr:  # csv keeps it: inside a quoted cell "\r\n" is data, and csv.reader ends rows on "\r\n" itself
            line = line.removesuffix(b"\r")
        if number == 1:
            line = line.removeprefix(codecs.BOM_UTF8)
        try:
            yield number, line.decode("utf-8")
        except UnicodeDecodeError as exc:
            inputs.bad(number, f"not valid UTF-8 (byte {exc.start + 1})", "re-encode the file as UTF-8")


def _parse_json_line(
    line: str, number: int, inputs: Inputs, text_field: str, pair_field: str | None, words_field: str | None = None
) -> InputRecord | None:
    try:
        obj = json_object(line)
    except RecordProblem as problem:  # skippable, unlike a record without the text field below
        inputs.bad(number, problem.problem, problem.fix)
        return None
    where = f"{inputs.name}:{number}"
    if words_field is not None:
        words = _words(obj, words_field, where)
        extra = {key: value for key, value in obj.items() if key != words_field}
        return InputRecord(text=" ".join(words), line=number, extra=extra, words=words)
    if pair_field is None and text_field not in obj and "messages" in obj:
        messages = _messages(obj["messages"], where)
        return InputRecord(text=messages[-1]["content"], line=number, extra=obj, messages=messages)
    for name in (text_field, pair_field):
        if name is None:
            continue
        if name not in obj:
            keys = ", ".join(map(repr, sorted(obj))) or "none"
            setting = "text_field" if name == text_field else "text_pair_field"
            raise DataError(f"{where}: no field '{name}' (fields: {keys}); set {setting} to the field with the text")
        if not isinstance(obj[name], str):
            raise DataError(f"{where}: field '{name}' holds {described(obj[name])}, not a string")
    extra = {key: value for key, value in obj.items() if key not in (text_field, pair_field)}
    return InputRecord(text=obj[text_field], line=number, extra=extra, pair=obj[pair_field] if pair_field else None)


def _messages(messages: Any, where: str) -> list[dict[str, str]]:
    """A chat input's messages: a non-empty list of {"role": str, "content": str} objects."""
    if not isinstance(messages, list) or not messages or not all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in messages
    ):
        raise DataError(f"{where}: field 'messages' is not a non-empty list of {{\"role\": ..., \"content\": ...}} objects with string values")
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def _words(obj: dict[str, Any], field: str, where: str) -> list[str]:
    """A record's pre-split words: a list of non-empty strings without whitespace."""
    if field not in obj:
        keys = ", ".join(map(repr, sorted(obj))) or "none"
        raise DataError(f"{where}: no field '{field}' (fields: {keys}); set words_field to the field with the words")
    words = obj[field]
    if not isinstance(words, list) or not all(isinstance(word, str) and word and not any(c.isspace() for c in word) for word in words):
        raise DataError(f"{where}: field '{field}' is not a list of words (non-empty strings without spaces); write it as [\"word\", ...]")
    return words


def _csv_records(
    lines: Iterator[tuple[int, str]], inputs: Inputs, text_field: str, pair_field: str | None
) -> list[InputRecord]:
    cursor = {"start": 0, "last": 0, "fresh": True}  # first and last physical line of the row being read

    def stream() -> Iterator[str]:
        for number, line in lines:
            if cursor["fresh"]:
                cursor["start"], cursor["fresh"] = number, False
            cursor["last"] = number
            yield line + "\n"

    reader = csv.reader(stream())
    header: list[str] | None = None
    records = []
    while True:
        cursor["fresh"] = True
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            inputs.bad(cursor["last"], f"not a valid CSV row ({exc})", "fix the row's quoting")
            continue
        number = cursor["start"]
        if not row:
            continue  # a blank line
        if header is None:
            header = row
            for name, setting in ((text_field, "text_field"), (pair_field, "text_pair_field")):
                if name is not None and name not in header:
                    raise DataError(f"{inputs.name}:{number}: no column '{name}' in the header "
                                    f"(columns: {', '.join(map(repr, header))}); set {setting} to the column with the text")
            continue
        if len(row) != len(header):
            inputs.bad(number, f"{len(row)} fields, the header has {len(header)}", "quote fields that hold commas")
            continue
        values = dict(zip(header, row))
        extra = {key: value for key, value in values.items() if key not in (text_field, pair_field)}
        records.append(InputRecord(text=values[text_field], line=number, extra=extra,
                                   pair=values[pair_field] if pair_field else None))
    return records


def length_batches(sequences: list[list[int]], batch_size: int) -> Iterator[tuple[int, list[int]]]:
    """Yield (inputs done so far, indices) with similar lengths batched together, longest first."""
    order = sorted(range(len(sequences)), key=lambda i: -len(sequences[i]))  # stable: ties keep input order
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        yield start + len(batch), batch
