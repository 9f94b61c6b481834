"""`seqlm report`: two tiny fine-tuning runs (each writes its own report.html at its end, `report: true`),
compared in one report that is checked as HTML (self-contained, every figure, metric values equal to
metrics.json) and in headless Chromium (no console errors, every image decoded, a non-blank screenshot);
its bad inputs; the decimation of long curves; and that a failure to draw never fails a finished run.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, invoke, jsonl_rows, seqlm, sets, write_jsonl
from headless_chromium import check_page, find_chromium, in_ci

from seqlm.console import Console
from seqlm.reporting.build import report_at_end_of_run, write_report
from seqlm.reporting.decimation import decimate

CURVE_FIGURES = ("loss", "learning-rate", "throughput", "validation-metrics")  # what a log without grad_norm gives
RUN_FIGURES = ("loss", "learning-rate", "gradient-norm", "throughput", "validation-metrics")  # a training run's


@pytest.fixture(scope="module")
def two_runs(tiny_bert: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """The tiny classifier fine-tuned twice (two learning rates) on a small share of data/classify; the first
    also scored by `seqlm evaluate` into its eval/ (a confusion matrix and per-class scores for the report)."""
    root = tmp_path_factory.mktemp("report-runs")
    rows = jsonl_rows(REPO / "data" / "classify" / "test.jsonl")
    validation = write_jsonl(root / "validation.jsonl", rows[:120])
    runs = []
    for name, lr in (("lr-1e-3", "1.0e-3"), ("lr-3e-4", "3.0e-4")):
        run = root / name
        overrides = sets(model=tiny_bert, output_dir=run, data__validation=validation, data__test="null",
                         training__max_steps=30, training__eval_every=10, training__log_every=5, optim__lr=lr)  # fmt: skip
        seqlm("finetune", "configs/tiny/bert_finetune.yaml", *overrides, "--device", "cpu", "-q")
        runs.append(run)
    seqlm("evaluate", "--model", runs[0] / "best", "--data", validation, "--set", f"output_dir={runs[0] / 'eval'}", "-q")
    return runs


@pytest.fixture(scope="module")
def comparison(two_runs: list[Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    output = tmp_path_factory.mktemp("report") / "compare.html"
    result = invoke("report", *two_runs, "--output", output)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(output)
    return output


@pytest.mark.slow
def test_each_run_writes_its_report_at_its_end(two_runs: list[Path]) -> None:
    for run in two_runs:
        page = (run / "report.html").read_text(encoding="utf-8")
        assert page.count("<img ") == len(RUN_FIGURES)
        assert {path.name for path in run.glob("report-*.png")} == {f"report-{name}.png" for name in RUN_FIGURES}


@pytest.mark.slow
def test_report_is_self_contained_with_every_figure_and_the_runs_metrics(two_runs: list[Path], comparison: Path) -> None:
    page = comparison.read_text(encoding="utf-8")
    # Self-contained: nothing is fetched (no http(s) resource, no stylesheet or script file).
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:|//)""", page, re.IGNORECASE)
    assert "<link" not in page and "<script" not in page and "@import" not in page
    # Every figure: embedded, and the same PNG beside the page.
    embedded = re.findall(r'<img src="data:image/png;base64,([^"]+)"', page)
    names = [*RUN_FIGURES, "confusion-1"]
    assert len(embedded) == len(names)
    for name, data in zip(names, embedded):
        assert base64.b64decode(data) == (comparison.parent / f"compare-{name}.png").read_bytes(), name
    # Both runs overlaid and labelled; the second's config differences against the first.
    for run in two_runs:
        assert run.name in page
    assert "Config differences against lr-1e-3" in page and "<code>optim.lr</code>" in page
    # The metric values are metrics.json's, every scalar of it, exactly.
    shown = {(int(run), key): json.loads(html.unescape(value))
             for run, key, value in re.findall(r'data-run="(-?\d+)" data-key="([^"]+)" data-value="([^"]*)"', page)}  # fmt: skip
    for index, run in enumerate(two_runs):
        metrics = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
        scalars = {key: value for key, value in metrics.items() if not isinstance(value, (dict, list)) and value is not None}
        assert {key: shown[(index, key)] for key in scalars} == scalars
    # The evaluation of the first: its per-class table and confusion matrix.
    evaluation = json.loads((two_runs[0] / "eval" / "metrics.json").read_text(encoding="utf-8"))
    assert "Scores per class" in page and all(f"<td>{label}</td>" in page for label in evaluation["per_class"])
    assert shown[(0, "eval.accuracy")] == evaluation["accuracy"]


