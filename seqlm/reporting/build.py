"""Runs → figures → report.html and its PNGs: what `seqlm report` and the end of a training run call.

    report.html                  the page: every figure embedded, so it alone is the report
    report-loss.png, …           the same figures as files beside it (report-<figure>.png), for slides and papers

The output is checked before anything is drawn (exit 4 at once for an unwritable place); the PNGs are
written first and the page last, each through a temporary sibling, so a report.html that exists is whole.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from seqlm.io.atomic_files import write_bytes_atomic, write_text_atomic
from seqlm.io.output_paths import check_output_file, write_failure
from seqlm.reporting.figures import COLOURS, Figure, confusion_figure, curve_figures
from seqlm.reporting.page import render
from seqlm.reporting.runs import read_runs

REPORT_NAME = "report.html"


@dataclass
class Report:
    html: Path
    figures: list[Path]


def default_output(run_dirs: list[Path]) -> Path:
    """One run: its own report.html; several: report.html in the working directory (no run owns a comparison)."""
    return Path(run_dirs[0]) / REPORT_NAME if len(run_dirs) == 1 else Path(REPORT_NAME)


def write_report(run_dirs: list[Path], output: Path, key: str = "--output") -> Report:
    """Read the runs (DataError, exit 3, for a directory that is no run or has no metrics), draw, write."""
    output = Path(output)
    if output.is_dir():  # a directory: the report goes into it
        output = output / REPORT_NAME
    check_output_file(output, key)
    runs = read_runs([Path(path) for path in run_dirs])
    curves = curve_figures(runs)
    confusions = {index: figure for index, run in enumerate(runs) if (figure := confusion_figure(run, index)) is not None}
    page = render(runs, curves, confusions, COLOURS, time.strftime("%Y-%m-%d %H:%M:%S %z"))
    figures: list[Figure] = [*curves, *confusions.values()]
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        written = []
        for figure in figures:
            path = output.with_name(f"{output.stem}-{figure.name}.png")
            write_bytes_atomic(path, figure.png)
            written.append(path)
        write_text_atomic(output, page)
    except OSError as exc:
        failure = write_failure(exc, output, key)
        if failure is None:
            raise
        raise failure from exc
    return Report(output, written)


def report_at_end_of_run(run_dir: Path, console) -> None:
    """`report: true` in pretrain / finetune: RUN/report.html once the run is finished (rank 0 calls it).
    The training's outputs are complete by then, so a report that cannot be drawn is a warning, never an error."""
    try:
        report = write_report([run_dir], Path(run_dir) / REPORT_NAME, key="report")
    except Exception as exc:  # no matplotlib, a full disk, a bug in drawing: the finished training stands
        reason = str(exc).splitlines()[0] if str(exc).strip() else type(exc).__name__
        console.warn(f"{Path(run_dir) / REPORT_NAME}: the run report was not written ({reason}); the run itself is complete; "
                     f"draw it later with: seqlm report {run_dir}")  # fmt: skip
        return
    console.info(f"run report: {report.html}")
