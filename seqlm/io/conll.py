"""CoNLL-style column files and CoNLL-U: sentences of one-token-per-line blocks, each problem at its FILE:LINE.

Contract (both formats: strict UTF-8 read through `seqlm.io.records`; a blank line ends a sentence):

- `conll_sentences(path, tag_column, require_tags, section)` reads .conll/.iob2/.iob/.bio files. Columns are
  split on tabs when the line has one (a token may then hold a space), else on runs of whitespace; trailing
  whitespace is dropped. `-DOCSTART-` lines are dropped (they end a sentence). Two layouts, told apart per file:
  - plain (CoNLL-2003, `TOKEN [POS CHUNK] TAG`): the token is column 0, the tag `tag_column` (0-based,
    -1 = the last). '#' can be a token here (`#hashtag O`), so only `# key = value` lines at the start of a
    sentence are comments (`# sent_id = …`, `# text = …`).
  - numbered (UNER's iob2, `ID TOKEN TAG [annotation columns]`): chosen when the first column numbers the
    tokens 1, 2, 3… in every sentence. The token is column 1 and, under the default `tag_column` -1, the
    tag is column 2 — not the last, since UNER appends annotator columns to some lines only. Every '#'
    line is a comment.
- `conllu_sentences(path, column, require_tags, section)` reads CoNLL-U: 10 tab-separated columns; '#'
  lines are comments; multiword-token ranges (`3-4`) and empty nodes (`5.1`) are skipped, so the words
  are the syntactic words; the tag is UPOS (`column="upos"`, column 4) or XPOS (column 5); `_` is no tag.
- Errors: a line with too few columns, an empty token, an ID that is not a word index (CoNLL-U), a word
  without a tag when `require_tags`. Without `require_tags` a sentence missing any tag has `tags` None.
- Each `Sentence` starts at its first token line; `word_lines` holds every word's line, so a bad tag found
  later (`tag_ids`) is reported at its own line.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from seqlm.errors import ConfigError, DataError
from seqlm.io import records

_FIX = "put one token per line, with a blank line between sentences"
_KEY_VALUE_COMMENT = re.compile(r"#\s*[\w.\- ]+=")  # `# sent_id = …`, `# newdoc id = …`, `# text = …`
_CONLLU_ID = re.compile(r"[0-9]+(?:-[0-9]+|\.[0-9]+)?")  # a word, a multiword range, an empty node
_CONLLU_COLUMNS = {"upos": 3, "xpos": 4}

Row = tuple[int, str, "str | None"]  # (line, token, tag or None)


class Sentence(NamedTuple):
    """One sentence as a reader gives it: where it starts, its words, their tags (None: untagged)."""

    line: int
    words: list[str]
    tags: list[str] | None
    word_lines: list[int] | None = None
    extra: dict | None = None


def conll_sentences(path: Path, tag_column: int, require_tags: bool, section: str) -> Iterator[Sentence]:
    """The sentences of a CoNLL-style column file (see the module docstring for the layouts)."""
    blocks = [[(number, _columns(text), text) for number, text in block] for block in _blocks(path)]
    numbered = _is_numbered(blocks)
    token = 1 if numbered else 0
    tag = (2 if numbered else -1) if tag_column == -1 else tag_column
    if tag == token:
        raise ConfigError(f"{section}conll_tag_column {tag_column} is the token's column in {path}; give the tag's column (0-based)")
    for block in blocks:
        rows = []
        for number, columns, text in block:
            if text.startswith("#") and (numbered or (not rows and _KEY_VALUE_COMMENT.match(text))):
                continue
            rows.append(_conll_row(f"{path}:{number}", number, columns, token, tag, require_tags, section))
        if rows:
            yield _sentence(rows)


def conllu_sentences(path: Path, column: str, require_tags: bool, section: str) -> Iterator[Sentence]:
    """The sentences of a CoNLL-U file, tagged with its UPOS or XPOS column."""
    if column not in _CONLLU_COLUMNS:
        raise ConfigError(f"{section}conllu_column {column!r}: use upos or xpos")
    index = _CONLLU_COLUMNS[column]
    for block in _blocks(path):
        rows: list[Row] = []
        for number, text in block:
            if text.startswith("#"):
                continue
            where, columns = f"{path}:{number}", text.split("\t")
            if len(columns) < 10:
                raise DataError(
                    f"{where}: {len(columns)} column(s), CoNLL-U has 10 separated by tabs; fix the line "
                    "(spaces do not separate CoNLL-U columns), or name the file .conll for a CoNLL column file"
                )
            if not _CONLLU_ID.fullmatch(columns[0]):
                raise DataError(f"{where}: ID {columns[0]!r} is not a word index (1, 2, …; 3-4 and 5.1 are skipped); fix the line")
            if not columns[0].isdecimal():
                continue  # a multiword token's range line, or an empty node: not one of the sentence's words
            word, tag = _token(where, columns[1]), columns[index]
            if tag == "_":
                if require_tags:
                    raise DataError(
                        f"{where}: no {column.upper()} tag ('_') for {word!r}; tag every word, or set {section}conllu_column"
                    )
                tag = None
            rows.append((number, word, tag))
        if rows:
            yield _sentence(rows)


def _blocks(path: Path) -> Iterator[list[tuple[int, str]]]:
    """The non-blank lines (without their line break) of each sentence; `-DOCSTART-` lines end one and are dropped."""
    block: list[tuple[int, str]] = []
    for number, line in records.decoded_lines(path, _FIX):
        text = line.rstrip("\r\n")
        if not text.strip() or text.split(None, 1)[0] == "-DOCSTART-":
            if block:
                yield block
                block = []
            continue
        block.append((number, text))
    if block:
        yield block


def _columns(text: str) -> list[str]:
    text = text.rstrip()
    return [cell.strip() for cell in text.split("\t")] if "\t" in text else text.split()


def _is_numbered(blocks: list[list[tuple[int, list[str], str]]]) -> bool:
    """Whether the first column numbers the tokens 1, 2, 3… in every sentence (UNER's iob2 layout)."""
    seen = False
    for block in blocks:
        position = 0
        for _, columns, text in block:
            if text.startswith("#"):
                continue
            position += 1
            if columns[0] != str(position):
                return False
            seen = True
    return seen


def _conll_row(where: str, number: int, columns: list[str], token: int, tag: int, require_tags: bool, section: str) -> Row:
    at = tag if tag >= 0 else len(columns) + tag
    has_tag = 0 <= at < len(columns) and at != token
    if token >= len(columns) or (require_tags and not has_tag):
        shown = " ".join(repr(cell) for cell in columns[:4]) + (" …" if len(columns) > 4 else "")
        wanted = f"the token (column {token}) and its tag (column {tag}{', the last' if tag == -1 else ''})"
        raise DataError(
            f"{where}: {len(columns)} column(s) ({shown}), too few for {wanted}; "
            f"separate the columns with a tab or spaces, or set {section}conll_tag_column (0-based)"
        )
    if has_tag and not columns[at]:
        raise DataError(f"{where}: an empty tag in column {at}; give every token a tag")
    return number, _token(where, columns[token]), columns[at] if has_tag else None


def _token(where: str, token: str) -> str:
    if not token:
        raise DataError(f"{where}: an empty token; give the word, or remove the line")
    return token


def _sentence(rows: list[Row]) -> Sentence:
    tags = [tag for _, _, tag in rows]
    return Sentence(
        line=rows[0][0],
        words=[word for _, word, _ in rows],
        tags=None if any(tag is None for tag in tags) else tags,
        word_lines=[number for number, _, _ in rows],
    )
