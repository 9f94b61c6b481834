"""Sentences with one tag per word (POS tagging, NER): read, check, map tags to ids; split raw text into words.

Contract:

- `read_tagged(location, format, ...)` reads every sentence of one file into a `TaggedSentences`, in file
  order; each problem is a `DataError` of one line, `FILE:LINE: what is wrong; what to do`, at the
  sentence's line (JSON Lines) or the offending line (column files). Formats, under "auto" by extension:
  - jsonl (.jsonl/.json/.ndjson): one JSON object per line, `{"tokens": [...], "tags": [...]}` (field names
    from `tokens_field` / `tags_field`); integer tags are read as strings; the record's other fields
    (an "id") are kept in `extra`, for predict to pass through.
  - conll (.conll/.iob2/.iob/.bio) and conllu (.conllu): see `seqlm.io.conll` (CoNLL-2003 columns,
    UNER's numbered iob2, CoNLL-U with UPOS or XPOS per `conllu_column`).
  - parquet (.parquet/.pq), a `save_to_disk` dir (`DIR:SPLIT`) or a hub id: rows with the two fields as
    list columns; a sequence-of-ClassLabel tags column gives its names.
  Checked: tokens and tags of the same length; at least one token; every token a non-empty string; every
  tag a string (or integer); the fields present (else the fields there are, and the `data.tokens_field` /
  `data.tags_field` key to set); UTF-8; JSON; the file exists and holds a sentence.
- With `require_tags=False` (inputs to predict) tags may be absent: `tags` is None unless every sentence
  has them (a sentence that has them still has them checked).
- `tag_names(train, configured)`: the configured order, else train's distinct tags sorted (numbers
  numerically). `tag_ids(sentences, names)`: ids in `names` order; a tag outside them is a DataError at
  its line ("tag 'X' was not seen in training (known: ...)").
- `split_words(text, rule, tokenizer)`: the words of raw text with their character offsets, either
  "whitespace" (`str.split`) or "pretokenizer" (the fast tokenizer's own pre-tokenizer; see there).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from seqlm.errors import ConfigError, DataError
from seqlm.io import records
from seqlm.io.conll import Sentence, conll_sentences, conllu_sentences

_EXTENSION_FORMATS = {
    ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl",
    ".conll": "conll", ".iob2": "conll", ".iob": "conll", ".bio": "conll",
    ".conllu": "conllu",
    ".parquet": "parquet", ".pq": "parquet",
}  # fmt: skip
_FORMATS = ("auto", "jsonl", "conll", "conllu", "parquet", "disk", "hub")
_ONE_PER_LINE = "put one sentence per line, as a JSON object"


@dataclass(frozen=True)
class TaggedSentences:
    """Sentences of one file, in file order; `lines[i]` is where sentence i starts (1-based)."""

    words: list[list[str]]
    tags: list[list[str]] | None  # None when read without tags (inputs to predict)
    lines: list[int]
    source: str
    extra: list[dict[str, Any]] | None = None  # jsonl: each record's other fields (e.g. "id")
    word_lines: list[list[int]] | None = None  # column files: the line of every word

    def __len__(self) -> int:
        return len(self.words)

    def where(self, index: int) -> str:
        """`FILE:LINE` of sentence `index`, for messages."""
        return f"{self.source}:{self.lines[index]}"

    def where_word(self, index: int, word: int) -> str:
        """`FILE:LINE` of word `word` of sentence `index`: its own line in a column file."""
        line = self.word_lines[index][word] if self.word_lines is not None else self.lines[index]
        return f"{self.source}:{line}"

    def subset(self, indices: list[int] | np.ndarray) -> TaggedSentences:
        """The sentences at `indices`, in that order (same source; lines kept)."""
        picked = [int(i) for i in indices]

        def pick(values: list | None) -> list | None:
            return [values[i] for i in picked] if values is not None else None

        return TaggedSentences(pick(self.words), pick(self.tags), pick(self.lines), self.source, pick(self.extra), pick(self.word_lines))


def read_tagged(
    location: str,
    format: str = "auto",
    tokens_field: str = "tokens",
    tags_field: str = "tags",
    conllu_column: str = "upos",
    conll_tag_column: int = -1,
    require_tags: bool = True,
    config_section: str = "data.",
) -> TaggedSentences:
    """Every sentence of `location`; see the module docstring for formats and errors.

    `config_section` prefixes the config keys that messages tell the user to set."""
    if format not in _FORMATS:
        raise ConfigError(f"{config_section}format {format!r}: not a format for tagged words; use one of {', '.join(_FORMATS)}")
    fix = f"set {config_section}format (jsonl, conll or conllu)" if config_section else "name the file .jsonl, .conll or .conllu"
    resolved = records.resolve_format(location, format, _EXTENSION_FORMATS, "JSONL, CoNLL or CoNLL-U", fix)
    fields = _Fields(tokens_field, tags_field, require_tags, config_section)
    if resolved == "jsonl":
        read: Iterator[Sentence] = _jsonl_sentences(Path(location), fields)
    elif resolved == "conll":
        read = conll_sentences(Path(location), conll_tag_column, require_tags, config_section)
    elif resolved == "conllu":
        read = conllu_sentences(Path(location), conllu_column, require_tags, config_section)
    else:
        read = _dataset_sentences(location, resolved, fields, fix)
    sentences = list(read)
    if not sentences:
        raise DataError(f"{location}: no sentences; give one JSON object per line, or token lines with a blank line between sentences")
    tagged = all(sentence.tags is not None for sentence in sentences)
    return TaggedSentences(
        words=[sentence.words for sentence in sentences],
        tags=[sentence.tags for sentence in sentences] if tagged else None,
        lines=[sentence.line for sentence in sentences],
        source=location,
        extra=[sentence.extra or {} for sentence in sentences] if resolved not in ("conll", "conllu") else None,
        word_lines=[sentence.word_lines for sentence in sentences] if resolved in ("conll", "conllu") else None,
    )


def tag_names(train: TaggedSentences, configured: list[str] | None, setting: str = "data.labels") -> list[str]:
    """The tag set in id order: `configured` (the config key `setting`), else train's distinct tags sorted."""
    if configured is not None:
        duplicates = sorted({name for name in configured if configured.count(name) > 1})
        if duplicates:
            raise DataError(f"{setting}: {', '.join(map(repr, duplicates))} listed twice; list each tag once")
        if len(configured) < 2:
            raise DataError(f"{setting}: a tagger needs at least 2 tags")
        return list(configured)
    if train.tags is None:
        raise ValueError("the training sentences were read without tags (require_tags=False)")
    names = sorted({tag for tags in train.tags for tag in tags}, key=records.name_order)
    if len(names) < 2:
        raise DataError(f"{train.source}: every word has the tag {names[0]!r}; a tagger needs at least 2 tags")
    return names


