"""Property-based tests (hypothesis): `--set` override parsing, and the data readers on arbitrary text.

Overrides: `--set key.path=value` sets exactly that nested key to what YAML reads `value` as,
leaves every other key alone, and every malformed assignment is a one-line `ConfigError`.

Readers (corpus, labelled data, predict inputs): for any input, a reader either returns exactly
what was written, per the contract stated in each test's docstring, or raises the package's
`DataError` whose (one-line) message names the file; never another exception type.

Temporary files come from `tempfile` inside each example: pytest's `tmp_path` is not reset
between hypothesis examples. `database=None`: no example database (the bugs found are pinned
with @example instead); hypothesis still caches constants under `.hypothesis/` (git-ignore it).
"""

from __future__ import annotations

import csv
import io
import json
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from seqlm.config.generation import GenerationConfig
from seqlm.config.inference import PredictConfig
from seqlm.config.loading import apply_override, load_config, read_yaml, to_yaml
from seqlm.config.schema import CorpusConfig
from seqlm.data.corpus import resolve_entry, stream_source
from seqlm.errors import ConfigError, DataError
from seqlm.io.labelled_data import read_labelled
from seqlm.io.predict_inputs import read_inputs

SETTINGS = settings(max_examples=100, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
# `datasets` builds a streaming reader per file: fewer examples keep the corpus tests quick.
CORPUS_SETTINGS = settings(SETTINGS, max_examples=50)

# --------------------------------------------------------------------------- strategies

# Characters that break naive readers: line breaks of every kind, NUL, BOM, combining marks,
# quotes, delimiters and YAML/JSON syntax; mixed with any non-surrogate code point.
TRICKY = "\n\r\t \x00\x0b\x0c\x1c\x1d\x1e\x85\xa0\u2028\u2029\u3000\ufeff\u0301\u200b,;\"'\\{}[]:#=-!&*|>%@`"
chars = st.one_of(st.characters(codec="utf-8"), st.sampled_from(TRICKY))
texts = st.text(chars, max_size=30)
# Cell texts that CSV/JSON tooling tends to turn into missing values, numbers or booleans.
CELL_LOOKALIKES = [
    "NA",
    "N/A",
    "#N/A",
    "null",
    "NULL",
    "None",
    "nan",
    "NaN",
    "-nan",
    "",
    " ",
    "1",
    "0",
    "-2",
    "1.5",
    "1e5",
    "True",
    "false",
]
cells = st.one_of(st.sampled_from(CELL_LOOKALIKES), texts)
# Multi-line text: pieces that are line breaks (of every style) or runs of characters.
multiline = st.lists(st.one_of(st.sampled_from(["\n", "\r\n", "\r", "\n\n", " \n", "\ufeff"]), texts), max_size=12).map("".join)
# Bytes that are mostly UTF-8, with line breaks, a BOM and invalid sequences mixed in.
BYTE_PIECES = [
    b"\n",
    b"\r\n",
    b"\r",
    b"a",
    b" ",
    b"\xc3\xa9",
    b"\xe2\x80\xa8",
    b"\x00",
    b"\xff",
    b"\xc3",
    b"\xed\xa0\x80",
    b"\xf4\x90\x80\x80",
]
byte_strings = st.one_of(
    st.binary(max_size=60), st.lists(st.sampled_from(BYTE_PIECES) | st.binary(max_size=4), max_size=20).map(b"".join)
)

identifiers = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,7}", fullmatch=True)
key_paths = st.lists(identifiers, min_size=1, max_size=4)
# Values a user may type after `=`, many of which YAML reads as something other than a string.
LOOKALIKES = [
    "", " ", "true", "True", "yes", "no", "on", "off", "y", "null", "Null", "~", "0", "-1", "1_000", "0x1F", "0o17", "017",
    "1e3", "1.5e3", "6.02e+23", ".inf", "-.Inf", ".nan", "1:30", "2024-01-01", "2024-13-45", "2001-12-14t21:59:43.10-99:00",
    "a=b", "==", "x: y", "a #c", "#c", "'q'", '"q"', "'unterminated", " lead", "trail ", "[a, b]", "{a: 1}", "[", "- item",
    "é", "日本語", "e\u0301", "!!str 5", "!!int x", "!!float y", "!!binary x", "&a x", "*a", "|", ">", "%TAG", "@x", "`x",
    "a\nb", "---", "...", "1" * 5000, "[" * 5000,
]  # fmt: skip
raw_values = st.one_of(st.sampled_from(LOOKALIKES), texts)
leaves = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), texts, st.lists(st.integers(), max_size=2)
)
configs = st.dictionaries(
    identifiers, st.recursive(leaves, lambda inner: st.dictionaries(identifiers, inner, max_size=3), max_leaves=10), max_size=5
)


