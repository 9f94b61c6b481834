"""Checkpoints are atomic: a write that fails at any part of the save (disk full) is one clear
OutputError, leaves no directory that looks complete, and `latest_checkpoint` falls back to
the previous complete checkpoint."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

import seqlm.training.checkpoint as checkpoint_module
from seqlm.errors import ExitCode, OutputError
from seqlm.training.checkpoint import COMPLETE, latest_checkpoint, load_trainer_state, save_checkpoint, save_model
from seqlm.training.state import LoopState

# Every part of a checkpoint, in the order it is written; COMPLETE comes after the rename.
PARTS = ("model", "tokenizer", "trainer_state.pt", "trainer_state.json", "config.yaml", COMPLETE)


@pytest.fixture(scope="module")
def tiny(tiny_tokenizer) -> tuple[GPT2LMHeadModel, PreTrainedTokenizerFast]:
    tokenizer = tiny_tokenizer("bpe")
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_layer=2, n_embd=32, n_head=2, n_positions=32))
    return model, tokenizer


def _state(model: torch.nn.Module, step: int) -> LoopState:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    state = LoopState(optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0))
    state.step = step
    return state


def _no_space_at(part: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the write of `part` fail as a full disk does: after writing some bytes."""
    real = checkpoint_module._write_part

    def failing(name: str, write) -> None:
        if name == part:
            raise OSError(errno.ENOSPC, "No space left on device", name)
        real(name, write)

    monkeypatch.setattr(checkpoint_module, "_write_part", failing)


@pytest.mark.parametrize("part", PARTS)
def test_a_failed_write_at_any_part_keeps_the_previous_checkpoint(tiny, part: str, tmp_path: Path, monkeypatch) -> None:
    model, tokenizer = tiny
    checkpoints = tmp_path / "checkpoints"
    save_checkpoint(checkpoints / "step-000010", model, tokenizer, _state(model, 10), "seed: 0\n", {"validation": {"loss": 2.0}})

    _no_space_at(part, monkeypatch)
    with pytest.raises(OutputError) as raised:
        save_checkpoint(checkpoints / "step-000020", model, tokenizer, _state(model, 20), "seed: 0\n")
    message = str(raised.value)
    assert raised.value.exit_code == ExitCode.OUTPUT == 4
    assert "step-000020" in message and "no space left" in message and "\n" not in message

    warnings: list[str] = []
    assert latest_checkpoint(checkpoints, warnings.append) == checkpoints / "step-000010"
    assert not [path for path in checkpoints.iterdir() if ".tmp-" in path.name], "a temporary dir was left behind"
    newest = checkpoints / "step-000020"
    assert not (newest / COMPLETE).exists(), "a failed checkpoint must not look complete"
    if newest.exists():  # only when the marker itself failed: the dir is there but flagged incomplete
        assert part == COMPLETE and "incomplete" in warnings[0]
    previous = checkpoints / "step-000010"
    assert load_trainer_state(previous)["step"] == 10
    assert set(load_file(previous / "model.safetensors")) == set(model.state_dict()) - {"lm_head.weight"}


def test_a_failed_model_save_keeps_the_previous_model_dir(tiny, tmp_path: Path, monkeypatch) -> None:
    model, tokenizer = tiny
    target = tmp_path / "model"
    save_model(target, model, tokenizer)
    before = sorted(path.name for path in target.iterdir())
    _no_space_at("model", monkeypatch)
    with pytest.raises(OutputError, match="no space left"):
        save_model(target, model, tokenizer)
    assert sorted(path.name for path in target.iterdir()) == before
    assert [path.name for path in tmp_path.iterdir()] == ["model"]


def test_other_os_errors_are_not_disguised_as_output_errors(tiny, tmp_path: Path, monkeypatch) -> None:
    model, tokenizer = tiny
    real = checkpoint_module._write_part

    def failing(name: str, write) -> None:
        if name == "tokenizer":
            raise OSError(errno.EIO, "Input/output error")
        real(name, write)

    monkeypatch.setattr(checkpoint_module, "_write_part", failing)
    with pytest.raises(OSError) as raised:
        save_model(tmp_path / "model", model, tokenizer)
    assert not isinstance(raised.value, OutputError)
    assert list(tmp_path.iterdir()) == []


def test_trainer_state_json_writes_non_finite_metrics_as_null(tiny, tmp_path: Path) -> None:
    model, tokenizer = tiny
    target = tmp_path / "step-000001"
    save_checkpoint(target, model, tokenizer, _state(model, 1), "seed: 0\n", {"validation": {"loss": float("nan")}})
    assert json.loads((target / "trainer_state.json").read_text())["validation"] == {"loss": None}
