"""seqlm against Hugging Face's run_translation.py recipe on the same model config, data and steps, in one run.

    .venv/bin/python scripts/compare_seq2seq.py [--config configs/small/t5_es_en_finetune.yaml]
        [--max-steps N] [--json OUT.json]

Back to back, each in its own process, on the same config (model sizes, tokenizer, data, steps, optimizer,
seed; the tokenizer is `seqlm tokenize`d first when missing):
1. `seqlm finetune CONFIG` (its product behaviour: `precision: auto`, length-grouped batches, validation
   with generation every `eval_every` steps, best/ picked by BLEU), then `seqlm evaluate` of its model/ (the
   final weights, the footing HF's figure stands on) and of best/ (what a seqlm user gets), greedy, on every
   validation example;
2. `scripts/hf_seq2seq.py --config CONFIG`: `Seq2SeqTrainer` (fp32, random order, no validation during
   training), then greedy `predict_with_generate` on the same validation file.
Printed: one table (BLEU, chrF, training wall time, whole command wall time per side) with the CPU and its
fp32/bf16 matmul ceilings, and the copy-source baseline of the data's README beside it. Figures mean
something only on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

from bench_report import machine_info, matmul_gflops  # noqa: E402


def _run(command: list[str]) -> float:
    """Run one side (its output shown only when it fails); its wall time."""
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return time.perf_counter() - started


def _seqlm(*args: str) -> list[str]:
    return [sys.executable, "-m", "seqlm", *args, "-q"]


def run_seqlm(config: Path, work: Path, overrides: list[str]) -> list[dict[str, Any]]:
    run = work / "seqlm"
    sets = [arg for override in overrides for arg in ("--set", override)]
    wall = _run(_seqlm("finetune", str(config), "--set", f"output_dir={run}", *sets))
    metrics = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    rows = []
    for weights in ("model", "best"):
        scored = work / f"eval-{weights}"
        settings = json.loads((run / weights / "config.json").read_text(encoding="utf-8"))
        evaluate_s = _run(_seqlm(
            "evaluate", "--model", str(run / weights), "--set", f"data={_validation(config)}", "--set", f"output_dir={scored}",
            "--set", f"generation.max_new_tokens={_max_new_tokens(config)}",
        ))  # fmt: skip
        scores = json.loads((scored / "metrics.json").read_text(encoding="utf-8"))
        rows.append({
            "side": f"seqlm {weights}/", "precision": _precision(config), "steps": metrics["steps"],
            "bleu": scores["bleu"], "chrf": scores["chrf"], "bleu_signature": scores["bleu_signature"],
            "train_s": metrics["train_time_s"], "wall_s": wall + evaluate_s, "evaluate_s": evaluate_s,
            "prefix": settings.get("prefix", ""),
        })  # fmt: skip
    return rows


def run_hf(config: Path, work: Path, overrides: list[str]) -> dict[str, Any]:
    out = work / "hf.json"
    command = [sys.executable, "scripts/hf_seq2seq.py", "--config", str(config), "--output-dir", str(work / "hf"), "--json", str(out), "--warmup", "1"]
    for override in overrides:
        command += ["--set", override]
    wall = _run(command)
    result = json.loads(out.read_text(encoding="utf-8"))
    return {"side": "HF Seq2SeqTrainer", "precision": "fp32", "steps": result["steps"], "bleu": result["bleu"], "chrf": result["chrf"],
            "bleu_signature": result["bleu_signature"], "train_s": result["train_wall_s"], "wall_s": wall}  # fmt: skip


def _config(path: Path) -> Any:
    from seqlm.config.finetune import FinetuneConfig
    from seqlm.config.loading import load_config

    return load_config(FinetuneConfig, path, [])


def _precision(path: Path) -> str:
    import torch

    from seqlm.runtime.device import resolve_precision

    requested = _config(path).training.precision
    return f"{requested} → {resolve_precision(requested, torch.device('cpu'))}" if requested == "auto" else requested


def _validation(path: Path) -> str:
    return str(_config(path).data.validation)


def _max_new_tokens(path: Path) -> int:
    return _config(path).generation.max_new_tokens


def _ensure_tokenizer(config: Path) -> None:
    tokenizer = Path(_config(config).model.tokenizer)
    if not (tokenizer / "tokenizer.json").is_file():
        tokenize = config.with_name(config.name.replace("_finetune", "_tokenize"))
        _run(_seqlm("tokenize", str(tokenize)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=Path("configs/small/t5_es_en_finetune.yaml"))
    parser.add_argument("--max-steps", type=int, help="both sides train this many steps (a smoke run: the figures then mean little)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    overrides = [f"training.max_steps={args.max_steps}"] if args.max_steps else []
    if args.max_steps:
        overrides.append(f"training.eval_every={args.max_steps}")
    machine = machine_info()
    rates = matmul_gflops()
    _ensure_tokenizer(args.config)
    with tempfile.TemporaryDirectory(prefix="seqlm-compare-seq2seq-") as scratch:
        rows = run_seqlm(args.config, Path(scratch), overrides)
        rows.append(run_hf(args.config, Path(scratch), overrides))
    print(f"CPU: {machine['cpu_model']}, {machine['cpu_count']} cores; matmul fp32 {rates['fp32']:.0f}, bf16 {rates['bf16']:.0f} GFLOP/s; "
          f"load average at start {machine['load_average_at_start'][0]:.2f}")  # fmt: skip
    print(f"config: {args.config}; greedy generation on every validation example; {rows[0]['bleu_signature']}")
    print("| side | training precision | steps | BLEU | chrF | train s | whole command s |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row['side']} | {row['precision']} | {row['steps']} | {row['bleu']:.2f} | {row['chrf']:.2f} | {row['train_s']:.0f} | {row['wall_s']:.0f} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"machine": machine, "matmul_gflops": rates, "config": str(args.config), "rows": rows}, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
