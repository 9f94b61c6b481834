"""A decoder-only model's prompts run in short slices, then decode as one batch (`seqlm.tasks.seq2seq_decoding`).

Why: on a CPU a prompt's forward pass is bound by arithmetic, so every padding position it carries costs as much
as a real token; a decoding step of a few rows is bound by reading the weights, so it costs about as much for 8
rows as for 32. One left-padded batch of prompts of mixed lengths therefore pays twice: for padding in the
prompt pass and for too few rows per step. Here the prompts of a group (similar lengths, longest first) run
`slice_rows` at a time, each slice cut to its own longest prompt, and their keys and values are written into
one cache laid out exactly as one left-padded forward pass of the whole group would have left it; every later
step then runs the whole group. The cache is allocated once for the prompt and every new token (`ReservedLayer`),
so a step writes one position instead of copying the whole cache as `DynamicCache`'s concatenation does.

Contract of `prefill(model, input_ids, attention_mask, positions, ...)`: the next-token logits of every row
(float32, rows × vocabulary) and a cache equal, position for position, to what one forward pass over the
left-padded group would have cached at every real position (a row's padding positions stay masked; the
columns a slice cut hold zeros).
`cache_supported` says when the model's cache can be laid out so: plain per-layer keys and values, no sliding
windows or other layer kinds (`prefill` also returns no cache when a layer was left empty, e.g. shared keys).
"""

from __future__ import annotations

from typing import Any

import torch
from transformers.cache_utils import Cache, DynamicCache, DynamicLayer

PADDING_CUT = 0.75  # a slice ends before a prompt shorter than this share of the slice's longest


class ReservedLayer(DynamicLayer):
    """One layer's keys and values in buffers reserved for `capacity` positions; `update` writes the new
    positions in place and returns views of the filled part."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, filled: int) -> None:
        super().__init__()
        self.buffer_keys, self.buffer_values = keys, values
        self.is_initialized = True
        self.fill_to(filled)

    def _views(self) -> None:
        self.keys = self.buffer_keys[:, :, : self.filled]
        self.values = self.buffer_values[:, :, : self.filled]

    def fill_to(self, filled: int) -> None:
        """The first `filled` positions hold states (written into the buffers directly)."""
        self.filled = filled
        self._views()

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        new = key_states.shape[-2]
        if self.filled + new > self.buffer_keys.shape[-2]:
            raise RuntimeError(f"reserved cache of {self.buffer_keys.shape[-2]} positions is full")
        self.buffer_keys[:, :, self.filled : self.filled + new] = key_states
        self.buffer_values[:, :, self.filled : self.filled + new] = value_states
        self.filled += new
        self._views()
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.filled

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        """The rows `indices` (repeats allowed), copying their filled positions only, into the buffers' first
        rows where they fit (no new buffers: a large fresh allocation costs its page faults at every select)."""
        self.buffer_keys, self.buffer_values = (self._select(buffer, indices) for buffer in (self.buffer_keys, self.buffer_values))
        self._views()

    def _select(self, buffer: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        chosen = buffer[indices, :, : self.filled]
        kept = buffer[: len(indices)] if len(indices) <= buffer.shape[0] else buffer.new_empty((len(indices), *buffer.shape[1:]))
        kept[:, :, : self.filled] = chosen
        return kept

    def batch_repeat_interleave(self, repeats: int) -> None:
        self.buffer_keys = self.buffer_keys.repeat_interleave(repeats, dim=0)
        self.buffer_values = self.buffer_values.repeat_interleave(repeats, dim=0)
        self._views()

    def crop(self, tokens_to_remove: int) -> None:
        raise NotImplementedError("a reserved cache is not cropped")


def cache_supported(model: Any) -> bool:
    """Whether the model's cache is plain keys and values in every layer (`DynamicLayer` itself, as transformers
    lays it out for the model's config)."""
    try:
        layers = DynamicCache(config=model.config).layers
    except Exception:  # a config transformers cannot lay a cache out for: not this path's to guess
        return False
    return all(type(layer) is DynamicLayer for layer in layers)


