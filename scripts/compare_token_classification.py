"""seqlm against Hugging Face's run_ner.py recipe on the same model, data and steps, in one run.

    .venv/bin/python scripts/compare_token_classification.py [--sets pos ner] [--json OUT.json] [--max-steps N]

For each set (UD English-EWT POS, UNER English-EWT NER; `data/tasks/token_classification/`) it runs
`seqlm finetune configs/minilm/{set}_finetune.yaml` and `scripts/hf_token_classification.py` (HF
`Trainer`, first-piece labels) back to back, each in its own process, from all-MiniLM-L6-v2 (the
`pretrained` extra), and prints one table: the test figure (token accuracy for POS, entity F1 for
NER, seqeval's default mode on both sides), the training wall time, and the whole command's wall
time. The recipe is the same on both sides: 3 epochs, batch 16, lr 1e-4 with 6% warmup and linear
decay, AdamW (0.9, 0.999) without weight decay, 128 pieces. seqlm also validates every epoch and
scores best/ on test (its product behaviour); HF's Trainer scores its final model.
Figures mean something only on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = {"pos": "pos_ud_ewt", "ner": "ner_uner_ewt"}
HEADLINE = {"pos": "accuracy", "ner": "f1"}


def _cpu() -> str:
    try:
        lines = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout.splitlines()
        return next(line.split(":", 1)[1].strip() for line in lines if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        return platform.processor() or "unknown"


def run_seqlm(name: str, work: Path, max_steps: int | None) -> dict:
    run = work / f"seqlm-{name}"
    command = [sys.executable, "-m", "seqlm", "finetune", f"configs/minilm/{name}_finetune.yaml", "--set", f"output_dir={run}", "-q"]
    if max_steps:
        command += ["--set", f"training.max_steps={max_steps}"]
    started = time.perf_counter()
    subprocess.run(command, cwd=ROOT, check=True)
    wall = time.perf_counter() - started
    metrics = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    key = HEADLINE[name]
    return {"test": metrics[f"test_{key}"], "test_accuracy": metrics["test_accuracy"], "steps": metrics["steps"],
            "train_s": metrics["train_time_s"], "wall_s": wall}  # fmt: skip


def run_hf(name: str, work: Path, max_steps: int | None) -> dict:
    from seqlm.models.packaged import packaged_model_dir

    out = work / f"hf-{name}.json"
    command = [
        sys.executable, "scripts/hf_token_classification.py", "--data", f"data/tasks/token_classification/{DATA[name]}",
        "--model", str(packaged_model_dir("minilm")), "--output-dir", str(work / f"hf-{name}"), "--json", str(out),
    ]  # fmt: skip
    if max_steps:
        command += ["--max-steps", str(max_steps)]
    started = time.perf_counter()
    subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    result = json.loads(out.read_text(encoding="utf-8"))
    test = result["test"]
    headline = test["token_accuracy"] if name == "pos" else test["f1"]
    return {"test": headline, "test_accuracy": test["token_accuracy"], "steps": result["train"]["steps"],
            "train_s": result["train"]["train_runtime_s"], "wall_s": wall}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="+", choices=sorted(DATA), default=["pos", "ner"])
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--max-steps", type=int, help="a smoke run: this many steps per side (the figures then mean nothing)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    results: dict[str, dict] = {"cpu": _cpu(), "threads": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="seqlm-compare-") as scratch:
        for name in args.sets:
            results[name] = {"seqlm": run_seqlm(name, Path(scratch), args.max_steps), "hf": run_hf(name, Path(scratch), args.max_steps)}
    print(f"CPU: {results['cpu']} ({results['threads']} cores)")
    print("| set | metric | seqlm | HF Trainer | seqlm train s | HF train s | seqlm wall s | HF wall s |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for name in args.sets:
        ours, theirs = results[name]["seqlm"], results[name]["hf"]
        print(
            f"| {name} | test {HEADLINE[name]} | {100 * ours['test']:.2f} | {100 * theirs['test']:.2f} | {ours['train_s']:.1f} | "
            f"{theirs['train_s']:.1f} | {ours['wall_s']:.1f} | {theirs['wall_s']:.1f} |"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
