"""A batch as every task's batcher builds it and the training loop and scorers consume it."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Batch:
    inputs: dict[str, torch.Tensor]  # passed to model(**inputs)
    targets: dict[str, torch.Tensor]  # used only by the loss

    def to(self, device: torch.device) -> Batch:
        move = {key: value.to(device, non_blocking=True) for key, value in self.inputs.items()}
        return Batch(move, {key: value.to(device, non_blocking=True) for key, value in self.targets.items()})
