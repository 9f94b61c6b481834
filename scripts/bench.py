"""Side-by-side benchmark: seqlm against the Hugging Face path for the same models, configs and data.

    .venv/bin/python scripts/bench.py [--quick] [--json PATH] [--only TASK,...]     (or `make bench`)

Tasks (`--only` names): tokenize (MB/s, plus the scaling check: the corpus repeated `scale`×
must take `scale`× the time at flat peak RSS), clm and mlm (pretraining, tokens/s, HF Trainer
fp32 and bf16), finetune (classification, examples/s and test accuracy after the same steps:
HF Trainer run_glue-style padding to max_length, and HF's best: dynamic padding +
group_by_length + bf16), predict (classification, examples/s and the share of equal labels
against `pipeline("text-classification")`), help (`seqlm --help` wall time).

Method: every measured run is its own process, so its peak RSS is its own (`os.wait4`; the
largest resident set of the process or of any child it waited for, not their sum). Throughput
leaves out a warm-up: the first optimizer steps (seqlm: its metrics.jsonl log windows, see
`bench_seqlm`; HF: a TrainerCallback's step times, see `bench_hf`) or a warm-up call. Both
sides run the same number of steps. seqlm runs with its config defaults (what a user gets),
from the configs in configs/bench/; the HF side builds its model from the same config files
and uses the tokenizer files seqlm trained. Everything is offline and writes under runs/bench/.

Plans: the default runs the issue's sizes (GPT-2 4x256, seq 256, batch 8; BERT 4x256, seq 128,
batch 16; classification batch 32, max_length 128) for a few dozen steps each, about 10 minutes
on a 2-core CPU. `--quick` is a smoke check of every path in about 2 minutes: tiny models, a few
steps, the corpus 2x instead of 10x, and no HF bf16 pretraining rows; its figures mean nothing.
bf16 rows say so when the CPU only emulates bf16 (no AVX512-BF16/AMX; torch still runs it).

Output: one table (task | HF variant | seqlm | HF | seqlm/HF | peak RSS of each), the scaling
check, and with `--json` every figure plus the machine (and its load average: the figures are
only as quiet as the machine was). A sub-benchmark that fails prints its error and the rest
still run; the exit status is then 1, also when seqlm's and the pipeline's labels differ on
more than 1% of the inputs. Nothing is asserted about speed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import bench_seqlm

REPO = Path(__file__).resolve().parent.parent
CONFIGS = REPO / "configs" / "bench"
WORK = REPO / "runs" / "bench"
TASKS = ("tokenize", "clm", "mlm", "finetune", "predict", "help")
# A tiny model for --quick: a smoke check of every path, not a speed figure.
TINY_MODEL = ["model.n_layers=2", "model.n_heads=2", "model.d_model=64", "model.max_len=64", "training.seq_len=64"]


@dataclass(frozen=True)
class Plan:
    """How much work each benchmark does; a plan applies to both sides alike."""

    name: str
    pretrain_warmup: int  # optimizer steps left out of the throughput (also seqlm's log window)
    pretrain_measured: int  # steps measured after the warm-up: a multiple of pretrain_warmup
    finetune_warmup: int
    finetune_measured: int  # a multiple of finetune_warmup
    scale: int  # the scaling check tokenizes the corpus this many times over
    help_runs: int
    timeout_s: int  # per process
    pretrain_bf16: bool = True  # also the HF Trainer bf16 pretraining rows (--quick: the finetune row tries bf16)
    pretrain_overrides: list[str] = field(default_factory=list)
    finetune_overrides: list[str] = field(default_factory=list)


PLANS = {
    "default": Plan("default", pretrain_warmup=2, pretrain_measured=12, finetune_warmup=5, finetune_measured=25,
                    scale=10, help_runs=7, timeout_s=420),
    "quick": Plan("quick", pretrain_warmup=2, pretrain_measured=4, finetune_warmup=2, finetune_measured=6,
                  scale=2, help_runs=3, timeout_s=300, pretrain_bf16=False, pretrain_overrides=TINY_MODEL,
                  finetune_overrides=["training.max_length=64"]),
}  # fmt: skip


class BenchFailure(Exception):
    """A sub-benchmark could not produce its figure; the message says why (one or a few lines)."""


@dataclass
class Figure:
    """One side's result for one task: a rate (or seconds) and the peak RSS of its process."""

    value: float | None = None
    unit: str = ""
    peak_rss_mb: float | None = None
    wall_s: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


