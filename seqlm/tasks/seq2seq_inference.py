"""`seqlm evaluate` and `seqlm predict` for seq2seq models (`*ForConditionalGeneration`: T5, BART, ...).

Sources are cut to a limit (`evaluate: seq_len`, `predict: max_length`; default: the model's positions, else
the tokenizer's limit, else none, as for T5) and counted. Generation follows the `generation:` section
(`seqlm.tasks.seq2seq_generation.generate`: length-sorted batches, input order restored).

Sources get `source_prefix` prepended; null (the default): the prefix the model was fine-tuned with, which
`seqlm finetune` saves as `prefix` in its config.json (where HF pipelines read it too), else none.

evaluate — `config.data` holds source/target records (`source_field`, `target_field`, `references_field`,
`source_prefix`); metrics.json: the teacher-forced loss and perplexity per target token (when every example
has a target), sacreBLEU BLEU / chrF with their signatures, ROUGE-1/2/L/Lsum, gen_len (tokens).
predict — one record per input, in input order: {"input" (as given, without the prefix), "output"}, or {"input", "outputs"} (a list, best
first) with `generation.num_return_sequences` > 1; with beam search also "score" / "scores" (the
length-penalised log-probability of each output).
"""

from __future__ import annotations

from typing import Any

import torch

from seqlm.config.schema import EvaluateConfig, PredictConfig
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
from seqlm.tasks.objectives import OBJECTIVES
from seqlm.tasks.seq2seq_generation import encode_sources, encode_split, generate, source_limit
from seqlm.tasks.task import Predictions

OUTPUT_FIELDS = ("input", "output", "outputs", "score", "scores")
TARGET_LIMIT = 1024  # teacher-forced loss in evaluate: targets are scored whole up to this many tokens


def evaluate(
    loaded: LoadedModel, config: EvaluateConfig, precision: Precision, device: torch.device, console: Console, cluster: Cluster
) -> dict[str, Any]:
    """Metrics of the seq2seq model `loaded` on the source/target file `config.data` (see the module docstring)."""
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
    limit = source_limit(config.seq_len, loaded.model.config, tokenizer)
    console.info(f"evaluate seq2seq: {config.model} on {config.data}, {len(examples)} examples, sources cut at {limit or 'no limit'} tokens")
    metrics: dict[str, Any] = {"model": str(config.model), "data": str(config.data), "objective": "seq2seq", "examples": len(examples)}
    if all(e.target is not None for e in examples):
        encoded, _, _ = encode_split(tokenizer, examples, limit, TARGET_LIMIT)
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        batches = ExampleBatches({"test": encoded}, int(pad_id), config.batch_size, 1, 0).evaluation("test")
        sums = score_batches(loaded.model, OBJECTIVES["seq2seq"], batches, precision, device, cluster)
        metrics.update(loss=sums["loss"], perplexity=sums["perplexity"], target_tokens=sums["tokens"])
    sources, cut = encode_sources(tokenizer, [e.source for e in examples], limit)
    generated = generate(loaded.model, tokenizer, sources, config.generation, config.batch_size, precision, config.seed)
    best = [candidates[0] for candidates in generated]
    scores = generation_scores([g.text for g in best], [e.references for e in examples], [g.token_ids for g in best], tokenizer.pad_token_id)
    metrics.update({key: value for key, value in scores.items() if key != "examples"})
    metrics.update(truncated_sources=cut, source_prefix=source_prefix(config, loaded), generation=config.generation.model_dump())
    return metrics


def predict(loaded: LoadedModel, records: list[InputRecord], config: PredictConfig, precision: Precision, report: Any) -> Predictions:
    limit = source_limit(config.max_length, loaded.model.config, loaded.tokenizer)
    prefix = source_prefix(config, loaded)
    sources, cut = encode_sources(loaded.tokenizer, [prefix + r.text for r in records], limit)
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


def source_prefix(config: EvaluateConfig | PredictConfig, loaded: LoadedModel) -> str:
    """`config.source_prefix`, else the model's saved `prefix` (see the module docstring), else ""."""
    if config.source_prefix is not None:
        return config.source_prefix
    saved = getattr(loaded.model.config, "prefix", None)
    return saved if isinstance(saved, str) else ""


def check_predict(config: PredictConfig, loaded: LoadedModel) -> None:
    """Settings for other tasks are refused, not ignored."""
    if config.text_pair_field is not None:
        raise ConfigError(f"text_pair_field is for sequence classifiers; {config.model} is a seq2seq model")
    if config.words_field is not None:
        raise ConfigError(f"words_field is for token classifiers; {config.model} is a seq2seq model")
