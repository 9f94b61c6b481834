"""Extractive QA end to end through the CLI on the tiny BERT `conftest.tiny_bert` pretrains (tokenize →
pretrain mlm → finetune extractive_qa → evaluate → predict), and its unit parts: SQuAD EM/F1 against the
official script, offsets on multi-byte text, the SQuAD file layouts.

The synthetic span task: a context of filler words from a 23-word list holds "the friend is NAME ." once
(10 names); the question is always "who is the friend ?". A third of the contexts are long (50–70 filler words
before the answer), so with 64-token windows (question 7 tokens + 3 special tokens) the answer is in a later
window and the earlier ones train [CLS]. An untrained span head answers at random (EM near 0); the tiny BERT
reached EM 100 on validation after 50 of 100 steps (asserted: ≥ 90), so a broken loss, label or answer
reader fails it. CPU runs are deterministic, so the result is the same on every run on one machine.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from conftest import REPO, invoke, jsonl_rows, seqlm, sets, write_jsonl

from seqlm.data.qa_windows import encode_qa
from seqlm.io.qa_records import read_qa
from seqlm.metrics.squad import squad_scores
from seqlm.tasks.qa_answers import read_answers

FILLER = "she was not very much in the house of her own with all that could be said to have been at one time".split()
NAMES = "emma anne harriet jane frank elton knightley weston martin churchill".split()
QUESTION = "who is the friend ?"
CONFIG = REPO / "configs" / "tiny" / "bert_qa_finetune.yaml"


def qa_rows(n: int, seed: int, long_share: float = 1 / 3) -> list[dict]:
    """SQuAD-layout rows of the synthetic task (see the module docstring)."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        name = rng.choice(NAMES)
        long = rng.random() < long_share
        before = " ".join(rng.choices(FILLER, k=rng.randint(50, 70) if long else rng.randint(4, 12)))
        after = " ".join(rng.choices(FILLER, k=rng.randint(4, 12)))
        context = f"{before} the friend is {name} . {after}"
        start = len(before) + len(" the friend is ")
        rows.append({"id": f"{seed}-{i}", "title": "t", "context": context, "question": QUESTION,
                     "answers": {"text": [name], "answer_start": [start]}})  # fmt: skip
    return rows


def finetune_args(model: Path, root: Path, run: Path, **overrides: object) -> list[str]:
    """configs/tiny/bert_qa_finetune.yaml on the synthetic task's files under `root`."""
    settings = {"model": model, "output_dir": run, "data__train": root / "train.jsonl", "data__validation": root / "validation.jsonl",
                "data__test": "null", "training__batch_size": 16, "training__max_steps": 100, "training__eval_every": 50,
                "optim__lr": 3e-3, "optim__warmup_steps": 10, **overrides}  # fmt: skip
    return ["finetune", str(CONFIG), *sets(**settings), "--device", "cpu"]


def write_task(root: Path, n_train: int = 400, n_validation: int = 40) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    write_jsonl(root / "train.jsonl", qa_rows(n_train, seed=1))
    write_jsonl(root / "validation.jsonl", qa_rows(n_validation, seed=2))
    return root


