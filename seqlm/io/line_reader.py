"""Lines of a user's input file, read in bounded chunks, so one huge line cannot exhaust memory.

`raw_lines(handle, name)` yields `(line number, bytes)` for each line of a binary stream (the
bytes keep their b"\\n", the last line may lack it). A line is read `_CHUNK` bytes at a time;
one longer than `MAX_LINE_BYTES` (a file without line breaks: a minified JSON dump, a whole
book on one line, a binary file) is a `DataError` at that line, raised as soon as the limit
is passed, without building the line as one object. Decoding is left to the caller: each
reader reports bad bytes in its own terms.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO

from seqlm.errors import DataError

MAX_LINE_BYTES = 100 * 2**20  # 100 MiB
_CHUNK = 1 << 20  # readline's limit: lines up to this size are read in one call


def raw_lines(handle: BinaryIO, name: str, fix: str = "split the text into lines/documents") -> Iterator[tuple[int, bytes]]:
    """(1-based number, bytes) of each line of `handle`; `name` and `fix` go into the too-long error."""
    number = 0
    while True:
        piece = handle.readline(_CHUNK)
        if not piece:
            return
        number += 1
        if len(piece) == _CHUNK and not piece.endswith(b"\n"):
            piece = _rest_of_line(handle, piece, name, number, fix)
        line = [piece]
        del piece  # handed over, not kept: a suspended generator would hold a long line until the next read
        yield number, line.pop()


def line_too_long(name: str, number: int, fix: str) -> DataError:
    return DataError(f"{name}:{number}: a single line longer than {MAX_LINE_BYTES // 2**20} MiB; {fix}")


def _rest_of_line(handle: BinaryIO, first: bytes, name: str, number: int, fix: str) -> bytes:
    pieces, size = [first], len(first)
    while not pieces[-1].endswith(b"\n"):
        piece = handle.readline(_CHUNK)
        if not piece:
            break
        size += len(piece)
        if size - piece.endswith(b"\n") > MAX_LINE_BYTES:
            raise line_too_long(name, number, fix)
        pieces.append(piece)
    return b"".join(pieces)
