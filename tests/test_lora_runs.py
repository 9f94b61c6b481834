"""`training.lora` in real runs: a LoRA fine-tuning or pretraining killed with SIGKILL resumes bit-identical from a
checkpoint that holds only the adapters (and their optimizer state), and two DDP or FSDP processes (gloo) train the
adapters as one process; FSDP's adapter checkpoints resume bit-identical.

The tiny random GPT-2 and the classification rows of tests/test_lora.py; tolerances as in test_distributed.py.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO, invoke, seqlm, sets
from safetensors.torch import load_file
from test_distributed import _close_weights, _losses, _ok
from test_distributed import _seqlm as seqlm_process
from test_lora import LORA, classify_args, gpt2_dir  # noqa: F401  (gpt2_dir: a fixture)
from test_resume import _kill_after_step_20_resume_and_compare, _wait_for
from torch.distributed.checkpoint import FileSystemReader

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


# Two processes against one: the same global batch of 16 (dropout 0: each rank would draw its own masks).
ONE_AND_TWO = {"training.max_steps": 20, "training.eval_every": 10, "training.checkpoint_every": 10}


@pytest.fixture(scope="module")
def one_process(gpt2_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:  # noqa: F811
    root = tmp_path_factory.mktemp("lora_one_process")
    result = invoke(*classify_args(gpt2_dir, root, root / "one", **ONE_AND_TWO, **{"training.batch_size": 16}), "-q")
    assert result.exit_code == 0, result.output
    return root / "one"


def _two_processes(model: Path, root: Path, run: Path, *extra: str) -> list[str]:
    return [*classify_args(model, root, run, **ONE_AND_TWO, **{"training.batch_size": 8}), *extra, "--nproc", "2", "-q"]


def _matches(one: Path, two: Path) -> None:
    """Losses to 1e-5, the adapters and the merged model/ to 1e-4, the same validation accuracies."""
    losses_one, losses_two = _losses(one), _losses(two)
    assert sorted(losses_one) == sorted(losses_two) == list(range(1, 21))
    for step, loss in losses_one.items():
        assert losses_two[step] == pytest.approx(loss, rel=1e-5), f"step {step}"
    a, b = load_file(one / "adapter" / "adapter_model.safetensors"), load_file(two / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=1e-4, msg=f"{key} differs")
    _close_weights(one, two)
    validations = [[r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r.get("split")] for run in (one, two)]
    assert [r["val_accuracy"] for r in validations[0]] == [r["val_accuracy"] for r in validations[1]]


def test_lora_under_two_ddp_processes_matches_one_process(gpt2_dir: Path, one_process: Path, tmp_path: Path) -> None:  # noqa: F811
    _ok(seqlm_process(*_two_processes(gpt2_dir, tmp_path, tmp_path / "two")))
    _matches(one_process, tmp_path / "two")


def test_lora_under_fsdp_matches_one_process_and_resumes_bit_identical(gpt2_dir: Path, one_process: Path, tmp_path: Path) -> None:  # noqa: F811
    """FSDP shards the frozen weights and the adapters alike; model/ is merged from the gathered weights, and a checkpoint
    holds the adapters and their optimizer state only: gathered (distributed.checkpoint: full), or the adapters gathered
    and the trained weights' and optimizer's shards (sharded). Resumed from step 5's full checkpoint (writing sharded
    ones from there), and from that run's step 10, the run ends bit-identical."""
    run = tmp_path / "fsdp"
    fsdp = ["--set", "distributed.strategy=fsdp", "--set", "training.checkpoint_every=5"]
    _ok(seqlm_process(*_two_processes(gpt2_dir, tmp_path, run, *fsdp)))
    _matches(one_process, run)
    checkpoint = run / "checkpoints" / "step-000020"
    assert not (checkpoint / "model.safetensors").exists()
    trained = load_file(checkpoint / "adapter_model.safetensors")
    assert trained.keys() == load_file(one_process / "checkpoints" / "step-000020" / "adapter_model.safetensors").keys()
    optimizer = torch.load(checkpoint / "trainer_state.pt", weights_only=True)["optimizer"]
    assert len(optimizer["state"]) == len(trained)  # AdamW moments for the adapters and the head, nothing else

    from_full = _stopped_after(run, 5, tmp_path / "from-full")
    _ok(seqlm_process(*_two_processes(gpt2_dir, tmp_path, from_full, *fsdp, "--set", "distributed.checkpoint=sharded", "--resume")))
    _same_results(run, from_full)
    sharded = from_full / "checkpoints" / "step-000010"
    shards = sorted((sharded / "sharded").iterdir())
    assert [p.name for p in shards] == [".metadata", "__0_0.distcp", "__1_0.distcp"] and (sharded / "adapter_model.safetensors").is_file()
    saved = FileSystemReader(sharded / "sharded").read_metadata().state_dict_metadata
    assert sum(key.startswith("model.") for key in saved) == len(load_file(sharded / "adapter_model.safetensors"))  # no frozen weight

    from_sharded = _stopped_after(from_full, 10, tmp_path / "from-sharded")
    _ok(seqlm_process(*_two_processes(gpt2_dir, tmp_path, from_sharded, *fsdp, "--set", "distributed.checkpoint=sharded", "--resume")))
    _same_results(run, from_sharded)


