"""Extractive QA scoring, shared by `seqlm.tasks.extractive_qa` (validation) and `seqlm.tasks.qa_inference`.

- `OBJECTIVE`: the span loss. Targets: "labels" holds each window's start token and "end_positions" its end
  token (the start is named "labels" so that the loop's rule for a rank left without a row, a zero "weights"
  entry, applies unchanged). Loss per window: (cross-entropy of the start + of the end) / 2, padding masked out.
- `encode(tokenizer, examples, max_length, doc_stride)`: windows (`seqlm.data.qa_windows`) and the same as
  `ExampleBatches` examples; `ScoredWindows`: evaluation batches that carry their windows and questions.
- `window_logits`: each window's start/end logits from a model, in window order; `score`: loss and SQuAD
  exact match / F1 (percent) of the best answer to every question (`seqlm.tasks.qa_answers`, `seqlm.metrics.squad`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from seqlm.data.batch import Batch
from seqlm.data.example_batches import EncodedExamples
from seqlm.data.masking import IGNORE_INDEX
from seqlm.data.qa_windows import QAWindows, default_stride, encode_qa
from seqlm.io.qa_records import QAExamples
from seqlm.metrics.scoring import batch_scores
from seqlm.metrics.squad import squad_scores
from seqlm.runtime.device import Precision
from seqlm.runtime.distributed import SINGLE, Cluster
from seqlm.tasks.qa_answers import read_answers
from seqlm.training.objective import Objective

_PADDING_LOGIT = -1e9  # far below any real logit: exp() of it is 0, and its gradient too

# --------------------------------------------------------------------------- objective


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


class ScoredWindows(list):
    """The evaluation batches of one split, with what reading its answers needs."""

    def __init__(self, batches: list[Batch], windows: QAWindows, examples: QAExamples, qa: Any):
        super().__init__(batches)
        self.windows, self.examples, self.qa = windows, examples, qa


def encode(
    tokenizer: Any, examples: QAExamples, max_length: int, doc_stride: int, labelled: bool = True
) -> tuple[QAWindows, EncodedExamples]:
    """The windows of `examples` and the same as `ExampleBatches` examples (with start/end targets when `labelled`)."""
    spans = [(ex.answers[0][1], ex.answers[0][1] + len(ex.answers[0][0])) if ex.answers else None for ex in examples]
    windows = encode_qa(
        tokenizer, [ex.question for ex in examples], [ex.context for ex in examples], max_length, doc_stride,
        spans if labelled else None,
    )  # fmt: skip
    return windows, as_examples(windows)


def as_examples(windows: QAWindows) -> EncodedExamples:
    rows = {"input_ids": windows.input_ids, "attention_mask": windows.attention_mask}
    if windows.token_type_ids is not None:
        rows["token_type_ids"] = windows.token_type_ids
    targets = {}
    if windows.start_positions is not None and windows.end_positions is not None:
        targets = {"labels": windows.start_positions, "end_positions": windows.end_positions}
    return EncodedExamples(rows, targets)


def doc_stride_for(qa: Any, max_length: int) -> int:
    return qa.doc_stride if qa.doc_stride is not None else default_stride(max_length)


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
