"""Extractive QA runs that survive and scale: SIGKILL mid-epoch then resume is bit-identical; two DDP
processes equal one. The synthetic span task and tiny BERT of `test_extractive_qa` (long contexts split
into several windows, so an epoch's batches are windows, not questions); the shared resume and DDP checks
come from `test_resume` and `test_distributed`, as for the other fine-tuning tasks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import seqlm
from test_distributed import _losses, _ok, _weights
from test_distributed import _seqlm as seqlm_process
from test_extractive_qa import finetune_args, write_task
from test_resume import _kill_after_step_20_resume_and_compare, _records


@pytest.mark.slow
def test_qa_sigkill_mid_epoch_then_resume_is_bit_identical(tiny_bert: Path, tmp_path: Path) -> None:
    """40 steps of 16 windows (~30 batches an epoch: the kill at step 20 is mid-epoch), a checkpoint and a
    validation (loss, EM/F1 picking best/) every 10 steps."""
    root = write_task(tmp_path / "data", n_train=320, n_validation=24)
    settings = {"training__max_steps": 40, "training__checkpoint_every": 10, "training__eval_every": 10,
                "training__log_every": 5, "training__keep_last": 2}  # fmt: skip
    expected, run = tmp_path / "uninterrupted", tmp_path / "killed"
    seqlm(*finetune_args(tiny_bert, root, expected, **settings), "-q")
    _kill_after_step_20_resume_and_compare(finetune_args(tiny_bert, root, run, **settings), run, expected)
    validations = {r["step"]: r for r in _records(run) if r.get("split") == "validation"}
    assert sorted(validations) == [10, 20, 30, 40] and all(r["val_questions"] == 24 for r in validations.values())
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics == {**json.loads((expected / "metrics.json").read_text()), "train_time_s": metrics["train_time_s"]}
    assert metrics["best_val_f1"] == max(r["val_f1"] for r in validations.values())


# Weights whose true gradient is 0: a softmax ignores a shift shared by all its inputs, and these only shift them (the
# span head's bias and the last layer's output bias, for start/end over positions; attention key biases, for
# attention over keys). Their gradients are rounding noise, which AdamW scales up to steps of lr size, so they
# differ between one process and two by ~1e-3 after 30 steps; every other weight agrees to 1e-4.
_SHIFT_INVARIANT = ("qa_outputs.bias", "attention.self.key.bias", "encoder.layer.1.output.LayerNorm.bias")


def _close_weights_but_shift_invariant(expected: Path, got: Path) -> None:
    a, b = _weights(expected), _weights(got)
    assert sorted(a) == sorted(b)
    for key in a:
        if not key.endswith(_SHIFT_INVARIANT):
            torch.testing.assert_close(b[key], a[key], rtol=0, atol=1e-4, msg=f"{key} differs")


@pytest.mark.slow
def test_two_ddp_processes_match_one_process_for_extractive_qa(tiny_bert: Path, tmp_path: Path) -> None:
    """The same global batch of 16 windows on one process and on two (8 each); validation split over the ranks."""
    root = write_task(tmp_path / "data", n_train=200, n_validation=24)
    settings = {"training__max_steps": 30, "training__eval_every": 15, "training__log_every": 1}
    one, two = tmp_path / "one", tmp_path / "two"
    seqlm(*finetune_args(tiny_bert, root, one, **settings, training__batch_size=16), "-q")
    _ok(seqlm_process(*finetune_args(tiny_bert, root, two, **settings, training__batch_size=8), "--nproc", "2", "-q"))
    losses_one, losses_two = _losses(one), _losses(two)
    assert sorted(losses_one) == sorted(losses_two) == list(range(1, 31))
    for step, loss in losses_one.items():
        assert losses_two[step] == pytest.approx(loss, rel=1e-5), f"step {step}"
    assert losses_one[30] < losses_one[1] - 1.0  # it learned
    _close_weights_but_shift_invariant(one, two)
    validations = [[r for r in _records(run) if r.get("split") == "validation"] for run in (one, two)]
    assert [r["step"] for r in validations[1]] == [15, 30]
    for expected, got in zip(*validations):
        assert got.keys() == expected.keys()
        for key, value in expected.items():
            assert got[key] == (pytest.approx(value, rel=1e-5, abs=1e-9) if isinstance(value, float) else value), (
                expected["step"],
                key,
            )
    metrics = [json.loads((run / "metrics.json").read_text()) for run in (one, two)]
    assert metrics[1]["best_step"] == metrics[0]["best_step"]
