"""Sequence to sequence (translation, summarization): a model generates a target text per source.

Two kinds of model, one task: an encoder-decoder (T5, BART: the source is the encoder's input, the target the
decoder's labels), or a decoder-only causal LM (a `seqlm pretrain` GPT, Llama, ...) trained on prompt + target,
the prompt the source in a template or the tokenizer's chat template (`seqlm.tasks.seq2seq_prompts`). The kind is
read from `model`'s config; what differs stays in this task's modules: the rows (`encode_examples`), how
generation pads (`seq2seq_generation.generate`), and the saved model's config.json "seqlm" entry, which marks a
decoder-only one (head `prompted_lm`, the prompt format) so evaluate / predict find this task and its prompts.
The objective is one for both (`seqlm.tasks.objectives`: it tells the kinds apart by the batch's shape).

finetune — source/target records (`seqlm.io.seq2seq_records`), sources cut to `training.max_source_length`
and targets (eos-terminated) to `max_target_length`, both counted and reported; batched by `ExampleBatches`
(length-grouped by source), the targets going to the model as `labels` (HF models shift them right into the
decoder's inputs; padding is IGNORE_INDEX). Loss: token cross-entropy summed over target tokens, with
`label_smoothing` (training only), so gradient accumulation is exact. The model is a pretrained seq2seq
checkpoint or one built from scratch (`seqlm.models.seq2seq_models`). Decoder-only: prompts cut to
max_source_length and targets to max_target_length (both counted), rows prompt + target with labels (a per-token
target) IGNORE_INDEX on the prompt; the same loss over the target tokens.
Validation: loss (plain cross-entropy per target token) and, on the first `eval_generate_examples` examples,
BLEU / chrF / ROUGE of generated text against the references (`seqlm.metrics.generation`), with gen_len.
Every rank generates for the same examples (results are identical); only the loss is split across ranks.
evaluate / predict — `seqlm.tasks.seq2seq_inference`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from seqlm.data.batch import Batch
from seqlm.data.example_batches import ExampleBatches
from seqlm.errors import ConfigError
from seqlm.io import records
from seqlm.io.seq2seq_records import Seq2SeqRecords, read_seq2seq
from seqlm.metrics.scoring import score_batches
from seqlm.models.heads import MARKER_KEY, PROMPTED_HEAD
from seqlm.models.loading import max_positions
from seqlm.models.seq2seq_models import decoder_only, load_seq2seq
from seqlm.runtime.device import Precision
from seqlm.runtime.distributed import SINGLE, Cluster
from seqlm.tasks import seq2seq_inference
from seqlm.tasks.objectives import OBJECTIVES
from seqlm.tasks.seq2seq_generation import GenerationCheck, encode_examples, encode_inputs, generated_scores, stop_ids
from seqlm.tasks.seq2seq_prompts import PromptFormat
from seqlm.tasks.task import Finetuning, Task
from seqlm.training.objective import Objective

GENERATION_METRICS = ("bleu", "chrf", "rouge1", "rouge2", "rougeL", "rougeLsum")
METRIC_MODES = {"loss": "min", **{name: "max" for name in GENERATION_METRICS}}


# --------------------------------------------------------------------------- data


def load(data: Any) -> tuple[dict[str, Seq2SeqRecords], list[str]]:
    """{"train", "validation"[, "test"]}; seq2seq has no label names."""

    def read(location: str) -> Seq2SeqRecords:
        return read_seq2seq(location, data.format, data.source_field, data.target_field, data.references_field, data.source_prefix)

    return records.read_splits(data, read), []


class Seq2SeqBatches:
    """`ExampleBatches` whose evaluation batches carry the generation check (see `GenerationCheck`)."""

    def __init__(self, batches: ExampleBatches, splits: dict[str, Seq2SeqRecords], tokenizer: Any, config: Any, prompt: PromptFormat | None):
        self.examples, self.splits, self.tokenizer, self.config, self.prompt = batches, splits, tokenizer, config, prompt
        self.batches_per_epoch, self.steps_per_epoch = batches.batches_per_epoch, batches.steps_per_epoch

    def train(self, step: int, micro: int) -> Batch:
        return self.examples.train(step, micro)

    def evaluation(self, split: str) -> GenerationCheck:
        training = self.config.training
        n = min(training.eval_generate_examples, len(self.splits[split]))
        chosen = self.splits[split].subset(range(n))
        sources, _ = encode_inputs(self.tokenizer, self.prompt, [e.source for e in chosen], training.max_source_length, SOURCE_KEY)
        return GenerationCheck(
            self.examples.evaluation(split), sources, [e.references for e in chosen], self.config.generation,
            self.tokenizer, training.batch_size, training.seed,
        )  # fmt: skip


def _batches_for_run(
    splits: dict[str, Seq2SeqRecords], names: list[str], tokenizer: Any, config: Any, world_size: int, log: Callable[[str], None]
) -> Seq2SeqBatches:
    training = config.training
    prompt = _prompt_format(config, tokenizer, decoder_only(config.model, config.trust_remote_code))
    if prompt is not None:
        log(f"decoder-only: {config.model} is trained on prompt + target, the prompt from {prompt.describe()}")
    what = "sources" if prompt is None else "prompts"
    encoded = {}
    for split, examples in splits.items():
        encoded[split], cut_sources, cut_targets = encode_examples(
            tokenizer, prompt, examples, training.max_source_length, training.max_target_length, SOURCE_KEY
        )  # fmt: skip
        if cut_sources or cut_targets:
            log(
                f"{split}: {cut_sources} of {len(examples)} {what} are longer than training.max_source_length "
                f"({training.max_source_length} tokens) and {cut_targets} targets longer than training.max_target_length "
                f"({training.max_target_length}); they are cut"
            )
    encoded["train"].targets["label_smoothing"] = np.full(len(splits["train"]), training.label_smoothing, dtype=np.float32)
    batches = ExampleBatches.for_training(encoded, int(tokenizer.pad_token_id), training, world_size)
    return Seq2SeqBatches(batches, splits, tokenizer, config, prompt)


def score(
    model: Any, objective: Objective, check: GenerationCheck, names: list[str], precision: Precision, device: torch.device,
    cluster: Cluster = SINGLE, lockstep: bool = False,
) -> dict[str, float]:
    """loss and perplexity over every example; BLEU, chrF, ROUGE and gen_len over the generated ones."""
    sums = score_batches(model, objective, check, precision, device, cluster, lockstep)
    metrics = {"loss": sums["loss"], "perplexity": sums["perplexity"], "target_tokens": sums["tokens"]}
    if check.sources:
        texts, scores = generated_scores(model, check, precision)
        metrics.update({key: float(scores[key]) for key in (*GENERATION_METRICS, "gen_len")})
        metrics["generated"] = len(texts)
    return metrics


def load_model(source: Any, config: Any) -> tuple[Any, Any, list[str]]:
    """The model to fine-tune, refused (ConfigError) when a length setting exceeds its positions (BART; T5 has no
    limit; a decoder-only model reads prompt and target as one sequence). `data.source_prefix` goes into its config
    as `prefix` (saved in config.json, read by HF pipelines), so `seqlm evaluate` / `predict` prepend the same text
    by default. A decoder-only model also gets the config.json "seqlm" entry that marks it (head `prompted_lm`, the
    prompt format) and a generation config that pads and stops as training taught it."""
    model, tokenizer, new_weights = load_seq2seq(source if not hasattr(source, "is_dir") else str(source), config.trust_remote_code)
    model.config.prefix = config.data.source_prefix
    training = config.training
    positions = max_positions(model.config)
    prompt = _prompt_format(config, tokenizer, not model.config.is_encoder_decoder)
    if prompt is None:
        for key in ("max_source_length", "max_target_length"):
            requested = getattr(training, key)
            if positions is not None and requested > positions:
                fix = " (or raise model.max_len)" if not isinstance(config.model, str) else ""
                raise ConfigError(
                    f"training.{key} ({requested}) exceeds the model's {positions} positions (max_position_embeddings); "
                    f"set it to {positions} or less{fix}"
                )
        return model, tokenizer, new_weights
    if positions is not None and training.max_source_length + training.max_target_length > positions:
        raise ConfigError(
            f"training.max_source_length + max_target_length ({training.max_source_length} + {training.max_target_length}) "
            f"exceeds the {positions} positions of {config.model}, a decoder-only model that reads prompt and target as one "
            "sequence; lower them"
        )
    setattr(model.config, MARKER_KEY, prompt.metadata())
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    generation = model.generation_config
    generation.pad_token_id = tokenizer.pad_token_id
    generation.eos_token_id = sorted(stop_ids(model, tokenizer))  # the target's eos is the tokenizer's
    return model, tokenizer, new_weights


def _prompt_format(config: Any, tokenizer: Any, decoder: bool) -> PromptFormat | None:
    """The prompt format of a decoder-only model (None for an encoder-decoder, which has no prompt_template)."""
    if not decoder:
        if config.data.prompt_template is not None:
            raise ConfigError(
                f"data.prompt_template is for decoder-only models (a causal LM as model); {config.model} is an "
                "encoder-decoder: drop it, or use data.source_prefix"
            )
        return None
    return PromptFormat.choose(config.data.prompt_template, tokenizer)


SOURCE_KEY = "training.max_source_length"

TASK = Task(
    name="seq2seq",
    head="seq2seq_lm",
    other_heads=(PROMPTED_HEAD,),
    objective=OBJECTIVES["seq2seq"],
    evaluate=seq2seq_inference.evaluate,
    predict=seq2seq_inference.predict,
    check_predict=seq2seq_inference.check_predict,
    output_fields=frozenset(seq2seq_inference.OUTPUT_FIELDS),
    takes_messages=True,
    finetuning=Finetuning(
        load=load,
        batches=_batches_for_run,
        score=score,
        metric_modes=METRIC_MODES,
        selectable=lambda names: (*GENERATION_METRICS, "loss"),
        shown_metrics=("loss", "bleu"),
        load_model=load_model,
    ),
)
