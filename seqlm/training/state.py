"""The loop state: everything that changes while training, saved and restored as one object.

A leaf module (torch and numpy only), so the checkpoint writer, the parallel wrapper and the
loop can all name it without importing one another.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch


@dataclass
class LoopState:
    """Everything that changes while training, saved and restored as one object."""

    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler | None = None
    step: int = 0
    tokens_seen: int = 0
    skipped_steps: int = 0  # batches skipped for a NaN/inf loss or gradient (on_nan: skip)
    # Set when training is over (its last step, or early stopping) to the plan's max_steps: a run
    # resumed from such a checkpoint with the same max_steps only writes its final outputs; one
    # given more steps trains on (seqlm.training.session.begin clears it).
    finished_max_steps: int | None = None
    validation: dict[str, float] = field(default_factory=dict)  # the latest validation result
    train_seconds: float = 0.0  # time spent training and validating, over every resume of the run
    # The steps since the last log line: part of the state so a resumed run logs the same averages.
    window: LogWindow = field(default_factory=lambda: LogWindow())

    def state_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "tokens_seen": self.tokens_seen,
            "skipped_steps": self.skipped_steps,
            "finished_max_steps": self.finished_max_steps,
            "validation": {key: _plain_number(value) for key, value in self.validation.items()},
            "train_seconds": self.train_seconds,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else {},
            "rng": _rng_state(),
            "log_window": {
                "losses": list(self.window.losses),
                "terms": dict(self.window.terms),
                "tokens": self.window.tokens,
                "grad_norms": list(self.window.grad_norms),
            },
        }

    def load_state_dict(self, state: dict[str, Any], optimizer: bool = True) -> None:
        """`optimizer=False`: the caller restores the optimizer itself (FSDP's sharded one)."""
        self.step = int(state["step"])
        self.tokens_seen = int(state["tokens_seen"])
        self.skipped_steps = int(state["skipped_steps"])
        # Checkpoints written before these were recorded: a run still training, its time unknown.
        self.finished_max_steps = state.get("finished_max_steps")
        self.validation = dict(state.get("validation", {}))
        self.train_seconds = float(state.get("train_seconds", 0.0))
        if optimizer:
            self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        _set_rng_state(state["rng"])
        window = state["log_window"]
        # A checkpoint of an older seqlm has no gradient norms: the first record after it averages the new ones.
        self.window.restore(window["losses"], window["terms"], window["tokens"], window.get("grad_norms", []))


class LogWindow:
    """Running averages between two log lines."""

    def __init__(self) -> None:
        self._reset()

    def restore(self, losses: list[float], terms: dict[str, list[float]], tokens: int, grad_norms: list[float]) -> None:
        self._reset()
        self.losses, self.terms, self.tokens = list(losses), {k: list(v) for k, v in terms.items()}, int(tokens)
        self.grad_norms = list(grad_norms)

    def _reset(self) -> None:
        self.started = time.perf_counter()
        self.losses: list[float] = []
        self.terms: dict[str, list[float]] = {}
        self.tokens = 0
        self.grad_norms: list[float] = []

    def add(self, loss: float, terms: dict[str, float], tokens: int, grad_norm: float) -> None:
        self.losses.append(loss)
        self.grad_norms.append(grad_norm)
        for name, value in terms.items():
            self.terms.setdefault(name, []).append(value)
        self.tokens += tokens

    def flush(self) -> dict[str, float]:
        elapsed = time.perf_counter() - self.started
        record = {"loss": float(np.mean(self.losses))}
        if len(self.terms) > 1:
            record.update({f"{name}_loss": float(np.mean(values)) for name, values in self.terms.items()})
        if self.grad_norms:  # the global norm before clipping; a skipped step's NaN/inf makes the window's null
            record["grad_norm"] = float(np.mean(self.grad_norms))
        record["tokens_per_s"] = self.tokens / elapsed if elapsed > 0 else math.nan
        self._reset()
        return record


def _plain_number(value: Any) -> int | float:
    """A metric as a Python int or float (numpy scalars do not load with `torch.load(weights_only=True)`)."""
    return int(value) if isinstance(value, (int, np.integer)) and not isinstance(value, bool) else float(value)


def _rng_state() -> dict[str, Any]:
    numpy_state = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": {"keys": torch.from_numpy(numpy_state[1].astype(np.int64)), "pos": int(numpy_state[2])},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    python_state = state["python"]
    random.setstate((python_state[0], tuple(python_state[1]), python_state[2]))
    np.random.set_state(("MT19937", state["numpy"]["keys"].numpy().astype(np.uint32), state["numpy"]["pos"], 0, 0.0))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
