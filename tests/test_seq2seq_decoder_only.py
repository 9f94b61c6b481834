"""The seq2seq task on a decoder-only model: prompt masking, prompt formats, the objective, the saved model's
marker, and the copy task end to end through the CLI (finetune, evaluate, predict) with a tiny GPT-2 from scratch."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import invoke, seqlm
from pydantic import TypeAdapter, ValidationError
from test_seq2seq import _copy_rows, _tokenizer, _write_jsonl, tokenizer_dir  # noqa: F401  (a fixture)

from seqlm.config.finetune import FinetuneConfig
from seqlm.data.batch import Batch
from seqlm.data.example_batches import ExampleBatches
from seqlm.data.masking import IGNORE_INDEX
from seqlm.errors import ConfigError
from seqlm.io.seq2seq_records import Seq2SeqExample, Seq2SeqRecords
from seqlm.models.heads import detect_head
from seqlm.tasks.objectives import OBJECTIVES
from seqlm.tasks.seq2seq_prompts import PromptFormat

CHAT_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'user' %}<|pad|>Q: {{ m['content'] }}\n"
    "{% else %}A: {{ m['content'] }}<|endoftext|>\n{% endif %}{% endfor %}{% if add_generation_prompt %}A:{% endif %}"
)


def _examples(rows: list[str], targets: list[str] | None = None) -> Seq2SeqRecords:
    targets = targets or rows
    return Seq2SeqRecords(tuple(Seq2SeqExample(s, t, (t,), f"x:{i}") for i, (s, t) in enumerate(zip(rows, targets))), "x")


def _tiny_llama(tokenizer, positions: int = 64):  # noqa: ANN001, ANN202
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=4, max_position_embeddings=positions, bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True,
    )  # fmt: skip
    torch.manual_seed(0)
    return LlamaForCausalLM(config)


def _tiny_gpt2(tokenizer):  # noqa: ANN001, ANN202
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=len(tokenizer), n_embd=64, n_layer=2, n_head=4, n_inner=128, n_positions=64, resid_pdrop=0.0,
        embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    return GPT2LMHeadModel(config)


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory: pytest.TempPathFactory, tokenizer_dir: Path) -> Path:  # noqa: F811
    """A randomly initialised 2-layer GPT-2 (width 64, 64 positions) saved with the copy task's tokenizer."""
    directory = tmp_path_factory.mktemp("tiny_gpt2") / "model"
    tokenizer = _tokenizer(tokenizer_dir)
    _tiny_gpt2(tokenizer).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory: pytest.TempPathFactory, tokenizer_dir: Path) -> Path:  # noqa: F811
    """A randomly initialised 2-layer Llama (width 64) saved with the copy task's tokenizer."""
    directory = tmp_path_factory.mktemp("tiny_llama") / "model"
    tokenizer = _tokenizer(tokenizer_dir)
    _tiny_llama(tokenizer).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


# --------------------------------------------------------------------------- prompts and rows


def test_rows_are_prompt_plus_target_and_the_labels_ignore_the_prompt(tokenizer_dir: Path) -> None:  # noqa: F811
    tokenizer = _tokenizer(tokenizer_dir)
    prompt = PromptFormat.choose("copy: {source} =>", tokenizer)
    assert prompt.template == "copy: {source} =>"
    encoded, cut_prompts, cut_targets = prompt.encode_split(tokenizer, _examples(["apple bread"], ["chair dance eagle"]), 32, 32, "k")
    ids, labels = encoded.rows["input_ids"][0].tolist(), encoded.targets["labels"][0].tolist()
    prompt_ids = tokenizer("copy: apple bread =>")["input_ids"]
    target_ids = [*tokenizer("chair dance eagle", add_special_tokens=False)["input_ids"], tokenizer.eos_token_id]
    assert ids == prompt_ids + target_ids and (cut_prompts, cut_targets) == (0, 0)
    assert labels == [IGNORE_INDEX] * len(prompt_ids) + target_ids
    assert "labels" not in encoded.rows  # a decoder-only model gets no labels input: the objective shifts targets itself
    # Padding is ignored too, and the objective counts exactly the target tokens.
    two = prompt.encode_split(tokenizer, _examples(["apple", "apple bread chair dance"], ["bread", "eagle"]), 32, 32, "k")[0]
    batch = ExampleBatches({"validation": two}, tokenizer.pad_token_id, 2, 1, 0).evaluation("validation")[0]
    assert OBJECTIVES["seq2seq"].target_counts(batch)["seq2seq"] == 4  # "bread"+eos, "eagle"+eos
    assert int((batch.targets["labels"] != IGNORE_INDEX).sum()) == 4


