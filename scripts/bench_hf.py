"""The Hugging Face side of `scripts/bench.py`: one measured workload per process.

    python scripts/bench_hf.py TASK --config CONFIG.yaml [--set key=value ...] --result OUT.json [options]

TASK is one of:

- `tokenize-map`: the corpus of a `seqlm tokenize` dataset (CONFIG: its tokenize config, whose
  `output_dir` holds the trained tokenizer) through `datasets.load_dataset("text")` and
  `Dataset.map(tokenizer(...), batched=True)` (`--num-proc N`), as run_clm.py tokenizes.
- `tokenize-raw`: the same text, in memory, through `tokenizers.Tokenizer.encode_batch` in
  batches of 10,000 lines: the upper bound of what any wrapper can reach.
- `pretrain`: a pretrain config (clm or mlm) with `Trainer`, preprocessed as run_clm.py /
  run_mlm.py do (tokenize every line, concatenate, cut into `seq_len` blocks; run_mlm's
  per-line special tokens; `DataCollatorForLanguageModeling` for mlm); `--bf16` sets bf16=True.
- `finetune`: a finetune config with `Trainer`, as run_glue.py: `--padding max_length` pads every
  example to `max_length` (default_data_collator); `--padding dynamic` pads per batch
  (DataCollatorWithPadding). `--order by-length` is train_sampling_strategy="group_by_length"
  (default with dynamic padding), `--order random` Trainer's default sampler (default with
  max_length). The test split is scored at the end (accuracy of the final model).
- `predict`: a predict config (a sequence classifier) with
  `pipeline("text-classification", batch_size=...)` on the input file; the labels are returned.

The model of `pretrain` is built by seqlm's own `build_model` from the same config, after the
same seed, so both sides train the same architecture from the same initial weights; the
optimizer settings (lr, betas, eps, weight decay, warmup, schedule, clipping) are translated to
`TrainingArguments`. Everything else is Trainer's defaults, i.e. what a Trainer user gets.

Contract: exit 0 after writing OUT.json with `value` (the throughput after the warm-up),
`unit`, and task-specific extras; any error is a traceback and a non-zero exit. Throughput
excludes the first `--warmup` optimizer steps (timed by a TrainerCallback) or a warm-up call,
and covers the `--measure` steps after them (default: all the rest), so that a longer run
(e.g. for its test accuracy) is measured on the same steps as a short one.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from itertools import chain
from pathlib import Path
from typing import Any

from hf_trainer import run_task, steady_rate, step_clock, steps_run, training_arguments

from seqlm.config.finetune import FinetuneConfig
from seqlm.config.inference import PredictConfig
from seqlm.config.loading import load_config
from seqlm.config.schema import PretrainConfig, TokenizeConfig

RAW_BATCH_LINES = 10_000


def main() -> None:
    run_task(
        __doc__.split("\n\n")[0], TASKS,
        (("--bf16",), {"action": "store_true", "help": "TrainingArguments(bf16=True)"}),
        (("--num-proc",), {"type": int, "default": None, "help": "tokenize-map: Dataset.map(num_proc=...)"}),
        (("--padding",), {"choices": ("max_length", "dynamic"), "default": "max_length", "help": "finetune"}),
        (("--order",), {"choices": ("random", "by-length"), "default": None,
                        "help": "finetune: the train sampler (default: random with max_length, by-length with dynamic)"}),
    )  # fmt: skip


def tokenize_map(args: argparse.Namespace) -> dict[str, Any]:
    """MB/s of `Dataset.map(tokenizer, batched=True)` over the corpus, cache off (so it really runs)."""
    from datasets import load_dataset
    from transformers import AutoTokenizer

    config = load_config(TokenizeConfig, args.config, args.overrides)
    files = corpus_files(config)
    tokenizer = AutoTokenizer.from_pretrained(str(config.output_dir))
    started = time.perf_counter()
    raw = load_dataset("text", data_files={"train": files}, split="train")
    load_s = time.perf_counter() - started
    started = time.perf_counter()
    encoded = raw.map(
        lambda batch: tokenizer(batch["text"]),
        batched=True,
        num_proc=args.num_proc,
        remove_columns=["text"],
        load_from_cache_file=False,
    )
    map_s = time.perf_counter() - started
    megabytes = text_megabytes(files)
    n_tokens = sum(len(ids) for ids in encoded["input_ids"])
    return {"value": megabytes / map_s, "unit": "MB/s", "megabytes": megabytes, "seconds": map_s, "load_s": load_s, "n_tokens": n_tokens}


def tokenize_raw(args: argparse.Namespace) -> dict[str, Any]:
    """MB/s of `tokenizers.Tokenizer.encode_batch` on the corpus lines, held in memory (reading not timed)."""
    from tokenizers import Tokenizer

    config = load_config(TokenizeConfig, args.config, args.overrides)
    files = corpus_files(config)
    tokenizer = Tokenizer.from_file(str(Path(config.output_dir) / "tokenizer.json"))
    lines = [line for file in files for line in Path(file).read_text(encoding="utf-8").splitlines() if line.strip()]
    started = time.perf_counter()
    n_tokens = 0
    for start in range(0, len(lines), RAW_BATCH_LINES):
        n_tokens += sum(len(e.ids) for e in tokenizer.encode_batch(lines[start : start + RAW_BATCH_LINES], add_special_tokens=False))
    seconds = time.perf_counter() - started
    megabytes = text_megabytes(files)
    return {"value": megabytes / seconds, "unit": "MB/s", "megabytes": megabytes, "seconds": seconds, "n_tokens": n_tokens}


def corpus_files(config: TokenizeConfig) -> list[str]:
    """The text files of a tokenize config, train then validation (plain-text corpora only)."""
    return [*config.corpus.train, *config.corpus.validation]


def text_megabytes(files: list[str]) -> float:
    return sum(Path(file).stat().st_size for file in files) / 1e6


# --------------------------------------------------------------------------- pretrain


def pretrain(args: argparse.Namespace) -> dict[str, Any]:
    """tokens/s of Trainer on run_clm / run_mlm-style blocks, after `--warmup` steps."""
    from transformers import AutoTokenizer, DataCollatorForLanguageModeling, Trainer, default_data_collator, set_seed

    from seqlm.models.build import build_model

    config = load_config(PretrainConfig, args.config, args.overrides)
    if config.nsp:
        raise SystemExit("bench_hf: nsp is not benchmarked")
    training = config.training
    tokenizer = AutoTokenizer.from_pretrained(str(config.data))
    started = time.perf_counter()
    blocks = lm_blocks(tokenizer, dataset_train_files(config.data), training.seq_len, mlm=config.objective == "mlm")
    preprocess_s = time.perf_counter() - started
    set_seed(training.seed)  # as seqlm seeds before building: the same initial weights
    model = build_model(config.model, config.objective, config.nsp, tokenizer)
    if config.objective == "mlm":
        collator = DataCollatorForLanguageModeling(tokenizer, mlm=True, mlm_probability=config.mlm_probability)
    else:
        collator = default_data_collator
    clock = step_clock()
    trainer_args = training_arguments(
        args.result.parent / f"{args.result.stem}-trainer", config.optim, training.batch_size, training.grad_accum,
        training.max_steps, training.seed, args.bf16,
    )
    trainer = Trainer(model=model, args=trainer_args, train_dataset=blocks, data_collator=collator, callbacks=[clock])
    trainer.train()
    tokens_per_step = training.batch_size * training.grad_accum * training.seq_len
    return {"value": steady_rate(clock.ends, args.warmup, args.measure, tokens_per_step), "unit": "tokens/s",
            **steps_run(clock, args), "preprocess_s": preprocess_s, "n_blocks": len(blocks)}


def dataset_train_files(data_dir: Path) -> list[str]:
    """The train files a `seqlm tokenize` dataset was made from (its meta.json keeps the config)."""
    meta = json.loads((Path(data_dir) / "meta.json").read_text(encoding="utf-8"))
    return list(meta["config"]["corpus"]["train"])


def lm_blocks(tokenizer: Any, files: list[str], seq_len: int, mlm: bool) -> Any:
    """run_clm / run_mlm preprocessing: tokenize every line, concatenate, cut into full `seq_len` blocks."""
    from datasets import load_dataset

    raw = load_dataset("text", data_files={"train": files}, split="train")
    if mlm:  # run_mlm (not line_by_line): every line with its special tokens, and the mask of them

        def encode(batch: dict[str, list]) -> Any:
            return tokenizer(batch["text"], return_special_tokens_mask=True)
    else:  # run_clm

        def encode(batch: dict[str, list]) -> Any:
            return tokenizer(batch["text"])

    encoded = raw.map(encode, batched=True, remove_columns=["text"], load_from_cache_file=False)

    def group_texts(batch: dict[str, list]) -> dict[str, list]:
        joined = {key: list(chain(*batch[key])) for key in batch}
        total = len(joined["input_ids"]) // seq_len * seq_len
        blocks = {key: [values[i : i + seq_len] for i in range(0, total, seq_len)] for key, values in joined.items()}
        if not mlm:
            blocks["labels"] = [list(ids) for ids in blocks["input_ids"]]
        return blocks

    return encoded.map(group_texts, batched=True, load_from_cache_file=False)


# --------------------------------------------------------------------------- finetune


def finetune(args: argparse.Namespace) -> dict[str, Any]:
    """examples/s of Trainer fine-tuning a classifier (run_glue-style), after `--warmup` steps; test accuracy."""
    import numpy as np
    from datasets import load_dataset
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        default_data_collator,
        set_seed,
    )

    config = load_config(FinetuneConfig, args.config, args.overrides)
    data, training = config.data, config.training
    if training.max_steps is None:
        raise SystemExit("bench_hf: finetune needs training.max_steps")
    if data.test is None or data.validation is not None or data.text_pair_field is not None:
        raise SystemExit("bench_hf: finetune benchmarks a train + test file of single texts")
    raw = load_dataset("json", data_files={"train": data.train, "test": data.test})
    names = data.labels or sorted(set(raw["train"][data.label_field]))
    label2id = {name: i for i, name in enumerate(names)}
    train_split = raw["train"].train_test_split(test_size=data.validation_ratio, seed=data.split_seed)["train"]
    tokenizer = AutoTokenizer.from_pretrained(config.model)
    pad_to_max = args.padding == "max_length"
    by_length = args.order == "by-length" if args.order else not pad_to_max

    def preprocess(batch: dict[str, list]) -> Any:
        encoded = tokenizer(
            batch[data.text_field], padding="max_length" if pad_to_max else False, max_length=training.max_length, truncation=True
        )
        encoded["labels"] = [label2id[str(label)] for label in batch[data.label_field]]
        return encoded

    columns = raw["train"].column_names
    train_set = train_split.map(preprocess, batched=True, remove_columns=columns, load_from_cache_file=False)
    test_set = raw["test"].map(preprocess, batched=True, remove_columns=columns, load_from_cache_file=False)
    set_seed(training.seed)
    model = AutoModelForSequenceClassification.from_pretrained(
        config.model, num_labels=len(names), id2label=dict(enumerate(names)), label2id=label2id
    )
    clock = step_clock()
    trainer_args = training_arguments(
        args.result.parent / f"{args.result.stem}-trainer", config.optim, training.batch_size, training.grad_accum,
        training.max_steps, training.seed, args.bf16,
        train_sampling_strategy="group_by_length" if by_length else "random",
        per_device_eval_batch_size=training.batch_size,  # seqlm scores in batches of batch_size too
    )
    collator = default_data_collator if pad_to_max else DataCollatorWithPadding(tokenizer)
    trainer = Trainer(model=model, args=trainer_args, train_dataset=train_set, data_collator=collator, callbacks=[clock])
    trainer.train()
    predictions = trainer.predict(test_set)
    accuracy = float((np.argmax(predictions.predictions, axis=-1) == predictions.label_ids).mean())
    rate = steady_rate(clock.ends, args.warmup, args.measure, training.batch_size * training.grad_accum)
    return {"value": rate, "unit": "examples/s", **steps_run(clock, args), "test_accuracy": accuracy}


# --------------------------------------------------------------------------- predict


def predict(args: argparse.Namespace) -> dict[str, Any]:
    """examples/s of `pipeline("text-classification")` over the input file after a one-batch warm-up; the labels."""
    from transformers import pipeline

    config = load_config(PredictConfig, args.config, args.overrides)
    texts = read_texts(config.input, config.text_field)
    classifier = pipeline("text-classification", model=config.model, device="cpu", batch_size=config.batch_size)
    classifier(texts[: config.batch_size], truncation=True)  # warm-up
    started = time.perf_counter()
    outputs = classifier(texts, truncation=True)
    seconds = time.perf_counter() - started
    return {"value": len(texts) / seconds, "unit": "examples/s", "n_inputs": len(texts), "labels": [o["label"] for o in outputs]}


def read_texts(path: str, text_field: str) -> list[str]:
    """The inputs of a text (one per line) or JSONL predict input file."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    if path.endswith((".jsonl", ".json")):
        return [json.loads(line)[text_field] for line in lines if line.strip()]
    return lines


TASKS = {"tokenize-map": tokenize_map, "tokenize-raw": tokenize_raw, "pretrain": pretrain, "finetune": finetune, "predict": predict}


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
    main()
