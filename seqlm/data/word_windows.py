"""Words to model inputs for token classification with a fast tokenizer, and per-piece outputs back to words.

Contract:

- `encode_words(tokenizer, words, max_length, tag_ids, label_all_pieces)` tokenizes every sentence in ONE
  fast-tokenizer call (`is_split_into_words=True`, no special tokens) and maps pieces to words with each
  encoding's `word_ids`. A sentence whose pieces plus the tokenizer's special tokens fit in `max_length`
  is one window; a longer one is cut into consecutive windows at word boundaries, greedily (as many whole
  words as fit), so every word is in exactly one window, each with the special tokens (`n_split_sentences`).
- Special tokens go where the tokenizer puts them: transformers 5's fast tokenizers have no
  `build_inputs_with_special_tokens`, and their post-processor puts a fixed prefix and suffix around one
  sequence, so both (ids, token types) are read from its output for a one-word probe, checked against
  `num_special_tokens_to_add()`.
- `labels`: the word's tag id on its first piece; IGNORE (-100) on special tokens and on the word's other
  pieces, or, with `label_all_pieces`, the word's tag on every piece. `first_piece` marks where a word's
  prediction is read, `word_index` the word of each piece (-1 for special tokens).
- A word whose pieces alone exceed a window keeps its first `max_length - specials` pieces, in a window
  of its own (`n_cut_words`). A word with no pieces at all (a lone control or zero-width character the
  normalizer removes) gets one piece, the unk token (else the first piece of U+FFFD), so that it still
  gets a prediction (`n_empty_words`).
- Byte-level BPE (GPT-2/RoBERTa style, `ByteLevel(add_prefix_space=False)`) and Metaspace with
  `prepend_scheme="never"` pre-tokenizers would tokenize each word as if it began the text ('world', not
  the 'Ġworld' of running text); for them every word is given a leading space before tokenizing, which is
  what `add_prefix_space=True` does, without changing the tokenizer. Read from the pre-tokenizer's config.
- Words that spell a special token ("[SEP]", "<s>") are read as text (`split_special_tokens=True`).
- `word_predictions(windows, piece_values, n_words)`: per-piece outputs of every window (ids, or rows
  of scores) back to one value per word, read at each word's first piece, sentence by sentence.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from itertools import chain
from typing import Any

import numpy as np

from seqlm.errors import ConfigError

IGNORE = -100  # the label of pieces that train nothing (torch's cross-entropy ignore_index)


@dataclass
class WordWindows:
    input_ids: list[np.ndarray]
    attention_mask: list[np.ndarray]
    token_type_ids: list[np.ndarray] | None  # when the tokenizer's model inputs have them
    labels: list[np.ndarray] | None  # per piece: the tag id, or IGNORE
    word_index: list[np.ndarray]  # per piece: the word's index in its sentence, -1 for special tokens
    first_piece: list[np.ndarray]  # bool per piece: the first piece of a word (where its prediction is read)
    sentence: np.ndarray  # the sentence each window belongs to (windows are in sentence order)
    lengths: np.ndarray  # pieces per window, special tokens included
    n_split_sentences: int  # sentences that needed more than one window
    n_cut_words: int  # words whose pieces alone exceed a window (extra pieces dropped, first piece kept)
    n_empty_words: int = 0  # words with no pieces, given the unk token


@dataclass(frozen=True)
class _Template:
    """The special tokens around one sequence, and the token type of its pieces."""

    prefix: np.ndarray
    suffix: np.ndarray
    prefix_types: np.ndarray
    suffix_types: np.ndarray
    type_id: int

    @property
    def size(self) -> int:
        return len(self.prefix) + len(self.suffix)


@dataclass(frozen=True)
class _Pieces:
    """Every sentence's pieces, flat: ids, and the word of each (words numbered across sentences)."""

    ids: np.ndarray
    word: np.ndarray
    word_start: np.ndarray  # sentence s holds words word_start[s]:word_start[s + 1]
    n_empty: int


