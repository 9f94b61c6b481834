"""Checkpoint retention (`keep_last`): the newest N complete checkpoints, plus the best by the
configured metric and the one the run resumed from, are never deleted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from seqlm.training.checkpointer import Checkpointer
from seqlm.training.run_dir import RunDir
from seqlm.training.state import LoopState


def _fake_checkpoints(run_dir: RunDir, losses: dict[int, float | None], incomplete: tuple[int, ...] = ()) -> None:
    for step, loss in losses.items():
        directory = run_dir.checkpoint_dir(step)
        directory.mkdir(parents=True)
        validation = {} if loss is None else {"loss": loss, "accuracy": 1 - loss}
        (directory / "trainer_state.json").write_text(json.dumps({"step": step, "validation": validation}))
        if step not in incomplete:
            (directory / "COMPLETE").write_text(f"{step}\n")


def _retained(run_dir: RunDir) -> list[int]:
    return sorted(int(path.name.split("-")[1]) for path in run_dir.checkpoints_dir.iterdir())


def _checkpointer(run_dir: RunDir, keep_last: int, metric: str = "loss", mode: str = "min", resumed_from: Path | None = None):
    return Checkpointer(run_dir, None, None, "", keep_last, metric, mode, resumed_from, info=lambda message: None)


def test_keeps_the_newest_and_the_best(tmp_path: Path) -> None:
    run_dir = RunDir(tmp_path)
    _fake_checkpoints(run_dir, {10: 3.0, 20: 1.0, 30: None, 40: 2.5, 50: None, 60: 2.9})
    _checkpointer(run_dir, keep_last=2)._retain(60)
    assert _retained(run_dir) == [20, 50, 60]  # 20: the lowest validation loss


def test_the_best_follows_the_metric_direction(tmp_path: Path) -> None:
    run_dir = RunDir(tmp_path)
    _fake_checkpoints(run_dir, {10: 0.2, 20: 0.9, 30: 0.5, 40: 0.6})  # accuracy = 1 - loss: best at step 10
    _checkpointer(run_dir, keep_last=1, metric="accuracy", mode="max")._retain(40)
    assert _retained(run_dir) == [10, 40]


def test_never_deletes_the_checkpoint_resumed_from(tmp_path: Path) -> None:
    run_dir = RunDir(tmp_path)
    _fake_checkpoints(run_dir, {10: None, 20: None, 30: None, 40: None})
    _checkpointer(run_dir, keep_last=1, resumed_from=run_dir.checkpoint_dir(20))._retain(40)
    assert _retained(run_dir) == [20, 40]


def test_incomplete_ones_are_removed_and_later_ones_left_for_the_resumed_run(tmp_path: Path) -> None:
    run_dir = RunDir(tmp_path)
    # 30 was cut short; 50 is from before a resume at 40 and will be rewritten when the run gets there.
    _fake_checkpoints(run_dir, {10: None, 20: None, 30: None, 40: None, 50: None}, incomplete=(30,))
    _checkpointer(run_dir, keep_last=2)._retain(40)
    assert _retained(run_dir) == [20, 40, 50]


def test_save_applies_retention_after_each_checkpoint(tmp_path: Path, tiny_tokenizer) -> None:
    torch = pytest.importorskip("torch")
    from transformers import GPT2Config, GPT2LMHeadModel

    tokenizer = tiny_tokenizer("bpe")
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_layer=1, n_embd=16, n_head=2, n_positions=16))
    optimizer = torch.optim.AdamW(model.parameters())
    state = LoopState(optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0))
    run_dir = RunDir(tmp_path)
    from seqlm.runtime.distributed import SINGLE
    from seqlm.tasks.objectives import OBJECTIVES
    from seqlm.training.parallel import parallelize

    parallel = parallelize(model, OBJECTIVES["clm"], True, SINGLE, "ddp", torch.device("cpu"))
    checkpointer = Checkpointer(run_dir, parallel, tokenizer, "seed: 0\n", 2, "loss", "min", None, info=lambda m: None)
    for step, loss in [(1, 5.0), (2, 4.0), (3, 4.5), (4, 4.2)]:
        state.step = step
        checkpointer.save(state, {"loss": loss}, run_state={"note": step})
    assert _retained(run_dir) == [2, 3, 4]
    saved = json.loads((run_dir.checkpoint_dir(4) / "trainer_state.json").read_text())
    assert saved["validation"] == {"loss": 4.2} and saved["run"] == {"note": 4} and saved["step"] == 4
