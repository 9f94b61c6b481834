"""What every `seqlm finetune` task's config shares (`seqlm.config.finetune` adds one member per task): the split
files, the training settings, early stopping and the run settings."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from seqlm.config.lora import LoraConfig
from seqlm.config.schema import (
    Compile,
    Device,
    DistributedConfig,
    FastDropout,
    KeepLast,
    OnNan,
    OptimConfig,
    Overwrite,
    ReportTo,
    Resume,
    Section,
    TrainingPrecision,
    TrustRemoteCode,
    WriteReport,
)


class SplitFilesConfig(Section):
    """Where a task's examples are: train, validation (a file, or a share of train), test."""

    train: str = Field(description="Training examples.")
    validation: str | None = Field(default=None, description="Validation examples; else validation_ratio of train.")
    test: str | None = Field(default=None, description="Test examples, scored once at the end.")
    validation_ratio: float = Field(default=0.1, gt=0.0, lt=1.0, description="Share of train held out when no validation file is given.")
    split_seed: int = Field(default=0, description="Seeds the train/validation split by ratio.")


class EarlyStoppingConfig(Section):
    metric: str | None = Field(
        default=None,
        description="Validation metric that picks best/ (higher is better, except loss); null: the task's default "
        "(classification: accuracy; token_classification: f1 for IOB tags, else accuracy; seq2seq: bleu; extractive_qa: f1; causal_lm: exact_match).",
    )
    patience: int | None = Field(default=None, ge=1, description="Stop after this many evaluations without improvement; null: never.")


class FinetuneTrainingConfig(Section):
    batch_size: int = Field(default=32, ge=1, description="Examples per micro-batch.")
    grad_accum: int = Field(default=1, ge=1, description="Micro-batches per optimizer step.")
    epochs: float = Field(default=3.0, gt=0.0, description="Passes over the training set (max_steps wins when set).")
    max_steps: int | None = Field(default=None, ge=1, description="Optimizer steps; overrides epochs.")
    max_length: int = Field(
        default=128, ge=2, description="Tokens per example; classification truncates longer ones, token_classification splits them into windows."
    )
    group_by_length: bool = Field(default=True, description="Batch examples of similar length (less padding).")
    pad_to_multiple_of: int | Literal["auto"] = Field(
        default="auto",
        description="Pad each batch's rows to a multiple of this many tokens (at most the split's longest row). auto: 16 under "
        "bf16/fp16 autocast, where the matmul library keeps kernels and buffers for every batch shape it meets (length-grouped "
        "batches of every width made the benchmark's fine-tuning peak 0.5 GB higher), 1 (no rounding) in fp32.",
    )
    freeze: Literal["none", "embeddings", "body"] = Field(default="none", description="embeddings: freeze them; body: train only the newly initialised weights (the head).")
    lora: LoraConfig | None = Field(
        default=None, description="Train low-rank adapters (and the new head) instead of every weight; model/ and best/ hold the merged model."
    )
    eval_every: int | None = Field(default=None, ge=1, description="Validate every N steps; null: every epoch.")
    early_stopping: EarlyStoppingConfig = Field(default_factory=EarlyStoppingConfig)
    precision: TrainingPrecision = "auto"
    compile: Compile = "auto"
    fast_dropout: FastDropout = True
    seed: int = Field(default=0, description="Seeds the head's initialisation, data order and dropout.")
    log_every: int = Field(default=10, ge=1, description="Steps between metrics.jsonl records / log lines.")
    checkpoint_every: int | None = Field(default=None, ge=1, description="Save checkpoints/step-N every N steps (for --resume).")
    keep_last: KeepLast = None
    on_nan: OnNan = "stop"
    report_to: ReportTo = []

    @model_validator(mode="after")
    def _lora_keeps_the_body_training(self) -> FinetuneTrainingConfig:
        if self.lora is not None and self.freeze == "body":
            raise ValueError("freeze: body trains only the new head, and lora trains adapters in the body; use freeze: none with lora")
        return self


class FinetuneRunConfig(Section):
    """What every fine-tuning task shares; each task's member narrows `task`, `data` and `training`
    (redeclared fields keep their place, so every config lists its keys in this order)."""

    output_dir: Path = Field(description="The run directory (config.yaml, metrics, best/, model/).")
    task: str = Field(description="What to fine-tune for.")
    model: str = Field(
        description="Start from this HF-format model dir (e.g. a pretrain run's model/), a .gguf file (the `llm` extra), a hub id, "
        "`minilm` (all-MiniLM-L6-v2 from the `pretrained` extra) or `smollm2` (SmolLM2-135M-Instruct from the `llm` extra)."
    )
    trust_remote_code: TrustRemoteCode = False
    data: SplitFilesConfig
    optim: OptimConfig = Field(default_factory=OptimConfig)
    training: FinetuneTrainingConfig = Field(default_factory=FinetuneTrainingConfig)
    distributed: DistributedConfig = Field(default_factory=DistributedConfig)
    device: Device = Field(default="auto", description="auto: cuda, then mps, then cpu.")
    resume: Resume = "never"
    overwrite: Overwrite = False
    report: WriteReport = True