@contextmanager
def written(data: str | bytes, name: str) -> Iterator[Path]:
    """A fresh file `name` holding `data` (str is written as UTF-8, newlines untranslated)."""
    with tempfile.TemporaryDirectory(prefix="seqlm-prop-") as tmp:
        path = Path(tmp) / name
        path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
        yield path


def assert_one_line(exc: BaseException, *fragments: str) -> str:
    """The message is one line (the CLI prints only the first) and holds every fragment."""
    message = str(exc)
    assert len(message.splitlines()) == 1, f"not one line: {message!r}"
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    return message


def csv_text(rows: list[list[str]], dialect: tuple[str, int]) -> str:
    lineterminator, quoting = dialect
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator=lineterminator, quoting=quoting).writerows(rows)
    return buffer.getvalue()


# Python's csv module round-trips with its default dialect, or with every field quoted
# (with lineterminator "\n" and minimal quoting it leaves a lone "\r" unquoted).
csv_dialects = st.sampled_from([("\r\n", csv.QUOTE_MINIMAL), ("\n", csv.QUOTE_ALL), ("\r\n", csv.QUOTE_ALL)])


def row_lines(rows: list[list[str]], dialect: tuple[str, int]) -> list[int]:
    """1-based line (counting "\\n") on which each row after the header starts."""
    starts, line = [], 1 + csv_text(rows[:1], dialect).count("\n")
    for row in rows[1:]:
        starts.append(line)
        line += csv_text([row], dialect).count("\n")
    return starts


# --------------------------------------------------------------------------- --set overrides


def yaml_reading(raw: str) -> tuple[bool, Any]:
    """What `--set key=raw` must set: (True, YAML's reading of raw, or "" for a blank raw), or
    (False, None) when YAML cannot read it, which must be a ConfigError."""
    if not raw.strip():
        return True, ""
    try:
        return True, yaml.safe_load(raw)
    except Exception:  # YAMLError, and ValueError/RecursionError from PyYAML's constructors
        return False, None


