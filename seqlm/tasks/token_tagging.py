"""`seqlm predict` for token classifiers (`*ForTokenClassification` checkpoints): tags per word, and entities.

An input is raw text, split into words by `word_split` (whitespace, or the tokenizer's own
pre-tokenizer, which also splits off punctuation as the token-classification pipeline does), or a
JSON Lines record whose `words_field` holds the words already split. Words are cut into pieces as
in training (`seqlm.data.word_windows`: windows of at most `max_length` pieces at word boundaries,
so no word of a long input is lost); a word's tag is the argmax at its first piece and its score
that tag's softmax probability.

Record: {"input": the text (pre-split words joined by spaces), "words": [{"word", "tag", "score",
"start", "end"}] (character offsets into "input"), "entities": [{"type", "text", "start", "end",
"score", "first_word", "last_word"}] for IOB-style tag sets (grouped as
`transformers.pipeline("token-classification", aggregation_strategy="first")` groups them, see
`seqlm.metrics.entity_spans`), else no "entities"}. An input without words gives empty lists. An input of
more than 256 Ki characters is tagged on its own, a group of words at a time, and its lists are written as
they are made (`seqlm.tasks.long_input_tagging`): memory a few times its size, not a hundred.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from seqlm.config.inference import PredictConfig
from seqlm.data.example_batches import EncodedExamples, ExampleBatches
from seqlm.data.word_windows import WordWindows, encode_words, word_predictions
from seqlm.errors import ConfigError
from seqlm.io.predict_inputs import InputRecord
from seqlm.io.tagged_words import split_words
from seqlm.metrics.entity_spans import entity_spans
from seqlm.metrics.sequence_labelling import detect_scheme
from seqlm.models.loading import LoadedModel, model_label_names, token_limit
from seqlm.runtime.device import Precision
from seqlm.tasks.long_input_tagging import LONG_INPUT_CHARS, tag_words, tagged_record, word_spans
from seqlm.tasks.objectives import refuse_chat_template, refuse_source_prefix
from seqlm.tasks.task import Predictions

OUTPUT_FIELDS = frozenset({"input", "words", "entities"})


def check_predict(config: PredictConfig, loaded: LoadedModel) -> None:
    refuse_source_prefix(config, "a token classifier")
    refuse_chat_template(config, "a token classifier")
    if config.text_pair_field is not None:
        raise ConfigError(f"text_pair_field is for sequence classifiers; {config.model} is a token classifier")
    token_limit(config.max_length, loaded.model.config, loaded.tokenizer, "max_length")  # beyond the positions: ConfigError


def predict(loaded: LoadedModel, records: list[InputRecord], config: PredictConfig, precision: Precision, report: Any) -> Predictions:
    """One record per input, in input order (see the module docstring)."""
    names = model_label_names(loaded.model.config, config.model)
    scheme = detect_scheme(names)
    max_length = token_limit(config.max_length, loaded.model.config, loaded.tokenizer, "max_length")
    long = {i for i, record in enumerate(records) if len(record.text) > LONG_INPUT_CHARS}
    results = _predict_short([r for i, r in enumerate(records) if i not in long], loaded, config, precision, report, names, scheme, max_length)
    for i in sorted(long):  # one at a time, a group of words at a time: see long_input_tagging
        tagged = tag_words(
            records[i].text, word_spans(records[i], config.word_split, loaded.tokenizer),
            lambda words: encode_words(loaded.tokenizer, [words], max_length),
            lambda windows: _window_probabilities(loaded, windows, config.batch_size, precision),
            max(8192, 4 * max_length),  # more words than two windows hold: each group finishes a window
        )  # fmt: skip
        results.insert(i, tagged_record(records[i].text, tagged, names, scheme))
    report(len(records))
    return Predictions(results)


def _predict_short(
    records: list[InputRecord], loaded: LoadedModel, config: PredictConfig, precision: Precision, report: Any,
    names: list[str], scheme: str | None, max_length: int,
) -> list[dict[str, Any]]:
    """The records of inputs short enough to be batched together, in input order."""
    texts, words, offsets = [], [], []
    for record in records:
        text, split = _words_of(record, config.word_split, loaded.tokenizer)
        texts.append(text)
        words.append([word for word, _, _ in split])
        offsets.append([(start, end) for _, start, end in split])
    present = [i for i, sentence in enumerate(words) if sentence]
    probabilities = _word_probabilities(loaded, [words[i] for i in present], max_length, config.batch_size, precision, report)
    results: list[dict[str, Any]] = [{"input": text, "words": [], **({"entities": []} if scheme else {})} for text in texts]
    for i, probs in zip(present, probabilities):
        tag_ids, scores = probs.argmax(axis=-1), probs.max(axis=-1)
        tags = [names[t] for t in tag_ids]
        results[i]["words"] = [
            {"word": word, "tag": tag, "score": float(score), "start": start, "end": end}
            for word, tag, score, (start, end) in zip(words[i], tags, scores, offsets[i])
        ]
        if scheme:
            results[i]["entities"] = entity_spans(words[i], offsets[i], tags, scores.tolist(), texts[i])
    return results


def _words_of(record: InputRecord, rule: str, tokenizer: Any) -> tuple[str, list[tuple[str, int, int]]]:
    """The input's text and its words with character offsets into it."""
    if record.words is None:
        return record.text, split_words(record.text, rule, tokenizer)
    split, position = [], 0
    for word in record.words:
        split.append((word, position, position + len(word)))
        position += len(word) + 1
    return " ".join(record.words), split


