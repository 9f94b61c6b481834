"""The seq2seq benchmarks of `scripts/bench.py` (`--only seq2seq`, `--only generate`) and their preparation.

- `prepare`: `seqlm tokenize configs/bench/t5_translate_tokenize.yaml`, the BPE both sides read.
- `bench_seq2seq`: tokens/s of training the benchmark T5 from scratch on es→en (t5_translate_finetune.yaml):
  `seqlm finetune` with its config defaults (precision auto, group_by_length) against `Seq2SeqTrainer` with
  Trainer's defaults (fp32, random order; `bench_hf_seq2seq.py seq2seq`, which builds the same model from the
  same file, seeded). Both count what seqlm's tokens_per_s counts: the non-padding source tokens (the
  attention mask's sum) of each step; both leave out the first `seq2seq_warmup` optimizer steps and measure
  the `seq2seq_measured` after them (seqlm: its log windows, see bench_seqlm). `plan.repeats` runs per side,
  alternating, each side keeping its fastest. seqlm's run leaves the model the generation rows translate with.
- `bench_generate`: examples/s of translating the validation sources (t5_translate_predict.yaml; the first
  `plan.generate_inputs` of them) with the generation model: the same T5 trained `plan.generate_model_steps`
  steps by the preparation, untimed (the seq2seq row's few dozen steps leave a model that answers "." and
  stops, which would time per-batch overhead, not decoding; after 400 steps it starts a sentence and then, for
  360 of the 435 verses, repeats a word to the 64-token limit: decoding at its longest, the least that rows
  leaving the batch early can gain). Rows: greedy (precision fp32, as t5_translate_predict.yaml says), greedy with `precision: auto` (predict's
  default: bf16 where the CPU has it natively), 4 beams (fp32): `seqlm predict` (after a one-batch warm-up, `bench_seqlm.py predict`)
  against `model.generate` fp32 on batches of 32 in input order, what the text2text-generation pipeline ran
  before transformers 5 removed it (`bench_hf_seq2seq.py generate`). Each side runs `plan.repeats` times,
  alternating, and keeps its fastest. Each row's note gives the share of equal outputs; under greedy at the
  same precision, below 95% is a failure (the same model and inputs must give the same text; float noise
  from different padding may flip a near-tie, rarely). bf16 changes the text of some outputs: its share is
  reported, not judged, and so is its share of outputs equal to seqlm's own fp32 greedy (the agreement of
  auto with fp32, listed under the table).
"""

from __future__ import annotations

from pathlib import Path

from bench_core import CONFIGS, REPO, WORK, Bench, fastest_alternating, first_records, fresh, require
from bench_inference import share_equal
from bench_report import Figure, Row
from bench_seqlm import predicted_outputs
from bench_tasks import seqlm_training

TOKENIZE = CONFIGS / "t5_translate_tokenize.yaml"
FINETUNE = CONFIGS / "t5_translate_finetune.yaml"
PREDICT = CONFIGS / "t5_translate_predict.yaml"
TRAINER_VARIANT = "Seq2SeqTrainer fp32, random order"
GENERATE_VARIANT = "model.generate, batches of 32 (text2text pipeline)"
GENERATE_MODEL_RUN = "runs/bench/seqlm-generate-model"  # t5_translate_predict.yaml's model is its model/
AUTO_MODE = "greedy precision auto"  # its note also gives the share of outputs equal to seqlm's own fp32 greedy
# (row name, seqlm predict overrides, whether seqlm computes in fp32 as the HF side does)
GENERATION_MODES = (
    ("greedy", [], True),
    (AUTO_MODE, ["precision=auto"], False),
    ("4 beams", ["generation.num_beams=4"], True),
)
GREEDY_EQUAL_AT_LEAST = 0.95


def prepare(bench: Bench, only: set[str]) -> None:
    """The tokenizer of the seq2seq rows (`seqlm tokenize t5_translate_tokenize.yaml`) and, for the generation
    rows, their model (`seqlm finetune t5_translate_finetune.yaml`, `plan.generate_model_steps` steps)."""
    if only & {"seq2seq", "generate"}:
        fresh(WORK / "t5-data")
        bench.measure(f"prepare: seqlm tokenize {TOKENIZE.name}", lambda: _tokenized(bench))
    if "generate" in only:
        bench.measure(f"prepare: the generation model, {bench.plan.generate_model_steps} steps", lambda: _generation_model(bench))


def _tokenized(bench: Bench) -> Figure:
    process = bench.seqlm("tokenize", TOKENIZE, [], "prepare-t5-tokenize")
    return Figure(None, "", process.peak_rss_mb, process.wall_s)


def _generation_model(bench: Bench) -> Figure:
    steps = bench.plan.generate_model_steps
    overrides = [*bench.plan.seq2seq_overrides, f"output_dir={GENERATE_MODEL_RUN}", f"training.max_steps={steps}",
                 f"training.log_every={max(steps // 10, 1)}"]  # fmt: skip
    fresh(REPO / GENERATE_MODEL_RUN)
    process = bench.seqlm("finetune", FINETUNE, overrides, "prepare-generate-model")
    return Figure(None, "", process.peak_rss_mb, process.wall_s)


