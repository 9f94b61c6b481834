"""Huge lines in bounded memory, and one rule per mistake (issue 14, items 4 and 5).

- A long document is encoded in pieces cut at whitespace or punctuation (`seqlm.data.long_documents`):
  the same tokens as encoding it whole, for both tokenizer kinds `seqlm tokenize` trains, and the same
  trained tokenizer. `predict` reads only as much of a long input as the model can take.
- `seqlm tokenize` and `seqlm predict` on a generated one-line file, as real subprocesses: their peak RSS
  grows by a few times the line's size, not a hundred times.
- A long input to a token classifier is tagged a group of words at a time, with the records of the
  batched path (`seqlm.tasks.long_input_tagging`).
- `tokenize` reports a null/missing/non-string text and a broken JSONL line at FILE:LINE, exit 3, in the
  other commands' words; `predict` keeps blank lines of a text input as inputs and warns about them.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from conftest import REPO, assert_data_error, invoke, write_jsonl

from seqlm.data.long_documents import latest_cut, text_pieces, token_prefix, token_suffix, unbreakable

MAX_POSITIONS = 64
MB = 10**6
SEPARATORS = [" "] * 6 + ["  ", "   ", "\t", "\n", " \n", "\n\n ", "\r\n", " \t ", "\u3000", "\u00a0", "\x0c", "\x1c", ""]
WORDS = ["word", "the", "Émile", "naïve", "字字", "。", ",", "don't", "it's", "I'm", "123", "4567", "😀", "--",
         "\u0301x", "a", "x\u200by", "!?", "[SEP]", "[MASK]", "<|endoftext|>"]  # fmt: skip


def generated_text(seed: int, n_words: int) -> str:
    """Words (accents, CJK, emoji, digits, contractions, special tokens) joined by runs of every kind of
    whitespace and control characters; every third one is followed by a space, tab or line break, so that
    no 64 characters go without a place to cut before a word."""
    rng = random.Random(seed)
    return "".join(rng.choice(WORDS) + rng.choice(SEPARATORS) + ("" if i % 3 else rng.choice(" \t\n")) for i in range(n_words))


def ids(tokenizer: Any, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]


# --------------------------------------------------------------------------- pieces: the tokens of the whole


@pytest.mark.parametrize("kind", ["bpe", "wordpiece"])
def test_pieces_encode_to_the_tokens_of_the_whole_document(kind: str, tiny_tokenizer: Any) -> None:
    tokenizer = tiny_tokenizer(kind, lowercase=kind == "wordpiece")
    keep = unbreakable(tokenizer)
    assert "[SEP]" in keep or "<|endoftext|>" in keep
    for seed in range(40):
        text = generated_text(seed, 600)
        for limit in (64, 97, 500):  # never a cut inside a word (see generated_text)
            pieces = list(text_pieces(text, limit, keep))
            assert "".join(pieces) == text and all(len(piece) <= limit for piece in pieces)
            assert len(pieces) > 1
            assert [i for piece in pieces for i in ids(tokenizer, piece)] == ids(tokenizer, text), (kind, seed, limit)


@pytest.mark.parametrize("kind", ["bpe", "wordpiece"])
def test_text_without_spaces_is_cut_at_punctuation_and_only_else_inside_a_word(kind: str, tiny_tokenizer: Any) -> None:
    tokenizer = tiny_tokenizer(kind, lowercase=kind == "wordpiece")
    cjk = "".join(random.Random(0).choice(["春眠不覚暁", "処処聞啼鳥", "夜来風雨声", "。", "、", "！"]) for _ in range(400))
    pieces = list(text_pieces(cjk, 50))
    assert [i for piece in pieces for i in ids(tokenizer, piece)] == ids(tokenizer, cjk)
    blob = "ACGT" * 100  # no whitespace, no punctuation: the boundary effect, a cut inside the "word"
    assert [len(piece) for piece in text_pieces(blob, 64)] == [64] * 6 + [16]
    assert latest_cut("x" * 10 + "[SEP]" + "y" * 10, 0, 12, ("[SEP]",)) == 10  # never inside an added token


@pytest.mark.parametrize("kind", ["bpe", "wordpiece"])
def test_a_tokenizer_trained_on_pieces_is_the_one_trained_on_whole_documents(kind: str) -> None:
    from seqlm.config.schema import TokenizerConfig
    from seqlm.data.tokenizers import train_tokenizer

    documents = [generated_text(seed, 500) for seed in range(5)]
    config = TokenizerConfig(kind=kind, vocab_size=300, min_frequency=1)
    whole = train_tokenizer(config, lambda purpose: [documents])
    pieces = train_tokenizer(config, lambda purpose: [[p for document in documents for p in text_pieces(document, 60)]])
    assert pieces.backend_tokenizer.to_str() == whole.backend_tokenizer.to_str()


@pytest.mark.parametrize("kind", ["bpe", "wordpiece"])
def test_a_long_input_is_read_only_as_far_as_the_model_reads(kind: str, tiny_tokenizer: Any) -> None:
    tokenizer = tiny_tokenizer(kind, lowercase=kind == "wordpiece")
    text = generated_text(7, 30_000)
    start, end = token_prefix(tokenizer, text, 64), token_suffix(tokenizer, text, 64)
    assert len(start) < len(text) // 10 and len(end) < len(text) // 10
    assert text.startswith(start) and text.endswith(end)
    truncated = tokenizer(text, truncation=True, max_length=64)["input_ids"]
    assert tokenizer(start, truncation=True, max_length=64)["input_ids"] == truncated
    assert ids(tokenizer, end)[-64:] == ids(tokenizer, text)[-64:]
    short = "a short input"
    assert token_prefix(tokenizer, short, 64) is short and token_suffix(tokenizer, short, 64) is short


# --------------------------------------------------------------------------- peak memory of real runs


def one_line_file(path: Path, size: int) -> Path:
    """A single line of `size` bytes: random lowercase words separated by spaces, no line break."""
    rng = random.Random(0)
    words = ["".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=rng.randint(1, 9))) for _ in range(5000)]
    line = " ".join(rng.choices(words, k=size // 5))
    path.write_text(line[:size], encoding="utf-8")
    return path


# The child reports its own peak: the kernel's VmHWM of its process image. (ru_maxrss from wait4 will not do:
# it keeps the high-water mark of the forking pytest process, hundreds of MB, across the exec.)
_REPORT_PEAK = """
import atexit, sys
def report():
    with open("/proc/self/status") as status:
        print("peak-rss-kib", next(line.split()[1] for line in status if line.startswith("VmHWM:")), file=sys.stderr)
