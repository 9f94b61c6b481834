"""Device and numeric precision: auto-selection (cuda → mps → cpu) and autocast settings."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Literal

import torch

from seqlm.errors import ConfigError

ResolvedPrecision = Literal["fp32", "bf16", "fp16"]


def select_device(requested: str) -> torch.device:
    """`auto` picks cuda, then mps, then cpu; an explicit device must be available."""
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    available = {
        "cpu": True,
        "cuda": torch.cuda.is_available(),
        "mps": torch.backends.mps.is_available(),
    }
    if not available.get(requested, False):
        raise ConfigError(f"device '{requested}' is not available on this machine; use --device auto or cpu")
    return torch.device(requested)


def cpu_has_fast_bf16() -> bool:
    """True when the CPU has native bf16 matmul (AVX512-BF16 / AMX), where bf16 autocast pays."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(requested: str, device: torch.device) -> ResolvedPrecision:
    """`auto`: bf16 (else fp16) autocast on CUDA; fp32 elsewhere.

    On CPUs, bf16 autocast re-casts every weight at every forward pass; for the small models
    seqlm trains on CPUs that costs more than it saves (measured: a 4-layer, width-128 GPT-2
    runs at half the fp32 speed on a 2-core AVX512-BF16 CPU), so it is opt-in (`bf16`).
    """
    if requested == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "fp32"
    if requested == "bf16" and device.type == "cpu" and not cpu_has_fast_bf16():
        raise ConfigError("precision bf16 needs a CPU with native bf16 (AVX512-BF16/AMX); use fp32 or auto")
    if requested == "fp16" and device.type != "cuda":
        raise ConfigError(f"precision fp16 needs a CUDA device (running on {device.type}); use bf16 or fp32")
    return requested  # type: ignore[return-value]


@dataclass(frozen=True)
class Precision:
    """Weights stay fp32; `autocast()` runs the forward pass in the chosen lower precision."""

    device: torch.device
    name: ResolvedPrecision

    def autocast(self) -> AbstractContextManager:
        if self.name == "fp32":
            return nullcontext()
        dtype = torch.bfloat16 if self.name == "bf16" else torch.float16
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    @property
    def needs_grad_scaler(self) -> bool:
        return self.name == "fp16"


def seed_everything(seed: int) -> None:
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
