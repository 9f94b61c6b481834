"""Long texts in bounded pieces, cut where tokenizers split words anyway, so that encoding the pieces one
after the other gives the tokens of encoding the whole text, in memory bounded by the piece size.

Contract:

- `latest_cut(text, start, stop, keep)`: the last position `p` in `start < p <= stop` (`stop < len(text)`)
  at which `text` may be cut, never inside an occurrence of a string of `keep` (the tokenizer's added
  tokens, `unbreakable(tokenizer)`: "[SEP]", "<|endoftext|>"), by the first rule that finds one there:
  1. a single space between two non-whitespace characters ("word word": cut before the space);
  2. a space, tab, "\\n", "\\r" or other Unicode space (Zs) followed by a non-whitespace character
     (cut before it: the last whitespace of a run, the one GPT-2's regex attaches to the next word);
  3. between a letter or digit and a punctuation character (Unicode category P*) ("字。", "word,");
  4. else `stop` itself: a cut inside a word.
- `text_pieces(text, limit)`: `text` alone when it has at most `limit` characters, else consecutive
  pieces of at most `limit` characters, cut by `latest_cut`, that join back to `text`.
- `leading_text` / `trailing_text(text, size)`: a prefix of at most / a suffix of at least `size`
  characters (the whole text when it is no longer), cut the same way.
- `token_prefix` / `token_suffix(tokenizer, text, n_tokens)`: the shortest such prefix / suffix tried
  (sizes growing fourfold from `32 * n_tokens + 1024` characters) that encodes to more than `n_tokens`
  tokens, else the whole text: what a model that reads only `n_tokens` tokens needs of a huge input.

Equality (tested for the kinds `seqlm tokenize` trains): the tokens of the pieces, concatenated, are the
tokens of the whole text at cuts of rules 1-3 for byte-level BPE (GPT-2's pre-tokenizer regex: a space
joins the word after it, `\\s+(?!\\S)` leaves a run's last whitespace to the next token, letters, digits
and punctuation are separate runs) and for WordPiece (BERT splits at all whitespace and punctuation;
normalization is per character). Boundary effects: at a rule-4 cut (a piece-long stretch with no
whitespace and no punctuation after a letter or digit: base64, DNA, a minified blob) a word is split,
so the tokens next to the cut may differ. Pretrained tokenizers: rules 1 and 3 also hold for the
GPT-4/Llama-3 style regexes and Metaspace; at a rule-2 cut a regex that joins whitespace runs with line
breaks (Llama-3's `\\s*[\\r\\n]+`) may give two whitespace tokens where the whole text gives one; a
tokenizer that normalizes the text as a whole (Llama-2's prepended "▁", a Strip normalizer), has no
pre-tokenizer, or has added tokens that absorb the whitespace after them (rstrip) may differ at any cut.
Texts within the limit are never cut, so none of this touches ordinary documents and inputs.
"""

from __future__ import annotations

import re
import sys
import unicodedata
from collections.abc import Iterator
from functools import cache
from typing import Any

PIECE_CHARS = 1 << 18  # 256 Ki characters: a piece's encoding takes tens of MB, whatever the document's size

# The rules, written for the REVERSED text, so that the first match is the last position of the range.
# In reversed text, lookbehind sees the characters after the cut and lookahead the ones before it.
_LONE_SPACE = re.compile(r"(?<=\S) (?=\S)")
# Whitespace to every tokenizer: space, tab, line breaks and the other Unicode space separators (Zs). Not
# "\f", "\v", "\x1c"-"\x1f", "\x85": control characters, which BERT's normalizer deletes, joining the words.
_WHITESPACE_BEFORE_WORD = re.compile(r"(?<=\S)[ \t\n\r\u00a0\u1680\u2000-\u200a\u202f\u205f\u3000]")


@cache
def _punctuation_after_word() -> re.Pattern[str]:
    """Rule 3 (reversed): a punctuation character with a letter or digit before it (`[^\\W_]`: alphanumeric).
    The class lists every P* code point (built once, in a third of a second)."""
    ranges: list[str] = []
    code, top = 0, sys.maxunicode
    while code <= top:
        if unicodedata.category(chr(code)).startswith("P"):
            first = code
            while code + 1 <= top and unicodedata.category(chr(code + 1)).startswith("P"):
                code += 1
            ranges.append(re.escape(chr(first)) + ("-" + re.escape(chr(code)) if code > first else ""))
        code += 1
    return re.compile(f"[{''.join(ranges)}](?=[^\\W_])")


