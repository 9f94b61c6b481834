"""seqlm against Hugging Face's run_ner.py recipe on the same model, data and steps, in one run.

    .venv/bin/python scripts/compare_token_classification.py [--sets pos ner] [--seeds 0 1 2]
        [--seqlm-precision auto fp32] [--json OUT.json] [--max-steps N]

For each set (UD English-EWT POS, UNER English-EWT NER; `data/tasks/token_classification/`) it runs
`seqlm finetune configs/minilm/{set}_finetune.yaml` and `scripts/hf_token_classification.py` (HF
`Trainer`, first-piece labels) back to back, each in its own process, from all-MiniLM-L6-v2 (the
`pretrained` extra), and prints one table: the test figure (token accuracy for POS, entity F1 for
NER, seqeval's default mode on both sides), the training wall time, and the whole command's wall
time, with the CPU and its fp32/bf16 matmul ceilings. seqlm runs with `precision: auto` (bf16
autocast on a CPU with native bf16, else fp32) and with fp32; HF's Trainer with its default, fp32.
Entity F1 on ~1,100 test entities moves by 1-3 points between training seeds, so `--seeds` runs each
seed on every side and prints the mean and standard deviation per side. The recipe is the same on both sides: 3 epochs, batch 16, lr 1e-4 with 6% warmup and linear
decay, AdamW (0.9, 0.999) without weight decay, 128 pieces. seqlm also validates every epoch and
scores best/ on test (its product behaviour); HF's Trainer scores its final model.
Figures mean something only on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DATA = {"pos": "pos_ud_ewt", "ner": "ner_uner_ewt"}
HEADLINE = {"pos": "accuracy", "ner": "f1"}


def _cpu() -> str:
    try:
        lines = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout.splitlines()
        return next(line.split(":", 1)[1].strip() for line in lines if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        return platform.processor() or "unknown"


def run_seqlm(name: str, work: Path, max_steps: int | None, precision: str, seed: int) -> dict:
    run = work / f"seqlm-{name}-{precision}-{seed}"
    command = [
        sys.executable, "-m", "seqlm", "finetune", f"configs/minilm/{name}_finetune.yaml", "--set", f"output_dir={run}",
        "--set", f"training.precision={precision}", "--set", f"training.seed={seed}", "-q",
    ]  # fmt: skip
    if max_steps:
        command += ["--set", f"training.max_steps={max_steps}"]
    started = time.perf_counter()
    _run(command)
    wall = time.perf_counter() - started
    metrics = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    key = HEADLINE[name]
    return {"test": metrics[f"test_{key}"], "test_accuracy": metrics["test_accuracy"], "steps": metrics["steps"],
            "train_s": metrics["train_time_s"], "wall_s": wall}  # fmt: skip


def _run(command: list[str]) -> None:
    """Run one side; its output is shown only when it fails."""
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-3000:]}")


def run_hf(name: str, work: Path, max_steps: int | None, seed: int) -> dict:
    from seqlm.models.packaged import packaged_model_dir

    out = work / f"hf-{name}-{seed}.json"
    command = [
        sys.executable, "scripts/hf_token_classification.py", "--data", f"data/tasks/token_classification/{DATA[name]}",
        "--model", str(packaged_model_dir("minilm")), "--output-dir", str(work / f"hf-{name}-{seed}"), "--json", str(out),
        "--seed", str(seed),
    ]  # fmt: skip
    if max_steps:
        command += ["--max-steps", str(max_steps)]
    started = time.perf_counter()
    _run(command)
    wall = time.perf_counter() - started
    result = json.loads(out.read_text(encoding="utf-8"))
    test = result["test"]
    headline = test["token_accuracy"] if name == "pos" else test["entity_f1"]
    return {"test": headline, "test_accuracy": test["token_accuracy"], "steps": result["train"]["steps"],
            "train_s": result["train"]["train_runtime_s"], "wall_s": wall}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="+", choices=sorted(DATA), default=["pos", "ner"])
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--max-steps", type=int, help="a smoke run: this many steps per side (the figures then mean nothing)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0], help="training seeds, each run on both sides")
    parser.add_argument(
        "--seqlm-precision", nargs="+", default=["auto", "fp32"],
        help="seqlm's training.precision per run (auto: bf16 on CPUs with native bf16); HF's Trainer runs fp32, its default",
    )  # fmt: skip
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    results: dict[str, Any] = {"cpu": _cpu(), "threads": os.cpu_count(), "matmul_gflops": _matmul_gflops(), "runs": []}
    with tempfile.TemporaryDirectory(prefix="seqlm-compare-") as scratch:
        for name in args.sets:
            for seed in args.seeds:  # each seed: every seqlm precision, then HF, back to back
                for precision in args.seqlm_precision:
                    results["runs"].append({"set": name, "side": "seqlm", "precision": _resolved(precision), "seed": seed,
                                            **run_seqlm(name, Path(scratch), args.max_steps, precision, seed)})  # fmt: skip
                results["runs"].append({"set": name, "side": "HF Trainer", "precision": "fp32", "seed": seed,
                                        **run_hf(name, Path(scratch), args.max_steps, seed)})  # fmt: skip
    rates = results["matmul_gflops"]
    print(f"CPU: {results['cpu']}, {results['threads']} cores; matmul fp32 {rates['fp32']:.0f}, bf16 {rates['bf16']:.0f} GFLOP/s")
    print("| set | side | precision | seed | test metric | test token accuracy | steps | train s | whole command s |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|")
    for run in results["runs"]:
        print(
            f"| {run['set']} | {run['side']} | {run['precision']} | {run['seed']} | {HEADLINE[run['set']]} {100 * run['test']:.2f} | "
            f"{100 * run['test_accuracy']:.2f} | {run['steps']} | {run['train_s']:.1f} | {run['wall_s']:.1f} |"
        )
    for name in args.sets:
        for side in dict.fromkeys((run["side"], run["precision"]) for run in results["runs"] if run["set"] == name):
            figures = [100 * run["test"] for run in results["runs"] if run["set"] == name and (run["side"], run["precision"]) == side]
            if len(figures) > 1:
                mean, spread = statistics.mean(figures), statistics.stdev(figures)
                print(f"{name} {side[0]} {side[1]}: {HEADLINE[name]} mean {mean:.2f} ± {spread:.2f} (sd) over {len(figures)} seeds")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


def _resolved(precision: str) -> str:
    import torch

    from seqlm.runtime.device import resolve_precision

    return f"{precision} → {resolve_precision(precision, torch.device('cpu'))}" if precision == "auto" else precision


def _matmul_gflops() -> dict[str, float]:
    sys.path.insert(0, str(ROOT / "scripts"))
    from bench_report import matmul_gflops

    return matmul_gflops()


if __name__ == "__main__":
    main()
