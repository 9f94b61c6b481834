"""Dropout with cheap masks for eager CPU training (`training.fast_dropout`).

torch's CPU dropout draws its mask with `bernoulli_`, one random float per element (about 8 ns
each on the benchmark machine): a fifth of a GPT-2 training step of `configs/bench/`, most of it
on the attention probabilities. Here one 64-bit draw of torch's own generator (`random_`, so
seeding, checkpointed RNG state and resume work as before) gives four 16-bit lanes, each
compared with a threshold: p is rounded to a multiple of 1/65536 (0.1 becomes 0.1000061) and
kept values are scaled by 1/(1 - that p), so the expectation is exact.

Attention dropout happens inside `F.scaled_dot_product_attention`, which on the CPU falls back
to its unfused math path whenever dropout_p > 0. `attention_with_fast_dropout` runs that same
math with the cheap mask; it is registered with transformers' AttentionInterface as
ATTENTION_NAME (the name is not saved: a checkpoint's config.json keeps no attention
implementation). Without dropout (eval mode, p = 0) it is transformers' own SDPA attention.

Not used on CUDA, whose dropout is one fused kernel already, nor under torch.compile, which
generates its masks inside the fused kernels. The random stream differs from nn.Dropout's: a run
repeats itself exactly, but not a run made with `fast_dropout: false`.
"""

from __future__ import annotations

import torch
from torch import nn

ATTENTION_NAME = "seqlm_sdpa"
_LANES = 65536  # 16-bit lanes: the resolution of p


def keep_mask(shape: torch.Size, p: float) -> tuple[torch.Tensor, float]:
    """A bool mask of `shape` keeping each element with probability 1 - round(p * 65536) / 65536,
    and the scale (1 / that probability) for the kept values. Drawn from torch's CPU generator."""
    numel = shape.numel()
    dropped = round(p * _LANES)
    draws = torch.empty((numel + 3) // 4, dtype=torch.int64).random_(-(2**63), None)
    lanes = draws.view(torch.int16)[:numel].view(shape)  # uniform over [-32768, 32767]
    return lanes >= dropped - _LANES // 2, _LANES / (_LANES - dropped)


class _MaskedScale(torch.autograd.Function):
    # The scaled mask is kept in the inputs' dtype, as torch's dropout keeps its noise: one
    # multiplication each way (keeping bools and converting them twice measured 2x slower).
    @staticmethod
    def forward(ctx, inputs: torch.Tensor, p: float) -> torch.Tensor:  # type: ignore[override]
        keep, scale = keep_mask(inputs.shape, p)
        scaled_mask = keep.to(inputs.dtype).mul_(scale)
        ctx.save_for_backward(scaled_mask)
        return inputs * scaled_mask

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        (scaled_mask,) = ctx.saved_tensors
        return grad * scaled_mask, None


def fast_dropout(inputs: torch.Tensor, p: float) -> torch.Tensor:
    """Training-mode dropout with the cheap mask; `inputs` itself when p is 0. Off the CPU (a
    model moved after the swap) it is torch's own dropout, as the attention function delegates."""
    if p == 0.0:
        return inputs
    if inputs.device.type != "cpu":
        return nn.functional.dropout(inputs, p, training=True)
    return _MaskedScale.apply(inputs, p)


class FastDropout(nn.Dropout):
    """nn.Dropout with the cheap mask in training mode (the identity in eval mode, as nn.Dropout).

    Keeps `p`, which transformers' attention modules read to pass on as the attention dropout."""

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return fast_dropout(inputs, self.p) if self.training else inputs


def attention_math(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    is_causal: bool,
    scale: float,
    dropout: float,
) -> torch.Tensor:
    """softmax(q kᵀ · scale + mask) with dropout, times v: SDPA's math path, shapes (batch, heads, seq, dim).

    A bool mask keeps True positions; a float mask is added; causal is SDPA's upper-left
    alignment. Masked scores are the dtype's lowest value rather than -inf, so a row with
    nothing to attend to (a padding query) stays finite. Heads are folded into the batch for
    `bmm`, and the causal mask is added inside `baddbmm`: 25-30% faster here than 4-D matmuls
    and a separate masking pass."""
    batch, heads, q_length, dim = query.shape
    kv_length = key.shape[-2]
    queries = (query * scale).reshape(batch * heads, q_length, dim)
    keys = key.reshape(batch * heads, kv_length, dim).transpose(1, 2)
    values = value.reshape(batch * heads, kv_length, value.shape[-1])
    if is_causal:
        future = torch.full((q_length, kv_length), torch.finfo(query.dtype).min, dtype=query.dtype, device=query.device)
        scores = torch.baddbmm(future.triu(1), queries, keys)
    else:
        scores = torch.bmm(queries, keys)
        if attention_mask is not None:
            grid = scores.view(batch, heads, q_length, kv_length)
            if attention_mask.dtype == torch.bool:
                grid.masked_fill_(attention_mask.logical_not(), torch.finfo(scores.dtype).min)
            else:
                grid.add_(attention_mask)
    probs = fast_dropout(torch.softmax(scores, dim=-1), dropout)
    return torch.bmm(probs.to(values.dtype), values).view(batch, heads, q_length, -1)


def attention_with_fast_dropout(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """An AttentionInterface function: transformers' SDPA attention, but attention dropout on the
    CPU goes through `attention_math` with the cheap mask. Cases it does not cover itself (no
    dropout, a position bias, softcapping, a KV cache longer than the queries) are SDPA's."""
    from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward

    q_length, kv_length = query.shape[-2], key.shape[-2]
    causal = (
        q_length > 1 and attention_mask is None and (is_causal if is_causal is not None else getattr(module, "is_causal", True))
    )
    delegate = (
        dropout == 0.0
        or query.device.type != "cpu"
        or kwargs.get("position_bias") is not None
        or kwargs.get("softcap") is not None
        or (causal and kv_length != q_length)
    )
    if delegate:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, is_causal=is_causal, **kwargs
        )
    groups = getattr(module, "num_key_value_groups", 1)
    key, value = repeat_kv(key, groups), repeat_kv(value, groups)
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    output = attention_math(query, key, value, attention_mask, causal, scale, dropout)
    return output.transpose(1, 2).contiguous(), None


def _register_attention() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(ATTENTION_NAME, attention_with_fast_dropout)
    AttentionMaskInterface.register(ATTENTION_NAME, sdpa_mask)  # the masks SDPA gets, None where causal suffices


def use_fast_dropout(model: nn.Module) -> int:
    """Swap every nn.Dropout of `model` for FastDropout, and its SDPA attention for
    `attention_with_fast_dropout`. Returns the number of dropout modules swapped. State dict,
    saving and eval-mode outputs are unchanged."""
    swapped = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Dropout:
                setattr(parent, name, FastDropout(child.p))
                swapped += 1
    config = getattr(model, "config", None)
    if config is not None and getattr(config, "_attn_implementation", None) == "sdpa":
        _register_attention()
        model.set_attn_implementation(ATTENTION_NAME)
    return swapped
