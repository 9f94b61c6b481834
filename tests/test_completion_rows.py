"""Causal fine-tuning rows (seqlm.tasks.completion_rows): the loss mask covers exactly the completion tokens, checked
against the chat template's own rendering, for prompt/completion and multi-turn chat records; bad records are one-line
data errors."""

from __future__ import annotations

import copy

import pytest

from seqlm.data.masking import IGNORE_INDEX
from seqlm.errors import DataError
from seqlm.tasks.completion_rows import completion_rows, record_from

# A template in the ChatML style of SmolLM2 (its end-of-turn token is the tokenizer's eos here).
CHAT_TEMPLATE = (
    "{% for m in messages %}<|pad|>{{ m['role'] }}\n{{ m['content'] }}<|endoftext|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|pad|>assistant\n{% endif %}"
)


@pytest.fixture
def chat_tokenizer(tiny_tokenizer):  # noqa: ANN001, ANN201
    tokenizer = copy.deepcopy(tiny_tokenizer("bpe"))
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def _labelled_text(tokenizer, ids: list[int], labels: list[int]) -> str:  # noqa: ANN001
    assert len(ids) == len(labels) and all(label in (IGNORE_INDEX, token) for token, label in zip(ids, labels))
    return tokenizer.decode([label for label in labels if label != IGNORE_INDEX])


def test_a_conversation_trains_on_each_assistant_turn_and_its_end_of_turn(chat_tokenizer) -> None:  # noqa: ANN001
    record = record_from({"messages": [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Who wrote Emma?"},
        {"role": "assistant", "content": "Jane Austen."}, {"role": "user", "content": "When?"},
        {"role": "assistant", "content": "In 1815."},
    ]}, "chat.jsonl:1")  # fmt: skip
    ids, labels = completion_rows(record, chat_tokenizer, chat=True)
    rendered = chat_tokenizer.apply_chat_template(list(record.messages), tokenize=False)
    assert chat_tokenizer.decode(ids) == rendered  # the ids are the template's rendering, nothing added
    assert _labelled_text(chat_tokenizer, ids, labels) == "Jane Austen.<|endoftext|>\nIn 1815.<|endoftext|>\n"
    assert "Who wrote" not in _labelled_text(chat_tokenizer, ids, labels)


def test_a_prompt_completion_pair_with_a_chat_template_is_one_exchange(chat_tokenizer) -> None:  # noqa: ANN001
    record = record_from({"prompt": "Summarise: a long text", "completion": "A text."}, "pairs.jsonl:3")
    ids, labels = completion_rows(record, chat_tokenizer, chat=True)
    assert _labelled_text(chat_tokenizer, ids, labels) == "A text.<|endoftext|>\n"
    assert chat_tokenizer.decode(ids).endswith("<|pad|>assistant\nA text.<|endoftext|>\n")


def test_without_a_chat_template_the_completion_and_eos_follow_the_prompt(tiny_tokenizer) -> None:  # noqa: ANN001
    tokenizer = tiny_tokenizer("bpe")
    ids, labels = completion_rows(record_from({"prompt": "Q: who?", "completion": " Emma"}, "x:1"), tokenizer, chat=False)
    prompt = tokenizer("Q: who?", add_special_tokens=False)["input_ids"]
    assert ids[: len(prompt)] == prompt and labels[: len(prompt)] == [IGNORE_INDEX] * len(prompt)
    assert labels[len(prompt) :] == ids[len(prompt) :] and ids[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(ids[len(prompt) : -1]) == " Emma"


@pytest.mark.parametrize(
    ("row", "says"),
    [
        ({"messages": [{"role": "user", "content": "hi"}]}, "chat.jsonl:2: no assistant message"),
        ({"messages": [{"role": "bot", "content": "hi"}]}, "chat.jsonl:2: message 1 must be an object with a role"),
        ({"messages": []}, "field 'messages' must be a non-empty list"),
        ({"prompt": "hi", "answer": "yo"}, "field 'completion' missing or not a non-empty string (fields: 'prompt', 'answer')"),
    ],
)
def test_bad_records_are_one_line_data_errors(row: dict, says: str) -> None:
    with pytest.raises(DataError, match=says.replace("(", r"\(").replace(")", r"\)")):
        record_from(row, "chat.jsonl:2")


def test_a_conversation_needs_a_chat_template(tiny_tokenizer) -> None:  # noqa: ANN001
    record = record_from({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}, "c.jsonl:4")
    with pytest.raises(DataError, match="c.jsonl:4: a messages record needs a tokenizer with a chat template"):
        completion_rows(record, tiny_tokenizer("bpe"), chat=False)
