"""`training.lora` in real runs: a LoRA fine-tuning killed with SIGKILL resumes bit-identical from a checkpoint that
holds only the adapters (and their optimizer state), and two DDP processes (gloo) train the adapters as one process.

The tiny random GPT-2 and the classification rows of tests/test_lora.py; tolerances as in test_distributed.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import invoke
from safetensors.torch import load_file
from test_distributed import _losses, _ok
from test_distributed import _seqlm as seqlm_process
from test_lora import classify_args, gpt2_dir  # noqa: F401  (gpt2_dir: a fixture)
from test_resume import _kill_after_step_20_resume_and_compare

pytestmark = pytest.mark.slow

# LoRA dropout on (the RNG state must come back too), a checkpoint every 10 of 80 steps, validation every 15.
RESUMABLE = {
    "training.max_steps": 80, "training.checkpoint_every": 10, "training.eval_every": 15, "training.log_every": 5,
    "training.keep_last": 2, "training.lora.dropout": 0.1,
}  # fmt: skip


def test_lora_sigkill_then_resume_is_bit_identical_and_checkpoints_hold_the_adapters(gpt2_dir: Path, tmp_path: Path) -> None:  # noqa: F811
    expected = tmp_path / "uninterrupted"
    result = invoke(*classify_args(gpt2_dir, tmp_path, expected, **RESUMABLE), "-q")
    assert result.exit_code == 0, result.output
    checkpoint = expected / "checkpoints" / "step-000080"
    assert (checkpoint / "adapter_model.safetensors").is_file() and not (checkpoint / "model.safetensors").exists()
    adapter_bytes = (checkpoint / "adapter_model.safetensors").stat().st_size
    assert adapter_bytes < (expected / "model" / "model.safetensors").stat().st_size / 3
    trained = load_file(checkpoint / "adapter_model.safetensors")
    optimizer = torch.load(checkpoint / "trainer_state.pt", weights_only=True)["optimizer"]
    assert len(optimizer["state"]) == len(trained)  # AdamW moments for the adapters and the head, nothing else

    run = tmp_path / "killed"
    _kill_after_step_20_resume_and_compare(classify_args(gpt2_dir, tmp_path, run, **RESUMABLE), run, expected)  # model/, best/, metrics
    for name in ("adapter", "best-adapter"):
        a, b = load_file(expected / name / "adapter_model.safetensors"), load_file(run / name / "adapter_model.safetensors")
        assert a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a), name


def test_lora_under_two_ddp_processes_matches_one_process(gpt2_dir: Path, tmp_path: Path) -> None:  # noqa: F811
    """The same global batch of 16: one process, and two of 8 each (dropout 0)."""
    one, two = tmp_path / "one", tmp_path / "two"
    settings = {"training.max_steps": 20, "training.eval_every": 10}
    result = invoke(*classify_args(gpt2_dir, tmp_path, one, **settings, **{"training.batch_size": 16}), "-q")
    assert result.exit_code == 0, result.output
    _ok(seqlm_process(*classify_args(gpt2_dir, tmp_path, two, **settings, **{"training.batch_size": 8}), "--nproc", "2", "-q"))
    losses_one, losses_two = _losses(one), _losses(two)
    assert sorted(losses_one) == sorted(losses_two) == list(range(1, 21))
    for step, loss in losses_one.items():
        assert losses_two[step] == pytest.approx(loss, rel=1e-5), f"step {step}"
    a, b = load_file(one / "adapter" / "adapter_model.safetensors"), load_file(two / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=1e-4, msg=f"{key} differs")
    validations = [[r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r.get("split")] for run in (one, two)]
    assert [r["val_accuracy"] for r in validations[0]] == [r["val_accuracy"] for r in validations[1]]
