"""The benchmarks of `scripts/bench.py`, one function per `--only` task, and the preparation they share.

Each `bench_*` function returns its table rows (and `bench_finetune` the accuracy check); a side
that fails or is skipped is a Figure with its error, and the other figures still come. What each
task measures, and how, is in bench.py's docstring; the steps of each run are the plan's.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import bench_seqlm
from bench_core import CONFIGS, REPO, WORK, Bench, fastest_alternating, fresh, require
from bench_report import Figure, Row

# The fine-tuning start (bert_finetune.yaml's model): see prepare().
INITIAL_BERT = WORK / "bert-init" / "model"
# HF fine-tuning variants: (name, --padding, --order, precision, trained for the accuracy check).
FINETUNE_VARIANTS = [
    ("Trainer pad to max_length, fp32", "max_length", "random", "fp32", False),  # run_glue.py's default
    ("Trainer dynamic padding, by length, fp32", "dynamic", "by-length", "fp32", True),
    ("Trainer dynamic padding, by length, bf16", "dynamic", "by-length", "bf16", False),
    ("Trainer dynamic padding, random order, fp32", "dynamic", "random", "fp32", True),
]
ACCURACY_COMPARED = "Trainer dynamic padding, random order, fp32"  # quoted against seqlm: see bench.py


def prepare(bench: Bench, only: set[str]) -> None:
    """The data of the selected tasks: the tokenizers and token data (seqlm tokenize), and the
    fine-tuning start (classification and extractive QA): the benchmark BERT as `seqlm pretrain bert_pretrain.yaml`
    initialises it."""
    for name, users in (("gpt", {"tokenize", "clm"}), ("bert", {"mlm", "finetune", "qa"})):
        if only & users:
            config = CONFIGS / f"{name}_tokenize.yaml"
            fresh(WORK / f"{name}-data")
            bench.measure(f"prepare: seqlm tokenize {config.name}", lambda c=config, n=name: _tokenized(bench, c, n))
    if only & {"finetune", "qa"}:
        bench.measure("prepare: the initial benchmark BERT", lambda: _initial_bert(bench))


def _tokenized(bench: Bench, config: Path, name: str) -> Figure:
    process = bench.seqlm("tokenize", config, [], f"prepare-{name}-tokenize")
    return Figure(None, "", process.peak_rss_mb, process.wall_s)


def _initial_bert(bench: Bench) -> Figure:
    from seqlm.config.loading import load_config
    from seqlm.config.schema import PretrainConfig

    config = load_config(PretrainConfig, CONFIGS / "bert_pretrain.yaml", bench.plan.pretrain_overrides)
    require(REPO / config.data, "the preparation (seqlm tokenize bert_tokenize.yaml)")
    started = time.perf_counter()
    bench_seqlm.save_initial_model(config, fresh(INITIAL_BERT))
    return Figure(wall_s=time.perf_counter() - started)


# --------------------------------------------------------------------------- tokenize


def bench_tokenize(bench: Bench) -> tuple[list[Row], dict[str, Any]]:
    """MB/s of encoding the corpus with the trained 8k BPE; and the scaling check (seqlm).

    The comparison runs on the corpus repeated `plan.scale` times (31 MB by default) on both
    sides: on the 3.1 MB corpus alone every variant takes under a second, and such runs varied
    by ±20% here. The 1x run is the scaling check's baseline."""
    config = CONFIGS / "gpt_tokenize.yaml"
    scale = bench.plan.scale
    single = bench.measure("tokenize / seqlm 1x", lambda: seqlm_tokenize(bench, config, 1))
    scaled = bench.measure(f"tokenize / seqlm {scale}x", lambda: seqlm_tokenize(bench, config, scale))
    variants = [
        ("datasets.map(batched)", "tokenize-map", []),
        ("datasets.map(num_proc=2)", "tokenize-map", ["--num-proc", "2"]),
        ("tokenizers encode_batch", "tokenize-raw", []),
    ]
    rows = []
    for variant, task, options in variants:
        log_name = f"hf-{task}{'-np2' if options else ''}"
        hf = bench.measure(
            f"tokenize / {variant} {scale}x", lambda t=task, o=options, n=log_name: hf_tokenize(bench, config, scale, t, n, o)
        )
        rows.append(Row("tokenize", variant, scaled, hf))
    return rows, scaling_summary(single, scaled, scale)


def hf_tokenize(bench: Bench, config: Path, copies: int, task: str, log_name: str, options: list[str]) -> Figure:
    """The HF side reads the tokenizer seqlm trained (the config's output_dir) and the same corpus files, `copies` times."""
    require(WORK / "gpt-data", "the preparation (seqlm tokenize gpt_tokenize.yaml)")
    return bench.hf_figure(task, config, corpus_copies(config, copies), log_name, *options)


