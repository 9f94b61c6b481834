"""Report sinks: where a run's records go besides metrics.jsonl (`training.report_to`).

`RunDir` hands every sink what it writes itself, so neither the loop nor the commands know a sink
by name: `open` when the run starts or resumes, `log` for each metrics.jsonl record, `close` with
metrics.json's final metrics (or None when the run ends without them: an error, a stop signal).

A sink's view is rebuilt from metrics.jsonl each time it opens: it gets the records the run keeps
(none on a fresh start; on a resume those written before the checkpoint), so a resumed run continues
the same curves without the steps it discarded, and a sink enabled on a resume shows the whole run.
The outputs of a sink that is not enabled are deleted when the run starts or resumes: they could
only show steps that the run has since discarded. Rank 0 alone writes, as for metrics.jsonl.

A new sink (an MLflow file store, trackio, ...) is a class with `output` and the three methods of
`ReportSink`, a line in `SINKS` and its name in the config's `report_to` (seqlm.config.schema.ReportTo).
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from seqlm.training.tensorboard_sink import TensorBoardSink


class ReportSink(Protocol):
    output: str  # its file or directory in the run dir

    def open(self, run_dir: Path, config_yaml: str, history: list[dict[str, Any]]) -> None:
        """Write the sink's output anew in `run_dir` from the resolved config and the records kept so far."""

    def log(self, record: dict[str, Any]) -> None:
        """One record as appended to metrics.jsonl (non-finite numbers as None)."""

    def close(self, final_metrics: dict[str, Any] | None) -> None:
        """The run's end: metrics.json's content when it was written, else None."""


# name in `training.report_to` -> the sink (its import must stay cheap: `seqlm --help` imports this).
SINKS: dict[str, type[ReportSink]] = {"tensorboard": TensorBoardSink}
SINK_OUTPUTS = tuple(sink.output for sink in SINKS.values())


class ReportSinks:
    """The sinks a run reports to, as one."""

    def __init__(self, names: Sequence[str] = ()):
        unknown = [name for name in names if name not in SINKS]
        if unknown:  # the config's Literal admits only registered names
            raise ValueError(f"unknown report sinks {unknown}; known: {sorted(SINKS)}")
        self.names = list(dict.fromkeys(names))
        self._opened: list[ReportSink] = []

    def open(self, run_dir: Path, config_yaml: str, history: list[dict[str, Any]]) -> None:
        self.close(None)
        for name, sink in SINKS.items():
            if name not in self.names:
                _remove(run_dir / sink.output)
        for name in self.names:
            opened = SINKS[name]()
            opened.open(run_dir, config_yaml, history)
            self._opened.append(opened)

    def log(self, record: dict[str, Any]) -> None:
        for sink in self._opened:
            sink.log(record)

    def close(self, final_metrics: dict[str, Any] | None) -> None:
        opened, self._opened = self._opened, []
        for sink in opened:
            sink.close(final_metrics)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