@dataclass
class Row:
    task: str
    variant: str  # the HF side of the comparison
    seqlm: Figure
    hf: Figure | None  # None: seqlm only
    note: str = ""

    @property
    def ratio(self) -> float | None:
        """seqlm / HF for a rate (above 1: seqlm is faster)."""
        if self.hf is None or not self.seqlm.value or not self.hf.value:
            return None
        return self.seqlm.value / self.hf.value


# --------------------------------------------------------------------------- processes


@dataclass(frozen=True)
class Process:
    returncode: int
    wall_s: float
    peak_rss_mb: float | None  # None when the process was killed before the launcher could report
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")


# Measured commands start from this minimal Python, which forks, execs the command and reports
# wait4's figures for it: a child's ru_maxrss starts at the RSS of the process that forked it
# (Linux keeps the old address space's high-water mark across exec), and this script holds
# torch. The launcher's own ~9 MB is thus the floor of every peak RSS reported.
LAUNCHER = """
import os, sys, time
report, argv = sys.argv[1], sys.argv[2:]
started = time.perf_counter()
pid = os.fork()
if pid == 0:
    try:
        os.execvp(argv[0], argv)
    finally:
        os._exit(127)
_, status, usage = os.wait4(pid, 0)
with open(report, "w") as handle:
    handle.write(f"{usage.ru_maxrss} {time.perf_counter() - started}")
code = os.waitstatus_to_exitcode(status)
sys.exit(code if code >= 0 else 128 - code)
"""


def run_measured(argv: list[str], log: Path, timeout_s: float, env: dict[str, str]) -> Process:
    """Run `argv` from the repository root, stdout and stderr into `log`; killed after `timeout_s`.

    Wall time and peak RSS are those of this one command (and the children it waited for: the
    largest resident set among them, not their sum), measured by LAUNCHER.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    report = log.with_suffix(".rusage")
    report.unlink(missing_ok=True)
    launcher = [sys.executable, "-I", "-S", "-c", LAUNCHER, str(report), *argv]
    started = time.perf_counter()
    with open(log, "wb") as handle:
        # A session of its own, so that a timeout (or Ctrl-C here) ends the whole tree, worker processes included.
        child = subprocess.Popen(launcher, cwd=REPO, env=env, stdout=handle, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            returncode = child.wait(timeout=timeout_s)
        except BaseException:  # the timeout, or KeyboardInterrupt
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
            if not isinstance(sys.exc_info()[1], subprocess.TimeoutExpired):
                raise
            returncode = -signal.SIGKILL
    wall_s = time.perf_counter() - started
    peak_rss_mb = None
    if report.is_file():
        maxrss_kb, wall = report.read_text(encoding="utf-8").split()
        peak_rss_mb, wall_s = int(maxrss_kb) / 1024, float(wall)
    return Process(returncode, wall_s, peak_rss_mb, log)


def checked(process: Process, timeout_s: float) -> Process:
    """`process`, or a BenchFailure with the end of its log when it failed."""
    if process.returncode == 0:
        return process
    tail = "\n".join(process.log_text().strip().splitlines()[-6:])
    why = f"timed out after {timeout_s:.0f}s" if process.returncode == -signal.SIGKILL else f"exit {process.returncode}"
    raise BenchFailure(f"{why} (log: {process.log.relative_to(REPO)}):\n{tail}")


class Bench:
    """One benchmark session: the plan, the environment of every run, and the figures so far."""

    def __init__(self, plan: Plan, bf16: str):
        self.plan = plan
        self.bf16 = bf16  # see bf16_support
        self.python = sys.executable
        self.env = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1",
            "HF_DATASETS_CACHE": str(WORK / "hf-cache"),
            "TOKENIZERS_PARALLELISM": "true",  # seqlm's own default; the HF side gets the same
        }
        self.started = time.perf_counter()
        self.failures: list[str] = []

    def say(self, message: str) -> None:
        print(f"[{time.perf_counter() - self.started:6.0f}s] {message}", file=sys.stderr, flush=True)

    def measure(self, label: str, produce: Callable[[], Figure]) -> Figure:
        """`produce()`'s figure, or a Figure holding the error (printed, and counted as a failure)."""
        self.say(f"{label} ...")
        try:
            figure = produce()
        except Exception as exc:  # noqa: BLE001 - any failure is this row's, and the other rows still run
            message = str(exc) if isinstance(exc, BenchFailure) else f"{type(exc).__name__}: {exc}"
            figure = Figure(error=message)
            self.failures.append(f"{label}: {figure.error}")
            self.say(f"{label}: FAILED: {figure.error}")
            return figure
        shown = f"{format_value(figure.value, figure.unit)} {figure.unit}" if figure.value is not None else "done"
        self.say(f"{label}: {shown}, peak RSS {format_mb(figure.peak_rss_mb)}, {figure.wall_s or 0:.0f}s")
        return figure

    def seqlm(self, name: str, config: Path, overrides: list[str], log_name: str) -> Process:
        """Run `seqlm NAME CONFIG --set ...`; BenchFailure unless it exits 0."""
        argv = bench_seqlm.command(self.python, name, config, overrides)
        return checked(run_measured(argv, WORK / "logs" / f"{log_name}.log", self.plan.timeout_s, self.env), self.plan.timeout_s)

    def hf(self, task: str, config: Path, overrides: list[str], log_name: str, *options: str) -> tuple[Process, dict[str, Any]]:
        """Run `bench_hf.py TASK`; its process and the result it wrote."""
        result = WORK / "hf" / f"{log_name}.json"
        result.parent.mkdir(parents=True, exist_ok=True)
        result.unlink(missing_ok=True)
        argv = [self.python, str(REPO / "scripts" / "bench_hf.py"), task, "--config", str(config), "--result", str(result)]
        for assignment in overrides:
            argv += ["--set", assignment]
        process = run_measured([*argv, *options], WORK / "logs" / f"{log_name}.log", self.plan.timeout_s, self.env)
        checked(process, self.plan.timeout_s)
        return process, json.loads(result.read_text(encoding="utf-8"))

    def hf_figure(self, task: str, config: Path, overrides: list[str], log_name: str, *options: str) -> Figure:
        process, result = self.hf(task, config, overrides, log_name, *options)
        value, unit = result.pop("value"), result.pop("unit")
        return Figure(value, unit, process.peak_rss_mb, process.wall_s, result)


