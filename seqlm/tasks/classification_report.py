"""`seqlm evaluate` for sequence-classification models: score a labelled file.

The file (`config.data`: JSONL / CSV / Parquet, read by `seqlm.io.labelled_data.read_labelled`)
holds a text column, optionally a second text column (sentence pairs) and a string label
column. Labels are mapped to the model's classes through its `config.id2label` /
`label2id`; a label the model does not know is a `DataError` naming it and its line.
Examples are tokenized as `seqlm finetune` tokenizes them (`seqlm.data.text_examples`), with
truncation to `config.seq_len` tokens (default: the model's positions), scored in batches of
similar length (`ExampleBatches.evaluation`: right-padded with the model's pad id, so a decoder
classifier pools its last real token) and put back in file order. `max_batches` caps
the work at the first `max_batches × batch_size` examples.

Metrics go through seqlm's `classification_report` metric module: accuracy, macro and
weighted precision / recall / F1, per-class scores, the confusion matrix, and the mean
cross-entropy of the true labels (`loss`).
"""

from __future__ import annotations

import inspect
from typing import Any

import torch

from seqlm.config.inference import EvaluateConfig
from seqlm.console import Console
from seqlm.data.batch import Batch
from seqlm.data.example_batches import ExampleBatches
from seqlm.data.text_examples import encode_texts
from seqlm.errors import DataError
from seqlm.io.labelled_data import label_ids, read_labelled
from seqlm.metrics import load_metric
from seqlm.models.loading import model_label_names, token_limit
from seqlm.runtime.device import Precision
from seqlm.runtime.distributed import SINGLE, Cluster, sharded_results

# The classification_report values reported at the top level of metrics.json.
SUMMARY_KEYS = ("accuracy", "macro_f1", "macro_precision", "macro_recall", "weighted_f1", "weighted_precision", "weighted_recall")


def evaluate_classifier(
    loaded: Any, config: EvaluateConfig, precision: Precision, device: torch.device, console: Console, cluster: Cluster = SINGLE
) -> dict[str, Any]:
    """Metrics of the classifier `loaded` (a `LoadedModel`) on the labelled file `config.data`
    (under torchrun each rank scores its share of the batches; every rank gets all logits)."""
    model, tokenizer = loaded.model, loaded.tokenizer
    names = model_label_names(model.config, config.model)
    examples = read_labelled(
        str(config.data),
        format="auto",
        text_field=config.text_field,
        text_pair_field=config.text_pair_field,
        label_field=config.label_field,
        config_section="",
    )
    known = set(names)
    for index, label in enumerate(examples.labels):
        if label not in known:  # said here in evaluate's terms; label_ids' message speaks of training
            shown = ", ".join(names[:20]) + (f", … ({len(names)} in all)" if len(names) > 20 else "")
            raise DataError(
                f"{examples.where(index)}: label {label!r} is not one of the model's labels ({shown}); "
                "fix the label, or evaluate a model trained with it"
            )
    references = label_ids(examples, names)
    texts, pairs, lines = list(examples.texts), examples.pairs, list(examples.lines)
    if config.max_batches is not None:
        keep = config.max_batches * config.batch_size
        texts, references, lines = texts[:keep], references[:keep], lines[:keep]
        pairs = list(pairs[:keep]) if pairs is not None else None
    if not texts:
        raise DataError(f"{config.data}: no labelled examples to evaluate")

    max_length = token_limit(config.seq_len, loaded.model.config, tokenizer, "seq_len")
    encoded = encode_texts(tokenizer, texts, pairs, max_length)
    if "token_type_ids" not in inspect.signature(model.forward).parameters:
        encoded.rows.pop("token_type_ids", None)
    for index, length in enumerate(encoded.lengths):
        if not length:
            raise DataError(f"{config.data}:{lines[index]}: the text gives no tokens; remove the example or fill it in")

    batch_size = config.batch_size
    pad_id = _pad_id(model)
    if pad_id is None and batch_size > 1:
        console.warn("the model sets no pad token id: scoring one example at a time")
        batch_size = 1
    console.info(
        f"evaluate classification: {config.model} on {config.data}, {len(texts)} examples, "
        f"{len(names)} labels, up to {max_length} tokens each"
    )
    batches = ExampleBatches({"test": encoded}, pad_id or 0, batch_size, 1, 0).evaluation("test")
    logits = _score(model, batches, len(texts), precision, device, console, cluster)

    targets = torch.tensor(references, dtype=torch.long)
    loss = float(torch.nn.functional.cross_entropy(logits, targets, reduction="sum")) / len(references)
    predictions = logits.argmax(dim=-1).tolist()
    report = load_metric("classification_report")
    report.add_batch(predictions=predictions, references=references)
    scores = report.compute(num_labels=len(names), label_names=names)
    return {
        "model": str(config.model),
        "data": str(config.data),
        "objective": "classification",
        "examples": len(references),
        "loss": loss,
        **{key: scores[key] for key in SUMMARY_KEYS},
        "max_length": max_length,
        "per_class": scores["per_class"],
        "confusion_matrix": {"labels": scores["labels"], "matrix": scores["confusion_matrix"]},
    }


def _pad_id(model: Any) -> int | None:
    """The id padding uses: the model's own, since a decoder classifier pools the last token that
    is not `config.pad_token_id` (encoders mask padding and pool [CLS]; any id does for them).
    None: the model cannot take padded batches (e.g. GPT-2 without pad_token_id)."""
    model_pad = getattr(model.config, "pad_token_id", None)
    return int(model_pad) if model_pad is not None else None


@torch.inference_mode()
def _score(
    model: Any, batches: list[Batch], n_examples: int, precision: Precision, device: torch.device, console: Console, cluster: Cluster
) -> torch.Tensor:
    """fp32 logits (n_examples, n_labels) in input order; batches (longest first) hold examples of similar length."""
    logits = torch.empty((n_examples, model.config.num_labels), dtype=torch.float32)
    extra = {"use_cache": False} if "use_cache" in inspect.signature(model.forward).parameters else {}
    scored = [0]  # examples this rank has scored, for the progress line
    with console.progress("evaluate", total=n_examples, unit="examples") as progress:

        def batch_logits(batch: Batch) -> torch.Tensor:
            with precision.autocast():
                outputs = model(**{key: value.to(device) for key, value in batch.inputs.items()}, **extra)
            scored[0] += len(batch.targets["index"])
            progress.update(scored[0])
            return outputs.logits.float().cpu()

        for batch, batch_logits_ in zip(batches, sharded_results(cluster, batches, batch_logits)):
            logits[batch.targets["index"]] = batch_logits_
    return logits
