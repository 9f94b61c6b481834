"""The inference benchmarks of `scripts/bench.py` (`--only predict`, `--only evaluate`) and the agreement of
`precision: auto` with fp32 that they measure.

- `bench_predict`: examples/s of labelling the test verses (bert_classifier_predict.yaml) with the classifier
  the finetune benchmark trained: `seqlm predict` with its defaults (`precision: auto`: bf16 autocast on CPUs
  with native bf16, fp32 elsewhere) and with `precision=fp32`, each against `pipeline("text-classification")`
  with its defaults (fp32). Every side runs after a warm-up on the first batch (seqlm: `bench_seqlm.py
  predict`), `plan.repeats` times, the three alternating, each keeping its fastest run (and its largest peak
  RSS: in single runs the pipeline's peak RSS alone varied from 488 to 562 MB). Each row's note gives the share
  of labels equal to the pipeline's; below 99% is a failure, for either precision. The default row also gives
  the share equal to seqlm fp32's: the agreement of auto with fp32.
- `bench_evaluate`: tokens/s of `seqlm evaluate` (gpt_evaluate.yaml: the clm benchmark's GPT-2 on its
  validation split, windows of 256) with `precision: auto` and with fp32, and the relative difference of
  their perplexities (above 1% is a failure). seqlm only: `bench_seqlm.py evaluate` after a one-batch warm-up.

Agreement figures go to the seqlm Figure's extra["agreement"] ({"text", "value", "bar"}), which
`bench_report.render_agreement` lists under the table (the generation rows add theirs, see bench_seq2seq).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import bench_seqlm
from bench_core import CONFIGS, REPO, Bench, fastest_alternating, require
from bench_report import Figure, Row

PREDICT = CONFIGS / "bert_classifier_predict.yaml"
EVALUATE = CONFIGS / "gpt_evaluate.yaml"
LABELS_EQUAL_AT_LEAST = 0.99
PERPLEXITY_WITHIN = 0.01


def bench_predict(bench: Bench) -> list[Row]:
    """The predict rows: seqlm's default precision and fp32, each against the pipeline (see the module docstring)."""
    from seqlm.config.inference import PredictConfig
    from seqlm.config.loading import load_config

    resolved = load_config(PredictConfig, PREDICT, [])
    fp32_output = Path(resolved.output).with_name("predictions-fp32.jsonl")

    def run_seqlm(overrides: list[str], output: Path, tag: str) -> Figure:
        require(REPO / resolved.model, "the finetune benchmark (seqlm)")
        (REPO / output).unlink(missing_ok=True)
        process, result = bench.script("bench_seqlm.py", "predict", PREDICT, overrides, tag)
        value, unit = result.pop("value"), result.pop("unit")
        return Figure(value, unit, process.peak_rss_mb, process.wall_s, {**result, "labels": bench_seqlm.predicted_labels(REPO / output)})

    def run_hf() -> Figure:
        require(REPO / resolved.model, "the finetune benchmark (seqlm)")
        return bench.hf_figure("predict", PREDICT, [], "hf-predict")

    default, fp32, hf = fastest_alternating(
        bench,
        ("predict / seqlm (precision auto)", lambda: run_seqlm([], Path(resolved.output), "seqlm-predict")),
        ("predict / seqlm fp32", lambda: run_seqlm(["precision=fp32", f"output={fp32_output}"], fp32_output, "seqlm-predict-fp32")),
        ("predict / HF pipeline", run_hf),
    )
    labels = [figure.extra.pop("labels", None) for figure in (default, fp32, hf)]
    variant = f"pipeline(batch_size={resolved.batch_size}), fp32"
    rows = []
    for figure, mine, name in ((default, labels[0], "predict classification"), (fp32, labels[1], "predict classification, seqlm fp32")):
        note = ""
        if mine is not None and labels[2] is not None:
            same = share_equal(mine, labels[2])
            figure.extra["labels_equal"] = same
            note = f"labels equal: {same:.1%} of {len(mine)}"
            if same < LABELS_EQUAL_AT_LEAST:
                bench.failures.append(f"{name}: seqlm and the pipeline agree on only {same:.1%} of the labels")
        if figure is default:
            note = "; ".join(filter(None, [_precision_note(default), note]))
            if labels[0] is not None and labels[1] is not None:
                same = share_equal(labels[0], labels[1])
                bar = f">= {LABELS_EQUAL_AT_LEAST:.0%}"
                text = f"predict classification: labels equal to seqlm fp32's on {same:.1%} of {len(labels[0])} (bar {bar})"
                default.extra["agreement"] = {"text": text, "value": same, "bar": bar}
        rows.append(Row(name, variant, figure, hf, note))
    return rows


def bench_evaluate(bench: Bench) -> list[Row]:
    """The evaluate rows: perplexity of the clm benchmark's model, precision auto and fp32 (see the module docstring)."""
    from seqlm.config.inference import EvaluateConfig
    from seqlm.config.loading import load_config

    resolved = load_config(EvaluateConfig, EVALUATE, [])

    def run(overrides: list[str], tag: str) -> Figure:
        require(REPO / resolved.model, "the clm benchmark (seqlm pretrain gpt_pretrain.yaml)")
        process, result = bench.script("bench_seqlm.py", "evaluate", EVALUATE, overrides, tag)
        value, unit = result.pop("value"), result.pop("unit")
        return Figure(value, unit, process.peak_rss_mb, process.wall_s, result)

    fp32_dir = f"output_dir={resolved.output_dir}-fp32"
    default, fp32 = fastest_alternating(
        bench,
        ("evaluate clm / seqlm (precision auto)", lambda: run([], "seqlm-evaluate")),
        ("evaluate clm / seqlm fp32", lambda: run(["precision=fp32", fp32_dir], "seqlm-evaluate-fp32")),
    )
    note = _precision_note(default)
    if default.value and fp32.value:
        note += f"; {default.value / fp32.value:.2f}x fp32"
        low, full = default.extra["perplexity"], fp32.extra["perplexity"]
        difference = low / full - 1
        bar = f"within {PERPLEXITY_WITHIN:.0%}"
        text = f"evaluate clm: perplexity {low:.2f} against fp32's {full:.2f} ({difference:+.3%}, bar {bar})"
        default.extra["agreement"] = {"text": text, "value": difference, "bar": bar}
        if abs(difference) > PERPLEXITY_WITHIN:
            bench.failures.append(f"evaluate clm: perplexity {difference:+.2%} from fp32's")
    return [Row("evaluate clm perplexity", "", default, None, note), Row("evaluate clm perplexity, fp32", "", fp32, None)]


def share_equal(mine: list[Any], theirs: list[Any]) -> float:
    """The share of equal items at equal positions; 0.0 when the lists differ in length."""
    return sum(a == b for a, b in zip(mine, theirs)) / max(len(mine), 1) if len(mine) == len(theirs) else 0.0


def _precision_note(figure: Figure) -> str:
    """'seqlm precision auto = bf16' from the run's own summary (what auto resolved to on this machine)."""
    resolved = figure.extra.get("precision")
    return f"seqlm precision auto = {resolved}" if resolved else ""
