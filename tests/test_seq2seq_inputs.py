"""seq2seq inputs: a tokenizer from both sides of parallel data, the source prefix a model was trained with,
and `seqlm predict` against the reference generation a transformers pipeline used (greedy, one input at a time)."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import pytest
import yaml
from conftest import invoke, seqlm
from pydantic import ValidationError

from seqlm.config.schema import CorpusConfig, TokenizeConfig
from seqlm.data.corpus import Corpus
from seqlm.errors import DataError

REPO = Path(__file__).resolve().parents[1]
PARALLEL = REPO / "data" / "tasks" / "translation" / "es-en"


# --------------------------------------------------------------------------- tokenize: several text fields


def _pairs(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def test_each_listed_field_is_a_document_in_order(tmp_path: Path) -> None:
    rows = [{"id": 1, "source": "uno", "target": "one"}, {"id": 2, "source": "dos", "target": "  "}, {"id": 3, "source": "tres", "target": "three"}]
    jsonl = _pairs(tmp_path / "pairs.jsonl", rows)
    with open(tmp_path / "pairs.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["id", "source", "target"])
        writer.writeheader()
        writer.writerows(rows)
    expected = ["uno", "one", "dos", "tres", "three"]  # record after record, fields in the order listed; blank skipped
    for path in (jsonl, tmp_path / "pairs.csv"):
        corpus = Corpus(CorpusConfig(train=[str(path)], validation=[str(path)], text_column=["source", "target"]))
        assert list(corpus.split_documents("train")) == expected
    reversed_fields = Corpus(CorpusConfig(train=[str(jsonl)], validation=[str(jsonl)], text_column=["target", "source"]))
    assert list(reversed_fields.split_documents("train"))[:2] == ["one", "uno"]
    one = Corpus(CorpusConfig(train=[str(jsonl)], validation=[str(jsonl)], text_column="source"))
    assert list(one.split_documents("train")) == ["uno", "dos", "tres"]  # a single name reads as before


def test_a_record_missing_a_listed_field_is_an_error_at_its_line(tmp_path: Path) -> None:
    path = _pairs(tmp_path / "pairs.jsonl", [{"source": "uno", "target": "one"}, {"source": "dos"}, {"source": "tres", "target": 3}])
    corpus = Corpus(CorpusConfig(train=[str(path)], validation=[str(path)], text_column=["source", "target"]))
    with pytest.raises(DataError, match=rf"{path}:2: no 'target' field \(fields: 'source'\).*corpus.text_column"):
        list(corpus.split_documents("train"))
    _pairs(path, [{"source": "uno", "target": "one"}, {"source": "tres", "target": 3}])
    with pytest.raises(DataError, match=rf"{path}:2: field 'target' holds an int \(3\), not text"):
        list(corpus.split_documents("train"))
    with pytest.raises(ValidationError, match="twice"):
        CorpusConfig(train=["x.jsonl"], text_column=["source", "source"])
    with pytest.raises(ValidationError, match="at least one"):
        CorpusConfig(train=["x.jsonl"], text_column=[])


def test_tokenize_cli_learns_from_sources_and_targets(tmp_path: Path) -> None:
    """The shipped es-en tokenize config (both fields), on the first 300 verses: Spanish words are learnt too."""
    config = yaml.safe_load((REPO / "configs" / "tiny" / "t5_translate_tokenize.yaml").read_text(encoding="utf-8"))
    assert config["corpus"]["text_column"] == ["source", "target"]
    lines = (PARALLEL / "train.jsonl").read_text(encoding="utf-8").splitlines()[:300]
    train = tmp_path / "train.jsonl"
    train.write_text("\n".join(lines) + "\n", encoding="utf-8")
    config["output_dir"] = str(tmp_path / "tok")
    config["corpus"].update(train=[str(train)], validation=[str(PARALLEL / "validation.jsonl")], max_documents=None)
    config["tokenizer"]["vocab_size"] = 1000
    TokenizeConfig.model_validate(config)
    (tmp_path / "tokenize.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    seqlm("tokenize", tmp_path / "tokenize.yaml")
    meta = json.loads((tmp_path / "tok" / "meta.json").read_text(encoding="utf-8"))
    assert meta["splits"]["train"]["n_documents"] == 600  # a source and a target per verse
    assert meta["splits"]["validation"]["n_documents"] == 2 * 435
    vocab = json.loads((tmp_path / "tok" / "tokenizer.json").read_text(encoding="utf-8"))["model"]["vocab"]
    assert {"Ġporque", "Ġque", "Ġlos"} <= vocab.keys()  # Spanish words (sources)
    assert {"Ġfather", "Ġthe"} <= vocab.keys()  # English words (targets)
