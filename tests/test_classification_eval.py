"""`seqlm evaluate` on sequence classifiers, and the `classification_report` metric module.

Tiny BERT and GPT-2 classifiers are built and briefly trained here with plain torch; the CLI's
numbers are checked against scikit-learn on predictions obtained independently with plain
transformers (one unpadded example at a time).
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import fp32_unless_set
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support
from typer.testing import CliRunner

from seqlm.cli import app
from seqlm.metrics import ClassificationReport, load_metric

REPO = Path(__file__).resolve().parents[1]
CLASSIFY = REPO / "data" / "classify"
LABELS = (CLASSIFY / "labels.txt").read_text(encoding="utf-8").split()
MAX_POSITIONS = 48
N_EVAL = 48  # examples in the evaluated subsets


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """Tiny models gain nothing from intra-op threads; on a busy 2-core machine two OpenMP threads
    waiting on each other made these tests 10-30x slower. Restored after the module."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --------------------------------------------------------------------------- the metric module


def _sklearn(predicted: np.ndarray, expected: np.ndarray, n: int) -> dict[str, Any]:
    out: dict[str, Any] = {"accuracy": accuracy_score(expected, predicted)}
    for average in ("macro", "weighted"):
        p, r, f, _ = precision_recall_fscore_support(expected, predicted, average=average, zero_division=0)
        out.update({f"{average}_precision": p, f"{average}_recall": r, f"{average}_f1": f})
    p, r, f, s = precision_recall_fscore_support(expected, predicted, labels=list(range(n)), zero_division=0)
    out["per_class"] = (p, r, f, s)
    out["confusion_matrix"] = confusion_matrix(expected, predicted, labels=list(range(n)))
    return out


def _assert_report_matches(result: dict[str, Any], reference: dict[str, Any], names: list[str]) -> None:
    for key in ("accuracy", "macro_precision", "macro_recall", "macro_f1", "weighted_precision", "weighted_recall", "weighted_f1"):
        assert result[key] == pytest.approx(reference[key], abs=1e-12), key
    p, r, f, s = reference["per_class"]
    assert list(result["per_class"]) == names
    for i, name in enumerate(names):
        scores = result["per_class"][name]
        assert scores["precision"] == pytest.approx(p[i], abs=1e-12)
        assert scores["recall"] == pytest.approx(r[i], abs=1e-12)
        assert scores["f1"] == pytest.approx(f[i], abs=1e-12)
        assert scores["support"] == s[i]
    assert result["confusion_matrix"] == reference["confusion_matrix"].tolist()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_report_matches_sklearn_with_a_never_predicted_and_an_absent_class(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, size = 6, 400
    expected = rng.choice(5, size=size, p=[0.4, 0.25, 0.15, 0.1, 0.1])  # class 5 never occurs
    predicted = np.where(rng.random(size) < 0.5, expected, rng.integers(0, 5, size=size))
    predicted[predicted == 3] = 0  # class 3 occurs but is never predicted: precision 0/0 → 0.0
    names = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta"]
    metric = load_metric("classification_report")
    assert isinstance(metric, ClassificationReport)
    for chunk in np.array_split(np.arange(size), [3, 3, 150]):
        metric.add_batch(predictions=predicted[chunk].tolist(), references=expected[chunk].tolist())
    result = metric.compute(num_labels=n, label_names=names)
    reference = _sklearn(predicted, expected, n)
    _assert_report_matches(result, reference, names)
    assert result["per_class"]["delta"]["precision"] == 0.0 and result["per_class"]["delta"]["support"] > 0
    assert result["per_class"]["zeta"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert result["labels"] == names and result["examples"] == size
    # Rows are true labels, columns predictions.
    assert [sum(row) for row in result["confusion_matrix"]] == np.bincount(expected, minlength=n).tolist()
    json.dumps(result)  # plain Python values only


def test_report_without_names_and_in_one_call() -> None:
    rng = np.random.default_rng(7)
    expected, predicted = rng.integers(0, 4, size=200), rng.integers(0, 4, size=200)
    result = load_metric("classification_report").compute(predictions=predicted.tolist(), references=expected.tolist())
    _assert_report_matches(result, _sklearn(predicted, expected, 4), ["0", "1", "2", "3"])
    assert load_metric("classification_report").compute(predictions=[1, 1], references=[1, 1], num_labels=3)[
        "confusion_matrix"
    ] == [[0, 0, 0], [0, 2, 0], [0, 0, 0]]


def test_report_empty_and_invalid_inputs() -> None:
    empty = load_metric("classification_report").compute(num_labels=2, label_names=["a", "b"])
    assert math.isnan(empty["accuracy"]) and math.isnan(empty["macro_f1"]) and math.isnan(empty["weighted_f1"])
    assert empty["confusion_matrix"] == [[0, 0], [0, 0]] and empty["examples"] == 0
    with pytest.raises(ValueError, match="outside"):
        load_metric("classification_report").compute(predictions=[2], references=[0], num_labels=2)
    with pytest.raises(ValueError, match="names"):
        load_metric("classification_report").compute(predictions=[0], references=[0], num_labels=3, label_names=["a", "b"])


# --------------------------------------------------------------------------- tiny trained classifiers


def _train_rows(n: int) -> tuple[list[str], list[int]]:
    texts, labels = [], []
    with (CLASSIFY / "train.jsonl").open(encoding="utf-8") as handle:
        for line in handle:
            record = json.loads(line)
            texts.append(record["text"])
            labels.append(LABELS.index(record["label"]))
            if len(texts) == n:
                break
    return texts, labels


def _train_and_save(model: Any, tok: Any, path: Path, lr: float, steps: int, max_length: int) -> Path:
    """A few AdamW steps (batches of 32) on train.jsonl rows, so predictions vary; then save_pretrained."""
    texts, labels = _train_rows(384)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    for step in range(steps):
        start = (step * 32) % len(texts)
        batch = tok(texts[start : start + 32], truncation=True, max_length=max_length, padding=True, return_tensors="pt")
        loss = model(**batch, labels=torch.tensor(labels[start : start + 32])).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def _label_maps() -> dict[str, Any]:
    return {"id2label": dict(enumerate(LABELS)), "label2id": {name: i for i, name in enumerate(LABELS)}}


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory: pytest.TempPathFactory, tiny_tokenizer: Any) -> Path:
    from transformers import BertConfig, BertForSequenceClassification

    tok = tiny_tokenizer("wordpiece", vocab_size=400, lowercase=True)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=MAX_POSITIONS, pad_token_id=tok.pad_token_id, hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0, **_label_maps(),
    )  # fmt: skip
    path = tmp_path_factory.mktemp("bert-cls") / "model"
    return _train_and_save(BertForSequenceClassification(config), tok, path, lr=1e-2, steps=30, max_length=32)


