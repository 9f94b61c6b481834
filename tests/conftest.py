"""Shared test setup: nothing may reach the Hugging Face hub; the CLI's env defaults do not leak;
tiny tokenizers are trained once per session with the production code."""

from __future__ import annotations

import os
from collections.abc import Callable
from itertools import islice
from pathlib import Path
from typing import Any

import pytest

import seqlm  # noqa: F401  (first: its MKL reproducibility settings must precede torch's first use)

CORPUS = Path(__file__).resolve().parents[1] / "data" / "corpus" / "train.txt"
TOKENIZER_LINES = 300  # non-empty corpus lines the tiny tokenizers are trained on

# The CLI sets these with os.environ.setdefault; in-process (CliRunner) runs would leak them.
_CLI_ENV = ("HF_HUB_DISABLE_PROGRESS_BARS", "TOKENIZERS_PARALLELISM", "TRANSFORMERS_VERBOSITY", "DATASETS_VERBOSITY")


@pytest.fixture(autouse=True)
def _offline_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _restore_cli_env():
    """Put back (or remove) the env vars the CLI setdefaults, after every test."""
    saved = {key: os.environ.get(key) for key in _CLI_ENV}
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def tiny_tokenizer() -> Callable[..., Any]:
    """`tiny_tokenizer(kind, vocab_size=300, lowercase=False)`: a tokenizer trained by
    `seqlm.data.tokenizers.train_tokenizer` on the first TOKENIZER_LINES non-empty lines
    of data/corpus/train.txt, cached per arguments. Shared: copy it before changing it."""
    from seqlm.config.schema import TokenizerConfig
    from seqlm.data.tokenizers import train_tokenizer

    with CORPUS.open(encoding="utf-8") as handle:
        lines = list(islice((line.strip() for line in handle if line.strip()), TOKENIZER_LINES))
    cache: dict[tuple[str, int, bool], Any] = {}

    def make(kind: str, vocab_size: int = 300, lowercase: bool = False) -> Any:
        key = (kind, vocab_size, lowercase)
        if key not in cache:
            # min_frequency=1: every pair seen may merge (the vocabulary size is the only limit).
            config = TokenizerConfig(kind=kind, vocab_size=vocab_size, min_frequency=1, lowercase=lowercase)
            cache[key] = train_tokenizer(config, lambda purpose: [lines])
        return cache[key]

    return make
