"""`seqlm report RUN_DIR [RUN_DIR ...] [--output report.html]`: the runs' curves, metrics, config differences
and evaluation results as one self-contained HTML page, with its figures as PNG files beside it
(`seqlm.reporting.build` describes the files); its path is printed on stdout. Several runs are overlaid for comparison, the first
being the one the others' configs are compared against.
"""

from __future__ import annotations

from pathlib import Path

from seqlm.console import Console
from seqlm.reporting.build import Report, default_output, write_report


def run(run_dirs: list[Path], output: Path | None, quiet: bool = False) -> Report:
    console = Console(quiet=quiet)
    report = write_report(run_dirs, output if output is not None else default_output(run_dirs))
    console.info(f"report written to {report.html}; its {len(report.figures)} figures beside it as {report.html.stem}-*.png")
    print(report.html, flush=True)  # stdout carries the result: the page's path
    return report
