"""The report as one self-contained HTML page: inline CSS, figures embedded as data: URIs, no script,
nothing fetched, so it opens from disk, offline, and prints.

Every metric cell carries its exact value (`data-run`: the run's place on the command line, `data-key`: the
metrics.json key, or eval.KEY for eval/metrics.json, `data-value`: the value as JSON) beside the rounded text shown, so a reader (or a test) can check the table against
the run's files.
"""

from __future__ import annotations

import base64
import json
from html import escape
from typing import Any

from seqlm.reporting.figures import Figure
from seqlm.reporting.runs import Run, flat_config

# Tables of per-label scores seqlm evaluate writes: key → what a row is (the same as seqlm.metrics.report).
PER_LABEL_TABLES = {"per_class": "class", "per_type": "entity type", "per_tag": "tag"}
SAMPLE_TEXT_CHARACTERS = 400  # a longer input or output is cut in the sample table
# Sample columns: the input, then what it should give (fields predict passed through), then the outputs as written.
SAMPLE_FIELDS_FIRST = ("id", "input", "input_pair", "question", "context", "target", "references", "answers", "input_label")

STYLE = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; color: #1a1a1a;
       max-width: 1100px; margin: 2em auto; padding: 0 1.2em; background: #fff; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { font-size: 1.25em; border-bottom: 1px solid #ccc; padding-bottom: 0.2em;
