"""Generation fine-tuning of a causal LM (`task: causal_lm`): prompt/completion and chat records, the loss on the
completions (or on every token, `data.loss_on: all`); or continued pretraining on plain text (`data.format: text`).

The registry key is `causal_lm`, as the finetune config names it; the module `seqlm.tasks.causal_lm` is the `clm`
pretraining objective's evaluate / predict (a different key), so this task lives here.

The trained model is a decoder-only seq2seq model to the rest of seqlm: `load_model` gives it the same config.json
"seqlm" entry as `task: seq2seq` on a causal LM (head `prompted_lm`; the prompt format: the tokenizer's chat
template when it has one, else the prompt as written, template "{source}"), so `seqlm evaluate` / `predict` serve
it with the seq2seq task's batched left-padded generation, and the prompts they build are the ones training saw:
a prompt/completion record's prompt ids are the prompt tokenized with the tokenizer's own special tokens (what
`PromptFormat("{source}")` gives), a chat record's the conversation rendered up to the generation prompt.

finetune — records (`seqlm.io.completion_records`) → rows (`seqlm.tasks.completion_rows`), cut to
`training.max_length` tokens keeping the last completion whole and the beginning and end of what precedes it
(`_cut`; counted and reported), batched by `ExampleBatches` (labels
padded with IGNORE_INDEX); the seq2seq objective's decoder-only loss: cross-entropy summed over the label tokens.
With `data.packing`, short rows are packed into rows of up to `training.max_length` tokens, attention kept
inside each example (`seqlm.data.packed_examples.pack_examples`; the model then runs without a KV cache).
Plain text: documents back to back, eos-separated, cut into blocks of `training.max_length` tokens as
`seqlm pretrain` cuts them (`seqlm.data.packed_examples.text_blocks`), the loss on every token; validation is
loss and perplexity only (no completions to generate; the config makes loss pick best/), and the saved model
stays a plain causal LM (no marker): `seqlm evaluate` gives its perplexity on text, `predict` continues prompts.
Validation: loss and perplexity over the label tokens (the completions), and on the first
`eval_generate_examples` records, greedy (`generation:`) continuations of each record's prompt up to its last
completion, scored against that completion: exact_match (share equal after stripping surrounding whitespace),
ROUGE-L and BLEU (`seqlm.metrics.generation`), plus gen_len. Every rank generates for the same records.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from seqlm.data.example_batches import EncodedExamples, ExampleBatches
from seqlm.data.masking import IGNORE_INDEX
from seqlm.data.packed_examples import pack_examples, text_blocks
from seqlm.errors import ConfigError
from seqlm.io import records
from seqlm.io.completion_records import CompletionRecords, read_completions, read_documents
from seqlm.metrics.scoring import score_batches
from seqlm.models.heads import MARKER_KEY, PROMPTED_HEAD
from seqlm.models.loading import max_positions
from seqlm.models.seq2seq_models import load_seq2seq
from seqlm.runtime.device import Precision
from seqlm.runtime.distributed import SINGLE, Cluster
from seqlm.tasks import seq2seq_inference
from seqlm.tasks.completion_rows import completion_rows
from seqlm.tasks.objectives import OBJECTIVES
from seqlm.tasks.seq2seq_generation import GenerationCheck, generated_scores, stop_ids
from seqlm.tasks.seq2seq_prompts import SOURCE, PromptFormat
from seqlm.tasks.task import Finetuning, Task
from seqlm.training.objective import Objective

GENERATION_METRICS = ("exact_match", "rougeL", "bleu")
METRIC_MODES = {"loss": "min", **{name: "max" for name in GENERATION_METRICS}}


def load(data: Any) -> tuple[dict[str, CompletionRecords], list[str]]:
    """{"train", "validation"[, "test"]} of records, or of plain-text documents; no label names."""
    if data.plain_text:
        return records.read_splits(data, lambda location: read_documents(location, data.documents, data.text_field)), []
    return records.read_splits(data, lambda location: read_completions(location, data.format, data.prompt_field, data.completion_field)), []


def encode(records_: CompletionRecords, tokenizer: Any, loss_on: str, limit: int) -> tuple[EncodedExamples, list[list[int]], int]:
    """The split's rows (input_ids, attention_mask; labels), each record's generation prompt (the row's ids before
    its last completion) and how many rows were cut to `limit` (see `_cut`)."""
    chat = bool(getattr(tokenizer, "chat_template", None))
    ids_rows, label_rows, prompts, cut = [], [], [], 0
    for record in records_:
        ids, labels = completion_rows(record, tokenizer, chat)
        start = _last_completion_start(labels)
        if len(ids) > limit:
            cut += 1
            ids, labels, start = _cut(ids, labels, start, limit)
        prompts.append(ids[:start])
        ids_rows.append(np.asarray(ids, dtype=np.int64))
        label_rows.append(np.asarray(ids if loss_on == "all" else labels, dtype=np.int64))
    rows = {"input_ids": ids_rows, "attention_mask": [np.ones(len(row), dtype=np.int64) for row in ids_rows]}
    return EncodedExamples(rows, {"labels": label_rows}, truncated=cut), prompts, cut


def _cut(ids: list[int], labels: list[int], start: int, limit: int) -> tuple[list[int], list[int], int]:
    """A row longer than `limit`, cut so that the last completion (from `start`) stays whole when it leaves room:
    what precedes it keeps its beginning (a bos, the system turn, the question's start) and its end (the cue just
    before the answer: the chat template's assistant header, a prompt's "A:"), half the room each, the middle
    dropped. A completion that leaves no room is cut at its end, after the prompt's first tokens. Returns the
    cut ids, labels and where the last completion now starts."""
    room = limit - (len(ids) - start)
    if room < 2:  # the completion alone fills the row: keep the prompt's beginning and the completion's start
        room = min(start, limit // 2)
        keep = list(range(room)) + list(range(start, start + limit - room))
        return [ids[i] for i in keep], [labels[i] for i in keep], room
    head = room // 2
    keep = list(range(head)) + list(range(start - (room - head), len(ids)))
    return [ids[i] for i in keep], [labels[i] for i in keep], room


def _last_completion_start(labels: list[int]) -> int:
    """Where the last run of label tokens (the last completion) begins."""
    end = max(index for index, label in enumerate(labels) if label != IGNORE_INDEX)
    start = end
    while start > 0 and labels[start - 1] != IGNORE_INDEX:
        start -= 1
    return start


class CompletionBatches:
    """`ExampleBatches` whose evaluation batches carry the generation check (`seqlm.tasks.seq2seq_generation.GenerationCheck`)."""

    def __init__(self, batches: ExampleBatches, splits: dict[str, CompletionRecords], prompts: dict[str, list[list[int]]],
                 tokenizer: Any, config: Any):  # fmt: skip
        self.examples, self.splits, self.prompts, self.tokenizer, self.config = batches, splits, prompts, tokenizer, config
        self.batches_per_epoch, self.steps_per_epoch = batches.batches_per_epoch, batches.steps_per_epoch

    def train(self, step: int, micro: int) -> Any:
        return self.examples.train(step, micro)

    def evaluation(self, split: str) -> GenerationCheck:
        training = self.config.training
        n = min(training.eval_generate_examples, len(self.prompts[split]))  # plain text: no prompts, no generation
        references = [(last_completion(record),) for record in self.splits[split].subset(range(n))]
        return GenerationCheck(
            self.examples.evaluation(split), self.prompts[split][:n], references, self.config.generation,
            self.tokenizer, training.batch_size, training.seed,
        )  # fmt: skip


def last_completion(record: Any) -> str:
    """The content of a record's last assistant message: what validation scores the generation against."""
    return next(message["content"] for message in reversed(record.messages) if message["role"] == "assistant")