def test_long_prompts_keep_their_end_and_targets_their_eos(tokenizer_dir: Path) -> None:  # noqa: F811
    tokenizer = _tokenizer(tokenizer_dir)
    prompt = PromptFormat.choose(None, tokenizer)  # no chat template: "{source}\n"
    assert prompt.template == "{source}\n"
    long = "apple bread chair dance eagle flute grape house"
    encoded, cut_prompts, cut_targets = prompt.encode_split(tokenizer, _examples([long, "apple"], [long, "apple"]), 5, 4, "training.max_source_length")
    assert (cut_prompts, cut_targets) == (1, 1) and encoded.truncated == 2
    first = encoded.rows["input_ids"][0].tolist()
    newline = tokenizer("\n", add_special_tokens=False)["input_ids"]
    assert first[:5] == tokenizer(long)["input_ids"][:4] + newline  # the source's start, then the template's "\n"
    assert first[-1] == tokenizer.eos_token_id and len(first) == 5 + 4
    with pytest.raises(ConfigError, match="training.max_source_length"):
        PromptFormat("Answer the question below.\n{source}\nThe answer, in full:\n").encode_prompts(tokenizer, [long], 3, "training.max_source_length")


def test_the_chat_template_is_used_when_the_tokenizer_has_one(tokenizer_dir: Path) -> None:  # noqa: F811
    tokenizer = _tokenizer(tokenizer_dir)
    tokenizer.chat_template = CHAT_TEMPLATE
    chat = PromptFormat.choose(None, tokenizer)
    assert chat.template is None and PromptFormat.choose("{source} =", tokenizer).template == "{source} ="  # explicit wins
    assert chat.texts(tokenizer, ["apple bread"]) == ["<|pad|>Q: apple bread\nA:"]
    encoded, _, _ = chat.encode_split(tokenizer, _examples(["apple bread"], ["chair"]), 32, 32, "k")
    ids, labels = encoded.rows["input_ids"][0].tolist(), encoded.targets["labels"][0].tolist()
    prompt_ids = tokenizer("<|pad|>Q: apple bread\nA:", add_special_tokens=False)["input_ids"]
    target_ids = tokenizer(" chair<|endoftext|>", add_special_tokens=False)["input_ids"]  # the assistant turn, up to its eos
    assert ids == prompt_ids + target_ids and labels == [IGNORE_INDEX] * len(prompt_ids) + target_ids
    assert prompt_ids[0] == tokenizer.pad_token_id  # the template's own special token, once, nothing added
    assert PromptFormat.of_model(type("C", (), {"seqlm": chat.metadata()})()) == chat


# --------------------------------------------------------------------------- objective


def test_summed_loss_is_hf_mean_loss_times_target_tokens(tokenizer_dir: Path) -> None:  # noqa: F811
    tokenizer = _tokenizer(tokenizer_dir)
    model = _tiny_llama(tokenizer).eval()
    rows = _copy_rows(5, seed=3)
    prompt = PromptFormat.choose(None, tokenizer)
    encoded, _, _ = prompt.encode_split(tokenizer, _examples(rows, [" ".join(reversed(r.split())) for r in rows]), 32, 32, "k")
    batch = ExampleBatches({"validation": encoded}, tokenizer.pad_token_id, 5, 1, 0).evaluation("validation")[0]
    objective = OBJECTIVES["seq2seq"]
    with torch.no_grad():
        outputs = model(**batch.inputs)
        reference = model(**batch.inputs, labels=batch.targets["labels"])  # HF shifts and averages over the labels
        sums = objective.loss_sums(outputs, batch)
        fused = objective.fast_loss_sums(model, batch)
    count = objective.target_counts(batch)["seq2seq"]
    assert count == sum(int((row != IGNORE_INDEX).sum()) for row in encoded.targets["labels"])
    torch.testing.assert_close(sums["seq2seq"], reference.loss * count)
    torch.testing.assert_close(fused["seq2seq"], sums["seq2seq"], rtol=1e-4, atol=1e-4)
    smoothed = Batch(batch.inputs, {**batch.targets, "label_smoothing": torch.full((5,), 0.1)})
    with torch.no_grad():
        smooth_sum = objective.loss_sums(outputs, smoothed)["seq2seq"]
        fused_smooth = objective.fast_loss_sums(model, smoothed)["seq2seq"]
    torch.testing.assert_close(fused_smooth, smooth_sum, rtol=1e-4, atol=1e-4)  # the fused loss smooths as torch does
    logits, labels = outputs.logits[:, :-1].flatten(0, 1), batch.targets["labels"][:, 1:].flatten()
    torch.testing.assert_close(smooth_sum, torch.nn.CrossEntropyLoss(ignore_index=IGNORE_INDEX, label_smoothing=0.1)(logits, labels) * count)
    assert objective.score(outputs, smoothed)["nll"] == pytest.approx(float(sums["seq2seq"]), rel=1e-5)  # validation: no smoothing


# --------------------------------------------------------------------------- config and model rules


