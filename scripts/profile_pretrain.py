"""Where a pretraining step's time goes: seqlm's own setup and loop under torch.profiler.

    .venv/bin/python scripts/profile_pretrain.py configs/bench/gpt_pretrain.yaml [--steps 8] [--set key=value ...]

Runs `--steps` optimizer steps after two warm-up steps (into a scratch output_dir, deleted after)
and prints the operators by total CPU time, grouped into matmuls, attention, elementwise/norm,
the loss and the optimizer, so a README claim about the bottleneck can be reproduced.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from contextlib import ExitStack
from pathlib import Path

import torch

from seqlm.commands.pretrain import setup
from seqlm.config.loading import load_config
from seqlm.config.schema import PretrainConfig
from seqlm.console import Console
from seqlm.runtime.allocator import keep_freed_memory
from seqlm.training.loop import LoopHooks, LoopPlan, train

GROUPS = {
    "matmul": ("aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "aten::linear"),
    "attention": ("scaled_dot_product", "flash_attention"),
    "loss": ("log_softmax", "nll_loss", "cross_entropy", "logsumexp", "scatter", "gather"),
    "optimizer": ("_foreach", "adamw", "lerp", "addcdiv", "addcmul"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    keep_freed_memory()
    scratch = Path(tempfile.mkdtemp(prefix="seqlm-profile-"))
    try:
        config = load_config(PretrainConfig, args.config, [*args.overrides, f"output_dir={scratch}", "resume=never"])
        with ExitStack() as held:
            run = setup(config, Console(quiet=True), held)
            plan = LoopPlan(max_steps=2, grad_accum=config.training.grad_accum, grad_clip=config.optim.grad_clip,
                            log_every=10**9, eval_every=10**9, checkpoint_every=None)  # fmt: skip
            hooks = LoopHooks(log=lambda record: None, evaluate=lambda state: {}, checkpoint=lambda state, validation: None)
            train(run.parallel, run.objective, run.batches.train, run.state, plan, run.precision, hooks)  # warm-up
            plan = LoopPlan(**{**plan.__dict__, "max_steps": 2 + args.steps})
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profiler:
                train(run.parallel, run.objective, run.batches.train, run.state, plan, run.precision, hooks)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    report(profiler)


def report(profiler: torch.profiler.profile) -> None:
    events = [e for e in profiler.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events)
    grouped = dict.fromkeys([*GROUPS, "other (elementwise, norms, dropout, copies)"], 0.0)
    for event in events:
        group = next((name for name, keys in GROUPS.items() if any(key in event.key for key in keys)), None)
        grouped[group or "other (elementwise, norms, dropout, copies)"] += event.self_cpu_time_total
    print("share of self CPU time by group:")
    for name, value in grouped.items():
        print(f"  {name:45s} {value / total:6.1%}")
    print("\ntop operators by self CPU time:")
    for event in sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:15]:
        print(f"  {event.key:45s} {event.self_cpu_time_total / total:6.1%}  calls {event.count}")


if __name__ == "__main__":
    main()
