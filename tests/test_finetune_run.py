"""`seqlm finetune` (task: classification) end to end through the CLI, on tiny pretrained models.

The tiny BERT and GPT-2 are pretrained once per session by the real `seqlm tokenize` and
`seqlm pretrain` with the shipped tiny configs (fewer steps), then fine-tuned with the shipped
configs/tiny/*_finetune.yaml, only paths and step counts overridden. The batches, the objective
and early stopping are also checked on their own (fast tests).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import transformers
from conftest import REPO, assert_data_error, invoke, jsonl_rows, seqlm, sets, write_jsonl
from safetensors.torch import load_file

from seqlm.commands.finetune import BestTracker
from seqlm.data.batch import Batch
from seqlm.data.example_batches import ExampleBatches
from seqlm.io.labelled_data import LabelledExamples
from seqlm.tasks.classification import build_batches
from seqlm.tasks.objectives import OBJECTIVES

CLASSIFY = REPO / "data" / "classify"
LABELS = (CLASSIFY / "labels.txt").read_text(encoding="utf-8").split()
MAX_LENGTH = 64  # the tiny models' positions (configs/tiny/*_finetune.yaml)
@pytest.fixture(scope="session")
def classify_data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The shipped train set; test.jsonl split into a validation file (600) and a test file (600),
    so best/ can be re-scored on the exact validation examples; and a small subset for quick runs."""
    root = tmp_path_factory.mktemp("classify")
    test_rows = jsonl_rows(CLASSIFY / "test.jsonl")
    train_rows = jsonl_rows(CLASSIFY / "train.jsonl")
    return {
        "train": CLASSIFY / "train.jsonl",
        "validation": write_jsonl(root / "validation.jsonl", test_rows[:600]),
        "test": write_jsonl(root / "test.jsonl", test_rows[600:]),
        "small_train": write_jsonl(root / "small_train.jsonl", train_rows[:240]),
        "small_validation": write_jsonl(root / "small_validation.jsonl", test_rows[:120]),
    }


