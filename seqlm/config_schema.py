"""The config schema of every command: pydantic models with `extra="forbid"`.

One neutral vocabulary (`n_layers`, `d_model`, ...) for every model family; it is translated
to `GPT2Config` / `LlamaConfig` / `BertConfig` only in `seqlm.model_builder`. Relative paths
are taken relative to the working directory the command runs in.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

Precision = Literal["auto", "fp32", "bf16", "fp16"]
Device = Literal["auto", "cpu", "cuda", "mps"]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_booleans_for_numbers(cls, value: object, info: ValidationInfo) -> object:
        """YAML reads true/yes/on as booleans, which pydantic would silently turn into 1 (or 0)."""
        if isinstance(value, bool) and info.field_name is not None:
            annotation = cls.model_fields[info.field_name].annotation
            accepted = set(get_args(annotation)) or {annotation}
            if bool not in accepted and accepted & {int, float}:
                raise ValueError(f"expected a number, not the boolean {str(value).lower()}")
        return value


# --------------------------------------------------------------------------- tokenize


class CorpusConfig(Section):
    """Where the raw text comes from and how it splits into documents."""

    train: list[str] = Field(min_length=1, description="Files, a save_to_disk dir, or a hub dataset id.")
    validation: list[str] = Field(default_factory=list, description="Separate validation files; else validation_ratio.")
    validation_ratio: float = Field(default=0.05, gt=0.0, lt=1.0)
    format: Literal["auto", "text", "jsonl", "csv", "parquet", "disk", "hub"] = "auto"
    text_column: str = "text"
    documents: Literal["line", "blank_line"] = Field(
        default="line", description="Plain text only: one document per line, or blank-line-separated documents."
    )
    hub_split: str = "train"
    max_documents: int | None = Field(default=None, gt=0, description="Use only the first N documents (smoke runs).")

    @model_validator(mode="before")
    @classmethod
    def _one_path_is_a_list(cls, data: object) -> object:
        if isinstance(data, dict):
            for key in ("train", "validation"):
                if isinstance(data.get(key), str):
                    data = {**data, key: [data[key]]}
        return data


class TokenizerConfig(Section):
    """Train a tokenizer (`kind`) or load one (`pretrained`: a local dir or a hub id)."""

    kind: Literal["bpe", "wordpiece"] = Field(default="bpe", description="bpe: byte-level BPE (GPT); wordpiece: BERT.")
    pretrained: str | None = None
    vocab_size: int = Field(default=8000, ge=300, le=1_000_000)
    min_frequency: int = Field(default=2, ge=1)
    special_tokens: list[str] | None = Field(
        default=None, description="Default: <|endoftext|> <|pad|> for bpe; [PAD] [UNK] [CLS] [SEP] [MASK] for wordpiece."
    )
    lowercase: bool = False
    max_training_documents: int | None = Field(default=None, gt=0, description="Train the tokenizer on a prefix only.")


class TokenizeConfig(Section):
    output_dir: Path
    corpus: CorpusConfig
    tokenizer: TokenizerConfig = Field(default_factory=TokenizerConfig)
    seed: int = 0
    batch_size: int = Field(default=1000, gt=0, description="Documents per encode batch and per write.")


# --------------------------------------------------------------------------- model


class ModelConfig(Section):
    """A model from scratch (sizes) or continued from an HF checkpoint (`from_pretrained`)."""

    family: Literal["auto", "gpt2", "llama", "bert"] = Field(default="auto", description="auto: gpt2 for clm, bert for mlm.")
    from_pretrained: str | None = Field(default=None, description="HF-format dir or hub id; sizes below are then ignored.")
    n_layers: int = Field(default=2, ge=1)
    n_heads: int = Field(default=2, ge=1)
    d_model: int = Field(default=64, ge=8)
    d_ff: int | None = Field(default=None, ge=8, description="Default 4 * d_model.")
    max_len: int = Field(default=128, ge=8, description="Maximum positions the model supports.")
    dropout: float = Field(default=0.1, ge=0.0, lt=1.0)

    @model_validator(mode="after")
    def _heads_divide_width(self) -> ModelConfig:
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")
        return self


class OptimConfig(Section):
    lr: float = Field(default=1e-3, gt=0.0)
    weight_decay: float = Field(default=0.01, ge=0.0)
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = Field(default=1e-8, gt=0.0)
    warmup_steps: int = Field(default=0, ge=0)
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    min_lr_ratio: float = Field(default=0.1, ge=0.0, le=1.0, description="Final lr as a fraction of lr.")
    grad_clip: float | None = Field(default=1.0, gt=0.0)


class TrainingConfig(Section):
    seq_len: int = Field(default=128, ge=4, description="Tokens per packed block.")
    batch_size: int = Field(default=16, ge=1, description="Blocks per micro-batch.")
    grad_accum: int = Field(default=1, ge=1, description="Micro-batches per optimizer step.")
    max_steps: int = Field(default=200, ge=1, description="Optimizer steps.")
    precision: Precision = "auto"
    seed: int = 0
    log_every: int = Field(default=10, ge=1)
    eval_every: int = Field(default=100, ge=1, description="Validate every N steps (and at the end).")
    eval_batches: int = Field(default=20, ge=1, description="Validation micro-batches per evaluation.")
    checkpoint_every: int | None = Field(default=None, ge=1, description="Save checkpoints/step-N every N steps.")


class PretrainConfig(Section):
    output_dir: Path
    data: Path = Field(description="A dataset directory written by `seqlm tokenize`.")
    objective: Literal["clm", "mlm"] = "clm"
    mlm_probability: float = Field(default=0.15, gt=0.0, lt=1.0)
    whole_word_mask: bool = False
    nsp: bool = Field(default=False, description="mlm only: next-sentence prediction (BertForPreTraining).")
    model: ModelConfig = Field(default_factory=ModelConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    device: Device = "auto"

    @model_validator(mode="after")
    def _objective_fits_family(self) -> PretrainConfig:
        family = self.model.family
        if self.objective == "clm" and family == "bert":
            raise ValueError("objective 'clm' needs a causal family (gpt2 or llama), not bert")
        if self.objective == "mlm" and family in ("gpt2", "llama"):
            raise ValueError(f"objective 'mlm' needs family bert, not {family}")
        if self.nsp and self.objective != "mlm":
            raise ValueError("nsp: true needs objective: mlm")
        if self.model.from_pretrained is None and self.training.seq_len > self.model.max_len:
            raise ValueError(f"training.seq_len ({self.training.seq_len}) exceeds model.max_len ({self.model.max_len})")
        return self


# --------------------------------------------------------------------------- evaluate


class EvaluateConfig(Section):
    model: str = Field(description="An HF-format model dir (e.g. a run's model/) or a hub id.")
    data: Path = Field(description="A `seqlm tokenize` dataset dir, or a text file (one document per line).")
    split: Literal["train", "validation"] = "validation"
    output_dir: Path | None = Field(default=None, description="Where metrics.json goes; default: beside the model.")
    seq_len: int | None = Field(default=None, ge=4, description="Tokens per window; default: the model's max positions.")
    stride: int | None = Field(default=None, ge=1, description="clm: tokens scored per window (sliding); default seq_len.")
    batch_size: int = Field(default=16, ge=1)
    max_batches: int | None = Field(default=None, ge=1, description="Cap the work (smoke runs).")
    mlm_probability: float = Field(default=0.15, gt=0.0, lt=1.0)
    pseudo_perplexity_windows: int = Field(default=8, ge=0, description="mlm: windows scored one-mask-at-a-time.")
    seed: int = 0
    precision: Precision = "fp32"
    device: Device = "auto"


# --------------------------------------------------------------------------- predict


class GenerationConfig(Section):
    max_new_tokens: int = Field(default=40, ge=1)
    do_sample: bool = False
    temperature: float = Field(default=1.0, gt=0.0)
    top_k: int | None = Field(default=None, ge=1)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)


class PredictConfig(Section):
    model: str = Field(description="An HF-format model dir (e.g. a run's model/) or a hub id.")
    input: str = Field(default="-", description="Text (one input per line) or JSONL file; '-' is stdin.")
    output: str = Field(default="-", description="Output file; '-' is stdout.")
    input_format: Literal["auto", "text", "jsonl"] = "auto"
    text_field: str = "text"
    output_format: Literal["auto", "jsonl", "csv"] = "auto"
    batch_size: int = Field(default=16, ge=1)
    generation: GenerationConfig = Field(default_factory=GenerationConfig)
    top_k: int = Field(default=5, ge=1, description="mlm: candidates per [MASK].")
    seed: int = 0
    precision: Precision = "fp32"
    device: Device = "auto"


COMMAND_SCHEMAS: dict[str, type[Section]] = {
    "tokenize": TokenizeConfig,
    "pretrain": PretrainConfig,
    "evaluate": EvaluateConfig,
    "predict": PredictConfig,
}
