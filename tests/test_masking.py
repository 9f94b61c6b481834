"""BERT's masked-LM corruption (`MaskedLMCorruption`): selection rates, 80/10/10, specials, words.

Rates are checked over a batch of ~28k real WordPiece tokens with tolerances of 4 binomial
standard deviations, so a correct implementation fails about once in 30,000 runs per check
(the generator is seeded, so in practice never) while a wrong rate (e.g. 0.12 or 0.18
instead of 0.15) fails every time.
"""

from __future__ import annotations

import math
from itertools import islice
from pathlib import Path
from typing import Any

import pytest
import torch

from seqlm.data.masking import IGNORE_INDEX, MaskedLMCorruption

CORPUS = Path(__file__).resolve().parents[1] / "data" / "corpus" / "train.txt"
N_LINES = 300
ROWS, SEQ_LEN = 220, 128


def corpus_lines() -> list[str]:
    with CORPUS.open(encoding="utf-8") as handle:
        return [line.strip() for line in islice(handle, N_LINES) if line.strip()]


@pytest.fixture(scope="module")
def wordpiece(tiny_tokenizer: Any) -> Any:
    # A small vocabulary: many words split into pieces, so whole-word masking has work to do.
    return tiny_tokenizer("wordpiece", vocab_size=300, lowercase=True)


@pytest.fixture(scope="module")
def byte_bpe(tiny_tokenizer: Any) -> Any:
    return tiny_tokenizer("bpe", vocab_size=400)


def make_batch(tokenizer: Any, prefix: int | None, separator: int, pad: int) -> torch.Tensor:
    """ROWS x SEQ_LEN blocks of the corpus stream (separator after each line), like pretraining's.

    Each block starts with `prefix` (MLM's [CLS]) when given; every fourth row ends in padding.
    """
    stream: list[int] = []
    for ids in tokenizer(corpus_lines(), add_special_tokens=False)["input_ids"]:
        stream.extend([*ids, separator])
    width = SEQ_LEN - (prefix is not None)
    assert len(stream) >= ROWS * width, "the fixture corpus is too short for the batch"
    rows = []
    for row in range(ROWS):
        block = stream[row * width : (row + 1) * width]
        if row % 4 == 3:
            cut = 20 + row % 90
            block = block[:cut] + [pad] * (width - cut)
        rows.append(([prefix] if prefix is not None else []) + block)
    return torch.tensor(rows, dtype=torch.long)


@pytest.fixture(scope="module")
def batch(wordpiece: Any) -> torch.Tensor:
    ids = make_batch(wordpiece, wordpiece.cls_token_id, wordpiece.sep_token_id, wordpiece.pad_token_id)
    ids[5, 10] = ids[7, 50] = ids[9, 99] = wordpiece.unk_token_id  # [UNK] is special too
    return ids


def within(count: int, n: int, p: float, sigmas: float = 4.0) -> bool:
    """`count` out of `n` is within `sigmas` binomial standard deviations of n·p."""
    return abs(count - n * p) <= sigmas * math.sqrt(n * p * (1 - p))


def special_ids(tokenizer: Any) -> torch.Tensor:
    return torch.tensor(sorted(set(tokenizer.all_special_ids)))


def word_groups(tokenizer: Any, row: list[int], wordpiece_style: bool) -> list[list[int]]:
    """Positions of each word in a row: a word-start piece plus the continuation pieces after it.

    Special tokens are never part of a word (and pieces orphaned right after one are skipped).
    """
    specials = set(tokenizer.all_special_ids)
    tokens = tokenizer.convert_ids_to_tokens(row)
    groups: list[list[int]] = []
    current: list[int] | None = None
    for position, (token_id, token) in enumerate(zip(row, tokens)):
        if token_id in specials:
            current = None
            continue
        continues = token.startswith("##") if wordpiece_style else not token.startswith("Ġ")
        if continues and current is not None:
            current.append(position)
        elif not continues:
            current = [position]
            groups.append(current)
    return groups


