"""T5's decoder step written out for generation (`seqlm.tasks.seq2seq_decoding.model_steps`).

Why: a small T5's decoding step on a CPU carries much besides its matmuls and attention. Through the HF module
tree it runs 155 top-level operators (601 with the ones they call), under every module's Python wrappers: both
attention masks rebuilt, the relative position bias recomputed from its buckets, the self-attention cache
concatenated. Here the same arithmetic, on the model's own weights and modules, runs as 95 (537): the relative
position bias is looked up once per distance for every step to come, the source keys and values and the
source mask are made once, and each step writes its keys and values into a cache reserved for all new tokens.
On the bench T5 a 32-row step took 3.70 ms against 5.13.

The source side is kept per slice: the runs of rows the encoder took together, each cut to its own longest
source (`seq2seq_decoding.EncoderDecoderSteps.source_states`), cross-attention one slice at a time. A merged
group of hundreds of rows then reads the decoder's weights once a step for all of them, without attending over
the padding of the group's longest source (a group sorted by length pads its sources by ~7%, one padded
rectangle by up to 3x); a row leaving copies its own slice's source only.

Contract: `T5DecoderSteps` is a drop-in for `EncoderDecoderSteps` (`history`, `logits`, `select`, `advance`):
the same arithmetic in the same order on the same tensors as `T5ForConditionalGeneration` with SDPA attention
(its RMS norms as one fused operator), so a step's logits equal the model's on the same batch (tested bit for
bit in fp32, and under bf16 autocast); with several slices, each slice's rows get the model's logits for those
rows run as one batch of that width, to float rounding (a matmul's rounding may change with how many rows it
runs: tested within 1e-6, the same tokens). `supported` says when that holds: a T5-family model (T5, mT5) in eval mode with
SDPA attention, not in float16 (T5's fp16 clamps are not written out here).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from seqlm.tasks.decoder_prefill import ReservedLayer

T5_TYPES = frozenset({"t5", "mt5"})


def is_t5(model: Any) -> bool:
    """A T5-family encoder-decoder (its decoder laid out as `T5DecoderSteps` and `cache_bytes_per_position` read it)."""
    return getattr(model.config, "model_type", None) in T5_TYPES and model.config.is_encoder_decoder


def supported(model: Any) -> bool:
    """True when `T5DecoderSteps` gives the model's own decoder logits (see the module docstring)."""
    return (
        is_t5(model)
        and getattr(model.config, "_attn_implementation", None) == "sdpa"
        and not model.training
        and model.dtype != torch.float16
        and not (torch.is_autocast_enabled(model.device.type) and torch.get_autocast_dtype(model.device.type) == torch.float16)
    )


def cache_bytes_per_position(model: Any) -> int:
    """What one source or new-token position of a row takes in `T5DecoderSteps` at float32: keys and values of
    every decoder layer (`generation.decode_cache_mb` counts merged groups in these)."""
    attention = model.get_decoder().block[0].layer[0].SelfAttention
    return len(model.get_decoder().block) * 2 * attention.n_heads * attention.key_value_proj_dim * 4


