"""Shared test setup: nothing may reach the Hugging Face hub; the CLI's env defaults do not leak;
tiny tokenizers are trained once per session with the production code; the tiny BERT and GPT-2
the fine-tuning tests start from are pretrained once per session through the CLI; CLI helpers."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from itertools import islice
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import seqlm as _seqlm_env  # noqa: F401  (first: its MKL reproducibility settings must precede torch's first use)
from seqlm.cli import app

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs one pytest-xdist worker per core: each keeps to one thread (and so do the processes its tests
    # start), since two workers each spreading tiny ops over every core spend their time waiting on each other.
    import torch

    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"
    torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO / "data" / "corpus" / "train.txt"
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


# --------------------------------------------------------------------------- CLI helpers and pretrained tiny models


runner = CliRunner()


# evaluate and predict default to `precision: auto` (bf16 autocast on CPUs with native bf16), and the tests
# compare what they compute with fp32 references (pipelines, plain transformers, the tiny configs' fp32
# training scores): the CLI helpers run them in fp32 unless a test sets precision itself, as the tiny training
# configs say `precision: fp32`. test_inference_precision.py covers auto and its agreement with fp32.
INFERENCE_COMMANDS = ("evaluate", "predict")


def fp32_unless_set(args: list[str]) -> list[str]:
    """`args` of a seqlm command line, with `--set precision=fp32` added to evaluate / predict when none is given."""
    if args and args[0] in INFERENCE_COMMANDS and not any(arg.startswith("precision=") for arg in args):
        return [*args, "--set", "precision=fp32"]
    return args


def invoke(*args: object):
    return runner.invoke(app, fp32_unless_set([str(arg) for arg in args]))


def seqlm(*args: object) -> str:
    result = invoke(*args)
    assert result.exit_code == 0, f"seqlm {' '.join(map(str, args))} failed ({result.exit_code}):\n{result.output}"
    return result.stdout


def sets(**overrides: object) -> list[str]:
    """--set key=value for each override (`data__train` → data.train)."""
    args: list[str] = []
    for key, value in overrides.items():
        args += ["--set", f"{key.replace('__', '.')}={value}"]
    return args


def jsonl_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return path


def assert_data_error(result, *fragments: str) -> None:
    report = f"exit {result.exit_code}\nstderr:\n{result.stderr}"
    assert result.exit_code == 3, report
    assert "Traceback" not in result.output, report
    lines = result.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("seqlm: error: "), report
    for fragment in fragments:
        assert fragment in lines[-1], f"{fragment!r} not in {lines[-1]!r}"


# --------------------------------------------------------------------------- fixtures: data and pretrained models


def _pretrained(root: Path, family: str) -> Path:
    """configs/tiny/{family}_tokenize.yaml (on 1,000 documents) + {family}_pretrain.yaml (100 steps)."""
    data, run = root / "data", root / "run"
    seqlm("tokenize", f"configs/tiny/{family}_tokenize.yaml", *sets(output_dir=data, corpus__max_documents=1000), "-q")
    seqlm("pretrain", f"configs/tiny/{family}_pretrain.yaml", *sets(output_dir=run, data=data, training__max_steps=100), "-q")
    return run / "model"


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _pretrained(tmp_path_factory.mktemp("tiny-bert"), "bert")


@pytest.fixture(scope="session")
def tiny_gpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _pretrained(tmp_path_factory.mktemp("tiny-gpt"), "gpt")