atexit.register(report)
from seqlm.cli import main
sys.argv[0] = "seqlm"
main()
"""


def peak_rss(*args: object) -> int:
    """Run `seqlm ARGS` in a subprocess; its peak resident set size in bytes."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", _REPORT_PEAK, *map(str, args), "-q"], cwd=REPO, env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return int(done.stderr.split("peak-rss-kib")[-1].split()[0]) * 1024


@pytest.fixture(scope="module")
def classifier(tmp_path_factory: pytest.TempPathFactory, tiny_tokenizer: Any) -> Path:
    """A tiny random BERT classifier (3 labels, 64 positions)."""
    from transformers import BertConfig, BertForSequenceClassification

    tokenizer = tiny_tokenizer("wordpiece", vocab_size=400, lowercase=True)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=MAX_POSITIONS, pad_token_id=tokenizer.pad_token_id,
        id2label={0: "law", 1: "wisdom", 2: "gospel"}, label2id={"law": 0, "wisdom": 1, "gospel": 2},
    )  # fmt: skip
    path = tmp_path_factory.mktemp("classifier") / "model"
    BertForSequenceClassification(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="reads the peak RSS from /proc (Linux)")
def test_tokenize_and_predict_on_a_huge_line_grow_by_a_few_times_its_size(tmp_path: Path, classifier: Path) -> None:
    """8 MB in one line: peak RSS grows over the same run on a tiny file by at most the batch being encoded
    (a fixed ~200 MB with this 300-token vocabulary) and 10 times the line, and stays under 1 GB. The old code
    grew by 1.4 GB (180 times the line) in tokenize and 1.7 GB (210 times) in predict."""
    size = 8 * MB
    huge, tiny = one_line_file(tmp_path / "huge.txt", size), one_line_file(tmp_path / "tiny.txt", 1000)
    peaks = {}
    for name, source in (("huge", huge), ("tiny", tiny)):
        config = tmp_path / f"{name}.yaml"
        config.write_text(yaml.safe_dump({
            "output_dir": str(tmp_path / f"data-{name}"),
            "corpus": {"train": str(source), "validation": str(REPO / "data" / "corpus" / "valid.txt")},
            "tokenizer": {"kind": "bpe", "vocab_size": 300},
        }), encoding="utf-8")  # fmt: skip
        peaks["tokenize", name] = peak_rss("tokenize", config)
        out = tmp_path / f"{name}.jsonl"
        peaks["predict", name] = peak_rss("predict", "--model", classifier, "-i", source, "-o", out, "--device", "cpu")
        record = json.loads(out.read_text(encoding="utf-8"))
        assert record["input"] == source.read_text(encoding="utf-8") and record["label"] in {"law", "wisdom", "gospel"}
    for command in ("tokenize", "predict"):
        growth = peaks[command, "huge"] - peaks[command, "tiny"]
        assert growth < 300 * 2**20 + 10 * size and peaks[command, "huge"] < 1e9, (command, peaks)


