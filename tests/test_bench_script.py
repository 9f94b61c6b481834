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
TASKS = {"tokenize", "pretrain clm", "pretrain mlm", "finetune classification", "predict classification",
         "predict classification, seqlm fp32", "seq2seq train", "seq2seq generate greedy", "seq2seq generate 4 beams",
         "finetune extractive_qa", "predict extractive_qa", "predict extractive_qa, seqlm fp32", "llm lora finetune", "llm generate greedy"}  # fmt: skip


@pytest.mark.slow
def test_the_quick_benchmark_measures_every_task_on_both_sides(tmp_path: Path) -> None:
    for folder in ("scripts", "configs", "data"):
        shutil.copytree(REPO / folder, tmp_path / folder)
    report = tmp_path / "quick.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "scripts/bench.py", "--quick", "--json", str(report)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900,
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
    assert predict["seqlm"]["extra"]["agreement"]["value"] >= 0.99  # precision auto against seqlm fp32
    fp32 = next(row for row in rows if row["task"] == "predict classification, seqlm fp32")
    assert fp32["seqlm"]["extra"]["precision"] == "fp32" and fp32["seqlm"]["extra"]["labels_equal"] >= 0.99
    evaluate = next(row for row in rows if row["task"] == "evaluate clm perplexity")
    assert abs(evaluate["seqlm"]["extra"]["agreement"]["value"]) <= 0.01 and evaluate["seqlm"]["unit"] == "tokens/s"
    auto = next(row for row in rows if row["task"] == "seq2seq generate greedy precision auto")
    assert 0 <= auto["seqlm"]["extra"]["agreement"]["value"] <= 1
    greedy = next(row for row in rows if row["task"] == "seq2seq generate greedy")
    assert greedy["seqlm"]["extra"]["outputs_equal"] >= 0.95  # the same model and inputs give the same text
    assert greedy["seqlm"]["extra"]["n_inputs"] == greedy["hf"]["extra"]["n_inputs"] == 40
    qa_train = next(row for row in rows if row["task"] == "finetune extractive_qa")
    assert qa_train["seqlm"]["unit"] == qa_train["hf"]["unit"] == "windows/s" and qa_train["hf"]["extra"]["measured_steps"] == 4
    answering = next(row for row in rows if row["task"] == "predict extractive_qa, seqlm fp32")
    assert answering["seqlm"]["extra"]["answers_equal"] >= 0.99  # the same model on the same windows gives the same spans
    assert answering["seqlm"]["extra"]["n_inputs"] == answering["hf"]["extra"]["n_inputs"] == 40
    lora = next(row for row in rows if row["task"] == "llm lora finetune")
    assert lora["seqlm"]["unit"] == lora["hf"]["unit"] == "tokens/s" and lora["hf"]["extra"]["measured_steps"] == 2
    llm = next(row for row in rows if row["task"] == "llm generate greedy")
    assert llm["seqlm"]["extra"]["generated_tokens"] > 0 and llm["hf"]["extra"]["n_inputs"] == 8
    train = next(row for row in rows if row["task"] == "seq2seq train")
    assert train["seqlm"]["unit"] == train["hf"]["unit"] == "tokens/s" and train["hf"]["extra"]["measured_steps"] == 4
    assert document["scaling"]["time_ratio"] > 0 and document["scaling"]["peak_rss_ratio"] > 0
    assert set(document["accuracy"]["hf"]) and 0 <= document["accuracy"]["seqlm"] <= 1
    assert {"fp32", "bf16"} <= set(document["machine"]["matmul_gflops"])
    # the table goes to stdout: one line per row, plus its header
    assert "seqlm/HF" in done.stdout and "predict classification" in done.stdout
    assert "agreement of precision auto" in done.stdout and "labels equal to seqlm fp32's" in done.stdout


def test_repeated_runs_alternate_and_each_side_keeps_its_fastest_and_its_largest_peak() -> None:
    """The default plan's path (`--quick` runs each side once, to stay under 2 minutes)."""
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        from bench_core import fastest_alternating
        from bench_report import Figure
    finally:
        sys.path.remove(str(REPO / "scripts"))

    order: list[str] = []

    class Recorder:
        plan = type("Plan", (), {"repeats": 2})()

        def measure(self, label: str, produce):
            order.append(label)
            return produce()

    rates = {"seqlm": iter([(90.0, 500.0), (110.0, 480.0)]), "hf": iter([(50.0, 600.0), (40.0, 650.0)])}

    def run(side: str) -> Figure:
        value, peak = next(rates[side])
        return Figure(value, "x/s", peak, 1.0, {})

    seqlm, hf = fastest_alternating(Recorder(), ("t / seqlm", lambda: run("seqlm")), ("t / HF", lambda: run("hf")))
    assert order == ["t / seqlm (run 1 of 2)", "t / HF (run 1 of 2)", "t / seqlm (run 2 of 2)", "t / HF (run 2 of 2)"]
    assert (seqlm.value, seqlm.peak_rss_mb, seqlm.extra["runs"]) == (110.0, 500.0, [90.0, 110.0])
    assert (hf.value, hf.peak_rss_mb, hf.extra["runs"]) == (50.0, 650.0, [50.0, 40.0])
