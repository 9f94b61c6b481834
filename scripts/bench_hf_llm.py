"""The Hugging Face side of `scripts/bench.py`'s LLM rows (`--only llm`): one measured workload per process.

    python scripts/bench_hf_llm.py TASK --config CONFIG.yaml [--set key=value ...] --result OUT.json [options]

TASK is one of:

- `lora`: CONFIG a `task: causal_lm` finetune config with `training.lora`. HF `Trainer` + `peft` as a user
  writes it: the model in float32, `LoraConfig` with the config's r, alpha, dropout, bias and the same target
  modules seqlm picks (`seqlm.models.lora.default_targets`: every linear layer of the transformer blocks), each
  prompt/completion pair rendered with the tokenizer's chat template (user: the prompt, assistant: the
  completion; the prompt part, `add_generation_prompt=True`, masked out of the labels), cut to
  `training.max_length`, `DataCollatorForSeq2Seq` (dynamic padding, labels padded with -100), Trainer's
  defaults otherwise (fp32, random order) and seqlm's optimizer settings (`hf_trainer.training_arguments`).
  `value`: non-padding tokens/s (the attention mask's sum per batch, what seqlm's tokens_per_s counts) over the
  `--measure` optimizer steps after the first `--warmup`; also the trainable parameter count.
- `generate`: CONFIG a predict config naming a causal LM. `pipeline("text-generation", model, batch_size=N)`
  on the inputs as plain strings (no chat template: the pipeline applies one only to chat messages), greedy,
  `max_new_tokens` from the config, `return_full_text=False`; a warm-up call on the first batch, then all the
  inputs timed. `value`: generated tokens/s (each output re-tokenized without special tokens, as the bench
  counts seqlm's); `outputs`: the texts, in input order.

Contract: exit 0 after writing OUT.json with `value`, `unit` and task-specific extras; any error is a
traceback and a non-zero exit.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

from bench_hf import read_texts
from hf_seq2seq import CountingCollator, steady_rate
from hf_trainer import run_task, step_clock, training_arguments

from seqlm.config.finetune import FinetuneConfig
from seqlm.config.inference import PredictConfig
from seqlm.config.loading import load_config


def chat_rows(tokenizer: Any, path: Path, prompt_field: str, completion_field: str, max_length: int) -> list[dict[str, list[int]]]:
    """input_ids / attention_mask / labels of every pair: the rendered conversation, the prompt part masked."""
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        record = json.loads(line)
        user = [{"role": "user", "content": record[prompt_field]}]
        prompt = tokenizer.apply_chat_template(user, add_generation_prompt=True, tokenize=True, return_dict=False)
        full = tokenizer.apply_chat_template([*user, {"role": "assistant", "content": record[completion_field]}],
                                             tokenize=True, return_dict=False)  # fmt: skip
        full = full[:max_length]
        labels = [-100] * min(len(prompt), len(full)) + full[len(prompt) :]
        rows.append({"input_ids": full, "attention_mask": [1] * len(full), "labels": labels})
    return rows


def lora(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, DataCollatorForSeq2Seq, Trainer

    from seqlm.models.lora import default_targets

    config = load_config(FinetuneConfig, args.config, args.overrides)
    settings, training = config.training.lora, config.training
    torch.manual_seed(training.seed)
    tokenizer = AutoTokenizer.from_pretrained(config.model)
    model = AutoModelForCausalLM.from_pretrained(config.model, dtype=torch.float32)
    targets = settings.target_modules or default_targets(model, set())
    adapter = LoraConfig(r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout, bias=settings.bias,
                         target_modules=targets, task_type="CAUSAL_LM")  # fmt: skip
    model = get_peft_model(model, adapter)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    rows = chat_rows(tokenizer, Path(config.data.train), config.data.prompt_field, config.data.completion_field, training.max_length)
    collator = CountingCollator(DataCollatorForSeq2Seq(tokenizer, model=model, label_pad_token_id=-100))
    clock = step_clock()
    arguments = training_arguments(args.result.parent / f"{args.result.stem}-trainer", config.optim, training.batch_size,
                                   training.grad_accum, training.max_steps, training.seed, bf16=False,
                                   remove_unused_columns=False)  # fmt: skip
    trainer = Trainer(model=model, args=arguments, train_dataset=rows, data_collator=collator, processing_class=tokenizer, callbacks=[clock])
    trainer.train()
    rate = steady_rate(clock.ends, collator.sources, training.grad_accum, args.warmup, args.measure)
    return {"value": rate, "unit": "tokens/s", "steps": len(clock.ends), "measured_steps": args.measure or len(clock.ends) - args.warmup,
            "trainable_parameters": trainable, "tokens_counted": "non-padding tokens (attention mask), as seqlm's tokens_per_s"}  # fmt: skip


def generate(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline

    config = load_config(PredictConfig, args.config, args.overrides)
    tokenizer = AutoTokenizer.from_pretrained(config.model)
    model = AutoModelForCausalLM.from_pretrained(config.model, dtype=torch.float32).eval()
    generator = pipeline("text-generation", model=model, tokenizer=tokenizer, batch_size=config.batch_size, device="cpu")
    texts = read_texts(config.input, config.text_field)
    kwargs = {"max_new_tokens": config.generation.max_new_tokens, "do_sample": False, "return_full_text": False}
    generator(texts[: config.batch_size], **kwargs)  # warm-up
    started = time.perf_counter()
    outputs = [found[0]["generated_text"] for found in generator(texts, **kwargs)]
    seconds = time.perf_counter() - started
    tokens = sum(len(ids) for ids in tokenizer(outputs, add_special_tokens=False)["input_ids"])
    return {"value": tokens / seconds, "unit": "tokens/s", "seconds": seconds, "n_inputs": len(texts), "generated_tokens": tokens,
            "outputs": outputs}  # fmt: skip


TASKS = {"lora": lora, "generate": generate}


def main() -> None:
    run_task(__doc__.split("\n\n")[0], TASKS)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
    main()
