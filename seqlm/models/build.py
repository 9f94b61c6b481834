"""Build the model a pretraining run trains: the neutral config → a transformers model.

This is the only place that knows transformers' per-family parameter names
(`n_embd` vs `hidden_size`, ...). A model continued from a checkpoint keeps that
checkpoint's architecture; the neutral sizes then do not apply.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from seqlm.config.schema import ModelConfig
from seqlm.errors import ConfigError, DataError, first_line
from seqlm.models.heads import auto_class
from seqlm.models.loading import model_source, quiet_transformers

Family = Literal["gpt2", "llama", "bert"]
Head = Literal["causal_lm", "masked_lm", "pretraining"]


def resolve_family(model: ModelConfig, objective: str) -> Family:
    if model.family != "auto":
        return model.family
    return "gpt2" if objective == "clm" else "bert"


def head_for(objective: str, nsp: bool) -> Head:
    if objective == "clm":
        return "causal_lm"
    return "pretraining" if nsp else "masked_lm"


def build_model(model: ModelConfig, objective: str, nsp: bool, tokenizer: Any) -> Any:
    """A model for `objective` whose vocabulary covers `tokenizer`, from scratch or a checkpoint."""
    head = head_for(objective, nsp)
    if model.from_pretrained is not None:
        built = load_pretrained(model.from_pretrained, head, model.trust_remote_code)
    else:
        built = auto_class(head).from_config(_scratch_config(model, objective, tokenizer), attn_implementation="sdpa")
    model_vocab = built.get_input_embeddings().weight.shape[0]
    if model_vocab < len(tokenizer):
        raise DataError(
            f"the tokenizer has {len(tokenizer)} tokens but the model's vocabulary only {model_vocab}; "
            "tokenize the corpus with the model's own tokenizer (tokenizer.pretrained: MODEL_DIR)"
        )
    return built


def load_pretrained(name_or_path: str, head: Head, trust_remote_code: bool = False) -> Any:
    """Continue from an HF-format checkpoint dir, a .gguf file or a packaged model's alias (or a hub id for online users)."""
    try:
        found = model_source(name_or_path)
    except DataError as exc:
        if Path(name_or_path).expanduser().exists():
            raise
        raise DataError(f"{name_or_path}: model.from_pretrained must be an HF-format model directory, a .gguf file or a hub id") from exc
    try:
        with quiet_transformers():
            return found.load(auto_class(head), attn_implementation="sdpa", trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise DataError(f"{name_or_path}: cannot load a {head} model: {first_line(exc)}") from exc


def _scratch_config(model: ModelConfig, objective: str, tokenizer: Any) -> Any:
    import transformers

    family = resolve_family(model, objective)
    d_ff = model.d_ff or 4 * model.d_model
    vocab_size = len(tokenizer)
    pad_id = tokenizer.pad_token_id
    if family == "gpt2":
        eos_id = tokenizer.eos_token_id
        return transformers.GPT2Config(
            vocab_size=vocab_size,
            n_positions=model.max_len,
            n_embd=model.d_model,
            n_layer=model.n_layers,
            n_head=model.n_heads,
            n_inner=d_ff,
            resid_pdrop=model.dropout,
            embd_pdrop=model.dropout,
            attn_pdrop=model.dropout,
            # GPT-2's tanh-approximated GELU as PyTorch's fused kernel: the same function as the
            # default "gelu_new", which is six separate elementwise ops (a fifth of a CPU step).
            activation_function="gelu_pytorch_tanh",
            bos_token_id=eos_id,
            eos_token_id=eos_id,
            pad_token_id=pad_id,
        )
    if family == "llama":
        eos_id = tokenizer.eos_token_id
        return transformers.LlamaConfig(
            vocab_size=vocab_size,
            hidden_size=model.d_model,
            intermediate_size=d_ff,
            num_hidden_layers=model.n_layers,
            num_attention_heads=model.n_heads,
            num_key_value_heads=model.n_heads,
            max_position_embeddings=model.max_len,
            attention_dropout=model.dropout,
            bos_token_id=eos_id,
            eos_token_id=eos_id,
            pad_token_id=pad_id,
            tie_word_embeddings=True,
        )
    if tokenizer.mask_token_id is None:
        raise ConfigError("objective mlm needs a tokenizer with a mask token; use tokenizer.kind: wordpiece")
    return transformers.BertConfig(
        vocab_size=vocab_size,
        hidden_size=model.d_model,
        num_hidden_layers=model.n_layers,
        num_attention_heads=model.n_heads,
        intermediate_size=d_ff,
        max_position_embeddings=model.max_len,
        hidden_dropout_prob=model.dropout,
        attention_probs_dropout_prob=model.dropout,
        pad_token_id=pad_id if pad_id is not None else 0,
        type_vocab_size=2,
    )
