"""The figures of `scripts/bench.py` and how they are shown: the table, the scaling check, the
accuracy check, the JSON report, and the machine they were measured on.

Contracts:

- `Figure` is one side's result for one task (a rate, or seconds for `--help`), `Row` one line of
  the table: seqlm against one HF variant. `Row.ratio` is seqlm / HF (above 1: seqlm is faster).
- `hf_best(rows)`: per task, the HF variant with the highest rate (tasks with one HF variant
  included; rows whose HF side failed or was skipped are left out; `--help` has no HF side).
- `accuracy` (built by the finetune benchmark, see `bench_tasks`): {"steps", "chance",
  "seqlm": test accuracy, "hf": {variant: test accuracy}, "compared": the HF variant quoted
  against seqlm}. `render_accuracy` prints it as `test acc seqlm X vs HF Y (chance C)`.
- `render_agreement(rows, bf16)` lists what the inference rows measured of `precision: auto`'s agreement
  with fp32 (each a seqlm Figure's extra["agreement"]: {"text", "value", "bar"}; see bench_inference).
- `report(...)` is the `--json` document: plan, machine, total_s, rows (with ratio), hf_best,
  accuracy, scaling, failures. Nothing here runs a benchmark or imports torch at module level.
"""

from __future__ import annotations

import os
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


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


def hf_best(rows: list[Row]) -> dict[str, dict[str, Any]]:
    """Per task, the fastest HF variant that produced a rate: {task: {variant, value, unit, ratio}}."""
    best: dict[str, Row] = {}
    for row in rows:
        if row.hf is None or row.hf.value is None or row.hf.unit == "s":
            continue
        if row.task not in best or row.hf.value > best[row.task].hf.value:  # type: ignore[union-attr]
            best[row.task] = row
    return {
        task: {"variant": row.variant, "value": row.hf.value, "unit": row.hf.unit, "ratio": row.ratio}  # type: ignore[union-attr]
        for task, row in best.items()
    }


def mark_hf_best(rows: list[Row]) -> None:
    """Prefix the note of each task's fastest HF variant with 'HF best' (tasks where several variants have a rate)."""
    best = hf_best(rows)
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.task] = counts.get(row.task, 0) + (row.hf is not None and row.hf.value is not None)
    for row in rows:
        if counts[row.task] > 1 and row.task in best and best[row.task]["variant"] == row.variant:
            row.note = "; ".join(n for n in ("HF best", row.note) if n)


def report(plan: Any, machine: dict[str, Any], total_s: float, rows: list[Row], scaling: dict[str, Any] | None,
           accuracy: dict[str, Any] | None, failures: list[str]) -> dict[str, Any]:
    """The `--json` document (see the module docstring)."""
    return {
        "plan": asdict(plan), "machine": machine, "total_s": total_s,
        "rows": [{**asdict(row), "ratio": row.ratio} for row in rows],
        "hf_best": hf_best(rows), "accuracy": accuracy, "scaling": scaling, "failures": failures,
    }  # fmt: skip


# --------------------------------------------------------------------------- text


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


def render_accuracy(accuracy: dict[str, Any]) -> str:
    """The accuracy check: seqlm against the compared HF variant, then every HF variant trained as long."""

    def acc(value: float | None) -> str:
        return "FAILED" if value is None else f"{value:.3f}"

    steps, chance, compared = accuracy["steps"], accuracy["chance"], accuracy["compared"]
    chance_text = f" (chance {chance:.3f})" if chance else ""
    lines = [
        f"accuracy check ({steps} fine-tuning steps each, same start, data and optimizer settings):",
        f"  test acc seqlm {acc(accuracy['seqlm'])} vs HF {acc(accuracy['hf'].get(compared))}{chance_text}   [HF: {compared}]",
    ]
    lines += [f"  HF {variant}: {acc(value)}" for variant, value in accuracy["hf"].items() if variant != compared]
    return "\n".join(lines)


def render_agreement(rows: list[Row], bf16: str) -> str | None:
    """The agreement of seqlm's `precision: auto` with fp32: the rows' extra["agreement"] texts (None: no such row)."""
    texts = [row.seqlm.extra["agreement"]["text"] for row in rows if "agreement" in row.seqlm.extra]
    if not texts:
        return None
    resolved = "bf16" if bf16 == "native" else "fp32"
    return "\n".join([f"agreement of precision auto ({resolved} on this CPU: bf16 {bf16}) with fp32:", *(f"  {t}" for t in texts)])


# --------------------------------------------------------------------------- the machine


def render_matmul(rates: dict[str, float]) -> str:
    return f"matmul ceiling fp32 {rates['fp32']:.0f} GFLOP/s, bf16 {rates['bf16']:.0f} GFLOP/s"


def machine_info() -> dict[str, Any]:
    """What the figures were measured on (and how busy the machine was)."""
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


def matmul_gflops(size: tuple[int, int, int] = (2048, 1024, 1024), seconds: float = 0.5) -> dict[str, float]:
    """GFLOP/s of one (m×k)·(k×n) matmul on torch's intra-op threads, fp32 and bf16: the ceiling
    every training and inference figure sits under (the performance issue's reference CPU gave
    fp32 ≈ 188 and bf16 ≈ 413 with AVX512-BF16). The best of repeated calls over `seconds` each."""
    import time

    import torch

    m, k, n = size
    rates = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a, b = torch.randn(m, k).to(dtype), torch.randn(k, n).to(dtype)
        torch.mm(a, b)  # warm-up: first-call dispatch and buffer setup
        best, deadline = float("inf"), time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            torch.mm(a, b)
            best = min(best, time.perf_counter() - started)
        rates[name] = 2 * m * k * n / best / 1e9
    return rates


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
