"""`seqlm predict` end to end on tiny, randomly initialised models built in a temp dir."""

from __future__ import annotations

import csv
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import fp32_unless_set
from typer.testing import CliRunner

from seqlm.cli import app

REPO = Path(__file__).resolve().parents[1]
MAX_POSITIONS = 64


@pytest.fixture(scope="session")
def clm_dir(tmp_path_factory: pytest.TempPathFactory, tiny_tokenizer: Any) -> Path:
    from transformers import GPT2Config, GPT2LMHeadModel

    tok = tiny_tokenizer("bpe", vocab_size=400)
    torch.manual_seed(0)
    config = GPT2Config(
        n_layer=2, n_embd=32, n_head=2, vocab_size=len(tok), n_positions=MAX_POSITIONS,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )
    path = tmp_path_factory.mktemp("clm")
    GPT2LMHeadModel(config).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def _save_bert(kind: str, root: Path, tok: Any) -> Path:
    from transformers import BertConfig, BertForMaskedLM, BertForPreTraining

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=MAX_POSITIONS, pad_token_id=tok.pad_token_id,
    )
    model = BertForPreTraining(config) if kind == "nsp" else BertForMaskedLM(config)
    path = root / kind
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def mlm_dirs(tmp_path_factory: pytest.TempPathFactory, tiny_tokenizer: Any) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("mlm")
    tok = tiny_tokenizer("wordpiece", vocab_size=400, lowercase=True)
    return {kind: _save_bert(kind, root, tok) for kind in ("mlm", "nsp")}


def predict(*args: str, stdin: bytes | None = None):
    return CliRunner().invoke(app, fp32_unless_set(["predict", "--device", "cpu", *args]), input=stdin)  # compared with fp32 references


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


PROMPTS = [
    "It is a truth universally acknowledged, that a single man in possession of a good fortune, must be in want",
    "Mr. Bennet",
    "",
    "However little known the feelings or views of such a man may be",
    "Oh!",
]


def test_generation_writes_one_record_per_input_in_input_order(clm_dir: Path, tmp_path: Path) -> None:
    source, out = tmp_path / "prompts.txt", tmp_path / "out.jsonl"
    source.write_text("\n".join(PROMPTS) + "\n", encoding="utf-8")
    result = predict("--model", str(clm_dir), "-i", str(source), "-o", str(out),
                     "--set", "batch_size=2", "--set", "generation.max_new_tokens=6")
    assert result.exit_code == 0, result.output
    records = jsonl(out)
    assert [r["input"] for r in records] == PROMPTS  # the empty line is a record too
    assert all(0 <= r["n_generated_tokens"] <= 6 and isinstance(r["generated"], str) for r in records)
    assert result.stdout == ""  # records went to the file, logs to stderr
    assert "predicted 5 inputs" in result.stderr


def test_sampling_is_reproducible_with_a_seed(clm_dir: Path, tmp_path: Path) -> None:
    source = tmp_path / "prompts.txt"
    source.write_text("\n".join(PROMPTS) + "\n", encoding="utf-8")
    args = ["--model", str(clm_dir), "-i", str(source), "--set", "generation.do_sample=true",
            "--set", "generation.temperature=2.0", "--set", "generation.max_new_tokens=8", "--set", "batch_size=2"]
    first, second = predict(*args, "--set", "seed=7"), predict(*args, "--set", "seed=7")
    other = predict(*args, "--set", "seed=8")
    assert first.exit_code == second.exit_code == other.exit_code == 0, first.output
    assert first.stdout == second.stdout
    assert first.stdout != other.stdout


