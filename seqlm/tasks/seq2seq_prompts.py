"""Prompts of decoder-only seq2seq models: a causal LM trained on `prompt + target` (`seqlm.tasks.seq2seq`).

A `PromptFormat` turns a source into the text the model continues:
- a template (`data.prompt_template`, default "{source}\\n"): "{source}" replaced by the source (other braces are
  kept as written), tokenized with the tokenizer's own special tokens (a Llama's bos) but without an eos it
  appends (T5-style tokenizers), which would tell the model the text is over;
- the tokenizer's chat template, when it has one and no template is set: the source as the user message,
  rendered with the generation prompt; the rendered text holds its special tokens, so nothing is added.
Training rows (`encode_split`) are prompt + target + eos, labels IGNORE_INDEX on the prompt (and, by the batcher,
on padding), so the loss is on the target alone. The target's ids: with a chat template, those the template
renders for the assistant message up to its first eos (so the model learns the template's end of turn); with a
template, the target tokenized on its own. Either way it ends with eos, and is cut to its limit keeping that eos.

Cutting a prompt keeps its beginning and the template's tail (the tokens after the source: "\\n", or the chat's
assistant header), which cue the answer: a limit must leave room for the tail (ConfigError otherwise).

The format travels with the saved model: `metadata()` goes into config.json as its "seqlm" entry, with the head
`prompted_lm` (`seqlm.models.heads`), so `seqlm evaluate` / `predict` find the seq2seq task and `of_model`
rebuilds the same format. transformers' text-generation pipeline, given `texts(...)` of an input (and the
tokenizer's special tokens, `add_special_tokens=True`, where it adds a bos), sees the same prompt ids.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from seqlm.data.example_batches import EncodedExamples
from seqlm.data.masking import IGNORE_INDEX
from seqlm.errors import ConfigError
from seqlm.io.seq2seq_records import Seq2SeqRecords
from seqlm.models.heads import MARKER_KEY, PROMPTED_HEAD
from seqlm.tasks.seq2seq_generation import cut_rows

SOURCE = "{source}"
DEFAULT_TEMPLATE = SOURCE + "\n"
_MARK = "\ue000seqlm-source\ue000"  # stands for the source where the template's tail is measured


@dataclass(frozen=True)
class PromptFormat:
    template: str | None  # None: the tokenizer's chat template

    @classmethod
    def choose(cls, template: str | None, tokenizer: Any) -> PromptFormat:
        """`template` as set; unset: the tokenizer's chat template when it has one, else DEFAULT_TEMPLATE."""
        if template is None and getattr(tokenizer, "chat_template", None):
            return cls(None)
        return cls(template if template is not None else DEFAULT_TEMPLATE)

    @classmethod
    def of_model(cls, model_config: Any) -> PromptFormat | None:
        """The format a decoder-only seq2seq model was trained with (its config.json "seqlm" entry); None for others."""
        saved = getattr(model_config, MARKER_KEY, None)
        if not isinstance(saved, dict) or saved.get("head") != PROMPTED_HEAD:
            return None
        return cls(None if saved.get("chat_template") else saved.get("prompt_template") or DEFAULT_TEMPLATE)

    def metadata(self) -> dict[str, Any]:
        return {"head": PROMPTED_HEAD, "task": "seq2seq", "prompt_template": self.template, "chat_template": self.template is None}

    def describe(self) -> str:
        return "the tokenizer's chat template" if self.template is None else f"prompt template {self.template!r}"

    # ----------------------------------------------------------------------- text and ids

    def texts(self, tokenizer: Any, sources: list[str]) -> list[str]:
        """The prompt text of each source (what a text-generation pipeline is fed)."""
        if self.template is None:
            return [
                tokenizer.apply_chat_template([{"role": "user", "content": source}], tokenize=False, add_generation_prompt=True)
                for source in sources
            ]  # fmt: skip
        return [self.template.replace(SOURCE, source) for source in sources]

    def encode_prompts(self, tokenizer: Any, sources: list[str], limit: int | None, key: str) -> tuple[list[list[int]], int]:
        """Prompt ids of each source, cut to `limit` (see the module docstring), and how many were cut.
        `key` names the limit's setting in the message when it leaves no room for the template's tail."""
        rows = self._tokenize(tokenizer, self.texts(tokenizer, sources))
        if self.template is not None:
            drop = _appended_special_tokens(tokenizer)
            rows = [ids[: len(ids) - drop] if drop else ids for ids in rows]
        if limit is None:
            return rows, 0
        tail_text = self.texts(tokenizer, [_MARK])[0].split(_MARK)[-1]
        tail = len(tokenizer(tail_text, add_special_tokens=False)["input_ids"])
        if tail >= limit:
            raise ConfigError(
                f"{key} ({limit}) leaves no room for the source: the prompt's end after the source takes {tail} tokens; raise it"
            )
        cut = [ids if len(ids) <= limit else [*ids[: limit - tail], *ids[len(ids) - tail :]] for ids in rows]
        return cut, sum(len(ids) > limit for ids in rows)

    def encode_targets(self, tokenizer: Any, sources: list[str], targets: list[str]) -> list[list[int]]:
        """Target ids, each ending with eos (uncut)."""
        eos = tokenizer.eos_token_id
        if self.template is None:
            rows = []
            for source, target in zip(sources, targets):
                prompt = self.texts(tokenizer, [source])[0]
                full = tokenizer.apply_chat_template(
                    [{"role": "user", "content": source}, {"role": "assistant", "content": target}], tokenize=False
                )  # fmt: skip
                # A template that renders the prompt differently inside a conversation: the target text alone.
                answer = full[len(prompt) :] if full.startswith(prompt) else target
                ids = self._tokenize(tokenizer, [answer])[0]
                rows.append(ids[: ids.index(eos) + 1] if eos in ids else [*ids, eos])
            return rows
        rows = tokenizer(targets, add_special_tokens=False, verbose=False)["input_ids"]
        return [[*ids, eos] for ids in rows]

    def encode_split(
        self, tokenizer: Any, examples: Seq2SeqRecords, max_prompt: int | None, max_target: int, key: str
    ) -> tuple[EncodedExamples, int, int]:
        """One split as causal-LM rows: input_ids = prompt + target, labels (a per-token target) IGNORE_INDEX on
        the prompt; and how many prompts and targets were cut."""
        sources = [e.source for e in examples]
        prompts, cut_prompts = self.encode_prompts(tokenizer, sources, max_prompt, key)
        targets, cut_targets = cut_rows(self.encode_targets(tokenizer, sources, [e.target or "" for e in examples]),
                                        max_target, tokenizer.eos_token_id)  # fmt: skip
        ids = [np.asarray([*prompt, *target], dtype=np.int64) for prompt, target in zip(prompts, targets)]
        labels = [np.asarray([IGNORE_INDEX] * len(prompt) + target, dtype=np.int64) for prompt, target in zip(prompts, targets)]
        rows = {"input_ids": ids, "attention_mask": [np.ones(len(row), dtype=np.int64) for row in ids]}
        return EncodedExamples(rows, {"labels": labels}, truncated=cut_prompts + cut_targets), cut_prompts, cut_targets

    def _tokenize(self, tokenizer: Any, texts: list[str]) -> list[list[int]]:
        # A rendered chat template already holds its special tokens.
        return tokenizer(texts, add_special_tokens=self.template is not None, verbose=False)["input_ids"]


def _appended_special_tokens(tokenizer: Any) -> int:
    """How many special tokens the tokenizer appends to a text (T5's eos: 1; GPT-2, Llama: 0)."""
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    special = tokenizer("a", add_special_tokens=True)["input_ids"]
    for start in range(len(special) - len(plain) + 1):
        if special[start : start + len(plain)] == plain:
            return len(special) - start - len(plain)
    return 0
