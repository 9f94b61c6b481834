"""A corpus config as a stream of `(split, document)` pairs, in constant memory.

Contract:

- `Corpus(config, seed)` resolves every entry of `corpus.train` / `corpus.validation` to
  sources up front, so a missing file fails before any work (`DataError`, exit 3). An entry
  is a file, a glob, a directory of data files, a directory written by
  `Dataset.save_to_disk`, or (when it is not an existing path) a hub dataset id.
- `Corpus.documents()` streams the documents in corpus order, each tagged "train" or
  "validation". Text files are read line by line, each line in bounded chunks (a line over
  `seqlm.io.line_reader.MAX_LINE_BYTES` is a DataError at its line; `seqlm.data.text_documents`); JSONL the same way, a
  JSON object per line; CSV/Parquet with `datasets.load_dataset(..., streaming=True)` (nothing
  is cached, memory stays flat); save_to_disk directories are memory-mapped Arrow (see
  `seqlm.data.corpus_readers`).
- Documents are non-blank strings: empty lines (format text, `documents: line`), blank
  paragraphs and empty or whitespace-only texts are skipped: they are not mistakes. A record
  whose text is null, missing or not a string is one: a DataError at `FILE:LINE` (JSONL) or
  `FILE: row N` (Parquet, Arrow), as `finetune`, `evaluate` and `predict` report theirs.
- Records with several text fields (`text_column: [source, target]`) give one document per field,
  in the order listed, record after record; a record missing any of them is a DataError.
- Without validation files, each document goes to validation with probability
  `validation_ratio`, drawn from `random.Random(seed)`; every pass draws the same sequence,
  so a second pass splits exactly like the first. If no document was drawn for
  validation, the last train document becomes validation (`validation_fallback` says so).
- `max_documents` caps the documents read: in total when splitting by ratio, per split
  when validation files are given.
- Errors are one-line `DataError`s naming the file and the fix: missing or unreadable file,
  missing text column (listing the columns there are), bytes that are not UTF-8 (with the
  line), a line over 100 MiB, a file that does not parse (a JSONL line: at `FILE:LINE`), no
  documents at all.
"""

from __future__ import annotations

import glob
import hashlib
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from seqlm.config.schema import CorpusConfig
from seqlm.data.corpus_readers import COMPRESSIONS, column_documents, jsonl_documents
from seqlm.data.text_documents import text_documents
from seqlm.errors import DataError, SeqlmError, first_line

_COMPRESSION_SUFFIXES = set(COMPRESSIONS)
_EXTENSION_FORMATS = {
    ".txt": "text", ".text": "text", ".md": "text",
    ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl",
    ".csv": "csv", ".tsv": "csv",
    ".parquet": "parquet", ".pq": "parquet",
}  # fmt: skip
# A hub id is `name` or `owner/name`; anything with more slashes is a (missing) path.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


@dataclass(frozen=True)
class Source:
    """One readable unit: a file (`text`/`jsonl`/`csv`/`parquet`), a save_to_disk dir, or a hub id."""

    format: str
    location: str

    @property
    def path(self) -> Path:
        return Path(self.location)


class Corpus:
    """The documents of a `CorpusConfig`, split into train and validation (see module docstring)."""

    def __init__(self, config: CorpusConfig, seed: int = 0):
        self.config = config
        self.seed = seed
        self.train_sources = [s for entry in config.train for s in resolve_entry(entry, config.format)]
        self.validation_sources = [s for entry in config.validation for s in resolve_entry(entry, config.format)]
        self.validation_fallback = False  # set by documents() when it had to borrow a train document

    @property
    def sources(self) -> list[Source]:
        return self.train_sources + self.validation_sources

    @property
    def text_bytes(self) -> int | None:
        """Total size of the input files when all are plain text (a progress total), else None."""
        if not all(s.format == "text" and s.path.suffix not in _COMPRESSION_SUFFIXES for s in self.sources):
            return None
        return sum(s.path.stat().st_size for s in self.sources)

    def describe(self) -> str:
        names = [s.location for s in self.sources]
        return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")

    def documents(self) -> Iterator[tuple[str, str]]:
        """Stream `(split, text)` in corpus order; raise DataError if the corpus has no documents."""
        self.validation_fallback = False
        if self.validation_sources:
            for split in ("train", "validation"):
                for text in self.split_documents(split):
                    yield split, text
            return
        rng = random.Random(self.seed)
        ratio = self.config.validation_ratio
        held_back: str | None = None  # the latest train document, in case validation stays empty
        n_train = n_validation = 0
        for text in _capped(self._stream(self.train_sources), self.config.max_documents):
            if rng.random() < ratio:
                n_validation += 1
                yield "validation", text
                continue
            if held_back is not None:
                n_train += 1
                yield "train", held_back
            held_back = text
        names = _names(self.train_sources)
        if held_back is None and n_validation == 0:
            raise DataError(f"{names}: no documents; check the files and corpus.format")
        if held_back is None:
            raise DataError(
                f"{names}: all {n_validation} document(s) were drawn for validation; "
                "lower corpus.validation_ratio or add text"
            )
        if n_validation == 0 and n_train == 0:
            raise DataError(f"{names}: a single document cannot be split; add text or give corpus.validation files")
        if n_validation == 0:
            self.validation_fallback = True  # keeps validation non-empty on tiny corpora
            yield "validation", held_back
        else:
            yield "train", held_back

    def split_documents(self, split: str) -> Iterator[str]:
        """Only the documents of one split. With validation files only that split's files are
        read; with a ratio split the whole stream is, to keep the seeded draws aligned."""
        if self.validation_sources:
            sources = self.train_sources if split == "train" else self.validation_sources
            count = 0
            for text in _capped(self._stream(sources), self.config.max_documents):
                count += 1
                yield text
            if count == 0:
                raise DataError(f"{_names(sources)}: no documents; check the files and corpus.format")
            return
        for name, text in self.documents():
            if name == split:
                yield text

    def fingerprint(self) -> str:
        """sha256 over the bytes of every input (files streamed in 1 MiB chunks), or the hub id and split."""
        digest = hashlib.sha256()
        for role, sources in (("train", self.train_sources), ("validation", self.validation_sources)):
            for source in sources:
                digest.update(f"{role}\0{source.format}\0".encode())
                if source.format == "hub":
                    digest.update(f"{source.location}\0{self.config.hub_split}\0".encode())
                    continue
                files = (
                    sorted(p for p in source.path.rglob("*") if p.is_file()) if source.path.is_dir() else [source.path]
                )
                for file in files:
                    digest.update(_file_sha256(file).encode())
        return digest.hexdigest()

    def _stream(self, sources: list[Source]) -> Iterator[str]:
        for source in sources:
            yield from stream_source(source, self.config)


