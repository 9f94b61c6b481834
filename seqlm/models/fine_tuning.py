"""The model `seqlm finetune` trains: a pretrained body with a task's head (`seqlm.models.heads`).

`load_with_head` loads any HF-format model dir or hub id with the head (sequence or token
classification) for the given labels (string labels in `config.json`), with a tokenizer that has a
pad token; `freeze` applies `training.freeze`; `load_saved` reads back what the run saved.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from seqlm.errors import ConfigError, DataError, first_line
from seqlm.models.heads import auto_class, detect_head, supports
from seqlm.models.loading import ModelSource, max_positions, model_source, quiet_transformers


def load_with_head(
    model: str, head: str, names: list[str], max_length: int, trust_remote_code: bool = False
) -> tuple[Any, Any, list[str]]:
    """`model` with `head` for the labels `names`, its tokenizer (with a pad token), and the names
    of the weights that were newly initialised (the head, and any the checkpoint lacks)."""
    from transformers import AutoConfig, AutoTokenizer

    source, load_kwargs = found = model_source(model)
    with quiet_transformers():
        try:
            config = AutoConfig.from_pretrained(
                source,
                **found.file_kwargs,
                num_labels=len(names),
                id2label=dict(enumerate(names)),
                label2id={name: i for i, name in enumerate(names)},
                **({"problem_type": "single_label_classification"} if head == "sequence_classification" else {}),
                trust_remote_code=trust_remote_code,
            )
        except (OSError, ValueError, KeyError) as exc:
            raise DataError(f"{model}: could not load the model config ({first_line(exc)}); check the path or hub id") from exc
        if not supports(config, head):
            raise DataError(f"{model}: a {type(config).__name__} model has no {head.replace('_', '-')} head in transformers")
        positions = max_positions(config)
        if positions is not None and max_length > positions:
            raise ConfigError(
                f"training.max_length ({max_length}) exceeds the model's {positions} positions; set it to {positions} or less"
            )
        try:
            tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code, **found.file_kwargs)
        except (OSError, ValueError, KeyError) as exc:
            raise DataError(f"{model}: could not load the tokenizer ({first_line(exc)}); the dir needs tokenizer files") from exc
        if tokenizer.pad_token is None:
            if tokenizer.eos_token is None:
                raise DataError(f"{model}: the tokenizer has neither a pad nor an eos token; add a pad token to it")
            tokenizer.pad_token = tokenizer.eos_token  # padding is masked, and pooling skips it (pad_token_id below)
        config.pad_token_id = tokenizer.pad_token_id  # GPT-style last-token pooling finds the last non-pad token
        if positions is not None and tokenizer.model_max_length > positions:
            tokenizer.model_max_length = positions  # so `truncation=True` (e.g. in a pipeline) fits the model
        try:
            load_kwargs["trust_remote_code"] = trust_remote_code
            loaded, info = _from_pretrained(auto_class(head), found, config)
        except Exception as exc:  # safetensors, torch and hub errors share no base class; all mean "unloadable"
            raise DataError(
                f"{model}: could not load the weights ({first_line(exc)}); re-save the model with save_pretrained"
            ) from exc
    new_weights = sorted(set(info.get("missing_keys") or []) | {key[0] for key in info.get("mismatched_keys") or []})
    return loaded, tokenizer, new_weights


def load_saved(directory: Path, head: str) -> Any:
    """A model `seqlm finetune` saved (best/ or model/), as plain transformers loads it: with the head its config
    names (`detect_head`; a task may train more than one kind, e.g. seq2seq), else `head`."""
    from transformers import AutoConfig

    with quiet_transformers():
        saved = detect_head(AutoConfig.from_pretrained(directory))
        return auto_class(saved or head).from_pretrained(directory, dtype=torch.float32)


def freeze(model: Any, mode: str, new_weights: list[str]) -> tuple[int, int]:
    """Stop gradients per `training.freeze`; returns (trainable, total) parameter counts.

    embeddings: the base model's embeddings (BERT's embeddings block; else its nn.Embedding
    layers). body: every pretrained weight, so only the head — and any weight the checkpoint
    lacked, e.g. BERT's pooler after masked-LM pretraining — is trained.
    """
    if mode == "embeddings":
        base = model.base_model
        blocks = (
            [base.embeddings]
            if isinstance(getattr(base, "embeddings", None), torch.nn.Module)
            else [module for module in base.modules() if isinstance(module, torch.nn.Embedding)]
        )
        for block in blocks:
            block.requires_grad_(False)
    elif mode == "body":
        new = set(new_weights)
        body = {id(param) for param in model.base_model.parameters()}
        for name, param in model.named_parameters():
            param.requires_grad_(id(param) not in body or name in new)
    trainable = sum(param.numel() for param in model.parameters() if param.requires_grad)
    if trainable == 0:
        raise ConfigError(f"training.freeze {mode}: no parameter is left to train; use freeze: none or embeddings")
    return trainable, sum(param.numel() for param in model.parameters())


def _from_pretrained(auto_class: Any, found: ModelSource, config: Any) -> tuple[Any, dict[str, Any]]:
    kwargs = {"config": config, "dtype": torch.float32, "ignore_mismatched_sizes": True, "output_loading_info": True}
    try:
        return found.load(auto_class, attn_implementation="sdpa", **kwargs)
    except ValueError as exc:
        if "sdpa" not in str(exc).lower() and "scaled_dot_product" not in str(exc).lower():
            raise
        return found.load(auto_class, **kwargs)  # an architecture without SDPA support: its default
