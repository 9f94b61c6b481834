"""The Hugging Face side of `scripts/bench.py`'s seq2seq rows: one measured workload per process.

    python scripts/bench_hf_seq2seq.py TASK --config CONFIG.yaml [--set key=value ...] --result OUT.json [options]

TASK is one of:

- `seq2seq`: CONFIG a seq2seq finetune config (from-scratch model); `hf_seq2seq.run(..., generate=False)`:
  `Seq2SeqTrainer` as run_translation.py trains, with Trainer's defaults (fp32, random order, no
  group_by_length) and seqlm's hyper-parameters (see hf_seq2seq.py). `value`: non-padding source tokens/s
  (what seqlm's tokens_per_s counts) over the `--measure` optimizer steps after the first `--warmup`.
- `generate`: CONFIG a predict config naming a seq2seq model. What `pipeline("text2text-generation",
  model=..., batch_size=N)` ran before transformers 5 removed that pipeline (Text2TextGenerationPipeline
  of 4.x): the inputs in input order, N at a time, each batch tokenized and right-padded (the tokenizer's
  padding side) with its attention mask, the model's config.json `prefix` prepended (as the pipeline did, and
  seqlm predict does), no truncation (its default), `model.generate(**inputs, **kwargs)`
  under no_grad, every output decoded with skip_special_tokens=True and clean_up_tokenization_spaces=False.
  kwargs: the config's generation section (max_new_tokens, num_beams, length_penalty, early_stopping,
  no_repeat_ngram_size; greedy or beams, no sampling). A warm-up call on the first batch, then all the
  inputs timed. `value`: inputs/s; `outputs`: the texts, in input order.

Contract: exit 0 after writing OUT.json with `value`, `unit` and task-specific extras; any error is a
traceback and a non-zero exit.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

import hf_seq2seq
from bench_hf import read_texts
from hf_trainer import run_task

from seqlm.config.inference import PredictConfig
from seqlm.config.loading import load_config


def train(args: argparse.Namespace) -> dict[str, Any]:
    config = hf_seq2seq.read_config(args.config, args.overrides)
    result = hf_seq2seq.run(config, args.result.parent / f"{args.result.stem}-trainer", args.warmup, args.measure, generate=False)
    return {"value": result.pop("train_tokens_per_s"), "unit": "tokens/s", **result}


def generate(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    config = load_config(PredictConfig, args.config, args.overrides)
    settings = config.generation
    if settings.do_sample or settings.num_return_sequences != 1:
        raise SystemExit("bench_hf_seq2seq: generate benchmarks one greedy or beam-search output per input")
    tokenizer = AutoTokenizer.from_pretrained(config.model)
    model = AutoModelForSeq2SeqLM.from_pretrained(config.model, dtype=torch.float32).eval()
    # The 4.x pipeline prepended the model's config.json prefix, as seqlm predict does by default.
    prefix = config.source_prefix if config.source_prefix is not None else (model.config.prefix or "")
    texts = [prefix + text for text in read_texts(config.input, config.text_field)]
    kwargs = {"max_new_tokens": settings.max_new_tokens, "num_beams": settings.num_beams, "do_sample": False,
              "no_repeat_ngram_size": settings.no_repeat_ngram_size}  # fmt: skip
    if settings.num_beams > 1:
        kwargs.update(length_penalty=settings.length_penalty, early_stopping=settings.early_stopping)

    def translate(inputs: list[str]) -> list[str]:
        outputs = []
        for start in range(0, len(inputs), config.batch_size):
            batch = tokenizer(inputs[start : start + config.batch_size], padding=True, return_tensors="pt")
            batch.pop("token_type_ids", None)
            with torch.no_grad():
                ids = model.generate(**batch, **kwargs)
            outputs += tokenizer.batch_decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        return outputs

    translate(texts[: config.batch_size])  # warm-up
    started = time.perf_counter()
    outputs = translate(texts)
    seconds = time.perf_counter() - started
    return {"value": len(texts) / seconds, "unit": "examples/s", "seconds": seconds, "n_inputs": len(texts), "outputs": outputs}


TASKS = {"seq2seq": train, "generate": generate}


def main() -> None:
    run_task(__doc__.split("\n\n")[0], TASKS)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
    main()
