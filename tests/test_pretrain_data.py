"""Pretraining data: BlockSampler (packed blocks), SentencePairSampler (NSP pairs), step_rng.

Splits are written with SplitWriter from numpy arrays whose ids encode their position
(document d, offset j), so every block or segment can be traced back to where it came from.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from seqlm.data.pretrain_data import (
    IS_NEXT,
    NOT_NEXT,
    TRAIN_STREAM,
    VALIDATION_STREAM,
    BlockSampler,
    SentencePairSampler,
    _truncated_lengths,
    step_rng,
)
from seqlm.data.token_store import FORMAT, SplitWriter, TokenDataset, TokenSplit, token_dtype
from seqlm.errors import DataError

PAD, CLS, SEP = 0, 2, 3
BASE = 100  # token ids of documents start here, far from the special ids
STRIDE = 1000  # document d holds ids BASE + d * STRIDE + j


def write_split(directory: Path, documents: list[list[int]], vocab_size: int = 2**20) -> TokenSplit:
    directory.mkdir(parents=True, exist_ok=True)
    dtype = token_dtype(vocab_size)
    writer = SplitWriter(directory, "train", dtype)
    writer.append(documents[: len(documents) // 2])
    writer.append(documents[len(documents) // 2 :])
    counts = writer.close()
    meta = {
        "format": FORMAT,
        "dtype": dtype.name,
        "vocab_size": vocab_size,
        "separator_id": SEP,
        "splits": {"train": counts},
    }
    (directory / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
    return TokenDataset.open(directory).split("train")


def numbered_documents(lengths: list[int]) -> list[list[int]]:
    """Document d: `lengths[d]` ids BASE + d * STRIDE + j, then SEP."""
    return [[BASE + d * STRIDE + j for j in range(n)] + [SEP] for d, n in enumerate(lengths)]


@pytest.fixture(scope="module")
def stream_split(tmp_path_factory: pytest.TempPathFactory) -> TokenSplit:
    """A token stream where tokens[i] == i + 1 (ids never repeat; no SEP inside), 5,000 tokens."""
    tokens = np.arange(1, 5001)
    documents = [chunk.tolist() for chunk in np.split(tokens, [700, 1900, 2000, 4321])]
    return write_split(tmp_path_factory.mktemp("stream"), documents)


@pytest.fixture(scope="module")
def pair_split(tmp_path_factory: pytest.TempPathFactory) -> TokenSplit:
    rng = np.random.default_rng(0)
    lengths = [int(n) for n in rng.integers(1, 60, size=25)]
    return write_split(tmp_path_factory.mktemp("pairs"), numbered_documents(lengths))


def tiny(tmp_path: Path, n_tokens: int) -> TokenSplit:
    return write_split(tmp_path, [list(range(1, n_tokens + 1))])


# --------------------------------------------------------------------------- step_rng


def test_step_rng_is_a_pure_function_of_its_key() -> None:
    draw = lambda *key: step_rng(*key).integers(0, 2**62, size=4).tolist()  # noqa: E731
    assert draw(0, TRAIN_STREAM, 5, 1) == draw(0, TRAIN_STREAM, 5, 1)
    keys = [(0, TRAIN_STREAM, 5, 1), (1, TRAIN_STREAM, 5, 1), (0, VALIDATION_STREAM, 5, 1), (0, TRAIN_STREAM, 6, 1),
            (0, TRAIN_STREAM, 5, 0), (0, TRAIN_STREAM, 1, 5)]  # fmt: skip
    assert len({tuple(draw(*key)) for key in keys}) == len(keys)


# --------------------------------------------------------------------------- BlockSampler


@pytest.mark.parametrize("seq_len", [2, 16, 128])
def test_random_blocks_are_contiguous_slices(stream_split: TokenSplit, seq_len: int) -> None:
    sampler = BlockSampler(stream_split, seq_len)
    blocks = sampler.random(step_rng(0, TRAIN_STREAM, 3, 0), 200)
    assert blocks.shape == (200, seq_len)
    assert blocks.dtype == np.int64
    starts = blocks[:, 0] - 1  # tokens[i] == i + 1
    assert (starts >= 0).all() and (starts + seq_len <= stream_split.n_tokens).all()
    assert np.array_equal(blocks, starts[:, None] + 1 + np.arange(seq_len))
    for block, start in zip(blocks[:5], starts[:5]):
        assert np.array_equal(block, stream_split.tokens[start : start + seq_len])


def test_random_blocks_cover_the_stream_up_to_the_last_token(tmp_path: Path) -> None:
    split = tiny(tmp_path, 12)
    sampler = BlockSampler(split, 4)
    blocks = sampler.random(step_rng(0, TRAIN_STREAM, 0, 0), 2000)
    assert set(blocks[:, 0].tolist()) == set(range(1, 10))  # every start 0..8 appears, none past 8
    assert blocks.max() == 12


def test_random_blocks_are_a_pure_function_of_the_rng_seed(stream_split: TokenSplit) -> None:
    sampler = BlockSampler(stream_split, 32)
    same = [sampler.random(step_rng(7, TRAIN_STREAM, 11, 2), 8) for _ in range(2)]
    fresh = BlockSampler(stream_split, 32).random(step_rng(7, TRAIN_STREAM, 11, 2), 8)
    assert np.array_equal(same[0], same[1]) and np.array_equal(same[0], fresh)
    others = [(7, TRAIN_STREAM, 12, 2), (7, TRAIN_STREAM, 11, 3), (8, TRAIN_STREAM, 11, 2), (7, VALIDATION_STREAM, 11, 2)]
    for other in others:
        assert not np.array_equal(sampler.random(step_rng(*other), 8), same[0]), other


def test_mlm_prefix(stream_split: TokenSplit) -> None:
    sampler = BlockSampler(stream_split, 16, prefix_id=CLS)
    assert sampler.stream_len == 15
    for blocks in (sampler.random(step_rng(0, TRAIN_STREAM, 0, 0), 50), sampler.sequential(None)):
        assert blocks.shape[1] == 16
        assert (blocks[:, 0] == CLS).all()
        body = blocks[:, 1:]
        assert np.array_equal(body, body[:, :1] + np.arange(15))  # 15 consecutive stream tokens
    assert BlockSampler(stream_split, 16).stream_len == 16


@pytest.mark.parametrize("prefix_id", [None, CLS])
def test_sequential_blocks_do_not_overlap(stream_split: TokenSplit, prefix_id: int | None) -> None:
    sampler = BlockSampler(stream_split, 64, prefix_id)
    width = sampler.stream_len
    blocks = sampler.sequential(None)
    body = blocks[:, 1:] if prefix_id is not None else blocks
    assert len(blocks) == stream_split.n_tokens // width
    # Back to back from the start: block k holds tokens [k * width, (k + 1) * width).
    assert np.array_equal(body.reshape(-1), np.asarray(stream_split.tokens[: len(blocks) * width]))
    assert np.array_equal(sampler.sequential(None), blocks)  # fixed


@pytest.mark.parametrize("max_blocks", [1, 2, 3, 7, 10, 77, 78])
def test_sequential_capped_blocks_are_evenly_spaced(stream_split: TokenSplit, max_blocks: int) -> None:
    sampler = BlockSampler(stream_split, 64)
    n_available = stream_split.n_tokens // 64  # 78
    blocks = sampler.sequential(max_blocks)
    assert len(blocks) == min(max_blocks, n_available)
    starts = blocks[:, 0] - 1
    assert (starts % 64 == 0).all(), "capped blocks are a subset of the uncapped ones"
    index = starts // 64
    assert index[0] == 0
    if max_blocks > 1:
        assert index[-1] == n_available - 1, "spread over the whole split"
        gaps = np.diff(index)
        assert (gaps >= 1).all(), "distinct, in order: no overlap"
        assert gaps.max() - gaps.min() <= 1, "evenly spaced"
    assert np.array_equal(blocks, starts[:, None] + 1 + np.arange(64))
    assert np.array_equal(sampler.sequential(max_blocks), blocks)


def test_sequential_cap_above_available_returns_all(stream_split: TokenSplit) -> None:
    sampler = BlockSampler(stream_split, 64)
    assert np.array_equal(sampler.sequential(10_000), sampler.sequential(None))


def test_zero_blocks(stream_split: TokenSplit) -> None:
    """`seqlm evaluate` asks for `pseudo_perplexity_windows` (>= 0) sequential blocks."""
    sampler = BlockSampler(stream_split, 64, prefix_id=CLS)
    assert sampler.sequential(0).shape == (0, 64)
    assert sampler.random(step_rng(0, TRAIN_STREAM, 0, 0), 0).shape == (0, 64)


@pytest.mark.parametrize(("n_tokens", "seq_len", "prefix_id"), [(1, 2, None), (7, 8, None), (3, 8, CLS), (6, 8, CLS)])
def test_too_short_split_is_a_data_error(tmp_path: Path, n_tokens: int, seq_len: int, prefix_id: int | None) -> None:
    with pytest.raises(DataError, match=rf"holds {n_tokens} tokens.*seq_len"):
        BlockSampler(tiny(tmp_path, n_tokens), seq_len, prefix_id)


@pytest.mark.parametrize(("seq_len", "prefix_id"), [(8, None), (9, CLS)])
def test_just_long_enough_split(tmp_path: Path, seq_len: int, prefix_id: int | None) -> None:
    sampler = BlockSampler(tiny(tmp_path, 9), seq_len, prefix_id)
    assert sampler.random(step_rng(0, TRAIN_STREAM, 0, 0), 3).shape == (3, seq_len)
    assert sampler.sequential(None).shape == (1, seq_len)


# --------------------------------------------------------------------------- SentencePairSampler


def parse_pair(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """(A, B, length of the real tokens) of `[CLS] A [SEP] B [SEP] [PAD]...`."""
    assert ids[0] == CLS
    seps = np.flatnonzero(ids == SEP)
    assert len(seps) == 2, ids
    first, second = seps
    assert (ids[second + 1 :] == PAD).all()
    assert not np.isin(ids[1:first], [CLS, SEP, PAD]).any()
    assert not np.isin(ids[first + 1 : second], [CLS, SEP, PAD]).any()
    return ids[1:first], ids[first + 1 : second], int(second + 1)


def source_document(segment: np.ndarray) -> int:
    documents = (segment - BASE) // STRIDE
    assert len(set(documents.tolist())) == 1, "a segment comes from one document"
    return int(documents[0])


def document_body(split: TokenSplit, d: int) -> np.ndarray:
    document = split.document(d)
    assert document[-1] == SEP
    return document[:-1]


@pytest.mark.parametrize("seq_len", [8, 32, 128])
def test_pair_layout(pair_split: TokenSplit, seq_len: int) -> None:
    sampler = SentencePairSampler(pair_split, seq_len, CLS, SEP, PAD)
    pairs = sampler.random(step_rng(0, TRAIN_STREAM, 0, 0), 300)
    assert set(pairs) == {"input_ids", "token_type_ids", "attention_mask", "next_sentence_label"}
    for key in ("input_ids", "token_type_ids", "attention_mask"):
        assert pairs[key].shape == (300, seq_len) and pairs[key].dtype == np.int64
    assert pairs["next_sentence_label"].shape == (300,) and pairs["next_sentence_label"].dtype == np.int64
    budget = seq_len - 3
    for ids, types, mask, label in zip(
        pairs["input_ids"], pairs["token_type_ids"], pairs["attention_mask"], pairs["next_sentence_label"]
    ):
        a, b, length = parse_pair(ids)
        assert length <= seq_len
        assert len(a) >= 1 and len(b) >= 1
        # Segment 0: [CLS] A [SEP]; segment 1: B [SEP]; padding: type 0, not attended.
        expected_types = np.zeros(seq_len, dtype=np.int64)
        expected_types[len(a) + 2 : length] = 1
        assert np.array_equal(types, expected_types)
        assert np.array_equal(mask, (np.arange(seq_len) < length).astype(np.int64))
        # A is the tail of document i, B the head of document j, trimmed like BERT's truncate_seq_pair.
        i, j = source_document(a), source_document(b)
        body_a, body_b = document_body(pair_split, i), document_body(pair_split, j)
        assert np.array_equal(a, body_a[len(body_a) - len(a) :])
        assert np.array_equal(b, body_b[: len(b)])
        assert (len(a), len(b)) == _truncated_lengths(len(body_a), len(body_b), budget)
        if label == IS_NEXT:
            assert j == i + 1
        else:
            assert label == NOT_NEXT
            assert j not in (i, i + 1)


def test_pair_labels_are_balanced_and_other_documents_uniform(pair_split: TokenSplit) -> None:
    sampler = SentencePairSampler(pair_split, 24, CLS, SEP, PAD)
    n_docs = pair_split.n_documents
    firsts, seconds, labels = [], [], []
    for step in range(10):
        pairs = sampler.random(step_rng(3, TRAIN_STREAM, step, 0), 400)
        for ids, label in zip(pairs["input_ids"], pairs["next_sentence_label"]):
            a, b, _ = parse_pair(ids)
            firsts.append(source_document(a))
            seconds.append(source_document(b))
            labels.append(int(label))
    n = len(labels)
    n_not_next = sum(labels)
    assert abs(n_not_next - n / 2) <= 4 * math.sqrt(n / 4), n_not_next
    # A never comes from the last document (it has no next one); every other document is used.
    assert set(firsts) == set(range(n_docs - 1))
    # "Random" B: every document appears, none much more often than the others.
    randoms = [j for j, label in zip(seconds, labels) if label == NOT_NEXT]
    counts = np.bincount(randoms, minlength=n_docs)
    assert (counts > 0).all()
    expected = len(randoms) / n_docs
    assert np.abs(counts - expected).max() <= 5 * math.sqrt(expected)


def test_pairs_are_a_pure_function_of_the_rng_seed(pair_split: TokenSplit) -> None:
    sampler = SentencePairSampler(pair_split, 32, CLS, SEP, PAD)
    first = sampler.random(step_rng(1, TRAIN_STREAM, 4, 0), 16)
    again = SentencePairSampler(pair_split, 32, CLS, SEP, PAD).random(step_rng(1, TRAIN_STREAM, 4, 0), 16)
    other = sampler.random(step_rng(1, TRAIN_STREAM, 5, 0), 16)
    assert all(np.array_equal(first[key], again[key]) for key in first)
    assert not np.array_equal(first["input_ids"], other["input_ids"])


def test_three_documents_are_enough(tmp_path: Path) -> None:
    split = write_split(tmp_path, numbered_documents([4, 5, 6]))
    pairs = SentencePairSampler(split, 16, CLS, SEP, PAD).random(step_rng(0, TRAIN_STREAM, 0, 0), 200)
    for ids, label in zip(pairs["input_ids"], pairs["next_sentence_label"]):
        a, b, _ = parse_pair(ids)
        i, j = source_document(a), source_document(b)
        assert i in (0, 1)
        assert j == (i + 1 if label == IS_NEXT else {0: 2, 1: 0}[i])


@pytest.mark.parametrize("n_documents", [1, 2])
def test_fewer_than_three_documents_is_a_data_error(tmp_path: Path, n_documents: int) -> None:
    split = write_split(tmp_path, numbered_documents([5] * n_documents))
    with pytest.raises(DataError, match=rf"at least 3 documents.*has {n_documents}"):
        SentencePairSampler(split, 16, CLS, SEP, PAD)


def test_truncated_lengths_properties() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20_000):
        len_a, len_b = (int(x) for x in rng.integers(0, 200, size=2))
        budget = int(rng.integers(0, 260))
        new_a, new_b = _truncated_lengths(len_a, len_b, budget)
        assert 0 <= new_a <= len_a and 0 <= new_b <= len_b
        assert new_a + new_b == min(len_a + len_b, budget), "fits the budget, and uses all of it"
        if len_a + len_b <= budget:
            assert (new_a, new_b) == (len_a, len_b)
            continue
        # The longer segment is trimmed first, one token at a time: a trimmed segment never ends up
        # shorter than the other one, bar one token when both reach the same length.
        longer_a = len_a > len_b
        if new_a < len_a:
            assert new_a >= new_b - 1
        if new_b < len_b:
            assert new_b >= new_a - 1
        if longer_a and budget >= 2 * len_b:
            assert new_b == len_b, "the shorter segment is untouched while the longer one can give"
        if not longer_a and budget >= 2 * len_a:
            assert new_a == len_a


def test_truncated_lengths_examples() -> None:
    assert _truncated_lengths(3, 4, 10) == (3, 4)
    assert _truncated_lengths(10, 2, 8) == (6, 2)
    assert _truncated_lengths(2, 10, 8) == (2, 6)
    assert _truncated_lengths(10, 10, 8) == (4, 4)
    assert _truncated_lengths(10, 10, 7) in {(3, 4), (4, 3)}
    assert _truncated_lengths(12, 10, 8) == (4, 4)
    assert _truncated_lengths(5, 5, 0) == (0, 0)


# --------------------------------------------------------------------------- PretrainBatches (resume without replay)


@pytest.fixture(scope="module")
def wordpiece(tiny_tokenizer: Any) -> Any:
    tokenizer = tiny_tokenizer("wordpiece", vocab_size=300, lowercase=True)
    assert (tokenizer.pad_token_id, tokenizer.cls_token_id, tokenizer.sep_token_id) == (PAD, CLS, SEP)
    return tokenizer


@pytest.mark.parametrize("objective", ["clm", "mlm", "mlm+nsp"])
def test_pretrain_batches_depend_only_on_seed_step_micro(
    tmp_path: Path, wordpiece: Any, objective: str
) -> None:
    from seqlm.data.pretrain_batches import PretrainBatches

    rng = np.random.default_rng(1)
    documents = [[*rng.integers(5, 300, size=int(rng.integers(3, 40))).tolist(), SEP] for _ in range(60)]
    split = write_split(tmp_path, documents, vocab_size=len(wordpiece))
    make = lambda seed=0: PretrainBatches(objective, split, split, wordpiece, 16, 4, seed)  # noqa: E731
    batches = make()
    batches.train(0, 0)
    batches.train(1, 0)  # consumed before: must not matter
    resumed = make().train(5, 1)
    straight = make().train(5, 1)
    later = batches.train(5, 1)
    for value in (*resumed.inputs.values(), *resumed.targets.values()):
        assert isinstance(value, torch.Tensor)
    for key in resumed.inputs:
        assert torch.equal(resumed.inputs[key], straight.inputs[key])
        assert torch.equal(resumed.inputs[key], later.inputs[key])
    for key in resumed.targets:
        assert torch.equal(resumed.targets[key], later.targets[key])
    assert not torch.equal(make().train(6, 1).inputs["input_ids"], resumed.inputs["input_ids"])
    assert not torch.equal(make(seed=1).train(5, 1).inputs["input_ids"], resumed.inputs["input_ids"])
    validation = make().validation(2)
    assert len(validation) == 2
    again = make().validation(2)
    assert all(torch.equal(x.inputs["input_ids"], y.inputs["input_ids"]) for x, y in zip(validation, again))
    if objective == "mlm":
        assert (resumed.inputs["input_ids"][:, 0] == CLS).all()
