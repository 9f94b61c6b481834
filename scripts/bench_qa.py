"""The extractive QA benchmarks of `scripts/bench.py` (`--only qa`): training and answering on XQuAD English.

Both start from the benchmark BERT as initialised (bench_tasks.prepare writes it; 4x256, 128 positions) and read
the configs in configs/bench/ (bert_qa_finetune.yaml, bert_qa_predict.yaml); the HF side is
scripts/hf_extractive_qa.py, which reads the same files.

- Training (`finetune extractive_qa`): windows/s (question + context piece, 128 tokens, 32 context tokens shared
  by neighbours; 32 windows a step) of `seqlm finetune` with its config defaults (precision auto,
  group_by_length) against `Trainer` as run_qa.py trains (fp32, random order, every window padded to
  max_length: run_qa's pad_to_max_length default; `hf_extractive_qa.py finetune`). Both leave out the first
  `qa_warmup` optimizer steps and measure the `qa_measured` after them (seqlm: its log windows, see
  bench_seqlm; HF: a TrainerCallback). seqlm's run goes on to `qa_model_steps` steps, untimed after the measured
  ones, and its model answers the predict row (a few dozen steps from scratch answer almost at random; after
  200 the answers depend on the question). Each side's test EM/F1 is in its extra (HF's after its short run).
  One run per side.
- Answering (`predict extractive_qa`, and `..., seqlm fp32`): questions/s on the test questions (the first
  `qa_questions` of them) with that model: `seqlm predict` (its defaults: precision auto, bf16 on a CPU with
  native bf16; and the same in fp32; the best answer only; after a one-batch warm-up,
  `bench_seqlm.py predict`) against what `pipeline("question-answering", batch_size=32)` ran before
  transformers 5 removed it (`hf_extractive_qa.py predict`: per question its windows, batches of 32 windows
  in input order padded to their longest, the model fp32, the pipeline's span decoding `select_starts_ends`
  without word alignment; after a warm-up on the first 32 questions). Both cut the same windows (max_length 128,
  doc_stride 32, from the predict config) and time tokenization to answers. `plan.repeats` runs per side,
  alternating, each keeping its fastest. The note gives the share of equal answers (text and character
  offsets); in fp32 below 99% is a failure: the same model on the same windows must give the same spans (float
  noise from different padding may flip a near-tie, rarely); bf16's share is stated, not judged.
"""

from __future__ import annotations

from pathlib import Path

import bench_seqlm
from bench_core import CONFIGS, REPO, Bench, fastest_alternating, first_records, require
from bench_inference import share_equal
from bench_report import Figure, Row
from bench_tasks import seqlm_training

FINETUNE = CONFIGS / "bert_qa_finetune.yaml"
PREDICT = CONFIGS / "bert_qa_predict.yaml"
TRAINER_VARIANT = "Trainer fp32, run_qa (pad to max_length)"
ANSWERS_EQUAL_AT_LEAST = 0.99


def bench_qa(bench: Bench) -> list[Row]:
    """The training row, then the predict rows (which answer with the training row's seqlm model)."""
    return [_train(bench), *_predict(bench)]


def _question_files(bench: Bench) -> dict[str, Path]:
    """The validation and test files, cut to their first `plan.qa_questions` questions (unless None)."""
    from seqlm.config.finetune import FinetuneConfig
    from seqlm.config.loading import load_config

    data = load_config(FinetuneConfig, FINETUNE, []).data
    files = {"validation": Path(data.validation), "test": Path(data.test)}
    count = bench.plan.qa_questions
    return files if count is None else {split: first_records(path, count, f"qa-{split}") for split, path in files.items()}