def fresh(path: Path) -> Path:
    """Remove a previous run's output, so that a failed run cannot pass off stale figures as its own."""
    shutil.rmtree(path, ignore_errors=True)
    return path


def require(path: Path, made_by: str) -> None:
    if not path.exists():
        raise BenchFailure(f"{path.relative_to(REPO)} is missing: {made_by} did not run or failed")


# --------------------------------------------------------------------------- preparation


def prepare(bench: Bench) -> None:
    """Train the two tokenizers and tokenize the corpus (seqlm tokenize): the data of every other task."""
    for name in ("gpt", "bert"):
        config = CONFIGS / f"{name}_tokenize.yaml"
        fresh(WORK / f"{name}-data")
        bench.measure(f"prepare: seqlm tokenize {config.name}", lambda config=config, name=name: _prepared(bench, config, name))


def _prepared(bench: Bench, config: Path, name: str) -> Figure:
    process = bench.seqlm("tokenize", config, [], f"prepare-{name}-tokenize")
    return Figure(None, "", process.peak_rss_mb, process.wall_s)


# --------------------------------------------------------------------------- tokenize


def bench_tokenize(bench: Bench) -> tuple[list[Row], dict[str, Any]]:
    """MB/s of encoding the corpus with the trained 8k BPE; and the scaling check (seqlm)."""
    config = CONFIGS / "gpt_tokenize.yaml"
    single = bench.measure("tokenize / seqlm 1x", lambda: seqlm_tokenize(bench, config, 1))
    scaled = bench.measure(f"tokenize / seqlm {bench.plan.scale}x", lambda: seqlm_tokenize(bench, config, bench.plan.scale))
    variants = [
        ("datasets.map(batched)", "tokenize-map", []),
        ("datasets.map(num_proc=2)", "tokenize-map", ["--num-proc", "2"]),
        ("tokenizers encode_batch", "tokenize-raw", []),
    ]
    rows = []
    for variant, task, options in variants:
        log_name = f"hf-{task}{'-np2' if options else ''}"
        hf = bench.measure(f"tokenize / {variant}", lambda t=task, o=options, n=log_name: hf_tokenize(bench, config, t, n, o))
        rows.append(Row("tokenize", variant, single, hf))
    return rows, scaling_summary(single, scaled, bench.plan.scale)