@dataclass(frozen=True)
class _Layout:
    """Windows as runs of flat pieces `starts[w]:stops[w]`, of sentence `owner[w]`, in sentence order."""

    starts: np.ndarray
    stops: np.ndarray
    owner: np.ndarray
    n_split: int = 0
    n_cut: int = 0


def encode_words(
    tokenizer: Any,
    words: list[list[str]],
    max_length: int,
    tag_ids: list[list[int]] | None = None,
    label_all_pieces: bool = False,
) -> WordWindows:
    """Windows of at most `max_length` pieces covering every word of `words`; see the module docstring."""
    leading_space = needs_leading_space(tokenizer)
    template = _template(tokenizer, leading_space)
    budget = max_length - template.size
    if budget < 1:
        raise ConfigError(f"max_length {max_length} leaves no room for words next to the tokenizer's {template.size} special tokens")
    pieces = _pieces(tokenizer, words, leading_space)
    tags = _tags(tag_ids, words) if tag_ids is not None else None
    return _assemble(tokenizer, template, pieces, _windows(pieces, budget), tags, label_all_pieces)


def word_predictions(windows: WordWindows, piece_values: list[np.ndarray], n_words: list[int]) -> list[np.ndarray]:
    """One value per word per sentence (the value at the word's first piece), in sentence order.

    `piece_values[w]` holds a value per piece of window w (it may run past `lengths[w]`: padding)."""
    if len(piece_values) != len(windows.input_ids):
        raise ValueError(f"{len(piece_values)} arrays of piece values for {len(windows.input_ids)} windows")
    read = []
    for values, length, first in zip(piece_values, windows.lengths, windows.first_piece):
        values = np.asarray(values)
        if len(values) < length:
            raise ValueError(f"a window of {length} pieces has only {len(values)} values")
        read.append(values[: int(length)][first])
    found = np.bincount(windows.sentence, weights=[len(r) for r in read], minlength=len(n_words))
    if len(found) != len(n_words) or not np.array_equal(found, np.asarray(n_words)):
        raise ValueError("the windows' words do not match n_words (windows of other sentences, or out of order?)")
    if not read:
        return [np.empty(0) for _ in n_words]
    return np.split(np.concatenate(read), np.cumsum(n_words)[:-1])


def needs_leading_space(tokenizer: Any) -> bool:
    """Whether the pre-tokenizer leaves a word's start unmarked unless a space precedes it (see the docstring)."""
    pre_tokenizer = tokenizer.backend_tokenizer.pre_tokenizer
    if pre_tokenizer is None:
        return False

    def unmarked(node: Any) -> bool:
        if isinstance(node, list):
            return any(unmarked(item) for item in node)
        if not isinstance(node, dict):
            return False
        kind = node.get("type")
        if (kind == "ByteLevel" and not node.get("add_prefix_space", True)) or (kind == "Metaspace" and node.get("prepend_scheme") == "never"):
            return True
        return any(unmarked(value) for value in node.values())

    return unmarked(json.loads(pre_tokenizer.__getstate__()))


def _call(tokenizer: Any, words: list[list[str]], leading_space: bool, specials: bool) -> list[Any]:
    """The `tokenizers.Encoding` of every sentence, from one call."""
    if leading_space:
        words = [[" " + word for word in sentence] for sentence in words]
    backend = tokenizer.backend_tokenizer
    before = backend.encode_special_tokens  # split_special_tokens sets it on the shared backend: put it back
    try:
        batch = tokenizer(
            words, is_split_into_words=True, add_special_tokens=specials, split_special_tokens=True,
            return_attention_mask=False, return_token_type_ids=False, verbose=False,  # long sentences are windowed, not warned about
        )  # fmt: skip
    finally:
        backend.encode_special_tokens = before
    return batch.encodings


