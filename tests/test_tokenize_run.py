"""`seqlm tokenize`: corpus formats, tokenizers, the dataset layout, round trips and errors.

Runs through the real CLI (typer's CliRunner, in process) on a few hundred documents with
tiny vocabularies, so the whole file takes seconds. Nothing touches the Hugging Face hub.
"""

from __future__ import annotations

import json
import re
import unicodedata
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from seqlm.cli import app

REPO = Path(__file__).resolve().parents[1]
TRAIN_TXT = REPO / "data" / "corpus" / "train.txt"
VALID_TXT = REPO / "data" / "corpus" / "valid.txt"
N_DOCS = 300


@pytest.fixture(autouse=True, scope="module")
def _offline_datasets_cache(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Offline, and datasets' lock files in a temporary cache (module scope: shared fixtures need it)."""
    import datasets

    cache = tmp_path_factory.mktemp("hf-home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setenv("HF_DATASETS_OFFLINE", "1")
        patch.setenv("HF_HOME", str(cache))
        patch.setenv("HF_DATASETS_CACHE", str(cache / "datasets"))
        # datasets reads these module constants at call time (the env vars only at import).
        patch.setattr(datasets.config, "HF_DATASETS_CACHE", cache / "datasets")
        patch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
        yield


def tokenize(tmp_path: Path, config: dict[str, Any], name: str = "tokenize.yaml") -> Any:
    """Write `config` as YAML and run `seqlm tokenize` on it; return the CliRunner result."""
    path = tmp_path / name
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return CliRunner().invoke(app, ["tokenize", str(path)])


def austen_config(output_dir: Path, kind: str = "bpe", **tokenizer: Any) -> dict[str, Any]:
    return {
        "output_dir": str(output_dir),
        "corpus": {"train": str(TRAIN_TXT), "validation": str(VALID_TXT), "max_documents": N_DOCS},
        "tokenizer": {"kind": kind, "vocab_size": 600, **tokenizer},
        "batch_size": 64,
    }


def nonblank_lines(path: Path, limit: int) -> list[str]:
    lines = [line.rstrip("\n") for line in path.read_text(encoding="utf-8").split("\n") if line.strip()]
    return lines[:limit]


def open_dataset(path: Path) -> Any:
    from seqlm.data.token_store import TokenDataset

    return TokenDataset.open(path)


def assert_no_staging_left(directory: Path) -> None:
    leftovers = [p.name for p in directory.rglob("*") if ".tmp-" in p.name or ".old-" in p.name]
    assert leftovers == []


@pytest.fixture(scope="module")
def bpe_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp_path = tmp_path_factory.mktemp("bpe")
    result = tokenize(tmp_path, austen_config(tmp_path / "data"))
    assert result.exit_code == 0, result.output
    return tmp_path / "data"


# --------------------------------------------------------------------------- layout and round trips


def test_bpe_dataset_layout_and_meta(bpe_dataset: Path) -> None:
    names = {p.name for p in bpe_dataset.iterdir()}
    for split in ("train", "validation"):
        assert {f"{split}.tokens.bin", f"{split}.docs.bin"} <= names
    assert {"meta.json", "config.yaml", "tokenizer.json", "tokenizer_config.json"} <= names
    meta = json.loads((bpe_dataset / "meta.json").read_text())
    expected_keys = {
        "format", "dtype", "vocab_size", "separator_token", "separator_id", "tokenizer_kind",
        "special_token_ids", "splits", "tokenizer_fingerprint", "data_fingerprint", "fingerprint",
        "config", "seqlm_version", "created",
    }  # fmt: skip
    assert expected_keys <= set(meta)
    assert meta["format"] == "seqlm-tokens/1" and meta["dtype"] == "uint16" and meta["tokenizer_kind"] == "bpe"
    assert meta["separator_token"] == "<|endoftext|>"
    assert meta["special_token_ids"]["pad"] != meta["separator_id"] == meta["special_token_ids"]["eos"]
    # max_documents caps each split when validation files are given.
    assert meta["splits"]["train"]["n_documents"] == N_DOCS == meta["splits"]["validation"]["n_documents"]
    assert all(len(meta[key]) == 64 for key in ("tokenizer_fingerprint", "data_fingerprint", "fingerprint"))
    saved = yaml.safe_load((bpe_dataset / "config.yaml").read_text())
    assert saved == meta["config"] and saved["tokenizer"]["kind"] == "bpe"

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(bpe_dataset))
    assert meta["vocab_size"] == len(tokenizer) <= 600
    assert tokenizer.eos_token == tokenizer.bos_token == "<|endoftext|>" and tokenizer.pad_token == "<|pad|>"


def test_bpe_round_trip_is_exact_and_memory_mapped(bpe_dataset: Path) -> None:
    from transformers import AutoTokenizer

    dataset = open_dataset(bpe_dataset)
    tokenizer = AutoTokenizer.from_pretrained(str(bpe_dataset))
    for split_name, source in (("train", TRAIN_TXT), ("validation", VALID_TXT)):
        split = dataset.split(split_name)
        assert isinstance(split.tokens, np.memmap) and isinstance(split.doc_offsets, np.memmap)
        assert split.n_documents == N_DOCS
        for index, text in enumerate(nonblank_lines(source, N_DOCS)):
            ids = split.document(index)
            assert ids[-1] == dataset.separator_id
            assert dataset.separator_id not in ids[:-1]
            assert tokenizer.decode(ids[:-1].tolist()) == text


def test_wordpiece_end_to_end(tmp_path: Path) -> None:
    result = tokenize(tmp_path, austen_config(tmp_path / "data", kind="wordpiece", lowercase=True))
    assert result.exit_code == 0, result.output
    dataset = open_dataset(tmp_path / "data")
    meta = dataset.meta
    assert meta["tokenizer_kind"] == "wordpiece" and meta["separator_token"] == "[SEP]" and meta["dtype"] == "uint16"
    assert {"pad", "unk", "cls", "sep", "mask"} <= set(meta["special_token_ids"])

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tmp_path / "data"))
    assert (tokenizer.mask_token, tokenizer.cls_token, tokenizer.pad_token) == ("[MASK]", "[CLS]", "[PAD]")
    pair = tokenizer("first part", "second part")
    assert pair["input_ids"][0] == tokenizer.cls_token_id and pair["input_ids"][-1] == tokenizer.sep_token_id
    assert set(pair["token_type_ids"]) == {0, 1}

    assert sorted(tokenizer.all_special_tokens) == ["[CLS]", "[MASK]", "[PAD]", "[SEP]", "[UNK]"]

    # WordPiece training is deterministic here (tokenizers#1794 is worked around): same config, same tokens.
    again = tokenize(tmp_path, austen_config(tmp_path / "again", kind="wordpiece", lowercase=True), "again.yaml")
    assert again.exit_code == 0, again.output
    assert open_dataset(tmp_path / "again").meta["tokenizer_fingerprint"] == meta["tokenizer_fingerprint"]
    assert (tmp_path / "again" / "train.tokens.bin").read_bytes() == (
        tmp_path / "data" / "train.tokens.bin"
    ).read_bytes()

    split = dataset.split("train")
    for index, text in enumerate(nonblank_lines(TRAIN_TXT, 50)):
        ids = split.document(index)
        assert ids[-1] == tokenizer.sep_token_id and tokenizer.unk_token_id not in ids
        # Lowercasing strips accents and the decoder spaces out punctuation: compare without them.
        assert _squeeze(tokenizer.decode(ids[:-1].tolist())) == _squeeze(text.lower())