@pytest.fixture(scope="module")
def gpt_dir(tmp_path_factory: pytest.TempPathFactory, tiny_tokenizer: Any) -> Path:
    from transformers import GPT2Config, GPT2ForSequenceClassification

    tok = tiny_tokenizer("bpe", vocab_size=400)
    torch.manual_seed(0)
    config = GPT2Config(
        n_layer=2, n_embd=32, n_head=2, vocab_size=len(tok), n_positions=MAX_POSITIONS,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, **_label_maps(),
    )  # fmt: skip
    path = tmp_path_factory.mktemp("gpt-cls") / "model"
    return _train_and_save(GPT2ForSequenceClassification(config), tok, path, lr=3e-3, steps=40, max_length=MAX_POSITIONS)


def _subset(tmp_path: Path, kind: str, n: int = N_EVAL) -> tuple[Path, list[str], list[str]]:
    """The first n rows of data/classify/test.{jsonl,csv} as a file of its own, with their texts and labels."""
    if kind == "jsonl":
        lines = (CLASSIFY / "test.jsonl").read_text(encoding="utf-8").splitlines()[:n]
        path = tmp_path / "subset.jsonl"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        records = [json.loads(line) for line in lines]
    else:
        with (CLASSIFY / "test.csv").open(encoding="utf-8", newline="") as handle:
            records = [row for _, row in zip(range(n), csv.DictReader(handle))]
        path = tmp_path / "subset.csv"
        with path.open("w", encoding="utf-8", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=["text", "label"])
            writer.writeheader()
            writer.writerows(records)
    return path, [r["text"] for r in records], [r["label"] for r in records]


