"""Entity spans from per-word tags, as `transformers.pipeline("token-classification", aggregation_strategy="first")`.

Contract: `entity_spans(words, offsets, tags, scores, text)` takes one tag and one score per word, where the words are
the ones the pipeline aggregates to (its "first" strategy: a word is a first piece plus the pieces the tokenizer marks
as continuing it, e.g. WordPiece's "##" pieces; for a fast tokenizer that is `encoding.word_ids()`, i.e. the
pre-tokenizer's words), a word's tag is the argmax over the labels of its first piece and its score that piece's
softmax probability of the tag. It returns, per entity in order, {"type", "text", "start", "end", "score",
"first_word", "last_word"}:

* Grouping is the pipeline's `group_entities` + `get_tag`: "B-X" is (B, X), "I-X" is (I, X), any other tag T
  (including "O") is (I, T). A word joins the open group when its type equals the previous word's and it is not a B-;
  otherwise it opens a new group. So `B-PER I-PER` is one entity, `B-PER B-PER` two, `B-PER I-LOC` two (PER, LOC),
  `O I-PER` one PER (an I- without a B- opens an entity), and consecutive O words form a group that is dropped
  (the pipeline's ignore_labels=["O"]). A group's type is its first tag after the first "-" (the pipeline's
  `split("-", 1)[-1]`). For B/I/O tags these are the spans of seqeval's default mode
  (`seqlm.metrics.sequence_labelling.entities(tags, "IOB2")`).
* score: the mean of the group's word scores (the pipeline's `np.nanmean`; ours is float64, the pipeline's float32,
  so they agree to ~1e-7). first_word / last_word: indices of the group's first and last word (last_word inclusive).
* start / end: the first word's start and the last word's end, as the pipeline's character offsets. With `offsets`
  (start, end) per word, they are those; without, they index `" ".join(words)`, which is what the pipeline reports
  for `is_split_into_words=True` input with its default " " delimiter. text: `text[start:end]` when `text` is
  given (without offsets the words are then looked up in `text`, in order), else the words joined by spaces.

Deliberate differences from the pipeline: (1) "text" is the original text's slice, not the pipeline's "word" (the
tokenizer's decoding of the pieces, lower-cased by an uncased model and with spaces around punctuation); the
pipeline's start/end give the same slice. (2) The pipeline knows only B- and I-: an IOBES/BILOU "E-PER" or
"S-PER" is to it a different tag from "I-PER" (E-PER after B-PER opens a second PER entity). Here E-/L- continue the
open group of their type and close it, S-/U- are one-word groups, which matches seqeval's default mode for IOBES.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

_OPENS = frozenset("BSU")  # always open a new group (the pipeline: B only)
_CLOSES = frozenset("ESLU")  # the group ends after this word (the pipeline: never)
_PREFIXES = frozenset(("B-", "I-", "E-", "S-", "L-", "U-"))  # the pipeline: B- and I-


def _split(tag: str) -> tuple[str, str]:
    """(prefix, type) as the pipeline's get_tag reads a tag, extended to E-, S-, L-, U- prefixes."""
    if tag[:2] in _PREFIXES:
        return tag[0], tag[2:]
    return "I", tag


def entity_spans(
    words: Sequence[str],
    offsets: Sequence[tuple[int, int]] | None,
    tags: Sequence[str],
    scores: Sequence[float],
    text: str | None = None,
) -> list[dict[str, Any]]:
    """The entities of one tagged word sequence, grouped as the token-classification pipeline groups them."""
    if not len(words) == len(tags) == len(scores) or (offsets is not None and len(offsets) != len(words)):
        raise ValueError(f"words, tags, scores (and offsets) differ in length: {len(words)}, {len(tags)}, {len(scores)}")
    if offsets is None:
        offsets = _locate(words, text)
    if text is None:
        return [{**span, "text": " ".join(words[span["first_word"] : span["last_word"] + 1])}
                for span in iter_entity_spans(offsets, tags, scores, "")]  # fmt: skip
    return list(iter_entity_spans(offsets, tags, scores, text))


def iter_entity_spans(
    offsets: Sequence[tuple[int, int]], tags: Sequence[str], scores: Sequence[float], text: str
) -> Iterator[dict[str, Any]]:
    """`entity_spans` one entity at a time, for words with offsets into `text` (arrays will do: a huge input's
    words are not built as Python lists)."""
    word_scores = np.asarray(scores, dtype=np.float64)
    for first, stop in _groups(tags):
        type_ = tags[first].split("-", 1)[-1]
        if type_ == "O":
            continue
        start, end = int(offsets[first][0]), int(offsets[stop - 1][1])
        yield {
            "type": type_,
            "text": text[start:end],
            "start": start,
            "end": end,
            "score": float(word_scores[first:stop].mean()),
            "first_word": first,
            "last_word": stop - 1,
        }


def _groups(tags: Sequence[str]) -> Iterator[tuple[int, int]]:
    """(first word, last word + 1) of each group, in order."""
    first = -1  # the open group's first word
    prev_type: str | None = None
    closed = True
    for i, tag in enumerate(tags):
        prefix, type_ = _split(tag)
        if closed or prefix in _OPENS or type_ != prev_type:
            if first >= 0:
                yield first, i
            first = i
        prev_type, closed = type_, prefix in _CLOSES
    if first >= 0:
        yield first, len(tags)


def _locate(words: Sequence[str], text: str | None) -> list[tuple[int, int]]:
    """Each word's (start, end): in " ".join(words) without text, else found in text left to right."""
    found = []
    position = 0
    for word in words:
        start = position if text is None else text.find(word, position)
        if start < 0:
            raise ValueError(f"word {word!r} is not in the text after character {position}")
        found.append((start, start + len(word)))
        position = start + len(word) + (text is None)  # the joining space
    return found