def _train(bench: Bench) -> Row:
    from seqlm.config.finetune import FinetuneConfig
    from seqlm.config.loading import load_config

    plan = bench.plan
    measured_to = plan.qa_warmup + plan.qa_measured
    questions = [f"data.{split}={path}" for split, path in _question_files(bench).items()]
    common = [*plan.qa_overrides, f"training.log_every={plan.qa_warmup}", *questions]
    resolved = load_config(FinetuneConfig, FINETUNE, common)
    per_step = resolved.training.batch_size * resolved.training.grad_accum

    def run_seqlm() -> Figure:
        require(REPO / resolved.model, "the preparation (the initial benchmark BERT)")
        overrides = [*common, f"training.max_steps={max(plan.qa_model_steps, measured_to)}"]
        return seqlm_training(bench, "finetune", FINETUNE, overrides, measured_to, per_step, unit="windows/s")

    def run_hf() -> Figure:
        require(REPO / resolved.model, "the preparation (the initial benchmark BERT)")
        options = ["--warmup", str(plan.qa_warmup), "--measure", str(plan.qa_measured)]
        overrides = [*common, f"training.max_steps={measured_to}"]
        process, result = bench.script("hf_extractive_qa.py", "finetune", FINETUNE, overrides, "hf-qa-finetune", *options)
        value, unit = result.pop("value"), result.pop("unit")
        return Figure(value, unit, process.peak_rss_mb, process.wall_s, result)

    seqlm = bench.measure(f"qa finetune / seqlm ({max(plan.qa_model_steps, measured_to)} steps)", run_seqlm)
    hf = bench.measure(f"qa finetune / HF {TRAINER_VARIANT} ({measured_to} steps)", run_hf)
    note = f"steps {plan.qa_warmup + 1}-{measured_to}, {per_step} windows of {resolved.training.max_length} tokens a step"
    return Row("finetune extractive_qa", TRAINER_VARIANT, seqlm, hf, note=note)


def _predict(bench: Bench) -> list[Row]:
    from seqlm.config.inference import PredictConfig
    from seqlm.config.loading import load_config

    plan = bench.plan
    inputs = [] if plan.qa_questions is None else [f"input={_question_files(bench)['test']}"]
    overrides = [*plan.qa_predict_overrides, *inputs]
    resolved = load_config(PredictConfig, PREDICT, overrides)

    def run_seqlm(precision: list[str], tag: str) -> Figure:
        require(REPO / resolved.model, "the QA fine-tuning benchmark (seqlm)")
        output = REPO / resolved.output
        output.unlink(missing_ok=True)
        process, result = bench.script("bench_seqlm.py", "predict", PREDICT, [*overrides, *precision], f"seqlm-qa-predict{tag}")
        value, _ = result.pop("value"), result.pop("unit")
        extra = {**result, "answers": bench_seqlm.predicted_answers(output)}
        return Figure(value, "questions/s", process.peak_rss_mb, process.wall_s, extra)

    def run_hf() -> Figure:
        require(REPO / resolved.model, "the QA fine-tuning benchmark (seqlm)")
        process, result = bench.script("hf_extractive_qa.py", "predict", PREDICT, overrides, "hf-qa-predict")
        value, unit = result.pop("value"), result.pop("unit")
        return Figure(value, unit, process.peak_rss_mb, process.wall_s, result)

    # seqlm's default (precision auto: bf16 on a CPU with native bf16) and seqlm fp32, against the pipeline's fp32.
    default, fp32, hf = fastest_alternating(
        bench, ("qa predict / seqlm default", lambda: run_seqlm([], "")),
        ("qa predict / seqlm fp32", lambda: run_seqlm(["precision=fp32"], "-fp32")), ("qa predict / HF pipeline loop", run_hf),
    )  # fmt: skip
    variant = f"pipeline(batch_size={resolved.batch_size}) loop"
    hf_answers = hf.extra.pop("answers", None)
    rows = []
    for name, figure in (("predict extractive_qa", default), ("predict extractive_qa, seqlm fp32", fp32)):
        judged = name.endswith("fp32") or figure.extra.get("precision") == "fp32"  # bf16 may move a near-tie: stated, not judged
        rows.append(Row(name, variant, figure, hf, note=_compare_answers(bench, figure, hf_answers, judged)))
    return rows


def _compare_answers(bench: Bench, seqlm: Figure, theirs: list | None, judged: bool) -> str:
    """'answers equal: X% of N' (text and offsets of the best answer); the share goes to seqlm's extra["answers_equal"].
    A `judged` row (the same precision on both sides) below the bar is a failure."""
    mine = seqlm.extra.pop("answers", None)
    if mine is None or theirs is None:
        return ""
    same = share_equal(mine, theirs)
    seqlm.extra["answers_equal"] = same
    if judged and same < ANSWERS_EQUAL_AT_LEAST:
        bench.failures.append(f"qa predict: seqlm and the pipeline give the same answer to only {same:.1%} of the questions")
    precision = seqlm.extra.get("precision")
    return f"answers equal: {same:.1%} of {len(mine)}" + (f"; seqlm {precision}" if precision else "")