# --------------------------------------------------------------------------- token classification of a long input


@pytest.fixture(scope="module")
def tagger(tmp_path_factory: pytest.TempPathFactory, tiny_tokenizer: Any) -> Path:
    """A tiny random BERT token classifier with IOB2 tags (decisive: the classifier's weights are large)."""
    from transformers import BertConfig, BertForTokenClassification

    tokenizer = tiny_tokenizer("wordpiece", vocab_size=400, lowercase=True)
    tags = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=MAX_POSITIONS, pad_token_id=tokenizer.pad_token_id,
        id2label=dict(enumerate(tags)), label2id={tag: i for i, tag in enumerate(tags)},
    )  # fmt: skip
    model = BertForTokenClassification(config)
    with torch.no_grad():
        model.classifier.weight.normal_(0.0, 1.0)
    path = tmp_path_factory.mktemp("tagger") / "model"
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.mark.parametrize("word_split", ["whitespace", "pretokenizer"])
def test_a_long_input_is_tagged_group_by_group_as_the_batched_path_tags_it(
    word_split: str, tagger: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import seqlm.tasks.long_input_tagging as long_input_tagging
    import seqlm.tasks.token_tagging as token_tagging

    text = " ".join((REPO / "data" / "corpus" / "train.txt").read_text(encoding="utf-8").split()[:12_000])
    text = text.replace(" the ", " the,\t", 50)  # punctuation for the pre-tokenizer, tabs for the whitespace split
    source = tmp_path / "inputs.txt"
    source.write_text(f"{text[:3000]}\n\nshort one\n{text}\n", encoding="utf-8")
    args = ("predict", "--model", tagger, "-i", source, "--device", "cpu", "--set", f"word_split={word_split}")
    batched = [json.loads(line) for line in invoke(*args).stdout.splitlines()]
    monkeypatch.setattr(token_tagging, "LONG_INPUT_CHARS", 100)  # all but the blank and the short input
    monkeypatch.setattr(long_input_tagging, "PIECE_CHARS", 5000)  # the pre-tokenizer's words from pieces
    grouped = [json.loads(line) for line in invoke(*args).stdout.splitlines()]
    assert len(grouped) == len(batched) == 4
    for one, other in zip(batched, grouped):
        assert one["input"] == other["input"]
        assert [(w["word"], w["tag"], w["start"], w["end"]) for w in one["words"]] == [
            (w["word"], w["tag"], w["start"], w["end"]) for w in other["words"]
        ]
        assert [w["score"] for w in one["words"]] == pytest.approx([w["score"] for w in other["words"]], abs=1e-6)
        assert [{**e, "score": 0} for e in one["entities"]] == [{**e, "score": 0} for e in other["entities"]]
    assert len(grouped[3]["words"]) > 8192 and len(grouped[3]["entities"]) > 0  # several groups, entities across them


# --------------------------------------------------------------------------- tokenize: one rule, one location style


def tokenize_jsonl(tmp_path: Path, source: Path) -> Any:
    config = {"output_dir": str(tmp_path / "out"), "corpus": {"train": str(source), "validation_ratio": 0.3},
              "tokenizer": {"vocab_size": 300}}  # fmt: skip
    path = tmp_path / "tokenize.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return invoke("tokenize", path)


GOOD = {"text": "In the beginning was the word."}


@pytest.mark.parametrize(
    ("record", "says"),
    [
        ({"text": None}, "field 'text' is null; give every document a text or drop the line"),
        ({"body": "no text field"}, "no 'text' field (fields: 'body'); add it or set corpus.text_column"),
        ({"text": 5}, "field 'text' holds an int (5), not text; set corpus.text_column"),
    ],
    ids=["null", "missing", "int"],
)
def test_tokenize_refuses_a_record_without_text_at_its_line(record: dict, says: str, tmp_path: Path) -> None:
    source = tmp_path / "corpus.jsonl"
    source.write_text(json.dumps(GOOD) + "\n\n" + json.dumps(record) + "\n" + json.dumps(GOOD) + "\n", encoding="utf-8")
    result = tokenize_jsonl(tmp_path, source)
    assert_data_error(result, f"{source}:3: {says}")
    assert not (tmp_path / "out").exists()


def test_tokenize_refuses_a_null_text_in_a_parquet_row(tmp_path: Path) -> None:
    import pandas as pd

    source = tmp_path / "corpus.parquet"
    pd.DataFrame({"text": ["first document", "", None, "last"]}).to_parquet(source)
    assert_data_error(
        tokenize_jsonl(tmp_path, source), f"{source}: row 3: field 'text' is null; give every document a text or drop the row"
    )


def test_tokenize_names_a_broken_jsonl_line_as_file_and_line(tmp_path: Path) -> None:
    source = tmp_path / "broken.jsonl"
    source.write_text(json.dumps(GOOD) + '\n{"text": broken\n' + json.dumps(GOOD) + "\n", encoding="utf-8")
    result = tokenize_jsonl(tmp_path, source)
    assert_data_error(result, f"{source}:2: not valid JSON (Expecting value, column 10); one JSON object per line")
    assert "row" not in result.stderr


# --------------------------------------------------------------------------- predict: blank lines are inputs


def test_predict_answers_every_line_of_a_text_input_and_warns_about_blank_ones(classifier: Path, tmp_path: Path) -> None:
    source = tmp_path / "inputs.txt"
    source.write_text("first\n\n   \n\t\nlast\n", encoding="utf-8")  # the final newline starts no input
    result = invoke("predict", "--model", classifier, "-i", source, "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert [json.loads(line)["input"] for line in result.stdout.splitlines()] == ["first", "", "   ", "\t", "last"]
    warnings = [line for line in result.stderr.splitlines() if "blank" in line]
    assert len(warnings) == 1 and warnings[0].endswith(
        f"warning: {source}: 3 of 5 inputs are blank (lines 2, 3, 4); each gets a record"
    )


def test_predict_on_blank_lines_only_writes_their_records_and_an_empty_file_has_no_inputs(
    classifier: Path, tmp_path: Path
) -> None:
    blank = tmp_path / "blank.txt"
    blank.write_text(" \n" * 12, encoding="utf-8")
    result = invoke("predict", "--model", classifier, "-i", blank, "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert len(result.stdout.splitlines()) == 12
    assert f"{blank}: 12 of 12 inputs are blank (lines 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, …)" in result.stderr
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    assert_data_error(invoke("predict", "--model", classifier, "-i", empty, "--device", "cpu"), f"{empty}: no inputs")


def test_predict_warns_about_a_blank_jsonl_text_once(classifier: Path, tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "inputs.jsonl", [{"text": "some words"}, {"text": "  "}])
    result = invoke("predict", "--model", classifier, "-i", source, "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert f"{source}: 1 of 2 inputs is blank (line 2); each gets a record" in result.stderr
