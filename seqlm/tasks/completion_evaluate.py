"""`seqlm evaluate` of a causal LM fine-tuned by `task: causal_lm` (or a decoder-only `task: seq2seq` model) on
the records `causal_lm` trains on: prompt/completion and chat `messages` JSON Lines (`seqlm.io.completion_records`).

Contract: `reads_completions(path, source_field)` says whether the file holds such records (its first record has
`messages`, or `prompt` and `completion` but no `source_field`); `seqlm.tasks.seq2seq_inference.evaluate` then
hands over to `evaluate` here. Each record becomes the row training made of it (`completion_finetuning.encode`:
the chat template's rendering or prompt + completion + eos, the loss on the completions), cut to `seq_len`
(default: the model's positions) as training cuts rows to `training.max_length`; the metrics are those of training's
validation (`completion_finetuning.score`): loss and perplexity over the completion tokens, and on the greedy (or
`generation:`) continuation of each record's prompt up to its last completion: exact_match, ROUGE-L, BLEU,
gen_len. A prompt longer than the positions left after `generation.max_new_tokens` keeps its end (counted).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from seqlm.config.inference import EvaluateConfig
from seqlm.console import Console
from seqlm.data.example_batches import ExampleBatches
from seqlm.errors import ConfigError
from seqlm.io import records
from seqlm.io.completion_records import read_completions
from seqlm.models.loading import LoadedModel
from seqlm.runtime.device import Precision
from seqlm.runtime.distributed import Cluster
from seqlm.tasks.completion_finetuning import encode, last_completion, score
from seqlm.tasks.objectives import OBJECTIVES
from seqlm.tasks.seq2seq_generation import GenerationCheck


def reads_completions(path: Path, source_field: str) -> bool:
    """Whether `path` is a JSON Lines file of causal_lm records (see the module docstring)."""
    row = records.first_jsonl_record(path)
    return row is not None and ("messages" in row or ("prompt" in row and "completion" in row and source_field not in row))


def evaluate(
    loaded: LoadedModel, config: EvaluateConfig, precision: Precision, device: torch.device, console: Console, cluster: Cluster
) -> dict[str, Any]:
    """Training's validation metrics on the records of `config.data` (see the module docstring)."""
    examples = read_completions(str(config.data))
    if config.max_batches is not None:
        examples = examples.subset(range(min(len(examples), config.max_batches * config.batch_size)))
    tokenizer, positions, new_tokens = loaded.tokenizer, loaded.max_positions, config.generation.max_new_tokens
    if config.seq_len is not None and positions is not None and config.seq_len > positions:
        raise ConfigError(f"seq_len ({config.seq_len}) exceeds the model's {positions} positions; set it to {positions} or less")
    row_limit = config.seq_len or positions or 1 << 30
    prompt_limit = (positions or 1 << 30) - new_tokens
    if prompt_limit < 1:
        raise ConfigError(
            f"generation.max_new_tokens ({new_tokens}) leaves no room for a prompt in the model's {positions} positions; lower it"
        )
    encoded, prompts, cut = encode(examples, tokenizer, "completion", row_limit)
    cut_prompts = sum(len(prompt) > prompt_limit for prompt in prompts)
    prompts = [prompt[len(prompt) - prompt_limit :] if len(prompt) > prompt_limit else prompt for prompt in prompts]
    chat = bool(getattr(tokenizer, "chat_template", None))
    console.info(
        f"evaluate causal_lm: {config.model} on {config.data}, {len(examples)} records rendered "
        f"{'with the chat template' if chat else 'as prompt + completion + eos'}, rows cut at {row_limit} tokens"
    )
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    batches = ExampleBatches({"test": encoded}, int(pad_id), config.batch_size, 1, 0).evaluation("test")
    references = [(last_completion(record),) for record in examples]
    check = GenerationCheck(batches, prompts, references, config.generation, tokenizer, config.batch_size, config.seed)
    metrics = score(loaded.model, OBJECTIVES["seq2seq"], check, [], precision, device, cluster)
    return {
        "model": str(config.model), "data": str(config.data), "objective": "causal_lm", "examples": len(examples), **metrics,
        "truncated_records": cut, "truncated_prompts": cut_prompts, "generation": config.generation.model_dump(),
    }  # fmt: skip
