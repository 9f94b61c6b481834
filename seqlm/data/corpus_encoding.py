"""`seqlm tokenize`'s encoding pass: a corpus's documents to token splits on disk, in memory bounded by a batch.

Contract of `encode_corpus(corpus, bundle, directory, dtype, batch_size, console)`:

- Every document of `corpus.documents()`, in corpus order, is written to its split (`SplitWriter`) as its
  tokens (no special tokens) followed by the separator id; returns per-split counts, the bytes of text
  read (each document + 1 for its line break, to track the file size) and the seconds taken.
- A document longer than `PIECE_CHARS` characters is encoded in pieces cut by
  `seqlm.data.long_documents.text_pieces` (at whitespace or punctuation, never inside an added token),
  whose tokens are those of the whole document (see there for the boundary effects: a piece-long stretch
  without whitespace or punctuation is cut inside a word; some pretrained tokenizers). So a 100 MiB line
  takes the memory of a batch of pieces, not a hundred times its size.
- Pieces are encoded `batch_size` (or `MAX_BATCH_CHARS` characters) at a time by the Rust backend, on one
  worker thread that keeps only their ids, while Python reads the next batch and writes the previous one.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from seqlm.console import Console
from seqlm.data.corpus import Corpus
from seqlm.data.long_documents import PIECE_CHARS, text_pieces, unbreakable
from seqlm.data.token_store import SPLITS, SplitWriter
from seqlm.data.tokenizers import TokenizerBundle

_MB = 1e6
# Also flush a batch at this many characters, so that a few huge documents (blank_line novels, one
# 100 MiB line) hold at most this much text, and its encodings, in memory at a time.
MAX_BATCH_CHARS = 2 << 20


def document_pieces(text: str, keep: tuple[str, ...]) -> Iterator[tuple[str, bool]]:
    """(piece, whether it ends the document) for each piece of `text` (one piece unless it is long)."""
    if len(text) <= PIECE_CHARS:
        yield text, True
        return
    previous = None
    for piece in text_pieces(text, PIECE_CHARS, keep):
        if previous is not None:
            yield previous, False
        previous = piece
    yield previous, True


def encode_corpus(
    corpus: Corpus, bundle: TokenizerBundle, directory: Path, dtype: np.dtype, batch_size: int, console: Console
) -> tuple[dict[str, dict[str, int]], int, float]:
    """Encode and write every split; return per-split counts, text bytes read, and seconds taken."""
    backend = bundle.tokenizer.backend_tokenizer
    # encode_batch_fast skips offsets, which are not stored; both run in parallel in Rust.
    encode = getattr(backend, "encode_batch_fast", backend.encode_batch)
    keep = unbreakable(backend)
    separator = np.asarray([bundle.separator_id], dtype=dtype)

    def encoded_ids(texts: list[str]) -> list[np.ndarray]:
        # Ids only, on the worker: an Encoding (tokens, offsets, masks) takes ~100 bytes a token, and
        # dropping them here means only the batch being encoded ever holds them.
        return [np.asarray(encoding.ids, dtype=dtype) for encoding in encode(texts, add_special_tokens=False)]

    writers = {split: SplitWriter(directory, split, dtype) for split in SPLITS}
    pending: dict[str, list[str]] = {split: [] for split in SPLITS}
    pending_ends: dict[str, list[bool]] = {split: [] for split in SPLITS}
    pending_chars = dict.fromkeys(SPLITS, 0)
    total = corpus.text_bytes
    n_bytes = n_documents = n_tokens = 0
    started = time.monotonic()
    # One batch is encoded in Rust (which releases the GIL) while Python reads the next and
    # writes the previous: reading and writing were a fifth of the time when done in turn.
    encoder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="seqlm-encode")
    in_flight: list[tuple[str, list[bool], Future]] = []  # at most one: the batch being encoded

    def write_encoded() -> None:
        nonlocal n_tokens
        if in_flight:
            split, ends, encoded = in_flight.pop()
            runs: list[np.ndarray] = []
            run_ends: list[bool] = []
            for ids, end in zip(encoded.result(), ends):
                runs += [ids, separator] if end else [ids]  # the separator is the run that ends a document
                run_ends += [False, True] if end else [False]
            writers[split].append(runs, run_ends)
            n_tokens = sum(writer.n_tokens for writer in writers.values())

    def flush(split: str) -> None:
        submitted = encoder.submit(encoded_ids, pending[split])
        write_encoded()  # the previous batch, while this one encodes
        in_flight.append((split, pending_ends[split], submitted))
        pending[split], pending_ends[split], pending_chars[split] = [], [], 0

    def show(bar: Any, completed: float) -> None:
        rate = n_bytes / _MB / max(time.monotonic() - started, 1e-9)
        bar.update(completed, docs=f"{n_documents:,}", tokens=f"{n_tokens:,}", **{"MB/s": rate})

    try:
        with console.progress("tokenizing", total=total / _MB if total else None, unit="MB") as bar:
            for split, text in corpus.documents():
                n_documents += 1
                n_bytes += 1  # the line break, to track the file size
                for piece, end in document_pieces(text, keep):
                    pending[split].append(piece)
                    pending_ends[split].append(end)
                    pending_chars[split] += len(piece)
                    n_bytes += len(piece.encode("utf-8"))
                    if len(pending[split]) >= batch_size or pending_chars[split] >= MAX_BATCH_CHARS:
                        flush(split)
                        show(bar, n_bytes / _MB)
            for split in SPLITS:
                if pending[split]:
                    flush(split)
            write_encoded()
            show(bar, total / _MB if total else n_bytes / _MB)
    except BaseException:
        encoder.shutdown(wait=True, cancel_futures=True)
        for writer in writers.values():
            with contextlib.suppress(Exception):
                writer.close()
        raise
    encoder.shutdown()
    splits = {split: writer.close() for split, writer in writers.items()}
    return splits, n_bytes, time.monotonic() - started