def _batches_for_run(
    splits: dict[str, CompletionRecords], names: list[str], tokenizer: Any, config: Any, world_size: int, log: Callable[[str], None]
) -> CompletionBatches:
    training, data = config.training, config.data
    encoded, prompts = {}, {}
    if data.plain_text:
        log(f"causal_lm: plain text, documents back to back (each ending with eos) in blocks of {training.max_length} tokens, "
            "the loss on every token; validation: loss and perplexity (no generation check: plain text has no completions)")  # fmt: skip
        for split, documents in splits.items():
            encoded[split], prompts[split] = text_blocks(list(documents), tokenizer, training.max_length, documents.source), []
            log(f"{split}: {len(documents)} documents, {len(encoded[split])} blocks, {int(encoded[split].lengths.sum()):,} tokens")
    else:
        chat = bool(getattr(tokenizer, "chat_template", None))
        log(f"causal_lm: records rendered {'with the tokenizer chat template' if chat else 'as prompt + completion + eos'}, "
            f"the loss on {'the completions' if data.loss_on == 'completion' else 'every token'}")  # fmt: skip
        for split, split_records in splits.items():
            encoded[split], prompts[split], cut = encode(split_records, tokenizer, data.loss_on, training.max_length)
            if cut:
                log(f"{split}: {cut} of {len(split_records)} records are longer than training.max_length ({training.max_length} tokens); the middle of what precedes their last completion is dropped")
            if data.packing:
                rows = len(encoded[split])
                encoded[split] = pack_examples(encoded[split], training.max_length)
                log(f"{split}: {rows} examples packed into {len(encoded[split])} rows of up to {training.max_length} tokens")
    batches = ExampleBatches.for_training(encoded, int(tokenizer.pad_token_id), training, world_size)
    return CompletionBatches(batches, splits, prompts, tokenizer, config)


