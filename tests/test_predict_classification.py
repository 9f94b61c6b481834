"""`seqlm predict` with sequence classifiers: tiny, randomly initialised BERT and GPT-2 classifiers with
the six string labels of data/classify/labels.txt, checked against plain transformers one input at a time."""

from __future__ import annotations

import copy
import csv
import json
import math
import os
import shlex
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import fp32_unless_set
from typer.testing import CliRunner

from seqlm.cli import app

REPO = Path(__file__).resolve().parents[1]
LABELS = (REPO / "data" / "classify" / "labels.txt").read_text(encoding="utf-8").split()
MAX_POSITIONS = 64
TEXTS = [
    "Then he said to his disciples, the harvest indeed is plentiful, but the laborers are few; pray therefore.",
    "Amen.",
    "He keeps back his soul from the pit.",
    "",
    "My little children, I write these things to you so that you may not sin.",
    "Jesus wept.",
]


def _classifier_config(kind: str, tok: Any) -> Any:
    from transformers import BertConfig, GPT2Config

    labels = {"id2label": dict(enumerate(LABELS)), "label2id": {label: i for i, label in enumerate(LABELS)}}
    if kind == "bert":
        return BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                          intermediate_size=64, max_position_embeddings=MAX_POSITIONS, pad_token_id=tok.pad_token_id,
                          initializer_range=0.5, **labels)
    # No pad token anywhere: seqlm must pad with EOS and tell the model so (last-token pooling).
    return GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=len(tok), n_positions=MAX_POSITIONS,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=None,
                      initializer_range=0.5, **labels)


@pytest.fixture(scope="session")
def cls_dirs(tmp_path_factory: pytest.TempPathFactory, tiny_tokenizer: Any) -> dict[str, Path]:
    from transformers import BertForSequenceClassification, GPT2ForSequenceClassification

    root = tmp_path_factory.mktemp("classifiers")
    bert_tok = tiny_tokenizer("wordpiece", vocab_size=400, lowercase=True)
    gpt_tok = copy.deepcopy(tiny_tokenizer("bpe", vocab_size=400))
    gpt_tok.pad_token = None
    dirs = {}
    for kind, tok, cls in (("bert", bert_tok, BertForSequenceClassification), ("gpt", gpt_tok, GPT2ForSequenceClassification)):
        torch.manual_seed(0)
        dirs[kind] = root / kind
        cls(_classifier_config(kind, tok)).save_pretrained(dirs[kind])
        tok.save_pretrained(dirs[kind])
    return dirs


@cache
def _reference_model(path: Path) -> tuple[Any, Any]:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    return AutoTokenizer.from_pretrained(path), AutoModelForSequenceClassification.from_pretrained(path).eval()


def reference(path: Path, text: str, pair: str | None = None, max_length: int | None = None) -> list[float]:
    """Plain transformers, one input at a time (no padding): class probabilities."""
    tok, model = _reference_model(path)
    args = (text, pair) if pair is not None else (text,)
    ids = tok(*args, return_tensors="pt", truncation=max_length is not None, max_length=max_length)
    if ids["input_ids"].shape[1] == 0:  # an empty line with a tokenizer that adds nothing: seqlm scores EOS alone
        ids = {"input_ids": torch.tensor([[tok.eos_token_id]])}
    with torch.inference_mode():
        return model(**ids).logits[0].softmax(-1).tolist()


def predict(*args: str, stdin: bytes | None = None) -> Any:
    return CliRunner().invoke(app, fp32_unless_set(["predict", "--device", "cpu", *args]), input=stdin)  # compared with fp32 references