# --------------------------------------------------------------------------- token-level masking


@pytest.mark.parametrize("probability", [0.15, 0.4])
def test_selection_and_replacement_rates(wordpiece: Any, batch: torch.Tensor, probability: float) -> None:
    corruption = MaskedLMCorruption(wordpiece, probability)
    corrupted, labels = corruption(batch, torch.Generator().manual_seed(1234))
    assert corrupted.shape == labels.shape == batch.shape
    assert corrupted.dtype == labels.dtype == torch.long

    specials = special_ids(wordpiece)
    is_special = torch.isin(batch, specials)
    assert is_special.any(dim=1).all() and (batch == wordpiece.pad_token_id).any()
    selected = labels != IGNORE_INDEX
    maskable = int((~is_special).sum())

    # Specials ([CLS], [SEP], [PAD], [UNK]) are never selected; labels are the originals there only.
    assert not (selected & is_special).any()
    assert torch.equal(labels[selected], batch[selected])
    assert (labels[~selected] == IGNORE_INDEX).all()
    assert torch.equal(corrupted[~selected], batch[~selected])
    n_selected = int(selected.sum())
    assert within(n_selected, maskable, probability), (n_selected, maskable)

    # Among selected: 80% [MASK], 10% a random token, 10% unchanged (a random draw may equal the original).
    n_replacements = len(wordpiece) - len(specials)
    masked = corrupted[selected] == wordpiece.mask_token_id
    unchanged = corrupted[selected] == batch[selected]
    random = ~masked & ~unchanged
    assert within(int(masked.sum()), n_selected, 0.8)
    assert within(int(unchanged.sum()), n_selected, 0.1 + 0.1 / n_replacements)
    assert within(int(random.sum()), n_selected, 0.1 * (1 - 1 / n_replacements))

    # Random replacements are real vocabulary tokens, never special ones, drawn across the vocabulary.
    replacements = corrupted[selected][random]
    assert not torch.isin(replacements, specials).any()
    assert ((replacements >= 0) & (replacements < len(wordpiece))).all()
    if probability == 0.4:  # ~1,300 draws over ~295 ids: nearly all of them appear
        assert len(torch.unique(replacements)) > 0.8 * n_replacements


def test_input_is_not_modified(wordpiece: Any, batch: torch.Tensor) -> None:
    before = batch.clone()
    MaskedLMCorruption(wordpiece, 0.5)(batch, torch.Generator().manual_seed(0))
    MaskedLMCorruption(wordpiece, 0.5, whole_word=True)(batch, torch.Generator().manual_seed(0))
    assert torch.equal(batch, before)


@pytest.mark.parametrize("whole_word", [False, True])
def test_deterministic_given_the_generator_seed(wordpiece: Any, batch: torch.Tensor, whole_word: bool) -> None:
    corruption = MaskedLMCorruption(wordpiece, 0.15, whole_word)
    first = corruption(batch, torch.Generator().manual_seed(7))
    again = MaskedLMCorruption(wordpiece, 0.15, whole_word)(batch, torch.Generator().manual_seed(7))
    other = corruption(batch, torch.Generator().manual_seed(8))
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.equal(first[1], other[1])
    # The global RNG plays no part.
    torch.manual_seed(0)
    a = corruption(batch, torch.Generator().manual_seed(7))
    torch.manual_seed(1)
    torch.rand(100)
    b = corruption(batch, torch.Generator().manual_seed(7))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_extreme_probabilities(wordpiece: Any, batch: torch.Tensor) -> None:
    maskable = ~torch.isin(batch, special_ids(wordpiece))
    corrupted, labels = MaskedLMCorruption(wordpiece, 0.0)(batch, torch.Generator().manual_seed(0))
    assert (labels == IGNORE_INDEX).all() and torch.equal(corrupted, batch)
    _, labels = MaskedLMCorruption(wordpiece, 1.0)(batch, torch.Generator().manual_seed(0))
    assert torch.equal(labels != IGNORE_INDEX, maskable)