def score(
    model: Any, objective: Objective, check: GenerationCheck, names: list[str], precision: Precision, device: torch.device,
    cluster: Cluster = SINGLE, lockstep: bool = False,
) -> dict[str, float]:
    """loss and perplexity over the label tokens; exact_match, ROUGE-L, BLEU and gen_len over the generated records."""
    sums = score_batches(model, objective, check, precision, device, cluster, lockstep)
    metrics = {"loss": sums["loss"], "perplexity": sums["perplexity"], "target_tokens": sums["tokens"]}
    if check.sources:
        texts, scores = generated_scores(model, check, precision)
        metrics.update({key: float(scores[key]) for key in ("rougeL", "bleu", "gen_len")})
        metrics["exact_match"] = float(np.mean([text.strip() == refs[0].strip() for text, refs in zip(texts, check.references)]))
        metrics["generated"] = len(texts)
    return metrics


def load_model(source: Any, config: Any) -> tuple[Any, Any, list[str]]:
    """The causal LM to fine-tune (ConfigError for an encoder-decoder, or a training.max_length beyond its
    positions), marked as a decoder-only seq2seq model (see the module docstring; not for plain text, which leaves
    a plain causal LM, the `clm` task's), its generation config padding and stopping as training taught it."""
    model, tokenizer, new_weights = load_seq2seq(str(source), config.trust_remote_code)
    if model.config.is_encoder_decoder:
        raise ConfigError(f"task causal_lm needs a causal LM (GPT-2, Llama, ...); {config.model} is an encoder-decoder: use task: seq2seq")
    positions = max_positions(model.config)
    if positions is not None and config.training.max_length > positions:
        raise ConfigError(
            f"training.max_length ({config.training.max_length}) exceeds the {positions} positions of {config.model}; set it to {positions} or less"
        )
    if tokenizer.pad_token_id is None:  # batches are padded; a pad that is never a label (IGNORE_INDEX) is harmless
        tokenizer.pad_token = tokenizer.eos_token
    chat = bool(getattr(tokenizer, "chat_template", None))
    if not config.data.plain_text:  # continued pretraining leaves a plain causal LM: evaluate gives its perplexity on text
        setattr(model.config, MARKER_KEY, PromptFormat(None if chat else SOURCE).metadata())
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    if config.data.packing:  # transformers keeps packed examples apart (by their position_ids) only without a KV cache
        model.config.use_cache = False
    generation = model.generation_config
    generation.pad_token_id = tokenizer.pad_token_id
    generation.eos_token_id = sorted(stop_ids(model, tokenizer))
    return model, tokenizer, new_weights


TASK = Task(
    name="causal_lm",
    head=PROMPTED_HEAD,
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
        shown_metrics=("loss", "exact_match"),
        load_model=load_model,
    ),
)
