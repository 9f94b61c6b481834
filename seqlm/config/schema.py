"""The config schemas of `seqlm tokenize` and `seqlm pretrain`, and the field types and sections every command
shares: pydantic models with `extra="forbid"` (evaluate and predict: `seqlm.config.inference`; finetune:
`seqlm.config.finetune`).

One neutral vocabulary (`n_layers`, `d_model`, ...) for every model family; it is translated
to `GPT2Config` / `LlamaConfig` / `BertConfig` only in `seqlm.models.build`. Relative paths
are taken relative to the working directory the command runs in.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, model_validator

from seqlm.config.lora import LoraConfig
from seqlm.config.section import Section

Precision = Literal["auto", "fp32", "bf16", "fp16"]
Device = Literal["auto", "cpu", "cuda", "mps"]

# Settings that several commands share: one declaration each (type, bounds, description).
TrainingPrecision = Annotated[
    Precision,
    Field(description="auto: bf16 autocast on CUDA and on CPUs with native bf16 (AVX512-BF16/AMX), else fp32; bf16, fp16 (CUDA), fp32."),
]
InferencePrecision = Annotated[
    Precision,
    Field(
        description="auto: bf16 autocast on CUDA and on CPUs with native bf16 (AVX512-BF16/AMX), else fp32 (agreement with fp32: "
        "README Performance); fp32, bf16, fp16 (CUDA). Outputs (probabilities, scores, losses) are computed in fp32 either way."
    ),
]
Compile = Annotated[
    Literal["auto"] | bool,
    Field(description="torch.compile the model body (true/false); auto: only on CUDA for runs of 1000+ steps, where it pays."),
]
FastDropout = Annotated[
    bool,
    Field(
        description="CPU runs without compile: dropout masks from 16 random bits per element (p rounded to 1/65536) instead of "
        "torch's bernoulli, attention dropout included (15-20% faster steps at dropout 0.1, another random stream); false: torch's nn.Dropout."
    ),
]
KeepLast = Annotated[
    int | None,
    Field(ge=1, description="Keep only the N newest checkpoints (plus the best and the one resumed from); null: keep all."),
]
OnNan = Annotated[
    Literal["stop", "skip"],
    Field(description="A NaN/inf loss or gradient: stop with an error (stop), or skip that batch and count it (skip)."),
]
Resume = Annotated[
    Literal["never", "auto", "always"],
    Field(description="auto: continue from output_dir's newest complete checkpoint if it has one; always (--resume): require one."),
]
Overwrite = Annotated[
    bool, Field(description="Start afresh in an output_dir that holds another run, deleting it (--overwrite); else refused.")
]
ReportTo = Annotated[
    list[Literal["tensorboard"]],
    Field(description="Also write the run's records where these tools read them: tensorboard (event files in output_dir/tensorboard/)."),
]
WriteReport = Annotated[
    bool,
    Field(description="At the end of the run write output_dir/report.html (curves, metrics; what `seqlm report` writes); a failure to draw it is a warning."),
]
TrustRemoteCode = Annotated[
    bool, Field(description="Run Python code shipped with a hub model (custom architectures); only for sources you trust (warned).")
]


# --------------------------------------------------------------------------- tokenize


class CorpusConfig(Section):
    """Where the raw text comes from and how it splits into documents."""

    train: list[str] = Field(min_length=1, description="Files, a save_to_disk dir, or a hub dataset id.")
    validation: list[str] = Field(default_factory=list, description="Separate validation files; else validation_ratio.")
    validation_ratio: float = Field(default=0.05, gt=0.0, lt=1.0, description="Share of documents held out when no validation files are given.")
    format: Literal["auto", "text", "jsonl", "csv", "parquet", "disk", "hub"] = Field(
        default="auto", description="auto: from the file extension; a non-path string is a hub dataset id."
    )
    text_column: str | list[str] = Field(
        default="text",
        description="The text field of JSONL/CSV/Parquet/datasets input, or a list of fields (e.g. [source, target] of "
        "parallel data): each field of a record is then a document of its own, in the order listed (the tokenizer "
        "learns from all of them; each gets its own separator in the token arrays). Every record needs each field.",
    )
    documents: Literal["line", "blank_line"] = Field(
        default="line", description="Plain text only: one document per line, or blank-line-separated documents."
    )
    hub_split: str = Field(default="train", description="The split of a hub dataset to read.")
    max_documents: int | None = Field(default=None, gt=0, description="Use only the first N documents (smoke runs).")

    @model_validator(mode="before")
    @classmethod
    def _one_path_is_a_list(cls, data: object) -> object:
        if isinstance(data, dict):
            for key in ("train", "validation"):
                if isinstance(data.get(key), str):
                    data = {**data, key: [data[key]]}
        return data

    @model_validator(mode="after")
    def _columns_are_named_once(self) -> CorpusConfig:
        columns = self.text_columns
        if not columns:
            raise ValueError("text_column: name at least one field")
        if len(set(columns)) != len(columns):
            raise ValueError(f"text_column names a field twice ({', '.join(columns)}); list each field once")
        return self

    @property
    def text_columns(self) -> tuple[str, ...]:
        """The text fields, in order: `text_column` as a tuple."""
        return (self.text_column,) if isinstance(self.text_column, str) else tuple(self.text_column)


class TokenizerConfig(Section):
    """Train a tokenizer (`kind`) or load one (`pretrained`: a local dir or a hub id)."""

    kind: Literal["bpe", "wordpiece"] = Field(default="bpe", description="bpe: byte-level BPE (GPT); wordpiece: BERT.")
    pretrained: str | None = Field(default=None, description="Load this tokenizer (dir, .gguf model file, smollm2 or hub id) instead of training one.")
    vocab_size: int = Field(default=8000, ge=300, le=1_000_000, description="Vocabulary size to train, special tokens included.")
    min_frequency: int = Field(default=2, ge=1, description="Merges/pieces seen fewer times are not learned.")
    special_tokens: list[str] | None = Field(
        default=None, description="Default: <|endoftext|> <|pad|> for bpe; [PAD] [UNK] [CLS] [SEP] [MASK] for wordpiece."
    )
    lowercase: bool = Field(default=False, description="Lowercase (and strip accents, for wordpiece) before tokenizing.")
    max_training_documents: int | None = Field(default=None, gt=0, description="Train the tokenizer on a prefix only.")


class TokenizeConfig(Section):
    output_dir: Path = Field(description="The tokenized dataset directory to write (replaced if it holds an older one).")
    corpus: CorpusConfig
    tokenizer: TokenizerConfig = Field(default_factory=TokenizerConfig)
    seed: int = Field(default=0, description="Seeds the train/validation split by ratio.")
    batch_size: int = Field(default=1000, gt=0, description="Documents per encode batch and per write.")


# --------------------------------------------------------------------------- model


class ModelConfig(Section):
    """A model from scratch (sizes) or continued from an HF checkpoint (`from_pretrained`)."""

    family: Literal["auto", "gpt2", "llama", "bert"] = Field(default="auto", description="auto: gpt2 for clm, bert for mlm.")
    from_pretrained: str | None = Field(default=None, description="HF-format dir, .gguf file, smollm2 or hub id; sizes below are then ignored.")
    n_layers: int = Field(default=2, ge=1, description="Transformer blocks.")
    n_heads: int = Field(default=2, ge=1, description="Attention heads; must divide d_model.")
    d_model: int = Field(default=64, ge=8, description="Hidden width.")
    d_ff: int | None = Field(default=None, ge=8, description="Default 4 * d_model.")
    max_len: int = Field(default=128, ge=8, description="Maximum positions the model supports.")
    dropout: float = Field(default=0.1, ge=0.0, lt=1.0, description="Dropout on embeddings, residuals and attention.")
    trust_remote_code: TrustRemoteCode = False

    @model_validator(mode="after")
    def _heads_divide_width(self) -> ModelConfig:
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")
        return self


class OptimConfig(Section):
    lr: float = Field(default=1e-3, gt=0.0, description="Peak learning rate (AdamW).")
    weight_decay: float = Field(default=0.01, ge=0.0, description="Decoupled decay on weight matrices (not biases, norms, embeddings).")
    betas: tuple[float, float] = Field(default=(0.9, 0.98), description="AdamW betas.")
    eps: float = Field(default=1e-8, gt=0.0, description="AdamW epsilon.")
    warmup_steps: int = Field(default=0, ge=0, description="Linear warmup from 0 to lr.")
    schedule: Literal["cosine", "linear", "constant"] = Field(default="cosine", description="Decay after warmup.")
    min_lr_ratio: float = Field(default=0.1, ge=0.0, le=1.0, description="Final lr as a fraction of lr.")
    grad_clip: float | None = Field(default=1.0, gt=0.0, description="Max global gradient norm; null: no clipping.")


class DistributedConfig(Section):
    """How a run under torchrun (several processes) splits the work; a single process ignores it."""

    strategy: Literal["ddp", "fsdp"] = Field(
        default="ddp", description="ddp: a full model replica per process; fsdp: parameters, gradients and optimizer state sharded (FSDP2)."
    )
    timeout_s: int = Field(
        default=600, ge=10, description="Seconds a collective may wait for the other processes before the run fails (never a hang)."
    )
    checkpoint: Literal["full", "sharded"] = Field(
        default="full",
        description="fsdp: full checkpoints (HF weights + optimizer, gathered on rank 0) or sharded (torch.distributed.checkpoint: each rank writes its shards).",
    )

    @model_validator(mode="after")
    def _sharded_needs_fsdp(self) -> DistributedConfig:
        if self.checkpoint == "sharded" and self.strategy != "fsdp":
            raise ValueError("checkpoint: sharded needs strategy: fsdp (a ddp replica is saved whole)")
        return self


class TrainingConfig(Section):
    seq_len: int = Field(default=128, ge=4, description="Tokens per packed block.")
    batch_size: int = Field(default=16, ge=1, description="Blocks per micro-batch.")
    grad_accum: int = Field(default=1, ge=1, description="Micro-batches per optimizer step.")
    max_steps: int = Field(default=200, ge=1, description="Optimizer steps.")
    precision: TrainingPrecision = "auto"
    compile: Compile = "auto"
    fast_dropout: FastDropout = True
    seed: int = Field(default=0, description="Seeds initialisation, data order, masking and dropout.")
    log_every: int = Field(default=10, ge=1, description="Steps between metrics.jsonl records / log lines.")
    eval_every: int = Field(default=100, ge=1, description="Validate every N steps (and at the end).")
    eval_batches: int = Field(default=20, ge=1, description="Validation micro-batches per evaluation.")
    checkpoint_every: int | None = Field(default=None, ge=1, description="Save checkpoints/step-N every N steps.")
    fast_loss: bool = Field(
        default=True,
        description="Compute the LM head only where needed: MLM at the masked positions, CLM in chunks without full logits (same loss).",
    )
    keep_last: KeepLast = None
    on_nan: OnNan = "stop"
    report_to: ReportTo = []
    lora: LoraConfig | None = Field(default=None, description="Train low-rank adapters on model.from_pretrained, not every weight.")


class PretrainConfig(Section):
    output_dir: Path = Field(description="The run directory (config.yaml, metrics, checkpoints/, model/).")
    data: Path = Field(description="A dataset directory written by `seqlm tokenize`.")
    objective: Literal["clm", "mlm"] = Field(default="clm", description="clm: causal LM (GPT); mlm: masked LM (BERT).")
    mlm_probability: float = Field(default=0.15, gt=0.0, lt=1.0, description="Share of tokens selected (80% [MASK], 10% random, 10% kept).")
    whole_word_mask: bool = Field(default=False, description="mlm: select all pieces of a word together.")
    nsp: bool = Field(default=False, description="mlm only: next-sentence prediction (BertForPreTraining).")
    model: ModelConfig = Field(default_factory=ModelConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    distributed: DistributedConfig = Field(default_factory=DistributedConfig)
    device: Device = Field(default="auto", description="auto: cuda, then mps, then cpu.")
    resume: Resume = "never"
    overwrite: Overwrite = False
    report: WriteReport = True

    @model_validator(mode="after")
    def _objective_fits_family(self) -> PretrainConfig:
        family = self.model.family
        if self.objective == "clm" and family == "bert":
            raise ValueError("objective 'clm' needs a causal family (gpt2 or llama), not bert")
        if self.objective == "mlm" and family in ("gpt2", "llama"):
            raise ValueError(f"objective 'mlm' needs family bert, not {family}")
        if self.training.lora is not None and self.model.from_pretrained is None:
            raise ValueError("training.lora adapts a pretrained model: set model.from_pretrained (a model from scratch trains in full)")
        if self.nsp and self.objective != "mlm":
            raise ValueError("nsp: true needs objective: mlm")
        if self.model.from_pretrained is None and self.training.seq_len > self.model.max_len:
            raise ValueError(
                f"training.seq_len ({self.training.seq_len}) exceeds model.max_len ({self.model.max_len}); "
                "lower training.seq_len or raise model.max_len"
            )
        return self