def _stopped_after(run: Path, step: int, copy: Path) -> Path:
    """A copy of a finished run as a stop after step `step`'s checkpoint leaves it."""
    shutil.copytree(run, copy)
    for checkpoint in (copy / "checkpoints").glob("step-*"):
        if int(checkpoint.name.removeprefix("step-")) > step:
            shutil.rmtree(checkpoint)
    for name in ("model", "adapter"):
        shutil.rmtree(copy / name)
    for name in ("FINISHED", "metrics.json"):
        (copy / name).unlink()
    return copy


def _same_results(expected: Path, got: Path) -> None:
    for name in ("adapter/adapter_model.safetensors", "model/model.safetensors"):
        a, b = load_file(expected / name), load_file(got / name)
        assert a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a), name
    assert _losses(got) == _losses(expected)


def test_lora_pretraining_sigkill_then_resume_is_bit_identical(gpt2_dir: Path, tmp_path: Path) -> None:  # noqa: F811
    """`seqlm pretrain` with adapters (LoRA dropout on: the RNG state comes back too), killed after step 10's checkpoint."""
    data = tmp_path / "data"
    seqlm("tokenize", "configs/tiny/gpt_tokenize.yaml", *sets(output_dir=data, corpus__max_documents=200, tokenizer__pretrained=gpt2_dir), "-q")

    def args(run: Path) -> list[str]:
        settings = sets(
            output_dir=run, data=data, model__from_pretrained=gpt2_dir, training__max_steps=30, training__seq_len=32, training__batch_size=4,
            training__checkpoint_every=10, training__eval_every=15, training__log_every=5, training__lora__dropout=0.1, optim__lr=1e-2,
        )  # fmt: skip
        return ["pretrain", "configs/tiny/gpt_pretrain.yaml", *settings, *LORA, "--device", "cpu"]

    expected, run = tmp_path / "uninterrupted", tmp_path / "killed"
    seqlm(*args(expected), "-q")
    assert (expected / "checkpoints" / "step-000030" / "adapter_model.safetensors").is_file()
    assert not (expected / "checkpoints" / "step-000030" / "model.safetensors").exists()
    process = subprocess.Popen([sys.executable, "-m", "seqlm", *args(run), "-q"], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    marker = run / "checkpoints" / "step-000010" / "COMPLETE"
    _wait_for(marker, process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert marker.exists(), process.stderr.read().decode() if process.stderr else "no checkpoint"
    assert not (run / "model").exists(), "the run finished before it could be killed"

    result = invoke(*args(run), "--resume")
    assert result.exit_code == 0, result.output
    assert "resumed from" in result.stderr
    _same_results(expected, run)