def leaves_of(data: dict[str, Any], prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """(key path, value) of every leaf; an empty section counts as a leaf."""
    for key, value in data.items():
        if isinstance(value, dict) and value:
            yield from leaves_of(value, (*prefix, key))
        else:
            yield (*prefix, key), value


def sections_of(data: dict[str, Any], prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for key, value in data.items():
        yield (*prefix, key)
        if isinstance(value, dict):
            yield from sections_of(value, (*prefix, key))


def blocked_at(data: dict[str, Any], path: list[str]) -> int | None:
    """Depth of the first parent on `path` that holds a value (not a section, not null), else None."""
    node: Any = data
    for depth, key in enumerate(path[:-1]):
        child = node.get(key)
        if child is None:
            return None  # the rest of the path is created
        if not isinstance(child, dict):
            return depth
        node = child
    return None


@st.composite
def config_and_path(draw: st.DrawFn) -> tuple[dict[str, Any], list[str]]:
    """A config and a key path: often extending a path that exists (to hit sections and values)."""
    data = draw(configs)
    existing = list(sections_of(data))
    if existing and draw(st.booleans()):
        return data, [*draw(st.sampled_from(existing)), *draw(st.lists(identifiers, max_size=2))]
    return data, draw(key_paths)


def get_path(data: dict[str, Any], path: list[str]) -> Any:
    for key in path:
        data = data[key]
    return data


@SETTINGS
@given(config_and_path(), raw_values)
@example(({}, ["a"]), "2024-13-45")  # PyYAML: ValueError (month must be in 1..12)
@example(({}, ["a", "b"]), "!!int x")  # ValueError
@example(({}, ["a"]), "[" * 5000)  # RecursionError
def test_set_assigns_the_yaml_value_and_nothing_else(case: tuple[dict[str, Any], list[str]], raw: str) -> None:
    """`--set a.b.c=RAW` sets data[a][b][c] to yaml.safe_load(RAW) ("" when RAW is blank), creating
    absent or null sections; every other leaf keeps its value. A parent that holds a value, or a RAW
    YAML cannot read (including PyYAML's ValueErrors: `2024-13-45`, `!!int x`, 5000 digits, deep
    nesting), is a one-line ConfigError quoting the assignment."""
    data, path = case
    original = json.loads(json.dumps(data))  # a deep copy
    assignment = ".".join(path) + "=" + raw
    readable, expected = yaml_reading(raw)
    if blocked_at(original, path) is not None or not readable:
        with pytest.raises(ConfigError) as caught:
            apply_override(data, assignment)
        assert_one_line(caught.value, "--set ", repr(assignment))
        return
    apply_override(data, assignment)
    assert repr(get_path(data, path)) == repr(expected)  # repr: NaN equals NaN, -0.0 differs from 0.0

    def overlaps(key: tuple[str, ...]) -> bool:
        n = min(len(key), len(path))
        return list(key[:n]) == path[:n]

    before = {key: value for key, value in leaves_of(original) if not overlaps(key)}
    after = {key: value for key, value in leaves_of(data) if not overlaps(key)}
    assert after == before


def yaml_flow(value: Any) -> str:
    """`value` written the way a user would type it after `--set key=`: one YAML flow scalar.
    (PyYAML writes a NEL raw with allow_unicode, and reads it back as a space: escape it.)"""
    readable = "\x85" not in str(value)
    text = yaml.safe_dump(value, default_flow_style=True, allow_unicode=readable, width=10**9)
    return text.removesuffix("\n...\n").rstrip("\n")


@SETTINGS
@given(key_paths, st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), texts))
def test_set_round_trips_a_yaml_scalar(path: list[str], value: Any) -> None:
    """Any scalar, written as YAML (quoted where YAML needs it), reads back as itself."""
    raw = yaml_flow(value)
    data: dict[str, Any] = {}
    apply_override(data, ".".join(path) + "=" + raw)
    assert repr(get_path(data, path)) == repr(value)


def with_empty_segment(path: list[str], at: int) -> str:
    segments = list(path)
    segments.insert(at % (len(segments) + 1), "")
    return ".".join(segments)


invalid_assignments = st.one_of(
    texts.filter(lambda text: "=" not in text),  # no "="
    st.builds(lambda key, raw: key + "=" + raw, st.sampled_from(["", " ", "\t", " \n"]), raw_values),  # no key
    st.builds(lambda path, at, raw: with_empty_segment(path, at) + "=" + raw, key_paths, st.integers(0, 4), raw_values),
)


@SETTINGS
@given(configs, invalid_assignments)
def test_malformed_set_is_a_one_line_config_error(data: dict[str, Any], assignment: str) -> None:
    """No `=`, an empty key, or an empty segment (`a..b`, `.a`, `a.`): ConfigError, config untouched."""
    original = json.loads(json.dumps(data))
    with pytest.raises(ConfigError) as caught:
        apply_override(data, assignment)
    assert_one_line(caught.value, "--set ", repr(assignment), "key.path=value")
    assert data == original


@SETTINGS
@given(st.fixed_dictionaries({"a": st.integers(), "b": st.fixed_dictionaries({"c": texts})}), st.one_of(texts, multiline))
@example({"a": 1, "b": {"c": "x"}}, "a.\n=1")
@example({"a": 1, "b": {"c": "x"}}, "a=2024-13-45")
def test_any_set_text_applies_or_is_a_config_error(data: dict[str, Any], assignment: str) -> None:
    """Whatever follows `--set`: it applies, or it is a one-line ConfigError; never another exception."""
    try:
        apply_override(data, assignment)
    except ConfigError as exc:
        assert_one_line(exc, "--set ")


