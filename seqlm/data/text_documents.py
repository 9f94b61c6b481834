"""The documents of a plain-text corpus file (`seqlm.data.corpus`), read in constant memory.

Contract of `text_documents(path, location, documents)`: with `documents: line` each non-blank line, else
each blank-line-separated paragraph with text in it, as datasets' "text" builder splits them ("\r\n" and
"\r" end lines too; a leading byte-order mark dropped), but read through the bounded
`seqlm.io.line_reader` (a line over its limit is a DataError at its line) and decoded strictly as UTF-8
(a bad byte is a DataError naming the line and byte). `location` is how errors name the file.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from seqlm.data.corpus_readers import open_binary
from seqlm.errors import DataError
from seqlm.io.line_reader import raw_lines

_LONG_LINE = 1 << 20  # from this many bytes on a line is decoded without a copy (see _text_lines)


def text_documents(path: Path, location: str, documents: str) -> Iterator[str]:
    """The lines, or blank-line-separated paragraphs, of a text file, as datasets' "text" builder
    splits them ("\r\n" and "\r" end lines too), but read with a bounded line length."""
    if documents == "line":
        for line in _text_lines(path, location):
            if line.strip():
                yield line
        return
    block: list[str] = []
    for line in _text_lines(path, location):
        if line.strip():  # a whitespace-only line is blank, as in `documents: line`
            block.append(line)
        elif block:  # an empty line ends a paragraph
            yield from _paragraph(block)
            block = []
    yield from _paragraph(block)


def _paragraph(lines: list[str]) -> Iterator[str]:
    text = "\n".join(lines)
    if text.strip():  # a paragraph of whitespace-only lines is not a document
        yield text


def _text_lines(path: Path, location: str) -> Iterator[str]:
    """Each line of a (possibly compressed) text file, decoded strictly as UTF-8, without its line break."""
    with open_binary(path) as handle:
        for number, raw in raw_lines(handle, location):
            end = len(raw) - raw.endswith(b"\n")
            end -= raw.endswith(b"\r", 0, end)
            try:  # a long line is decoded from a view without its line break, so it is not copied again
                text = raw[:end].decode("utf-8") if end < _LONG_LINE else str(memoryview(raw)[:end], "utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(
                    f"{location}: not UTF-8 text (line {number}, byte {exc.start + 1} of the line: {exc.reason}); "
                    "re-encode it as UTF-8"
                ) from exc
            del raw
            if number == 1:
                text = text.removeprefix("\ufeff")  # a byte-order mark is not part of the text
            if "\r" in text:
                yield from text.split("\r")  # a lone "\r" (old Mac files) ends a line too
            else:
                yield text