def bench_seq2seq(bench: Bench) -> list[Row]:
    """tokens/s of seq2seq training, seqlm against Seq2SeqTrainer (see the module docstring)."""
    plan = bench.plan
    steps = plan.seq2seq_warmup + plan.seq2seq_measured
    overrides = [*plan.seq2seq_overrides, f"training.max_steps={steps}", f"training.log_every={plan.seq2seq_warmup}"]
    if plan.seq2seq_validation is not None:  # seqlm validates once, at the end (outside the timed steps); HF does not
        from seqlm.config.finetune import FinetuneConfig
        from seqlm.config.loading import load_config

        validation = Path(load_config(FinetuneConfig, FINETUNE, []).data.validation)
        overrides.append(f"data.validation={first_records(validation, plan.seq2seq_validation, 'seq2seq-validation')}")

    def run_seqlm() -> Figure:
        require(WORK / "t5-data", "the preparation (seqlm tokenize t5_translate_tokenize.yaml)")
        return seqlm_training(bench, "finetune", FINETUNE, overrides, steps, None)

    def run_hf() -> Figure:
        require(WORK / "t5-data", "the preparation (seqlm tokenize t5_translate_tokenize.yaml)")
        options = ["--warmup", str(plan.seq2seq_warmup), "--measure", str(plan.seq2seq_measured)]
        process, result = bench.script("bench_hf_seq2seq.py", "seq2seq", FINETUNE, overrides, "hf-seq2seq", *options)
        value, unit = result.pop("value"), result.pop("unit")
        return Figure(value, unit, process.peak_rss_mb, process.wall_s, result)

    seqlm, hf = fastest_alternating(bench, ("seq2seq / seqlm", run_seqlm), (f"seq2seq / HF {TRAINER_VARIANT}", run_hf))
    return [Row("seq2seq train", TRAINER_VARIANT, seqlm, hf, note="source tokens")]


def bench_generate(bench: Bench) -> list[Row]:
    """examples/s of seq2seq generation, seqlm predict against the pipeline's loop, greedy and with beams."""
    from seqlm.config.inference import PredictConfig
    from seqlm.config.loading import load_config

    resolved = load_config(PredictConfig, PREDICT, [])
    count = bench.plan.generate_inputs
    inputs = [] if count is None else [f"input={first_records(Path(resolved.input), count, 'generate-inputs')}"]
    common = [*bench.plan.generate_overrides, *inputs]
    rows = []
    texts: dict[str, list[str] | None] = {}  # seqlm's outputs per mode: auto's agreement with fp32 greedy
    for mode, mode_overrides, same_precision in GENERATION_MODES:
        overrides = [*common, *mode_overrides]
        tag = mode.replace(" ", "-")

        def run_seqlm(overrides: list[str] = overrides, tag: str = tag) -> Figure:
            require(REPO / resolved.model, "the preparation (the generation model)")
            output = REPO / resolved.output
            output.unlink(missing_ok=True)
            process, result = bench.script("bench_seqlm.py", "predict", PREDICT, overrides, f"seqlm-generate-{tag}")
            value, unit = result.pop("value"), result.pop("unit")
            return Figure(value, unit, process.peak_rss_mb, process.wall_s, {**result, "outputs": predicted_outputs(output)})

        def run_hf(overrides: list[str] = overrides, tag: str = tag) -> Figure:
            require(REPO / resolved.model, "the preparation (the generation model)")
            process, result = bench.script("bench_hf_seq2seq.py", "generate", PREDICT, overrides, f"hf-generate-{tag}")
            value, unit = result.pop("value"), result.pop("unit")
            return Figure(value, unit, process.peak_rss_mb, process.wall_s, result)

        seqlm, hf = fastest_alternating(bench, (f"generate {mode} / seqlm", run_seqlm), (f"generate {mode} / HF", run_hf))
        texts[mode] = seqlm.extra.get("outputs")
        note = _compare_outputs(bench, mode, seqlm, hf, judged=same_precision and "greedy" in mode)
        if mode == AUTO_MODE and texts[AUTO_MODE] is not None and texts.get("greedy") is not None:
            same = share_equal(texts[AUTO_MODE], texts["greedy"])
            text = f"seq2seq generate greedy: outputs equal to seqlm fp32's on {same:.1%} of {len(texts['greedy'])} (stated, not judged)"
            seqlm.extra["agreement"] = {"text": text, "value": same, "bar": None}
            note = f"{note}; to seqlm fp32's: {same:.1%}"
        rows.append(Row(f"seq2seq generate {mode}", GENERATE_VARIANT, seqlm, hf, note=note))
    return rows


def _compare_outputs(bench: Bench, mode: str, seqlm: Figure, hf: Figure, judged: bool) -> str:
    """'outputs equal: X% of N'; the share goes to seqlm's extra["outputs_equal"]. A `judged` row below the bar fails."""
    outputs = [figure.extra.pop("outputs", None) for figure in (seqlm, hf)]
    if None in outputs:
        return ""
    mine, theirs = outputs
    same = share_equal(mine, theirs)
    seqlm.extra["outputs_equal"] = same
    if judged and same < GREEDY_EQUAL_AT_LEAST:
        bench.failures.append(f"generate {mode}: seqlm and HF give the same output for only {same:.1%} of the inputs")
    return f"outputs equal: {same:.1%} of {len(mine)}"
