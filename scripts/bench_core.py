"""The machinery of `scripts/bench.py`: the plan, and running each measured command in its own process.

Contracts:

- `run_measured(argv, log, timeout_s, env)` runs one command from the repository root, its
  stdout and stderr into `log`, killed (with every process it started) after `timeout_s`; its
  wall time and peak RSS are those of that one command (and the children it waited for: the
  largest resident set among them, not their sum), measured by LAUNCHER.
- `Bench.measure(label, produce)` returns `produce()`'s Figure, or a Figure holding the error:
  a failure is printed and counted (the exit status is then 1), and the other rows still run.
- `Bench.seqlm` runs `python -m seqlm NAME CONFIG --set ...`; `Bench.hf` runs `bench_hf.py TASK`
  and returns the result it wrote. Both raise BenchFailure (with the end of the log) unless the
  command exits 0. Every log lands in runs/bench/logs/.
- `first_records(source, count, name)`: runs/bench/NAME.EXT holding the first `count` records of a jsonl file.
- `fastest_alternating(bench, seqlm, hf)` runs each side `plan.repeats` times, alternating, and keeps each
  side's fastest run with the largest peak RSS of its runs (`fastest`).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import bench_seqlm
from bench_report import Figure, format_mb, format_value

REPO = Path(__file__).resolve().parent.parent
CONFIGS = REPO / "configs" / "bench"
WORK = REPO / "runs" / "bench"


@dataclass(frozen=True)
class Plan:
    """How much work each benchmark does; a plan applies to both sides alike."""

    name: str
    pretrain_warmup: int  # optimizer steps left out of the throughput (also seqlm's log window)
    pretrain_measured: int  # steps measured after the warm-up: a multiple of pretrain_warmup
    # Runs per side of pretraining (seqlm and Trainer fp32, per objective) and of predict, alternating;
    # each side's fastest counts, with the largest peak RSS of its runs.
    repeats: int
    finetune_warmup: int
    finetune_measured: int  # steps measured after the warm-up by the short runs: a multiple of finetune_warmup
    # The accuracy runs (seqlm, and HF dynamic padding fp32 in both orders) train this many steps
    # (a multiple of finetune_warmup), and their throughput is that of all the steps after the
    # warm-up: about an epoch, so each side's figure covers the same examples whatever order its
    # sampler draws them in (with dynamic padding a 25-step window's rate depends on which
    # lengths it happened to draw).
    finetune_accuracy_steps: int
    scale: int  # the scaling check tokenizes the corpus this many times over
    help_runs: int
    timeout_s: int  # per process
    hf_bf16: bool = True  # the HF Trainer bf16 rows (pretraining and fine-tuning)
    pretrain_overrides: list[str] = field(default_factory=list)  # also the fine-tuning start's model
    finetune_overrides: list[str] = field(default_factory=list)
    # seq2seq training (`plan.repeats` runs per side, alternating): the first seq2seq_warmup optimizer steps
    # are left out, the seq2seq_measured after them (a multiple of seq2seq_warmup) are measured.
    seq2seq_warmup: int = 5
    seq2seq_measured: int = 30
    seq2seq_overrides: list[str] = field(default_factory=list)
    seq2seq_validation: int | None = None  # seqlm's closing validation reads this many examples; None: all
    generate_model_steps: int = 400  # the generation rows' model: the seq2seq T5 trained this many steps, untimed
    generate_inputs: int | None = None  # the generation rows translate this many validation sources; None: all
    generate_overrides: list[str] = field(default_factory=list)
    # Extractive QA (`--only qa`): seqlm fine-tunes qa_model_steps steps (its model answers the predict row) and HF
    # qa_warmup + qa_measured; both are measured on the qa_measured steps after the first qa_warmup.
    qa_warmup: int = 5
    qa_measured: int = 25
    qa_model_steps: int = 200
    qa_questions: int | None = None  # validation and test questions scored after training and answered by predict; None: all
    qa_overrides: list[str] = field(default_factory=list)  # fine-tuning, both sides
    qa_predict_overrides: list[str] = field(default_factory=list)  # predict, both sides
    # The LLM rows (bench_llm): LoRA fine-tuning leaves out llm_warmup optimizer steps and measures the
    # llm_measured after them (a multiple of llm_warmup); generation continues llm_generate_inputs prompts.
    llm_warmup: int = 2
    llm_measured: int = 8
    llm_overrides: list[str] = field(default_factory=list)
    llm_generate_inputs: int = 64


class BenchFailure(Exception):
    """A sub-benchmark could not produce its figure; the message says why (one or a few lines)."""


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
# (Linux keeps the old address space's high-water mark across exec), and bench.py holds
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
    """Run `argv` from the repository root, stdout and stderr into `log`; killed after `timeout_s`."""
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
    """One benchmark session: the plan, the environment of every run, and the failures so far."""

    def __init__(self, plan: Plan, bf16: str):
        self.plan = plan
        self.bf16 = bf16  # see bench_report.bf16_support
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

    def run(self, argv: list[str], log_name: str) -> Process:
        """Run `argv` measured, its log runs/bench/logs/LOG_NAME.log; BenchFailure unless it exits 0."""
        return checked(run_measured(argv, WORK / "logs" / f"{log_name}.log", self.plan.timeout_s, self.env), self.plan.timeout_s)

    def seqlm(self, name: str, config: Path, overrides: list[str], log_name: str) -> Process:
        """Run `seqlm NAME CONFIG --set ...`; BenchFailure unless it exits 0."""
        return self.run(bench_seqlm.command(self.python, name, config, overrides), log_name)

    def script(self, script: str, task: str, config: Path, overrides: list[str], log_name: str, *options: str) -> tuple[Process, dict[str, Any]]:
        """Run `scripts/SCRIPT TASK --config CONFIG --result OUT.json [--set ...] OPTIONS`; its process and OUT.json."""
        result = WORK / "results" / f"{log_name}.json"
        result.parent.mkdir(parents=True, exist_ok=True)
        result.unlink(missing_ok=True)
        argv = [self.python, str(REPO / "scripts" / script), task, "--config", str(config), "--result", str(result)]
        for assignment in overrides:
            argv += ["--set", assignment]
        process = self.run([*argv, *options], log_name)
        return process, json.loads(result.read_text(encoding="utf-8"))

    def hf(self, task: str, config: Path, overrides: list[str], log_name: str, *options: str) -> tuple[Process, dict[str, Any]]:
        """Run `bench_hf.py TASK`; its process and the result it wrote."""
        return self.script("bench_hf.py", task, config, overrides, log_name, *options)

    def hf_figure(self, task: str, config: Path, overrides: list[str], log_name: str, *options: str) -> Figure:
        process, result = self.hf(task, config, overrides, log_name, *options)
        value, unit = result.pop("value"), result.pop("unit")
        return Figure(value, unit, process.peak_rss_mb, process.wall_s, result)


def fresh(path: Path) -> Path:
    """Remove a previous run's output, so that a failed run cannot pass off stale figures as its own."""
    shutil.rmtree(path, ignore_errors=True)
    return path


