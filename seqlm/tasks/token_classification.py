"""Token classification: one tag per word (part-of-speech tags, IOB named entities).

finetune — sentences with one tag per word (`seqlm.io.tagged_words`: JSON Lines, CoNLL columns,
CoNLL-U). Words are cut into the model's sub-word pieces (`seqlm.data.word_windows`); a word's tag
trains its first piece (or every piece: `data.label_all_pieces`), the other pieces are ignored by
the loss; sentences longer than `training.max_length` pieces are split into windows at word
boundaries, so no word is lost. Loss: cross-entropy summed over the tagged pieces, divided by their
count over the whole optimizer step. Validation reads each word's prediction at its first piece:
loss, token (word) accuracy and, for IOB/IOBES tag sets, entity precision/recall/F1 (seqeval's
default mode); for other tag sets (POS), macro F1 over the tags.
evaluate — the same scores on a tagged file, with per-type (entities) or per-tag tables and, for
POS-like sets, the confusion matrix. predict — `seqlm.tasks.token_tagging`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.nn.functional as F

from seqlm.config.inference import EvaluateConfig
from seqlm.console import Console
from seqlm.data.batch import Batch
from seqlm.data.example_batches import ExampleBatches
from seqlm.data.masking import IGNORE_INDEX
from seqlm.data.word_windows import encode_words
from seqlm.io.records import read_splits
from seqlm.io.tagged_words import TaggedSentences, read_tagged, tag_ids, tag_names
from seqlm.metrics import load_metric
from seqlm.metrics.scoring import batch_scores
from seqlm.metrics.sequence_labelling import detect_scheme
from seqlm.models.loading import LoadedModel, model_label_names, token_limit
from seqlm.runtime.device import Precision
from seqlm.runtime.distributed import SINGLE, Cluster
from seqlm.tasks import token_tagging
from seqlm.tasks.task import Finetuning, Task
from seqlm.training.objective import Objective

METRIC_MODES = {"loss": "min", "accuracy": "max", "f1": "max", "precision": "max", "recall": "max", "macro_f1": "max"}
ENTITY_METRICS = ("precision", "recall", "f1")


# --------------------------------------------------------------------------- objective


def _counts(batch: Batch) -> dict[str, int]:
    return {"tagging": int((batch.targets["labels"] != IGNORE_INDEX).sum())}


def _nll_sum(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX, reduction="sum")


def _losses(outputs: Any, batch: Batch) -> dict[str, torch.Tensor]:
    return {"tagging": _nll_sum(outputs.logits, batch.targets["labels"])}


def _score(outputs: Any, batch: Batch) -> dict[str, Any]:
    """Sums for the loss, and each row's predicted and gold tag ids at its words' first pieces, with its window and sentence."""
    labels = batch.targets["labels"]
    first = (batch.targets["first_piece"] == 1).cpu()
    predicted, gold = outputs.logits.argmax(dim=-1).cpu(), labels.cpu()
    return {
        "nll": float(_nll_sum(outputs.logits, labels)),
        "tokens": int((labels != IGNORE_INDEX).sum()),
        "windows": batch.targets["index"].tolist(),
        "sentences": batch.targets["sentence"].tolist(),
        "predicted": [row[mask].numpy() for row, mask in zip(predicted, first)],
        "expected": [row[mask].numpy() for row, mask in zip(gold, first)],
    }


OBJECTIVE = Objective("token_classification", _counts, _losses, _score)


# --------------------------------------------------------------------------- data


def load(data: Any) -> tuple[dict[str, TaggedSentences], list[str]]:
    """{"train", "validation"[, "test"]} sentences and the tag names; every tag of every split is checked."""

    def read(location: str) -> TaggedSentences:
        return read_tagged(location, data.format, data.tokens_field, data.tags_field, data.conllu_column, data.conll_tag_column)

    splits = read_splits(data, read)
    train = splits["train"]
    names = tag_names(train, data.labels)
    for sentences in splits.values():
        tag_ids(sentences, names, configured="data.labels" if data.labels is not None else None)
    return splits, names


def _batches_for_run(
    splits: dict[str, TaggedSentences], names: list[str], tokenizer: Any, config: Any, world_size: int, log: Callable[[str], None]
) -> ExampleBatches:
    training, data = config.training, config.data
    encoded = {}
    for name, sentences in splits.items():
        windows = encode_words(tokenizer, sentences.words, training.max_length, tag_ids(sentences, names), data.label_all_pieces)
        encoded[name] = token_tagging.window_examples(windows, for_scoring=name != "train")
        if windows.n_split_sentences or windows.n_cut_words:
            log(
                f"{name}: {windows.n_split_sentences} of {len(sentences)} sentences are longer than training.max_length "
                f"({training.max_length} pieces) and are split into windows at word boundaries"
                + (f"; {windows.n_cut_words} words longer than a window keep only their first pieces" if windows.n_cut_words else "")
            )
    return ExampleBatches.for_training(encoded, int(tokenizer.pad_token_id), training, world_size)


# --------------------------------------------------------------------------- scoring


def sentence_tags(
    model: Any, objective: Objective, batches: Iterable[Batch], names: list[str], precision: Precision, device: torch.device,
    cluster: Cluster = SINGLE, lockstep: bool = False,
) -> tuple[list[list[str]], list[list[str]], float]:
    """(gold, predicted) tag sequences per sentence, the windows of a split sentence joined in order (so an
    entity cut by a window split is whole again), and the mean loss per tagged piece."""
    windows: dict[int, tuple[int, list[str], list[str]]] = {}
    nll, tokens = 0.0, 0
    for scores in batch_scores(model, objective, batches, precision, device, cluster, lockstep):
        nll, tokens = nll + scores["nll"], tokens + scores["tokens"]
        for window, sentence, expected, guessed in zip(scores["windows"], scores["sentences"], scores["expected"], scores["predicted"]):
            windows[window] = (sentence, [names[i] for i in expected], [names[i] for i in guessed])
    gold: dict[int, list[str]] = {}
    predicted: dict[int, list[str]] = {}
    for window in sorted(windows):  # a sentence's windows are consecutive, in word order
        sentence, expected, guessed = windows[window]
        gold.setdefault(sentence, []).extend(expected)
        predicted.setdefault(sentence, []).extend(guessed)
    order = sorted(gold)
    return [gold[s] for s in order], [predicted[s] for s in order], nll / tokens if tokens else float("nan")


def sequence_report(gold: list[list[str]], predicted: list[list[str]], names: list[str]) -> dict[str, Any]:
    """seqeval-equal entity scores for IOB-style tag sets, else per-tag scores (seqlm's `sequence_labelling` metric)."""
    return load_metric("sequence_labelling").compute(predictions=predicted, references=gold, scheme=detect_scheme(names))


def score(
    model: Any, objective: Objective, batches: list[Batch], names: list[str], precision: Precision, device: torch.device,
    cluster: Cluster = SINGLE, lockstep: bool = False,
) -> dict[str, float]:
    """Validation/test metrics of `batches` (windows carrying their sentence and first-piece positions)."""
    gold, predicted, loss = sentence_tags(model, objective, batches, names, precision, device, cluster, lockstep)
    return {"loss": loss, **summary(sequence_report(gold, predicted, names))}


def summary(report: dict[str, Any]) -> dict[str, float]:
    """The headline figures of a sequence-labelling report: accuracy, and entity P/R/F1 or macro F1 over tags."""
    headline = {"accuracy": report["accuracy"]}
    if report["scheme"] is not None:
        headline.update({key: report[key] for key in ENTITY_METRICS})
    else:
        headline["macro_f1"] = report["macro_f1"]
    headline["words"] = report["tokens"]
    return headline


# --------------------------------------------------------------------------- evaluate


def evaluate(
    loaded: LoadedModel, config: EvaluateConfig, precision: Precision, device: torch.device, console: Console, cluster: Cluster
) -> dict[str, Any]:
    """Metrics of the token classifier `loaded` on the tagged file `config.data`."""
    names = model_label_names(loaded.model.config, config.model)
    sentences = read_tagged(str(config.data), "auto", config.tokens_field, config.tags_field, config.conllu_column, config_section="")
    if config.max_batches is not None:
        sentences = sentences.subset(range(min(len(sentences), config.max_batches * config.batch_size)))
    ids = tag_ids(sentences, names, configured="the model's labels")
    max_length = token_limit(config.seq_len, loaded.model.config, loaded.tokenizer, "seq_len")
    windows = encode_words(loaded.tokenizer, sentences.words, max_length, ids)
    console.info(
        f"evaluate token_classification: {config.model} on {config.data}, {len(sentences)} sentences, "
        f"{sum(map(len, sentences.words))} words, {len(names)} tags, windows of up to {max_length} pieces"
    )
    encoded = token_tagging.window_examples(windows, for_scoring=True)
    pad_id = loaded.tokenizer.pad_token_id if loaded.tokenizer.pad_token_id is not None else 0
    batches = ExampleBatches({"test": encoded}, int(pad_id), config.batch_size, 1, 0).evaluation("test")
    gold, predicted, loss = sentence_tags(loaded.model, OBJECTIVE, batches, names, precision, device, cluster)
    report = sequence_report(gold, predicted, names)
    tables = {key: report[key] for key in ("per_type", "per_tag") if key in report}
    if "confusion_matrix" in report:
        tables["confusion_matrix"] = report["confusion_matrix"]
    return {
        "model": str(config.model),
        "data": str(config.data),
        "objective": "token_classification",
        "sentences": len(sentences),
        "loss": loss,
        **summary(report),
        "scheme": report["scheme"],
        "max_length": max_length,
        "split_sentences": windows.n_split_sentences,
        **tables,
    }


def _selectable(names: list[str]) -> tuple[str, ...]:
    """Entity F1 first for IOB-style tags; accuracy first for other tag sets (POS), which have no entities."""
    if detect_scheme(names) is not None:
        return ("f1", "accuracy", "precision", "recall", "loss")
    return ("accuracy", "macro_f1", "loss")


TASK = Task(
    name="token_classification",
    head="token_classification",
    objective=OBJECTIVE,
    evaluate=evaluate,
    predict=token_tagging.predict,
    check_predict=token_tagging.check_predict,
    output_fields=token_tagging.OUTPUT_FIELDS,
    rename_clashes=True,
    finetuning=Finetuning(
        load=load,
        batches=_batches_for_run,
        score=score,
        metric_modes=METRIC_MODES,
        selectable=_selectable,
        shown_metrics=("f1", "accuracy"),
    ),
)