def hf_tokenize(bench: Bench, config: Path, task: str, log_name: str, options: list[str]) -> Figure:
    """The HF side reads the tokenizer seqlm trained (the config's output_dir) and the same corpus files."""
    require(WORK / "gpt-data", "the preparation (seqlm tokenize gpt_tokenize.yaml)")
    return bench.hf_figure(task, config, [], log_name, *options)


def seqlm_tokenize(bench: Bench, config: Path, copies: int) -> Figure:
    """`seqlm tokenize` of the corpus repeated `copies` times, with the prepared tokenizer (no training)."""
    from seqlm.config_loading import load_config
    from seqlm.config_schema import TokenizeConfig

    data = WORK / "gpt-data"
    require(data, "the preparation (seqlm tokenize gpt_tokenize.yaml)")
    corpus = load_config(TokenizeConfig, config, []).corpus
    files = {"train": corpus.train, "validation": corpus.validation}
    overrides = [f"tokenizer.pretrained={data}", f"output_dir={fresh(WORK / f'tokenize-{copies}x')}"]
    overrides += [f"corpus.{split}=[{', '.join(paths * copies)}]" for split, paths in files.items()]
    process = bench.seqlm("tokenize", config, overrides, f"seqlm-tokenize-{copies}x")
    megabytes = copies * sum((REPO / path).stat().st_size for paths in files.values() for path in paths) / 1e6
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
    """tokens/s of pretraining (clm: the GPT-2, mlm: the BERT) against HF Trainer fp32 and bf16."""
    plan = bench.plan
    config = CONFIGS / ("gpt_pretrain.yaml" if objective == "clm" else "bert_pretrain.yaml")
    steps = plan.pretrain_warmup + plan.pretrain_measured
    overrides = [*plan.pretrain_overrides, f"training.max_steps={steps}", f"training.log_every={plan.pretrain_warmup}"]
    seqlm = bench.measure(f"pretrain {objective} / seqlm", lambda: seqlm_training(bench, "pretrain", config, overrides, plan.pretrain_warmup, None))
    rows = []
    for precision in ("fp32", "bf16"):
        variant = f"Trainer {precision}"
        if precision == "bf16" and (bench.bf16 == "none" or not plan.pretrain_bf16):
            why = "torch has no bf16 on this CPU" if bench.bf16 == "none" else f"not in the {plan.name} plan"
            rows.append(Row(f"pretrain {objective}", variant, seqlm, Figure(error=f"skipped: {why}")))
            continue
        options = ["--warmup", str(plan.pretrain_warmup), *(["--bf16"] if precision == "bf16" else [])]
        hf = bench.measure(
            f"pretrain {objective} / HF {variant}",
            lambda o=options, p=precision: bench.hf_figure("pretrain", config, overrides, f"hf-{objective}-{p}", *o),
        )
        rows.append(Row(f"pretrain {objective}", variant, seqlm, hf, note=bf16_note(bench) if precision == "bf16" else ""))
    return rows


def seqlm_training(bench: Bench, name: str, config: Path, overrides: list[str], warmup: int, per_step: int | None) -> Figure:
    """tokens/s (pretrain) or examples/s (finetune: `per_step` examples per step) of a seqlm training run."""
    from seqlm.config_loading import load_config
    from seqlm.config_schema import COMMAND_SCHEMAS

    resolved = load_config(COMMAND_SCHEMAS[name], config, overrides)
    if name == "pretrain":
        require(Path(resolved.data), "the preparation (seqlm tokenize)")
    run_dir = fresh(REPO / resolved.output_dir)
    process = bench.seqlm(name, config, overrides, f"seqlm-{run_dir.name}")
    windows = bench_seqlm.steady_windows(run_dir / "metrics.jsonl", warmup)
    extra: dict[str, Any] = {"measured_steps": windows.steps}
    if per_step is None:
        return Figure(windows.tokens_per_s, "tokens/s", process.peak_rss_mb, process.wall_s, extra)
    extra["test_accuracy"] = bench_seqlm.final_metrics(run_dir).get("test_accuracy")
    return Figure(windows.steps_per_s * per_step, "examples/s", process.peak_rss_mb, process.wall_s, extra)


