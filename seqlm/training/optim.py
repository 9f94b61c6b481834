"""AdamW with decoupled weight decay on matrices only, and the learning-rate schedules."""

from __future__ import annotations

import math
from typing import Any

import torch

from seqlm.config.schema import OptimConfig


def parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Decay weight matrices only: no decay on biases and norm gains (rank < 2) nor on embeddings."""
    embedding_params = {
        id(param) for module in model.modules() if isinstance(module, torch.nn.Embedding) for param in module.parameters()
    }
    decay, no_decay = [], []
    for param in model.parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim < 2 or id(param) in embedding_params else decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_optimizer(model: torch.nn.Module, config: OptimConfig, device: torch.device) -> torch.optim.AdamW:
    # The fused kernel is one pass over each tensor on CUDA and on the CPU (3.5x faster than
    # foreach on 7.4M CPU parameters here, equal within float rounding); foreach elsewhere (MPS).
    fused = device.type in ("cuda", "cpu")
    return torch.optim.AdamW(
        parameter_groups(model, config.weight_decay),
        lr=config.lr,
        betas=config.betas,
        eps=config.eps,
        fused=fused,
        foreach=None if fused else True,
    )


def lr_multiplier(step: int, total_steps: int, config: OptimConfig) -> float:
    """Linear warmup from 0, then cosine/linear decay to `min_lr_ratio` at `total_steps` (or constant)."""
    if config.warmup_steps and step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    if config.schedule == "constant":
        return 1.0
    decay_steps = max(1, total_steps - config.warmup_steps)
    progress = min(1.0, (step - config.warmup_steps) / decay_steps)
    if config.schedule == "cosine":
        shape = 0.5 * (1.0 + math.cos(math.pi * progress))
    else:
        shape = 1.0 - progress
    return config.min_lr_ratio + (1.0 - config.min_lr_ratio) * shape


def build_scheduler(
    optimizer: torch.optim.Optimizer, total_steps: int, config: OptimConfig
) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_multiplier(step, total_steps, config))
