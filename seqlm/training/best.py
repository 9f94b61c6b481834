"""`BestTracker`: which validation result so far is the best, and early stopping's patience (finetune's best/)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class BestTracker:
    """The best validation result so far and how many evaluations since it improved."""

    metric: str
    mode: str
    patience: int | None
    value: float | None = None
    step: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    evaluations_since: int = 0

    def state_dict(self) -> dict[str, Any]:
        return {"value": self.value, "step": self.step, "metrics": self.metrics, "evaluations_since": self.evaluations_since}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.value, self.step = state["value"], state["step"]
        self.metrics, self.evaluations_since = dict(state["metrics"]), int(state["evaluations_since"])

    def update(self, step: int, metrics: dict[str, float]) -> bool:
        """Record one validation; True when it is a new best (ties keep the earlier model)."""
        value = metrics[self.metric]
        better = value == value and (self.value is None or (value > self.value if self.mode == "max" else value < self.value))
        if better:
            self.value, self.step, self.metrics, self.evaluations_since = value, step, dict(metrics), 0
        else:
            self.evaluations_since += 1
        return better

    @property
    def exhausted(self) -> bool:
        return self.patience is not None and self.evaluations_since >= self.patience