# --------------------------------------------------------------------------- finetune and predict


def bench_finetune(bench: Bench) -> list[Row]:
    """examples/s and test accuracy of fine-tuning the benchmark BERT (seqlm mlm's model/) as a classifier."""
    from seqlm.config_loading import load_config
    from seqlm.config_schema import FinetuneConfig

    plan = bench.plan
    config = CONFIGS / "bert_finetune.yaml"
    steps = plan.finetune_warmup + plan.finetune_measured
    overrides = [*plan.finetune_overrides, f"training.max_steps={steps}", f"training.log_every={plan.finetune_warmup}"]
    resolved = load_config(FinetuneConfig, config, overrides)
    per_step = resolved.training.batch_size * resolved.training.grad_accum
    n_labels = len(resolved.data.labels) if resolved.data.labels else None

    def run_seqlm() -> Figure:
        require(REPO / resolved.model, "the mlm pretraining benchmark (seqlm)")
        return seqlm_training(bench, "finetune", config, overrides, plan.finetune_warmup, per_step)

    def run_hf(padding: str, precision: str) -> Figure:
        require(REPO / resolved.model, "the mlm pretraining benchmark (seqlm)")
        options = ["--warmup", str(plan.finetune_warmup), "--padding", padding, *(["--bf16"] if precision == "bf16" else [])]
        return bench.hf_figure("finetune", config, overrides, f"hf-finetune-{padding}-{precision}", *options)

    seqlm = bench.measure("finetune / seqlm", run_seqlm)
    variants = [("Trainer pad to max_length, fp32", "max_length", "fp32"), ("Trainer dynamic padding, by length, bf16", "dynamic", "bf16")]
    rows = []
    for variant, padding, precision in variants:
        if precision == "bf16" and bench.bf16 == "none":
            hf = Figure(error="skipped: torch has no bf16 on this CPU")
        else:
            hf = bench.measure(f"finetune / HF {variant}", lambda p=padding, q=precision: run_hf(p, q))
        notes = [accuracy_note(seqlm, hf, steps, n_labels), bf16_note(bench) if precision == "bf16" else ""]
        rows.append(Row("finetune classification", variant, seqlm, hf, note="; ".join(n for n in notes if n)))
    return rows


def bf16_note(bench: Bench) -> str:
    return "bf16 emulated: no AVX512-BF16/AMX" if bench.bf16 == "emulated" else ""


def accuracy_note(seqlm: Figure, hf: Figure, steps: int, n_labels: int | None) -> str:
    """Both sides' test accuracy after the same `steps` (empty when either is missing), and chance's."""
    accuracies = [figure.extra.get("test_accuracy") for figure in (seqlm, hf)]
    if None in accuracies:
        return ""
    chance = f" (chance {1 / n_labels:.3f})" if n_labels else ""
    return f"test acc {accuracies[0]:.3f} vs {accuracies[1]:.3f} after {steps} steps{chance}"


