"""Checkpoints and the final model: HF-format directories, written atomically.

A checkpoint is `model.safetensors` + `config.json` + tokenizer files (so plain
`transformers.AutoModelFor*.from_pretrained` loads it) + `trainer_state.pt`, the loop state
(optimizer, scheduler, RNG, step), which holds only tensors and plain Python values and so
loads with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from seqlm.run_dir import replace_dir_atomic
from seqlm.train_loop import LoopState

TRAINER_STATE = "trainer_state.pt"
COMPLETE = "COMPLETE"  # written last: a checkpoint without it is incomplete


def save_model(directory: Path, model: Any, tokenizer: Any) -> None:
    """Write an HF-format model dir atomically (a temporary sibling renamed into place)."""
    _write_atomically(directory, lambda temporary: _save_hf(temporary, model, tokenizer))


def save_checkpoint(directory: Path, model: Any, tokenizer: Any, state: LoopState, config_yaml: str) -> None:
    """The model dir plus the loop state (`trainer_state.pt`, `trainer_state.json`) and the run's
    config, written atomically; the `COMPLETE` marker is written last, after the rename."""

    def write(temporary: Path) -> None:
        _save_hf(temporary, model, tokenizer)
        torch.save(state.state_dict(), temporary / TRAINER_STATE)
        summary = {"step": state.step, "tokens_seen": state.tokens_seen}
        (temporary / "trainer_state.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        (temporary / "config.yaml").write_text(config_yaml, encoding="utf-8")

    _write_atomically(directory, write)
    with open(directory / COMPLETE, "w", encoding="utf-8") as handle:
        handle.write(f"{state.step}\n")
        handle.flush()
        os.fsync(handle.fileno())


def latest_checkpoint(checkpoints_dir: Path, warn: Callable[[str], None]) -> Path | None:
    """The newest checkpoint that is complete and readable; damaged newer ones are skipped (and warned about)."""
    candidates = sorted(checkpoints_dir.glob("step-*"), key=lambda path: path.name, reverse=True)
    for candidate in candidates:
        problem = _checkpoint_problem(candidate)
        if problem is None:
            return candidate
        warn(f"{candidate}: {problem}; falling back to an older checkpoint")
    return None


def _checkpoint_problem(directory: Path) -> str | None:
    from seqlm.errors import DataError
    from seqlm.model_loading import check_model_dir

    if not (directory / COMPLETE).is_file():
        return "incomplete (no COMPLETE marker: the run stopped while writing it)"
    for name in (TRAINER_STATE, "config.yaml"):
        if not (directory / name).is_file():
            return f"no {name}"
    try:
        check_model_dir(directory)
    except DataError as exc:
        return str(exc)
    return None


def _save_hf(directory: Path, model: Any, tokenizer: Any) -> None:
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)


def _write_atomically(directory: Path, write: Callable[[Path], None]) -> None:
    directory.parent.mkdir(parents=True, exist_ok=True)
    temporary = directory.with_name(f".{directory.name}.tmp-{os.getpid()}")
    shutil.rmtree(temporary, ignore_errors=True)
    try:
        write(temporary)
        replace_dir_atomic(temporary, directory)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


def load_trainer_state(directory: Path) -> dict[str, Any]:
    return torch.load(directory / TRAINER_STATE, weights_only=True)
