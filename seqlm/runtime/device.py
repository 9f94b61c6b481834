"""Device, numeric precision and speed settings: auto-selection (cuda → mps → cpu), autocast,
and when to compile the model or use seqlm's cheap CPU dropout (`speed_up`)."""

from __future__ import annotations

from contextlib import AbstractContextManager, ExitStack, nullcontext
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


def cpu_has_native_bf16() -> bool:
    """True when the CPU computes bf16 matmuls natively (AVX512-BF16 or AMX), where bf16 autocast pays.

    oneDNN also runs bf16 on plain AVX512 by emulation, slower than fp32 (measured: HF Trainer
    with bf16 at a third of its fp32 speed on such a CPU), so its own check is not enough."""
    flags = _cpu_flags()
    if flags is not None:
        return bool(flags & {"avx512_bf16", "amx_bf16"})
    return cpu_can_run_bf16()  # no /proc/cpuinfo (macOS, Windows): trust oneDNN


def cpu_can_run_bf16() -> bool:
    """True when bf16 autocast works on this CPU at all (natively or emulated)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def _cpu_flags() -> set[str] | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        return None
    return None


def resolve_precision(requested: str, device: torch.device) -> ResolvedPrecision:
    """`auto`: bf16 (else fp16) autocast on CUDA; bf16 on CPUs with native bf16; else fp32.

    An explicit `bf16` on a CPU runs wherever oneDNN can run it, emulated ones included (slow)."""
    if requested == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        if device.type == "cpu" and cpu_has_native_bf16():
            return "bf16"
        return "fp32"
    if requested == "bf16" and device.type == "cpu" and not cpu_can_run_bf16():
        raise ConfigError("precision bf16 needs a CPU that supports it (oneDNN bf16: AVX512 or newer); use fp32 or auto")
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

    def inference(self) -> AbstractContextManager:
        """No gradients, under `autocast()`: for evaluation, prediction and generation.

        `torch.no_grad`, not `torch.inference_mode`: autocast caches each fp32 weight's lower-precision copy for
        the rest of its context only outside inference mode; inside it, every forward casts every weight again
        (46% of a SmolLM2 decoding step in bf16 went to those copies, which made bf16 decoding slower than fp32)."""
        stack = ExitStack()
        stack.enter_context(torch.no_grad())
        stack.enter_context(self.autocast())
        return stack

    @property
    def needs_grad_scaler(self) -> bool:
        return self.name == "fp16"


def seed_everything(seed: int) -> None:
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# torch.compile pays its compile time back only over a long run, and on CUDA, where fusing
# kernels matters; on CPUs the gain per step is small (see README "Performance").
COMPILE_MIN_STEPS = 1000


def resolve_compile(requested: Literal["auto"] | bool, device: torch.device, max_steps: int) -> bool:
    """`auto`: compile on CUDA when the run has at least COMPILE_MIN_STEPS steps; true / false as said."""
    if requested == "auto":
        return device.type == "cuda" and max_steps >= COMPILE_MIN_STEPS
    return bool(requested)


def compile_body(model: torch.nn.Module) -> None:
    """Compile the model's body (the transformer) in place: state_dict keys and saving are unchanged,
    and the objective's own head code (e.g. seqlm.models.lm_head_loss) stays eager."""
    model.base_model.compile(dynamic=None)


def speed_up(
    model: torch.nn.Module, compile_setting: Literal["auto"] | bool, fast_dropout: bool, device: torch.device, max_steps: int
) -> None:
    """The training config's speed settings, in place: the body compiled (lazily, at the first
    step) where `compile_setting` resolves true (see resolve_compile); otherwise, on the CPU with
    `fast_dropout`, seqlm's cheap dropout masks (a compiled body generates its own)."""
    if resolve_compile(compile_setting, device, max_steps):
        compile_body(model)
    elif fast_dropout and device.type == "cpu":
        from seqlm.models.fast_dropout import use_fast_dropout

        use_fast_dropout(model)