def corpus_copies(config: Path, copies: int) -> list[str]:
    """--set overrides listing each corpus file of the tokenize config `copies` times."""
    from seqlm.config.loading import load_config
    from seqlm.config.schema import TokenizeConfig

    corpus = load_config(TokenizeConfig, config, []).corpus
    files = {"train": corpus.train, "validation": corpus.validation}
    return [f"corpus.{split}=[{', '.join(paths * copies)}]" for split, paths in files.items()]


def seqlm_tokenize(bench: Bench, config: Path, copies: int) -> Figure:
    """`seqlm tokenize` of the corpus repeated `copies` times, with the prepared tokenizer (no training)."""
    from seqlm.config.loading import load_config
    from seqlm.config.schema import TokenizeConfig

    data = WORK / "gpt-data"
    require(data, "the preparation (seqlm tokenize gpt_tokenize.yaml)")
    corpus = load_config(TokenizeConfig, config, []).corpus
    overrides = [f"tokenizer.pretrained={data}", f"output_dir={fresh(WORK / f'tokenize-{copies}x')}", *corpus_copies(config, copies)]
    process = bench.seqlm("tokenize", config, overrides, f"seqlm-tokenize-{copies}x")
    megabytes = copies * sum((REPO / path).stat().st_size for paths in (corpus.train, corpus.validation) for path in paths) / 1e6
    rate = bench_seqlm.encoding_mb_per_s(process.log_text())
    return Figure(rate, "MB/s", process.peak_rss_mb, process.wall_s, {"megabytes": megabytes, "encode_s": megabytes / rate})


def scaling_summary(single: Figure, scaled: Figure, scale: int) -> dict[str, Any]:
    """The 1× and scale× figures, and how time and peak RSS grew (ideal: ×scale and ×1)."""
    summary: dict[str, Any] = {"scale": scale, "1x": asdict(single), f"{scale}x": asdict(scaled)}
    if single.value and scaled.value:
        summary["time_ratio"] = scaled.extra["encode_s"] / single.extra["encode_s"]
        summary["peak_rss_ratio"] = scaled.peak_rss_mb / single.peak_rss_mb
    return summary


# --------------------------------------------------------------------------- pretrain


def bench_pretrain(bench: Bench, objective: str) -> list[Row]:
    """tokens/s of pretraining (clm: the GPT-2, mlm: the BERT) against HF Trainer fp32 and bf16.

    seqlm and Trainer fp32 run `plan.repeats` times each, alternating, and each side
    keeps its fastest run: whole runs on this VM vary by up to ±15% (the same command measured
    5,300-7,500 tokens/s in five runs in a row), more than the windows inside one run."""
    plan = bench.plan
    config = CONFIGS / ("gpt_pretrain.yaml" if objective == "clm" else "bert_pretrain.yaml")
    steps = plan.pretrain_warmup + plan.pretrain_measured
    overrides = [*plan.pretrain_overrides, f"training.max_steps={steps}", f"training.log_every={plan.pretrain_warmup}"]

    def run_hf(precision: str) -> Figure:
        options = ["--warmup", str(plan.pretrain_warmup), *(["--bf16"] if precision == "bf16" else [])]
        return bench.hf_figure("pretrain", config, overrides, f"hf-{objective}-{precision}", *options)

    seqlm, hf = fastest_alternating(
        bench,
        (f"pretrain {objective} / seqlm", lambda: seqlm_training(bench, "pretrain", config, overrides, steps, None)),
        (f"pretrain {objective} / HF Trainer fp32", lambda: run_hf("fp32")),
    )
    rows = [Row(f"pretrain {objective}", "Trainer fp32", seqlm, hf)]
    skipped = bf16_skipped(bench)
    bf16 = Figure(error=skipped) if skipped else bench.measure(f"pretrain {objective} / HF Trainer bf16", lambda: run_hf("bf16"))
    rows.append(Row(f"pretrain {objective}", "Trainer bf16", seqlm, bf16, note="" if skipped else bf16_note(bench)))
    return rows


def seqlm_training(
    bench: Bench, name: str, config: Path, overrides: list[str], last_step: int, per_step: int | None, unit: str = "examples/s"
) -> Figure:
    """tokens/s (pretrain) or `unit` (finetune: `per_step` examples, or QA windows, per step) of a seqlm training
    run, over its log windows from the end of the warm-up (its log_every) to `last_step`; a finetune run's extra
    holds its test scores (test_accuracy, or test_exact_match / test_f1)."""
    from seqlm.config import COMMAND_SCHEMAS
    from seqlm.config.loading import load_config

    resolved = load_config(COMMAND_SCHEMAS[name], config, overrides)
    if name == "pretrain":
        require(Path(resolved.data), "the preparation (seqlm tokenize)")
    run_dir = fresh(REPO / resolved.output_dir)
    process = bench.seqlm(name, config, overrides, f"seqlm-{run_dir.name}")
    windows = bench_seqlm.steady_windows(run_dir / "metrics.jsonl", resolved.training.log_every, last_step)
    extra: dict[str, Any] = {"measured_steps": windows.steps, "steps": resolved.training.max_steps}
    if per_step is None:
        return Figure(windows.tokens_per_s, "tokens/s", process.peak_rss_mb, process.wall_s, extra)
    final = bench_seqlm.final_metrics(run_dir)
    extra.update({key: final[key] for key in ("test_accuracy", "test_exact_match", "test_f1") if key in final})
    return Figure(windows.steps_per_s * per_step, unit, process.peak_rss_mb, process.wall_s, extra)