@pytest.fixture(scope="module")
def qa_run(tiny_bert: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = write_task(tmp_path_factory.mktemp("qa"))
    seqlm(*finetune_args(tiny_bert, root, root / "run"), "-q")
    return root / "run"


# --------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_a_tiny_bert_learns_the_span_task_and_evaluate_agrees(qa_run: Path, tmp_path: Path) -> None:
    metrics = json.loads((qa_run / "metrics.json").read_text())
    assert metrics["task"] == "extractive_qa" and metrics["best_val_exact_match"] >= 90, metrics
    config = json.loads((qa_run / "best" / "config.json").read_text())
    assert config["architectures"] == ["BertForQuestionAnswering"]
    seqlm("evaluate", "--model", qa_run / "best", "--data", qa_run.parent / "validation.jsonl",
          *sets(output_dir=tmp_path, seq_len=64, qa__doc_stride=16), "-q")  # fmt: skip
    scores = json.loads((tmp_path / "metrics.json").read_text())
    assert scores["exact_match"] == metrics["best_val_exact_match"] and scores["f1"] == metrics["best_val_f1"]
    assert scores["questions"] == 40 and scores["split_contexts"] > 0


@pytest.mark.slow
def test_predict_answers_in_input_order_from_a_later_window_and_matches_the_pipeline(qa_run: Path, tmp_path: Path) -> None:
    rows = qa_rows(12, seed=3, long_share=0.5)
    rows.append({"id": "far", "question": QUESTION,
                 "context": " ".join(FILLER * 4) + " the friend is jane . " + " ".join(FILLER[:5])})  # fmt: skip
    inputs = write_jsonl(
        tmp_path / "in.jsonl", [{"id": r["id"], "question": r["question"], "context": r["context"]} for r in rows]
    )
    out = tmp_path / "out.jsonl"
    seqlm("predict", "--model", qa_run / "best", "--input", inputs, "--output", out, "--top-k", "3",
          *sets(text_field="question", text_pair_field="context", max_length=64, qa__doc_stride=16), "-q")  # fmt: skip
    got = jsonl_rows(out)
    assert [r["id"] for r in got] == [r["id"] for r in rows]
    for record, row in zip(got, rows):
        assert row["context"][record["start"] : record["end"]] == record["answer"]
        assert len(record["alternatives"]) == 3 and record["alternatives"][0]["answer"] == record["answer"]
    assert [r["answer"] for r in got[:-1]] == [r["answers"]["text"][0] for r in rows[:-1]]
    far = got[-1]
    tokenizer = transformers.AutoTokenizer.from_pretrained(qa_run / "best")
    first_window = tokenizer(QUESTION, rows[-1]["context"], truncation="only_second", max_length=64, return_offsets_mapping=True)
    assert far["answer"] == "jane" and far["start"] > max(end for _, end in first_window["offset_mapping"])  # beyond window 1

    reference = _pipeline_answers(qa_run / "best", rows, top_k=3, max_length=64, stride=16, max_answer_len=30)
    for record, expected in zip(got, reference):
        assert [(a["answer"], a["start"], a["end"]) for a in record["alternatives"]] == [(a[0], a[1], a[2]) for a in expected]
        assert [a["score"] for a in record["alternatives"]] == pytest.approx([a[3] for a in expected], rel=1e-5)


@pytest.mark.slow
def test_predict_needs_the_context_field_and_refuses_an_empty_question(qa_run: Path, tmp_path: Path) -> None:
    inputs = write_jsonl(
        tmp_path / "in.jsonl", [{"question": QUESTION, "context": "the friend is emma ."}, {"question": " ", "context": "x"}]
    )
    result = invoke("predict", "--model", qa_run / "best", "--input", inputs, *sets(text_field="question"))
    assert (
        result.exit_code == 2 and "set text_field to the question's field and text_pair_field to the context's" in result.stderr
    )
    result = invoke(
        "predict", "--model", qa_run / "best", "--input", inputs, *sets(text_field="question", text_pair_field="context")
    )
    assert result.exit_code == 3 and f"{inputs}:2: field 'question' is empty" in result.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "out.jsonl").exists()


def _pipeline_answers(
    model_dir: Path, rows: list[dict], top_k: int, max_length: int, stride: int, max_answer_len: int
) -> list[list]:
    """What `pipeline("question-answering", model=DIR)` answered (transformers 4.x, align_to_words=False); transformers
    5 removed that pipeline, but ships its span decoding (`select_starts_ends`) in the document-QA pipeline. Its
    preprocessing: question first, truncation "only_second", overflowing windows, p_mask on every token that is
    not context except [CLS]; each window run alone; answers of all windows sorted by score, the top_k kept (a
    span two windows share counted once, as seqlm lists it)."""
    from transformers.pipelines.document_question_answering import select_starts_ends

    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    model = transformers.AutoModelForQuestionAnswering.from_pretrained(model_dir).eval()
    results = []
    for row in rows:
        encoded = tokenizer(row["question"], row["context"], truncation="only_second", max_length=max_length, stride=stride,
                            return_overflowing_tokens=True, return_offsets_mapping=True)  # fmt: skip
        answers, null = [], 1000000
        for w in range(len(encoded["input_ids"])):
            ids = np.asarray(encoded["input_ids"][w])
            p_mask = np.asarray([sequence != 1 for sequence in encoded.sequence_ids(w)], dtype=np.int64)
            p_mask[ids == tokenizer.cls_token_id] = 0
            with torch.no_grad():
                inputs = {key: torch.tensor([encoded[key][w]]) for key in ("input_ids", "attention_mask", "token_type_ids")}
                output = model(**inputs)
            starts, ends, scores, null = select_starts_ends(
                output.start_logits.numpy(), output.end_logits.numpy(), p_mask, np.asarray([encoded["attention_mask"][w]]),
                null, top_k, False, max_answer_len,
            )  # fmt: skip
            offsets = encoded["offset_mapping"][w]
            for s, e, score in zip(starts, ends, scores):
                begin, end = offsets[s][0], offsets[e][1]
                answers.append((row["context"][begin:end], begin, end, float(score)))
        # seqlm lists a span found in two overlapping windows once (the pipeline listed it twice): so does the reference.
        unique = {}
        for answer in sorted(answers, key=lambda a: a[3], reverse=True):
            unique.setdefault(answer[1:3], answer)
        results.append(list(unique.values())[:top_k])
    return results


