"""Checkpoints and the final model: HF-format directories, written atomically.

A checkpoint is `model.safetensors` + `config.json` + tokenizer files (so plain
`transformers.AutoModelFor*.from_pretrained` loads it) + `trainer_state.pt`, the loop state
(optimizer, scheduler, RNG, step), which holds only tensors and plain Python values and so
loads with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from seqlm.errors import OutputError
from seqlm.io.atomic_files import replace_dir_atomic
from seqlm.io.output_paths import write_failure
from seqlm.training.state import LoopState

TRAINER_STATE = "trainer_state.pt"
COMPLETE = "COMPLETE"  # written last: a checkpoint without it is incomplete
SHARDED = "sharded"  # distributed.checkpoint: sharded — the weights and optimizer state, one file per rank


def save_model(directory: Path, model: Any, tokenizer: Any) -> None:
    """Write an HF-format model dir atomically (a temporary sibling renamed into place)."""

    def write(temporary: Path) -> None:
        _write_part("model", lambda: model.save_pretrained(temporary))
        _write_part("tokenizer", lambda: tokenizer.save_pretrained(temporary))

    _write_atomically(directory, write)


def save_checkpoint(
    directory: Path,
    model: Any,
    tokenizer: Any,
    state: LoopState,
    config_yaml: str,
    summary: dict[str, Any] | None = None,
    trainer_state: dict[str, Any] | None = None,
    prepared: Path | None = None,
) -> None:
    """The model dir plus the loop state (`trainer_state.pt`: `trainer_state`, by default
    `state.state_dict()`), a JSON summary (`trainer_state.json`: step, tokens seen, and
    `summary`, e.g. the step's validation result) and the run's config, written into a
    temporary sibling (`prepared`: one that already holds the ranks' shards), fsynced and
    renamed into place; the `COMPLETE` marker is written last. A failed write raises
    OutputError (disk full, no permission) and leaves the previous checkpoints as they were."""
    saved_state = trainer_state if trainer_state is not None else state.state_dict()

    def write(temporary: Path) -> None:
        _write_part("model", lambda: model.save_pretrained(temporary))
        _write_part("tokenizer", lambda: tokenizer.save_pretrained(temporary))
        _write_part(TRAINER_STATE, lambda: torch.save(saved_state, temporary / TRAINER_STATE))
        described = {"step": state.step, "tokens_seen": state.tokens_seen, **(summary or {})}
        text = json.dumps(_finite(described), indent=2) + "\n"
        _write_part("trainer_state.json", lambda: (temporary / "trainer_state.json").write_text(text, encoding="utf-8"))
        _write_part("config.yaml", lambda: (temporary / "config.yaml").write_text(config_yaml, encoding="utf-8"))

    _write_atomically(directory, write, prepared)
    try:
        _write_part(COMPLETE, lambda: _write_synced(directory / COMPLETE, f"{state.step}\n"))
    except OSError as exc:
        raise _as_output_error(exc, directory) from exc


def is_sharded(checkpoint: Path) -> bool:
    """Whether the checkpoint keeps its weights in per-rank shards (not loadable by transformers alone)."""
    return (checkpoint / SHARDED).is_dir()


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
    from seqlm.models.loading import check_model_dir

    if not (directory / COMPLETE).is_file():
        return "incomplete (no COMPLETE marker: the run stopped while writing it)"
    for name in (TRAINER_STATE, "trainer_state.json", "config.yaml"):
        if not (directory / name).is_file():
            return f"no {name}"
    if (directory / SHARDED).is_dir():  # weights and optimizer in torch.distributed.checkpoint shards
        return None if (directory / SHARDED / ".metadata").is_file() else f"no {SHARDED}/.metadata"
    try:
        check_model_dir(directory)
    except DataError as exc:
        return str(exc)
    return None


def _write_part(name: str, write: Callable[[], object]) -> None:
    """Write one part of a model dir or checkpoint (one seam, so tests can fail each part in turn)."""
    write()


def _write_synced(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def _temporary(directory: Path, owner: int | None = None) -> Path:
    """The sibling a directory is written into before it is renamed into place (`owner`: a pid, default this process)."""
    return directory.with_name(f".{directory.name}.tmp-{owner if owner is not None else os.getpid()}")


def sharded_temporary(directory: Path, owner: int) -> Path:
    """The temporary sibling every rank writes its shards into (named after rank 0's pid); created empty."""
    temporary = _temporary(directory, owner)
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir(parents=True)
    return temporary


def _write_atomically(directory: Path, write: Callable[[Path], None], temporary: Path | None = None) -> None:
    """Write `directory` via a temporary sibling (`temporary`, when it already holds parts) renamed into place."""
    prepared = temporary is not None
    temporary = temporary if temporary is not None else _temporary(directory)
    try:
        directory.parent.mkdir(parents=True, exist_ok=True)
        if not prepared:
            shutil.rmtree(temporary, ignore_errors=True)
        write(temporary)
        replace_dir_atomic(temporary, directory)
    except OSError as exc:
        raise _as_output_error(exc, directory) from exc
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


def _as_output_error(exc: OSError, directory: Path) -> OSError | OutputError:
    """Disk full / permission denied as a one-line OutputError naming `directory`; other OSErrors unchanged."""
    failure = write_failure(exc, directory)
    return OutputError(f"{failure}; earlier checkpoints are intact") if failure is not None else exc


def _finite(value: Any) -> Any:
    """JSON has no NaN/inf: write them as null."""
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def load_trainer_state(directory: Path) -> dict[str, Any]:
    return torch.load(directory / TRAINER_STATE, weights_only=True)
