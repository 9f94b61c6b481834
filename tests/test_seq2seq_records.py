"""Seq2seq records: every format reads to the same examples (prefix, references, predict-style inputs), every
problem is a one-line DataError at its FILE:LINE, and the shipped translation / summarization data read with the
reader's defaults."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from seqlm.errors import ConfigError, DataError
from seqlm.io.records import split_by_ratio
from seqlm.io.seq2seq_records import Seq2SeqExample, Seq2SeqRecords, read_seq2seq

REPO = Path(__file__).resolve().parents[1]
TASKS = REPO / "data" / "tasks"
ROWS = [
    {"id": "a", "source": "Hola mundo.", "target": "Hello world."},
    {"id": "b", "source": "Buenos días.", "target": "Good morning.", "references": ["Good morning.", "Good day."]},
]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return path


def one_line(path: Path, row: dict) -> Path:
    """A file whose line 2 holds `row` (line 1 is fine), to check that errors name line 2."""
    return write_jsonl(path, [ROWS[0], row])


def fails(path: Path, message: str, **kwargs) -> None:
    with pytest.raises(DataError) as error:
        read_seq2seq(str(path), **kwargs)
    text = str(error.value)
    assert "\n" not in text
    assert text.startswith(f"{path}:2: "), text
    assert message in text, text


# --------------------------------------------------------------------------- formats


def test_jsonl_examples_with_their_references_locations_and_extra_fields(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", ROWS)
    examples = read_seq2seq(str(path))
    assert isinstance(examples, Seq2SeqRecords) and len(examples) == 2 and examples.source == str(path)
    assert examples[0] == Seq2SeqExample("Hola mundo.", "Hello world.", ("Hello world.",), f"{path}:1")
    assert examples[1].references == ("Good morning.", "Good day.")  # the references field is the whole set
    assert [example.extra for example in examples] == [{"id": "a"}, {"id": "b"}]
    assert [example.where for example in examples] == [f"{path}:1", f"{path}:2"]


def test_csv_tsv_parquet_and_saved_datasets_read_the_same_examples(tmp_path: Path) -> None:
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    expected = read_seq2seq(str(write_jsonl(tmp_path / "d.jsonl", ROWS)))
    references = [json.dumps(row["references"]) if "references" in row else "" for row in ROWS]
    csv_path = tmp_path / "d.csv"
    csv_path.write_text(
        "id,source,target,references\n"
        + "".join(
            f'{r["id"]},{r["source"]},{r["target"]},"{refs.replace(chr(34), 2 * chr(34))}"\n' for r, refs in zip(ROWS, references)
        ),
        encoding="utf-8",
    )
    tsv_path = tmp_path / "d.tsv"
    tsv_path.write_text("source\ttarget\n" + "".join(f"{r['source']}\t{r['target']}\n" for r in ROWS), encoding="utf-8")
    table = {"id": [r["id"] for r in ROWS], "source": [r["source"] for r in ROWS], "target": [r["target"] for r in ROWS],
             "references": [r.get("references") for r in ROWS]}  # fmt: skip
    parquet_path = tmp_path / "d.parquet"
    pq.write_table(pa.table(table), parquet_path)
    disk_path = tmp_path / "saved"
    datasets.DatasetDict({"validation": datasets.Dataset.from_dict(table)}).save_to_disk(str(disk_path))

    def texts(records: Seq2SeqRecords) -> list[tuple]:
        return [(e.source, e.target, e.references) for e in records]

    for location in (csv_path, parquet_path, f"{disk_path}:validation"):
        read = read_seq2seq(str(location))
        assert texts(read) == texts(expected), location
        assert read[1].extra == {"id": "b"}
    assert [e.where for e in read_seq2seq(str(csv_path))] == [f"{csv_path}:2", f"{csv_path}:3"]  # line 1 is the header
    assert [e.where for e in read_seq2seq(str(parquet_path))] == [f"{parquet_path}:1", f"{parquet_path}:2"]
    assert [e.references for e in read_seq2seq(str(tsv_path))] == [("Hello world.",), ("Good morning.",)]
    assert texts(read_seq2seq(str(tmp_path / "d.jsonl"), format="jsonl")) == texts(expected)


def test_field_names_prefix_and_references_field_are_configurable(tmp_path: Path) -> None:
    rows = [{"es": "Hola.", "en": "Hello.", "golds": ["Hello.", "Hi."], "references": ["ignored"]}]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    examples = read_seq2seq(str(path), source_field="es", target_field="en", references_field="golds",
                            source_prefix="translate Spanish to English: ")  # fmt: skip
    assert examples[0].source == "translate Spanish to English: Hola."
    assert examples[0].target == "Hello." and examples[0].references == ("Hello.", "Hi.")
    assert examples[0].extra == {"references": ["ignored"]}
    assert read_seq2seq(str(path), source_field="es", target_field="en", references_field=None)[0].references == ("Hello.",)


def test_texts_are_kept_as_written(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [{"source": "  line one\nline two ", "target": " One.\nTwo. "}])
    example = read_seq2seq(str(path))[0]
    assert (example.source, example.target) == ("  line one\nline two ", " One.\nTwo. ")


def test_null_or_empty_references_fall_back_to_the_target(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [{"source": "s", "target": "t", "references": None}])
    assert read_seq2seq(str(path))[0].references == ("t",)
    csv_path = tmp_path / "d.csv"
    csv_path.write_text("source,target,references\ns,t,\n", encoding="utf-8")
    assert read_seq2seq(str(csv_path))[0].references == ("t",)


def test_predict_style_inputs_may_lack_the_target(tmp_path: Path) -> None:
    rows = [{"source": "a"}, {"source": "b", "target": None}, {"source": "c", "target": " "},
            {"source": "d", "references": ["r1", "r2"]}]  # fmt: skip
    examples = read_seq2seq(str(write_jsonl(tmp_path / "d.jsonl", rows)), require_target=False)
    assert [(e.target, e.references) for e in examples] == [(None, ()), (None, ()), (None, ()), (None, ("r1", "r2"))]
    csv_path = tmp_path / "d.csv"
    csv_path.write_text("source\nhello\n", encoding="utf-8")  # no target column at all
    assert read_seq2seq(str(csv_path), require_target=False)[0].target is None


def test_split_by_ratio_splits_seq2seq_records(tmp_path: Path) -> None:
    rows = [{"source": f"s{i}", "target": f"t{i}"} for i in range(10)]
    examples = read_seq2seq(str(write_jsonl(tmp_path / "d.jsonl", rows)))
    train, validation = split_by_ratio(examples, 0.2, seed=0)
    assert (len(train), len(validation)) == (8, 2)
    assert sorted(e.source for e in [*train, *validation]) == sorted(e.source for e in examples)


# --------------------------------------------------------------------------- problems, each at its FILE:LINE


def test_missing_fields_list_the_fields_and_the_key_to_set(tmp_path: Path) -> None:
    fails(
        one_line(tmp_path / "s.jsonl", {"src": "x", "target": "y"}),
        "no 'source' field (fields: 'src', 'target'); add it or set data.source_field",
    )
    fails(
        one_line(tmp_path / "t.jsonl", {"source": "x", "tgt": "y"}),
        "no 'target' field (fields: 'source', 'tgt'); add it or set data.target_field",
    )
    fails(one_line(tmp_path / "e.jsonl", {"source": "x", "tgt": "y"}), "set target_field", config_section="")


def test_a_csv_without_the_column_names_the_columns(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("source,summary\nx,y\n", encoding="utf-8")
    with pytest.raises(
        DataError, match=rf"^{re.escape(str(path))}:1: no column 'target' \(columns: 'source', 'summary'\); set data.target_field"
    ):
        read_seq2seq(str(path))


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"source": 5, "target": "y"}, "field 'source' holds an int (5), not text; give every example its source as a string"),
        ({"source": "x", "target": None}, "field 'target' holds null, not text; "),
        ({"source": "x", "target": ["y"]}, "field 'target' holds a list (['y']), not text; "),
        ({"source": None, "target": "y"}, "field 'source' holds null, not text; "),
        ({"source": "  \n", "target": "y"}, "field 'source' is empty; give every example a non-empty source, or drop the line"),
        ({"source": "x", "target": ""}, "field 'target' is empty; give every example a non-empty target"),
        ({"source": "x", "target": "y", "references": "y"}, "field 'references' holds a str ('y'), not a list of strings; "),
        ({"source": "x", "target": "y", "references": []}, "field 'references' is an empty list; "),
        ({"source": "x", "target": "y", "references": ["y", 3]}, "references[1] holds an int (3), not text; "),
        ({"source": "x", "target": "y", "references": ["y", " "]}, "references[1] is empty; give every reference some text"),
        (
            {"source": "x", "target": "y", "references": {"a": "y"}},
            "field 'references' holds a dict ({'a': 'y'}), not a list of strings; ",
        ),
    ],
)
def test_bad_values_say_what_the_field_holds(tmp_path: Path, row: dict, message: str) -> None:
    fails(one_line(tmp_path / "d.jsonl", row), message)


def test_an_empty_prefix_does_not_hide_an_empty_source(tmp_path: Path) -> None:
    fails(one_line(tmp_path / "d.jsonl", {"source": " ", "target": "y"}), "field 'source' is empty", source_prefix="summarize: ")


def test_csv_problems_are_at_their_line(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("source,target\n,y\n", encoding="utf-8")
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))}:2: field 'source' is empty"):
        read_seq2seq(str(path))
    path.write_text('source,target,references\nx,y,"[""a"", 1]"\n', encoding="utf-8")
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))}:2: references\[1\] holds an int \(1\)"):
        read_seq2seq(str(path))
    path.write_text("source,target,references\nx,y,not json\n", encoding="utf-8")
    with pytest.raises(
        DataError, match=rf"^{re.escape(str(path))}:2: field 'references' holds a str \('not json'\), not a JSON list"
    ):
        read_seq2seq(str(path))


def test_a_parquet_row_is_named_by_its_row_number(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"source": ["x", "  "], "target": ["y", "z"]}), path)
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))}:2: field 'source' is empty"):
        read_seq2seq(str(path))
    with pytest.raises(
        DataError, match=rf"^{re.escape(str(path))}: no column 'tgt' \(columns: 'source', 'target'\); set data.target_field"
    ):
        read_seq2seq(str(path), target_field="tgt")


def test_bad_json_and_utf8_are_at_their_line(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(ROWS[0]) + '\n{"source": "x", \n', encoding="utf-8")
    fails(path, "not valid JSON")
    path.write_bytes(json.dumps(ROWS[0]).encode() + b'\n{"source": "caf\xe9", "target": "y"}\n')
    fails(path, "not UTF-8")


def test_an_empty_file_or_an_unknown_format(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text("\n\n", encoding="utf-8")
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))}: no examples"):
        read_seq2seq(str(path))
    with pytest.raises(ConfigError, match=r"^data.format 'conll': not a format for seq2seq examples; use one of auto, jsonl"):
        read_seq2seq(str(path), format="conll")
    with pytest.raises(DataError, match="file not found"):
        read_seq2seq(str(tmp_path / "missing.jsonl"))


# --------------------------------------------------------------------------- the shipped data


@pytest.mark.parametrize(
    ("folder", "sizes"),
    [
        ("translation/es-en", {"validation": 435}),
        ("translation/kjv-web", {"validation": 435}),
        ("summarization/scitldr_a", {"validation": 619, "test": 618}),
        ("summarization/python_docstrings", {"validation": 165}),
    ],
)
def test_shipped_data_reads_with_the_defaults(folder: str, sizes: dict[str, int]) -> None:
    for split, size in sizes.items():
        examples = read_seq2seq(str(TASKS / folder / f"{split}.jsonl"))
        assert len(examples) == size
        assert all(e.references[0] == e.target for e in examples)  # SciTLDR: the first reference is the target
    assert len(read_seq2seq(str(TASKS / folder / "train.jsonl"))) > 900