def _template(tokenizer: Any, leading_space: bool) -> _Template:
    encoding = _call(tokenizer, [["a"]], leading_space, specials=True)[0]
    inside = [i for i, word in enumerate(encoding.word_ids) if word is not None]
    first, last = (inside[0], inside[-1] + 1) if inside else (len(encoding.ids), len(encoding.ids))
    ids, types = np.asarray(encoding.ids, dtype=np.int64), np.asarray(encoding.type_ids, dtype=np.int64)
    template = _Template(ids[:first], ids[last:], types[:first], types[last:], int(types[first]) if inside else 0)
    expected = tokenizer.num_special_tokens_to_add(pair=False)
    if template.size != expected or (not inside and expected):
        raise ValueError(f"cannot place the tokenizer's {expected} special tokens: a probe word got {template.size} around it")
    return template


def _pieces(tokenizer: Any, words: list[list[str]], leading_space: bool) -> _Pieces:
    word_start = np.concatenate([[0], np.cumsum([len(sentence) for sentence in words], dtype=np.int64)])
    encodings = _call(tokenizer, words, leading_space, specials=False) if words else []
    counts = np.fromiter((len(encoding.ids) for encoding in encodings), dtype=np.int64, count=len(encodings))
    total = int(counts.sum())
    ids = np.fromiter(chain.from_iterable(encoding.ids for encoding in encodings), dtype=np.int64, count=total)
    local = np.fromiter(chain.from_iterable(encoding.word_ids for encoding in encodings), dtype=np.int64, count=total)
    word = local + np.repeat(word_start[:-1], counts)
    empty = np.flatnonzero(np.bincount(word, minlength=int(word_start[-1])) == 0)
    if empty.size:  # keep order: each goes where its word's pieces would have been
        at = np.searchsorted(word, empty)
        ids = np.insert(ids, at, _placeholder_id(tokenizer, leading_space))
        word = np.insert(word, at, empty)
    return _Pieces(ids, word, word_start, int(empty.size))


def _placeholder_id(tokenizer: Any, leading_space: bool) -> int:
    if tokenizer.unk_token_id is not None:
        return int(tokenizer.unk_token_id)
    pieces = _call(tokenizer, [["\ufffd"]], leading_space, specials=False)[0].ids
    if not pieces:
        raise ValueError("the tokenizer has no unk token and gives no piece for U+FFFD, so a word without pieces cannot be kept")
    return int(pieces[0])


def _windows(pieces: _Pieces, budget: int) -> _Layout:
    """One window per sentence that fits; the others split at word boundaries (see `_greedy`)."""
    word, word_start = pieces.word, pieces.word_start
    bounds = np.searchsorted(word, word_start)  # sentence s holds pieces bounds[s]:bounds[s + 1]
    starts, stops = bounds[:-1], bounds[1:]
    owner = np.arange(len(starts))
    long = np.flatnonzero(stops - starts > budget)
    if long.size == 0:
        return _Layout(starts, stops, owner)
    word_first = np.searchsorted(word, np.arange(word_start[-1]))  # each word's first piece
    word_end = np.append(word_first[1:], len(word))
    parts, n_cut = [], 0
    for s in long:
        span = slice(word_start[s], word_start[s + 1])
        windows, cut = _greedy(word_first[span], word_end[span] - word_first[span], budget)
        parts.append((np.asarray(windows, dtype=np.int64).reshape(-1, 2), s))
        n_cut += cut
    keep = np.ones(len(starts), dtype=bool)
    keep[long] = False
    starts = np.concatenate([starts[keep]] + [w[:, 0] for w, _ in parts])
    stops = np.concatenate([stops[keep]] + [w[:, 1] for w, _ in parts])
    owner = np.concatenate([owner[keep]] + [np.full(len(w), s) for w, s in parts])
    order = np.lexsort((starts, owner))
    return _Layout(starts[order], stops[order], owner[order], int(sum(len(w) > 1 for w, _ in parts)), n_cut)


