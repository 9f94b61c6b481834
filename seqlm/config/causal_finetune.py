"""The `task: causal_lm` member of the `seqlm finetune` schema (`seqlm.config.finetune`): generation fine-tuning
of a causal LM on prompt/completion or chat records, or continued pretraining on plain text
(`seqlm.tasks.completion_finetuning`)."""

from __future__ import annotations

from pathlib import PurePath
from typing import Literal

from pydantic import Field, model_validator

from seqlm.config.finetune_base import EarlyStoppingConfig, FinetuneRunConfig, FinetuneTrainingConfig, SplitFilesConfig
from seqlm.config.generation import GenerationConfig

TEXT_SUFFIXES = (".txt", ".text", ".md")  # format auto: plain text documents (also compressed: .txt.gz, ...)


class CompletionDataConfig(SplitFilesConfig):
    """JSON Lines records: {"prompt", "completion"} or chat {"messages": [{role, content}, ...]}; or plain text."""

    format: Literal["auto", "jsonl", "text"] = Field(
        default="auto",
        description="jsonl: prompt/completion or messages records; text: plain-text documents (.txt files, or a JSONL text_field), "
        "packed into blocks of training.max_length with the loss on every token (continued pretraining); auto: text for "
        f"{', '.join(TEXT_SUFFIXES)} train files, else jsonl.",
    )
    prompt_field: str = Field(default="prompt", description="The field holding a pair's prompt (e.g. source, for a seq2seq file).")
    completion_field: str = Field(default="completion", description="The field holding a pair's completion (e.g. target).")
    loss_on: Literal["completion", "all"] = Field(
        default="completion", description="completion: the loss on the completions / assistant turns only; all: on every token."
    )
    packing: bool = Field(
        default=False,
        description="Records: pack several examples into one row of up to training.max_length tokens, each attending only to "
        "itself (positions restart per example; the model runs without a KV cache); the losses and token counts are those of the "
        "examples unpacked; training.batch_size then counts rows.",
    )
    text_field: str = Field(default="text", description="format text, a JSONL file: the field holding each document.")
    documents: Literal["line", "blank_line"] = Field(
        default="line", description="format text, a text file: one document per line, or blank-line-separated documents."
    )

    @property
    def plain_text(self) -> bool:
        """Whether the data is plain-text documents (format text, or auto and a text train file)."""
        if self.format != "auto":
            return self.format == "text"
        suffixes = [suffix.lower() for suffix in PurePath(self.train).suffixes]
        return any(suffix in TEXT_SUFFIXES for suffix in suffixes[-2:])


class CausalLmEarlyStoppingConfig(EarlyStoppingConfig):
    metric: Literal["loss", "exact_match", "rougeL", "bleu"] | None = Field(
        default=None, description="Validation metric that picks best/ (higher is better, except loss); null: exact_match (loss when eval_generate_examples is 0)."
    )


class CausalLmTrainingConfig(FinetuneTrainingConfig):
    max_length: int = Field(default=512, ge=2, description="Tokens per record; a longer one keeps its last completion whole and the start and end of what precedes it (counted).")
    eval_generate_examples: int = Field(
        default=200, ge=0, description="Validation: complete the first N records' last prompt and score exact match, ROUGE-L, BLEU; 0: loss only."
    )
    early_stopping: CausalLmEarlyStoppingConfig = Field(default_factory=CausalLmEarlyStoppingConfig)

    @model_validator(mode="after")
    def _metric_needs_generation(self) -> CausalLmTrainingConfig:
        if self.eval_generate_examples == 0:
            if self.early_stopping.metric not in (None, "loss"):
                raise ValueError(f"early_stopping.metric {self.early_stopping.metric} needs eval_generate_examples > 0")
            self.early_stopping.metric = "loss"  # the one validation metric left
        return self


class CausalLmFinetuneConfig(FinetuneRunConfig):
    task: Literal["causal_lm"] = Field(description="Generation fine-tuning of a causal LM on prompt/completion or chat records, or continued pretraining on plain text.")
    data: CompletionDataConfig
    training: CausalLmTrainingConfig = Field(default_factory=CausalLmTrainingConfig)
    generation: GenerationConfig = Field(default_factory=GenerationConfig, description="How validation generates (greedy by default).")

    @model_validator(mode="after")
    def _plain_text_is_scored_by_loss(self) -> CausalLmFinetuneConfig:
        if self.data.plain_text:
            if self.data.packing:
                raise ValueError("data.packing is for prompt/completion and chat records; plain text is always packed into blocks: drop it")
            if self.data.loss_on == "completion" and "loss_on" in self.data.model_fields_set:
                raise ValueError("data.loss_on completion: plain text has no completions, its loss is on every token; drop loss_on")
            metric = self.training.early_stopping.metric
            if metric not in (None, "loss"):
                raise ValueError(
                    f"training.early_stopping.metric {metric}: plain text has no completions to generate; use loss (the default for text)"
                )
            self.training.early_stopping.metric = "loss"  # the one validation metric of plain text
        return self
