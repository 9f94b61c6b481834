"""T5's decoder step written out for generation (`seqlm.tasks.seq2seq_decoding.model_steps`).

Why: a small T5's decoding step on a CPU carries much besides its matmuls and attention. Through the HF module
tree it runs 155 top-level operators (601 with the ones they call), under every module's Python wrappers: both
attention masks rebuilt, the relative position bias recomputed from its buckets, the self-attention cache
concatenated. Here the same arithmetic, on the model's own weights and modules, runs as 95 (537): the relative
position bias is looked up once per distance for every step to come, the source keys and values and the
source mask are made once, and each step writes its keys and values into a cache reserved for all new tokens.
On the bench T5 a 32-row step took 3.70 ms against 5.13.

Contract: `T5DecoderSteps` is a drop-in for `EncoderDecoderSteps` (`history`, `logits`, `select`, `advance`):
the same arithmetic in the same order on the same tensors as `T5ForConditionalGeneration` with SDPA attention
(its RMS norms as one fused operator), so a step's logits equal the model's (tested bit for bit in fp32, and
under bf16 autocast). `supported` says
when that holds: a T5-family model (T5, mT5) in eval mode with SDPA attention, not in float16 (T5's fp16 clamps
are not written out here).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from seqlm.tasks.decoder_prefill import ReservedLayer

T5_TYPES = frozenset({"t5", "mt5"})


def is_t5(model: Any) -> bool:
    """A T5-family encoder-decoder (its decoder laid out as `T5DecoderSteps` and `group_budget` read it)."""
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


def group_budget(model: Any) -> tuple[int, int]:
    """(bytes, bytes per position): what `generation.decode_cache_mb: auto` lets a merged decoding group's cache
    take, twice the decoder's weights (which every step reads once for all of its rows), and what one position
    of a row's cache takes (source and new tokens alike: keys and values of every layer, at 4 bytes a value).
    Why twice: on the bench T5 (2 CPU cores) groups of 64 rows (~2.3x its 15 MB of weights) decoded in 2.99 s
    against 3.74 s for 32 rows (~1.1x), while 128 rows (~4.6x) ran slower than 32."""
    decoder = model.get_decoder()
    attention = decoder.block[0].layer[0].SelfAttention
    per_position = len(decoder.block) * 2 * attention.n_heads * attention.key_value_proj_dim * 4
    weights = sum(parameter.numel() * parameter.element_size() for parameter in decoder.parameters())
    if model.lm_head.weight is not decoder.embed_tokens.weight:
        weights += model.lm_head.weight.numel() * model.lm_head.weight.element_size()
    return 2 * weights, per_position


class T5DecoderSteps:
    """The source keys and values of every layer are made once from the encoder's states; each step feeds the
    decoder its last token."""

    def __init__(self, model: Any, source: Any, capacity: int) -> None:
        """`source`: the `EncoderDecoderSteps` that ran the encoder (its states, mask and start tokens, one row per
        copy); `capacity`: the most steps to come."""
        states = source.encoder_states
        decoder = model.get_decoder()
        self.decoder = decoder
        self.lm_head = model.lm_head
        self.output_scale = model.model_dim**-0.5 if model.config.scale_decoder_outputs else None
        first = decoder.block[0].layer[0].SelfAttention
        self.heads, self.head_dim = first.n_heads, first.key_value_proj_dim
        self.source = [self._source_states(block.layer[1].EncDecAttention, states) for block in decoder.block]
        self.source_mask = source.attention_mask.bool()[:, None, None, :]  # rows × 1 × 1 × source positions
        self.source_bias: torch.Tensor | None = None  # made at the first step, in the dtype attention runs in
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
            source_keys, source_values = self.source[layer]
            attended = F.scaled_dot_product_attention(
                query, source_keys, source_values, attn_mask=self._source_bias(query, source_keys), scale=attention.scaling
            )
            hidden = hidden + attention.o(_merge_heads(attended, rows))
            hidden = feed_forward(hidden)
        hidden = _rms_norm(self.decoder.final_layer_norm, hidden)
        if self.output_scale is not None:
            hidden = hidden * self.output_scale
        return self.lm_head(hidden)[:, -1, :].to(dtype=torch.float32)

    def _source_bias(self, query: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        """The additive source mask as HF's SDPA path builds it (0 where attended, the dtype's minimum where not)."""
        if self.source_bias is None or self.source_bias.dtype != query.dtype:
            lowest = max(torch.finfo(keys.dtype).min, torch.finfo(query.dtype).min)
            zeros = torch.zeros((), dtype=query.dtype, device=query.device)
            self.source_bias = torch.where(self.source_mask, zeros, lowest).expand(-1, self.heads, -1, -1).contiguous()
        return self.source_bias

    def select(self, rows: torch.Tensor, source_rows: torch.Tensor | None) -> None:
        """The decoder states of `rows`, in this order, and the source side of `source_rows` (None: unchanged); see
        `seq2seq_decoding.EncoderDecoderSteps.select`."""
        for layer in self.layers:
            layer.batch_select_indices(rows)
        if source_rows is not None:
            self.source = [(keys[source_rows], values[source_rows]) for keys, values in self.source]
            self.source_mask = self.source_mask[source_rows]
            if self.source_bias is not None:
                self.source_bias = self.source_bias[source_rows]

    def advance(self, last_ids: torch.Tensor) -> None:
        self.decoder_input_ids = last_ids


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