SCHEMA_FIELDS = set(PredictConfig.model_fields)
GENERATION_FIELDS = set(GenerationConfig.model_fields)
unknown_keys = st.one_of(
    identifiers.filter(lambda key: key not in SCHEMA_FIELDS),
    identifiers.filter(lambda key: key not in GENERATION_FIELDS).map(lambda key: f"generation.{key}"),
    # Any text without `=` or `.` that is not a field: it reaches validation as an unknown key.
    texts.map(str.strip).filter(lambda key: key and "=" not in key and "." not in key and key not in SCHEMA_FIELDS),
)


@SETTINGS
@given(unknown_keys, raw_values)
def test_unknown_key_is_a_config_error_naming_it(key: str, raw: str) -> None:
    """Through load_config with the real predict schema: an unknown key (top-level or in a section)
    is a one-line ConfigError that quotes the key, whatever the value."""
    with pytest.raises(ConfigError) as caught:
        load_config(PredictConfig, None, [f"{key}={raw}"], {"model": "m"})
    if yaml_reading(raw)[0]:
        assert_one_line(caught.value, f"unknown key {key!r}")
    else:
        assert_one_line(caught.value, "--set ")


@SETTINGS
@given(st.integers(-(10**6), 10**6), st.booleans())
def test_set_a_number_field(number: int, as_bool: bool) -> None:
    """`generation.top_k` (int, >= 1): a number in range is set; 0, negatives and booleans are ConfigErrors naming it."""
    raw = "true" if as_bool else str(number)
    overrides = [f"generation.top_k={raw}"]
    if as_bool or number < 1:
        with pytest.raises(ConfigError) as caught:
            load_config(PredictConfig, None, overrides, {"model": "m"})
        assert_one_line(caught.value, "'generation.top_k'")
        return
    assert load_config(PredictConfig, None, overrides, {"model": "m"}).generation.top_k == number


@SETTINGS
@given(texts, texts, st.floats(0.01, 100.0), st.integers(1, 10**9))
@example("text", "a\x85b", 1.0, 5)  # PyYAML's own safe_dump(allow_unicode=True) reads this back as "a b"
@example("\x85", "\u2028 \u2029", 1.0, 5)
def test_to_yaml_round_trips_through_a_config_file(text_field: str, input_path: str, temperature: float, top_k: int) -> None:
    """A config set through `--set` (values as YAML scalars) and options, written by `to_yaml`,
    reads back equal: any unicode text, NEL and line separators included."""
    overrides = [f"text_field={yaml_flow(text_field)}", f"generation.temperature={yaml_flow(temperature)}", f"top_k={top_k}"]
    config = load_config(PredictConfig, None, overrides, {"model": "m", "input": input_path})
    assert (config.text_field, config.input) == (text_field, input_path)
    assert (config.generation.temperature, config.top_k) == (temperature, top_k)
    with written(to_yaml(config), "config.yaml") as path:
        assert load_config(PredictConfig, path, []) == config


@SETTINGS
@given(st.one_of(multiline, st.sampled_from(LOOKALIKES).map(lambda raw: f"a: {raw}")))
@example("a: 2024-13-45")
@example("a: !!int x")
@example("a: " + "[" * 5000)
def test_read_yaml_on_any_text(text: str) -> None:
    """Any config file text: a mapping, or a one-line ConfigError naming the file; never another exception."""
    with written(text, "config.yaml") as path:
        try:
            data = read_yaml(path)
        except ConfigError as exc:
            assert_one_line(exc, str(path))
            return
    assert isinstance(data, dict)


# --------------------------------------------------------------------------- predict inputs


def predict_lines(data: bytes) -> list[bytes]:
    """predict_inputs' documented split: on b"\\n"; a final newline ends the last line; each line's
    trailing "\\r" and the first line's BOM are dropped."""
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    lines = [line.removesuffix(b"\r") for line in lines]
    if lines:
        lines[0] = lines[0].removeprefix(b"\xef\xbb\xbf")
    return lines


