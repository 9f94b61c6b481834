"""Labelled data: every format reads to the same examples, and every problem is a DataError at its FILE:LINE."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from seqlm.config.finetune import LabelledDataConfig
from seqlm.errors import DataError
from seqlm.io.labelled_data import LabelledExamples, label_ids, label_names, load_splits, read_labelled

REPO = Path(__file__).resolve().parents[1]
CLASSIFY = REPO / "data" / "classify"
LABELS = (CLASSIFY / "labels.txt").read_text(encoding="utf-8").split()


def read(path: Path | str, **kwargs) -> LabelledExamples:
    options = {"format": "auto", "text_field": "text", "text_pair_field": None, "label_field": "label", **kwargs}
    return read_labelled(str(path), **options)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def examples(labels: list[str], source: str = "x.jsonl") -> LabelledExamples:
    return LabelledExamples([f"t{i}" for i in range(len(labels))], None, labels, list(range(1, len(labels) + 1)), source)


# --------------------------------------------------------------------------- the shipped data


def test_shipped_jsonl_and_csv_hold_the_same_examples() -> None:
    jsonl, csv = read(CLASSIFY / "train.jsonl"), read(CLASSIFY / "train.csv")
    assert len(jsonl) == 6000
    assert jsonl.texts == csv.texts and jsonl.labels == csv.labels
    assert jsonl.lines[:3] == [1, 2, 3]
    assert csv.lines[:3] == [2, 3, 4]  # line 1 is the header
    assert sorted(set(jsonl.labels)) == sorted(LABELS)
    assert jsonl.pairs is None and jsonl.source == str(CLASSIFY / "train.jsonl")


def test_load_splits_with_a_ratio_is_seeded_disjoint_and_complete() -> None:
    config = LabelledDataConfig(train=str(CLASSIFY / "train.jsonl"), test=str(CLASSIFY / "test.csv"), labels=LABELS)
    splits, names = load_splits(config)
    assert names == LABELS
    assert (len(splits["train"]), len(splits["validation"]), len(splits["test"])) == (5400, 600, 1200)
    assert set(splits["train"].lines).isdisjoint(splits["validation"].lines)
    assert sorted(splits["train"].lines + splits["validation"].lines) == list(range(1, 6001))
    again, _ = load_splits(config)
    assert again["validation"].lines == splits["validation"].lines
    other, _ = load_splits(config.model_copy(update={"split_seed": 1}))
    assert other["validation"].lines != splits["validation"].lines


# --------------------------------------------------------------------------- labels


def test_integer_labels_are_strings_and_sort_numerically(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "n.jsonl", [{"text": "a", "label": 10}, {"text": "b", "label": 2}, {"text": "c", "label": "1"}])
    data = read(path)
    assert data.labels == ["10", "2", "1"]
    assert label_names(data, None) == ["1", "2", "10"]
    assert label_ids(data, ["1", "2", "10"]) == [2, 1, 0]


def test_label_names_configured_order_wins_else_sorted() -> None:
    data = examples(["b", "a", "c", "a"])
    assert label_names(data, None) == ["a", "b", "c"]
    assert label_names(data, ["c", "a", "b"]) == ["c", "a", "b"]
    with pytest.raises(DataError, match="listed twice"):
        label_names(data, ["a", "a", "b"])
    with pytest.raises(DataError, match="at least 2 labels"):
        label_names(examples(["a", "a"]), None)


def test_unknown_label_names_file_line_and_known_labels() -> None:
    with pytest.raises(DataError) as error:
        label_ids(examples(["a", "b", "zzz"], source="v.jsonl"), ["a", "b"])
    assert str(error.value).startswith("v.jsonl:3: label 'zzz' was not seen in training (known: a, b)")


def test_unseen_label_in_validation_file(tmp_path: Path) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", [{"text": "x", "label": "a"}, {"text": "y", "label": "b"}])
    validation = write_jsonl(tmp_path / "val.jsonl", [{"text": "x", "label": "a"}, {"text": "y", "label": "c"}])
    with pytest.raises(DataError, match=rf"^{validation}:2: label 'c' was not seen in training \(known: a, b\)"):
        load_splits(LabelledDataConfig(train=str(train), validation=str(validation)))


def test_train_label_outside_configured_labels(tmp_path: Path) -> None:
    train = write_jsonl(
        tmp_path / "train.jsonl", [{"text": "x", "label": "a"}, {"text": "y", "label": "b"}, {"text": "z", "label": "q"}]
    )
    with pytest.raises(DataError, match=rf"^{train}:3: label 'q' is not in data.labels"):
        load_splits(LabelledDataConfig(train=str(train), labels=["a", "b"]))


# --------------------------------------------------------------------------- JSONL / CSV problems at their line


def test_non_utf8_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b'{"text": "fine", "label": "a"}\n{"text": "caf\xe9", "label": "b"}\n')
    with pytest.raises(DataError, match=rf"^{path}:2: not UTF-8"):
        read(path)


def test_bad_json_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "a", "label": "x"}\n\n{"text": "b", "label": \n', encoding="utf-8")
    with pytest.raises(DataError, match=rf"^{path}:3: not valid JSON"):
        read(path)


def test_missing_text_field_names_field_and_setting(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "t.jsonl", [{"text": "a", "label": "x"}, {"sentence": "b", "label": "y"}])
    with pytest.raises(DataError, match=rf"^{path}:2: no 'text' field \(fields: 'sentence', 'label'\); .*data.text_field"):
        read(path)


@pytest.mark.parametrize(
    ("value", "said"),
    [
        (5, "holds an int (5), not text; set data.text_field"),
        (["a"], "holds a list (['a']), not text; set data.text_field"),
        (None, "is null; give every example a text or drop the line"),
    ],
)
def test_a_text_field_that_is_not_text_says_what_it_holds(tmp_path: Path, value: object, said: str) -> None:
    path = write_jsonl(tmp_path / "t.jsonl", [{"text": "fine", "label": "a"}, {"text": value, "label": "b"}])
    with pytest.raises(DataError, match=f"t.jsonl:2: field 'text' {re.escape(said)}"):
        read(path)


def test_missing_label_field(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "t.jsonl", [{"text": "a", "label": "x"}, {"text": "b"}])
    with pytest.raises(DataError, match=rf"^{path}:2: missing label \(field 'label'\)"):
        read(path)
    assert read(path, require_labels=False).labels == ["x", ""]


def test_csv_missing_label_column_lists_the_columns(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("text,category\nhello,a\n", encoding="utf-8")
    with pytest.raises(DataError, match=rf"^{path}:1: no column 'label' \(columns: 'text', 'category'\); set data.label_field"):
        read(path)


def test_csv_line_numbers_follow_quoted_newlines_and_blank_cells(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text('text,label\n"two\nlines",a\n\nthird,b\nfourth,\n', encoding="utf-8")
    with pytest.raises(DataError, match=rf"^{path}:6: missing label"):
        read(path)
    path.write_text('text,label\n"two\nlines",a\n\nthird,b\n', encoding="utf-8")
    data = read(path)
    assert data.texts == ["two\nlines", "third"] and data.lines == [2, 5]


@pytest.mark.parametrize("content", [b"", b"\n\n", b"text,label\n"], ids=["empty", "blank-lines", "header-only"])
def test_a_file_without_examples(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / ("t.csv" if content.startswith(b"text") else "t.jsonl")
    path.write_bytes(content)
    with pytest.raises(DataError, match=rf"^{path}: no examples"):
        read(path)


def test_missing_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "nope.jsonl"
    with pytest.raises(DataError, match=rf"^{path}: file not found"):
        read(path)


def test_sentence_pairs(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "p.jsonl", [{"a": "x", "b": "y", "label": "s"}])
    data = read(path, text_field="a", text_pair_field="b")
    assert data.texts == ["x"] and data.pairs == ["y"]
    with pytest.raises(DataError, match="no 'c' field .*data.text_pair_field"):
        read(path, text_field="a", text_pair_field="c")


# --------------------------------------------------------------------------- datasets formats


def test_parquet_reads_and_a_missing_column_lists_the_columns(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"text": ["a", "b", "c"], "label": [1, 0, 1]}), path)
    data = read(path)
    assert data.texts == ["a", "b", "c"] and data.labels == ["1", "0", "1"] and data.lines == [1, 2, 3]
    with pytest.raises(DataError, match=rf"^{path}: no column 'sentence' \(columns: 'text', 'label'\); set data.text_field"):
        read(path, text_field="sentence")


def test_save_to_disk_dir_with_class_labels(tmp_path: Path) -> None:
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

    features = Features({"text": Value("string"), "label": ClassLabel(names=["neg", "pos"])})
    dataset = Dataset.from_dict({"text": ["bad", "good"], "label": [0, 1]}, features=features)
    DatasetDict({"train": dataset, "test": dataset.select([1])}).save_to_disk(str(tmp_path / "dd"))
    assert read(tmp_path / "dd").labels == ["neg", "pos"]
    assert read(f"{tmp_path / 'dd'}:test").texts == ["good"]
    with pytest.raises(DataError, match="no split 'dev'"):
        read(f"{tmp_path / 'dd'}:dev")