def bf16_skipped(bench: Bench) -> str | None:
    """Why the HF bf16 rows are skipped, or None."""
    if bench.bf16 == "none":
        return "skipped: torch has no bf16 on this CPU"
    return None if bench.plan.hf_bf16 else f"skipped: not in the {bench.plan.name} plan"


def bf16_note(bench: Bench) -> str:
    return "bf16 emulated: no AVX512-BF16/AMX" if bench.bf16 == "emulated" else ""


# --------------------------------------------------------------------------- finetune


def bench_finetune(bench: Bench) -> tuple[list[Row], dict[str, Any]]:
    """examples/s of fine-tuning the initial benchmark BERT as a classifier, and the accuracy check."""
    from seqlm.config.finetune import FinetuneConfig
    from seqlm.config.loading import load_config

    plan = bench.plan
    config = CONFIGS / "bert_finetune.yaml"
    measured_to = plan.finetune_warmup + plan.finetune_measured

    def overrides(steps: int) -> list[str]:
        return [*plan.finetune_overrides, f"training.max_steps={steps}", f"training.log_every={plan.finetune_warmup}"]

    resolved = load_config(FinetuneConfig, config, overrides(plan.finetune_accuracy_steps))
    per_step = resolved.training.batch_size * resolved.training.grad_accum
    n_labels = len(resolved.data.labels) if resolved.data.labels else None

    def run_seqlm() -> Figure:
        require(REPO / resolved.model, "the preparation (the initial benchmark BERT)")
        steps = plan.finetune_accuracy_steps
        return seqlm_training(bench, "finetune", config, overrides(steps), steps, per_step)

    def run_hf(padding: str, order: str, precision: str, steps: int) -> Figure:
        require(REPO / resolved.model, "the preparation (the initial benchmark BERT)")
        measured = str(steps - plan.finetune_warmup)  # every step after the warm-up (see Plan)
        options = ["--warmup", str(plan.finetune_warmup), "--measure", measured, "--padding", padding, "--order", order]
        log_name = f"hf-finetune-{padding}-{order}-{precision}"
        return bench.hf_figure("finetune", config, overrides(steps), log_name, *options, *(["--bf16"] if precision == "bf16" else []))

    seqlm = bench.measure(f"finetune / seqlm ({plan.finetune_accuracy_steps} steps)", run_seqlm)
    rows, accuracy = [], {}
    for variant, padding, order, precision, for_accuracy in FINETUNE_VARIANTS:
        # Native bf16 runs as many steps as seqlm's run: the same batch widths, so the same kernel shapes and
        # so a comparable peak RSS (oneDNN keeps buffers per shape); emulated bf16 is too slow for that.
        as_long = for_accuracy or (precision == "bf16" and bench.bf16 == "native")
        steps = plan.finetune_accuracy_steps if as_long else measured_to
        skipped = bf16_skipped(bench) if precision == "bf16" else None
        if skipped:
            hf = Figure(error=skipped)
        else:
            hf = bench.measure(f"finetune / HF {variant} ({steps} steps)", lambda a=(padding, order, precision, steps): run_hf(*a))
        if for_accuracy:
            accuracy[variant] = hf.extra.get("test_accuracy")
        rows.append(Row("finetune classification", variant, seqlm, hf, note=bf16_note(bench) if precision == "bf16" and not skipped else ""))
    check = {"steps": plan.finetune_accuracy_steps, "chance": 1 / n_labels if n_labels else None,
             "seqlm": seqlm.extra.get("test_accuracy"), "hf": accuracy, "compared": ACCURACY_COMPARED}  # fmt: skip
    return rows, check


# --------------------------------------------------------------------------- --help


def bench_help(bench: Bench) -> list[Row]:
    """Median wall time of `seqlm --help` over `help_runs` processes (seconds: lower is better)."""

    def run() -> Figure:
        entry = Path(bench.python).parent / "seqlm"
        argv = [str(entry), "--help"] if entry.exists() else [bench.python, "-m", "seqlm", "--help"]
        runs = [bench.run(argv, "seqlm-help") for _ in range(bench.plan.help_runs)]
        walls = [process.wall_s for process in runs]
        peak_rss_mb = max(p.peak_rss_mb or 0.0 for p in runs)
        return Figure(statistics.median(walls), "s", peak_rss_mb, sum(walls), {"runs_s": walls})

    figure = bench.measure("seqlm --help", run)
    return [Row("seqlm --help (median)", "", figure, None)]