class T5DecoderSteps:
    """The source keys and values of every layer are made once from the encoder's states, slice by slice; each
    step feeds the decoder its last token."""

    def __init__(self, model: Any, source: Any, capacity: int) -> None:
        """`source`: the `EncoderDecoderSteps` that ran the encoder, before any `select` (its slices' states, mask
        and start tokens, one row per copy); `capacity`: the most steps to come."""
        decoder = model.get_decoder()
        self.decoder = decoder
        self.lm_head = model.lm_head
        self.output_scale = model.model_dim**-0.5 if model.config.scale_decoder_outputs else None
        first = decoder.block[0].layer[0].SelfAttention
        self.heads, self.head_dim = first.n_heads, first.key_value_proj_dim
        self.slices: list[SourceSlice] = []
        start = 0
        for states in source.source_states:
            rows, width = states.shape[:2]
            mask = source.attention_mask[start : start + rows, :width].bool()[:, None, None, :]
            self.slices.append(SourceSlice([self._source_states(block.layer[1].EncDecAttention, states) for block in decoder.block], mask))
            start += rows
        self.capacity = capacity
        self.layers: list[ReservedLayer] = []  # each layer's self-attention keys and values, reserved at the first step
        self.bias_by_position = _bias_by_position(first, capacity)
        self.history = source.history
        self.decoder_input_ids = self.history

    def _source_states(self, attention: Any, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (states.shape[0], states.shape[1], -1, attention.key_value_proj_dim)
        return attention.k(states).view(shape).transpose(1, 2), attention.v(states).view(shape).transpose(1, 2)

    def logits(self, model: Any) -> torch.Tensor:
        """This step's next-token logits (float32), one row per row."""
        position = self.layers[0].filled if self.layers else 0
        if position >= self.capacity:
            raise RuntimeError(f"T5 decoder cache of {self.capacity} positions is full")
        # As T5Attention.compute_bias for one query at `position`: one bias per key position 0..position.
        self_bias = self.bias_by_position[:, :, :, self.capacity - 1 - position : self.capacity].contiguous()
        hidden = self.decoder.embed_tokens(self.decoder_input_ids)  # dropouts, identities in eval mode, left out
        rows = hidden.shape[0]
        split = (rows, 1, self.heads, self.head_dim)
        for layer, block in enumerate(self.decoder.block):
            self_attention, cross_attention, feed_forward = block.layer
            attention = self_attention.SelfAttention
            normed = _rms_norm(self_attention.layer_norm, hidden)
            query = attention.q(normed).view(split).transpose(1, 2)
            key = attention.k(normed).view(split).transpose(1, 2)
            value = attention.v(normed).view(split).transpose(1, 2)
            if layer == len(self.layers):  # in the dtype attention runs in
                shape = (rows, self.heads, self.capacity, self.head_dim)
                self.layers.append(ReservedLayer(key.new_empty(shape), value.new_empty(shape), position))
            keys, values = self.layers[layer].update(key, value)
            attended = F.scaled_dot_product_attention(query, keys, values, attn_mask=self_bias, scale=attention.scaling)
            hidden = hidden + attention.o(_merge_heads(attended, rows))
            attention = cross_attention.EncDecAttention
            normed = _rms_norm(cross_attention.layer_norm, hidden)
            query = attention.q(normed).view(split).transpose(1, 2)
            attended = self._cross_attention(attention, query, layer)
            hidden = hidden + attention.o(_merge_heads(attended, rows))
            hidden = feed_forward(hidden)
        hidden = _rms_norm(self.decoder.final_layer_norm, hidden)
        if self.output_scale is not None:
            hidden = hidden * self.output_scale
        return self.lm_head(hidden)[:, -1, :].to(dtype=torch.float32)

    def _cross_attention(self, attention: Any, query: torch.Tensor, layer: int) -> torch.Tensor:
        """Attention over each slice's sources (cut to its longest), the slices' rows in order."""
        parts, start = [], 0
        for part in self.slices:
            keys, values = part.states[layer]
            bias = part.bias(query.dtype, keys.dtype, self.heads)
            parts.append(
                F.scaled_dot_product_attention(query[start : start + part.rows], keys, values, attn_mask=bias, scale=attention.scaling)
            )
            start += part.rows
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def select(self, rows: torch.Tensor, source_rows: torch.Tensor | None) -> None:
        """The decoder states of `rows`, in this order, and the source side of `source_rows` (None: unchanged;
        ascending), see `seq2seq_decoding.EncoderDecoderSteps.select`. A slice none of whose rows left is kept
        as it is (no copy)."""
        for layer in self.layers:
            layer.batch_select_indices(rows)
        if source_rows is None:
            return
        kept, start = [], 0
        for part in self.slices:
            inside = source_rows[(source_rows >= start) & (source_rows < start + part.rows)] - start
            start += part.rows
            if len(inside) == part.rows:
                kept.append(part)
            elif len(inside):
                kept.append(part.select(inside))
        self.slices = kept

    def advance(self, last_ids: torch.Tensor) -> None:
        self.decoder_input_ids = last_ids


class SourceSlice:
    """Rows whose sources ran through the encoder together, cut to the longest of them: each layer's source keys
    and values (rows × heads × width × head size) and the source mask (rows × 1 × 1 × width)."""

    def __init__(self, states: list[tuple[torch.Tensor, torch.Tensor]], mask: torch.Tensor) -> None:
        self.states, self.mask = states, mask
        self.rows = mask.shape[0]
        self._bias: torch.Tensor | None = None

    def bias(self, query_dtype: torch.dtype, keys_dtype: torch.dtype, heads: int) -> torch.Tensor:
        """The additive source mask as HF's SDPA path builds it (0 where attended, the dtype's minimum where not)."""
        if self._bias is None or self._bias.dtype != query_dtype:
            lowest = max(torch.finfo(keys_dtype).min, torch.finfo(query_dtype).min)
            zeros = torch.zeros((), dtype=query_dtype, device=self.mask.device)
            self._bias = torch.where(self.mask, zeros, lowest).expand(-1, heads, -1, -1).contiguous()
        return self._bias

    def select(self, rows: torch.Tensor) -> SourceSlice:
        """These rows (ascending). Their width stays: attention's rounding depends on it (a slice's rows get what
        HF's module tree gives them as one batch of that width)."""
        part = SourceSlice([(keys[rows], values[rows]) for keys, values in self.states], self.mask[rows])
        if self._bias is not None:
            part._bias = self._bias[rows]
        return part


def _rms_norm(norm: Any, hidden: torch.Tensor) -> torch.Tensor:
    """T5LayerNorm's values in one fused operator where its weight and input are float32 (the same sums in the
    same order: tested equal); the module itself otherwise (it casts to a half-precision weight's dtype)."""
    if norm.weight.dtype != torch.float32 or hidden.dtype != torch.float32:
        return norm(hidden)
    return F.rms_norm(hidden, norm.weight.shape, norm.weight, norm.variance_epsilon)


def _merge_heads(attended: torch.Tensor, rows: int) -> torch.Tensor:
    """rows × heads × 1 × head size → rows × 1 × model width, as HF's SDPA path leaves it."""
    return attended.transpose(1, 2).contiguous().reshape(rows, 1, -1).contiguous()


def _bias_by_position(attention: Any, capacity: int) -> torch.Tensor:
    """1 × heads × 1 × capacity: column capacity-1-d holds the bias of a key d positions before the query, so the
    step at position p reads the last p+1 columns (T5Attention.compute_bias's values, looked up once)."""
    with torch.no_grad():
        distance = torch.arange(capacity - 1, -1, -1, device=attention.relative_attention_bias.weight.device)
        buckets = attention._relative_position_bucket(
            -distance, bidirectional=False, num_buckets=attention.relative_attention_num_buckets,
            max_distance=attention.relative_attention_max_distance,
        )  # fmt: skip
        return attention.relative_attention_bias(buckets).permute(1, 0)[None, :, None, :]
