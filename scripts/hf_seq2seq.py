"""Reference seq2seq fine-tuning with Hugging Face `Seq2SeqTrainer`, as run_translation.py does.

    python scripts/hf_seq2seq.py --config FINETUNE.yaml [--set key=value ...] [--output-dir DIR]
        [--warmup 5] [--no-generate] [--json OUT.json]

FINETUNE.yaml is a seqlm finetune config with `task: seq2seq` and a from-scratch `model:` section, read with
seqlm's own loader (`--set` as `seqlm finetune --set`), so that both sides take everything from ONE place:
model sizes, tokenizer (the dir `seqlm tokenize` wrote), data files and fields, source_prefix,
max_source_length / max_target_length, batch size, grad_accum, max_steps (else epochs), optimizer, label
smoothing, seed, device, and the generation section. E.g. configs/tiny/t5_translate_finetune.yaml after
configs/tiny/t5_translate_tokenize.yaml.

Reproduces transformers' examples/pytorch/translation/run_translation.py (do_train, then do_predict on the
validation file; predict_with_generate=True, pad_to_max_length=False, ignore_pad_token_for_loss=True):
`load_dataset("json")` of data.train / data.validation; source_prefix prepended to every source;
`tokenizer(inputs, max_length=max_source_length, truncation=True)` and
`tokenizer(text_target=targets, max_length=max_target_length, truncation=True)`;
`DataCollatorForSeq2Seq(tokenizer, model=model, label_pad_token_id=-100)`; `Seq2SeqTrainer` with
`Seq2SeqTrainingArguments(predict_with_generate=True, generation_max_length, generation_num_beams,
label_smoothing_factor, ...)`, no checkpoints, no evaluation during training (run_translation's default);
`trainer.predict(validation)`, the generated ids (-100 → pad) decoded with skip_special_tokens and stripped,
then corpus BLEU and chrF by sacreBLEU (through `seqlm.metrics.generation.generation_scores`, the scorer of
`seqlm evaluate`: same signatures).

Differences from run_translation.py:
- The model is not `from_pretrained`: `seqlm.models.seq2seq_models.build_encoder_decoder` builds it from the
  config's model section after `set_seed(training.seed)` (seqlm seeds the same way before building), so both
  sides start from the same architecture and the same initial weights.
- Every target ends with eos: cut to max_target_length - 1 tokens, then eos appended (seqlm's rule). A T5
  tokenizer appends eos to every text itself; `seqlm tokenize`'s byte-level BPE appends none, and a model
  trained on targets without eos never learns to stop. Sources are kept as the tokenizer gives them (no eos),
  as seqlm keeps them.
- Hyper-parameters are seqlm's, translated: lr, AdamW betas / eps, weight decay, warmup_steps (an integer,
  so transformers 5's float ratio semantics never apply), schedule (linear; cosine → cosine_with_min_lr with
  min_lr_ratio; constant → constant_with_warmup), grad_clip (null → 0, no clipping), batch size (also the
  predict batch size), grad_accum, max_steps, label_smoothing → label_smoothing_factor, seed; device cpu →
  use_cpu. Trainer defaults otherwise: fp32, random order (no group_by_length). Left different: Trainer
  decays every weight but biases and norms (seqlm also spares the embeddings); Trainer's label smoother
  averages the smoothed loss per token of the batch, seqlm per token of the optimizer step (equal without
  grad_accum).
- Generation uses the config's generation section: generation_max_length = max_new_tokens + 1 (the decoder
  start token counts in max_length), generation_num_beams = num_beams, and length_penalty, early_stopping,
  no_repeat_ngram_size on the model's generation_config. Sampling is refused.
- A validation file is required (seqlm can split one off train by ratio; run_translation cannot). Only the
  final model is scored: seqlm finetune with eval_every and early stopping also keeps best/; compare with
  `seqlm evaluate` of the run's model/ (same footing) or best/ (what a seqlm user gets), with the same
  generation settings and source_prefix.

Figures (printed, and with --json written): bleu, chrf, their signatures, gen_len; train_wall_s (the wall
time of `trainer.train()`, Trainer's set-up included); train_tokens_per_s: non-padding SOURCE tokens per
second, i.e. the attention mask's sum per batch, what seqlm's `tokens_per_s` counts (its loop sums each
micro-batch's attention mask), over the optimizer steps after the first --warmup (step end times from a
TrainerCallback; the same tokens as a seqlm run with log_every = warmup); train_target_tokens_per_s
likewise for the target tokens (labels != -100); generate_s and generate_examples_per_s of trainer.predict.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from hf_trainer import step_clock, training_arguments

from seqlm.config.finetune import EncoderDecoderConfig, FinetuneConfig, Seq2SeqFinetuneConfig
from seqlm.config.loading import load_config


def read_config(path: Path, overrides: list[str]) -> Seq2SeqFinetuneConfig:
    config = load_config(FinetuneConfig, path, overrides)
    if not isinstance(config, Seq2SeqFinetuneConfig) or not isinstance(config.model, EncoderDecoderConfig):
        raise SystemExit(f"{path}: needs task: seq2seq and a from-scratch model section (family, tokenizer, sizes)")
    if config.generation.do_sample:
        raise SystemExit(f"{path}: generation.do_sample is not reproduced; the reference generates greedily or with beams")
    return config


def encoded_split(config: Seq2SeqFinetuneConfig, tokenizer: Any, file: str, columns_kept: tuple[str, ...] = ()) -> Any:
    """One jsonl file as run_translation's preprocess_function encodes it (targets ending with eos: see above)."""
    from datasets import load_dataset

    data, training = config.data, config.training
    raw = load_dataset("json", data_files={"split": file}, split="split")
    eos = tokenizer.eos_token_id

    def preprocess(batch: dict[str, list]) -> Any:
        inputs = [data.source_prefix + source for source in batch[data.source_field]]
        encoded = tokenizer(inputs, max_length=training.max_source_length, truncation=True)
        labels = tokenizer(text_target=batch[data.target_field], max_length=training.max_target_length - 1, truncation=True)
        encoded["labels"] = [ids if ids and ids[-1] == eos else [*ids, eos] for ids in labels["input_ids"]]
        return encoded

    removed = [name for name in raw.column_names if name not in columns_kept]
    return raw.map(preprocess, batched=True, remove_columns=removed, load_from_cache_file=False)