def first_records(source: Path, count: int, name: str) -> Path:
    """runs/bench/NAME.EXT holding the first `count` records (lines) of the jsonl file `source`."""
    lines = [line for line in (REPO / source).read_text(encoding="utf-8").splitlines(keepends=True) if line.strip()]
    first = WORK / f"{name}{source.suffix}"
    first.parent.mkdir(parents=True, exist_ok=True)
    first.write_text("".join(lines[:count]), encoding="utf-8")
    return first


def require(path: Path, made_by: str) -> None:
    if not path.exists():
        raise BenchFailure(f"{path.relative_to(REPO)} is missing: {made_by} did not run or failed")


def fastest_alternating(bench: Bench, *sides: tuple[str, Callable[[], Figure]]) -> tuple[Figure, ...]:
    """Each side's `fastest` of `plan.repeats` runs, the sides (e.g. seqlm, HF) alternating; each side is (label, run)."""
    repeats = bench.plan.repeats
    runs: list[list[Figure]] = [[] for _ in sides]
    for attempt in range(1, repeats + 1):
        of = f" (run {attempt} of {repeats})" if repeats > 1 else ""
        for (label, run), figures in zip(sides, runs):
            figures.append(bench.measure(f"{label}{of}", run))
    return tuple(fastest(figures) for figures in runs)


def fastest(figures: list[Figure]) -> Figure:
    """The fastest of repeated runs of one command, with every run's rate in extra["runs"] and the
    largest peak RSS of them (a repeat must not hide a memory peak). The first failure if all failed."""
    done = [figure for figure in figures if figure.value is not None]
    if not done:
        return figures[0]
    best = max(done, key=lambda figure: figure.value)
    peak = max((f.peak_rss_mb for f in done if f.peak_rss_mb is not None), default=None)
    return replace(best, peak_rss_mb=peak, extra={**best.extra, "runs": [f.value for f in figures]})