def test_greedy_output_equals_transformers_generate(clm_dir: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    prompt = PROMPTS[3]
    tok = AutoTokenizer.from_pretrained(clm_dir)
    model = AutoModelForCausalLM.from_pretrained(clm_dir).eval()
    ids = tok(prompt, return_tensors="pt")
    with torch.inference_mode():
        out = model.generate(**ids, max_new_tokens=10, do_sample=False, pad_token_id=tok.pad_token_id)
    new = out[0, ids["input_ids"].shape[1]:].tolist()
    new = new[: new.index(tok.eos_token_id)] if tok.eos_token_id in new else new
    # Batched with prompts of other lengths, so the left padding path is what is compared.
    source = tmp_path / "prompts.txt"
    source.write_text("\n".join(PROMPTS) + "\n", encoding="utf-8")
    result = predict("--model", str(clm_dir), "-i", str(source), "--set", "generation.max_new_tokens=10", "--set", "batch_size=5")
    assert result.exit_code == 0, result.output
    record = [json.loads(line) for line in result.stdout.splitlines()][3]
    assert record["generated"] == tok.decode(new, skip_special_tokens=True)
    assert record["n_generated_tokens"] == len(new)


def test_jsonl_fields_pass_through_to_csv(clm_dir: Path, tmp_path: Path) -> None:
    source, out = tmp_path / "in.jsonl", tmp_path / "out.csv"
    rows = [{"id": f"q{n}", "prompt": text, "meta": {"n": n}} for n, text in enumerate(PROMPTS)]
    source.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    result = predict("--model", str(clm_dir), "-i", str(source), "-o", str(out), "--set", "text_field=prompt",
                     "--set", "generation.max_new_tokens=3")
    assert result.exit_code == 0, result.output
    with out.open(encoding="utf-8", newline="") as handle:
        table = list(csv.DictReader(handle))
    assert [row["id"] for row in table] == [row["id"] for row in rows]
    assert [row["input"] for row in table] == PROMPTS
    assert [json.loads(row["meta"]) for row in table] == [row["meta"] for row in rows]  # nested → JSON string
    assert {"generated", "n_generated_tokens"} <= set(table[0])


def test_long_prompts_are_truncated_from_the_left_with_a_warning(clm_dir: Path, tmp_path: Path) -> None:
    source = tmp_path / "long.txt"
    source.write_text(" ".join(["word"] * 200) + "\nshort\n", encoding="utf-8")
    result = predict("--model", str(clm_dir), "-i", str(source), "--set", "generation.max_new_tokens=4")
    assert result.exit_code == 0, result.output
    assert len(result.stdout.splitlines()) == 2
    assert "1 input(s) were longer than 60 tokens" in result.stderr


@pytest.mark.parametrize("kind", ["mlm", "nsp"])
def test_fill_mask_scores_are_sorted_probabilities_with_the_argmax_first(
    mlm_dirs: dict[str, Path], kind: str, tmp_path: Path
) -> None:
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    texts = ["It is a truth universally [MASK], that a single man", "[MASK] Bennet replied that he had [MASK]."]
    source = tmp_path / "masked.txt"
    source.write_text("\n".join(texts) + "\n", encoding="utf-8")
    result = predict("--model", str(mlm_dirs[kind]), "-i", str(source), "--set", "top_k=4")
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["input"] for r in records] == texts
    tok = AutoTokenizer.from_pretrained(mlm_dirs[kind])
    model = AutoModelForMaskedLM.from_pretrained(mlm_dirs[kind]).eval()
    for text, record in zip(texts, records):
        assert len(record["masks"]) == text.count("[MASK]")
        ids = tok(text, return_tensors="pt")
        with torch.inference_mode():
            logits = model(**ids).logits[0]
        positions = (ids["input_ids"][0] == tok.mask_token_id).nonzero().flatten()
        for candidates, position in zip(record["masks"], positions):
            scores = [c["score"] for c in candidates]
            assert len(candidates) == 4
            assert all(0.0 <= s <= 1.0 for s in scores) and scores == sorted(scores, reverse=True)
            assert candidates[0]["token_id"] == int(logits[position].argmax())
        assert "[MASK]" not in record["filled"]


