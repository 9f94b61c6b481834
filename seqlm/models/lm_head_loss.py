"""Language-model losses that compute the output layer only where it is needed.

- `linear_cross_entropy_sum`: Σ cross-entropy(hidden @ weightᵀ, labels) for a causal LM
  without ever holding the (tokens × vocabulary) logits: rows go through in chunks, and each
  chunk's gradient (softmax − one-hot) is turned into the gradients of `hidden` and `weight`
  at once, in the forward pass, so the backward pass has nothing to recompute. Same FLOPs
  as the plain head; peak memory one chunk of logits instead of all of them.
- `causal_lm_loss_sums` / `masked_lm_loss_sums`: the training losses of the objectives in
  `seqlm.tasks.objectives` computed this way (a causal LM's head runs only at the positions with a label,
  e.g. a completion's tokens; a BERT's MLM head only at the masked positions),
  for the architectures whose head is known to be a plain linear layer / BERT's MLM head.
  Any other model returns None and the caller uses the reference path (full logits).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from seqlm.data.masking import IGNORE_INDEX

# Causal LMs whose logits are exactly `base_model(...) @ lm_head.weightᵀ` (no bias, scale or soft-cap).
PLAIN_HEAD_CAUSAL_LMS = frozenset({"gpt2", "llama", "mistral", "qwen2", "qwen3"})
# Encoder-decoders whose logits are `decoder(...)` (times d_model^-0.5 where `scale_decoder_outputs`) @ lm_head.weightᵀ.
T5_HEADS = frozenset({"t5"})
CHUNK_LOGITS = 1 << 21  # logits per chunk (8 MiB in fp32): rows per chunk = CHUNK_LOGITS // vocabulary
# Rows (ignored ones appended) and chunks come in multiples of this: the rows with a label differ in number from
# batch to batch, and oneDNN keeps compiled bf16 matmul kernels per shape (a T5's training grew by ~0.3 GB of
# them, one set per row count, before this).
ROW_MULTIPLE = 64


class _LinearCrossEntropySum(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, rows: int, smoothing: float) -> torch.Tensor:
        grad_hidden = torch.empty_like(hidden)
        grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        for start in range(0, hidden.shape[0], rows):
            chunk, targets = hidden[start : start + rows], labels[start : start + rows]
            # Under autocast the matmul runs in bf16/fp16; the softmax always in fp32.
            log_probs = torch.log_softmax((chunk @ weight.t()).float(), dim=1)
            valid = targets != IGNORE_INDEX
            safe = targets.clamp(min=0).unsqueeze(1)
            row_loss = log_probs.gather(1, safe).squeeze(1) * (1.0 - smoothing)
            if smoothing:  # torch's label smoothing: (1 − ε)·nll + ε·(mean over the vocabulary of −log p)
                row_loss += log_probs.mean(dim=1) * smoothing
            total -= (row_loss * valid).sum()
            # d(Σ loss)/d logits = softmax − (1 − ε)·one-hot − ε/V, zero on ignored rows
            grad_logits = log_probs.exp_()
            grad_logits.scatter_add_(1, safe, torch.full_like(safe, smoothing - 1.0, dtype=grad_logits.dtype))
            if smoothing:
                grad_logits -= smoothing / grad_logits.shape[1]
            if not bool(valid.all()):
                grad_logits[~valid] = 0
            if chunk.dtype == weight.dtype == torch.float32 and not torch.is_autocast_enabled(chunk.device.type):
                torch.mm(grad_logits, weight, out=grad_hidden[start : start + rows])  # no temporaries in fp32
                grad_weight.addmm_(grad_logits.t(), chunk)
            else:
                grad_logits = grad_logits.to(chunk.dtype)
                grad_hidden[start : start + rows] = (grad_logits @ weight.to(grad_logits.dtype)).to(hidden.dtype)
                grad_weight += (grad_logits.t() @ chunk.to(grad_logits.dtype)).float()
        ctx.save_for_backward(grad_hidden, grad_weight)
        ctx.weight_dtype = weight.dtype
        return total

    @staticmethod
    def backward(ctx: Any, grad_total: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None, None, None]:
        grad_hidden, grad_weight = ctx.saved_tensors
        return grad_hidden * grad_total.to(grad_hidden.dtype), (grad_weight * grad_total).to(ctx.weight_dtype), None, None, None


def linear_cross_entropy_sum(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Σ over rows with label ≠ IGNORE_INDEX of cross-entropy(hidden @ weightᵀ, label), label-smoothed as
    `F.cross_entropy(label_smoothing=...)` smooths it.

    hidden (N, d), weight (V, d), labels (N,). Differentiable in `hidden` and `weight`; without gradients to
    compute (scoring), only the sum, one chunk of logits at a time."""
    rows = max(ROW_MULTIPLE, CHUNK_LOGITS // weight.shape[0] // ROW_MULTIPLE * ROW_MULTIPLE)
    extra = -hidden.shape[0] % ROW_MULTIPLE
    if extra:
        hidden = torch.cat([hidden, hidden.new_zeros((extra, hidden.shape[1]))])
        labels = torch.cat([labels, labels.new_full((extra,), IGNORE_INDEX)])
    if torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad):
        return _LinearCrossEntropySum.apply(hidden, weight, labels, rows, float(label_smoothing))
    total = torch.zeros((), dtype=torch.float32, device=hidden.device)
    for start in range(0, hidden.shape[0], rows):
        logits = (hidden[start : start + rows] @ weight.t()).float()
        total += F.cross_entropy(
            logits, labels[start : start + rows], ignore_index=IGNORE_INDEX, reduction="sum", label_smoothing=label_smoothing
        )
    return total