def bench_predict(bench: Bench) -> list[Row]:
    """examples/s of labelling the test verses: seqlm predict against pipeline("text-classification")."""
    from seqlm.config_loading import load_config
    from seqlm.config_schema import PredictConfig

    config = CONFIGS / "bert_classifier_predict.yaml"
    resolved = load_config(PredictConfig, config, [])

    def run_seqlm() -> Figure:
        require(REPO / resolved.model, "the finetune benchmark (seqlm)")
        output = REPO / resolved.output
        output.unlink(missing_ok=True)
        process = bench.seqlm("predict", config, [], "seqlm-predict")
        rate = bench_seqlm.predict_inputs_per_s(process.log_text())
        return Figure(rate, "examples/s", process.peak_rss_mb, process.wall_s, {"labels": bench_seqlm.predicted_labels(output)})

    def run_hf() -> Figure:
        require(REPO / resolved.model, "the finetune benchmark (seqlm)")
        return bench.hf_figure("predict", config, [], "hf-predict")

    seqlm = bench.measure("predict / seqlm", run_seqlm)
    hf = bench.measure("predict / HF pipeline", run_hf)
    note = ""
    labels = [figure.extra.pop("labels", None) for figure in (seqlm, hf)]
    if None not in labels:
        same = sum(a == b for a, b in zip(*labels)) / max(len(labels[0]), 1) if len(labels[0]) == len(labels[1]) else 0.0
        seqlm.extra["labels_equal"] = same
        note = f"labels equal: {same:.1%} of {len(labels[0])}"
        if same < 0.99:
            bench.failures.append(f"predict: seqlm and the pipeline agree on only {same:.1%} of the labels")
    return [Row("predict classification", f"pipeline(batch_size={resolved.batch_size})", seqlm, hf, note)]


# --------------------------------------------------------------------------- --help


def bench_help(bench: Bench) -> list[Row]:
    """Median wall time of `seqlm --help` over `help_runs` processes (seconds: lower is better)."""

    def run() -> Figure:
        entry = Path(bench.python).parent / "seqlm"
        argv = [str(entry), "--help"] if entry.exists() else [bench.python, "-m", "seqlm", "--help"]
        runs = [
            checked(run_measured(argv, WORK / "logs" / "seqlm-help.log", bench.plan.timeout_s, bench.env), bench.plan.timeout_s)
            for _ in range(bench.plan.help_runs)
        ]
        walls = [process.wall_s for process in runs]
        peak_rss_mb = max(p.peak_rss_mb or 0.0 for p in runs)
        return Figure(statistics.median(walls), "s", peak_rss_mb, sum(walls), {"runs_s": walls})

    figure = bench.measure("seqlm --help", run)
    return [Row("seqlm --help (median)", "", figure, None)]


# --------------------------------------------------------------------------- report


def format_value(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "s":
        return f"{value:.3f}"
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def format_mb(megabytes: float | None) -> str:
    if megabytes is None:
        return "-"
    return f"{megabytes / 1024:.2f} GB" if megabytes >= 1024 else f"{megabytes:.0f} MB"


def cell(figure: Figure | None) -> str:
    if figure is None:
        return ""
    if figure.error is not None:
        return "skipped" if figure.error.startswith("skipped") else "FAILED"
    return format_value(figure.value, figure.unit)


def render_table(rows: list[Row]) -> str:
    """The comparison as aligned plain text: one line per (task, HF variant)."""
    header = ["task", "HF variant", "unit", "seqlm", "HF", "seqlm/HF", "seqlm peak RSS", "HF peak RSS", "note"]
    lines = []
    for row in rows:
        ratio = f"{row.ratio:.2f}x" if row.ratio is not None else "-"
        hf_rss = format_mb(row.hf.peak_rss_mb) if row.hf is not None else ""
        unit = row.seqlm.unit or (row.hf.unit if row.hf is not None else "")
        lines.append([row.task, row.variant, unit, cell(row.seqlm), cell(row.hf), ratio, format_mb(row.seqlm.peak_rss_mb), hf_rss, row.note])
    widths = [max(len(line[i]) for line in [header, *lines]) for i in range(len(header))]
    numeric = {3, 4, 5, 6, 7}

    def render(line: list[str]) -> str:
        return "  ".join(text.rjust(w) if i in numeric else text.ljust(w) for i, (text, w) in enumerate(zip(line, widths))).rstrip()

    return "\n".join([render(header), render(["-" * w for w in widths]), *map(render, lines)])


def render_scaling(scaling: dict[str, Any]) -> str:
    """The scaling check: MB/s and peak RSS at 1× and scale×, and how time and RSS grew."""
    scale = scaling["scale"]
    lines = [f"scaling (seqlm tokenize, the corpus repeated {scale}x; ideal: time x{scale}, peak RSS x1):"]
    for key in ("1x", f"{scale}x"):
        figure = scaling[key]
        if figure["error"] is not None:
            lines.append(f"  {key:>4}: FAILED")
            continue
        extra = figure["extra"]
        lines.append(
            f"  {key:>4}: {extra['megabytes']:6.1f} MB in {extra['encode_s']:6.1f} s = {figure['value']:.3g} MB/s, "
            f"peak RSS {format_mb(figure['peak_rss_mb'])}"
        )
    if "time_ratio" in scaling:
        lines.append(f"  time x{scaling['time_ratio']:.2f}, peak RSS x{scaling['peak_rss_ratio']:.2f}")
    return "\n".join(lines)


def machine_info() -> dict[str, Any]:
    """What the figures were measured on (and how busy the machine was)."""
    import platform

    import datasets
    import tokenizers
    import torch
    import transformers

    model = next((line.split(":", 1)[1].strip() for line in _cpuinfo() if line.startswith("model name")), platform.processor())
    return {
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "cpu_bf16_instructions": sorted(_BF16_FLAGS & _cpu_flags()),  # native bf16 matmul: AVX512-BF16 / AMX
        "torch_cpu_bf16": bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()),  # True on any AVX-512 CPU (emulated)
        "torch_threads": torch.get_num_threads(),
        "memory_gb": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "datasets": datasets.__version__,
        "tokenizers": tokenizers.__version__,
        "load_average_at_start": os.getloadavg(),
    }