def lines_of(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


@pytest.mark.parametrize("kind", ["bert", "gpt"])
def test_batched_predictions_equal_transformers_one_at_a_time_in_input_order(
    cls_dirs: dict[str, Path], kind: str, tmp_path: Path
) -> None:
    source = tmp_path / "in.txt"
    source.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    # batch_size 3: the long input is padded against short ones (right padding; GPT pools its last real token).
    result = predict("--model", str(cls_dirs[kind]), "-i", str(source), "--top-k", "6", "--set", "batch_size=3")
    assert result.exit_code == 0, result.output
    records = lines_of(result.stdout)
    assert [r["input"] for r in records] == TEXTS
    for text, record in zip(TEXTS, records):
        assert set(record) == {"input", "label", "score", "scores"}
        scores = [entry["score"] for entry in record["scores"]]
        assert sorted(entry["label"] for entry in record["scores"]) == sorted(LABELS)
        assert scores == sorted(scores, reverse=True) and record["score"] == max(scores)
        assert record["label"] == record["scores"][0]["label"] and record["label"] in LABELS
        assert math.isclose(sum(scores), 1.0, abs_tol=1e-5)
        expected = reference(cls_dirs[kind], text)
        assert record["label"] == LABELS[max(range(len(LABELS)), key=expected.__getitem__)]
        by_label = {entry["label"]: entry["score"] for entry in record["scores"]}
        assert [by_label[label] for label in LABELS] == pytest.approx(expected, abs=1e-5)
    assert len({r["label"] for r in records}) > 1  # the random heads do separate the inputs


def test_top_k_limits_and_sorts_the_listed_classes(cls_dirs: dict[str, Path]) -> None:
    result = predict("--model", str(cls_dirs["bert"]), "--top-k", "2", stdin="\n".join(TEXTS[:3]).encode())
    assert result.exit_code == 0, result.output
    for record in lines_of(result.stdout):
        assert len(record["scores"]) == 2
        assert record["scores"][0]["score"] >= record["scores"][1]["score"]
        assert record["scores"][0] == {"label": record["label"], "score": record["score"]}


def test_csv_in_with_an_id_column_and_csv_out(cls_dirs: dict[str, Path], tmp_path: Path) -> None:
    source, out = tmp_path / "in.csv", tmp_path / "out.csv"
    with source.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "text", "label"])  # a gold label column, as in data/classify/test.csv
        writer.writerows([[f"q{n}", text, "law"] for n, text in enumerate(TEXTS)])
    result = predict("--model", str(cls_dirs["bert"]), "-i", str(source), "-o", str(out), "--set", "batch_size=4")
    assert result.exit_code == 0, result.output
    with out.open(encoding="utf-8", newline="") as handle:
        table = list(csv.DictReader(handle))
    assert [row["id"] for row in table] == [f"q{n}" for n in range(len(TEXTS))]
    assert [row["input"] for row in table] == TEXTS
    assert all(row["input_label"] == "law" for row in table)  # passed through, renamed beside the prediction
    for text, row in zip(TEXTS, table):
        expected = reference(cls_dirs["bert"], text)
        assert row["label"] == LABELS[max(range(len(LABELS)), key=expected.__getitem__)]
        scores = json.loads(row["scores"])  # nested → JSON string
        assert len(scores) == 5 and math.isclose(float(row["score"]), scores[0]["score"])


def test_sentence_pairs_use_the_pair_encoding(cls_dirs: dict[str, Path], tmp_path: Path) -> None:
    rows = [{"id": n, "a": TEXTS[n], "b": TEXTS[-1 - n]} for n in (0, 1, 4)]  # no empty pair (see predict_classification)
    source = write_jsonl(tmp_path / "pairs.jsonl", rows)
    result = predict("--model", str(cls_dirs["bert"]), "-i", str(source), "--set", "text_field=a",
                     "--set", "text_pair_field=b", "--top-k", "6")
    assert result.exit_code == 0, result.output
    for row, record in zip(rows, lines_of(result.stdout)):
        assert (record["id"], record["input"], record["input_pair"]) == (row["id"], row["a"], row["b"])
        by_label = {entry["label"]: entry["score"] for entry in record["scores"]}
        expected = reference(cls_dirs["bert"], row["a"], row["b"])
        assert [by_label[label] for label in LABELS] == pytest.approx(expected, abs=1e-5)


def test_long_inputs_are_truncated_and_counted(cls_dirs: dict[str, Path], tmp_path: Path) -> None:
    long_text = " ".join(["harvest"] * 30 + ["wisdom"] * 200)
    source = tmp_path / "in.txt"
    source.write_text(f"{long_text}\nAmen.\n", encoding="utf-8")
    for kind in ("bert", "gpt"):
        result = predict("--model", str(cls_dirs[kind]), "-i", str(source), "--top-k", "6")
        assert result.exit_code == 0, result.output
        assert f"1 input(s) were longer than {MAX_POSITIONS} tokens" in result.stderr
        record = lines_of(result.stdout)[0]
        by_label = {entry["label"]: entry["score"] for entry in record["scores"]}
        expected = reference(cls_dirs[kind], long_text, max_length=MAX_POSITIONS)
        assert [by_label[label] for label in LABELS] == pytest.approx(expected, abs=1e-5)
    shorter = predict("--model", str(cls_dirs["bert"]), "-i", str(source), "--set", "max_length=4")
    assert shorter.exit_code == 0 and "2 input(s) were longer than 4 tokens" in shorter.stderr  # "Amen." is 5
    too_long = predict("--model", str(cls_dirs["bert"]), "-i", str(source), "--set", f"max_length={MAX_POSITIONS + 1}")
    assert too_long.exit_code == 2 and "max_length" in too_long.stderr


