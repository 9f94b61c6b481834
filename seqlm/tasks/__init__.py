"""What a model is trained for: one module per task, each exposing a `Task` named `TASK` (see
`seqlm.tasks.task`), looked up here by name or by the head a saved model carries.

Modules are imported on first use, so `seqlm --help` and config errors stay instant.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from seqlm.tasks.task import Task

# Task name → module in this package. A new task is a module here and a line in this table.
TASK_MODULES = {
    "clm": "causal_lm",
    "mlm": "masked_lm",
    "classification": "classification",
    "token_classification": "token_classification",
    "seq2seq": "seq2seq",
    "extractive_qa": "extractive_qa",
    # Not "causal_lm": that module is the `clm` pretraining objective's evaluate / predict.
    "causal_lm": "completion_finetuning",
}


def get(name: str) -> Task:
    """The task called `name` (a key of TASK_MODULES)."""
    return importlib.import_module(f"seqlm.tasks.{TASK_MODULES[name]}").TASK


def for_head(head: str) -> Task:
    """The task whose models carry `head` (a key of seqlm.models.heads.HEADS; `Task.head` or one of `other_heads`)."""
    for name in TASK_MODULES:
        task = get(name)
        if head == task.head or head in task.other_heads:
            return task
    raise KeyError(f"no task trains a {head} head")
