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
CHUNK_LOGITS = 1 << 21  # logits per chunk (8 MiB in fp32): rows per chunk = CHUNK_LOGITS // vocabulary


class _LinearCrossEntropySum(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, rows: int) -> torch.Tensor:
        grad_hidden = torch.empty_like(hidden)
        grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        for start in range(0, hidden.shape[0], rows):
            chunk, targets = hidden[start : start + rows], labels[start : start + rows]
            # Under autocast the matmul runs in bf16/fp16; the softmax always in fp32.
            log_probs = torch.log_softmax((chunk @ weight.t()).float(), dim=1)
            valid = targets != IGNORE_INDEX
            safe = targets.clamp(min=0).unsqueeze(1)
            total -= (log_probs.gather(1, safe).squeeze(1) * valid).sum()
            # d(Σ nll)/d logits = softmax − one-hot, zero on ignored rows
            grad_logits = log_probs.exp_()
            grad_logits.scatter_add_(1, safe, torch.full_like(safe, -1, dtype=grad_logits.dtype))
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
    def backward(ctx: Any, grad_total: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None, None]:
        grad_hidden, grad_weight = ctx.saved_tensors
        return grad_hidden * grad_total.to(grad_hidden.dtype), (grad_weight * grad_total).to(ctx.weight_dtype), None, None


def linear_cross_entropy_sum(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Σ over rows with label ≠ IGNORE_INDEX of cross-entropy(hidden @ weightᵀ, label).

    hidden (N, d), weight (V, d), labels (N,). Differentiable in `hidden` and `weight`; without gradients to
    compute (scoring), only the sum, one chunk of logits at a time."""
    rows = max(1, CHUNK_LOGITS // weight.shape[0])
    if torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad):
        return _LinearCrossEntropySum.apply(hidden, weight, labels, rows)
    total = torch.zeros((), dtype=torch.float32, device=hidden.device)
    for start in range(0, hidden.shape[0], rows):
        logits = (hidden[start : start + rows] @ weight.t()).float()
        total += F.cross_entropy(logits, labels[start : start + rows], ignore_index=IGNORE_INDEX, reduction="sum")
    return total


def causal_lm_loss_sums(model: Any, inputs: dict[str, torch.Tensor], labels: torch.Tensor) -> dict[str, torch.Tensor] | None:
    """{"lm": Σ nll} of a causal LM (position t predicts token t+1) without full logits; None when unsupported."""
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
        return {"lm": linear_cross_entropy_sum(hidden[scored], head.weight, targets[scored])}
    return {"lm": linear_cross_entropy_sum(hidden.reshape(-1, hidden.shape[-1]), head.weight, targets.reshape(-1))}


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
