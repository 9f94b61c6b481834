"""The Task protocol: what `finetune`, `evaluate` and `predict` need from a thing a model is trained for.

A task is a plain record of functions (no base class): each module in `seqlm.tasks` builds one
`Task` named `TASK`, and the commands look it up in the registry (`seqlm.tasks.get`, or
`seqlm.tasks.for_head` for a trained model, by the head its config.json names). Commands never
branch on a task's name; the training loop, checkpoints and parallelism never see a task at all:
they get its `Objective` and its batches.

Contracts:
- `evaluate(loaded, config, precision, device, console, cluster) -> dict`: the metrics that
  `seqlm evaluate` writes to metrics.json (every rank computes them; rank 0 writes).
- `predict(loaded, records, config, precision, report) -> Predictions`: one result dict per input
  record, in input order (`report(n_done)` advances the progress bar); `check_predict` refuses
  settings the task does not use (ConfigError) and returns nothing.
- `output_fields`: the keys of a prediction record. An input field passed through under the same
  name is renamed `input_<name>` when `rename_clashes`, else refused (DataError).
- `finetuning`: set for tasks `seqlm finetune` trains (see `Finetuning`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from seqlm.data.batch import Batch
from seqlm.training.objective import Objective


@dataclass
class Predictions:
    results: list[dict[str, Any]]
    warnings: list[str] = field(default_factory=list)  # shown after the records are written


class SupervisedBatches(Protocol):
    """What `Finetuning.batches` returns (`seqlm.data.example_batches.ExampleBatches` is one)."""

    batches_per_epoch: int
    steps_per_epoch: int

    def train(self, step: int, micro: int) -> Batch: ...
    def evaluation(self, split: str) -> list[Batch]: ...


@dataclass(frozen=True)
class Finetuning:
    """A supervised task as `seqlm finetune` trains it.

    - `load(data_config) -> (splits, label_names)`: every split's records read and checked
      ({"train", "validation"[, "test"]}; a bad record is a DataError at its FILE:LINE).
    - `batches(splits, names, tokenizer, config, world_size, log) -> SupervisedBatches`: records
      encoded once; the batch of step s a pure function of (seed, s); `log` reports truncation.
    - `score(model, objective, batches, names, precision, device, cluster, lockstep) -> dict`:
      validation and test metrics, each a float; `metric_modes` says which way each is better.
    - `selectable(names)`: the metrics `score` reports for this label set that can pick best/
      (`early_stopping.metric`), the default first.
    - `load_model(source, config) -> (model, tokenizer, new_weight_names)`: for tasks whose model is not
      a pretrained body plus a labelled head (`seqlm.models.fine_tuning.load_with_head`, when None);
      `source` is `config.model`, or the checkpoint dir a resumed run continues from.
    """

    load: Callable[[Any], tuple[dict[str, Any], list[str]]]
    batches: Callable[..., SupervisedBatches]
    score: Callable[..., dict[str, float]]
    metric_modes: dict[str, str]
    selectable: Callable[[list[str]], tuple[str, ...]]
    shown_metrics: tuple[str, ...]  # the validation/test metrics the final log line shows (those reported)
    load_model: Callable[[Any, Any], tuple[Any, Any, list[str]]] | None = None


@dataclass(frozen=True)
class Task:
    name: str
    head: str  # the key of seqlm.models.heads.HEADS this task's models carry
    objective: Objective
    evaluate: Callable[..., dict[str, Any]]
    predict: Callable[..., Predictions]
    check_predict: Callable[[Any, Any], None]
    output_fields: frozenset[str]
    rename_clashes: bool = False
    takes_messages: bool = False  # predict accepts chat inputs (`InputRecord.messages`); else predict refuses them
    finetuning: Finetuning | None = None
    # Other heads whose saved models this task serves (seq2seq: `prompted_lm`, a decoder-only model; see
    # `seqlm.tasks.seq2seq`): `seqlm.tasks.for_head` finds the task by any of them.
    other_heads: tuple[str, ...] = ()
