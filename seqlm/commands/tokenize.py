"""`seqlm tokenize CONFIG`: corpus → tokenizer → memory-mapped token dataset (see `seqlm.data.token_store`).

Contract of `run(config, console) -> dict`:

1. Refuse an `output_dir` that cannot be written (`OutputError`, exit 4: a file, under a file,
   not writable) or that is a non-empty directory but not a seqlm dataset (`ConfigError`, exit 2);
   a previous dataset there is replaced.
2. Train the tokenizer on the train documents (streamed; `max_training_documents` caps it)
   or load `tokenizer.pretrained`.
3. Encode the documents `batch_size` at a time with the Rust backend (no special tokens),
   append the separator id to each, and write each split with a `SplitWriter`
   (`seqlm.data.corpus_encoding`: a long document goes in bounded pieces, with the same tokens).
4. Save the tokenizer files, `config.yaml` (the resolved config) and, last, `meta.json`.

Everything is built in a sibling `<output_dir>.tmp-<pid>` that replaces `output_dir` only
when complete; on any error (or Ctrl-C) it is removed, so no half-written dataset remains
(a write that fails, e.g. on a full disk, is an `OutputError`, exit 4; the previous dataset stays).
The corpus is streamed, never held in memory: read once to train a bpe tokenizer (twice for
wordpiece, see `seqlm.data.tokenizers`), once to encode, and once as raw bytes for the data
fingerprint. Training and encoding see a document longer than 256 Ki characters as pieces cut at
whitespace or punctuation (`seqlm.data.long_documents`), so memory stays bounded however long a
line. The returned dict summarises the run (splits, vocab size, fingerprint, seconds, MB/s).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from seqlm import __version__
from seqlm.config.loading import to_yaml
from seqlm.config.schema import TokenizeConfig
from seqlm.console import Console
from seqlm.data.corpus import Corpus
from seqlm.data.corpus_encoding import MAX_BATCH_CHARS, document_pieces, encode_corpus
from seqlm.data.token_store import FORMAT, token_dtype
from seqlm.data.tokenizers import TokenizerBundle, build_tokenizer, special_token_ids
from seqlm.errors import SPACE_ERRNOS, ConfigError
from seqlm.io import output_paths
from seqlm.io.atomic_files import replace_dir_atomic
from seqlm.io.output_paths import write_failure

_MB = 1e6


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
        splits, n_bytes, encode_seconds = encode_corpus(corpus, bundle, staging, dtype, config.batch_size, console)
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
    n_documents = n_bytes = batch_chars = 0
    started = time.monotonic()
    with console.progress(f"tokenizer: {purpose}", total=None, unit="MB") as bar:

        def show() -> None:
            elapsed = max(time.monotonic() - started, 1e-9)
            bar.update(n_bytes / _MB, docs=f"{n_documents:,}", **{"MB/s": n_bytes / _MB / elapsed})

        for text in corpus.split_documents("train"):
            n_documents += 1
            last = cap is not None and n_documents >= cap
            # Pieces cut where the pre-tokenizer splits anyway: the trainer counts the same words.
            for piece, end in document_pieces(text, ()):  # no added tokens while training
                batch.append(piece)
                n_bytes += len(piece.encode("utf-8"))
                batch_chars += len(piece)
                if len(batch) >= batch_size or batch_chars >= MAX_BATCH_CHARS or (last and end):
                    yield batch
                    batch, batch_chars = [], 0
                    show()
            if last:
                return  # stop reading: the rest of the corpus is not needed for training
        if batch:
            yield batch
            show()


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