def _squeeze(text: str) -> str:
    stripped = "".join(c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn")
    return re.sub(r"\s+", "", stripped)


# --------------------------------------------------------------------------- corpus shapes


def test_validation_ratio_split_is_seeded_and_deterministic(tmp_path: Path) -> None:
    config = {
        "output_dir": str(tmp_path / "a"),
        "corpus": {"train": str(TRAIN_TXT), "validation_ratio": 0.1, "max_documents": 200},
        "tokenizer": {"vocab_size": 400},
        "seed": 3,
    }
    assert tokenize(tmp_path, config).exit_code == 0
    meta_a = open_dataset(tmp_path / "a").meta
    splits = meta_a["splits"]
    assert splits["train"]["n_documents"] + splits["validation"]["n_documents"] == 200
    assert 5 <= splits["validation"]["n_documents"] <= 40
    # Same config into another directory: the same split, tokens and fingerprint.
    assert tokenize(tmp_path, {**config, "output_dir": str(tmp_path / "b")}).exit_code == 0
    meta_b = open_dataset(tmp_path / "b").meta
    assert meta_b["splits"] == splits and meta_b["fingerprint"] == meta_a["fingerprint"]
    for name in ("train.tokens.bin", "validation.docs.bin"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    # Another seed draws another split; rerunning into "a" replaces the previous dataset.
    assert tokenize(tmp_path, {**config, "seed": 4}).exit_code == 0
    meta_c = open_dataset(tmp_path / "a").meta
    assert meta_c["fingerprint"] != meta_a["fingerprint"] and meta_c["config"]["seed"] == 4
    assert_no_staging_left(tmp_path)


def test_tiny_corpus_borrows_a_validation_document(tmp_path: Path) -> None:
    corpus = tmp_path / "three.txt"
    corpus.write_text("one small document\nanother small document\na third small document\n", encoding="utf-8")
    config = {"output_dir": str(tmp_path / "out"), "corpus": {"train": str(corpus)}, "tokenizer": {"vocab_size": 300}}
    result = tokenize(tmp_path, config)
    assert result.exit_code == 0, result.output
    assert "no document was drawn for validation" in result.output
    splits = open_dataset(tmp_path / "out").meta["splits"]
    assert (splits["train"]["n_documents"], splits["validation"]["n_documents"]) == (2, 1)


def test_blank_line_documents(tmp_path: Path) -> None:
    docs = ["Chapter 1\nIt was a dark night.\nThe end.", "Chapter 2\n\tIndented line.", "Short one.", "Last\nof all"]
    train = tmp_path / "novels.txt"
    train.write_text("\n\n".join(docs[:3]) + "\n\n\n", encoding="utf-8")
    valid = tmp_path / "held_out.txt"
    valid.write_text("\n" + docs[3] + "\n", encoding="utf-8")
    config = {
        "output_dir": str(tmp_path / "out"),
        "corpus": {"train": str(train), "validation": str(valid), "documents": "blank_line"},
        "tokenizer": {"vocab_size": 300, "min_frequency": 1},
    }
    result = tokenize(tmp_path, config)
    assert result.exit_code == 0, result.output
    dataset = open_dataset(tmp_path / "out")
    tokenizer = dataset.load_tokenizer()
    train_split, valid_split = dataset.split("train"), dataset.split("validation")
    assert (train_split.n_documents, valid_split.n_documents) == (3, 1)
    decoded = [tokenizer.decode(train_split.document(i)[:-1].tolist()) for i in range(3)]
    assert decoded == docs[:3]
    assert tokenizer.decode(valid_split.document(0)[:-1].tolist()) == docs[3]


def test_jsonl_csv_and_parquet_with_a_text_column(tmp_path: Path) -> None:
    import pandas as pd

    rows = [{"id": i, "body": f"Row number {i} says hello to the tokenizer."} for i in range(40)]
    rows[5]["body"] = " "  # blank texts are skipped (a null one is an error: tests/test_huge_and_blank_inputs.py)
    (tmp_path / "rows.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    pd.DataFrame(rows).to_csv(tmp_path / "rows.csv", index=False)
    pd.DataFrame(rows).to_parquet(tmp_path / "rows.parquet")
    for suffix in ("jsonl", "csv", "parquet"):
        out = tmp_path / f"out-{suffix}"
        config = {
            "output_dir": str(out),
            "corpus": {"train": str(tmp_path / f"rows.{suffix}"), "text_column": "body", "validation_ratio": 0.2},
            "tokenizer": {"vocab_size": 300},
        }
        result = tokenize(tmp_path, config)
        assert result.exit_code == 0, f"{suffix}: {result.output}"
        splits = open_dataset(out).meta["splits"]
        assert splits["train"]["n_documents"] + splits["validation"]["n_documents"] == 39, suffix


def test_missing_text_column_names_it_and_the_columns_there_are(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text('{"body": "some text", "id": 1}\n', encoding="utf-8")
    config = {"output_dir": str(tmp_path / "out"), "corpus": {"train": str(path)}, "tokenizer": {"vocab_size": 300}}
    result = tokenize(tmp_path, config)
    assert result.exit_code == 3
    assert "'text'" in result.output and "'body'" in result.output and "rows.jsonl" in result.output
    assert not (tmp_path / "out").exists()
    assert_no_staging_left(tmp_path)


def test_save_to_disk_directory_input(tmp_path: Path) -> None:
    from datasets import Dataset

    texts = [f"Document {i}: Emma walked to Highbury in the rain." for i in range(30)]
    Dataset.from_dict({"text": texts, "n": list(range(30))}).save_to_disk(str(tmp_path / "saved"))
    config = {
        "output_dir": str(tmp_path / "out"),
        "corpus": {"train": str(tmp_path / "saved"), "validation_ratio": 0.2},
        "tokenizer": {"kind": "wordpiece", "vocab_size": 300},
    }
    result = tokenize(tmp_path, config)
    assert result.exit_code == 0, result.output
    splits = open_dataset(tmp_path / "out").meta["splits"]
    assert splits["train"]["n_documents"] + splits["validation"]["n_documents"] == 30


def test_pretrained_tokenizer_from_a_local_directory(tmp_path: Path, bpe_dataset: Path) -> None:
    config = austen_config(tmp_path / "out")
    config["tokenizer"] = {"pretrained": str(bpe_dataset)}
    result = tokenize(tmp_path, config)
    assert result.exit_code == 0, result.output
    reused = open_dataset(tmp_path / "out")
    original = open_dataset(bpe_dataset)
    assert reused.meta["tokenizer_kind"] == "pretrained"
    assert reused.meta["tokenizer_fingerprint"] == original.meta["tokenizer_fingerprint"]
    assert reused.separator_id == original.separator_id
    assert np.array_equal(reused.split("validation").tokens, original.split("validation").tokens)


# --------------------------------------------------------------------------- errors


def test_missing_corpus_file(tmp_path: Path) -> None:
    config = {"output_dir": str(tmp_path / "out"), "corpus": {"train": str(tmp_path / "nope" / "absent.txt")}}
    result = tokenize(tmp_path, config)
    assert result.exit_code == 3
    assert "absent.txt" in result.output and "not found" in result.output


def test_non_utf8_file_names_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "latin1.txt"
    path.write_bytes("first line\nsecond line\ncaf\u00e9 au lait\n".encode("latin-1"))
    config = {"output_dir": str(tmp_path / "out"), "corpus": {"train": str(path)}, "tokenizer": {"vocab_size": 300}}
    result = tokenize(tmp_path, config)
    assert result.exit_code == 3
    assert "latin1.txt" in result.output and "UTF-8" in result.output and "line 3" in result.output


def test_empty_corpus(tmp_path: Path) -> None:
    path = tmp_path / "blank.txt"
    path.write_text("\n   \n\n", encoding="utf-8")
    config = {"output_dir": str(tmp_path / "out"), "corpus": {"train": str(path)}, "tokenizer": {"vocab_size": 300}}
    result = tokenize(tmp_path, config)
    assert result.exit_code == 3
    assert "blank.txt" in result.output and "no documents" in result.output


def test_failure_after_writing_started_leaves_the_previous_dataset(tmp_path: Path) -> None:
    good = tmp_path / "good.txt"
    good.write_text("".join(f"line {i} of plain text\n" for i in range(50)), encoding="utf-8")
    config = {
        "output_dir": str(tmp_path / "out"),
        "corpus": {"train": str(good), "validation": str(good)},
        "tokenizer": {"vocab_size": 300},
    }
    assert tokenize(tmp_path, config).exit_code == 0
    before = (tmp_path / "out" / "meta.json").read_bytes()
    # The validation file is read only while encoding, after the staging directory exists.
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"fine\n\xff\xfe broken\n")
    result = tokenize(tmp_path, {**config, "corpus": {"train": str(good), "validation": str(bad)}})
    assert result.exit_code == 3 and "bad.txt" in result.output
    assert (tmp_path / "out" / "meta.json").read_bytes() == before
    assert_no_staging_left(tmp_path)


def test_refuses_an_output_dir_that_is_not_a_dataset(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "precious.txt").write_text("keep me", encoding="utf-8")
    config = {"output_dir": str(tmp_path / "out"), "corpus": {"train": str(TRAIN_TXT)}}
    result = tokenize(tmp_path, config)
    assert result.exit_code == 2 and "not a seqlm dataset" in result.output
    assert (tmp_path / "out" / "precious.txt").read_text(encoding="utf-8") == "keep me"
