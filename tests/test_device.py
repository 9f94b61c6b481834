"""seqlm.runtime.device: when torch.compile is used, and that a compiled run trains like an eager one."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from seqlm.cli import app
from seqlm.models.fast_dropout import ATTENTION_NAME, FastDropout
from seqlm.runtime.device import COMPILE_MIN_STEPS, resolve_compile, speed_up

runner = CliRunner()


def test_compile_auto_only_pays_on_long_cuda_runs() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_compile("auto", cuda, COMPILE_MIN_STEPS) is True
    assert resolve_compile("auto", cuda, COMPILE_MIN_STEPS - 1) is False  # a smoke run never waits for a compile
    assert resolve_compile("auto", cpu, 10**6) is False
    assert resolve_compile(True, cpu, 1) is True and resolve_compile(False, cuda, 10**6) is False


def _tiny_gpt() -> torch.nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=32, n_positions=16)
    return GPT2LMHeadModel._from_config(config, attn_implementation="sdpa")


def _kinds(model: torch.nn.Module) -> tuple[int, int]:
    """(FastDropout modules, torch Dropout modules), the attention implementation aside."""
    fast = sum(isinstance(m, FastDropout) for m in model.modules())
    return fast, sum(type(m) is torch.nn.Dropout for m in model.modules())


def test_speed_up_compiles_or_swaps_dropout_as_the_config_says() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    eager_cpu = _tiny_gpt()
    speed_up(eager_cpu, "auto", True, cpu, 10)  # the CPU default: fast dropout, no compile
    assert _kinds(eager_cpu)[0] > 0 and _kinds(eager_cpu)[1] == 0
    assert eager_cpu.config._attn_implementation == ATTENTION_NAME
    assert eager_cpu.base_model._compiled_call_impl is None

    compiled = _tiny_gpt()
    speed_up(compiled, True, True, cpu, 10)  # compiled: torch's dropout, which inductor fuses
    assert compiled.base_model._compiled_call_impl is not None and _kinds(compiled)[0] == 0

    for model_off, device in ((_tiny_gpt(), cpu), (_tiny_gpt(), cuda)):  # switched off, or not on the CPU
        speed_up(model_off, False, device.type == "cuda", device, 10)
        assert _kinds(model_off)[0] == 0 and model_off.config._attn_implementation == "sdpa"


@pytest.mark.slow
def test_a_compiled_run_trains_like_an_eager_one(tmp_path: Path) -> None:
    data = tmp_path / "data"
    result = runner.invoke(app, ["tokenize", "configs/tiny/gpt_tokenize.yaml", "--set", f"output_dir={data}",
                                 "--set", "corpus.max_documents=300", "-q"])  # fmt: skip
    assert result.exit_code == 0, result.output
    losses = {}
    for mode in ("false", "true"):
        run = tmp_path / mode
        args = ["pretrain", "configs/tiny/gpt_pretrain.yaml", "--set", f"data={data}", "--set", f"output_dir={run}",
                "--set", "training.max_steps=6", "--set", "training.log_every=1", "--set", "training.eval_every=6",
                "--set", "model.dropout=0.0", "--set", f"training.compile={mode}", "--device", "cpu", "-q"]  # fmt: skip
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        losses[mode] = [r["loss"] for r in records if "split" not in r]
        assert (run / "model" / "model.safetensors").is_file()
    # Compiled kernels may reorder float sums: equal within float tolerance, not bit for bit.
    assert losses["true"] == pytest.approx(losses["false"], rel=1e-4)


def test_importing_seqlm_asks_mkl_for_reproducible_results_unless_the_user_set_otherwise() -> None:
    import subprocess
    import sys

    probe = "import os, seqlm; print(os.environ['MKL_CBWR'], os.environ['MKL_DYNAMIC'])"
    env = {k: v for k, v in os.environ.items() if k not in ("MKL_CBWR", "MKL_DYNAMIC")}
    default = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    assert default.stdout.split() == ["AUTO,STRICT", "FALSE"]
    chosen = subprocess.run([sys.executable, "-c", probe], env={**env, "MKL_CBWR": "COMPATIBLE"}, capture_output=True, text=True, check=True)
    assert chosen.stdout.split() == ["COMPATIBLE", "FALSE"]