margin-top: 1.8em; } h3 { font-size: 1.05em; margin-bottom: 0.4em; }
.meta { color: #555; margin-top: 0; }
figure { margin: 1em 0; page-break-inside: avoid; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #444; font-size: 0.9em; }
table { border-collapse: collapse; margin: 0.6em 0 1em; font-size: 0.9em; page-break-inside: avoid; }
th, td { border: 1px solid #d0d0d0; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } td.number { text-align: right; font-variant-numeric: tabular-nums; }
td.text { max-width: 32em; white-space: pre-wrap; word-break: break-word; }
code, pre { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 0.9em; }
pre { background: #f7f7f7; padding: 0.6em; overflow-x: auto; }
.swatch { display: inline-block; width: 0.9em; height: 0.9em; margin-right: 0.4em; vertical-align: -0.1em; }
@media print { body { margin: 0; max-width: none; font-size: 11pt; } h2 { page-break-after: avoid; } }
"""


def render(runs: list[Run], curves: list[Figure], confusions: dict[int, Figure], colours: list[str], generated_at: str) -> str:
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>seqlm report: {escape(', '.join(run.label for run in runs))}</title>",
        f"<style>{STYLE}</style></head><body>",
        "<h1>seqlm run report</h1>",
        f'<p class="meta">Written {escape(generated_at)} by <code>seqlm report</code>.</p>',
        _runs_table(runs, colours),
    ]
    if curves:
        parts.append("<h2>Training curves</h2>")
        parts += [_figure(figure) for figure in curves]
    parts += [_metrics_table(runs), _config_differences(runs)]
    for index, run in enumerate(runs):
        parts.append(_task_section(index, run, confusions.get(index)))
    parts.append(_configs(runs))
    parts.append("</body></html>\n")
    return "\n".join(part for part in parts if part)


def _runs_table(runs: list[Run], colours: list[str]) -> str:
    rows = []
    for index, run in enumerate(runs):
        steps = run.metrics.get("steps") or max((int(s[-1]) for s, _ in run.train.values() if len(s)), default=0)
        state = "finished" if run.finished else "not finished (in progress or stopped)"
        swatch = f'<span class="swatch" style="background:{colours[index % len(colours)]}"></span>'
        rows.append(
            f"<tr><td>{swatch}{escape(run.label)}</td><td><code>{escape(str(run.path))}</code></td>"
            f"<td>{escape(run.task or '?')}</td><td class=\"number\">{steps}</td><td>{state}</td></tr>"
        )
    head = "<tr><th>run</th><th>directory</th><th>task / objective</th><th>steps</th><th>state</th></tr>"
    return f"<h2>Runs</h2><table>{head}{''.join(rows)}</table>"


def _figure(figure: Figure) -> str:
    data = base64.b64encode(figure.png).decode("ascii")
    return (
        f'<figure id="figure-{escape(figure.name)}"><img src="data:image/png;base64,{data}" alt="{escape(figure.title)}">'
        f"<figcaption>{escape(figure.title)}</figcaption></figure>"
    )


def _metrics_table(runs: list[Run]) -> str:
    """metrics.json's scalars, one row per key (final val_*, best_val_*, best_step, test_*, …), one column per run."""
    keys: dict[str, None] = {}
    for run in runs:
        keys.update({key: None for key, value in run.metrics.items() if _is_scalar(value)})
    if not keys:
        return "<h2>Final and best metrics</h2><p>No metrics.json yet: the runs have not finished.</p>"
    head = "<tr><th>metric</th>" + "".join(f"<th>{escape(run.label)}</th>" for run in runs) + "</tr>"
    rows = []
    for key in keys:
        cells = "".join(_metric_cell(index, key, run.metrics.get(key)) for index, run in enumerate(runs))
        rows.append(f"<tr><th>{escape(key)}</th>{cells}</tr>")
    return (
        "<h2>Final and best metrics</h2><p>From each run's <code>metrics.json</code>: <code>val_*</code> at the last step, "
        "<code>best_val_*</code> at <code>best_step</code> (the model in <code>best/</code>), <code>test_*</code> scored with "
        f"<code>best/</code>.</p><table>{head}{''.join(rows)}</table>"
    )


def _metric_cell(run_index: int, key: str, value: Any) -> str:
    if value is None:
        return '<td class="number">–</td>'
    exact = escape(json.dumps(value), quote=True)
    return f'<td class="number" data-run="{run_index}" data-key="{escape(key)}" data-value="{exact}">{escape(_shown(value))}</td>'


def _config_differences(runs: list[Run]) -> str:
    if len(runs) < 2:
        return ""
    first = flat_config(runs[0].config)
    parts = [f"<h2>Config differences against {escape(runs[0].label)}</h2>"]
    for run in runs[1:]:
        other = flat_config(run.config)
        changed = [key for key in dict.fromkeys([*first, *other]) if first.get(key, "∅") != other.get(key, "∅")]
        changed = [key for key in changed if key != "output_dir"]
        if not changed:
            parts.append(f"<p>{escape(run.label)}: the same config (apart from output_dir).</p>")
            continue
        rows = "".join(
            f"<tr><td><code>{escape(key)}</code></td><td>{escape(_config_value(first, key))}</td>"
            f"<td>{escape(_config_value(other, key))}</td></tr>"
            for key in changed
        )
        parts.append(
            f"<h3>{escape(run.label)}</h3><table><tr><th>key</th><th>{escape(runs[0].label)}</th>"
            f"<th>{escape(run.label)}</th></tr>{rows}</table>"
        )
    return "".join(parts)


def _task_section(index: int, run: Run, confusion: Figure | None) -> str:
    """seqlm evaluate's scores (eval/metrics.json), the test record, and a sample of predictions: what the run holds."""
    parts = []
    evaluation = run.evaluation
    if evaluation:
        scalars = {key: value for key, value in evaluation.items() if _is_scalar(value) and not isinstance(value, str)}
        rows = "".join(f'<tr><th>{escape(key)}</th>{_metric_cell(index, "eval." + key, value)}</tr>' for key, value in scalars.items())
        parts.append(f"<h3>seqlm evaluate on {escape(str(evaluation.get('data', '?')))}</h3><table>{rows}</table>")
        if confusion is not None:
            parts.append(_figure(confusion))
        for key, what in PER_LABEL_TABLES.items():
            if isinstance(evaluation.get(key), dict):
                parts.append(_per_label_table(evaluation[key], what))
    if run.samples:
        parts.append(_samples_table(run))
    if not parts:
        return ""
    return f"<h2>{escape(run.label)}: {escape(run.task or 'task')} results</h2>" + "".join(parts)


def _per_label_table(per_label: dict[str, Any], what: str) -> str:
    columns = ("precision", "recall", "f1", "support")
    head = f"<tr><th>{escape(what)}</th>" + "".join(f"<th>{column}</th>" for column in columns) + "</tr>"
    rows = []
    for label, scores in per_label.items():
        scores = scores if isinstance(scores, dict) else {}
        cells = "".join(f'<td class="number">{escape(_shown(scores.get(column, "–")))}</td>' for column in columns)
        rows.append(f"<tr><td>{escape(str(label))}</td>{cells}</tr>")
    return f"<h3>Scores per {escape(what)}</h3><table>{head}{''.join(rows)}</table>"


def _samples_table(run: Run) -> str:
    """The first predictions.jsonl records: each text field (input, references, outputs) as a column."""
    seen: dict[str, None] = {}
    for record in run.samples:
        seen.update({key: None for key, value in record.items() if _is_text(value)})
    fields = sorted(seen, key=lambda key: SAMPLE_FIELDS_FIRST.index(key) if key in SAMPLE_FIELDS_FIRST else len(SAMPLE_FIELDS_FIRST))
    head = "<tr>" + "".join(f"<th>{escape(key)}</th>" for key in fields) + "</tr>"
    rows = "".join(
        "<tr>" + "".join(f'<td class="text">{escape(_sample_text(record.get(key)))}</td>' for key in fields) + "</tr>"
        for record in run.samples
    )
    return f"<h3>Sample of predictions (first {len(run.samples)} of predictions.jsonl)</h3><table>{head}{rows}</table>"


def _configs(runs: list[Run]) -> str:
    import yaml

    parts = ["<h2>Configs</h2>"]
    for run in runs:
        text = yaml.safe_dump(run.config, sort_keys=False, allow_unicode=True) if run.config else "(no config.yaml)\n"
        parts.append(f"<details><summary>{escape(run.label)}: config.yaml</summary><pre>{escape(text)}</pre></details>")
    return "".join(parts)


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (int, float, str, bool))


def _is_text(value: Any) -> bool:
    return isinstance(value, (str, int, float)) or (isinstance(value, list) and all(isinstance(item, (str, int, float, dict)) for item in value))


def _sample_text(value: Any) -> str:
    """A field as one line: a list's items joined by " | "; an item that is a record (a tagged word, an entity, a
    scored label) by its first two text fields ("London/PROPN", "PER/John Smith")."""
    if isinstance(value, list):
        items = ["/".join([str(v) for v in item.values() if isinstance(v, str)][:2]) if isinstance(item, dict) else str(item) for item in value]
        text = " | ".join(item for item in items if item)
    else:
        text = "" if value is None else str(value)
    return text if len(text) <= SAMPLE_TEXT_CHARACTERS else text[: SAMPLE_TEXT_CHARACTERS - 1] + "…"


def _shown(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, float):
        return str(value)
    return f"{value:.4g}" if abs(value) < 1e6 else f"{value:.4e}"


def _config_value(flat: dict[str, Any], key: str) -> str:
    return "(not set)" if key not in flat else json.dumps(flat[key], ensure_ascii=False, default=str)
