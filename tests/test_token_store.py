"""The tokenized-dataset format: SplitWriter writes it, TokenDataset memory-maps it back.

Fixtures are written from plain Python lists into tmp_path, so the file needs no tokenizer.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from seqlm.data.token_store import (
    FORMAT,
    SPLITS,
    SplitWriter,
    TokenDataset,
    TokenSplit,
    token_dtype,
)
from seqlm.errors import DataError, ExitCode

SEP = 3


def write_dataset(
    directory: Path, splits: dict[str, list[list[list[int]]]], vocab_size: int = 1000, separator_id: int = SEP
) -> dict[str, dict[str, int]]:
    """Write each split batch by batch with SplitWriter, then meta.json; return the writers' counts."""
    directory.mkdir(parents=True, exist_ok=True)
    dtype = token_dtype(vocab_size)
    counts = {}
    for split, batches in splits.items():
        writer = SplitWriter(directory, split, dtype)
        for batch in batches:
            writer.append(batch)
        counts[split] = writer.close()
    meta = {
        "format": FORMAT,
        "dtype": dtype.name,
        "vocab_size": vocab_size,
        "separator_id": separator_id,
        "splits": counts,
    }
    (directory / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
    return counts


def random_documents(rng: np.random.Generator, n: int, high: int, max_len: int = 30) -> list[list[int]]:
    """`n` documents of random ids in [SEP + 1, high), each ending with SEP."""
    return [[*rng.integers(SEP + 1, high, size=int(rng.integers(0, max_len))).tolist(), SEP] for _ in range(n)]


@pytest.fixture
def documents() -> dict[str, list[list[list[int]]]]:
    rng = np.random.default_rng(0)
    return {
        "train": [random_documents(rng, 17, 1000), [], random_documents(rng, 5, 1000), random_documents(rng, 1, 1000)],
        "validation": [random_documents(rng, 4, 1000)],
    }


# --------------------------------------------------------------------------- round trip


def test_token_dtype_boundary() -> None:
    # ids run 0..vocab_size-1: 65536 ids fit uint16 exactly, one more needs uint32.
    assert token_dtype(2) == np.uint16
    assert token_dtype(2**16 - 1) == np.uint16
    assert token_dtype(2**16) == np.uint16
    assert token_dtype(2**16 + 1) == np.uint32
    assert token_dtype(250_000) == np.uint32


def test_round_trip_ids_and_boundaries(tmp_path: Path, documents: dict[str, Any]) -> None:
    counts = write_dataset(tmp_path / "ds", documents)
    dataset = TokenDataset.open(tmp_path / "ds")
    assert dataset.vocab_size == 1000
    assert dataset.separator_id == SEP
    for split in SPLITS:
        expected = [doc for batch in documents[split] for doc in batch]
        assert counts[split] == {"n_documents": len(expected), "n_tokens": sum(map(len, expected))}
        loaded = dataset.split(split)
        assert loaded.n_documents == len(expected)
        assert loaded.n_tokens == sum(map(len, expected))
        assert loaded.tokens.dtype == np.uint16
        assert loaded.doc_offsets.dtype == np.int64
        assert loaded.doc_offsets[0] == 0
        assert np.array_equal(loaded.doc_offsets, np.concatenate([[0], np.cumsum([len(d) for d in expected])]))
        for index, doc in enumerate(expected):
            got = loaded.document(index)
            assert got.tolist() == doc
            assert got[-1] == SEP
        # The token stream is the documents back to back.
        assert np.asarray(loaded.tokens).tolist() == [t for doc in expected for t in doc]


def test_empty_batches_and_empty_documents_write_nothing(tmp_path: Path) -> None:
    writer = SplitWriter(tmp_path, "train", np.dtype(np.uint16))
    writer.append([])
    writer.append([[], []])
    writer.append([[5, SEP], [], [6, 7, SEP]])
    assert writer.close() == {"n_tokens": 5, "n_documents": 2}
    assert (tmp_path / "train.tokens.bin").stat().st_size == 5 * 2
    assert np.fromfile(tmp_path / "train.docs.bin", dtype="<i8").tolist() == [0, 2, 5]


@pytest.mark.parametrize(
    ("vocab_size", "dtype", "itemsize"),
    [(2**16, np.uint16, 2), (2**16 + 1, np.uint32, 4)],
)
def test_dtype_round_trip_at_the_uint16_boundary(tmp_path: Path, vocab_size: int, dtype: type, itemsize: int) -> None:
    top = vocab_size - 1  # the largest id the vocabulary holds: 65535 (uint16) or 65536 (uint32)
    docs = [[0, 1, top, SEP], [top, top - 1, 2**15, SEP], [SEP]]
    write_dataset(tmp_path / "ds", {"train": [docs]}, vocab_size=vocab_size)
    meta = json.loads((tmp_path / "ds" / "meta.json").read_text())
    assert meta["dtype"] == np.dtype(dtype).name
    assert (tmp_path / "ds" / "train.tokens.bin").stat().st_size == 9 * itemsize
    # Raw little-endian on disk.
    raw = np.fromfile(tmp_path / "ds" / "train.tokens.bin", dtype=np.dtype(dtype).newbyteorder("<"))
    assert raw.tolist() == [t for doc in docs for t in doc]
    split = TokenDataset.open(tmp_path / "ds").split("train")
    assert split.tokens.dtype == dtype
    assert [split.document(i).tolist() for i in range(split.n_documents)] == docs
    assert int(split.tokens.max()) == top


def test_split_is_memory_mapped(tmp_path: Path, documents: dict[str, Any]) -> None:
    write_dataset(tmp_path / "ds", documents)
    split = TokenDataset.open(tmp_path / "ds").split("train")
    assert isinstance(split, TokenSplit)
    assert isinstance(split.tokens, np.memmap)
    assert isinstance(split.doc_offsets, np.memmap)
    assert Path(split.tokens.filename) == (tmp_path / "ds" / "train.tokens.bin").resolve()
    assert Path(split.doc_offsets.filename) == (tmp_path / "ds" / "train.docs.bin").resolve()
    assert split.tokens.mode == "r"  # read-only: a reader cannot corrupt the dataset
    with pytest.raises(ValueError):
        split.tokens[0] = 1
    # Indexing a document reads exactly that slice of the token file.
    raw = np.fromfile(tmp_path / "ds" / "train.tokens.bin", dtype="<u2")
    offsets = np.fromfile(tmp_path / "ds" / "train.docs.bin", dtype="<i8")
    for index in (0, 7, split.n_documents - 1):
        document = split.document(index)
        assert document.tolist() == raw[offsets[index] : offsets[index + 1]].tolist()


def test_open_reads_only_meta_json(tmp_path: Path, documents: dict[str, Any]) -> None:
    write_dataset(tmp_path / "ds", documents)
    for file in (tmp_path / "ds").glob("*.bin"):
        file.unlink()
    dataset = TokenDataset.open(tmp_path / "ds")  # no array is touched until a split is asked for
    assert dataset.meta["splits"]["train"]["n_documents"] == 23
    with pytest.raises(DataError, match="train.tokens.bin"):
        dataset.split("train")


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("suffix", ["tokens.bin", "docs.bin"])
@pytest.mark.parametrize("change", ["truncate", "extend", "delete"])
def test_damaged_array_file_is_a_data_error_naming_it(
    tmp_path: Path, documents: dict[str, Any], suffix: str, change: str
) -> None:
    write_dataset(tmp_path / "ds", documents)
    damaged = tmp_path / "ds" / f"train.{suffix}"
    data = damaged.read_bytes()
    if change == "truncate":
        damaged.write_bytes(data[:-3])
    elif change == "extend":
        damaged.write_bytes(data + b"\0\0")
    else:
        damaged.unlink()
    dataset = TokenDataset.open(tmp_path / "ds")
    with pytest.raises(DataError) as info:
        dataset.split("train")
    assert str(damaged) in str(info.value)
    assert info.value.exit_code == ExitCode.DATA
    dataset.split("validation")  # the other split is intact


def test_missing_meta_json_is_a_data_error(tmp_path: Path, documents: dict[str, Any]) -> None:
    write_dataset(tmp_path / "ds", documents)
    (tmp_path / "ds" / "meta.json").unlink()
    with pytest.raises(DataError, match="meta.json") as info:
        TokenDataset.open(tmp_path / "ds")
    assert str(tmp_path / "ds") in str(info.value)
    with pytest.raises(DataError, match="meta.json"):
        TokenDataset.open(tmp_path / "nowhere")


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"{not json", "unreadable"),
        (b"\xff\xfe\x00garbage", "unreadable"),
        (json.dumps({"format": "seqlm-tokens/0"}).encode(), "format"),
        (json.dumps({"dtype": "uint16"}).encode(), "format"),
    ],
)
def test_bad_meta_json_is_a_data_error_naming_it(tmp_path: Path, content: bytes, match: str) -> None:
    (tmp_path / "meta.json").write_bytes(content)
    with pytest.raises(DataError, match=match) as info:
        TokenDataset.open(tmp_path)
    assert str(tmp_path / "meta.json") in str(info.value)


def test_unknown_split_is_a_data_error(tmp_path: Path, documents: dict[str, Any]) -> None:
    write_dataset(tmp_path / "ds", documents)
    with pytest.raises(DataError, match="'test'.*train, validation"):
        TokenDataset.open(tmp_path / "ds").split("test")


def test_empty_split_is_a_data_error(tmp_path: Path) -> None:
    write_dataset(tmp_path / "ds", {"train": [[[5, SEP]]], "validation": [[]]})
    dataset = TokenDataset.open(tmp_path / "ds")
    assert dataset.split("train").n_tokens == 2
    with pytest.raises(DataError, match="no tokens"):
        dataset.split("validation")