def test_a_missing_mask_token_is_a_data_error_naming_the_line(mlm_dirs: dict[str, Path], tmp_path: Path) -> None:
    source, out = tmp_path / "in.txt", tmp_path / "out.jsonl"
    source.write_text("a [MASK] here\nno mask here\n", encoding="utf-8")
    result = predict("--model", str(mlm_dirs["mlm"]), "-i", str(source), "-o", str(out))
    assert result.exit_code == 3
    assert "in.txt:2:" in result.stderr and "[MASK]" in result.stderr
    assert os.listdir(tmp_path) == ["in.txt"]  # no output, no temp file


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("in.txt", b"fine\nbad \xff\xfe bytes\n", "in.txt:2: not valid UTF-8"),
        ("in.jsonl", b'{"text": "ok"}\n{"text": "unterminated\n', "in.jsonl:2: not valid JSON"),
        ("in.jsonl", b'{"text": "ok"}\n\n{"other": "x"}\n', "in.jsonl:3: no field 'text'"),
        ("in.jsonl", b'{"text": "ok"}\n{"text": null}\n', "in.jsonl:2: field 'text' holds null, not a string"),
        ("in.jsonl", b'{"text": "ok"}\n{"text": 7}\n', "in.jsonl:2: field 'text' holds an int (7), not a string"),
        ("in.txt", b"", "no inputs"),
    ],
)
def test_malformed_input_is_exit_3_and_leaves_no_output(
    clm_dir: Path, tmp_path: Path, name: str, content: bytes, expected: str
) -> None:
    source, out = tmp_path / name, tmp_path / "out.jsonl"
    source.write_bytes(content)
    result = predict("--model", str(clm_dir), "-i", str(source), "-o", str(out))
    assert result.exit_code == 3, result.output
    assert expected in result.stderr and name in result.stderr
    assert os.listdir(tmp_path) == [name]


def test_missing_model_dir_is_exit_3(tmp_path: Path) -> None:
    result = predict("--model", str(tmp_path / "no-such-model"), "-o", str(tmp_path / "out.jsonl"), stdin=b"hello\n")
    assert result.exit_code == 3
    assert "no-such-model" in result.stderr and "not found" in result.stderr
    assert os.listdir(tmp_path) == []


def test_model_dir_without_weights_is_exit_3(clm_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "model"
    shutil.copytree(clm_dir, broken)
    (broken / "model.safetensors").unlink()
    result = predict("--model", str(broken), stdin=b"hello\n")
    assert result.exit_code == 3
    assert "no model weights" in result.stderr


def test_corrupted_weights_are_exit_3(clm_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "model"
    shutil.copytree(clm_dir, broken)
    data = (broken / "model.safetensors").read_bytes()
    (broken / "model.safetensors").write_bytes(data[: len(data) // 2])
    result = predict("--model", str(broken), stdin=b"hello\n")
    assert result.exit_code == 3
    assert "corrupted" in result.stderr


def test_a_failure_while_writing_leaves_no_partial_file(
    clm_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import seqlm.io.record_writer as record_writer

    def half_then_fail(records, output_format, stream):
        stream.write(json.dumps(records[0]) + "\n")
        raise OSError("disk full")

    monkeypatch.setattr(record_writer, "_serialize", half_then_fail)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    result = predict("--model", str(clm_dir), "-o", str(out_dir / "out.jsonl"), stdin=b"a\nb\n")
    assert result.exit_code != 0
    assert os.listdir(out_dir) == []


def test_stdin_to_stdout_through_a_real_pipe(clm_dir: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    python, model = shlex.quote(sys.executable), shlex.quote(str(clm_dir))
    command = f"printf 'first prompt\\nsecond, a longer prompt\\n' | {python} -m seqlm predict --model {model}"
    command += " --device cpu --set generation.max_new_tokens=3"
    done = subprocess.run(command, shell=True, capture_output=True, cwd=REPO, env=env, timeout=120)
    assert done.returncode == 0, done.stderr.decode()
    records = [json.loads(line) for line in done.stdout.decode("utf-8").splitlines()]
    assert [r["input"] for r in records] == ["first prompt", "second, a longer prompt"]
    assert b"predicted 2 inputs" in done.stderr
