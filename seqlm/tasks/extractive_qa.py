"""Extractive question answering: the answer to a question is a span of its context (SQuAD).

finetune — SQuAD-layout questions (`seqlm.io.qa_records`: JSONL, Parquet, save_to_disk, SQuAD's nested JSON;
v2's unanswerable questions included). Each question + context pair is cut into overlapping windows
(`seqlm.data.qa_windows`: `training.max_length`, `qa.doc_stride`); a window trains its start and end token
(the first gold answer), or [CLS] when it does not hold the answer. Model: any encoder with transformers'
question-answering head (`AutoModelForQuestionAnswering`, a new span head on a pretrained body). Loss: the mean
of the start and end cross-entropies, summed over windows and divided by the windows of the whole optimizer step.
Validation reads every question's answer from all its windows (`seqlm.tasks.qa_answers`) and reports the loss
and SQuAD exact match / F1 in percent (`seqlm.metrics.squad`, equal to the official script; HasAns/NoAns when
some questions are unanswerable); `best/` is picked by F1.
evaluate — the same scores on a SQuAD-layout file (`id`, `question`, `context`, `answers` fields).
predict — `text_field` is the question, `text_pair_field` the context; per input {"answer", "start", "end",
"score"} (character offsets into the context), and "alternatives" (the `top_k` best answers) when `top_k` is set.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from seqlm.config.schema import EvaluateConfig, PredictConfig
from seqlm.console import Console
from seqlm.data.batch import Batch
from seqlm.data.example_batches import EncodedExamples, ExampleBatches
from seqlm.data.masking import IGNORE_INDEX
from seqlm.data.qa_windows import QAWindows, default_stride, encode_qa
from seqlm.errors import ConfigError, DataError
from seqlm.io.predict_inputs import InputRecord
from seqlm.io.qa_records import QAExamples, QAFields, read_qa
from seqlm.io.records import read_splits
from seqlm.metrics.scoring import batch_scores
from seqlm.metrics.squad import squad_scores
from seqlm.models.fine_tuning import load_with_head
from seqlm.models.loading import LoadedModel, token_limit
from seqlm.runtime.device import Precision
from seqlm.runtime.distributed import SINGLE, Cluster
from seqlm.tasks.objectives import refuse_source_prefix
from seqlm.tasks.qa_answers import read_answers
from seqlm.tasks.task import Finetuning, Predictions, Task
from seqlm.training.objective import Objective

HEAD = "question_answering"
METRIC_MODES = {"loss": "min", "exact_match": "max", "f1": "max"}
OUTPUT_FIELDS = frozenset({"answer", "start", "end", "score", "alternatives"})
_PADDING_LOGIT = -1e9  # far below any real logit: exp() of it is 0, and its gradient too

# --------------------------------------------------------------------------- objective
# Targets: "labels" holds each window's start token and "end_positions" its end token. The start is named
# "labels" so that the loop's rule for a rank left without a row (a zero "weights" entry) applies unchanged.


def _weights(batch: Batch) -> torch.Tensor | None:
    return batch.targets.get("weights")


def _counts(batch: Batch) -> dict[str, float]:
    weights = _weights(batch)
    return {"span": float(weights.sum()) if weights is not None else int(batch.targets["labels"].numel())}


def _span_nll(outputs: Any, batch: Batch) -> torch.Tensor:
    """Per window, (cross-entropy of the start + of the end) / 2, as transformers' QA models average them. Padding
    positions are masked out of the softmax (transformers' models leave them in), so a window's loss does not depend on
    how wide its batch is padded: the same under DDP, where each rank pads its own rows, as in one process."""
    padding = batch.inputs["attention_mask"] == 0
    start_logits = outputs.start_logits.float().masked_fill(padding, _PADDING_LOGIT)
    end_logits = outputs.end_logits.float().masked_fill(padding, _PADDING_LOGIT)
    start = F.cross_entropy(start_logits, batch.targets["labels"], reduction="none", ignore_index=IGNORE_INDEX)
    end = F.cross_entropy(end_logits, batch.targets["end_positions"], reduction="none", ignore_index=IGNORE_INDEX)
    return (start + end) / 2


def _losses(outputs: Any, batch: Batch) -> dict[str, torch.Tensor]:
    nll, weights = _span_nll(outputs, batch), _weights(batch)
    return {"span": (nll * weights).sum() if weights is not None else nll.sum()}


def _score(outputs: Any, batch: Batch) -> dict[str, Any]:
    """Loss sums (when the windows have answers) and each window's (start, end) logits, with its index."""
    logits = torch.stack([outputs.start_logits, outputs.end_logits], dim=1).float().cpu().numpy()
    labelled = "labels" in batch.targets
    return {
        "nll": float(_span_nll(outputs, batch).sum()) if labelled else 0.0,
        "windows": len(logits) if labelled else 0,
        "index": batch.targets["index"].tolist(),
        "logits": list(logits),
    }


OBJECTIVE = Objective("extractive_qa", _counts, _losses, _score)


# --------------------------------------------------------------------------- data


class ScoredWindows(list):
    """The evaluation batches of one split, with what reading its answers needs."""

    def __init__(self, batches: list[Batch], windows: QAWindows, examples: QAExamples, qa: Any):
        super().__init__(batches)
        self.windows, self.examples, self.qa = windows, examples, qa


class QABatches:
    """`ExampleBatches` over windows; `evaluation(split)` also carries the split's windows and questions."""

    def __init__(self, batches: ExampleBatches, encoded: dict[str, tuple[QAWindows, QAExamples]], qa: Any):
        self.inner, self.encoded, self.qa = batches, encoded, qa
        self.batches_per_epoch, self.steps_per_epoch = batches.batches_per_epoch, batches.steps_per_epoch

    def train(self, step: int, micro: int) -> Batch:
        return self.inner.train(step, micro)

    def evaluation(self, split: str) -> ScoredWindows:
        windows, examples = self.encoded[split]
        return ScoredWindows(self.inner.evaluation(split), windows, examples, self.qa)


def load(data: Any) -> tuple[dict[str, QAExamples], list[str]]:
    """{"train", "validation"[, "test"]} questions, every answer checked; no label names (spans have none)."""
    fields = QAFields(data.id_field, data.question_field, data.context_field, data.answers_field)
    return read_splits(data, lambda location: read_qa(location, data.format, fields, data.skip_bad_answers)), []


def encode(
    tokenizer: Any, examples: QAExamples, max_length: int, doc_stride: int, labelled: bool = True
) -> tuple[QAWindows, EncodedExamples]:
    """The windows of `examples` and the same as `ExampleBatches` examples (with start/end targets when `labelled`)."""
    spans = [(ex.answers[0][1], ex.answers[0][1] + len(ex.answers[0][0])) if ex.answers else None for ex in examples]
    windows = encode_qa(
        tokenizer, [ex.question for ex in examples], [ex.context for ex in examples], max_length, doc_stride,
        spans if labelled else None,
    )  # fmt: skip
    return windows, _as_examples(windows)


def _as_examples(windows: QAWindows) -> EncodedExamples:
    rows = {"input_ids": windows.input_ids, "attention_mask": windows.attention_mask}
    if windows.token_type_ids is not None:
        rows["token_type_ids"] = windows.token_type_ids
    targets = {}
    if windows.start_positions is not None and windows.end_positions is not None:
        targets = {"labels": windows.start_positions, "end_positions": windows.end_positions}
    return EncodedExamples(rows, targets)


def _stride(qa: Any, max_length: int) -> int:
    return qa.doc_stride if qa.doc_stride is not None else default_stride(max_length)


def _batches_for_run(
    splits: dict[str, QAExamples], names: list[str], tokenizer: Any, config: Any, world_size: int, log: Callable[[str], None]
) -> QABatches:
    training = config.training
    stride = _stride(config.qa, training.max_length)
    encoded, rows = {}, {}
    for name, examples in splits.items():
        windows, rows[name] = encode(tokenizer, examples, training.max_length, stride)
        encoded[name] = (windows, examples)
        if windows.n_split:
            log(f"{name}: {windows.n_split} of {len(examples)} contexts are longer than one window of training.max_length "
                f"({training.max_length} tokens) and are split into {len(windows)} windows in all (qa.doc_stride {stride})")  # fmt: skip
        if windows.n_cut_questions:
            log(f"{name}: {windows.n_cut_questions} questions are cut to leave room for qa.doc_stride + 1 context tokens")
        if examples.skipped_answers:
            log(f"{name}: skipped {examples.skipped_answers} answers whose answer_start does not point at their text "
                f"({examples.skipped_questions} questions left without an answer were dropped)")  # fmt: skip
    pad = int(tokenizer.pad_token_id)
    batches = ExampleBatches(
        rows, pad, training.batch_size * world_size, training.grad_accum, training.seed, training.group_by_length
    )
    return QABatches(batches, encoded, config.qa)


def _load_model(source: Any, config: Any) -> tuple[Any, Any, list[str]]:
    return load_with_head(str(source), HEAD, ["start", "end"], config.training.max_length, config.trust_remote_code)


# --------------------------------------------------------------------------- scoring


def window_logits(
    model: Any,
    batches: list[Batch],
    n_windows: int,
    precision: Precision,
    device: torch.device,
    cluster: Cluster = SINGLE,
    lockstep: bool = False,
) -> tuple[list[np.ndarray], float]:
    """Each window's (2, tokens) start/end logits in window order, and the mean span loss (nan without answers)."""
    logits: list[np.ndarray] = [np.empty((2, 0), dtype=np.float32)] * n_windows
    nll, counted = 0.0, 0
    for scores in batch_scores(model, OBJECTIVE, batches, precision, device, cluster, lockstep):
        nll, counted = nll + scores["nll"], counted + scores["windows"]
        for index, values in zip(scores["index"], scores["logits"]):
            logits[index] = values
    return logits, nll / counted if counted else float("nan")


def score(
    model: Any,
    objective: Objective,
    batches: ScoredWindows,
    names: list[str],
    precision: Precision,
    device: torch.device,
    cluster: Cluster = SINGLE,
    lockstep: bool = False,
) -> dict[str, float]:
    """Loss, exact match and F1 (percent) of the best answer to every question of the split."""
    windows, examples, qa = batches.windows, batches.examples, batches.qa
    logits, loss = window_logits(model, batches, len(windows), precision, device, cluster, lockstep)
    answers = read_answers(
        windows, logits, [ex.context for ex in examples], 1, qa.max_answer_length, qa.null_score_diff_threshold
    )
    scores = squad_scores([found[0].text for found in answers], [[text for text, _ in ex.answers] for ex in examples])
    return {"loss": loss, **scores}


# --------------------------------------------------------------------------- evaluate and predict


def evaluate(
    loaded: LoadedModel, config: EvaluateConfig, precision: Precision, device: torch.device, console: Console, cluster: Cluster
) -> dict[str, Any]:
    """SQuAD exact match / F1 of the QA model `loaded` on the SQuAD-layout file `config.data`."""
    examples = read_qa(str(config.data))
    if config.max_batches is not None:
        examples = examples.subset(np.arange(min(len(examples), config.max_batches * config.batch_size)))
    max_length = token_limit(config.seq_len, loaded.model.config, loaded.tokenizer, "seq_len")
    stride = _stride(config.qa, max_length)
    windows, rows = encode(loaded.tokenizer, examples, max_length, stride)
    console.info(
        f"evaluate extractive_qa: {config.model} on {config.data}, {len(examples)} questions in {len(windows)} windows "
        f"of up to {max_length} tokens (doc_stride {stride})"
    )
    pad = loaded.tokenizer.pad_token_id if loaded.tokenizer.pad_token_id is not None else 0
    batches = ExampleBatches({"test": rows}, int(pad), config.batch_size, 1, 0).evaluation("test")
    scores = score(loaded.model, OBJECTIVE, ScoredWindows(batches, windows, examples, config.qa), [], precision, device, cluster)
    return {
        "model": str(config.model), "data": str(config.data), "objective": "extractive_qa", **scores,
        "windows": len(windows), "split_contexts": windows.n_split, "cut_questions": windows.n_cut_questions, "max_length": max_length, "doc_stride": stride,
        "max_answer_length": config.qa.max_answer_length, "null_score_diff_threshold": config.qa.null_score_diff_threshold,
    }  # fmt: skip


def check_predict(config: PredictConfig, loaded: LoadedModel) -> None:
    refuse_source_prefix(config, "an extractive QA model")
    if config.text_pair_field is None:
        raise ConfigError(
            f"{config.model} answers questions on contexts: set text_field to the question's field and text_pair_field to "
            "the context's (e.g. --set text_field=question --set text_pair_field=context)"
        )
    if config.words_field is not None:
        raise ConfigError(f"words_field is for token classifiers; {config.model} is an extractive QA model")
    token_limit(config.max_length, loaded.model.config, loaded.tokenizer, "max_length")


def predict(
    loaded: LoadedModel, records: list[InputRecord], config: PredictConfig, precision: Precision, report: Any
) -> Predictions:
    """One record per input, in input order (see the module docstring)."""
    name = config.input if config.input != "-" else "<stdin>"
    for record in records:
        for field, value in ((config.text_field, record.text), (config.text_pair_field, record.pair)):
            if value is None or not value.strip():
                raise DataError(f"{name}:{record.line}: field {field!r} is empty; give every input a question and a context")
    max_length = token_limit(config.max_length, loaded.model.config, loaded.tokenizer, "max_length")
    stride = _stride(config.qa, max_length)
    windows = encode_qa(loaded.tokenizer, [r.text for r in records], [r.pair or "" for r in records], max_length, stride)
    pad = loaded.tokenizer.pad_token_id if loaded.tokenizer.pad_token_id is not None else 0
    batches = ExampleBatches({"inputs": _as_examples(windows)}, int(pad), config.batch_size, 1, 0).evaluation("inputs")
    logits, _ = window_logits(loaded.model, batches, len(windows), precision, loaded.model.device)
    listed = "top_k" in config.model_fields_set
    qa = config.qa
    found = read_answers(windows, logits, [r.pair or "" for r in records], config.top_k if listed else 1, qa.max_answer_length,
                         qa.null_score_diff_threshold)  # fmt: skip
    report(len(records))
    results = [
        {**answers[0].record(), **({"alternatives": [a.record() for a in answers]} if listed else {})} for answers in found
    ]
    warnings = []
    if windows.n_cut_questions:
        warnings.append(
            f"{windows.n_cut_questions} questions were cut to leave room for qa.doc_stride + 1 context tokens in max_length {max_length}"
        )
    return Predictions(results, warnings)


TASK = Task(
    name="extractive_qa",
    head=HEAD,
    objective=OBJECTIVE,
    evaluate=evaluate,
    predict=predict,
    check_predict=check_predict,
    output_fields=OUTPUT_FIELDS,
    rename_clashes=True,
    finetuning=Finetuning(
        load=load,
        batches=_batches_for_run,
        score=score,
        metric_modes=METRIC_MODES,
        selectable=lambda names: ("f1", "exact_match", "loss"),
        shown_metrics=("f1", "exact_match"),
        load_model=_load_model,
    ),
)
