"""`task: causal_lm` packing and plain text (seqlm.data.packed_examples): packed rows give the summed loss and
target count of their examples run one by one (Llama: attention stays inside each example; GPT-2, whose positions
are absolute embeddings: positions restart too), on the fused and the reference loss, sdpa and eager; plain text
through the CLI learns (its loss drops) and is scored by loss only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from conftest import invoke, write_jsonl
from test_causal_finetune import CHAT_TEMPLATE, PARTNER, _tiny_llama_dir
from test_seq2seq import WORDS, _tokenizer, tokenizer_dir  # noqa: F401  (a fixture)

from seqlm.config.finetune import FinetuneConfig
from seqlm.data.example_batches import ExampleBatches
from seqlm.data.packed_examples import pack_examples, text_blocks
from seqlm.io.completion_records import CompletionRecords
from seqlm.tasks.completion_finetuning import encode, load_model
from seqlm.tasks.completion_rows import record_from
from seqlm.tasks.objectives import OBJECTIVES


def _tiny_gpt2_dir(root: Path, tokenizer_dir: Path) -> Path:  # noqa: F811
    from transformers import GPT2Config, GPT2LMHeadModel

    tokenizer = _tokenizer(tokenizer_dir)
    tokenizer.chat_template = CHAT_TEMPLATE
    config = GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=4, n_positions=64, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=tokenizer.eos_token_id,
                        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)  # fmt: skip
    torch.manual_seed(0)
    GPT2LMHeadModel(config).save_pretrained(root / "gpt2")
    tokenizer.save_pretrained(root / "gpt2")
    return root / "gpt2"


def _config(model: Path, tmp_path: Path, **data: object) -> FinetuneConfig:
    from pydantic import TypeAdapter

    raw = {"output_dir": str(tmp_path / "run"), "task": "causal_lm", "model": str(model), "data": {"train": "x.jsonl", **data},
           "training": {"max_length": 48}}  # fmt: skip
    return TypeAdapter(FinetuneConfig).validate_python(raw)


def _records() -> CompletionRecords:
    rows = [{"messages": [{"role": "user", "content": " ".join(WORDS[i : i + 1 + i % 4])},
                          {"role": "assistant", "content": PARTNER[WORDS[i]]}]} for i in range(10)]  # fmt: skip
    rows += [
        {"prompt": f"{word} ->", "completion": " ".join([PARTNER[word]] * (1 + i % 3))} for i, word in enumerate(WORDS[10:16])
    ]
    return CompletionRecords(tuple(record_from(row, f"x:{i}") for i, row in enumerate(rows)), "x")


@pytest.mark.parametrize("family", ["llama", "gpt2"])
@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_packed_rows_score_as_their_examples_one_by_one(tmp_path: Path, tokenizer_dir: Path, family: str, attention: str) -> None:  # noqa: F811
    directory = (
        _tiny_llama_dir(tmp_path, tokenizer_dir, chat=True) if family == "llama" else _tiny_gpt2_dir(tmp_path, tokenizer_dir)
    )
    model, tokenizer, _ = load_model(directory, _config(directory, tmp_path, packing=True))
    model.config._attn_implementation = attention
    model.train()  # dropout 0 (both configs): train mode, and still deterministic
    objective = OBJECTIVES["seq2seq"]
    for loss_on in ("completion", "all"):
        unpacked, _, _ = encode(_records(), tokenizer, loss_on, 48)
        packed = pack_examples(unpacked, 48)
        assert len(packed) <= len(unpacked) // 2 and max(packed.lengths) <= 48
        singles = ExampleBatches({"test": unpacked}, tokenizer.pad_token_id, 1, 1, 0).evaluation("test")
        rows = ExampleBatches({"test": packed}, tokenizer.pad_token_id, 3, 1, 0).evaluation("test")  # padded rows too
        for loss in (objective.fast_loss_sums, lambda model, batch: objective.loss_sums(model(**batch.inputs), batch)):
            with torch.no_grad():
                one_by_one = sum(float(loss(model, batch)["seq2seq"]) for batch in singles)
                together = sum(float(loss(model, batch)["seq2seq"]) for batch in rows)
            assert together == pytest.approx(one_by_one, rel=1e-5), (family, attention, loss_on)
        counts = [sum(objective.target_counts(batch)["seq2seq"] for batch in batches) for batches in (singles, rows)]
        assert counts[0] == counts[1] > 0
    # The control: with a KV cache transformers ignores the positions, and examples see each other (the model's own
    # forward, as the config asks; seqlm's fast loss never builds a cache in training).
    model.config.use_cache = True
    with torch.no_grad():
        leaky = sum(float(objective.loss_sums(model(**batch.inputs), batch)["seq2seq"]) for batch in rows)
    assert leaky != pytest.approx(one_by_one, rel=1e-5)  # a random model leans little on context, but measurably


def _cycle_lines(n: int, seed: int) -> list[str]:
    """Lines of the words in a fixed cyclic order from a random start: each next word is determined by the one before."""
    import random

    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        start = rng.randrange(len(WORDS))
        lines.append(" ".join(WORDS[(start + k) % len(WORDS)] for k in range(rng.randint(6, 14))))
    return lines


@pytest.mark.slow
def test_plain_text_continues_pretraining_through_the_cli(tmp_path: Path, tokenizer_dir: Path) -> None:  # noqa: F811
    model = _tiny_llama_dir(tmp_path, tokenizer_dir, chat=False)
    (tmp_path / "train.txt").write_text("\n".join(_cycle_lines(200, 0)) + "\n", encoding="utf-8")
    (tmp_path / "validation.txt").write_text("\n".join(_cycle_lines(20, 1)) + "\n", encoding="utf-8")
    config = {
        "output_dir": str(tmp_path / "run"), "task": "causal_lm", "model": str(model),
        "data": {"train": str(tmp_path / "train.txt"), "validation": str(tmp_path / "validation.txt"), "test": str(tmp_path / "validation.txt")},
        "optim": {"lr": 1.0e-2, "warmup_steps": 5},
        "training": {"batch_size": 8, "max_steps": 60, "eval_every": 30, "precision": "fp32", "log_every": 10, "max_length": 32},
    }  # fmt: skip
    (tmp_path / "finetune.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    result = invoke("finetune", tmp_path / "finetune.yaml")
    assert result.exit_code == 0, result.output
    assert "plain text" in result.stderr and "no generation check" in result.stderr
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text(encoding="utf-8"))
    log = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    first_loss = next(record["loss"] for record in log if record.get("split", "train") == "train" and "loss" in record)
    assert first_loss > 4.0 and metrics["best_val_loss"] < 1.0, (first_loss, metrics)  # random start: ~ln(vocabulary)
    assert "best_val_exact_match" not in metrics and metrics["test_perplexity"] == pytest.approx(metrics["best_val_perplexity"])
    assert (
        yaml.safe_load((tmp_path / "run" / "config.yaml").read_text(encoding="utf-8"))["training"]["early_stopping"]["metric"]
        == "loss"
    )

    # A plain causal LM still (no seqlm marker): evaluate gives its perplexity on text, predict continues prompts.
    best = tmp_path / "run" / "best"
    assert "seqlm" not in json.loads((best / "config.json").read_text(encoding="utf-8"))
    args = (
        "evaluate",
        "--device",
        "cpu",
        "--model",
        best,
        "--data",
        tmp_path / "validation.txt",
        "--json",
        "--set",
        f"output_dir={tmp_path / 'eval'}",
    )
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["perplexity"] < 3.0
    (tmp_path / "prompts.txt").write_text("apple bread chair\nriver stone tiger\n", encoding="utf-8")
    args = ("predict", "--device", "cpu", "--model", best, "-i", tmp_path / "prompts.txt", "--set", "generation.max_new_tokens=2")
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    outputs = [json.loads(line)["generated"].split() for line in result.stdout.splitlines()]
    assert outputs[0][:1] == ["dance"] and outputs[1][:1] == ["umbra"], outputs


def test_text_blocks_keep_every_token_and_documents_end_with_eos(tokenizer_dir: Path) -> None:  # noqa: F811
    tokenizer = _tokenizer(tokenizer_dir)
    documents = _cycle_lines(5, 2)
    blocks = text_blocks(documents, tokenizer, 16, "t.txt")
    stream = [int(t) for block in blocks.rows["input_ids"] for t in block]
    expected = [
        t for document in documents for t in [*tokenizer(document, add_special_tokens=False)["input_ids"], tokenizer.eos_token_id]
    ]
    assert stream == expected and all(len(block) == 16 for block in blocks.rows["input_ids"][:-1])
    assert all((labels == ids).all() for labels, ids in zip(blocks.targets["labels"], blocks.rows["input_ids"]))


@pytest.mark.slow
def test_packed_records_learn_the_mapping_through_the_cli(tmp_path: Path, tokenizer_dir: Path) -> None:  # noqa: F811
    model = _tiny_llama_dir(tmp_path, tokenizer_dir, chat=False)
    rows = [{"prompt": f"{word} ->", "completion": PARTNER[word]} for word in WORDS]
    train, validation = write_jsonl(tmp_path / "train.jsonl", rows * 8), write_jsonl(tmp_path / "validation.jsonl", rows)
    config = {
        "output_dir": str(tmp_path / "run"), "task": "causal_lm", "model": str(model),
        "data": {"train": str(train), "validation": str(validation), "packing": True},
        "optim": {"lr": 1.0e-2, "warmup_steps": 10},
        "training": {"batch_size": 4, "max_steps": 150, "eval_every": 150, "eval_generate_examples": 30, "precision": "fp32",
                     "log_every": 50, "max_length": 64},
        "generation": {"max_new_tokens": 4},
    }  # fmt: skip
    (tmp_path / "finetune.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    result = invoke("finetune", tmp_path / "finetune.yaml")
    assert result.exit_code == 0, result.output
    assert "train: 240 examples packed into 24 rows of up to 64 tokens" in result.stderr, result.stderr
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["best_val_exact_match"] >= 0.9, metrics
    best = tmp_path / "run" / "best"
    assert json.loads((best / "config.json").read_text(encoding="utf-8"))["use_cache"] is False
    # predict generates with its cache all the same, one record per prompt in input order
    (tmp_path / "prompts.txt").write_text("".join(f"{word} ->\n" for word in WORDS[:6]), encoding="utf-8")
    result = invoke(
        "predict", "--device", "cpu", "--model", best, "-i", tmp_path / "prompts.txt", "--set", "generation.max_new_tokens=4"
    )
    assert result.exit_code == 0, result.output
    outputs = [json.loads(line)["output"].strip() for line in result.stdout.splitlines()]
    assert sum(output == PARTNER[word] for output, word in zip(outputs, WORDS[:6])) >= 5, outputs
    # evaluate on the prompt/completion records, unpacked: the loss validation had on them packed
    args = ("evaluate", "--device", "cpu", "--model", best, "--data", validation, "--json", "--set", f"output_dir={tmp_path / 'eval'}",
            "--set", "generation.max_new_tokens=4")  # fmt: skip
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    scores = json.loads(result.stdout)
    assert (
        scores["loss"] == pytest.approx(metrics["best_val_loss"], rel=1e-4)
        and scores["exact_match"] == metrics["best_val_exact_match"]
    )