def latest_cut(text: str, start: int, stop: int, keep: tuple[str, ...] = ()) -> int:
    """The last position in `start < p <= stop` where `text` may be cut (see the module docstring),
    never inside an occurrence of a string of `keep` (a tokenizer's added tokens: "[SEP]", "<|endoftext|>")."""
    if not start < stop < len(text):
        raise ValueError(f"need start < stop < len(text), got {start}, {stop}, {len(text)}")
    end = min(stop + 2, len(text))  # the characters at and after the last candidate, for the lookarounds
    window = text[start:end][::-1]  # window[k] is text[end - 1 - k]
    first_k, last_k = end - 1 - stop, end - 2 - start  # candidates p = stop .. start + 1
    for rule in (lambda: _LONE_SPACE, lambda: _WHITESPACE_BEFORE_WORD, _punctuation_after_word):  # rule 3 built when needed
        for match in rule().finditer(window, first_k):
            cut = end - 1 - match.start()
            if match.start() > last_k:
                break
            if not _inside(text, cut, keep):
                return cut
    while stop > start + 1 and _inside(text, stop, keep):  # rule 4 still keeps added tokens whole
        stop -= 1
    return stop


def _inside(text: str, cut: int, keep: tuple[str, ...]) -> bool:
    """Whether `cut` falls strictly inside an occurrence of one of `keep`."""
    for token in keep:
        found = text.find(token, max(0, cut - len(token) + 1), cut + len(token) - 1)
        if 0 <= found < cut:
            return True
    return False


def text_pieces(text: str, limit: int = PIECE_CHARS, keep: tuple[str, ...] = ()) -> Iterator[str]:
    """Consecutive pieces of at most `limit` characters that join back to `text` (see the module docstring)."""
    start = 0
    while len(text) - start > limit:
        cut = latest_cut(text, start, start + limit, keep)
        yield text[start:cut]
        start = cut
    yield text[start:] if start else text


def unbreakable(tokenizer: Any) -> tuple[str, ...]:
    """The added tokens of a fast tokenizer (or its backend): the strings a cut must not split."""
    backend = getattr(tokenizer, "backend_tokenizer", tokenizer)
    return tuple(sorted({token.content for token in backend.get_added_tokens_decoder().values() if len(token.content) > 1}))


def leading_text(text: str, size: int, keep: tuple[str, ...] = ()) -> str:
    """A prefix of at most `size` characters ending at a cut (the whole text when it is no longer)."""
    return text if len(text) <= size else text[: latest_cut(text, 0, size, keep)]


def trailing_text(text: str, size: int, keep: tuple[str, ...] = ()) -> str:
    """A suffix of at least `size` characters starting at a cut (the whole text when it is no longer)."""
    if len(text) <= size:
        return text
    return text[latest_cut(text, max(0, len(text) - 2 * size), len(text) - size, keep) :]


def token_prefix(tokenizer: Any, text: str, n_tokens: int) -> str:
    """The start of `text` a reader of its first `n_tokens` tokens needs: more than that many, or all of it."""
    return _enough(tokenizer, text, n_tokens, leading_text)


def token_suffix(tokenizer: Any, text: str, n_tokens: int) -> str:
    """The end of `text` a reader of its last `n_tokens` tokens needs: more than that many, or all of it."""
    return _enough(tokenizer, text, n_tokens, trailing_text)


def _enough(tokenizer: Any, text: str, n_tokens: int, part_of: Any) -> str:
    size = 32 * n_tokens + 1024  # a token rarely spans more than a few characters: usually the first try
    keep = unbreakable(tokenizer) if size < len(text) else ()
    while size < len(text):
        part = part_of(text, size, keep)
        if len(tokenizer(part, add_special_tokens=False, verbose=False)["input_ids"]) > n_tokens:
            return part
        size *= 4
    return text
