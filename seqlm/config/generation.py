"""The `generation:` section shared by `seqlm predict`, `seqlm evaluate` and seq2seq `seqlm finetune`.

Neutral names; `seqlm.tasks` passes them to `model.generate`. Causal LMs use the sampling settings only
(greedy or sampled continuations) and refuse beam settings; seq2seq models use all of them.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from seqlm.config.section import Section

AT_LEAST = {"decode_cache_mb": 0, "streams": 1}  # the integer settings that also take "auto"


class GenerationConfig(Section):
    max_new_tokens: int = Field(default=40, ge=1, description="Tokens to generate per prompt (stops early at eos).")
    do_sample: bool = Field(default=False, description="false: greedy (or beam search with num_beams > 1); true: sample (seeded).")
    temperature: float = Field(default=1.0, gt=0.0, description="Sampling temperature.")
    top_k: int | None = Field(default=None, ge=1, description="Sample among the k most likely tokens.")
    top_p: float | None = Field(default=None, gt=0.0, le=1.0, description="Nucleus sampling mass.")
    num_beams: int = Field(default=1, ge=1, description="seq2seq: beams of beam search; 1: greedy.")
    length_penalty: float = Field(default=1.0, description="seq2seq beam search: exponent on the length a beam's log-probability is divided by (>1: longer outputs).")
    no_repeat_ngram_size: int = Field(default=0, ge=0, description="seq2seq: never repeat an n-gram of this size; 0: off.")
    early_stopping: bool = Field(default=False, description="seq2seq beam search: stop once num_beams finished candidates exist.")
    num_return_sequences: int = Field(default=1, ge=1, description="seq2seq: outputs per input (at most num_beams, unless sampling).")
    seed: int | None = Field(default=None, description="Seeds sampling; null: the command's seed (predict: seed, finetune: training.seed).")
    decode_cache_mb: int | Literal["auto"] = Field(
        default="auto",
        description="Greedy and sampling with a decoder-only model or a T5: prompts (sources) run batch_size at a time; then, by length, longest first, groups of at least batch_size rows decode as one batch, more rows joining while the group's KV cache (rows × (longest prompt or source + max_new_tokens)) stays within this many MB (counted at 4 bytes a value); 0: groups of batch_size; auto: 1024 (a step reads the weights once for all its rows).",
    )  # fmt: skip
    streams: int | Literal["auto"] = Field(
        default="auto",
        description="CPU: batches decoded at once, each on its share of the cores (greedy and beam search; sampling runs one), or a T5's source slices encoded at once; auto: 2, except 1 for merged decoding groups (decode_cache_mb). Accelerators: 1.",
    )

    @field_validator("decode_cache_mb", "streams")
    @classmethod
    def _at_least(cls, value: int | str, info: ValidationInfo) -> int | str:
        least = AT_LEAST[info.field_name]
        if isinstance(value, int) and value < least:
            raise ValueError(f"must be at least {least} (or auto)")
        return value

    @model_validator(mode="after")
    def _enough_beams(self) -> GenerationConfig:
        if not self.do_sample and self.num_return_sequences > self.num_beams:
            raise ValueError(
                f"num_return_sequences ({self.num_return_sequences}) exceeds num_beams ({self.num_beams}); raise num_beams or set do_sample: true"
            )
        return self

    def uses_beams(self) -> bool:
        """Whether any seq2seq-only setting differs from its default (causal LMs refuse them)."""
        return (self.num_beams, self.length_penalty, self.no_repeat_ngram_size, self.early_stopping, self.num_return_sequences) != (1, 1.0, 0, False, 1)