def test_prompt_template_needs_a_source_slot_and_a_decoder_only_model(tmp_path: Path, tokenizer_dir: Path, llama_dir: Path) -> None:  # noqa: F811
    adapter = TypeAdapter(FinetuneConfig)
    base = {"output_dir": str(tmp_path / "run"), "task": "seq2seq", "data": {"train": "t.jsonl"}}
    assert adapter.validate_python({**base, "model": str(llama_dir), "data": {"train": "t.jsonl", "prompt_template": "Q: {source} A:"}})
    with pytest.raises(ValidationError, match="source"):
        adapter.validate_python({**base, "model": str(llama_dir), "data": {"train": "t.jsonl", "prompt_template": "Q: A:"}})
    train = _write_jsonl(tmp_path / "train.jsonl", _copy_rows(20))
    encoder_decoder = {**base, "model": {"family": "t5", "tokenizer": str(tokenizer_dir)},
                       "data": {"train": str(train), "prompt_template": "{source} =>"}}  # fmt: skip
    (tmp_path / "t5.yaml").write_text(yaml.safe_dump(encoder_decoder), encoding="utf-8")
    result = invoke("finetune", tmp_path / "t5.yaml")
    assert result.exit_code == 2 and "data.prompt_template is for decoder-only models" in result.output
    too_long = {**base, "output_dir": str(tmp_path / "run2"), "model": str(llama_dir), "data": {"train": str(train)},
                "training": {"max_source_length": 40, "max_target_length": 40}}  # fmt: skip
    (tmp_path / "long.yaml").write_text(yaml.safe_dump(too_long), encoding="utf-8")
    result = invoke("finetune", tmp_path / "long.yaml")
    assert result.exit_code == 2 and "exceeds the 64 positions" in result.output


# --------------------------------------------------------------------------- end to end


def test_copy_task_end_to_end_with_a_decoder_only_model(tmp_path: Path, gpt2_dir: Path) -> None:
    """A tiny GPT-2 from scratch learns to copy word sequences after "{source}\\n"; the saved model is a seq2seq
    model to evaluate and predict (same prompts), and transformers' pipeline continues it as predict does."""
    rows = _copy_rows(30_040, seed=1)  # many distinct rows, as for T5: few would be memorised
    train, validation = _write_jsonl(tmp_path / "train.jsonl", rows[:30_000]), _write_jsonl(tmp_path / "validation.jsonl", rows[30_000:])
    config = {
        "output_dir": str(tmp_path / "run"), "task": "seq2seq", "model": str(gpt2_dir),
        "data": {"train": str(train), "validation": str(validation)},
        "optim": {"lr": 3.0e-3, "warmup_steps": 20},
        # A causal LM copies by finding the source again (an induction head): it needs more steps than T5.
        "training": {"batch_size": 32, "max_steps": 1500, "eval_every": 750, "eval_generate_examples": 40, "precision": "fp32",
                     "log_every": 100, "max_source_length": 24, "max_target_length": 24},
        "generation": {"max_new_tokens": 16},
    }  # fmt: skip
    (tmp_path / "finetune.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    start = time.monotonic()
    seqlm("finetune", tmp_path / "finetune.yaml")
    seconds = time.monotonic() - start
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text(encoding="utf-8"))
    print(f"decoder-only copy task: best validation BLEU {metrics['best_val_bleu']:.1f} in {seconds:.0f} s")
    assert metrics["task"] == "seq2seq" and metrics["best_val_bleu"] >= 90

    best = tmp_path / "run" / "best"
    saved = json.loads((best / "config.json").read_text(encoding="utf-8"))
    assert saved["architectures"] == ["GPT2LMHeadModel"]  # a plain causal LM to transformers
    assert saved["seqlm"] == {"head": "prompted_lm", "task": "seq2seq", "prompt_template": "{source}\n", "chat_template": False}
    from transformers import AutoConfig

    assert detect_head(AutoConfig.from_pretrained(best)) == "prompted_lm"

    evaluate = {"model": str(best), "data": str(validation), "output_dir": str(tmp_path / "eval"),
                "generation": {"max_new_tokens": 16, "num_beams": 2}}  # fmt: skip
    (tmp_path / "evaluate.yaml").write_text(yaml.safe_dump(evaluate), encoding="utf-8")
    seqlm("evaluate", tmp_path / "evaluate.yaml")
    scores = json.loads((tmp_path / "eval" / "metrics.json").read_text(encoding="utf-8"))
    assert scores["objective"] == "seq2seq" and scores["bleu"] >= 90 and scores["examples"] == 40
    assert {"chrf", "rougeL", "gen_len", "loss", "perplexity"} <= scores.keys()

    inputs = rows[30_000:30_010]
    (tmp_path / "inputs.txt").write_text("\n".join(inputs) + "\n", encoding="utf-8")
    result = invoke("predict", "--device", "cpu", "--model", best, "-i", tmp_path / "inputs.txt", "--set", "generation.max_new_tokens=16")
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["input"] for r in records] == inputs  # input order, though batches run longest first
    assert sum(r["output"] == r["input"] for r in records) >= 8

    from transformers import pipeline

    generator = pipeline("text-generation", model=str(best), device="cpu")
    for record in records[:4]:
        (continued,) = generator(record["input"] + "\n", max_new_tokens=16, do_sample=False, return_full_text=False)
        assert continued["generated_text"] == record["output"]
