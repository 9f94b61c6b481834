"""`seqlm tokenize CONFIG`: corpus → tokenizer → memory-mapped token dataset (see `seqlm.data.token_store`).

Contract of `run(config, console) -> dict`:

1. Refuse an `output_dir` that cannot be written (`OutputError`, exit 4: a file, under a file,
   not writable) or that is a non-empty directory but not a seqlm dataset (`ConfigError`, exit 2);
   a previous dataset there is replaced.
2. Train the tokenizer on the train documents (streamed; `max_training_documents` caps it)
   or load `tokenizer.pretrained`.
3. Encode the documents `batch_size` at a time with the Rust backend (no special tokens),
   append the separator id to each, and write each split with a `SplitWriter`.
4. Save the tokenizer files, `config.yaml` (the resolved config) and, last, `meta.json`.

Everything is built in a sibling `<output_dir>.tmp-<pid>` that replaces `output_dir` only
when complete; on any error (or Ctrl-C) it is removed, so no half-written dataset remains
(a write that fails, e.g. on a full disk, is an `OutputError`, exit 4; the previous dataset stays).
The corpus is streamed, never held in memory: read once to train a bpe tokenizer (twice for
wordpiece, see `seqlm.data.tokenizers`), once to encode, and once as raw bytes for the data
fingerprint. The returned dict summarises the run (splits, vocab size, fingerprint, seconds, MB/s).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from seqlm import __version__
from seqlm.config.loading import to_yaml
from seqlm.config.schema import TokenizeConfig
from seqlm.console import Console
from seqlm.data.corpus import Corpus
from seqlm.data.token_store import FORMAT, SPLITS, SplitWriter, token_dtype
from seqlm.data.tokenizers import TokenizerBundle, build_tokenizer, special_token_ids
from seqlm.errors import SPACE_ERRNOS, ConfigError
from seqlm.io import output_paths
from seqlm.io.atomic_files import replace_dir_atomic
from seqlm.io.output_paths import write_failure

_MB = 1e6
# Also flush a batch at this many bytes of text, so a few huge documents (blank_line novels)
# cannot make one batch hold a large share of the corpus.
_MAX_BATCH_BYTES = 32 << 20


def run(config: TokenizeConfig, console: Console) -> dict[str, Any]:
    """Tokenize the corpus of `config` into `config.output_dir`; return a summary dict."""
    started = time.monotonic()
    output_dir = Path(config.output_dir)
    check_output_dir(output_dir)
    corpus = Corpus(config.corpus, seed=config.seed)
    console.info(f"corpus: {corpus.describe()}")
    bundle = _tokenizer(config, corpus, console)
    tokenizer = bundle.tokenizer
    vocab_size = max(len(tokenizer), max(tokenizer.get_vocab().values()) + 1)  # ids may have holes (pretrained)
    dtype = token_dtype(vocab_size)

    staging = output_dir.with_name(f"{output_dir.name}.tmp-{os.getpid()}")
    try:
        output_dir.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(staging, ignore_errors=True)  # left by an earlier process that had our pid
        staging.mkdir()
    except OSError as exc:
        _raise_output_failure(exc, output_dir)
        raise
    try:
        saved = tokenizer.save_pretrained(str(staging))
        tokenizer_fp = _tokenizer_fingerprint(staging, saved)
        splits, n_bytes, encode_seconds = _encode(corpus, bundle, staging, dtype, config.batch_size, console)
        if corpus.validation_fallback:
            console.warn(
                f"no document was drawn for validation (validation_ratio {config.corpus.validation_ratio}); "
                "using the last document; give corpus.validation files or more documents"
            )
        for split, info in splits.items():
            n_docs, n_tokens = info["n_documents"], info["n_tokens"]
            console.info(
                f"{split}: {n_docs:,} documents, {n_tokens:,} tokens, {n_tokens / max(n_docs, 1):,.1f} tokens/document"
            )
        data_fp = corpus.fingerprint()
        meta = {
            "format": FORMAT,
            "dtype": dtype.name,
            "vocab_size": vocab_size,
            "separator_token": bundle.separator_token,
            "separator_id": bundle.separator_id,
            "tokenizer_kind": bundle.kind,
            "special_token_ids": special_token_ids(tokenizer),
            "splits": splits,
            "tokenizer_fingerprint": tokenizer_fp,
            "data_fingerprint": data_fp,
            "fingerprint": _fingerprint(config, tokenizer_fp, data_fp),
            "config": config.model_dump(mode="json"),
            "seqlm_version": __version__,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        (staging / "config.yaml").write_text(to_yaml(config), encoding="utf-8")
        # meta.json last: a directory with meta.json is complete.
        (staging / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        replace_dir_atomic(staging, output_dir)
    except BaseException as exc:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(exc, OSError) and _about_output(exc, output_dir, staging):
            _raise_output_failure(exc, output_dir)  # e.g. disk full: exit 4, the previous dataset intact
        raise
    seconds = time.monotonic() - started
    mb_per_s = n_bytes / _MB / encode_seconds if encode_seconds > 0 else 0.0
    total_tokens = sum(info["n_tokens"] for info in splits.values())
    console.info(
        f"wrote {output_dir}: {total_tokens:,} tokens ({dtype.name}), {seconds:.1f}s, encoding {mb_per_s:.2f} MB/s"
    )
    return {
        "output_dir": str(output_dir),
        "tokenizer_kind": bundle.kind,
        "vocab_size": vocab_size,
        "dtype": dtype.name,
        "splits": splits,
        "fingerprint": meta["fingerprint"],
        "text_mb": n_bytes / _MB,
        "seconds": seconds,
        "encode_mb_per_s": mb_per_s,
    }


def check_output_dir(output_dir: Path) -> None:
    """OutputError (exit 4) if `output_dir` cannot be written (a file, under a file, not writable);
    ConfigError unless it is absent, empty, or a previous seqlm dataset (to be replaced)."""
    output_paths.check_output_dir(output_dir)
    if output_dir.is_dir() and any(output_dir.iterdir()) and not _is_dataset(output_dir):
        raise ConfigError(
            f"output_dir {output_dir} is a non-empty directory that is not a seqlm dataset; "
            "pick another output_dir or remove it"
        )


def _raise_output_failure(exc: OSError, output_dir: Path) -> None:
    failure = write_failure(exc, output_dir)
    if failure is not None:
        raise failure from exc


def _about_output(exc: OSError, output_dir: Path, staging: Path) -> bool:
    """Whether a failed call was a write of the dataset (a read never runs out of space)."""
    if exc.errno in SPACE_ERRNOS:
        return True
    retired = f".{output_dir.name}.old-"
    for name in filter(None, (exc.filename, exc.filename2)):
        path = Path(name)
        if staging in path.parents or path in (staging, output_dir) or path.name.startswith(retired):
            return True
    return False


def _is_dataset(directory: Path) -> bool:
    try:
        meta = json.loads((directory / "meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and str(meta.get("format", "")).startswith("seqlm-tokens/")


def _tokenizer(config: TokenizeConfig, corpus: Corpus, console: Console) -> TokenizerBundle:
    settings = config.tokenizer
    if settings.pretrained:
        bundle = build_tokenizer(settings)
        console.info(f"tokenizer: {settings.pretrained} ({len(bundle.tokenizer):,} tokens)")
    else:
        started = time.monotonic()
        console.info(f"training a {settings.kind} tokenizer (vocab_size {settings.vocab_size:,})")

        def documents(purpose: str) -> Any:
            return _training_batches(corpus, config.batch_size, settings.max_training_documents, console, purpose)

        bundle = build_tokenizer(settings, documents)
        if len(bundle.tokenizer) < settings.vocab_size:
            console.info(
                f"the corpus supports only {len(bundle.tokenizer):,} of vocab_size {settings.vocab_size:,} tokens"
            )
        console.info(f"tokenizer trained in {time.monotonic() - started:.1f}s")
    console.info(f"separator: {bundle.separator_token!r} (id {bundle.separator_id})")
    return bundle


def _training_batches(corpus: Corpus, batch_size: int, cap: int | None, console: Console, purpose: str) -> Any:
    """One pass over the train documents, in lists of `batch_size` (cheaper for the Rust trainer
    to pull) and at most `cap` documents, shown as a progress display named `purpose`."""
    batch: list[str] = []
    n_documents = n_bytes = batch_bytes = 0
    started = time.monotonic()
    with console.progress(f"tokenizer: {purpose}", total=None, unit="MB") as bar:

        def show() -> None:
            elapsed = max(time.monotonic() - started, 1e-9)
            bar.update(n_bytes / _MB, docs=f"{n_documents:,}", **{"MB/s": n_bytes / _MB / elapsed})

        for text in corpus.split_documents("train"):
            batch.append(text)
            size = len(text.encode("utf-8"))
            n_documents += 1
            n_bytes += size
            batch_bytes += size
            last = cap is not None and n_documents >= cap
            if len(batch) >= batch_size or batch_bytes >= _MAX_BATCH_BYTES or last:
                yield batch
                batch, batch_bytes = [], 0
                show()
            if last:
                return  # stop reading: the rest of the corpus is not needed for training
        if batch:
            yield batch
            show()


def _encode(
    corpus: Corpus, bundle: TokenizerBundle, directory: Path, dtype: np.dtype, batch_size: int, console: Console
) -> tuple[dict[str, dict[str, int]], int, float]:
    """Encode and write every split; return per-split counts, text bytes read, and seconds taken."""
    backend = bundle.tokenizer.backend_tokenizer
    # encode_batch_fast skips offsets, which are not stored; both run in parallel in Rust.
    encode = getattr(backend, "encode_batch_fast", backend.encode_batch)
    separator = [bundle.separator_id]
    writers = {split: SplitWriter(directory, split, dtype) for split in SPLITS}
    pending: dict[str, list[str]] = {split: [] for split in SPLITS}
    pending_bytes = dict.fromkeys(SPLITS, 0)
    total = corpus.text_bytes
    n_bytes = n_documents = n_tokens = 0
    started = time.monotonic()
    # One batch is encoded in Rust (which releases the GIL) while Python reads the next and
    # writes the previous: reading and writing were a fifth of the time when done in turn.
    encoder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="seqlm-encode")
    in_flight: list[tuple[str, Future]] = []  # at most one: the batch being encoded

    def write_encoded() -> None:
        nonlocal n_tokens
        if in_flight:
            split, encoded = in_flight.pop()
            writers[split].append([encoding.ids + separator for encoding in encoded.result()])
            n_tokens = sum(writer.n_tokens for writer in writers.values())

    def flush(split: str) -> None:
        submitted = encoder.submit(encode, pending[split], add_special_tokens=False)
        write_encoded()  # the previous batch, while this one encodes
        in_flight.append((split, submitted))
        pending[split] = []
        pending_bytes[split] = 0

    def show(bar: Any, completed: float) -> None:
        rate = n_bytes / _MB / max(time.monotonic() - started, 1e-9)
        bar.update(completed, docs=f"{n_documents:,}", tokens=f"{n_tokens:,}", **{"MB/s": rate})

    try:
        with console.progress("tokenizing", total=total / _MB if total else None, unit="MB") as bar:
            for split, text in corpus.documents():
                size = len(text.encode("utf-8")) + 1  # + the line break, to track the file size
                pending[split].append(text)
                pending_bytes[split] += size
                n_documents += 1
                n_bytes += size
                if len(pending[split]) >= batch_size or pending_bytes[split] >= _MAX_BATCH_BYTES:
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


def _tokenizer_fingerprint(directory: Path, saved: Any) -> str:
    """sha256 of tokenizer.json, or of every saved tokenizer file if there is none."""
    tokenizer_json = directory / "tokenizer.json"
    files = [tokenizer_json] if tokenizer_json.is_file() else sorted(Path(f) for f in saved if Path(f).is_file())
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.read_bytes())
    return digest.hexdigest()


def _fingerprint(config: TokenizeConfig, tokenizer_fp: str, data_fp: str) -> str:
    """sha256 of the tokenizer, the data and the settings that change which tokens are written."""
    corpus = config.corpus
    settings: dict[str, Any] = {
        "format": FORMAT,
        "corpus_format": corpus.format,
        "text_column": corpus.text_column,
        "documents": corpus.documents,
        "hub_split": corpus.hub_split,
        "max_documents": corpus.max_documents,
    }
    if not corpus.validation:  # the ratio split depends on the ratio and the seed
        settings.update(validation_ratio=corpus.validation_ratio, seed=config.seed)
    payload = json.dumps({"tokenizer": tokenizer_fp, "data": data_fp, "settings": settings}, sort_keys=True)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()