def finetune(family: str, model: Path, output_dir: Path, data: dict[str, Path], **overrides: object) -> dict:
    settings = {
        "model": model,
        "output_dir": output_dir,
        "data__train": data["train"],
        "data__validation": data["validation"],
        "data__test": data["test"],
        **overrides,
    }
    seqlm("finetune", f"configs/tiny/{family}_finetune.yaml", *sets(**settings), "--device", "cpu", "-q")
    return json.loads((output_dir / "metrics.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def bert_classifier(tiny_bert: Path, classify_data: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("bert-classify") / "run"
    finetune("bert", tiny_bert, run, classify_data, training__max_steps=500, training__eval_every=100)
    return run


@pytest.fixture(scope="session")
def gpt_classifier(tiny_gpt: Path, classify_data: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("gpt-classify") / "run"
    finetune("gpt", tiny_gpt, run, classify_data, training__max_steps=400, training__eval_every=50)
    return run


def validation_records(run: Path) -> list[dict]:
    return [record for record in jsonl_rows(run / "metrics.jsonl") if record.get("split") == "validation"]


# --------------------------------------------------------------------------- end to end


@pytest.mark.slow
@pytest.mark.parametrize("family", ["bert", "gpt"])
def test_run_dir_layout_and_string_labels(family: str, request: pytest.FixtureRequest) -> None:
    run: Path = request.getfixturevalue(f"{family}_classifier")
    for name in ("config.yaml", "metrics.jsonl", "metrics.json"):
        assert (run / name).is_file(), name
    for directory in ("model", "best"):
        files = {path.name for path in (run / directory).iterdir()}
        assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= files, (directory, files)
        config = json.loads((run / directory / "config.json").read_text(encoding="utf-8"))
        assert [config["id2label"][str(i)] for i in range(len(LABELS))] == LABELS  # labels.txt order, as configured
        assert config["label2id"] == {name: i for i, name in enumerate(LABELS)}
        assert config["architectures"][0].endswith("ForSequenceClassification")
    assert not [path for path in run.iterdir() if path.name.startswith(".")], "temporary dirs left behind"


@pytest.mark.slow
@pytest.mark.parametrize("family", ["bert", "gpt"])
def test_it_learns(family: str, request: pytest.FixtureRequest) -> None:
    """Six balanced classes: the majority-class rate is 1/6 = 0.167. Observed on a 2-core CPU
    (fixed seeds, fp32 on CPU, no data-dependent nondeterminism, so the figures repeat run to
    run): BERT (500 steps, from a 100-step pretrained model) best val accuracy 0.363 at step 400,
    test 0.358; GPT-2 (400 steps) best val 0.435 at step 350, test 0.452. The bar, 0.25, is
    5 standard deviations above chance on 600 examples (sd 0.015) and ~0.1 below what was
    observed, room for another CPU's rounding to change a few predictions."""
    metrics = json.loads((request.getfixturevalue(f"{family}_classifier") / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["best_val_accuracy"] > 0.25, metrics
    assert metrics["test_accuracy"] > 0.25, metrics
    assert metrics["test_macro_f1"] > 0.2, metrics
    assert metrics["val_loss"] < np.log(6), metrics  # below the loss of a uniform guess
    assert metrics["test_examples"] == 600 and metrics["val_examples"] == 600


@pytest.mark.slow
@pytest.mark.parametrize("family", ["bert", "gpt"])
def test_best_dir_holds_the_best_validation_result(family: str, request: pytest.FixtureRequest, classify_data) -> None:
    run: Path = request.getfixturevalue(f"{family}_classifier")
    metrics = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    records = validation_records(run)
    best = max(records, key=lambda record: record["val_accuracy"])  # max keeps the first of equals, as finetune does
    assert metrics["best_step"] == best["step"] and metrics["best_val_accuracy"] == best["val_accuracy"]
    assert records[-1]["step"] == metrics["steps"] and metrics["val_accuracy"] == records[-1]["val_accuracy"]

    # Re-score best/ with plain transformers, one example at a time (no padding involved).
    model = transformers.AutoModelForSequenceClassification.from_pretrained(run / "best").eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(run / "best")
    rows = jsonl_rows(classify_data["validation"])
    correct = 0
    with torch.inference_mode():
        for row in rows:
            encoded = tokenizer(row["text"], truncation=True, max_length=MAX_LENGTH, return_tensors="pt")
            predicted = model.config.id2label[int(model(**encoded).logits.argmax(-1))]
            correct += predicted == row["label"]
    # Batched (padded) and unpadded forward passes differ only in float rounding: allow one near-tie flip.
    assert abs(correct / len(rows) - best["val_accuracy"]) <= 1 / len(rows) + 1e-9, (correct, best)
    if metrics["best_step"] < metrics["steps"]:  # (observed for both) best/ is not simply the final model
        best_weights, final_weights = (
            load_file(run / "best" / "model.safetensors"),
            load_file(run / "model" / "model.safetensors"),
        )
        assert any(not torch.equal(best_weights[key], final_weights[key]) for key in final_weights)


@pytest.mark.slow
@pytest.mark.parametrize("family", ["bert", "gpt"])
def test_pipeline_returns_string_labels(family: str, request: pytest.FixtureRequest) -> None:
    run: Path = request.getfixturevalue(f"{family}_classifier")
    texts = ["Jesus answered them, “Most certainly I tell you.”", "Praise Yahweh, all you nations!", "Grace to you and peace."]
    for directory in ("best", "model"):
        classify = transformers.pipeline("text-classification", model=str(run / directory), device="cpu")
        results = classify(texts)
        assert len(results) == len(texts)
        assert all(result["label"] in LABELS and 0.0 < result["score"] <= 1.0 for result in results), results


@pytest.mark.slow
@pytest.mark.parametrize("family", ["bert", "gpt"])
def test_finetuned_model_through_evaluate_and_predict(
    family: str, request: pytest.FixtureRequest, classify_data: dict[str, Path], tmp_path: Path
) -> None:
    """pretrain → finetune → evaluate → predict: the three commands agree with each other,
    with scikit-learn on the same predictions, and with transformers' pipeline."""
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

    best = request.getfixturevalue(f"{family}_classifier") / "best"
    test_file = classify_data["test"]
    reported = json.loads(seqlm("evaluate", "--model", best, "--data", test_file, "--json", *sets(output_dir=tmp_path / "eval")))
    output = tmp_path / "predictions.jsonl"
    seqlm("predict", "--model", best, "--input", test_file, "--output", output, "--top-k", len(LABELS), *sets(batch_size=16))

    gold = [row["label"] for row in jsonl_rows(test_file)]
    records = jsonl_rows(output)
    assert [r["input"] for r in records] == [row["text"] for row in jsonl_rows(test_file)], "input order"
    predicted = [r["label"] for r in records]
    assert set(predicted) <= set(LABELS)
    assert all(abs(sum(s["score"] for s in r["scores"]) - 1.0) < 1e-5 for r in records)
    assert reported["examples"] == len(gold)
    assert reported["accuracy"] == pytest.approx(accuracy_score(gold, predicted))
    assert reported["macro_f1"] == pytest.approx(f1_score(gold, predicted, average="macro", labels=LABELS, zero_division=0))
    assert reported["confusion_matrix"]["matrix"] == confusion_matrix(gold, predicted, labels=LABELS).tolist()
    classify = transformers.pipeline("text-classification", model=str(best), device="cpu")
    texts = [r["input"] for r in records[:8]]
    assert [out["label"] for out in classify(texts, truncation=True)] == predicted[:8]


@pytest.mark.slow
def test_early_stopping_on_a_plateau(tiny_bert: Path, classify_data: dict[str, Path], tmp_path: Path) -> None:
    """lr 1e-9 on the head only: the predictions cannot change, so the second validation does not
    improve on the first and patience 1 ends training there (step 4 of 50)."""
    run = tmp_path / "run"
    metrics = finetune(
        "bert",
        tiny_bert,
        run,
        {**classify_data, "train": classify_data["small_train"], "validation": classify_data["small_validation"]},
        data__test="null",
        optim__lr=1e-9,
        optim__warmup_steps=0,
        optim__schedule="constant",
        training__freeze="body",
        training__max_steps=50,
        training__eval_every=2,
        training__early_stopping__patience=1,
    )
    assert metrics["steps"] == 4 and metrics["stopped_early"] is True, metrics
    assert metrics["best_step"] == 2
    assert [record["step"] for record in validation_records(run)] == [2, 4]
    assert not any(key.startswith("test_") for key in metrics)
    assert (run / "best" / "model.safetensors").is_file() and (run / "model" / "model.safetensors").is_file()


@pytest.mark.slow
def test_freeze_body_with_balanced_class_weights(tiny_gpt: Path, classify_data: dict[str, Path], tmp_path: Path) -> None:
    """freeze: body trains the new head only: every pretrained weight is unchanged in model/; the
    head learns (the validation loss falls) under inverse-frequency class weights on skewed data."""
    rows = jsonl_rows(classify_data["small_train"])
    skewed = [row for row in rows if row["label"] == "law"] * 4 + rows  # 'law' five times as frequent
    train = write_jsonl(tmp_path / "skewed.jsonl", skewed)
    run = tmp_path / "run"
    metrics = finetune(
        "gpt",
        tiny_gpt,
        run,
        {**classify_data, "train": train, "validation": classify_data["small_validation"]},
        data__test="null",
        optim__lr=1e-2,
        optim__warmup_steps=0,
        training__freeze="body",
        training__class_weights="balanced",
        training__max_steps=40,
        training__eval_every=10,
        training__early_stopping__patience="null",
    )
    assert metrics["steps"] == 40
    pretrained = load_file(tiny_gpt / "model.safetensors")
    tuned = load_file(run / "model" / "model.safetensors")
    body = [key for key in tuned if key.startswith("transformer.")]
    assert body and all(key in pretrained for key in body)
    for key in body:
        assert torch.equal(tuned[key], pretrained[key]), key
    assert set(tuned) - set(body) == {"score.weight"}  # GPT-2's head: one bias-free linear layer
    losses = [record["val_loss"] for record in validation_records(run)]
    assert len(losses) == 4 and losses[-1] < losses[0] - 0.01, losses


@pytest.mark.slow
def test_max_length_beyond_the_model_positions_is_a_config_error(tiny_bert: Path, tmp_path: Path) -> None:
    result = invoke(
        "finetune",
        "configs/tiny/bert_finetune.yaml",
        *sets(model=tiny_bert, output_dir=tmp_path / "run", training__max_length=128),
    )
    assert result.exit_code == 2, result.output
    assert "training.max_length (128) exceeds the model's 64 positions" in result.stderr
    assert not (tmp_path / "run").exists()


# --------------------------------------------------------------------------- data errors through the CLI (exit 3, FILE:LINE)
# The data is read before the model is loaded, so these need no model.


def run_with_train(tmp_path: Path, train: Path, **overrides: object):
    settings = {"model": tmp_path / "no-model", "output_dir": tmp_path / "run", "data__train": train, "data__test": "null"}
    return invoke("finetune", "configs/tiny/bert_finetune.yaml", *sets(**{**settings, **overrides}))


def test_cli_missing_label_column(tmp_path: Path) -> None:
    train = tmp_path / "train.csv"
    train.write_text("text,section\nIn the beginning,law\n", encoding="utf-8")
    assert_data_error(run_with_train(tmp_path, train), f"{train}:1: no column 'label'", "'text', 'section'", "data.label_field")


def test_cli_unseen_label_in_validation(tmp_path: Path) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", jsonl_rows(CLASSIFY / "train.jsonl")[:60])
    validation = write_jsonl(
        tmp_path / "val.jsonl",
        [{"text": "a", "label": "law"}, {"text": "b", "label": "wisdom"}, {"text": "c", "label": "apocrypha"}],
    )
    result = run_with_train(tmp_path, train, data__validation=validation, data__labels="null")
    assert_data_error(result, f"{validation}:3: label 'apocrypha' was not seen in training", "known: gospels, history, law")


def test_cli_empty_train_file(tmp_path: Path) -> None:
    train = tmp_path / "train.jsonl"
    train.write_bytes(b"")
    assert_data_error(run_with_train(tmp_path, train), f"{train}: no examples")


def test_cli_non_utf8_line(tmp_path: Path) -> None:
    train = tmp_path / "train.jsonl"
    train.write_bytes(b'{"text": "fine", "label": "law"}\n{"text": "Ca\xefn", "label": "law"}\n')
    assert_data_error(run_with_train(tmp_path, train), f"{train}:2: not UTF-8")


def test_cli_missing_model_dir(tmp_path: Path) -> None:
    result = run_with_train(tmp_path, CLASSIFY / "train.jsonl", data__test=CLASSIFY / "test.jsonl")
    assert_data_error(result, f"{tmp_path / 'no-model'}: model directory not found")


def test_cli_unknown_early_stopping_metric(tmp_path: Path) -> None:
    result = run_with_train(tmp_path, CLASSIFY / "train.jsonl", training__early_stopping__metric="f1")
    assert result.exit_code == 2, result.output
    assert "'f1' is not a validation metric; use one of loss, accuracy, macro_f1" in result.stderr


# --------------------------------------------------------------------------- batches, objective, early stopping (fast)


@pytest.fixture
def batches_of(tiny_tokenizer):
    tokenizer = tiny_tokenizer("wordpiece", lowercase=True)
    rows = jsonl_rows(CLASSIFY / "train.jsonl")[:250]
    train = LabelledExamples([r["text"] for r in rows], None, [r["label"] for r in rows], list(range(1, 251)), "train.jsonl")

    def make(**options) -> ExampleBatches:
        settings = {"max_length": 48, "batch_size": 16, "grad_accum": 1, "seed": 3, "group_by_length": True, **options}
        return build_batches({"train": train, "validation": train.subset(range(40))}, LABELS, tokenizer, **settings)

    return make


def test_train_batches_are_a_pure_function_of_seed_step_and_micro(batches_of) -> None:
    first, second = batches_of(), batches_of()
    for step in (0, 7, 15, 16, 40):  # 16 batches per epoch: steps 16 and 40 are in later epochs
        a, b = first.train(step, 0), second.train(step, 0)
        assert torch.equal(a.inputs["input_ids"], b.inputs["input_ids"]) and torch.equal(a.targets["labels"], b.targets["labels"])
    assert not torch.equal(first.train(0, 0).targets["labels"], batches_of(seed=4).train(0, 0).targets["labels"])
    # grad_accum k: micro-batch m of step s is batch s*k + m of the same sequence.
    accumulated = batches_of(grad_accum=2)
    assert torch.equal(accumulated.train(3, 1).inputs["input_ids"], first.train(7, 0).inputs["input_ids"])


@pytest.mark.parametrize("group_by_length", [True, False])
def test_an_epoch_sees_every_example_once_with_padding_to_the_longest(batches_of, group_by_length: bool) -> None:
    batches = batches_of(group_by_length=group_by_length)
    assert batches.batches_per_epoch == 16  # ceil(250 / 16)
    for epoch in (0, 1):
        order = np.concatenate(batches.epoch_order(epoch))
        assert sorted(order.tolist()) == list(range(250))
    assert not np.array_equal(np.concatenate(batches.epoch_order(0)), np.concatenate(batches.epoch_order(1)))
    lengths = batches.splits["train"].lengths
    for step in range(16):
        batch = batches.train(step, 0)
        mask = batch.inputs["attention_mask"]
        assert mask.shape[1] == mask.sum(1).max() <= 48  # padded to the longest example, truncated to max_length
        assert set(batch.inputs) == {"input_ids", "attention_mask", "token_type_ids"}
    if group_by_length:  # sorted mega-batches: far less padding than random batches
        padded = sum(batches.train(s, 0).inputs["attention_mask"].numel() for s in range(16))
        assert padded < 1.1 * lengths.sum()


def test_pad_to_multiple_of_rounds_widths_up_to_the_longest_row(batches_of) -> None:
    plain, rounded = batches_of(max_length=44), batches_of(max_length=44, pad_to_multiple_of=16)
    longest = int(rounded.splits["train"].lengths.max())
    assert longest % 16  # the cap is exercised: rounding the longest row's batch up would pass it
    for step in range(16):
        a, b = plain.train(step, 0), rounded.train(step, 0)
        width = a.inputs["input_ids"].shape[1]
        assert b.inputs["input_ids"].shape[1] == min(-(-width // 16) * 16, longest)
        assert torch.equal(b.inputs["input_ids"][:, :width], a.inputs["input_ids"])  # the same rows, more padding
        assert not b.inputs["attention_mask"][:, width:].any() and torch.equal(a.targets["labels"], b.targets["labels"])
    widths = {rounded.train(step, 0).inputs["input_ids"].shape[1] for step in range(16)}
    assert widths <= {16, 32, longest}


@pytest.mark.parametrize(("precision", "expected"), [("fp32", 1), ("bf16", 16), ("fp16", 16)])
def test_pad_to_multiple_of_auto_rounds_under_autocast_only(precision: str, expected: int) -> None:
    from pydantic import TypeAdapter

    from seqlm.commands.finetune import padding_resolved
    from seqlm.config.finetune import FinetuneConfig
    from seqlm.runtime.device import Precision

    raw = {"task": "classification", "model": "m", "output_dir": "out", "data": {"train": "t.jsonl"}}
    config = TypeAdapter(FinetuneConfig).validate_python(raw)
    assert config.training.pad_to_multiple_of == "auto"
    resolved = padding_resolved(config, Precision(torch.device("cpu"), precision))
    assert resolved.training.pad_to_multiple_of == expected and config.training.pad_to_multiple_of == "auto"
    pinned = config.model_copy(update={"training": config.training.model_copy(update={"pad_to_multiple_of": 8})})
    assert padding_resolved(pinned, Precision(torch.device("cpu"), "bf16")).training.pad_to_multiple_of == 8


def test_evaluation_batches_cover_the_split_in_length_order(batches_of) -> None:
    batches = batches_of().evaluation("validation")
    index = torch.cat([batch.targets["index"] for batch in batches])
    assert sorted(index.tolist()) == list(range(40))
    widths = [batch.inputs["input_ids"].shape[1] for batch in batches]
    assert widths == sorted(widths, reverse=True)


def test_balanced_class_weights_match_torch_weighted_cross_entropy() -> None:
    objective = OBJECTIVES["classification"]
    labels = torch.tensor([0, 0, 0, 1, 2, 2])
    weights = torch.tensor([6 / 9, 6 / 3, 6 / 6])  # n / (k * count) for counts 3, 1, 2
    logits = torch.randn(6, 3, generator=torch.Generator().manual_seed(0))
    batch = Batch({}, {"labels": labels, "weights": weights[labels]})
    outputs = transformers.modeling_outputs.SequenceClassifierOutput(logits=logits)
    count = objective.target_counts(batch)["classification"]
    loss = objective.loss_sums(outputs, batch)["classification"] / count
    assert torch.allclose(loss, F.cross_entropy(logits, labels, weight=weights))
    assert count == pytest.approx(6.0)  # balanced weights average 1 over the training set
    plain = Batch({}, {"labels": labels})
    assert objective.target_counts(plain) == {"classification": 6}
    assert torch.allclose(objective.loss_sums(outputs, plain)["classification"] / 6, F.cross_entropy(logits, labels))


def test_best_tracker_patience_and_modes() -> None:
    tracker = BestTracker("accuracy", "max", patience=2)
    assert tracker.update(10, {"accuracy": 0.3}) and tracker.step == 10
    assert not tracker.update(20, {"accuracy": 0.3})  # a tie is not an improvement
    assert not tracker.exhausted
    assert not tracker.update(30, {"accuracy": float("nan")})
    assert tracker.exhausted and tracker.step == 10
    loss = BestTracker("loss", "min", patience=None)
    assert loss.update(1, {"loss": 2.0}) and loss.update(2, {"loss": 1.5}) and not loss.update(3, {"loss": 1.7})
    assert loss.step == 2 and not loss.exhausted