@SETTINGS
@given(multiline)
def test_predict_text_inputs_are_the_lines(text: str) -> None:
    """Text input: one record per "\\n"-separated line, empty lines included, numbered from 1. Only
    "\\n" ends a line (a lone "\\r", \\u2028 or \\x85 is part of it): record N is input line N as
    `wc -l` and editors count. No lines at all is a DataError."""
    expected = [line.decode("utf-8") for line in predict_lines(text.encode("utf-8"))]
    with written(text, "inputs.txt") as path:
        if not expected:
            with pytest.raises(DataError) as caught:
                read_inputs(str(path), "auto", "text")
            assert_one_line(caught.value, str(path), "no inputs")
            return
        inputs = read_inputs(str(path), "auto", "text")
    assert [record.text for record in inputs.records] == expected
    assert [record.line for record in inputs.records] == list(range(1, len(expected) + 1))


@SETTINGS
@given(byte_strings, st.booleans())
def test_predict_text_inputs_on_arbitrary_bytes(data: bytes, skip_bad_lines: bool) -> None:
    """Arbitrary bytes: the lines that are UTF-8 become records; the first one that is not is a
    DataError naming the file and the line, or (skip_bad_lines) is skipped and listed."""
    lines = predict_lines(data)
    good, bad = [], []
    for number, raw in enumerate(lines, start=1):
        try:
            good.append((number, raw.decode("utf-8")))
        except UnicodeDecodeError:
            bad.append(number)
    with written(data, "inputs.txt") as path:
        if (bad and not skip_bad_lines) or not good:
            with pytest.raises(DataError) as caught:
                read_inputs(str(path), "text", "text", skip_bad_lines=skip_bad_lines)
            fragment = f"{path}:{bad[0]}: not valid UTF-8" if bad and not skip_bad_lines else f"{path}: no inputs"
            assert_one_line(caught.value, fragment)
            return
        inputs = read_inputs(str(path), "text", "text", skip_bad_lines=skip_bad_lines)
    assert [(record.line, record.text) for record in inputs.records] == good
    assert [line for line, _ in inputs.skipped] == bad


json_records = st.lists(
    st.fixed_dictionaries({"text": cells, "pair": texts, "id": st.integers(), "meta": st.one_of(cells, st.none())}),
    min_size=1,
    max_size=8,
)


def jsonl_lines(records: list[dict[str, Any]], ensure_ascii: bool, blanks: list[bool]) -> tuple[list[str], list[int]]:
    """JSON lines with blank lines between (per `blanks`), and the 1-based line of each record."""
    lines, numbers = [], []
    for i, record in enumerate(records):
        if blanks and blanks[i % len(blanks)]:
            lines.append(" " if i % 2 else "")
        lines.append(json.dumps(record, ensure_ascii=ensure_ascii))
        numbers.append(len(lines))
    return lines, numbers


@SETTINGS
@given(json_records, st.booleans(), st.sampled_from(["\n", "\r\n"]), st.lists(st.booleans(), max_size=4), st.booleans())
def test_predict_jsonl_round_trips(
    records: list[dict[str, Any]], ensure_ascii: bool, newline: str, blanks: list[bool], final_newline: bool
) -> None:
    """JSONL written with json.dumps (ASCII-escaped or raw UTF-8, so raw \\u2028/\\x85 too; LF or CRLF;
    blank lines between) reads back: the same text and pair, the other fields passed through, the right lines."""
    lines, numbers = jsonl_lines(records, ensure_ascii, blanks)
    with written(newline.join(lines) + (newline if final_newline else ""), "inputs.jsonl") as path:
        inputs = read_inputs(str(path), "auto", "text", text_pair_field="pair")
    assert [record.text for record in inputs.records] == [r["text"] for r in records]
    assert [record.pair for record in inputs.records] == [r["pair"] for r in records]
    assert [record.extra for record in inputs.records] == [{"id": r["id"], "meta": r["meta"]} for r in records]
    assert [record.line for record in inputs.records] == numbers


csv_rows = st.lists(st.tuples(cells, cells, cells).map(list), min_size=1, max_size=6)