def _greedy(first: np.ndarray, counts: np.ndarray, budget: int) -> tuple[list[tuple[int, int]], int]:
    """Windows of whole words, as many as fit each; a word over `budget` alone, cut to its first pieces."""
    windows: list[tuple[int, int]] = []
    start, used, cut = 0, 0, 0
    for begin, count in zip(first.tolist(), counts.tolist()):
        if count > budget:
            if used:
                windows.append((start, start + used))
            windows.append((begin, begin + budget))
            used, cut = 0, cut + 1
            continue
        if used + count > budget:
            windows.append((start, start + used))
            used = 0
        if not used:
            start = begin
        used += count
    if used:
        windows.append((start, start + used))
    return windows, cut


def _tags(tag_ids: list[list[int]], words: list[list[str]]) -> np.ndarray:
    if len(tag_ids) != len(words) or any(len(tags) != len(sentence) for tags, sentence in zip(tag_ids, words)):
        raise ValueError("tag_ids must hold one tag id per word of every sentence")
    return np.fromiter(chain.from_iterable(tag_ids), dtype=np.int64, count=sum(map(len, words)))


def _assemble(
    tokenizer: Any, template: _Template, pieces: _Pieces, layout: _Layout, tags: np.ndarray | None, label_all_pieces: bool
) -> WordWindows:
    """Every window's arrays, built flat (pieces between each window's prefix and suffix), then split."""
    word, owner = pieces.word, layout.owner
    counts = layout.stops - layout.starts
    lengths = counts + template.size
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    before = np.concatenate([[0], np.cumsum(counts)])[:-1]  # kept pieces in earlier windows
    step = np.arange(int(counts.sum())) - np.repeat(before, counts)
    source = np.repeat(layout.starts, counts) + step  # the flat piece each kept piece is
    target = np.repeat(offsets[:-1] + len(template.prefix), counts) + step  # where it goes
    heads = (offsets[:-1, None] + np.arange(len(template.prefix))).ravel()
    tails = (offsets[:-1, None] + len(template.prefix) + counts[:, None] + np.arange(len(template.suffix))).ravel()
    n_windows, total = len(counts), int(offsets[-1])

    def filled(pieces: np.ndarray, other: Any, prefix: np.ndarray | None = None, suffix: np.ndarray | None = None) -> np.ndarray:
        """`pieces` in place, the template's `prefix`/`suffix` around them (default: `other` there too)."""
        out = np.full(total, other, dtype=pieces.dtype)
        out[target] = pieces
        if prefix is not None and suffix is not None:
            out[heads], out[tails] = np.tile(prefix, n_windows), np.tile(suffix, n_windows)
        return out

    piece_word = word[source]  # the global word of each kept piece
    is_first = np.concatenate([[True], word[1:] != word[:-1]])[source]
    input_ids = filled(pieces.ids[source], 0, template.prefix, template.suffix)
    word_index = filled(piece_word - pieces.word_start[np.repeat(owner, counts)], -1)
    labels = types = None
    if tags is not None:
        labels = filled(tags[piece_word] if label_all_pieces else np.where(is_first, tags[piece_word], IGNORE), IGNORE)
    if "token_type_ids" in tokenizer.model_input_names:
        types = filled(np.full(len(source), template.type_id, dtype=np.int64), 0, template.prefix_types, template.suffix_types)

    def split(flat: np.ndarray | None) -> list[np.ndarray] | None:
        return None if flat is None else np.split(flat, offsets[1:-1]) if n_windows else []

    return WordWindows(
        input_ids=split(input_ids), attention_mask=split(np.ones(total, dtype=np.int64)), token_type_ids=split(types),
        labels=split(labels), word_index=split(word_index), first_piece=split(filled(is_first, False)), sentence=owner,
        lengths=lengths, n_split_sentences=layout.n_split, n_cut_words=layout.n_cut, n_empty_words=pieces.n_empty,
    )  # fmt: skip
