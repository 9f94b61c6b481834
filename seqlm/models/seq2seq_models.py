"""The model a seq2seq `seqlm finetune` run trains: an encoder-decoder (pretrained or built from scratch) or a causal LM.

`load_seq2seq(model, trust_remote_code)`: `model` is an HF-format seq2seq dir or hub id (T5, BART, Marian...),
loaded with its LM head and tokenizer; a causal LM dir or hub id (a `seqlm pretrain` GPT, Llama, Qwen...),
loaded with its causal LM head (the decoder-only path, see `seqlm.tasks.seq2seq_prompts`); an
`EncoderDecoderConfig` (neutral sizes) built from scratch on the tokenizer it names; or a `WarmStartConfig`: an
`EncoderDecoderModel` whose encoder and decoder start from two encoder checkpoints (the decoder made causal, its
cross-attention new). `decoder_only(model, ...)` tells which kind `model` is before it is loaded. This is the
only place that knows `T5Config` / `BartConfig` parameter names.

Special tokens, from scratch: pad = the tokenizer's pad, eos = its eos (else its sep); the decoder starts from
pad (T5's convention) for t5 and from eos (BART's) for bart; a warm start (BERT-like vocabularies) starts
from cls (else bos) and stops at sep (else eos). These go into the model's config and its generation_config,
so `model.generate` needs no arguments to stop and to start.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch

from seqlm.config.finetune import EncoderDecoderConfig, WarmStartConfig
from seqlm.errors import DataError, first_line
from seqlm.models.heads import auto_class, supports
from seqlm.models.loading import model_source, quiet_transformers

# EncoderDecoderModel warns on every forward with labels that its loss changed in transformers 4.12; seqlm
# computes its own loss and only passes labels in validation.
warnings.filterwarnings("ignore", message="Version v4.12.0 introduces a better way", category=FutureWarning)


def load_seq2seq(model: str | EncoderDecoderConfig | WarmStartConfig, trust_remote_code: bool = False) -> tuple[Any, Any, list[str]]:
    """(model, tokenizer, names of newly initialised weights): all of them from scratch, the cross-attention
    for a warm start, none for a seq2seq checkpoint."""
    if isinstance(model, WarmStartConfig):
        return warm_start(model, trust_remote_code)
    if isinstance(model, EncoderDecoderConfig):
        tokenizer = _tokenizer(model.tokenizer, trust_remote_code)
        built = build_encoder_decoder(model, tokenizer)
        return built, tokenizer, [name for name, _ in built.named_parameters()]
    source = (found := model_source(model)).path
    with quiet_transformers():
        config = _model_config(model, source, trust_remote_code, found.file_kwargs)
        head = "causal_lm" if _is_causal(config) else "seq2seq_lm"
        tokenizer = _tokenizer(source, trust_remote_code, found.file_kwargs)
        try:
            loaded = found.load(auto_class(head), config=config, dtype=torch.float32, trust_remote_code=trust_remote_code)
        except Exception as exc:  # safetensors, torch and hub errors share no base class; all mean "unloadable"
            raise DataError(f"{model}: could not load the weights ({first_line(exc)}); re-save the model with save_pretrained") from exc
    return loaded, tokenizer, []


def decoder_only(model: str | EncoderDecoderConfig | WarmStartConfig, trust_remote_code: bool = False) -> bool:
    """Whether `model` (as `load_seq2seq` takes it) is a causal LM rather than an encoder-decoder."""
    if not isinstance(model, str):
        return False
    found = model_source(model)
    with quiet_transformers():
        return _is_causal(_model_config(model, found.path, trust_remote_code, found.file_kwargs))


def _model_config(model: str, source: str, trust_remote_code: bool, file_kwargs: dict[str, Any]) -> Any:
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code, **file_kwargs)
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(f"{model}: could not load the model config ({first_line(exc)}); check the path or hub id") from exc
    if not supports(config, "seq2seq_lm") and not supports(config, "causal_lm"):
        raise DataError(
            f"{model}: a {type(config).__name__} model is neither an encoder-decoder nor a causal LM; "
            "seq2seq needs T5, BART or similar, or a GPT / Llama-style causal LM"
        )
    return config


def _is_causal(config: Any) -> bool:
    # Some configs (BART) have both heads: an encoder-decoder one then wins.
    return not supports(config, "seq2seq_lm")


def build_encoder_decoder(sizes: EncoderDecoderConfig, tokenizer: Any) -> Any:
    """A randomly initialised T5 or BART whose vocabulary is the tokenizer's."""
    import transformers

    pad_id = tokenizer.pad_token_id
    eos_id = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
    if pad_id is None or eos_id is None:
        raise DataError(f"{sizes.tokenizer}: a seq2seq model needs a tokenizer with pad and eos tokens (seqlm tokenize kind: bpe has both)")
    d_ff = sizes.d_ff or 4 * sizes.d_model
    vocab_size = len(tokenizer)
    if sizes.family == "t5":
        config = transformers.T5Config(
            vocab_size=vocab_size, d_model=sizes.d_model, d_kv=sizes.d_model // sizes.n_heads, d_ff=d_ff,
            num_layers=sizes.encoder_layers, num_decoder_layers=sizes.decoder_layers, num_heads=sizes.n_heads,
            dropout_rate=sizes.dropout, feed_forward_proj="relu", tie_word_embeddings=True,
            pad_token_id=pad_id, eos_token_id=eos_id, decoder_start_token_id=pad_id,
        )  # fmt: skip
    else:
        bos_id = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else eos_id
        config = transformers.BartConfig(
            vocab_size=vocab_size, d_model=sizes.d_model, encoder_layers=sizes.encoder_layers,
            decoder_layers=sizes.decoder_layers, encoder_attention_heads=sizes.n_heads,
            decoder_attention_heads=sizes.n_heads, encoder_ffn_dim=d_ff, decoder_ffn_dim=d_ff,
            max_position_embeddings=sizes.max_len, dropout=sizes.dropout, attention_dropout=sizes.dropout,
            pad_token_id=pad_id, bos_token_id=bos_id, eos_token_id=eos_id, decoder_start_token_id=eos_id,
            forced_eos_token_id=eos_id, scale_embedding=True,
        )  # fmt: skip
    model = auto_class("seq2seq_lm").from_config(config)
    generation = model.generation_config
    generation.pad_token_id, generation.eos_token_id, generation.decoder_start_token_id = pad_id, eos_id, config.decoder_start_token_id
    return model


