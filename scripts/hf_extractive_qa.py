"""Reference extractive QA with Hugging Face: `Trainer` as run_qa.py trains, and what `pipeline("question-answering")` answered.

    python scripts/hf_extractive_qa.py finetune --config FINETUNE.yaml --result OUT.json [--set key=value ...] [--warmup N] [--measure N]
    python scripts/hf_extractive_qa.py predict --config PREDICT.yaml --result OUT.json [--set key=value ...]

Both read a seqlm config with seqlm's own loader (`--set` as seqlm's), so both sides take everything from ONE
place (e.g. configs/minilm/xquad_finetune.yaml and xquad_predict.yaml; `model: minilm` is the MiniLM wheel's
directory, as for seqlm); the command line is `hf_trainer.run_task`'s, shared with the bench's other HF scripts.
The figures go to OUT.json and are printed.

`finetune`: FINETUNE.yaml a `task: extractive_qa` finetune config, data.train / data.test JSONL in the SQuAD v1.1
layout (the config's question/context/answers fields). Reproduces transformers'
examples/pytorch/question-answering/run_qa.py (v1.1, pad_to_max_length=True) with do_train + do_predict:
`prepare_train_features` (questions lstripped, truncation "only_second", overflowing windows of
training.max_length sharing qa.doc_stride tokens (null: seqlm's default, a third of the window), offsets; a
window without the whole first answer labelled [CLS]), `default_data_collator`, `Trainer` fp32 in random order
with no checkpoints (its output_dir: OUT-trainer beside OUT.json) and no evaluation during training;
`set_seed(training.seed)` before the model is built (`AutoModelForQuestionAnswering.from_pretrained(model)`). Hyper-parameters are seqlm's, translated by
`hf_trainer.training_arguments` (lr, betas, eps, weight decay, warmup_steps, schedule, grad_clip, batch_size,
grad_accum, max_steps else epochs, seed). Then the test questions: run_qa's `postprocess_qa_predictions` (the
n_best 20 start and end logits of each window, spans of at most qa.max_answer_length tokens, ranked by start +
end logit across the windows of a question), scored by SQuAD EM/F1 (percent, `seqlm.metrics.squad`, equal to
the official script). `value`: training windows/s over the `--measure` optimizer steps after the first
`--warmup` (a TrainerCallback's step end times; every window counts, all padded to max_length). Differences
from run_qa.py: the hyper-parameters; JSONL read into plain lists (no `datasets`); no validation split. Left
different from seqlm: Trainer decays every weight but biases and norms (seqlm also spares the embeddings);
the span head's initial weights (both seeded, drawn differently); fp32 and random order (Trainer's defaults).

`predict`: PREDICT.yaml a predict config on an extractive QA model (text_field the question, text_pair_field
the context, JSONL input). What `pipeline("question-answering", model=..., batch_size=N)` of transformers 4.x
ran with `top_k` (1 unless the config sets it), `max_seq_len=max_length`, `doc_stride=qa.doc_stride` (both
required: the pipeline's defaults differ from seqlm's), `max_answer_len=qa.max_answer_length`,
`align_to_words=False`; transformers 5 removed that pipeline but ships its span decoding (`select_starts_ends`,
in the document-QA pipeline). Per question, in input order: one tokenizer call (question first, not stripped,
truncation "only_second", overflowing windows, offsets); p_mask 1 on every token that is not context except
[CLS]; the windows of all questions in order, N at a time, right-padded to the batch's longest (the pipeline's
pad_collate_fn: p_mask padded with 1), the model fp32 under no_grad; per window `select_starts_ends`, its spans
read back as the characters of their first and last tokens; per question the spans of all its windows sorted by
score, the top_k kept. Left out: the SquadExample the pipeline also built per question (a Python loop over
the context's characters, used only for slow tokenizers and word alignment), so this is at least as fast as the
pipeline was. A warm-up on the first N questions, then all of them timed, tokenization to answers.
`value`: questions/s; `answers`: the best answer per question, [text, start, end].
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from hf_trainer import run_task, steady_rate, step_clock, steps_run, training_arguments

from seqlm.config.finetune import ExtractiveQAFinetuneConfig, FinetuneConfig
from seqlm.config.inference import PredictConfig
from seqlm.config.loading import load_config
from seqlm.data.qa_windows import default_stride
from seqlm.metrics.squad import squad_scores
from seqlm.models.packaged import packaged_model_path

N_BEST = 20  # run_qa.py's n_best_size


def read_jsonl(path: str | Path) -> list[dict]:
    if not str(path).endswith(".jsonl"):
        raise SystemExit(f"hf_extractive_qa: {path}: the reference reads JSONL files only")
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def model_directory(model: str) -> str:
    """The config's model: a directory, or a packaged model's (`minilm`), as seqlm resolves it."""
    found = packaged_model_path(model)
    return str(found) if found is not None else model


# --------------------------------------------------------------------------- finetune (run_qa.py)


def windows(questions: list[str], contexts: list[str], tokenizer: Any, max_length: int, stride: int) -> Any:
    """run_qa's tokenization: questions lstripped, padded to max_length."""
    return tokenizer(
        [question.lstrip() for question in questions], contexts, truncation="only_second", max_length=max_length,
        stride=stride, return_overflowing_tokens=True, return_offsets_mapping=True, padding="max_length",
    )  # fmt: skip