def resolve_entry(entry: str, format: str = "auto") -> list[Source]:
    """The sources one `corpus.train`/`corpus.validation` entry stands for (DataError if missing)."""
    path = Path(entry).expanduser()
    if format == "hub":
        return [Source("hub", entry)]
    if path.is_file():
        return [Source(format if format != "auto" else _format_of(path), str(path))]
    if path.is_dir():
        if format == "disk" or (path / "state.json").is_file() or (path / "dataset_dict.json").is_file():
            return [Source("disk", str(path))]
        files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
        if not files:
            raise DataError(
                f"{entry}: an empty directory; point corpus.train/validation at text, JSONL, CSV or Parquet files"
            )
        return [Source(format if format != "auto" else _format_of(p), str(p)) for p in files]
    if any(char in entry for char in "*?["):
        matches = sorted(glob.glob(str(path)))
        if matches:
            return [s for match in matches for s in resolve_entry(match, format)]
        raise DataError(f"{entry}: no file matches this pattern; check the path (relative to {Path.cwd()})")
    looks_like_file = bool(path.suffix) and _strip_compression(path).suffix.lower() in _EXTENSION_FORMATS
    if format == "auto" and _HUB_ID.match(entry) and not looks_like_file:
        return [Source("hub", entry)]
    raise DataError(f"{entry}: file not found; check the path (relative to {Path.cwd()}) in corpus.train/validation")


def stream_source(source: Source, config: CorpusConfig) -> Iterator[str]:
    """The non-blank documents of one source, read in constant memory."""
    try:
        if source.format == "text":
            yield from text_documents(source.path, source.location, config.documents)
        elif source.format == "jsonl":
            yield from jsonl_documents(source.location, config.text_columns)
        else:
            yield from column_documents(source.format, source.location, config)
    except SeqlmError:
        raise
    except UnicodeDecodeError as exc:
        where = _locate_bad_utf8(source.path, exc)
        raise DataError(f"{source.location}: not UTF-8 text ({where}); re-encode it as UTF-8") from exc
    except FileNotFoundError as exc:
        raise DataError(f"{source.location}: file not found ({exc}); check corpus.train/validation") from exc
    except PermissionError as exc:
        raise DataError(f"{source.location}: permission denied; make the file readable (chmod a+r) or copy it") from exc
    except Exception as exc:  # a parse error of the user's file, raised from inside the reader
        first = first_line(exc)
        raise DataError(
            f"{source.location}: cannot read it as {source.format} ({first}); check the file or set corpus.format"
        ) from exc


def _capped(texts: Iterator[str], cap: int | None) -> Iterator[str]:
    if cap is None:
        yield from texts
        return
    for count, text in enumerate(texts, start=1):
        yield text
        if count >= cap:
            return  # stop before the next read: nothing past the cap is read


def _names(sources: list[Source]) -> str:
    return ", ".join(s.location for s in sources) or "(none)"


def _strip_compression(path: Path) -> Path:
    return path.with_suffix("") if path.suffix.lower() in _COMPRESSION_SUFFIXES else path


def _format_of(path: Path) -> str:
    # Unknown extensions (`train.en`, `corpus.raw`) are most often plain text.
    return _EXTENSION_FORMATS.get(_strip_compression(path).suffix.lower(), "text")


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _locate_bad_utf8(path: Path, exc: UnicodeDecodeError) -> str:
    """'line N' of the first undecodable byte, found by rescanning the file (error path only)."""
    import fsspec

    try:
        with fsspec.open(str(path), "rb", compression="infer") as handle:
            # A newline byte never occurs inside a multi-byte UTF-8 sequence, so lines decode alone.
            for number, raw in enumerate(handle, start=1):
                try:
                    raw.decode("utf-8")
                except UnicodeDecodeError as line_exc:
                    return f"line {number}, byte {line_exc.start + 1} of the line: {line_exc.reason}"
    except OSError:
        pass
    return exc.reason
