"""Token classification of one long input (a line of megabytes) in memory bounded by a group of words.

`seqlm.tasks.token_tagging.predict` batches short inputs together; an input of more than
`LONG_INPUT_CHARS` characters comes here instead, because its words, their encodings and a dict per
word would take a hundred times its size. Contract:

- `word_spans(record, rule, tokenizer)`: each word's (start, end) in the record's text, lazily, as
  `seqlm.io.tagged_words.split_words` finds them on the whole text: "whitespace" (`\\S+`); "pretokenizer"
  on pieces cut by `seqlm.data.long_documents.text_pieces` (at whitespace or punctuation, where the
  pre-tokenizer splits anyway); pre-split words at their places in the words joined by spaces.
- `tag_words(text, spans, windows_of, probabilities_of, group)`: the words `group` at a time, each group
  cut into windows by `windows_of` (`encode_words`: greedy windows at word boundaries). Every window but
  a group's last is the one the whole input would get; the last one's words start the next group, so the
  windows are those of the whole input. `probabilities_of(windows)` gives the softmax per piece; a word's
  tag is the argmax at its first piece, its score that probability. Returns offsets, tag ids and
  scores as arrays (16 bytes a word).
- `tagged_record(text, tagged, names, scheme)`: the record `token_tagging` writes for a short input
  ({"input", "words", "entities" for IOB-style tag sets}), with "words" and "entities" as
  `StreamedList`s that `seqlm.io.record_writer` serializes item by item.
Batches differ from the short-input path's (windows of one input, in order), so scores may differ
from it in the last float digits; tags and words are the same.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import islice
from typing import Any

import numpy as np

from seqlm.data.long_documents import PIECE_CHARS, text_pieces
from seqlm.data.word_windows import WordWindows
from seqlm.io.predict_inputs import InputRecord
from seqlm.io.record_writer import StreamedList
from seqlm.io.tagged_words import split_words
from seqlm.metrics.entity_spans import iter_entity_spans

LONG_INPUT_CHARS = PIECE_CHARS
_WORDS_PER_READ = 10_000
_WORD = re.compile(r"\S+")


@dataclass(frozen=True)
class TaggedWords:
    """Every word of one input: (start, end) offsets, tag id and score (the tag's probability)."""

    offsets: np.ndarray  # (n, 2) int32: a line is at most 100 MiB, so fewer than 2**31 characters
    tag_ids: np.ndarray  # (n,) int32
    scores: np.ndarray  # (n,) float32, as the softmax gave them


def word_spans(record: InputRecord, rule: str, tokenizer: Any) -> Iterator[tuple[int, int]]:
    """(start, end) of each word of the record's text, in order, found without splitting the text whole."""
    if record.words is not None:
        position = 0
        for word in record.words:
            yield position, position + len(word)
            position += len(word) + 1
        return
    if rule == "whitespace":
        yield from (match.span() for match in _WORD.finditer(record.text))
        return
    offset = 0
    for piece in text_pieces(record.text, PIECE_CHARS):
        for _, start, end in split_words(piece, rule, tokenizer):
            yield offset + start, offset + end
        offset += len(piece)


def tag_words(
    text: str,
    spans: Iterator[tuple[int, int]],
    windows_of: Callable[[list[str]], WordWindows],
    probabilities_of: Callable[[WordWindows], list[np.ndarray]],
    group: int,
) -> TaggedWords:
    """Tag every word, `group` words (plus the last window's, carried over) at a time; see the module docstring."""
    offsets, tag_ids, scores = [], [], []
    carried: list[tuple[int, int]] = []
    while True:
        fresh = list(islice(spans, group))
        words = carried + fresh
        if not words:
            break
        final = len(fresh) < group  # the spans ran out: this group's last window is the input's last
        windows = windows_of([text[start:end] for start, end in words])
        kept = len(windows.input_ids) - (0 if final else 1)
        probabilities = probabilities_of(windows)
        read = [values[: int(length)][first] for values, length, first in
                zip(probabilities[:kept], windows.lengths, windows.first_piece)]  # fmt: skip
        n_read = sum(len(values) for values in read)
        if read:
            per_word = np.concatenate(read)
            tag_ids.append(per_word.argmax(axis=-1).astype(np.int32))
            scores.append(per_word.max(axis=-1))
            offsets.append(np.asarray(words[:n_read], dtype=np.int32).reshape(-1, 2))
        carried = words[n_read:]
        if final:
            break
    if not offsets:
        return TaggedWords(np.empty((0, 2), dtype=np.int32), np.empty(0, dtype=np.int32), np.empty(0, dtype=np.float32))
    return TaggedWords(np.concatenate(offsets), np.concatenate(tag_ids), np.concatenate(scores))


def tagged_record(text: str, tagged: TaggedWords, names: list[str], scheme: str | None) -> dict[str, Any]:
    """The output record of one long input, its lists serialized item by item (see the module docstring)."""
    tags = np.asarray(names, dtype=object)[tagged.tag_ids] if len(tagged.tag_ids) else np.empty(0, dtype=object)

    def words() -> Iterator[dict[str, Any]]:
        for begin in range(0, len(tags), _WORDS_PER_READ):  # Python objects for a slice of the arrays at a time
            span = slice(begin, begin + _WORDS_PER_READ)
            for (start, end), tag, score in zip(tagged.offsets[span].tolist(), tags[span], tagged.scores[span]):
                yield {"word": text[start:end], "tag": tag, "score": float(score), "start": start, "end": end}

    record: dict[str, Any] = {"input": text, "words": StreamedList(words)}
    if scheme:
        record["entities"] = StreamedList(lambda: iter_entity_spans(tagged.offsets, tags, tagged.scores, text))
    return record
