"""The config schemas of the commands that apply a trained model: `seqlm evaluate` and `seqlm predict`
(pydantic, `extra="forbid"`, as every command's; the shared field types are `seqlm.config.schema`'s).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from seqlm.config.answer_spans import AnswerSpanConfig
from seqlm.config.generation import GenerationConfig
from seqlm.config.schema import Device, InferencePrecision, TrustRemoteCode
from seqlm.config.section import Section

# --------------------------------------------------------------------------- evaluate


class EvaluateConfig(Section):
    model: str = Field(description="An HF-format model dir (e.g. a run's model/), a .gguf file, a packaged model (minilm, smollm2) or a hub id.")
    trust_remote_code: TrustRemoteCode = False
    data: Path = Field(
        description="LMs: a `seqlm tokenize` dataset dir or a text file (one document per line); classifiers: a labelled JSONL/CSV/Parquet file; token classifiers: a tagged JSONL/CoNLL/CoNLL-U file; extractive_qa: SQuAD-layout JSONL/Parquet or a SQuAD JSON file; generation models: source/target JSONL/CSV/Parquet, or (decoder-only) the prompt/completion or messages JSONL causal_lm trains on."
    )
    split: Literal["train", "validation"] = Field(default="validation", description="Dataset split to score.")
    output_dir: Path | None = Field(default=None, description="Where metrics.json goes; default: beside the model.")
    seq_len: int | None = Field(default=None, ge=4, description="Tokens per window (classifiers: per example); default: the model's max positions.")
    stride: int | None = Field(default=None, ge=1, description="clm: tokens scored per window (sliding); default seq_len.")
    batch_size: int = Field(default=16, ge=1, description="Windows (classifiers: examples) per forward pass.")
    max_batches: int | None = Field(default=None, ge=1, description="Cap the work (smoke runs).")
    mlm_probability: float = Field(default=0.15, gt=0.0, lt=1.0, description="mlm: share of tokens masked for scoring.")
    pseudo_perplexity_windows: int = Field(default=8, ge=0, description="mlm: windows scored one-mask-at-a-time.")
    text_field: str = Field(default="text", description="classification: the text column of the labelled file.")
    text_pair_field: str | None = Field(default=None, description="classification: a second text column.")
    label_field: str = Field(default="label", description="classification: the label column.")
    tokens_field: str = Field(default="tokens", description="token_classification (jsonl): the field holding the words.")
    tags_field: str = Field(default="tags", description="token_classification (jsonl): the field holding one tag per word.")
    conllu_column: Literal["upos", "xpos"] = Field(default="upos", description="token_classification (.conllu): the tag column.")
    seed: int = Field(default=0, description="mlm: fixes which tokens are masked.")
    source_field: str = Field(default="source", description="seq2seq: the field holding the source text.")
    target_field: str = Field(default="target", description="seq2seq: the field holding the target text.")
    references_field: str | None = Field(default="references", description="seq2seq: a field listing several references.")
    source_prefix: str | None = Field(
        default=None,
        description="seq2seq: prepended to every source; null: the prefix the model was fine-tuned with (its config.json's prefix, else none).",
    )
    generation: GenerationConfig = Field(default_factory=GenerationConfig)
    qa: AnswerSpanConfig = Field(default_factory=AnswerSpanConfig, description="extractive_qa: windows and answer reading.")
    precision: InferencePrecision = "auto"
    device: Device = Field(default="auto", description="auto: cuda, then mps, then cpu.")


# --------------------------------------------------------------------------- predict


class PredictConfig(Section):
    model: str = Field(description="An HF-format model dir (e.g. a run's model/), a .gguf file, a packaged model (minilm, smollm2) or a hub id.")
    trust_remote_code: TrustRemoteCode = False
    input: str = Field(default="-", description="Text (one input per line) or JSONL file; '-' is stdin.")
    output: str = Field(default="-", description="Output file; '-' is stdout.")
    input_format: Literal["auto", "text", "jsonl", "csv"] = Field(default="auto", description="auto: .jsonl/.json → jsonl, .csv → csv, else text.")
    text_field: str = Field(default="text", description="jsonl/csv: the field holding the input text.")
    text_pair_field: str | None = Field(
        default=None, description="classification: a second text field (sentence pairs); extractive_qa: the context (text_field: the question)."
    )
    words_field: str | None = Field(
        default=None, description="token_classification (jsonl): a field holding the input already split into words (a list of strings)."
    )
    word_split: Literal["whitespace", "pretokenizer"] = Field(
        default="whitespace",
        description="token_classification: how raw text is split into words: at whitespace, or by the tokenizer's pre-tokenizer (punctuation split off, as transformers' pipeline does).",
    )
    source_prefix: str | None = Field(
        default=None,
        description="seq2seq: prepended to every input; null: the prefix the model was fine-tuned with (its config.json's prefix, else none); '': none.",
    )
    apply_chat_template: bool = Field(
        default=False,
        description="clm (a causal LM seqlm did not fine-tune): render each text input as a user message with the tokenizer's chat "
        "template, ready for the assistant's answer (messages inputs always are).",
    )
    output_format: Literal["auto", "jsonl", "csv"] = Field(default="auto", description="auto: .csv → csv, else jsonl.")
    batch_size: int = Field(default=16, ge=1, description="Inputs per forward pass / generate call.")
    generation: GenerationConfig = Field(default_factory=GenerationConfig)
    qa: AnswerSpanConfig = Field(default_factory=AnswerSpanConfig, description="extractive_qa: windows and answer reading.")
    top_k: int = Field(
        default=5, ge=1,
        description="mlm: candidates per [MASK]; classification: most probable classes listed; extractive_qa: alternative answers listed, only when set.",
    )
    skip_bad_lines: bool = Field(default=False, description="Skip (and count) inputs that are not UTF-8 / valid JSON instead of failing.")
    stream: bool = Field(default=False, description="Predict each text/jsonl input as soon as it is read and print its record at once (stdout; no batching).")
    max_length: int | None = Field(
        default=None, ge=2,
        description="classifiers: tokens per input (classification truncates longer ones; token_classification splits them into windows at word boundaries); default: the model's positions.",
    )
    seed: int = Field(default=0, description="Seeds sampling.")
    precision: InferencePrecision = "auto"
    device: Device = Field(default="auto", description="auto: cuda, then mps, then cpu.")
