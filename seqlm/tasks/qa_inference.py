"""`seqlm evaluate` and `seqlm predict` for extractive QA models (`*ForQuestionAnswering`; see `seqlm.tasks.extractive_qa`).

evaluate — SQuAD exact match / F1 (percent) on a SQuAD-layout file (`id`, `question`, `context`, `answers`).
predict — `text_field` is the question, `text_pair_field` the context; per input {"answer", "start", "end",
"score"} (character offsets into the context, `context[start:end] == answer`), and "alternatives" (the `top_k`
best answers) when `top_k` is set. An empty question or context is a DataError at its line.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from seqlm.config.inference import EvaluateConfig, PredictConfig
from seqlm.console import Console
from seqlm.data.example_batches import ExampleBatches
from seqlm.data.qa_windows import encode_qa
from seqlm.errors import ConfigError, DataError
from seqlm.io.predict_inputs import InputRecord
from seqlm.io.qa_records import read_qa
from seqlm.models.loading import LoadedModel, token_limit
from seqlm.runtime.device import Precision
from seqlm.runtime.distributed import Cluster
from seqlm.tasks.objectives import refuse_chat_template, refuse_source_prefix
from seqlm.tasks.qa_answers import read_answers
from seqlm.tasks.qa_scoring import OBJECTIVE, ScoredWindows, as_examples, doc_stride_for, encode, score, window_logits
from seqlm.tasks.task import Predictions

OUTPUT_FIELDS = frozenset({"answer", "start", "end", "score", "alternatives"})


def evaluate(
    loaded: LoadedModel, config: EvaluateConfig, precision: Precision, device: torch.device, console: Console, cluster: Cluster
) -> dict[str, Any]:
    """SQuAD exact match / F1 of the QA model `loaded` on the SQuAD-layout file `config.data`."""
    examples = read_qa(str(config.data))
    if config.max_batches is not None:
        examples = examples.subset(np.arange(min(len(examples), config.max_batches * config.batch_size)))
    max_length = token_limit(config.seq_len, loaded.model.config, loaded.tokenizer, "seq_len")
    stride = doc_stride_for(config.qa, max_length)
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
        "windows": len(windows), "split_contexts": windows.n_split, "cut_questions": windows.n_cut_questions,
        "max_length": max_length, "doc_stride": stride,
        "max_answer_length": config.qa.max_answer_length, "null_score_diff_threshold": config.qa.null_score_diff_threshold,
    }  # fmt: skip


def check_predict(config: PredictConfig, loaded: LoadedModel) -> None:
    refuse_source_prefix(config, "an extractive QA model")
    refuse_chat_template(config, "an extractive QA model")
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
    stride = doc_stride_for(config.qa, max_length)
    windows = encode_qa(loaded.tokenizer, [r.text for r in records], [r.pair or "" for r in records], max_length, stride)
    pad = loaded.tokenizer.pad_token_id if loaded.tokenizer.pad_token_id is not None else 0
    batches = ExampleBatches({"inputs": as_examples(windows)}, int(pad), config.batch_size, 1, 0).evaluation("inputs")
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