def bf16_support(machine: dict[str, Any]) -> str:
    """native (the CPU has bf16 instructions), emulated (torch runs bf16 on AVX-512 without them), or none."""
    if machine["cpu_bf16_instructions"]:
        return "native"
    return "emulated" if machine["torch_cpu_bf16"] else "none"


_BF16_FLAGS = {"avx512_bf16", "amx_bf16"}


def _cpu_flags() -> set[str]:
    return {flag for line in _cpuinfo() if line.startswith("flags") for flag in line.split(":", 1)[1].split()}


def _cpuinfo() -> list[str]:
    try:
        return Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines()
    except OSError:
        return []


# --------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke check (tiny models, a few steps): figures mean nothing")
    parser.add_argument("--json", type=Path, help="also write every figure and the machine to this file")
    parser.add_argument("--only", help=f"comma-separated subset of: {', '.join(TASKS)}")
    args = parser.parse_args()
    only = set(args.only.split(",")) if args.only else set(TASKS)
    if only - set(TASKS):
        parser.error(f"--only: unknown task(s) {', '.join(sorted(only - set(TASKS)))}; known: {', '.join(TASKS)}")

    machine = machine_info()
    bench = Bench(PLANS["quick" if args.quick else "default"], bf16_support(machine))
    bench.say(f"plan {bench.plan.name}: {machine['cpus_usable']} CPUs, bf16 {bench.bf16}, load average {machine['load_average_at_start']}")
    WORK.mkdir(parents=True, exist_ok=True)
    fresh(WORK / "hf-cache")
    if only & {"tokenize", "clm", "mlm"}:
        prepare(bench)
    rows: list[Row] = []
    scaling: dict[str, Any] | None = None
    if "tokenize" in only:
        tokenize_rows, scaling = bench_tokenize(bench)
        rows += tokenize_rows
    for objective in ("clm", "mlm"):
        if objective in only:
            rows += bench_pretrain(bench, objective)
    if "finetune" in only:
        rows += bench_finetune(bench)
    if "predict" in only:
        rows += bench_predict(bench)
    if "help" in only:
        rows += bench_help(bench)
    total_s = time.perf_counter() - bench.started

    print(render_table(rows))
    if scaling is not None:
        print()
        print(render_scaling(scaling))
    print(f"\n{bench.plan.name} plan, {total_s:.0f} s in all; {machine['cpus_usable']} CPUs ({machine['cpu_model']}), "
          f"torch {machine['torch']}, load average at start {machine['load_average_at_start'][0]:.2f}")
    for failure in bench.failures:
        print(f"FAILED: {failure}", file=sys.stderr)
    if args.json is not None:
        machine["load_average_at_end"] = os.getloadavg()
        report = {"plan": asdict(bench.plan), "machine": machine, "total_s": total_s,
                  "rows": [{**asdict(row), "ratio": row.ratio} for row in rows], "scaling": scaling, "failures": bench.failures}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 1 if bench.failures else 0


if __name__ == "__main__":
    sys.exit(main())
