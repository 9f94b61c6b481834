"""Print `seqlm evaluate`'s metrics on stdout: JSON (`--json`) or readable tables.

A metric/value table of every scalar; then, for whatever the task's metrics hold, a per-class,
per-type (entities) or per-tag table (precision, recall, F1, support) and the confusion matrix
(rows: true label, columns: predicted label). What is printed follows the metrics, not the task.
"""

from __future__ import annotations

import json
import sys
from typing import Any

# Tables of per-label scores a task's metrics may hold: key → table title.
PER_LABEL_TABLES = {"per_class": "per class", "per_type": "per entity type", "per_tag": "per tag"}


def print_metrics(metrics: dict[str, Any], json_output: bool) -> None:
    if json_output:
        sys.stdout.write(json.dumps(metrics, indent=2) + "\n")
        return
    from rich.console import Console as RichConsole
    from rich.table import Table

    tables = [_scalar_table(metrics, Table)]
    tables += [_per_label_table(metrics[key], title, Table) for key, title in PER_LABEL_TABLES.items() if key in metrics]
    if "confusion_matrix" in metrics:
        tables.append(_confusion_table(metrics["confusion_matrix"], Table))
    console = RichConsole(file=sys.stdout, highlight=False)
    if not console.is_terminal:  # files and pipes get 80 columns by default: widen rather than cut label names
        console.width = max(console.width, _confusion_width(metrics.get("confusion_matrix")))
    for table in tables:
        console.print(table)


def _value(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _scalar_table(metrics: dict[str, Any], Table: Any) -> Any:
    table = Table(title="seqlm evaluate", show_header=True)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in metrics.items():
        if not isinstance(value, (dict, list)):
            table.add_row(key, _value(value))
    return table


def _per_label_table(per_label: dict[str, dict[str, Any]], title: str, Table: Any) -> Any:
    table = Table(title=title, show_header=True)
    table.add_column("label", no_wrap=True)
    for column in ("precision", "recall", "f1", "support"):
        table.add_column(column, justify="right")
    for label, scores in per_label.items():
        table.add_row(label, *(_value(scores[key]) for key in ("precision", "recall", "f1", "support")))
    return table


def _confusion_table(confusion: dict[str, Any], Table: Any) -> Any:
    table = Table(title="confusion matrix (rows: true label, columns: predicted)", show_header=True)
    table.add_column("true \\ predicted", no_wrap=True)
    for label in confusion["labels"]:
        table.add_column(label, justify="right", no_wrap=True)
    for label, row in zip(confusion["labels"], confusion["matrix"]):
        table.add_row(label, *(str(count) for count in row))
    return table


def _confusion_width(confusion: dict[str, Any] | None) -> int:
    """Characters the confusion matrix table needs on one line (0 without one)."""
    if not confusion:
        return 0
    cells = [len("true \\ predicted"), *(len(label) for label in confusion["labels"])]
    cells += [len(str(count)) for row in confusion["matrix"] for count in row]
    return (max(cells) + 3) * (len(confusion["labels"]) + 1) + 1
