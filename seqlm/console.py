"""Human-facing output: logs and progress on stderr, never on stdout (stdout carries results).

On a terminal: rich progress bars with live fields. Elsewhere (cron, CI, pipes): plain
timestamped lines, at most one progress line per `plain_interval_s`, no control characters.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any


class Console:
    """`silent`: nothing at all (the ranks other than 0 of a torchrun job: rank 0 speaks for the run)."""

    def __init__(
        self, quiet: bool = False, interactive: bool | None = None, plain_interval_s: float = 10.0, silent: bool = False
    ):
        self.quiet = quiet or silent
        self.silent = silent
        if interactive is None:
            interactive = sys.stderr.isatty() and os.environ.get("TERM") != "dumb"
        self.interactive = interactive
        self.plain_interval_s = plain_interval_s
        self._rich: Any = None
        if interactive:
            from rich.console import Console as RichConsole

            self._rich = RichConsole(stderr=True, highlight=False)

    def info(self, message: str) -> None:
        if not self.quiet:
            self._emit(message)

    def outcome(self, message: str) -> None:
        """How a command ended when it did nothing (e.g. a finished run): shown even with --quiet."""
        if not self.silent:
            self._emit(message)

    def warn(self, message: str) -> None:
        """Warnings are shown even with --quiet."""
        if not self.silent:
            self._emit(f"warning: {message}", style="yellow")

    def _emit(self, message: str, style: str | None = None) -> None:
        if self._rich is not None:
            self._rich.print(message, style=style, markup=False)
        else:
            stamp = datetime.now().strftime("%Y-%m-%d %H:%M:%S")
            print(f"{stamp} seqlm: {message}", file=sys.stderr, flush=True)

    @contextmanager
    def progress(self, description: str, total: float | None, unit: str = "") -> Iterator[ProgressTracker]:
        tracker = ProgressTracker(self, description, total, unit)
        if self._rich is not None and not self.quiet:
            from rich.progress import (
                BarColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            columns = [
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                TextColumn("{task.completed:,.0f}/{task.total:,.0f} " + unit if total else "{task.completed:,.0f} " + unit),
                TextColumn("{task.fields[status]}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
            ]
            with Progress(*columns, console=self._rich, transient=False) as bar:
                tracker._bar = bar
                tracker._task = bar.add_task(description, total=total, status="")
                yield tracker
        else:
            yield tracker


class ProgressTracker:
    """`update(completed, **fields)`: live on a terminal, throttled plain lines elsewhere."""

    def __init__(self, console: Console, description: str, total: float | None, unit: str):
        self.console = console
        self.description = description
        self.total = total
        self.unit = unit
        self._bar: Any = None
        self._task: Any = None
        self._last_plain = time.monotonic()

    def update(self, completed: float, **fields: Any) -> None:
        status = "  ".join(f"{key} {_format(value)}" for key, value in fields.items())
        if self._bar is not None:
            self._bar.update(self._task, completed=completed, status=status)
            return
        now = time.monotonic()
        if now - self._last_plain >= self.console.plain_interval_s:
            self._last_plain = now
            of_total = f"/{self.total:,.0f}" if self.total else ""
            self.console.info(f"{self.description}: {completed:,.0f}{of_total} {self.unit} {status}".rstrip())


def _format(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
