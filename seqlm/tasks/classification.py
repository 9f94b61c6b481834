"""Sequence classification: one label per text (or text pair).

finetune — labelled JSONL / CSV / Parquet records (`seqlm.io.labelled_data`), every example
tokenized once (truncated to `training.max_length`) and batched by `ExampleBatches`; loss:
cross-entropy, optionally class-weighted; validation: loss, accuracy, macro F1.
evaluate — `seqlm.tasks.classification_report`; predict — `seqlm.tasks.classification_predict`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from seqlm.config.inference import PredictConfig
from seqlm.data.example_batches import ExampleBatches
from seqlm.data.text_examples import encode_texts
from seqlm.io.labelled_data import LabelledExamples, label_ids, load_splits
from seqlm.io.predict_inputs import InputRecord
from seqlm.metrics.scoring import score_classifier
from seqlm.models.loading import LoadedModel
from seqlm.runtime.device import Precision
from seqlm.tasks import classification_predict
from seqlm.tasks.classification_report import evaluate_classifier
from seqlm.tasks.objectives import OBJECTIVES, refuse_chat_template, refuse_source_prefix
from seqlm.tasks.task import Finetuning, Predictions, Task

# The validation metrics and which way is better; early_stopping.metric must be one of them.
METRIC_MODES = {"loss": "min", "accuracy": "max", "macro_f1": "max"}


def build_batches(
    splits: dict[str, LabelledExamples],
    names: list[str],
    tokenizer: Any,
    max_length: int,
    batch_size: int,
    grad_accum: int,
    seed: int,
    group_by_length: bool = True,
    class_weights: str = "none",
    pad_to_multiple_of: int = 1,
) -> ExampleBatches:
    """Every split encoded once; `class_weights: balanced` gives each training example its class's weight."""
    if tokenizer.pad_token_id is None:
        raise ValueError("the tokenizer needs a pad token (set it before building batches)")
    labels = {name: np.asarray(label_ids(examples, names), dtype=np.int64) for name, examples in splits.items()}
    encoded = {
        name: encode_texts(tokenizer, examples.texts, examples.pairs, max_length, {"labels": labels[name]})
        for name, examples in splits.items()
    }
    if class_weights == "balanced":
        encoded["train"].targets["weights"] = _balanced_weights(labels["train"], len(names))[labels["train"]]
    return ExampleBatches(encoded, int(tokenizer.pad_token_id), batch_size, grad_accum, seed, group_by_length, pad_to_multiple_of)


def _batches_for_run(
    splits: dict[str, LabelledExamples], names: list[str], tokenizer: Any, config: Any, world_size: int, log: Callable[[str], None]
) -> ExampleBatches:
    training = config.training
    batches = build_batches(
        splits, names, tokenizer, max_length=training.max_length, batch_size=training.batch_size * world_size,
        grad_accum=training.grad_accum, seed=training.seed, group_by_length=training.group_by_length,
        class_weights=training.class_weights, pad_to_multiple_of=training.pad_to_multiple_of,
    )  # fmt: skip
    cut = batches.splits["train"].truncated
    if cut:
        log(
            f"{cut} of {len(splits['train'])} training examples are longer than "
            f"training.max_length ({training.max_length} tokens) and are cut"
        )
    return batches


def _balanced_weights(labels: np.ndarray, n_labels: int) -> np.ndarray:
    """sklearn's 'balanced': n / (k · count_c), so the weights average 1 over the training set."""
    counts = np.bincount(labels, minlength=n_labels).astype(np.float64)
    weights = np.zeros(n_labels, dtype=np.float32)
    present = counts > 0
    weights[present] = len(labels) / (present.sum() * counts[present])
    return weights


def predict(loaded: LoadedModel, records: list[InputRecord], config: PredictConfig, precision: Precision, report: Any) -> Predictions:
    limit = classification_predict.length_limit(loaded, config.max_length)
    results, n_truncated = classification_predict.classify(loaded, records, config, precision, limit, report)
    warnings = []
    if n_truncated:
        why = "max_length" if config.max_length is not None else "the model's maximum; set max_length to change it"
        warnings.append(f"{n_truncated} input(s) were longer than {limit} tokens ({why}) and were cut to their first {limit}")
    return Predictions(results, warnings)


def check_predict(config: PredictConfig, loaded: LoadedModel) -> None:
    refuse_source_prefix(config, "a sequence classifier")
    refuse_chat_template(config, "a sequence classifier")
    classification_predict.length_limit(loaded, config.max_length)  # max_length beyond the model's positions: ConfigError


TASK = Task(
    name="classification",
    head="sequence_classification",
    objective=OBJECTIVES["classification"],
    evaluate=evaluate_classifier,
    predict=predict,
    check_predict=check_predict,
    output_fields=frozenset(classification_predict.OUTPUT_FIELDS),
    rename_clashes=True,
    finetuning=Finetuning(
        load=load_splits,
        batches=_batches_for_run,
        score=score_classifier,
        metric_modes=METRIC_MODES,
        selectable=lambda names: ("accuracy", "macro_f1", "loss"),
        shown_metrics=("accuracy",),
    ),
)