def prompt_slices(attention_mask: torch.Tensor, slice_rows: int) -> list[tuple[int, int]]:
    """(first, end) row ranges of at most `slice_rows` consecutive prompts (longest first), a new slice
    starting where a prompt is shorter than `PADDING_CUT` of its slice's longest (less padding to compute)."""
    lengths = attention_mask.sum(dim=1).tolist()
    slices: list[tuple[int, int]] = []
    first = 0
    for row in range(1, len(lengths) + 1):
        if row == len(lengths) or row - first == slice_rows or lengths[row] < PADDING_CUT * lengths[first]:
            slices.append((first, row))
            first = row
    return slices


def prefill(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    positions: torch.Tensor,
    capacity: int,
    slice_rows: int,
    cache_key: str,
    extra: dict[str, Any],
) -> tuple[torch.Tensor, Cache] | tuple[None, None]:
    """Logits of each row's next token and the group's cache (see the module docstring); (None, None) when a
    layer's cache came back empty (the caller then runs the group's prompt as one batch)."""
    rows, width = input_ids.shape
    layers: list[ReservedLayer] = []
    logits: list[torch.Tensor] = []
    for first, end in prompt_slices(attention_mask, slice_rows):
        # The slice's own left padding, cut (one column kept for a slice of empty prompts, as one pass would run it).
        start = min(width - int(attention_mask[first:end].sum(dim=1).max()), width - 1)
        part = DynamicCache()
        output = model(
            input_ids=input_ids[first:end, start:], attention_mask=attention_mask[first:end, start:],
            position_ids=positions[first:end, start:], **{cache_key: part}, use_cache=True, **extra,
        )  # fmt: skip
        if not all(layer.is_initialized for layer in part.layers):
            return None, None
        if not layers:
            layers = [_reserve(layer, rows, capacity) for layer in part.layers]
        for layer, filled in zip(layers, part.layers):
            layer.buffer_keys[first:end, :, start:width] = filled.keys
            layer.buffer_values[first:end, :, start:width] = filled.values
        logits.append(output.logits[:, -1, :].to(torch.float32))
        del part, output
    for layer in layers:
        layer.fill_to(width)
    return torch.cat(logits), Cache(layers=layers)


def _reserve(like: DynamicLayer, rows: int, capacity: int) -> ReservedLayer:
    """A zeroed layer for `rows` × `capacity` positions shaped like `like`'s keys and values."""
    keys, values = like.keys, like.values
    return ReservedLayer(
        keys.new_zeros((rows, keys.shape[1], capacity, keys.shape[3])),
        values.new_zeros((rows, values.shape[1], capacity, values.shape[3])),
        0,
    )


def cache_bytes_per_token(config: Any) -> int | None:
    """Bytes of keys and values one position of a decoder-only model's cache takes at float32; None when the
    config does not say (then groups are not merged)."""
    text = config.get_text_config(decoder=True)
    layers, heads, hidden = (getattr(text, name, None) for name in ("num_hidden_layers", "num_attention_heads", "hidden_size"))
    if not all(isinstance(value, int) and value > 0 for value in (layers, heads, hidden)):
        return None
    kv_heads = getattr(text, "num_key_value_heads", None) or heads
    head_dim = getattr(text, "head_dim", None) or hidden // heads
    return layers * 2 * kv_heads * head_dim * 4


def decode_groups(lengths: list[int], batch_size: int, new_tokens: int, budget_tokens: int) -> list[list[int]]:
    """Input indices by length, longest first (ties in input order), in groups that decode as one: at least
    `batch_size` prompts (or what is left), and more while rows × (longest prompt + `new_tokens`) stays within
    `budget_tokens` cache positions."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    groups: list[list[int]] = []
    while order:
        width = lengths[order[0]] + new_tokens
        take = max(batch_size, budget_tokens // width)
        groups.append(order[:take])
        order = order[take:]
    return groups