def tag_ids(sentences: TaggedSentences, names: list[str], configured: str | None = None) -> list[list[int]]:
    """Each word's tag as its index in `names`; an unknown tag is a DataError at its line.

    `configured` names the config key `names` came from, for the message (else they came from training)."""
    if sentences.tags is None:
        raise ValueError(f"{sentences.source} was read without tags (require_tags=False)")
    index = {name: i for i, name in enumerate(names)}
    ids = []
    for i, tags in enumerate(sentences.tags):
        try:
            ids.append([index[tag] for tag in tags])
        except KeyError:
            j = next(j for j, tag in enumerate(tags) if tag not in index)
            word = f"word {j + 1} ({sentences.words[i][j]!r})"
            if configured is not None:
                problem, fix = f"is not in {configured} ({records.shown(names)})", f"fix the tag of {word}"
            else:
                problem = f"was not seen in training (known: {records.shown(names)})"
                fix = f"fix the tag of {word} or add sentences with it to the training data"
            raise DataError(f"{sentences.where_word(i, j)}: tag {tags[j]!r} {problem}; {fix}") from None
    return ids


# --------------------------------------------------------------------------- records (jsonl, datasets)


@dataclass(frozen=True)
class _Fields:
    tokens: str
    tags: str
    require_tags: bool
    section: str

    def setting(self, field: str) -> str:
        return self.section + ("tokens_field" if field == self.tokens else "tags_field")


def _jsonl_sentences(path: Path, fields: _Fields) -> Iterator[Sentence]:
    for number, record in records.jsonl_records(path, _ONE_PER_LINE):
        yield _record_sentence(f"{path}:{number}", number, record, fields)