def train_features(records: list[dict], fields: Any, tokenizer: Any, max_length: int, stride: int) -> list[dict]:
    """run_qa's prepare_train_features."""
    enc = windows(
        [r[fields.question_field] for r in records], [r[fields.context_field] for r in records], tokenizer, max_length, stride
    )
    features = []
    for i, offsets in enumerate(enc["offset_mapping"]):
        ids = enc["input_ids"][i]
        cls = ids.index(tokenizer.cls_token_id)
        sequence = enc.sequence_ids(i)
        answers = records[enc["overflow_to_sample_mapping"][i]][fields.answers_field]
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


def run_qa_answers(model: Any, questions: list[str], contexts: list[str], tokenizer: Any, max_length: int, stride: int,
                   max_answer_length: int, batch_size: int) -> list[str]:  # fmt: skip
    """run_qa's prepare_validation_features + postprocess_qa_predictions (v1.1: never the null answer)."""
    import torch

    enc = windows(questions, contexts, tokenizer, max_length, stride)
    model.eval()
    best: dict[int, tuple[float, str]] = {}
    keys = [key for key in ("input_ids", "attention_mask", "token_type_ids") if key in enc]
    for begin in range(0, len(enc["input_ids"]), batch_size):
        batch = {key: torch.tensor(enc[key][begin : begin + batch_size], device=model.device) for key in keys}
        with torch.no_grad():
            out = model(**batch)
        for row, (starts, ends) in enumerate(zip(out.start_logits.float().cpu().numpy(), out.end_logits.float().cpu().numpy())):
            i = begin + row
            example = enc["overflow_to_sample_mapping"][i]
            offsets = [o if s == 1 else None for o, s in zip(enc["offset_mapping"][i], enc.sequence_ids(i))]
            for s in np.argsort(starts)[-1 : -N_BEST - 1 : -1]:
                for e in np.argsort(ends)[-1 : -N_BEST - 1 : -1]:
                    if offsets[s] is None or offsets[e] is None or e < s or e - s + 1 > max_answer_length:
                        continue
                    score = float(starts[s] + ends[e])
                    if example not in best or score > best[example][0]:
                        best[example] = (score, contexts[example][offsets[s][0] : offsets[e][1]])
    return [best.get(i, (0.0, ""))[1] for i in range(len(questions))]


def finetune(args: argparse.Namespace) -> dict[str, Any]:
    """windows/s of Trainer fine-tuning as run_qa.py, after `--warmup` steps; test EM/F1 (see the module docstring)."""
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer, Trainer, default_data_collator, set_seed

    started = time.perf_counter()
    config = load_config(FinetuneConfig, args.config, args.overrides)
    if not isinstance(config, ExtractiveQAFinetuneConfig):
        raise SystemExit(f"hf_extractive_qa: {args.config}: needs task: extractive_qa")
    data, training = config.data, config.training
    stride = config.qa.doc_stride if config.qa.doc_stride is not None else default_stride(training.max_length)
    model_dir = model_directory(config.model)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    train = train_features(read_jsonl(data.train), data, tokenizer, training.max_length, stride)
    set_seed(training.seed)
    model = AutoModelForQuestionAnswering.from_pretrained(model_dir)
    clock = step_clock()
    trainer_args = training_arguments(
        args.result.parent / f"{args.result.stem}-trainer", config.optim, training.batch_size, training.grad_accum,
        training.max_steps or -1, training.seed, bf16=False, num_train_epochs=training.epochs, use_cpu=config.device == "cpu",
        per_device_eval_batch_size=training.batch_size,
    )  # fmt: skip
    trainer = Trainer(model=model, args=trainer_args, train_dataset=train, data_collator=default_data_collator, callbacks=[clock])
    train_started = time.perf_counter()
    trainer.train()
    train_s = time.perf_counter() - train_started
    windows_per_step = training.batch_size * training.grad_accum
    result: dict[str, Any] = {
        "value": steady_rate(clock.ends, args.warmup, args.measure, windows_per_step), "unit": "windows/s", **steps_run(clock, args),
        "train_windows": len(train), "train_s": train_s, "max_length": training.max_length, "doc_stride": stride,
    }  # fmt: skip
    if data.test is not None:
        test = read_jsonl(data.test)
        answers = run_qa_answers(model, [r[data.question_field] for r in test], [r[data.context_field] for r in test], tokenizer,
                                 training.max_length, stride, config.qa.max_answer_length, training.batch_size)  # fmt: skip
        scores = squad_scores(answers, [r[data.answers_field]["text"] for r in test])
        result.update({f"test_{key}": value for key, value in scores.items()}, test_questions=len(test))
    result["whole_s"] = time.perf_counter() - started
    print(json.dumps(result))
    return result


