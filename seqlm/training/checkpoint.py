"""Checkpoints and the final model: HF-format directories, written atomically.

A checkpoint is `model.safetensors` + `config.json` + tokenizer files (so plain
`transformers.AutoModelFor*.from_pretrained` loads it) + `trainer_state.pt`, the loop state
(optimizer, scheduler, RNG, step), which holds only tensors and plain Python values and so
loads with `torch.load(weights_only=True)`.

`COMPLETE` is written last and holds the checkpoint's manifest: every file's size and SHA-256.
A checkpoint is trusted only when every file matches it (`checkpoint_problem`): a file damaged
after the write (a truncated copy, a bad disk) makes a resume skip that checkpoint with a
warning naming the file, and fall back to the previous one.
"""

from __future__ import annotations

import hashlib
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

    manifest: dict[str, Any] = {}

    def write_and_list(temporary: Path) -> None:
        write(temporary)
        manifest.update({"step": state.step, "files": file_manifest(temporary)})

    _write_atomically(directory, write_and_list, prepared)
    try:
        _write_part(COMPLETE, lambda: _write_synced(directory / COMPLETE, json.dumps(manifest, indent=1) + "\n"))
    except OSError as exc:
        raise _as_output_error(exc, directory) from exc


def is_sharded(checkpoint: Path) -> bool:
    """Whether the checkpoint keeps its weights in per-rank shards (not loadable by transformers alone)."""
    return (checkpoint / SHARDED).is_dir()


def latest_checkpoint(checkpoints_dir: Path, warn: Callable[[str], None]) -> Path | None:
    """The newest checkpoint that is complete and verified. Newer ones are skipped with a warning:
    incomplete ones (a run stopped while writing them) and damaged ones (a file that no longer
    matches the manifest). When every checkpoint there is complete-but-damaged or incomplete and at
    least one is damaged, none can be trusted: DataError (exit 3)."""
    from seqlm.errors import DataError

    candidates = sorted(checkpoints_dir.glob("step-*"), key=lambda path: path.name, reverse=True)
    damaged = []
    for candidate in candidates:
        problem = checkpoint_problem(candidate)
        if problem is None:
            return candidate
        if (candidate / COMPLETE).is_file():
            damaged.append(f"{candidate.name}: {problem}")
        warn(f"{candidate}: {problem}; falling back to an older checkpoint")
    if damaged:
        raise DataError(
            f"{checkpoints_dir}: no checkpoint can be trusted ({'; '.join(damaged)}); "
            "restore them from a copy, or start afresh with --overwrite"
        )
    return None


def checkpoint_problem(directory: Path) -> str | None:
    """Why `directory` cannot be resumed from (incomplete, a file missing or damaged), or None."""
    from seqlm.errors import DataError
    from seqlm.models.loading import check_model_dir

    if not (directory / COMPLETE).is_file():
        return "incomplete (no COMPLETE marker: the run stopped while writing it)"
    try:
        manifest = json.loads((directory / COMPLETE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        manifest = None  # an earlier seqlm wrote only the step there: such a checkpoint is checked by its files alone
    if isinstance(manifest, dict) and isinstance(manifest.get("files"), dict):
        return _manifest_problem(directory, manifest["files"])
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


def file_manifest(directory: Path) -> dict[str, dict[str, Any]]:
    """{relative path: {"size", "sha256"}} of every file under `directory`."""
    manifest = {}
    for path in sorted(directory.rglob("*")):
        if path.is_file():
            manifest[path.relative_to(directory).as_posix()] = {"size": path.stat().st_size, "sha256": _sha256(path)}
    return manifest


def _manifest_problem(directory: Path, files: dict[str, Any]) -> str | None:
    """The first file of `directory` that is missing or differs from its manifest entry, said as such."""
    for name, expected in files.items():
        path = directory / name
        if not path.is_file():
            return f"{name} is missing"
        size = path.stat().st_size
        if size != expected.get("size"):
            return f"{name} is damaged ({size:,} bytes, written as {expected.get('size'):,})"
        if _sha256(path) != expected.get("sha256"):
            return f"{name} is damaged (its SHA-256 differs from the one written)"
    return None


def _sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


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
