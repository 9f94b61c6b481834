"""`task: causal_lm` (seqlm.tasks.completion_finetuning): a tiny causal LM built in-test learns a synthetic
word → word mapping through the CLI from prompt/completion records and from chat records (a ChatML-style template);
the loss mask covers exactly the completion tokens (checked against the template's rendering); the saved model is a
decoder-only seq2seq model to `seqlm predict`."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import invoke, seqlm, write_jsonl
from test_seq2seq import WORDS, _tokenizer, tokenizer_dir  # noqa: F401  (a fixture)

from seqlm.data.masking import IGNORE_INDEX
from seqlm.io.completion_records import CompletionRecords
from seqlm.tasks.completion_finetuning import encode
from seqlm.tasks.completion_rows import record_from

# ChatML-like, with the tokenizer's own special tokens (its end of turn is the eos, so generation stops there).
CHAT_TEMPLATE = (
    "{% for m in messages %}<|pad|>{{ m['role'] }}\n{{ m['content'] }}<|endoftext|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|pad|>assistant\n{% endif %}"
)
PARTNER = {word: WORDS[(index * 7 + 3) % len(WORDS)] for index, word in enumerate(WORDS)}  # a permutation


def _tiny_llama_dir(root: Path, tokenizer_dir: Path, chat: bool) -> Path:  # noqa: F811
    """A randomly initialised 2-layer Llama of width 32, saved with the copy task's tokenizer (and a chat template)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = _tokenizer(tokenizer_dir)
    if chat:
        tokenizer.chat_template = CHAT_TEMPLATE
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=4, max_position_embeddings=64, bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True,
    )  # fmt: skip
    torch.manual_seed(0)
    directory = root / ("chat_llama" if chat else "llama")
    LlamaForCausalLM(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def _records(chat: bool, repeat: int) -> list[dict]:
    if chat:
        return [{"messages": [{"role": "system", "content": "Map the word."}, {"role": "user", "content": word},
                              {"role": "assistant", "content": PARTNER[word]}]} for word in WORDS] * repeat  # fmt: skip
    return [{"prompt": f"{word} ->", "completion": PARTNER[word]} for word in WORDS] * repeat


def _finetune(tmp_path: Path, model: Path, chat: bool, steps: int = 300, metric: str | None = None) -> dict:
    train, validation = write_jsonl(tmp_path / "train.jsonl", _records(chat, 8)), write_jsonl(tmp_path / "validation.jsonl", _records(chat, 1))
    config = {
        "output_dir": str(tmp_path / "run"), "task": "causal_lm", "model": str(model),
        "data": {"train": str(train), "validation": str(validation), "test": str(validation)},
        "optim": {"lr": 1.0e-2, "warmup_steps": 10},
        "training": {"batch_size": 16, "max_steps": steps, "eval_every": steps, "eval_generate_examples": 30, "precision": "fp32",
                     "log_every": 50, "max_length": 64, "early_stopping": {"metric": metric}},
        "generation": {"max_new_tokens": 4},
    }  # fmt: skip
    (tmp_path / "finetune.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    result = invoke("finetune", tmp_path / "finetune.yaml")
    assert result.exit_code == 0, result.output
    # The closing line names the metric that picked best/ (first), then the task's usual ones.
    closing = next(line for line in result.stderr.splitlines() if "best_step" in line)
    assert f"best_val_{metric or 'exact_match'} " in closing and "best_val_loss " in closing, closing
    return json.loads((tmp_path / "run" / "metrics.json").read_text(encoding="utf-8"))


def test_prompt_completion_records_learn_a_mapping_and_predict_continues_them(tmp_path: Path, tokenizer_dir: Path) -> None:  # noqa: F811
    metrics = _finetune(tmp_path, _tiny_llama_dir(tmp_path, tokenizer_dir, chat=False), chat=False)
    assert metrics["task"] == "causal_lm" and metrics["best_val_exact_match"] >= 0.9, metrics
    assert metrics["test_exact_match"] == metrics["best_val_exact_match"]  # best/ reloaded, scored on the same records
    best = tmp_path / "run" / "best"
    marker = json.loads((best / "config.json").read_text(encoding="utf-8"))["seqlm"]
    assert marker == {"head": "prompted_lm", "task": "seq2seq", "prompt_template": "{source}", "chat_template": False}
    words = WORDS[:6]
    (tmp_path / "prompts.txt").write_text("".join(f"{word} ->\n" for word in words), encoding="utf-8")
    result = invoke("predict", "--device", "cpu", "--model", best, "-i", tmp_path / "prompts.txt", "--set", "generation.max_new_tokens=4")
    assert result.exit_code == 0, result.output
    outputs = [json.loads(line)["output"].strip() for line in result.stdout.splitlines()]
    assert sum(output == PARTNER[word] for output, word in zip(outputs, words)) >= 5, outputs

    # evaluate on the same records read as source/target: the prompts and targets training scored, so the same loss.
    args = ("evaluate", "--device", "cpu", "--model", best, "--data", tmp_path / "validation.jsonl", "--json", "--set", "source_field=prompt",
            "--set", "target_field=completion", "--set", f"output_dir={tmp_path / 'eval'}", "--set", "generation.max_new_tokens=4")  # fmt: skip
    scores = json.loads(seqlm(*args))
    assert scores["loss"] == pytest.approx(metrics["best_val_loss"], rel=1e-4) and scores["rougeL"] == metrics["best_val_rougeL"]

    chat = write_jsonl(tmp_path / "chat.jsonl", [{"messages": [{"role": "user", "content": "apple"}]}])
    result = invoke("predict", "--device", "cpu", "--model", best, "-i", chat)
    assert result.exit_code == 3 and "chat.jsonl:1" not in result.stderr and "chat template" in result.stderr, result.output


def test_chat_records_learn_the_mapping_with_the_loss_on_the_assistant_turns_only(tmp_path: Path, tokenizer_dir: Path) -> None:  # noqa: F811
    model = _tiny_llama_dir(tmp_path, tokenizer_dir, chat=True)
    tokenizer = _tokenizer(model)
    chat = [record_from(row, f"x:{i}") for i, row in enumerate(_records(True, 1)[:3])]
    encoded, prompts, cut = encode(CompletionRecords(tuple(chat), "x"), tokenizer, "completion", 64)
    for record, ids, labels, prompt in zip(chat, encoded.rows["input_ids"], encoded.targets["labels"], prompts):
        rendered = tokenizer.apply_chat_template(list(record.messages), tokenize=False)
        assert tokenizer.decode(ids) == rendered
        # The assistant turn as the template renders it: the conversation through it less the one up to its prompt.
        before = tokenizer.apply_chat_template(list(record.messages[:2]), tokenize=False, add_generation_prompt=True)
        turn = rendered[len(before) :]
        assert turn.startswith(PARTNER[record.messages[1]["content"]] + "<|endoftext|>")
        kept = [int(label) for label in labels if label != IGNORE_INDEX]
        assert tokenizer.decode(kept) == turn
        assert all(label != IGNORE_INDEX for label in labels[len(prompt) :])  # one contiguous completion, to the end
        assert list(ids[: len(prompt)]) == prompt and tokenizer.decode(prompt).endswith("<|pad|>assistant\n")
    everything, _, _ = encode(CompletionRecords(tuple(chat), "x"), tokenizer, "all", 64)
    assert all((labels == ids).all() for labels, ids in zip(everything.targets["labels"], everything.rows["input_ids"]))
    assert cut == 0

    metrics = _finetune(tmp_path, model, chat=True, steps=600, metric="rougeL")
    assert metrics["best_val_exact_match"] >= 0.9, metrics
    best = tmp_path / "run" / "best"
    marker = json.loads((best / "config.json").read_text(encoding="utf-8"))["seqlm"]
    assert marker["chat_template"] is True

    # evaluate reads the messages records themselves: the rows and prompts training scored, so its validation figures.
    args = ("evaluate", "--device", "cpu", "--model", best, "--data", tmp_path / "validation.jsonl", "--json",
            "--set", f"output_dir={tmp_path / 'eval'}", "--set", "generation.max_new_tokens=4")  # fmt: skip
    scores = json.loads(seqlm(*args))
    assert scores["objective"] == "causal_lm" and scores["examples"] == len(WORDS)
    assert scores["loss"] == pytest.approx(metrics["best_val_loss"], rel=1e-4)
    assert (scores["exact_match"], scores["rougeL"]) == (metrics["best_val_exact_match"], metrics["best_val_rougeL"])

    # predict: chat inputs rendered by the template, plain prompts as the user message; records in input order.
    words = WORDS[::3]
    rows = [{"id": i, "messages": [{"role": "system", "content": "Map the word."}, {"role": "user", "content": w}]} for i, w in enumerate(words)]
    inputs = write_jsonl(tmp_path / "inputs.jsonl", [*rows, {"id": len(words), "text": "apple"}])
    args = ("predict", "--device", "cpu", "--model", best, "-i", inputs, "--set", "generation.max_new_tokens=4", "--set", "batch_size=3")
    records = [json.loads(line) for line in seqlm(*args).splitlines()]
    assert [r["id"] for r in records] == list(range(len(words) + 1)) and records[0]["messages"] == rows[0]["messages"]
    assert sum(r["output"] == PARTNER[w] for r, w in zip(records, words)) >= len(words) - 1, records
    assert [json.loads(line) for line in seqlm(*args, "--stream").splitlines()] == records  # one at a time, same records
    _streams_each_record_before_the_next_input(best)


def _streams_each_record_before_the_next_input(model: Path) -> None:
    """`seqlm predict --stream` on a pipe answers each line while stdin is still open (a reader waiting for its
    record before writing the next input would hang otherwise)."""
    command = [sys.executable, "-m", "seqlm", "predict", "--quiet", "--device", "cpu", "--model", str(model), "--stream",
               "-i", "-", "--set", "input_format=jsonl", "--set", "generation.max_new_tokens=4"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "OMP_NUM_THREADS": "1"}
    with subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env) as process:
        for word in ("apple", "tiger"):
            process.stdin.write((json.dumps({"messages": [{"role": "user", "content": word}]}) + "\n").encode())
            process.stdin.flush()
            ready, _, _ = select.select([process.stdout], [], [], 120)
            assert ready, "no record while the input stays open"
            assert "output" in json.loads(process.stdout.readline())
        process.stdin.close()
        assert process.wait(timeout=60) == 0, process.stderr.read().decode()


def test_a_long_record_keeps_its_completion_and_the_ends_of_its_prompt(tokenizer_dir: Path) -> None:  # noqa: F811
    tokenizer = _tokenizer(tokenizer_dir)
    words = " ".join(WORDS * 2)
    record = record_from({"prompt": f"{words} ->", "completion": "apple bread"}, "x:1")
    (ids, labels, prompt), whole = _encoded(record, tokenizer, 16), _encoded(record, tokenizer, 1000)
    assert len(ids) == 16 and list(ids[-3:]) == list(whole[0][-3:])  # the completion + eos, whole
    assert tokenizer.decode([int(t) for t in labels if t != IGNORE_INDEX]) == tokenizer.decode(whole[0][-3:])
    assert list(prompt) == list(ids[:13]) and list(prompt[:6]) == list(whole[2][:6]) and list(prompt[-7:]) == list(whole[2][-7:])
    ids, labels, prompt = _encoded(record, tokenizer, 3)  # no room: the prompt's first token and the completion's start
    assert list(ids) == [whole[0][0], *whole[0][len(whole[2]) : len(whole[2]) + 2]] and len(prompt) == 1


def _encoded(record, tokenizer, limit: int):  # noqa: ANN001, ANN202
    encoded, prompts, _ = encode(CompletionRecords((record,), "x"), tokenizer, "completion", limit)
    return encoded.rows["input_ids"][0], encoded.targets["labels"][0], prompts[0]


@pytest.mark.parametrize("line", ['{"prompt": "a"}', '{"messages": [{"role": "user", "content": "hi"}]}'])
def test_a_bad_record_is_a_one_line_data_error(tmp_path: Path, line: str) -> None:
    (tmp_path / "train.jsonl").write_text(line + "\n", encoding="utf-8")
    config = {"output_dir": str(tmp_path / "run"), "task": "causal_lm", "model": str(tmp_path), "data": {"train": str(tmp_path / "train.jsonl")}}
    (tmp_path / "finetune.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    result = invoke("finetune", tmp_path / "finetune.yaml")
    assert result.exit_code == 3 and "train.jsonl:1:" in result.stderr.strip().splitlines()[-1], result.output
