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
from pathlib import Path
from typing import Any

import torch

from seqlm.run_dir import replace_dir_atomic
from seqlm.train_loop import LoopState

TRAINER_STATE = "trainer_state.pt"


def save_model(directory: Path, model: Any, tokenizer: Any, extra_files: dict[str, str] | None = None) -> None:
    """Write an HF-format model dir atomically (a temporary sibling renamed into place)."""
    temporary = directory.with_name(f".{directory.name}.tmp-{os.getpid()}")
    shutil.rmtree(temporary, ignore_errors=True)
    try:
        model.save_pretrained(temporary)
        tokenizer.save_pretrained(temporary)
        for name, text in (extra_files or {}).items():
            (temporary / name).write_text(text, encoding="utf-8")
        replace_dir_atomic(temporary, directory)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


def save_checkpoint(directory: Path, model: Any, tokenizer: Any, state: LoopState) -> None:
    directory.parent.mkdir(parents=True, exist_ok=True)
    summary = json.dumps({"step": state.step, "tokens_seen": state.tokens_seen}, indent=2) + "\n"
    temporary = directory.with_name(f".{directory.name}.tmp-{os.getpid()}")
    shutil.rmtree(temporary, ignore_errors=True)
    try:
        model.save_pretrained(temporary)
        tokenizer.save_pretrained(temporary)
        torch.save(state.state_dict(), temporary / TRAINER_STATE)
        (temporary / "trainer_state.json").write_text(summary, encoding="utf-8")
        replace_dir_atomic(temporary, directory)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


def load_trainer_state(directory: Path) -> dict[str, Any]:
    return torch.load(directory / TRAINER_STATE, weights_only=True)