# --------------------------------------------------------------------------- SQuAD EM/F1 against the official script
# The reference below is the official SQuAD v1.1 evaluation script's scoring, verbatim (evaluate-v1.1.py, from
# https://rajpurkar.github.io/SQuAD-explorer/, as also shipped in Hugging Face `evaluate`'s "squad" metric,
# compute_score.py); only its file handling (argparse, json.load) is left out.

import re  # noqa: E402
import string  # noqa: E402
from collections import Counter  # noqa: E402


def official_normalize_answer(s):
    """Lower text and remove punctuation, articles and extra whitespace."""

    def remove_articles(text):
        return re.sub(r"\b(a|an|the)\b", " ", text)

    def white_space_fix(text):
        return " ".join(text.split())

    def remove_punc(text):
        exclude = set(string.punctuation)
        return "".join(ch for ch in text if ch not in exclude)

    def lower(text):
        return text.lower()

    return white_space_fix(remove_articles(remove_punc(lower(s))))


def official_f1_score(prediction, ground_truth):
    prediction_tokens = official_normalize_answer(prediction).split()
    ground_truth_tokens = official_normalize_answer(ground_truth).split()
    common = Counter(prediction_tokens) & Counter(ground_truth_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0
    precision = 1.0 * num_same / len(prediction_tokens)
    recall = 1.0 * num_same / len(ground_truth_tokens)
    f1 = (2 * precision * recall) / (precision + recall)
    return f1


def official_exact_match_score(prediction, ground_truth):
    return official_normalize_answer(prediction) == official_normalize_answer(ground_truth)


def official_metric_max_over_ground_truths(metric_fn, prediction, ground_truths):
    scores_for_ground_truths = []
    for ground_truth in ground_truths:
        score = metric_fn(prediction, ground_truth)
        scores_for_ground_truths.append(score)
    return max(scores_for_ground_truths)


def official_evaluate(dataset, predictions):
    f1 = exact_match = total = 0
    for article in dataset:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                total += 1
                if qa["id"] not in predictions:
                    continue
                ground_truths = list(map(lambda x: x["text"], qa["answers"]))
                prediction = predictions[qa["id"]]
                exact_match += official_metric_max_over_ground_truths(official_exact_match_score, prediction, ground_truths)
                f1 += official_metric_max_over_ground_truths(official_f1_score, prediction, ground_truths)
    exact_match = 100.0 * exact_match / total
    f1 = 100.0 * f1 / total
    return {"exact_match": exact_match, "f1": f1}


def test_exact_match_and_f1_equal_the_official_squad_script() -> None:
    cases = [
        ("The Eiffel Tower", ["Eiffel Tower", "the tower"]), ("an apple a day", ["apple day"]), ("1943", ["1943."]),
        ("", ["something"]), ("the", ["a"]), ("Denver Broncos", ["Denver Broncos", "Broncos"]),
        ("Café  au   lait!", ["cafe au lait", "Café au lait"]), ("Tesla died", ["7 January 1943"]), ("x y x", ["x x y z"]),
    ]  # fmt: skip
    rng = random.Random(0)
    words = ["a", "the", "An", "Paris", "paris,", "1943", "it's", "—", "Tesla", "(died)", "é", "  "]
    for _ in range(300):
        phrase = lambda: " ".join(rng.choices(words, k=rng.randint(0, 5)))  # noqa: E731
        cases.append((phrase(), [phrase() for _ in range(rng.randint(1, 3))]))
    dataset = [
        {"paragraphs": [{"qas": [{"id": str(i), "answers": [{"text": g} for g in golds]} for i, (_, golds) in enumerate(cases)]}]}
    ]
    expected = official_evaluate(dataset, {str(i): prediction for i, (prediction, _) in enumerate(cases)})
    got = squad_scores([prediction for prediction, _ in cases], [golds for _, golds in cases])
    assert got["exact_match"] == expected["exact_match"] and got["f1"] == expected["f1"]  # equal, not close
    assert "has_ans_f1" not in got


def test_unanswerable_questions_add_has_ans_and_no_ans_scores() -> None:
    got = squad_scores(["Paris", "", "a", "Rome"], [["Paris"], [], [], ["Paris"]])
    assert got["exact_match"] == 75.0 and got["has_ans_exact_match"] == 50.0 and got["no_ans_exact_match"] == 100.0
    assert got["has_ans_questions"] == 2 and got["no_ans_questions"] == 2  # "a" normalises to "": a right "no answer"


# --------------------------------------------------------------------------- offsets, windows, file layouts


def test_offsets_round_trip_on_multi_byte_text(tiny_tokenizer) -> None:
    """Every answer span, labelled into its window and read back from one-hot logits, is the context's own characters."""
    tokenizer = tiny_tokenizer("wordpiece", lowercase=True)
    context = "Zoë Ångström met 東京 friends — “naïve” café owners — at 9:30 in São Paulo 🎉 with Émile."
    answers = ["Zoë Ångström", "東京", "“naïve”", "café owners", "São Paulo", "Émile"]
    spans = [(context.index(a), context.index(a) + len(a)) for a in answers]
    windows = encode_qa(tokenizer, ["who ?"] * len(spans), [context] * len(spans), 24, 4, spans)
    assert windows.n_split == len(spans)  # several windows each: every answer is read across them
    logits = []
    for w in range(len(windows)):
        values = np.full((2, len(windows.input_ids[w])), -50.0, dtype=np.float32)
        values[0, windows.start_positions[w]] = values[1, windows.end_positions[w]] = 50.0
        logits.append(values)
    found = read_answers(windows, logits, [context] * len(spans), 1, 30, None)
    assert [(a[0].text, a[0].start, a[0].end) for a in found] == [(a, s, e) for a, (s, e) in zip(answers, spans)]


def test_the_nested_squad_json_reads_as_its_jsonl_rows(tmp_path: Path) -> None:
    rows = jsonl_rows(REPO / "data" / "tasks" / "extractive_qa" / "xquad_en" / "validation.jsonl")[:20]
    paragraphs: dict[str, dict] = {}
    for row in rows:
        paragraph = paragraphs.setdefault(row["context"], {"context": row["context"], "qas": []})
        answers = [{"text": t, "answer_start": s} for t, s in zip(row["answers"]["text"], row["answers"]["answer_start"])]
        paragraph["qas"].append({"id": row["id"], "question": row["question"], "answers": answers})
    squad = tmp_path / "dev.json"
    squad.write_text(json.dumps({"version": "1.1", "data": [{"title": "x", "paragraphs": list(paragraphs.values())}]}))
    nested, flat = read_qa(str(squad)), read_qa(str(write_jsonl(tmp_path / "dev.jsonl", rows)))
    assert [(e.id, e.question, e.context, e.answers) for e in nested] == [(e.id, e.question, e.context, e.answers) for e in flat]
    assert nested[0].where == f"{squad}: data[0].paragraphs[0].qas[0]"


def test_a_wrong_answer_start_can_be_skipped_and_counted(tmp_path: Path) -> None:
    rows = qa_rows(3, seed=4)
    rows[1]["answers"]["answer_start"] = [0]
    rows[2]["answers"] = {
        "text": [rows[2]["answers"]["text"][0], "friend"],
        "answer_start": [rows[2]["answers"]["answer_start"][0], 1],
    }
    examples = read_qa(str(write_jsonl(tmp_path / "t.jsonl", rows)), skip_bad_answers=True)
    assert len(examples) == 2 and examples.skipped_answers == 2 and examples.skipped_questions == 1
    result = invoke(
        "finetune", CONFIG, *sets(model=tmp_path / "none", output_dir=tmp_path / "run", data__train=tmp_path / "t.jsonl")
    )
    assert (
        result.exit_code == 3
        and f"{tmp_path / 't.jsonl'}:2: answer 1" in result.stderr
        and "set data.skip_bad_answers" in result.stderr
    )


def test_unanswerable_questions_train_cls_and_the_threshold_reads_them_as_no_answer(tiny_tokenizer) -> None:
    """SQuAD v2: a question without answers labels every window [CLS]; with qa.null_score_diff_threshold set, the answer
    is "" when log P(no answer) - log P(best span) exceeds it, and the best span otherwise."""
    tokenizer = tiny_tokenizer("wordpiece", lowercase=True)
    windows = encode_qa(
        tokenizer, [QUESTION, QUESTION], ["the friend is emma .", "the friend is emma ."], 32, 4, [None, (14, 18)]
    )
    assert windows.start_positions[0] == windows.end_positions[0] == 0  # [CLS]
    start, end = int(windows.start_positions[1]), int(windows.end_positions[1])
    logits = []
    for _ in range(2):
        values = np.zeros((2, len(windows.input_ids[0])), dtype=np.float32)
        values[:, 0] = 2.0  # [CLS]: e^2 / e^3 = e^-1 as likely as the span's start, and as its end
        values[0, start], values[1, end] = 3.0, 3.0
        logits.append(values)
    contexts = ["the friend is emma ."] * 2
    assert [a[0].text for a in read_answers(windows, logits, contexts, 1, 30, None)] == ["emma", "emma"]
    assert [a[0].text for a in read_answers(windows, logits, contexts, 1, 30, -2.5)] == ["", ""]  # -2 > -2.5: no answer
    assert [a[0].text for a in read_answers(windows, logits, contexts, 1, 30, -1.5)] == ["emma", "emma"]
