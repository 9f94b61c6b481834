"""What the one training loop trains on: a `Batch`, and an `Objective` that turns it into summed losses.

The training loop is objective-agnostic. An objective says how many targets a batch has
(`target_counts`, known before the forward pass, so gradient accumulation can normalise
every micro-batch by the target count of the whole optimizer step) and returns *summed*
losses (`loss_sums`). Loss = Σ_terms loss_sum[term] / count[term] over the step, which makes
accumulation of k micro-batches of b equal to one batch of k·b. Tasks (`seqlm.tasks`) supply
objectives; this module names none of them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from seqlm.data.batch import Batch


@dataclass(frozen=True)
class Objective:
    name: str
    target_counts: Callable[[Batch], dict[str, float]]  # ints, except for weighted targets
    loss_sums: Callable[[Any, Batch], dict[str, torch.Tensor]]
    # Evaluation: "nll"/"tokens" sums for perplexity; "predicted"/"expected" ids for accuracy.
    score: Callable[[Any, Batch], dict[str, Any]]
    # Training: forward pass and `loss_sums` in one, computing the output layer only where needed
    # (equal to `loss_sums(model(**inputs), batch)` within float tolerance); returns None for an
    # architecture it does not cover, and the loop then takes the reference path.
    fast_loss_sums: Callable[[Any, Batch], dict[str, torch.Tensor] | None] | None = None
    # Evaluation the same way: `score`'s figures from the model and batch, the output layer only where a token is
    # scored (no logits over the vocabulary at every position); None for an architecture it does not cover.
    fast_score: Callable[[Any, Batch], dict[str, Any] | None] | None = None
