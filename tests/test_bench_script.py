"""`scripts/bench.py --quick`, the benchmark's smoke check: every task runs on both sides and the
report holds every figure. Nothing is asserted about speed (figures of tiny models mean nothing).

It runs in a copy of the scripts, configs and data, so that its runs/bench/ is the test's own.
The HF side's Trainer needs accelerate: the `dev` extra installs it, as the `bench` extra does."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TASKS = {"tokenize", "pretrain clm", "pretrain mlm", "finetune classification", "predict classification"}


@pytest.mark.slow
def test_the_quick_benchmark_measures_every_task_on_both_sides(tmp_path: Path) -> None:
    for folder in ("scripts", "configs", "data"):
        shutil.copytree(REPO / folder, tmp_path / folder)
    report = tmp_path / "quick.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "scripts/bench.py", "--quick", "--json", str(report)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    document = json.loads(report.read_text(encoding="utf-8"))
    assert document["failures"] == []
    rows = document["rows"]
    assert {row["task"] for row in rows} >= TASKS
    for row in rows:
        assert row["seqlm"]["value"] > 0 and row["seqlm"]["peak_rss_mb"] > 0, row
        if row["task"] in TASKS and "bf16" in row["variant"]:  # the quick plan leaves out HF's bf16 runs
            assert row["hf"]["error"] == "skipped: not in the quick plan", row
        elif row["task"] in TASKS:
            assert row["hf"]["value"] > 0 and row["hf"]["peak_rss_mb"] > 0 and row["ratio"] > 0, row
    assert set(document["hf_best"]) >= TASKS
    predict = next(row for row in rows if row["task"] == "predict classification")
    assert predict["seqlm"]["extra"]["labels_equal"] >= 0.99  # the same model gives the same labels
    assert document["scaling"]["time_ratio"] > 0 and document["scaling"]["peak_rss_ratio"] > 0
    assert set(document["accuracy"]["hf"]) and 0 <= document["accuracy"]["seqlm"] <= 1
    assert {"fp32", "bf16"} <= set(document["machine"]["matmul_gflops"])
    # the table goes to stdout: one line per row, plus its header
    assert "seqlm/HF" in done.stdout and "predict classification" in done.stdout
