"""The `task: causal_lm` member of the `seqlm finetune` schema (`seqlm.config.finetune`): generation fine-tuning
of a causal LM on prompt/completion or chat records (`seqlm.tasks.completion_finetuning`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from seqlm.config.finetune_base import EarlyStoppingConfig, FinetuneRunConfig, FinetuneTrainingConfig, SplitFilesConfig
from seqlm.config.generation import GenerationConfig


class CompletionDataConfig(SplitFilesConfig):
    """JSON Lines records: {"prompt", "completion"} or chat {"messages": [{role, content}, ...]}."""

    format: Literal["auto", "jsonl"] = Field(default="auto", description="JSON Lines (the only format).")
    prompt_field: str = Field(default="prompt", description="The field holding a pair's prompt (e.g. source, for a seq2seq file).")
    completion_field: str = Field(default="completion", description="The field holding a pair's completion (e.g. target).")
    loss_on: Literal["completion", "all"] = Field(
        default="completion", description="completion: the loss on the completions / assistant turns only; all: on every token."
    )


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
    task: Literal["causal_lm"] = Field(description="Generation fine-tuning of a causal LM on prompt/completion or chat records.")
    data: CompletionDataConfig
    training: CausalLmTrainingConfig = Field(default_factory=CausalLmTrainingConfig)
    generation: GenerationConfig = Field(default_factory=GenerationConfig, description="How validation generates (greedy by default).")