def test_needs_a_mask_token(byte_bpe: Any) -> None:
    with pytest.raises(ValueError, match="mask token"):
        MaskedLMCorruption(byte_bpe, 0.15)


# --------------------------------------------------------------------------- whole-word masking


def partial_and_selected_words(
    tokenizer: Any, ids: torch.Tensor, labels: torch.Tensor, wordpiece_style: bool = True
) -> tuple[int, int, int]:
    """(words partly selected, words wholly selected, words) over the batch."""
    selected = (labels != IGNORE_INDEX).tolist()
    partial = whole = total = 0
    for row, flags in zip(ids.tolist(), selected):
        for group in word_groups(tokenizer, row, wordpiece_style):
            picked = [flags[p] for p in group]
            total += 1
            whole += all(picked)
            partial += any(picked) and not all(picked)
    return partial, whole, total


def test_whole_word_selects_every_piece_of_a_word_together(wordpiece: Any, batch: torch.Tensor) -> None:
    probability = 0.15
    corrupted, labels = MaskedLMCorruption(wordpiece, probability, whole_word=True)(
        batch, torch.Generator().manual_seed(99)
    )
    selected = labels != IGNORE_INDEX
    is_special = torch.isin(batch, special_ids(wordpiece))
    assert not (selected & is_special).any()
    assert torch.equal(labels[selected], batch[selected])
    assert torch.equal(corrupted[~selected], batch[~selected])

    partial, whole, total = partial_and_selected_words(wordpiece, batch, labels)
    multi_piece = sum(len(g) > 1 for row in batch.tolist() for g in word_groups(wordpiece, row, True))
    assert multi_piece > 0.2 * total, "the fixture should split many words into pieces"
    assert partial == 0, f"{partial} words partly selected"
    assert within(whole, total, probability), (whole, total)
    # Selected words go through 80/10/10 per token as usual.
    assert within(int((corrupted[selected] == wordpiece.mask_token_id).sum()), int(selected.sum()), 0.8)


def test_token_level_masking_does_split_words(wordpiece: Any, batch: torch.Tensor) -> None:
    """The check above has teeth: per-token selection leaves many words partly selected."""
    _, labels = MaskedLMCorruption(wordpiece, 0.15)(batch, torch.Generator().manual_seed(99))
    partial, _, _ = partial_and_selected_words(wordpiece, batch, labels)
    assert partial > 100


def test_whole_word_without_leading_special(wordpiece: Any, batch: torch.Tensor) -> None:
    """Blocks need not start with [CLS]: words are still selected whole."""
    ids = batch[:, 1:].contiguous()
    _, labels = MaskedLMCorruption(wordpiece, 0.3, whole_word=True)(ids, torch.Generator().manual_seed(3))
    partial, whole, total = partial_and_selected_words(wordpiece, ids, labels)
    assert partial == 0
    assert within(whole, total, 0.3)


def test_whole_word_byte_level_bpe(byte_bpe: Any) -> None:
    """Byte-level BPE: a word is a piece starting with 'Ġ' and the pieces without it that follow."""
    from copy import deepcopy

    tokenizer = deepcopy(byte_bpe)
    tokenizer.add_special_tokens({"mask_token": "<mask>"})
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    ids = make_batch(tokenizer, None, eos, pad)[:128]
    corrupted, labels = MaskedLMCorruption(tokenizer, 0.2, whole_word=True)(ids, torch.Generator().manual_seed(5))
    selected = labels != IGNORE_INDEX
    assert not (selected & torch.isin(ids, special_ids(tokenizer))).any()
    replaced = selected & (corrupted != ids) & (corrupted != tokenizer.mask_token_id)
    assert not torch.isin(corrupted[replaced], special_ids(tokenizer)).any()
    partial, whole, total = partial_and_selected_words(tokenizer, ids, labels, wordpiece_style=False)
    assert partial == 0
    assert within(whole, total, 0.2)
