"""`seqlm predict` on a causal LM seqlm did not fine-tune (the `clm` task): chat `messages` inputs, and text inputs
with `apply_chat_template`, are rendered with the tokenizer's chat template, ready for the assistant's turn, and
answered in input order (without a template: one-line errors, rows of tests/test_bad_inputs.py). Checked against transformers' own generate
on the rendered prompt (a random tiny Llama: what it says is arbitrary, but must be what that prompt gives)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from conftest import seqlm, write_jsonl
from test_causal_finetune import _tiny_llama_dir
from test_seq2seq import _tokenizer, tokenizer_dir  # noqa: F401  (a fixture)

CONVERSATIONS = [
    [{"role": "system", "content": "Map the word."}, {"role": "user", "content": "apple"}],
    [{"role": "user", "content": "river stone"}],
    [
        {"role": "user", "content": "tiger"},
        {"role": "assistant", "content": "zebra"},
        {"role": "user", "content": "ocean night piano"},
    ],
]


def _lively_llama_dir(root: Path, tokenizer_dir: Path) -> Path:  # noqa: F811
    """The tiny chat Llama with larger random weights, so that what it says depends on the prompt (at the default
    initialisation it repeats one token whatever it is asked)."""
    from transformers import AutoModelForCausalLM

    directory = _tiny_llama_dir(root, tokenizer_dir, chat=True)
    model = AutoModelForCausalLM.from_pretrained(directory)
    torch.manual_seed(1)
    with torch.no_grad():
        for weight in model.parameters():
            if weight.dim() == 2:
                weight.normal_(0.0, 0.5)
    model.save_pretrained(directory)
    return directory


def _greedy(model_dir: Path, messages: list[dict], new_tokens: int) -> str:
    from transformers import AutoModelForCausalLM

    tokenizer, model = _tokenizer(model_dir), AutoModelForCausalLM.from_pretrained(model_dir)
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    ids = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        # the mask given: the template's role markers are the pad token here, which generate would otherwise mask out
        output = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens, do_sample=False,
                                pad_token_id=tokenizer.pad_token_id)  # fmt: skip
    row = output[0, ids.shape[1] :].tolist()
    row = row[: row.index(tokenizer.eos_token_id)] if tokenizer.eos_token_id in row else row
    return tokenizer.decode(row, skip_special_tokens=True)


def test_chat_inputs_on_a_raw_causal_lm_are_answered_with_its_chat_template(tmp_path: Path, tokenizer_dir: Path) -> None:  # noqa: F811
    model = _lively_llama_dir(tmp_path, tokenizer_dir)
    assert "seqlm" not in json.loads((model / "config.json").read_text(encoding="utf-8"))  # not fine-tuned by seqlm: a clm model
    inputs = write_jsonl(
        tmp_path / "chat.jsonl", [{"id": i, "messages": m} for i, m in enumerate(CONVERSATIONS)] + [{"id": 3, "text": "apple"}]
    )
    args = (
        "predict",
        "--device",
        "cpu",
        "--model",
        model,
        "-i",
        inputs,
        "--set",
        "generation.max_new_tokens=6",
        "--set",
        "batch_size=2",
    )
    records = [json.loads(line) for line in seqlm(*args).splitlines()]
    assert [r["id"] for r in records] == [0, 1, 2, 3] and records[2]["messages"] == CONVERSATIONS[2]
    assert [r["generated"] for r in records[:3]] == [_greedy(model, m, 6) for m in CONVERSATIONS]
    assert len({r["generated"] for r in records}) == 4 and all(r["n_generated_tokens"] > 0 for r in records)
    assert records[2]["input"] == "ocean night piano" and set(records[0]) >= {"generated", "n_generated_tokens"}
    # a text input is continued as written, unless apply_chat_template makes it the user's message
    as_user = _greedy(model, [{"role": "user", "content": "apple"}], 6)
    chatted = [json.loads(line) for line in seqlm(*args, "--set", "apply_chat_template=true").splitlines()]
    assert chatted[3]["generated"] == as_user and chatted[:3] == records[:3]


def test_evaluate_scores_a_raw_causal_lm_zero_shot_on_generation_records(tmp_path: Path, tokenizer_dir: Path) -> None:  # noqa: F811
    """A causal LM seqlm did not fine-tune, evaluated on source/target (or prompt/completion) records: prompted with its
    chat template as `task: causal_lm` would train it (the zero-shot baseline of such a fine-tune), not perplexity."""
    model = _lively_llama_dir(tmp_path, tokenizer_dir)
    words = ["apple", "river stone", "tiger", "ocean night piano"]
    answers = [_greedy(model, [{"role": "user", "content": w}], 5) for w in words]
    # two references the model says exactly, two it does not
    rows = [{"source": w, "target": answers[i] if i < 2 else "zzz"} for i, w in enumerate(words)]
    for name, records in (("pairs", rows), ("completions", [{"prompt": r["source"], "completion": r["target"]} for r in rows])):
        data = write_jsonl(tmp_path / f"{name}.jsonl", records)
        out = tmp_path / f"eval-{name}"
        seqlm("evaluate", "--device", "cpu", "--model", model, "--data", data, "--set", f"output_dir={out}",
              "--set", "generation.max_new_tokens=5", "--set", "batch_size=3")  # fmt: skip
        metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
        assert metrics["rougeL"] == 50.0 and "perplexity" in metrics, (name, metrics)  # two outputs right, two wrong
        if name == "completions":
            assert metrics["exact_match"] == 0.5, metrics