@pytest.mark.slow
@pytest.mark.skipif(find_chromium() is None and not in_ci(), reason="no chromium (CI installs it: .ci/run)")
def test_report_opens_in_a_real_browser(comparison: Path) -> None:
    from PIL import Image

    check = check_page(comparison)
    assert check.console_errors == []
    assert len(check.images) == len(RUN_FIGURES) + 1
    for image in check.images:
        assert image["complete"] and image["naturalWidth"] > 0 and image["naturalHeight"] > 0, image
    pixels = np.asarray(Image.open(io.BytesIO(check.screenshot)).convert("L"), dtype=float)
    assert pixels.shape[0] > 100 and pixels.std() > 10, "the screenshot is blank"


# --------------------------------------------------------------------------- bad inputs (fast: no training)


def _run_dir(root: Path, records: list[dict], metrics: dict | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.yaml").write_text("output_dir: x\ntask: classification\n", encoding="utf-8")
    (root / "metrics.jsonl").write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
    if metrics is not None:
        (root / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
    return root


def _one_line_error(result, code: int, *fragments: str) -> None:
    assert result.exit_code == code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("seqlm: error: ") and "Traceback" not in result.output, result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_a_directory_that_is_not_a_run_is_exit_3(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello\n", encoding="utf-8")
    _one_line_error(invoke("report", tmp_path), 3, str(tmp_path), "not a run directory")
    _one_line_error(invoke("report", tmp_path / "absent"), 3, "does not exist")


def test_a_run_with_no_metrics_yet_is_exit_3(tmp_path: Path) -> None:
    run = _run_dir(tmp_path / "run", [])
    _one_line_error(invoke("report", run), 3, "no metrics yet")
    assert not (run / "report.html").exists()


def test_an_unwritable_output_is_exit_4(tmp_path: Path) -> None:
    run = _run_dir(tmp_path / "run", [{"step": 1, "loss": 2.0, "lr": 1e-3, "tokens_per_s": 100.0}])
    (tmp_path / "notes.txt").write_text("a file\n", encoding="utf-8")
    _one_line_error(invoke("report", run, "--output", tmp_path / "notes.txt" / "report.html"), 4, "notes.txt is a file")


def test_a_damaged_metrics_line_is_exit_3_but_a_torn_last_line_is_left_out(tmp_path: Path) -> None:
    run = _run_dir(tmp_path / "run", [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5}])
    with open(run / "metrics.jsonl", "a", encoding="utf-8") as handle:
        handle.write('{"step": 3, "lo')  # a run still writing, or killed mid-line
    assert invoke("report", run).exit_code == 0
    (run / "metrics.jsonl").write_text('{"step": 1, "loss": 2.0}\nnot json\n{"step": 2, "loss": 1.5}\n', encoding="utf-8")
    _one_line_error(invoke("report", run), 3, "metrics.jsonl:2")


def test_a_failed_report_warns_and_leaves_the_run_as_it_is(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = _run_dir(tmp_path / "run", [])  # no metrics: the report cannot be drawn
    report_at_end_of_run(run, Console(interactive=False))
    err = capsys.readouterr().err
    assert "warning: " in err and "no metrics yet" in err and "the run itself is complete" in err
    assert not (run / "report.html").exists()


def test_report_reads_files_and_loads_no_model_library(tmp_path: Path) -> None:
    """`seqlm report` only reads a run's files: torch and transformers stay unimported (it starts fast)."""
    run = _run_dir(tmp_path / "run", [{"step": 1, "loss": 2.0, "lr": 1e-3}], {"steps": 1})
    script = (
        "import sys\nfrom seqlm.cli import app\n"
        f"try:\n    app(['report', {str(run)!r}, '-q'])\nexcept SystemExit as exc:\n    assert not exc.code, exc.code\n"
        "assert not {'torch', 'transformers'} & set(sys.modules), 'a model library was imported'\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (run / "report.html").is_file()


def test_a_generation_run_shows_its_metric_over_steps_and_inputs_with_references_and_outputs(tmp_path: Path) -> None:
    records = [{"step": 10, "loss": 4.0, "lr": 1e-3, "tokens_per_s": 900.0},
               {"step": 10, "split": "validation", "val_loss": 3.9, "val_bleu": 1.5, "val_generated": 8},
               {"step": 20, "loss": 3.0, "lr": 5e-4, "tokens_per_s": 950.0},
               {"step": 20, "split": "validation", "val_loss": 3.1, "val_bleu": 4.25, "val_generated": 8}]  # fmt: skip
    run = _run_dir(tmp_path / "run", records, {"task": "seq2seq", "steps": 20, "best_val_bleu": 4.25})
    write_jsonl(run / "predictions.jsonl", [{"id": "a", "target": "In the beginning", "input": "En el principio", "output": "In beginning"}])
    report = write_report([run], run / "report.html")
    assert [path.name for path in report.figures] == [f"report-{name}.png" for name in CURVE_FIGURES]
    page = report.html.read_text(encoding="utf-8")
    assert "<tr><th>id</th><th>input</th><th>target</th><th>output</th></tr>" in page  # input, reference, output
    assert "<td class=\"text\">In the beginning</td>" in page and 'data-key="best_val_bleu" data-value="4.25"' in page


# --------------------------------------------------------------------------- long runs: decimation


def test_decimation_keeps_the_ends_and_every_extreme() -> None:
    steps = np.arange(1, 100_001, dtype=float)
    values = 3.0 + np.sin(steps / 5000) + np.random.default_rng(0).normal(0, 0.01, len(steps))
    values[31_337] = 40.0  # a one-step loss spike
    values[77_777] = -5.0
    kept_steps, kept = decimate(steps, values, buckets=1000)
    assert len(kept) <= 4000
    assert kept_steps[0] == 1 and kept_steps[-1] == 100_000 and np.all(np.diff(kept_steps) > 0)
    assert kept.max() == 40.0 and kept.min() == -5.0
    short = np.arange(50, dtype=float)
    assert decimate(short, short)[0].tolist() == short.tolist()  # a short curve is drawn whole
    with_null = np.array([1.0, np.nan, 3.0])
    assert decimate(np.arange(3.0), with_null)[1].tolist() == [1.0, 3.0]


@pytest.mark.slow
def test_a_100k_step_log_is_reported(tmp_path: Path) -> None:
    """The size `seqlm report` is timed at in the README (under 5 s); here only that it works and stays small."""
    records = [{"step": step, "loss": 5.0 / step**0.2, "lr": 1e-3, "tokens_per_s": 1e4 + step % 7} for step in range(1, 100_001)]
    records += [{"step": step, "split": "validation", "val_loss": 5.0 / step**0.2, "val_accuracy": 0.5} for step in range(1000, 100_001, 1000)]
    run = _run_dir(tmp_path / "run", records, {"steps": 100_000, "val_loss": 0.5})
    report = write_report([run], run / "report.html")
    assert len(report.figures) == len(CURVE_FIGURES)
    assert report.html.stat().st_size < 2_000_000