def causal_lm_loss_sums(
    model: Any, inputs: dict[str, torch.Tensor], labels: torch.Tensor, label_smoothing: float = 0.0
) -> dict[str, torch.Tensor] | None:
    """{"lm": Σ nll (label-smoothed)} of a causal LM (position t predicts token t+1) without full logits; None
    when unsupported."""
    if getattr(model.config, "model_type", None) not in PLAIN_HEAD_CAUSAL_LMS:
        return None
    head = model.get_output_embeddings()
    if not isinstance(head, torch.nn.Linear) or head.bias is not None:
        return None
    hidden = model.base_model(**inputs, use_cache=False).last_hidden_state[:, :-1]  # training keeps no KV cache
    targets = labels[:, 1:]
    scored = targets != IGNORE_INDEX
    if not bool(scored.all()):
        # Completion-only losses (prompts, padding ignored): the head runs at the scored positions alone, which
        # for a long prompt and a short completion is a small share of the rows, in time and in memory.
        return {"lm": linear_cross_entropy_sum(hidden[scored], head.weight, targets[scored], label_smoothing)}
    return {"lm": linear_cross_entropy_sum(hidden.reshape(-1, hidden.shape[-1]), head.weight, targets.reshape(-1), label_smoothing)}


def t5_loss_sum(
    model: Any, inputs: dict[str, torch.Tensor], decoder_input_ids: torch.Tensor, labels: torch.Tensor, label_smoothing: float
) -> torch.Tensor | None:
    """Σ (label-smoothed) nll of a T5 over its decoder labels, the head run only at labelled positions (no
    logits over the vocabulary at padding, none held whole); None for another model or other inputs."""
    config = getattr(model, "config", None)  # a DDP wrapper has none; its submodules are not to be called around it
    if getattr(config, "model_type", None) not in T5_HEADS or set(inputs) - {"input_ids", "attention_mask"}:
        return None
    head = model.get_output_embeddings()
    if not isinstance(head, torch.nn.Linear) or head.bias is not None:
        return None
    mask = inputs.get("attention_mask")
    encoded = model.encoder(input_ids=inputs["input_ids"], attention_mask=mask)[0]
    # As T5ForConditionalGeneration.forward, without a KV cache (training keeps none).
    hidden = model.decoder(input_ids=decoder_input_ids, encoder_hidden_states=encoded, encoder_attention_mask=mask, use_cache=False)[0]
    if getattr(config, "scale_decoder_outputs", False):
        hidden = hidden * (config.d_model**-0.5)
    scored = labels != IGNORE_INDEX
    return linear_cross_entropy_sum(hidden[scored], head.weight, labels[scored], label_smoothing)


def masked_lm_loss_sums(model: Any, inputs: dict[str, torch.Tensor], targets: dict[str, torch.Tensor]) -> dict[str, torch.Tensor] | None:
    """{"lm": Σ nll (, "nsp": Σ nll)} of a BERT, the MLM head run only at the masked positions; None when unsupported."""
    if getattr(model.config, "model_type", None) != "bert" or not hasattr(model, "cls"):
        return None
    labels = targets["labels"]
    outputs = model.bert(**inputs)
    selected = labels != IGNORE_INDEX
    heads = model.cls
    predictions = heads.predictions if hasattr(heads, "seq_relationship") else heads  # ForPreTraining / ForMaskedLM
    logits = predictions(outputs.last_hidden_state[selected])
    sums = {"lm": F.cross_entropy(logits.float(), labels[selected], reduction="sum")}
    if "next_sentence_label" in targets:
        nsp_logits = heads.seq_relationship(outputs.pooler_output)
        sums["nsp"] = F.cross_entropy(nsp_logits.float(), targets["next_sentence_label"], reduction="sum")
    return sums