@SETTINGS
@given(csv_rows, csv_dialects)
@example([["1", "a\r\nb", ""]], ("\r\n", csv.QUOTE_MINIMAL))  # CRLF inside a quoted cell
def test_predict_csv_round_trips(rows: list[list[str]], dialect: tuple[str, int]) -> None:
    """CSV written with Python's csv module (header id,text,pair) reads back cell for cell, including
    cells holding newlines, CRLF, quotes, commas and NUL; each record at the line its row starts on."""
    table = [["id", "text", "pair"], *rows]
    with written(csv_text(table, dialect), "inputs.csv") as path:
        inputs = read_inputs(str(path), "auto", "text", text_pair_field="pair")
    assert [[record.extra["id"], record.text, record.pair] for record in inputs.records] == rows
    assert [record.line for record in inputs.records] == row_lines(table, dialect)


@SETTINGS
@given(st.one_of(multiline, byte_strings), st.sampled_from(["inputs.jsonl", "inputs.csv", "inputs.txt"]), st.booleans())
@example("a\x1eb,c\n1,2\n", "inputs.csv", False)  # a header cell holding a line break (for str.splitlines)
def test_predict_inputs_never_crash(data: str | bytes, name: str, skip_bad_lines: bool) -> None:
    """Any text or bytes in any input format: str records, or a one-line DataError naming the file."""
    with written(data, name) as path:
        try:
            inputs = read_inputs(str(path), "auto", "text", skip_bad_lines=skip_bad_lines)
        except DataError as exc:
            assert_one_line(exc, str(path))
            return
    assert inputs.records and all(isinstance(record.text, str) for record in inputs.records)


# Lines Python's json module rejects with something other than JSONDecodeError.
pathological_json = st.one_of(
    st.integers(2_000, 50_000).map(lambda depth: "[" * depth + "]" * depth),  # RecursionError
    st.integers(2_000, 50_000).map(lambda depth: '{"text": "a", "n": ' + "[" * depth + "]" * depth + "}"),
    st.integers(4_301, 10_000).map(lambda digits: '{"text": "a", "label": ' + "1" * digits + "}"),  # ValueError
)


@pytest.mark.parametrize("reader", ["predict_inputs", "labelled_data"])
@SETTINGS
@given(line=pathological_json)
def test_jsonl_readers_on_pathological_json(reader: str, line: str) -> None:
    """Deeply nested arrays and integers over Python's 4300-digit limit (json.loads raises RecursionError
    and a plain ValueError for them, not JSONDecodeError): a one-line DataError at line 2, or a record."""
    with written(f'{{"text": "ok", "label": "x"}}\n{line}\n', "data.jsonl") as path:
        try:
            if reader == "predict_inputs":
                read_inputs(str(path), "auto", "text")
            else:
                read_labelled(str(path), "auto", "text", None, "label")
        except DataError as exc:
            assert_one_line(exc, str(path), f"{path}:2")


# --------------------------------------------------------------------------- labelled data


labels = st.one_of(cells, st.integers())


@SETTINGS
@given(
    st.lists(st.tuples(cells, texts, labels), min_size=1, max_size=8),
    st.booleans(),
    st.sampled_from(["\n", "\r\n"]),
    st.lists(st.booleans(), max_size=4),
)
def test_labelled_jsonl_round_trips(
    examples: list[tuple[str, str, str | int]], ensure_ascii: bool, newline: str, blanks: list[bool]
) -> None:
    """Labelled JSONL from json.dumps: the same texts and pairs, labels as str(label), the right lines."""
    records = [{"text": text, "pair": pair, "label": label} for text, pair, label in examples]
    lines, numbers = jsonl_lines(records, ensure_ascii, blanks)
    with written(newline.join(lines) + newline, "train.jsonl") as path:
        read = read_labelled(str(path), "auto", "text", "pair", "label")
    assert read.texts == [text for text, _, _ in examples]
    assert read.pairs == [pair for _, pair, _ in examples]
    assert read.labels == [str(label) for _, _, label in examples]
    assert read.lines == numbers


