"""Causal fine-tuning examples (`task: causal_lm`, `seqlm.tasks.completion_finetuning`): one record →
token ids and labels, the loss on the completion (or the assistant turns) only.

Records (a JSON object each; `record_from(row, where)` checks them, DataError `FILE:LINE: ...` otherwise):
- `{"prompt": str, "completion": str}`: the completion follows the prompt. With a chat template (`chat=True`) the
  pair is rendered as one user message and one assistant message.
- `{"messages": [{"role": ..., "content": str}, ...]}`: a conversation, rendered with the tokenizer's chat template
  (`chat` must be true); every assistant message is a completion, and at least one is needed.

`completion_rows(record, tokenizer, chat)` gives (input_ids, labels): labels are IGNORE_INDEX outside the
completions. How the completions are found in a chat rendering: for each assistant message, the template renders
the conversation before it with the generation prompt (A) and the conversation through it (B); the turn is the
text B[len(A):], its end-of-turn token included (so the model learns to stop). The whole conversation is rendered
once, tokenized with character offsets (its special tokens are in the text: none is added), and a token is a
completion token when it starts inside one of those spans. A template whose renderings are not prefixes of one
another (B does not start with A, or the whole does not start with B) cannot be masked so: DataError.
Without a chat template: prompt ids (with the tokenizer's own leading special tokens, e.g. a bos) + completion ids
+ eos, the labels on the completion and the eos.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from seqlm.data.masking import IGNORE_INDEX
from seqlm.errors import DataError
from seqlm.tasks.seq2seq_prompts import _appended_special_tokens  # T5-style tokenizers append an eos

ROLES = ("system", "user", "assistant", "tool")


@dataclass(frozen=True)
class CompletionRecord:
    messages: tuple[dict[str, str], ...]  # the conversation; a prompt/completion pair is [user, assistant]
    where: str  # FILE:LINE, for messages
    pair: bool  # read from prompt/completion (rendered without a template as prompt + completion)


def record_from(row: dict[str, Any], where: str, prompt_field: str = "prompt", completion_field: str = "completion") -> CompletionRecord:
    """The record of one JSON object (see the module docstring); `prompt_field` / `completion_field` name the pair's
    fields (data.prompt_field / completion_field, e.g. a seq2seq file's source / target)."""
    if "messages" in row:
        messages = row["messages"]
        if not isinstance(messages, list) or not messages:
            raise DataError(f"{where}: field 'messages' must be a non-empty list of {{role, content}} objects")
        checked = []
        for index, message in enumerate(messages, 1):
            if not isinstance(message, dict) or message.get("role") not in ROLES or not isinstance(message.get("content"), str):
                raise DataError(
                    f"{where}: message {index} must be an object with a role ({', '.join(ROLES)}) and a string content (got {message!r:.80})"
                )
            checked.append({"role": message["role"], "content": message["content"]})
        if not any(message["role"] == "assistant" for message in checked):
            raise DataError(f"{where}: no assistant message: nothing to learn from this conversation; add the answer or drop the line")
        return CompletionRecord(tuple(checked), where, pair=False)
    for key in (prompt_field, completion_field):
        if not isinstance(row.get(key), str) or not row[key].strip():
            fields = ", ".join(repr(name) for name in row) or "none"
            text = "; plain text to continue pretraining on: set data.format: text" if "text" in row else ""
            raise DataError(
                f"{where}: field {key!r} missing or not a non-empty string (fields: {fields}); give {prompt_field} and "
                f"{completion_field} (data.prompt_field / completion_field), or messages{text}"
            )
    pair = ({"role": "user", "content": row[prompt_field]}, {"role": "assistant", "content": row[completion_field]})
    return CompletionRecord(pair, where, pair=True)


def completion_rows(record: CompletionRecord, tokenizer: Any, chat: bool) -> tuple[list[int], list[int]]:
    """(input_ids, labels) of one record, the labels IGNORE_INDEX outside its completions."""
    if not chat:
        if not record.pair:
            raise DataError(f"{record.where}: a messages record needs a tokenizer with a chat template; give prompt and completion")
        prompt = tokenizer(record.messages[0]["content"], add_special_tokens=True)["input_ids"]
        prompt = prompt[: len(prompt) - _appended_special_tokens(tokenizer)]
        completion = [*tokenizer(record.messages[1]["content"], add_special_tokens=False)["input_ids"], tokenizer.eos_token_id]
        return [*prompt, *completion], [IGNORE_INDEX] * len(prompt) + completion
    spans = _assistant_spans(record, tokenizer)
    text = _render(tokenizer, record.messages, generation_prompt=False)
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    labels = [
        token if any(start <= begin < end for start, end in spans) else IGNORE_INDEX
        for token, (begin, _) in zip(encoded["input_ids"], encoded["offset_mapping"])
    ]
    return list(encoded["input_ids"]), labels


def _assistant_spans(record: CompletionRecord, tokenizer: Any) -> list[tuple[int, int]]:
    """[start, end) character spans of the assistant turns in the whole conversation's rendering."""
    whole = _render(tokenizer, record.messages, generation_prompt=False)
    spans = []
    for index, message in enumerate(record.messages):
        if message["role"] != "assistant":
            continue
        before = _render(tokenizer, record.messages[:index], generation_prompt=True)
        through = _render(tokenizer, record.messages[: index + 1], generation_prompt=False)
        if not through.startswith(before) or not whole.startswith(through):
            raise DataError(
                f"{record.where}: the chat template renders message {index + 1} differently inside the conversation than after "
                "the generation prompt; the assistant turns cannot be told apart for the loss (use prompt/completion records)"
            )
        spans.append((len(before), len(through)))
    return spans


def _render(tokenizer: Any, messages: tuple[dict[str, str], ...], generation_prompt: bool) -> str:
    if not messages:
        return ""
    return tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=generation_prompt)