def _dataset_sentences(location: str, format: str, fields: _Fields, fix: str) -> Iterator[Sentence]:
    dataset = records.open_dataset(location, format, fix)
    wanted = [fields.tokens] + ([fields.tags] if fields.require_tags else [])
    records.check_columns(location, list(dataset.column_names), {name: fields.setting(name) for name in wanted})
    names = records.class_label_names(dataset.features.get(fields.tags))
    for number, record in enumerate(dataset, start=1):
        yield _record_sentence(f"{location}:{number}", number, record, fields, names)


def _record_sentence(where: str, number: int, record: dict[str, Any], fields: _Fields, names: list[str] | None = None) -> Sentence:
    words = _words(where, record, fields)
    tags = _tags(where, record, fields, len(words), names)
    extra = {key: value for key, value in record.items() if key not in (fields.tokens, fields.tags)}
    return Sentence(number, words, tags, extra=extra)


def _words(where: str, record: dict[str, Any], fields: _Fields) -> list[str]:
    name = fields.tokens
    if name not in record:
        raise records.missing_field(where, record, name, fields.setting(name))
    value = record[name]
    if not isinstance(value, list):
        raise DataError(f"{where}: field {name!r} holds {records.described(value)}, not a list of words; write it as [\"word\", ...]")
    if not value:
        raise DataError(f"{where}: field {name!r} is an empty list; a sentence needs at least one word (drop the line)")
    for j, word in enumerate(value):
        if not isinstance(word, str):
            raise DataError(f"{where}: {name}[{j}] is {records.described(word)}, not a string; write every word as a JSON string")
        if not word:
            raise DataError(f"{where}: {name}[{j}] is an empty string; give the word, or remove it and its tag")
    return value


def _tags(where: str, record: dict[str, Any], fields: _Fields, n_words: int, names: list[str] | None) -> list[str] | None:
    name = fields.tags
    if record.get(name) is None:
        if not fields.require_tags:
            return None
        if name in record:
            raise DataError(f"{where}: field {name!r} is null; give every sentence its tags")
        raise records.missing_field(where, record, name, fields.setting(name))
    value = record[name]
    if not isinstance(value, list):
        raise DataError(f"{where}: field {name!r} holds {records.described(value)}, not a list of tags; write it as [\"TAG\", ...]")
    if len(value) != n_words:
        raise DataError(
            f"{where}: {n_words} tokens but {len(value)} tags; give each token exactly one tag ({fields.tokens!r}, {name!r})"
        )
    tags = []
    for j, tag in enumerate(value):
        if names is not None and type(tag) is int and 0 <= tag < len(names):
            tag = names[tag]  # a ClassLabel id
        if isinstance(tag, bool) or not isinstance(tag, (str, int)):
            raise DataError(f"{where}: {name}[{j}] is {records.described(tag)}; a tag is a string (or an integer)")
        if tag == "":
            raise DataError(f"{where}: {name}[{j}] is an empty string; give every token a tag")
        tags.append(str(tag))
    return tags


# --------------------------------------------------------------------------- raw text to words


def split_words(text: str, rule: str, tokenizer: Any = None) -> list[tuple[str, int, int]]:
    """The words of `text` as (word, start, end) with `text[start:end] == word`.

    "whitespace": `text.split()`'s words. "pretokenizer": the pieces of the fast tokenizer's
    `backend_tokenizer.pre_tokenizer.pre_tokenize_str(text)`, read back from `text` at the offsets it
    gives — byte-level BPE pieces are 'Ġ'-encoded ('Ġworld' for " world"), so the word is the original
    substring with surrounding whitespace trimmed; pieces that are only whitespace are dropped."""
    if rule == "whitespace":
        return [(match.group(), match.start(), match.end()) for match in re.finditer(r"\S+", text)]
    if rule != "pretokenizer":
        raise ValueError(f"unknown word-splitting rule {rule!r} (whitespace or pretokenizer)")
    pre_tokenizer = getattr(getattr(tokenizer, "backend_tokenizer", None), "pre_tokenizer", None)
    if pre_tokenizer is None:
        raise ConfigError("the tokenizer has no pre-tokenizer to split words with; split words on whitespace instead")
    words = []
    for _, (start, end) in pre_tokenizer.pre_tokenize_str(text):
        piece = text[start:end]
        stripped = piece.lstrip()
        start += len(piece) - len(stripped)
        stripped = stripped.rstrip()
        if stripped:
            words.append((stripped, start, start + len(stripped)))
    return words
