"""The seq2seq task: its objective, truncation, config rules, and a copy task end to end through the CLI."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import invoke, seqlm
from pydantic import TypeAdapter, ValidationError

from seqlm.config.finetune import EncoderDecoderConfig, FinetuneConfig, Seq2SeqFinetuneConfig
from seqlm.config.inference import PredictConfig
from seqlm.data.batch import Batch
from seqlm.data.example_batches import ExampleBatches
from seqlm.io.seq2seq_records import Seq2SeqExample, Seq2SeqRecords
from seqlm.models.seq2seq_models import build_encoder_decoder
from seqlm.tasks.objectives import OBJECTIVES
from seqlm.tasks.seq2seq_generation import encode_split

WORDS = (
    "apple bread chair dance eagle flute grape house igloo jelly knife lemon mango night ocean "
    "piano queen river stone tiger umbra violet water xenon yacht zebra amber blaze cloud drift"
).split()


def _copy_rows(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 8))) for _ in range(n)]


def _write_jsonl(path: Path, rows: list[str]) -> Path:
    path.write_text("".join(json.dumps({"source": row, "target": row}) + "\n" for row in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A byte-level BPE (pad and eos) from `seqlm tokenize`, large enough that each copy word is one token."""
    root = tmp_path_factory.mktemp("copy_tokenizer")
    (root / "corpus.txt").write_text("\n".join(_copy_rows(300)) + "\n", encoding="utf-8")
    config = {"output_dir": str(root / "tok"), "corpus": {"train": str(root / "corpus.txt")},
              "tokenizer": {"kind": "bpe", "vocab_size": 400, "min_frequency": 1}}  # fmt: skip
    (root / "tokenize.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    seqlm("tokenize", root / "tokenize.yaml")
    return root / "tok"


def _tokenizer(directory: Path):  # noqa: ANN202
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(directory)


# --------------------------------------------------------------------------- objective


@pytest.mark.parametrize("family", ["t5", "bart"])
def test_summed_loss_is_hf_mean_loss_times_target_tokens(tokenizer_dir: Path, family: str) -> None:
    tokenizer = _tokenizer(tokenizer_dir)
    torch.manual_seed(0)
    model = build_encoder_decoder(EncoderDecoderConfig(family=family, tokenizer=str(tokenizer_dir), dropout=0.0), tokenizer).eval()
    rows = _copy_rows(5, seed=3)
    examples = Seq2SeqRecords(tuple(Seq2SeqExample(r, " ".join(reversed(r.split())), (r,), f"x:{i}") for i, r in enumerate(rows)), "x")
    encoded, _, _ = encode_split(tokenizer, examples, 32, 32)
    batch = ExampleBatches({"validation": encoded}, tokenizer.pad_token_id, 5, 1, 0).evaluation("validation")[0]
    objective = OBJECTIVES["seq2seq"]
    with torch.no_grad():
        outputs = model(**batch.inputs)
        sums = objective.loss_sums(outputs, batch)
    count = objective.target_counts(batch)["seq2seq"]
    assert count == sum(len(row) for row in encoded.rows["labels"])  # every target token, eos included, no padding
    torch.testing.assert_close(sums["seq2seq"], outputs.loss * count)
    smoothed = Batch(batch.inputs, {**batch.targets, "label_smoothing": torch.full((5,), 0.1)})
    with torch.no_grad():
        smooth_sum = objective.loss_sums(outputs, smoothed)["seq2seq"]
    reference = torch.nn.CrossEntropyLoss(ignore_index=-100, label_smoothing=0.1)(outputs.logits.flatten(0, 1), batch.inputs["labels"].flatten())
    torch.testing.assert_close(smooth_sum, reference * count)
    assert objective.score(outputs, smoothed)["nll"] == pytest.approx(float(sums["seq2seq"]), rel=1e-5)  # validation: no smoothing
    with torch.no_grad():  # training's path: decoder inputs shifted here, HF's own loss never computed
        fast = objective.fast_loss_sums(model, smoothed)["seq2seq"]
    torch.testing.assert_close(fast, smooth_sum)


def test_sources_and_targets_are_cut_counted_and_targets_keep_their_eos(tokenizer_dir: Path) -> None:
    tokenizer = _tokenizer(tokenizer_dir)
    short, long = "apple bread", "apple bread chair dance eagle flute grape house"
    examples = Seq2SeqRecords(
        (Seq2SeqExample(long, short, (short,), "x:1"), Seq2SeqExample(short, long, (long,), "x:2"), Seq2SeqExample(short, short, (short,), "x:3")),
        "x",
    )
    encoded, cut_sources, cut_targets = encode_split(tokenizer, examples, 4, 5)
    assert (cut_sources, cut_targets) == (1, 1)
    assert [len(row) for row in encoded.rows["input_ids"]] == [4, 2, 2]
    assert [len(row) for row in encoded.rows["labels"]] == [3, 5, 3]
    assert all(int(row[-1]) == tokenizer.eos_token_id for row in encoded.rows["labels"])
    assert encoded.truncated == 2


def test_no_sources_to_generate_from_encode_to_nothing(tokenizer_dir: Path) -> None:
    """eval_generate_examples: 0 used to end every run at its first validation (IndexError in the tokenizer)."""
    from seqlm.tasks.seq2seq_generation import encode_sources

    assert encode_sources(_tokenizer(tokenizer_dir), [], 8) == ([], 0)


# --------------------------------------------------------------------------- config


def _config(**changes: object) -> dict:
    config: dict = {"output_dir": "run", "task": "seq2seq", "model": {"family": "t5", "tokenizer": "tok"}, "data": {"train": "t.jsonl"}}
    for key, value in changes.items():
        section, _, name = key.partition("__")
        config[section] = {**config.get(section, {}), name: value} if name else value
    return config


def test_seq2seq_config_defaults_and_choices() -> None:
    adapter = TypeAdapter(FinetuneConfig)
    config = adapter.validate_python(_config())
    assert isinstance(config, Seq2SeqFinetuneConfig) and isinstance(config.model, EncoderDecoderConfig)
    assert config.training.early_stopping.metric is None  # the task's default: bleu
    assert config.generation.num_beams == 1
    assert adapter.validate_python(_config(model="runs/t5/model")).model == "runs/t5/model"
    loss_only = adapter.validate_python(_config(training={"eval_generate_examples": 0}))
    assert loss_only.training.early_stopping.metric == "loss"
    bad = [
        _config(training={"eval_generate_examples": 0, "early_stopping": {"metric": "bleu"}}),
        _config(training={"early_stopping": {"metric": "accuracy"}}),
        _config(model={"family": "gpt2", "tokenizer": "tok"}),
        _config(model={"family": "t5", "tokenizer": "tok", "d_model": 65, "n_heads": 4}),
        _config(data={"train": "t.jsonl", "label_field": "x"}),
        _config(generation={"num_beams": 2, "num_return_sequences": 3}),
        _config(training={"max_source_length": 1}),
    ]
    for config in bad:
        with pytest.raises(ValidationError):
            adapter.validate_python(config)
    assert PredictConfig(model="m", generation={"num_beams": 4, "num_return_sequences": 4}).generation.num_beams == 4


def test_a_causal_model_refuses_beam_settings(tmp_path: Path) -> None:
    from seqlm.errors import ConfigError
    from seqlm.tasks.objectives import check_language_model_options

    with pytest.raises(ConfigError, match="num_beams"):
        check_language_model_options("clm", PredictConfig(model="m", generation={"num_beams": 2}), None)


# --------------------------------------------------------------------------- end to end


def test_copy_task_end_to_end_finetune_evaluate_predict(tmp_path: Path, tokenizer_dir: Path) -> None:
    """A tiny T5 from scratch learns to copy word sequences; evaluate scores it, predict keeps input order."""
    # Enough distinct rows that 1,200 steps of 32 see most once: with few, the model memorises them instead.
    rows = _copy_rows(30_040, seed=1)
    train, validation = _write_jsonl(tmp_path / "train.jsonl", rows[:30_000]), _write_jsonl(tmp_path / "validation.jsonl", rows[30_000:])
    config = {
        "output_dir": str(tmp_path / "run"), "task": "seq2seq",
        "model": {"family": "t5", "tokenizer": str(tokenizer_dir), "d_model": 64, "n_heads": 4, "d_ff": 128, "dropout": 0.0},
        "data": {"train": str(train), "validation": str(validation)},
        "optim": {"lr": 3.0e-3, "warmup_steps": 20},
        "training": {"batch_size": 32, "max_steps": 1200, "eval_every": 600, "eval_generate_examples": 40, "precision": "fp32", "log_every": 100},
        "generation": {"max_new_tokens": 20},
    }  # fmt: skip
    (tmp_path / "finetune.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    start = time.monotonic()
    result = invoke("finetune", tmp_path / "finetune.yaml")
    seconds = time.monotonic() - start
    assert result.exit_code == 0, result.output
    # Built from scratch: one line saying so, not a warning listing weights.
    assert "every weight newly initialised (a model built from scratch)" in result.stderr and "warning" not in result.stderr
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text(encoding="utf-8"))
    print(f"copy task: best validation BLEU {metrics['best_val_bleu']:.1f} in {seconds:.0f} s")
    assert metrics["task"] == "seq2seq" and metrics["best_val_bleu"] >= 90

    evaluate = {"model": str(tmp_path / "run" / "best"), "data": str(validation), "output_dir": str(tmp_path / "eval"),
                "generation": {"max_new_tokens": 20, "num_beams": 2}}  # fmt: skip
    (tmp_path / "evaluate.yaml").write_text(yaml.safe_dump(evaluate), encoding="utf-8")
    seqlm("evaluate", tmp_path / "evaluate.yaml")
    scores = json.loads((tmp_path / "eval" / "metrics.json").read_text(encoding="utf-8"))
    assert scores["bleu"] >= 90 and scores["examples"] == 40 and scores["bleu_signature"].startswith("nrefs:1")
    assert {"chrf", "rouge1", "rouge2", "rougeL", "rougeLsum", "gen_len", "loss"} <= scores.keys()

    inputs = rows[30_000:30_010]
    (tmp_path / "inputs.txt").write_text("\n".join(inputs) + "\n", encoding="utf-8")
    result = invoke("predict", "--device", "cpu", "--model", tmp_path / "run" / "best", "-i", tmp_path / "inputs.txt",
                    "--set", "generation.max_new_tokens=20")  # fmt: skip
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["input"] for r in records] == inputs  # input order, though batches run longest first
    assert sum(r["output"] == r["input"] for r in records) >= 8