def warm_start(sources: WarmStartConfig, trust_remote_code: bool = False) -> tuple[Any, Any, list[str]]:
    """An `EncoderDecoderModel` from two encoder checkpoints, the encoder's tokenizer, and the new weights'
    names (what the decoder checkpoint lacks: its cross-attention, and LM-head parts a bare encoder has not)."""
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, EncoderDecoderModel

    encoder_source, encoder_kwargs = model_source(sources.encoder)
    decoder_source, decoder_kwargs = model_source(sources.decoder or sources.encoder)
    with quiet_transformers():
        try:
            decoder_config = AutoConfig.from_pretrained(decoder_source, trust_remote_code=trust_remote_code)
            decoder_config.is_decoder, decoder_config.add_cross_attention = True, True
            encoder = AutoModel.from_pretrained(encoder_source, dtype=torch.float32, trust_remote_code=trust_remote_code, **encoder_kwargs)
            decoder, loading = AutoModelForCausalLM.from_pretrained(
                decoder_source, config=decoder_config, dtype=torch.float32, trust_remote_code=trust_remote_code,
                output_loading_info=True, **decoder_kwargs,
            )  # fmt: skip
        except Exception as exc:  # config, safetensors, torch and hub errors share no base class; all mean "unloadable"
            raise DataError(f"{sources.decoder or sources.encoder}: could not warm-start an encoder-decoder ({first_line(exc)})") from exc
        tokenizer = _tokenizer(encoder_source, trust_remote_code)
        if decoder_source != encoder_source and _tokenizer(decoder_source, trust_remote_code).get_vocab() != tokenizer.get_vocab():
            raise DataError(
                f"model.decoder: {sources.decoder} has another vocabulary than model.encoder {sources.encoder}; "
                "warm-start both from checkpoints of one tokenizer"
            )
        model = EncoderDecoderModel(encoder=encoder, decoder=decoder)
    start = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
    eos = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
    if start is None or eos is None or tokenizer.pad_token_id is None:
        raise DataError(f"{sources.encoder}: a warm start needs a tokenizer with cls (or bos), sep (or eos) and pad tokens")
    for config in (model.config, model.generation_config):
        config.decoder_start_token_id, config.eos_token_id, config.pad_token_id = start, eos, tokenizer.pad_token_id
    model.config.vocab_size = decoder.config.vocab_size
    parameters = {name for name, _ in model.named_parameters()}  # a missing tied alias is no weight of its own
    return model, tokenizer, sorted(n for n in (f"decoder.{key}" for key in loading["missing_keys"]) if n in parameters)


def _tokenizer(source: str, trust_remote_code: bool, file_kwargs: dict[str, Any] | None = None) -> Any:
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code, **(file_kwargs or {}))
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(f"{source}: could not load the tokenizer ({first_line(exc)}); give a dir with tokenizer files") from exc
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token  # labels mask padding out, and the encoder's attention mask does too
    return tokenizer