class CountingCollator:
    """The collator, and per batch it made (in order) its non-padding source and target tokens."""

    def __init__(self, collator: Any):
        self.collator, self.sources, self.targets = collator, [], []

    def __call__(self, features: list[dict]) -> Any:
        batch = self.collator(features)
        self.sources.append(int(batch["attention_mask"].sum()))
        self.targets.append(int((batch["labels"] != -100).sum()))
        return batch


def steady_rate(ends: list[float], per_batch: list[int], grad_accum: int, warmup: int, measure: int | None) -> float:
    """Tokens per second over the `measure` steps (None: all) after the first `warmup` optimizer steps."""
    last = len(ends) if measure is None else warmup + measure
    if not 0 < warmup < last <= len(ends):
        raise SystemExit(f"hf_seq2seq: {len(ends)} steps ran, need {warmup} warm-up steps and {measure or 'some'} more")
    tokens = sum(per_batch[warmup * grad_accum : last * grad_accum])
    return tokens / (ends[last - 1] - ends[warmup - 1])


def arguments(config: Seq2SeqFinetuneConfig, output_dir: Path) -> Any:
    """Seq2SeqTrainingArguments with seqlm's settings (see the module docstring); Trainer defaults otherwise."""
    from transformers import Seq2SeqTrainingArguments

    training = config.training
    return training_arguments(
        output_dir, config.optim, training.batch_size, training.grad_accum, training.max_steps or -1, training.seed, bf16=False,
        arguments_class=Seq2SeqTrainingArguments, per_device_eval_batch_size=training.batch_size,
        num_train_epochs=training.epochs, label_smoothing_factor=training.label_smoothing, use_cpu=config.device == "cpu",
        predict_with_generate=True, generation_max_length=config.generation.max_new_tokens + 1,
        generation_num_beams=config.generation.num_beams, logging_steps=max(1, (training.max_steps or 100) // 4),
    )  # fmt: skip


def run(
    config: Seq2SeqFinetuneConfig, output_dir: Path, warmup: int, measure: int | None = None, generate: bool = True
) -> dict[str, Any]:
    """Train (and unless `generate` is False, generate for the validation file and score it); the figures."""
    import numpy as np
    from transformers import AutoTokenizer, DataCollatorForSeq2Seq, Seq2SeqTrainer, set_seed

    from seqlm.models.seq2seq_models import build_encoder_decoder

    training, settings = config.training, config.generation
    tokenizer = AutoTokenizer.from_pretrained(config.model.tokenizer)
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token  # as seqlm loads a tokenizer for seq2seq
    started = time.perf_counter()
    train_set = encoded_split(config, tokenizer, config.data.train)
    preprocess_s = time.perf_counter() - started
    set_seed(training.seed)
    model = build_encoder_decoder(config.model, tokenizer)
    model.generation_config.update(
        length_penalty=settings.length_penalty,
        early_stopping=settings.early_stopping,
        no_repeat_ngram_size=settings.no_repeat_ngram_size,
    )
    collator = CountingCollator(DataCollatorForSeq2Seq(tokenizer, model=model, label_pad_token_id=-100))
    clock = step_clock()
    trainer = Seq2SeqTrainer(
        model=model, args=arguments(config, output_dir), train_dataset=train_set, data_collator=collator,
        processing_class=tokenizer, callbacks=[clock],
    )  # fmt: skip
    started = time.perf_counter()
    train_metrics = trainer.train().metrics
    train_wall_s = time.perf_counter() - started
    accum = training.grad_accum
    result: dict[str, Any] = {
        "train_wall_s": train_wall_s,
        "train_loss": train_metrics["train_loss"],
        "steps": len(clock.ends),
        "warmup_steps_excluded": warmup,
        "measured_steps": measure or len(clock.ends) - warmup,
        "train_tokens_per_s": steady_rate(clock.ends, collator.sources, accum, warmup, measure),
        "train_target_tokens_per_s": steady_rate(clock.ends, collator.targets, accum, warmup, measure),
        "tokens_counted": "non-padding source tokens (attention mask), as seqlm's tokens_per_s",
        "train_examples": len(train_set),
        "batches_collated": len(collator.sources),  # steps x grad_accum, plus the one the data loader fetched ahead
        "preprocess_s": preprocess_s,
    }
    if not generate:
        return result
    if config.data.validation is None:
        raise SystemExit("hf_seq2seq: generation needs data.validation (a file)")
    validation = encoded_split(config, tokenizer, config.data.validation, columns_kept=(config.data.target_field,))
    references = list(validation[config.data.target_field])
    started = time.perf_counter()
    predictions = trainer.predict(validation.remove_columns(config.data.target_field), metric_key_prefix="predict")
    generate_s = time.perf_counter() - started
    ids = np.where(predictions.predictions != -100, predictions.predictions, tokenizer.pad_token_id)
    texts = [text.strip() for text in tokenizer.batch_decode(ids, skip_special_tokens=True)]
    from seqlm.metrics.generation import generation_scores

    scores = generation_scores(texts, references, [row[1:] for row in ids.tolist()], tokenizer.pad_token_id)
    keys = ("bleu", "chrf", "bleu_signature", "chrf_signature", "gen_len", "gen_len_unit", "examples")
    result.update({key: scores[key] for key in keys})
    result.update(generate_s=generate_s, generate_examples_per_s=len(texts) / generate_s, generation=settings.model_dump(),
                  samples=[{"output": t, "reference": r} for t, r in zip(texts[:3], references[:3])])  # fmt: skip
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, required=True, help="a seqlm seq2seq finetune config (from-scratch model)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="key.path=value, as seqlm's --set")
    parser.add_argument(
        "--output-dir", type=Path, default=None, help="Trainer's output_dir (default: the config's output_dir + '-hf')"
    )
    parser.add_argument("--warmup", type=int, default=5, help="optimizer steps left out of train_tokens_per_s")
    parser.add_argument("--no-generate", action="store_true", help="train only (no generation, no scores)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    config = read_config(args.config, args.overrides)
    output_dir = args.output_dir or Path(f"{config.output_dir}-hf")
    result = {
        "config": str(args.config),
        "overrides": args.overrides,
        **run(config, output_dir, args.warmup, generate=not args.no_generate),
    }
    print(json.dumps({key: value for key, value in result.items() if key != "generation"}, indent=1))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
