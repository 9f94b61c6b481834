"""`seqlm evaluate` and `seqlm predict` for seq2seq models: encoder-decoders (`*ForConditionalGeneration`: T5,
BART, ...) and decoder-only models a seq2seq finetune trained (head `prompted_lm`: a causal LM whose config.json
records its prompt format, applied here as in training; `seqlm.tasks.seq2seq_prompts`).

Sources are cut to a limit (`evaluate: seq_len`, `predict: max_length`; default: the model's positions, else
the tokenizer's limit, else none, as for T5; decoder-only: the model's positions minus
`generation.max_new_tokens`, a prompt keeping its template's end) and counted. Generation follows the `generation:` section
(`seqlm.tasks.seq2seq_generation.generate`: length-sorted batches, input order restored).

Sources get `source_prefix` prepended; null (the default): the prefix the model was fine-tuned with, which
`seqlm finetune` saves as `prefix` in its config.json (where HF pipelines read it too), else none.

evaluate — `config.data` holds source/target records (or, for a decoder-only model, the prompt/completion or
chat messages records `task: causal_lm` trains on: `seqlm.tasks.completion_evaluate`) (`source_field`, `target_field`, `references_field`,
`source_prefix`); metrics.json: the teacher-forced loss and perplexity per target token (when every example
has a target), sacreBLEU BLEU / chrF with their signatures, ROUGE-1/2/L/Lsum, gen_len (tokens).
predict — one record per input, in input order: {"input" (as given, without the prefix), "output"}, or {"input", "outputs"} (a list, best
first) with `generation.num_return_sequences` > 1; with beam search also "score" / "scores" (the
length-penalised log-probability of each output).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from seqlm.config.inference import EvaluateConfig, PredictConfig
from seqlm.console import Console
from seqlm.data.example_batches import ExampleBatches
from seqlm.errors import ConfigError, DataError
from seqlm.io.predict_inputs import InputRecord
from seqlm.io.seq2seq_records import read_seq2seq
from seqlm.metrics.generation import generation_scores
from seqlm.metrics.scoring import score_batches
from seqlm.models.loading import LoadedModel
from seqlm.runtime.device import Precision
from seqlm.runtime.distributed import Cluster
from seqlm.tasks.objectives import OBJECTIVES, refuse_chat_template
from seqlm.tasks.seq2seq_generation import encode_examples, encode_inputs, generate, source_limit
from seqlm.tasks.seq2seq_prompts import PromptFormat
from seqlm.tasks.task import Predictions

OUTPUT_FIELDS = ("input", "output", "outputs", "score", "scores")
TARGET_LIMIT = 1024  # teacher-forced loss in evaluate: targets are scored whole up to this many tokens


def evaluate(
    loaded: LoadedModel, config: EvaluateConfig, precision: Precision, device: torch.device, console: Console, cluster: Cluster
) -> dict[str, Any]:
    """Metrics of the seq2seq model `loaded` on the source/target file `config.data` (see the module docstring); a
    decoder-only model's prompt/completion or messages records: `seqlm.tasks.completion_evaluate`."""
    from seqlm.tasks import completion_evaluate  # here: it builds on the causal_lm task, which serves evaluate from this module

    if PromptFormat.of_model(loaded.model.config) is not None and completion_evaluate.reads_completions(Path(config.data), config.source_field):
        return completion_evaluate.evaluate(loaded, config, precision, device, console, cluster)
    examples = read_seq2seq(
        str(config.data), "auto", config.source_field, config.target_field, config.references_field, source_prefix(config, loaded),
        require_target=False, config_section="",
    )  # fmt: skip
    if config.max_batches is not None:
        examples = examples.subset(range(min(len(examples), config.max_batches * config.batch_size)))
    unscored = [e.where for e in examples if not e.references]
    if unscored:
        raise DataError(f"{unscored[0]}: no target and no references to score against; give every example one")
    tokenizer = loaded.tokenizer
    prompt = PromptFormat.of_model(loaded.model.config)
    limit = _input_limit(config.seq_len, loaded, prompt, config.generation.max_new_tokens, "seq_len")
    shown = f"prompts ({prompt.describe()})" if prompt is not None else "sources"
    console.info(f"evaluate seq2seq: {config.model} on {config.data}, {len(examples)} examples, {shown} cut at {limit or 'no limit'} tokens")
    metrics: dict[str, Any] = {"model": str(config.model), "data": str(config.data), "objective": "seq2seq", "examples": len(examples)}
    if all(e.target is not None for e in examples):
        encoded, _, _ = encode_examples(tokenizer, prompt, examples, limit, _target_limit(loaded, prompt, limit), "seq_len")
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        batches = ExampleBatches({"test": encoded}, int(pad_id), config.batch_size, 1, 0).evaluation("test")
        sums = score_batches(loaded.model, OBJECTIVES["seq2seq"], batches, precision, device, cluster)
        metrics.update(loss=sums["loss"], perplexity=sums["perplexity"], target_tokens=sums["tokens"])
    sources, cut = encode_inputs(tokenizer, prompt, [e.source for e in examples], limit, "seq_len")
    generated = generate(loaded.model, tokenizer, sources, config.generation, config.batch_size, precision, config.seed)
    best = [candidates[0] for candidates in generated]
    scores = generation_scores([g.text for g in best], [e.references for e in examples], [g.token_ids for g in best], tokenizer.pad_token_id)
    metrics.update({key: value for key, value in scores.items() if key != "examples"})
    metrics.update(truncated_sources=cut, source_prefix=source_prefix(config, loaded), generation=config.generation.model_dump())
    return metrics