@SETTINGS
@given(st.lists(st.tuples(cells, cells, cells.filter(str.strip)).map(list), min_size=1, max_size=6), csv_dialects, st.booleans())
def test_labelled_csv_round_trips(rows: list[list[str]], dialect: tuple[str, int], bom: bool) -> None:
    """Labelled CSV from Python's csv module (optionally with Excel's BOM): cell for cell, each example
    at the line its row starts on. Labels are non-blank (a blank label is a missing one)."""
    table = [["text", "pair", "label"], *rows]
    with written(("\ufeff" if bom else "") + csv_text(table, dialect), "train.csv") as path:
        read = read_labelled(str(path), "auto", "text", "pair", "label")
    assert [list(example) for example in zip(read.texts, read.pairs, read.labels)] == rows
    assert read.lines == row_lines(table, dialect)


@SETTINGS
@given(st.one_of(multiline, byte_strings), st.sampled_from(["train.jsonl", "train.csv", "train.tsv"]))
def test_labelled_reader_never_crashes(data: str | bytes, name: str) -> None:
    """Any text or bytes: examples with str texts and labels, or a one-line DataError naming the file;
    bytes that are not UTF-8 are reported at their line (`FILE:LINE:`)."""
    with written(data, name) as path:
        try:
            read = read_labelled(str(path), "auto", "text", None, "label")
        except DataError as exc:
            message = assert_one_line(exc, str(path))
            if "not UTF-8" in message:
                raw = data if isinstance(data, bytes) else data.encode("utf-8")
                first_bad = next(n for n, line in enumerate(raw.split(b"\n"), 1) if not _decodes(line))
                assert f"{path}:{first_bad}:" in message
            return
    assert all(isinstance(text, str) for text in read.texts) and all(isinstance(label, str) for label in read.labels)


