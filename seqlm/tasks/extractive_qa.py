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
The objective and the scoring are in `seqlm.tasks.qa_scoring`; evaluate (the same scores on a SQuAD-layout file)
and predict (an answer with its character offsets per question + context) in `seqlm.tasks.qa_inference`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from seqlm.data.batch import Batch
from seqlm.data.example_batches import ExampleBatches
from seqlm.data.qa_windows import QAWindows
from seqlm.io.qa_records import QAExamples, QAFields, read_qa
from seqlm.io.records import read_splits
from seqlm.models.fine_tuning import load_with_head
from seqlm.tasks import qa_inference
from seqlm.tasks.qa_scoring import OBJECTIVE, ScoredWindows, doc_stride_for, encode, score
from seqlm.tasks.task import Finetuning, Task

HEAD = "question_answering"
METRIC_MODES = {"loss": "min", "exact_match": "max", "f1": "max"}


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


def _batches_for_run(
    splits: dict[str, QAExamples], names: list[str], tokenizer: Any, config: Any, world_size: int, log: Callable[[str], None]
) -> QABatches:
    training = config.training
    stride = doc_stride_for(config.qa, training.max_length)
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
    batches = ExampleBatches.for_training(rows, pad, training, world_size)
    return QABatches(batches, encoded, config.qa)


def _load_model(source: Any, config: Any) -> tuple[Any, Any, list[str]]:
    return load_with_head(str(source), HEAD, ["start", "end"], config.training.max_length, config.trust_remote_code)


TASK = Task(
    name="extractive_qa",
    head=HEAD,
    objective=OBJECTIVE,
    evaluate=qa_inference.evaluate,
    predict=qa_inference.predict,
    check_predict=qa_inference.check_predict,
    output_fields=qa_inference.OUTPUT_FIELDS,
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