@pytest.mark.parametrize(
    ("name", "content", "problem"),
    [
        ("in.txt", b"Amen.\nbad \xff\xfe bytes\nJesus wept.\n", "2: not valid UTF-8"),
        ("in.jsonl", b'{"text": "Amen."}\n{"text": "unterminated\n{"text": "Jesus wept."}\n', "2: not valid JSON"),
        ("in.csv", b'text,id\nAmen.,1\n"bad \xff",2\nJesus wept.,3\n', "3: not valid UTF-8"),
    ],
)
def test_bad_lines_fail_with_exit_3_or_are_skipped_and_listed(
    cls_dirs: dict[str, Path], tmp_path: Path, name: str, content: bytes, problem: str
) -> None:
    source, out = tmp_path / name, tmp_path / "out.jsonl"
    source.write_bytes(content)
    failed = predict("--model", str(cls_dirs["gpt"]), "-i", str(source), "-o", str(out))
    assert failed.exit_code == 3, failed.output
    assert f"{name}:{problem}" in failed.stderr and "--skip-bad-lines" in failed.stderr
    assert not out.exists()
    skipped = predict("--model", str(cls_dirs["gpt"]), "-i", str(source), "-o", str(out), "--skip-bad-lines")
    assert skipped.exit_code == 0, skipped.output
    assert [r["input"] for r in lines_of(out.read_text(encoding="utf-8"))] == ["Amen.", "Jesus wept."]
    line = problem.split(":")[0]
    assert f"skipped 1 bad line: {line} " in skipped.stderr


def test_skip_bad_lines_works_for_language_models_and_from_yaml(tmp_path: Path, tiny_tokenizer: Any) -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    tok = tiny_tokenizer("bpe", vocab_size=400)
    torch.manual_seed(0)
    model_dir = tmp_path / "clm"
    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=len(tok), n_positions=32)).save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    source = write_jsonl(tmp_path / "in.jsonl", [{"text": "Amen."}])
    source.write_bytes(source.read_bytes() + b'[1, 2]\n{"text": "Jesus wept."}\nnot json\n')
    config = tmp_path / "predict.yaml"
    config.write_text(f"model: {model_dir}\ninput: {source}\nskip_bad_lines: true\ngeneration: {{max_new_tokens: 2}}\n")
    assert "skip_bad_lines: true" in predict(str(config), "--print-config").stdout  # an absent flag keeps the YAML's
    result = predict(str(config))
    assert result.exit_code == 0, result.output
    assert [r["input"] for r in lines_of(result.stdout)] == ["Amen.", "Jesus wept."]
    assert "skipped 2 bad lines: 2, 4 " in result.stderr


def test_stdin_to_stdout_through_a_real_pipe(cls_dirs: dict[str, Path]) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    python, model = shlex.quote(sys.executable), shlex.quote(str(cls_dirs["gpt"]))
    command = f"printf 'Jesus wept.\\n{TEXTS[0]}\\nAmen.\\n' | {python} -m seqlm predict --model {model} --device cpu --top-k 3"
    done = subprocess.run(command, shell=True, capture_output=True, cwd=REPO, env=env, timeout=120)
    assert done.returncode == 0, done.stderr.decode()
    records = lines_of(done.stdout.decode("utf-8"))
    assert [r["input"] for r in records] == ["Jesus wept.", TEXTS[0], "Amen."]
    assert all(r["label"] in LABELS and len(r["scores"]) == 3 for r in records)
    assert b"predicted 3 inputs" in done.stderr


@pytest.mark.parametrize("kind", ["bert", "gpt"])
def test_labels_match_the_transformers_pipeline(cls_dirs: dict[str, Path], kind: str) -> None:
    from transformers import pipeline

    texts = [text for text in TEXTS if text]
    classifier = pipeline("text-classification", model=str(cls_dirs[kind]), device="cpu")
    expected = [out["label"] for out in classifier(texts, batch_size=1)]
    result = predict("--model", str(cls_dirs[kind]), stdin=("\n".join(texts) + "\n").encode())
    assert result.exit_code == 0, result.output
    assert [r["label"] for r in lines_of(result.stdout)] == expected