def window_examples(windows: WordWindows, for_scoring: bool = False) -> EncodedExamples:
    """Windows as examples for `ExampleBatches` (training, validation, evaluate, predict alike); scored splits
    also carry where each word's prediction is read and the sentence of each window."""
    rows = {"input_ids": windows.input_ids, "attention_mask": windows.attention_mask}
    if windows.token_type_ids is not None:
        rows["token_type_ids"] = windows.token_type_ids
    targets: dict[str, Any] = {"labels": windows.labels} if windows.labels is not None else {}  # predict: no tags
    if for_scoring:
        targets["first_piece"] = [first.astype(np.int64) for first in windows.first_piece]
        targets["sentence"] = windows.sentence
    return EncodedExamples(rows, targets, truncated=windows.n_cut_words)


def _word_probabilities(
    loaded: LoadedModel, words: list[list[str]], max_length: int, batch_size: int, precision: Precision, report: Any
) -> list[np.ndarray]:
    """Per sentence, a (words, tags) array of softmax probabilities read at each word's first piece."""
    if not words:
        return []
    windows = encode_words(loaded.tokenizer, words, max_length)
    piece_probs = _window_probabilities(loaded, windows, batch_size, precision, lambda done: report(int(done * len(words))))
    return word_predictions(windows, piece_probs, [len(sentence) for sentence in words])


def _window_probabilities(
    loaded: LoadedModel, windows: WordWindows, batch_size: int, precision: Precision, report: Any = None
) -> list[np.ndarray]:
    """Per window, a (pieces, tags) array of softmax probabilities; `report(share done)` after each batch."""
    tokenizer, model = loaded.tokenizer, loaded.model
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    piece_probs: list[np.ndarray] = [np.empty(0)] * len(windows.input_ids)
    done = 0
    for batch in ExampleBatches({"inputs": window_examples(windows)}, int(pad_id), batch_size, 1, 0).evaluation("inputs"):
        with precision.inference():
            logits = model(**{key: value.to(model.device) for key, value in batch.inputs.items()}).logits
        probs = logits.float().softmax(-1).cpu().numpy()  # fp32 softmax: autocast logits may be bf16
        for row, index in enumerate(batch.targets["index"].tolist()):
            piece_probs[index] = probs[row]
        done += len(probs)
        if report is not None:
            report(done / len(piece_probs))
    return piece_probs