def predict(loaded: LoadedModel, records: list[InputRecord], config: PredictConfig, precision: Precision, report: Any) -> Predictions:
    prompt = PromptFormat.of_model(loaded.model.config)
    limit = _input_limit(config.max_length, loaded, prompt, config.generation.max_new_tokens, "max_length")
    sources, cut = _prompt_ids(loaded, prompt, records, source_prefix(config, loaded), limit)
    generated = generate(loaded.model, loaded.tokenizer, sources, config.generation, config.batch_size, precision, config.seed, report)
    results = []
    for record, candidates in zip(records, generated):
        result: dict[str, Any] = {"input": record.text}
        beams = candidates[0].score is not None
        if len(candidates) == 1:
            result["output"] = candidates[0].text
            if beams:
                result["score"] = candidates[0].score
        else:
            result["outputs"] = [c.text for c in candidates]
            if beams:
                result["scores"] = [c.score for c in candidates]
        results.append(result)
    warnings = [f"{cut} input(s) were longer than {limit} tokens and were cut to their first {limit}"] if cut else []
    return Predictions(results, warnings)


def _prompt_ids(loaded: LoadedModel, prompt: PromptFormat | None, records: list[InputRecord], prefix: str, limit: int | None) -> tuple[list[list[int]], int]:
    """Each record's prompt (or source) ids and how many were cut. A chat input is rendered by the tokenizer's chat
    template with the generation prompt (a model trained on it: DataError otherwise), cut keeping its end (the
    latest turns); the others as in training (`encode_inputs`)."""
    tokenizer, ids, cut = loaded.tokenizer, [[] for _ in records], 0
    plain = [index for index, record in enumerate(records) if record.messages is None]
    if plain:
        encoded, cut = encode_inputs(tokenizer, prompt, [prefix + records[i].text for i in plain], limit, "max_length")
        for index, row in zip(plain, encoded):
            ids[index] = row
    for index, record in enumerate(records):
        if record.messages is None:
            continue
        if prompt is None or prompt.template is not None:
            how = "an encoder-decoder" if prompt is None else f"trained on prompt template {prompt.template!r}"
            raise DataError(f"input line {record.line}: a messages input needs a model trained on its tokenizer's chat template; "
                            f"{loaded.path} is {how}: give text inputs")  # fmt: skip
        text = tokenizer.apply_chat_template(record.messages, tokenize=False, add_generation_prompt=True)
        row = tokenizer(text, add_special_tokens=False)["input_ids"]  # the rendering holds its special tokens
        if limit is not None and len(row) > limit:
            row, cut = row[len(row) - limit :], cut + 1
        ids[index] = row
    return ids, cut


def source_prefix(config: EvaluateConfig | PredictConfig, loaded: LoadedModel) -> str:
    """`config.source_prefix`, else the model's saved `prefix` (see the module docstring), else ""."""
    if config.source_prefix is not None:
        return config.source_prefix
    saved = getattr(loaded.model.config, "prefix", None)
    return saved if isinstance(saved, str) else ""


def _input_limit(requested: int | None, loaded: LoadedModel, prompt: PromptFormat | None, new_tokens: int, key: str) -> int | None:
    """Source tokens (see the module docstring); a decoder-only model's prompt and new tokens share its positions."""
    if prompt is None:
        return source_limit(requested, loaded.model.config, loaded.tokenizer)
    positions = loaded.max_positions
    if positions is None:
        return requested
    if requested is None and positions - new_tokens < 1:
        raise ConfigError(f"generation.max_new_tokens ({new_tokens}) leaves no room for a prompt in the model's {positions} positions; lower it")
    if requested is not None and requested + new_tokens > positions:
        raise ConfigError(
            f"{key} ({requested}) + generation.max_new_tokens ({new_tokens}) exceeds the model's {positions} positions; lower them"
        )
    return requested if requested is not None else positions - new_tokens


def _target_limit(loaded: LoadedModel, prompt: PromptFormat | None, source_limit: int | None) -> int:
    """Target tokens the teacher-forced loss scores: TARGET_LIMIT, for a decoder-only model within its positions."""
    positions = loaded.max_positions
    if prompt is None or positions is None or source_limit is None:
        return TARGET_LIMIT
    return max(2, min(TARGET_LIMIT, positions - source_limit))


def check_predict(config: PredictConfig, loaded: LoadedModel) -> None:
    """Settings for other tasks are refused, not ignored."""
    refuse_chat_template(config, "a seq2seq model, which applies the prompt format it was fine-tuned with (chat inputs: messages)")
    if config.text_pair_field is not None:
        raise ConfigError(f"text_pair_field is for sequence classifiers; {config.model} is a seq2seq model")
    if config.words_field is not None:
        raise ConfigError(f"words_field is for token classifiers; {config.model} is a seq2seq model")