def _decodes(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


# --------------------------------------------------------------------------- corpus


def corpus_documents(path: Path, format: str, documents: str = "line") -> list[str]:
    """The documents of one corpus file, as `Corpus` streams them (format resolved as in corpus.train)."""
    config = CorpusConfig(train=[str(path)], format=format, documents=documents)
    return [text for source in resolve_entry(str(path), format) for text in stream_source(source, config)]


def universal_lines(text: str) -> list[str]:
    """Lines as Python's text mode reads them (universal newlines): "\\n", "\\r\\n" and "\\r" end a
    line; \\u2028, \\x85, \\x0b, \\x0c, \\x1c do not (unlike str.splitlines)."""
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


@CORPUS_SETTINGS
@given(multiline.filter(lambda text: not text.startswith("\ufeff")))
def test_corpus_line_documents_are_the_non_blank_lines(text: str) -> None:
    """`documents: line`: every line that is not blank (`line.strip()` is empty) is one document,
    exactly as written; lines are split the way Python's text mode splits them (LF, CRLF, CR)."""
    with written(text, "corpus.txt") as path:
        documents = corpus_documents(path, "text")
    assert documents == [line for line in universal_lines(text) if line.strip()]


@CORPUS_SETTINGS
@given(multiline)
def test_corpus_bom_is_not_text(text: str) -> None:
    """A UTF-8 BOM (Notepad, Excel) at the start of the file is not part of the first document, as in
    labelled_data and predict_inputs: a file "\\ufeff\\nhello" has the one document "hello"."""
    with written("\ufeff" + text, "corpus.txt") as path:
        documents = corpus_documents(path, "text")
    assert documents == [line for line in universal_lines(text) if line.strip()]


def paragraphs(text: str) -> list[str]:
    """Runs of non-blank lines, joined by "\\n"."""
    runs: list[list[str]] = [[]]
    for line in universal_lines(text):
        if line.strip():
            runs[-1].append(line)
        elif runs[-1]:
            runs.append([])
    return ["\n".join(run) for run in runs if run]


def has_whitespace_only_line(text: str) -> bool:
    return any(line and not line.strip() for line in universal_lines(text))


@CORPUS_SETTINGS
@given(multiline.filter(lambda text: not text.startswith("\ufeff") and not has_whitespace_only_line(text)))
def test_corpus_blank_line_documents_are_paragraphs(text: str) -> None:
    """`documents: blank_line`: documents are the runs of non-empty lines between empty lines (any
    number of them), joined by "\\n" (CRLF/CR normalised), otherwise exactly as written."""
    with written(text, "corpus.txt") as path:
        documents = corpus_documents(path, "text", "blank_line")
    assert documents == paragraphs(text)


whitespace = st.text(st.sampled_from(" \t\xa0\u3000\x0b\x0c\x1c\x85\u2028"), min_size=1, max_size=3)
one_line = st.text(st.characters(codec="utf-8", exclude_characters="\n\r"), min_size=1, max_size=10).filter(str.strip)


@CORPUS_SETTINGS
@given(st.lists(one_line, min_size=2, max_size=4), whitespace)
def test_corpus_whitespace_only_line_separates_paragraphs(lines: list[str], blank: str) -> None:
    """`documents: blank_line`: a line holding only whitespace is blank too (the same notion of blank as
    `documents: line`, which skips such lines; editors leave trailing spaces on "empty" lines)."""
    text = f"\n{blank}\n".join(lines) + "\n"
    with written(text, "corpus.txt") as path:
        documents = corpus_documents(path, "text", "blank_line")
    assert documents == lines


@CORPUS_SETTINGS
@given(st.lists(st.one_of(cells, st.none()), min_size=1, max_size=8), st.booleans(), st.sampled_from(["\n", "\r\n"]))
def test_corpus_jsonl_round_trips(docs: list[str | None], ensure_ascii: bool, newline: str) -> None:
    """JSONL from json.dumps: the non-blank texts, exactly; blank texts are skipped; a null text is a
    DataError at FILE:LINE of the first one, as the other commands report it."""
    lines = [json.dumps({"id": i, "text": doc}, ensure_ascii=ensure_ascii) for i, doc in enumerate(docs)]
    with written(newline.join(lines) + newline, "corpus.jsonl") as path:
        if None in docs:
            with pytest.raises(DataError) as caught:
                corpus_documents(path, "auto")
            assert_one_line(caught.value, f"{path}:{docs.index(None) + 1}: field 'text' is null")
            return
        documents = corpus_documents(path, "auto")
    assert documents == [doc for doc in docs if doc.strip()]


@CORPUS_SETTINGS
@given(st.lists(cells, min_size=1, max_size=8), csv_dialects)
@example(["NA", "null", "nan", "x"], ("\r\n", csv.QUOTE_MINIMAL))  # pandas' default NA strings
@example(["1", "2"], ("\r\n", csv.QUOTE_MINIMAL))  # a text column pandas reads as int64
def test_corpus_csv_round_trips(docs: list[str], dialect: tuple[str, int]) -> None:
    """CSV from Python's csv module: the non-blank cells of the text column, exactly as written. A cell
    that reads `NA`, `null`, `nan` or `1` is text in a text column, not a missing value or a number."""
    table = [["id", "text"], *([str(i), doc] for i, doc in enumerate(docs))]
    with written(csv_text(table, dialect), "corpus.csv") as path:
        documents = corpus_documents(path, "auto")
    assert documents == [doc for doc in docs if doc.strip()]


@CORPUS_SETTINGS
@given(byte_strings)
def test_corpus_text_on_arbitrary_bytes(data: bytes) -> None:
    """Arbitrary bytes as a text corpus: the documents of the decoded text, or (not UTF-8) a one-line
    DataError naming the file and the first bad line (counting "\\n")."""
    bad = [n for n, line in enumerate(data.split(b"\n"), 1) if not _decodes(line)]
    with written(data, "corpus.txt") as path:
        if bad:
            with pytest.raises(DataError) as caught:
                corpus_documents(path, "text")
            assert_one_line(caught.value, str(path), "not UTF-8", f"line {bad[0]},")
            return
        documents = corpus_documents(path, "text")
    text = data.decode("utf-8").removeprefix("\ufeff")
    assert documents == [line for line in universal_lines(text) if line.strip()]


@CORPUS_SETTINGS
@given(st.one_of(multiline, byte_strings), st.sampled_from(["jsonl", "csv"]))
def test_corpus_columns_never_crash(data: str | bytes, format: str) -> None:
    """Any text or bytes as JSONL/CSV: str documents, or a one-line DataError naming the file."""
    with written(data, f"corpus.{format}") as path:
        try:
            documents = corpus_documents(path, "auto")
        except DataError as exc:
            assert_one_line(exc, str(path))
            return
    assert all(isinstance(document, str) and document.strip() for document in documents)