def _independent(model_dir: Path, texts: list[str], labels: list[str]) -> tuple[np.ndarray, float]:
    """Predictions and mean cross-entropy with plain transformers, one unpadded example at a time."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    logits = []
    with torch.inference_mode():
        for text in texts:
            inputs = tok(text, truncation=True, max_length=MAX_POSITIONS, return_tensors="pt")
            logits.append(model(**inputs).logits[0])
    stacked = torch.stack(logits)
    targets = torch.tensor([model.config.label2id[label] for label in labels])
    return stacked.argmax(-1).numpy(), float(torch.nn.functional.cross_entropy(stacked, targets))


def evaluate(*args: str):
    return CliRunner().invoke(app, fp32_unless_set(["evaluate", "--device", "cpu", *args]))  # compared with fp32 references


@pytest.mark.parametrize(("which", "kind"), [("bert", "jsonl"), ("gpt", "csv")])
def test_cli_metrics_equal_sklearn_on_independent_predictions(
    which: str, kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    model_dir = request.getfixturevalue(f"{which}_dir")
    data, texts, labels = _subset(tmp_path, kind)
    out = tmp_path / "eval"
    result = evaluate("--model", str(model_dir), "--data", str(data), "--json", "--set", f"output_dir={out}", "--set", "batch_size=5")
    assert result.exit_code == 0, result.stderr
    metrics = json.loads(result.stdout)  # stdout is the JSON and nothing else
    assert json.loads((out / "metrics.json").read_text(encoding="utf-8")) == metrics

    predicted, loss = _independent(model_dir, texts, labels)
    assert len(set(predicted.tolist())) > 1, "the tiny model predicts a constant class; train it more"
    expected = np.array([LABELS.index(label) for label in labels])
    reference = _sklearn(predicted, expected, len(LABELS))
    assert metrics["objective"] == "classification" and metrics["examples"] == len(texts)
    assert metrics["model"] == str(model_dir) and metrics["data"] == str(data)
    assert metrics["loss"] == pytest.approx(loss, rel=1e-4)
    _assert_report_matches(
        {**metrics, "confusion_matrix": metrics["confusion_matrix"]["matrix"]}, reference, LABELS
    )
    assert metrics["confusion_matrix"]["labels"] == LABELS


def test_cli_table_output(gpt_dir: Path, tmp_path: Path) -> None:
    data, _, _ = _subset(tmp_path, "jsonl", n=20)
    result = evaluate("--model", str(gpt_dir), "--data", str(data), "--set", f"output_dir={tmp_path / 'eval'}")
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    assert "per class" in out and "confusion matrix" in out and "macro_f1" in out and "weighted_f1" in out
    for header in ("precision", "recall", "f1", "support"):
        assert header in out
    matrix_part = out[out.index("confusion matrix") :]
    for label in LABELS:
        assert label in matrix_part
        assert sum(line.strip().startswith(f"│ {label} ") or f"│ {label} " in line for line in matrix_part.splitlines()) >= 1
    assert not out.lstrip().startswith("{")
    assert (tmp_path / "eval" / "metrics.json").is_file()


def test_unknown_label_is_a_data_error_naming_label_and_line(bert_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "bad.jsonl"
    rows = [{"text": "Blessed are the meek", "label": "gospels"}, {"text": "And it came to pass", "label": "poetry"}]
    data.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    result = evaluate("--model", str(bert_dir), "--data", str(data), "--json", "--set", f"output_dir={tmp_path / 'eval'}")
    assert result.exit_code == 3, result.stderr
    assert "'poetry'" in result.stderr and f"{data}:2" in result.stderr
    assert result.stdout == ""
    assert not (tmp_path / "eval" / "metrics.json").exists()


def test_missing_label_column_is_a_data_error(bert_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "nolabel.csv"
    data.write_text("text,category\nBlessed are the meek,gospels\n", encoding="utf-8")
    result = evaluate("--model", str(bert_dir), "--data", str(data), "--set", f"output_dir={tmp_path / 'eval'}")
    assert result.exit_code == 3, result.stderr
    assert "'label'" in result.stderr and result.stdout == ""


def test_sentence_pairs_use_the_pair_column(bert_dir: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    records = [json.loads(line) for line in (CLASSIFY / "test.jsonl").read_text(encoding="utf-8").splitlines()[:24]]
    rows = [{"first": a["text"], "second": b["text"], "gold": a["label"]} for a, b in zip(records, records[1:] + records[:1])]
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    fields = ["--set", "text_field=first", "--set", "text_pair_field=second", "--set", "label_field=gold"]
    result = evaluate("--model", str(bert_dir), "--data", str(data), "--json", "--set", f"output_dir={tmp_path / 'eval'}", *fields)
    assert result.exit_code == 0, result.stderr
    metrics = json.loads(result.stdout)

    tok = AutoTokenizer.from_pretrained(bert_dir)
    model = AutoModelForSequenceClassification.from_pretrained(bert_dir).eval()
    with torch.inference_mode():
        predicted = [
            int(model(**tok(r["first"], r["second"], truncation=True, max_length=MAX_POSITIONS, return_tensors="pt")).logits.argmax())
            for r in rows
        ]
    expected = [LABELS.index(r["gold"]) for r in rows]
    assert metrics["confusion_matrix"]["matrix"] == confusion_matrix(expected, predicted, labels=list(range(len(LABELS)))).tolist()


def test_a_decoder_without_pad_id_is_scored_one_example_at_a_time(gpt_dir: Path, tmp_path: Path) -> None:
    """Without config.pad_token_id GPT-2 refuses padded batches: the scores must equal the batched ones."""
    from seqlm.config.inference import EvaluateConfig
    from seqlm.console import Console
    from seqlm.models.loading import load_for_inference
    from seqlm.runtime.device import Precision
    from seqlm.tasks.classification_report import evaluate_classifier

    data, _, _ = _subset(tmp_path, "jsonl", n=16)
    config = EvaluateConfig(model=str(gpt_dir), data=data, batch_size=4)
    cpu = torch.device("cpu")
    loaded = load_for_inference(str(gpt_dir), cpu)
    batched = evaluate_classifier(loaded, config, Precision(cpu, "fp32"), cpu, Console(quiet=True, interactive=False))
    loaded.model.config.pad_token_id = None
    alone = evaluate_classifier(loaded, config, Precision(cpu, "fp32"), cpu, Console(quiet=True, interactive=False))
    assert alone["confusion_matrix"] == batched["confusion_matrix"]
    assert alone["loss"] == pytest.approx(batched["loss"], rel=1e-5)