# --------------------------------------------------------------------------- predict (the 4.x pipeline)


def predict(args: argparse.Namespace) -> dict[str, Any]:
    """questions/s of what pipeline("question-answering", batch_size=N) ran, after a warm-up (see the module docstring)."""
    import torch
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer
    from transformers.pipelines.document_question_answering import select_starts_ends

    config = load_config(PredictConfig, args.config, args.overrides)
    if config.max_length is None or config.qa.doc_stride is None or config.text_pair_field is None:
        raise SystemExit(f"hf_extractive_qa: {args.config}: set max_length, qa.doc_stride and text_pair_field")
    records = read_jsonl(config.input)
    questions, contexts = [r[config.text_field] for r in records], [r[config.text_pair_field] for r in records]
    model_dir = model_directory(config.model)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForQuestionAnswering.from_pretrained(model_dir, dtype=torch.float32).eval()
    top_k = config.top_k if "top_k" in config.model_fields_set else 1
    names = tokenizer.model_input_names
    pads = {"input_ids": tokenizer.pad_token_id or 0, "attention_mask": 0, "token_type_ids": 0, "p_mask": 1}

    def pipeline_windows(question: str, context: str) -> list[dict]:
        """The pipeline's preprocess of one question: its windows, each with its p_mask and offsets."""
        enc = tokenizer(question, context, truncation="only_second", max_length=config.max_length, stride=config.qa.doc_stride,
                        return_token_type_ids=True, return_overflowing_tokens=True, return_offsets_mapping=True,
                        return_special_tokens_mask=True)  # fmt: skip
        found = []
        for w in range(len(enc["input_ids"])):
            ids = np.asarray(enc["input_ids"][w])
            p_mask = np.asarray([sequence != 1 for sequence in enc.sequence_ids(w)], dtype=np.int64)
            p_mask[ids == tokenizer.cls_token_id] = 0
            found.append(
                {
                    **{key: np.asarray(enc[key][w]) for key in names if key in enc},
                    "p_mask": p_mask,
                    "offsets": enc["offset_mapping"][w],
                }
            )
        return found

    def answer(questions: list[str], contexts: list[str]) -> list[list[dict]]:
        owners, chunks = [], []
        for i, (question, context) in enumerate(zip(questions, contexts)):
            for chunk in pipeline_windows(question, context):
                owners.append(i)
                chunks.append(chunk)
        found: list[list[dict]] = [[] for _ in questions]
        for begin in range(0, len(chunks), config.batch_size):
            batch = chunks[begin : begin + config.batch_size]
            width = max(len(chunk["input_ids"]) for chunk in batch)
            padded = {key: np.stack([np.pad(c[key], (0, width - len(c[key])), constant_values=pad) for c in batch])
                      for key, pad in pads.items() if key in batch[0]}  # fmt: skip
            with torch.no_grad():
                output = model(**{key: torch.from_numpy(padded[key]) for key in names if key in padded})
            starts, ends = output.start_logits.numpy(), output.end_logits.numpy()
            for row, chunk in enumerate(batch):
                s_, e_, scores, _ = select_starts_ends(
                    starts[row : row + 1], ends[row : row + 1], padded["p_mask"][row : row + 1], padded["attention_mask"][row : row + 1],
                    1000000, top_k, False, config.qa.max_answer_length,
                )  # fmt: skip
                owner = owners[begin + row]
                for s, e, score in zip(s_, e_, scores):
                    start, end = chunk["offsets"][s][0], chunk["offsets"][e][1]
                    found[owner].append({"score": float(score), "start": start, "end": end, "answer": contexts[owner][start:end]})
        return [sorted(answers, key=lambda a: a["score"], reverse=True)[:top_k] for answers in found]

    answer(questions[: config.batch_size], contexts[: config.batch_size])  # warm-up
    started = time.perf_counter()
    answers = answer(questions, contexts)
    seconds = time.perf_counter() - started
    best = [[a[0]["answer"], a[0]["start"], a[0]["end"]] if a else ["", 0, 0] for a in answers]
    result = {"value": len(questions) / seconds, "unit": "questions/s", "seconds": seconds, "n_inputs": len(questions),
              "batch_size": config.batch_size, "max_length": config.max_length, "doc_stride": config.qa.doc_stride, "answers": best}  # fmt: skip
    print(json.dumps({key: value for key, value in result.items() if key != "answers"}))
    return result


TASKS = {"finetune": finetune, "predict": predict}


def main() -> None:
    run_task(__doc__.split("\n\n")[0], TASKS)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
    main()
