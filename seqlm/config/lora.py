"""`training.lora`: train low-rank adapters (LoRA, through the `peft` package) instead of the model's weights.

Shared by `pretrain` (continuing a pretrained model) and every `finetune` task; applied in `seqlm.models.lora`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from seqlm.config.section import Section


class LoraConfig(Section):
    """Low-rank adapters: each targeted weight W is used as W + (alpha / r) B A, and only A and B train (W is frozen)."""

    r: int = Field(default=8, ge=1, description="The adapters' rank.")
    alpha: float = Field(default=16.0, gt=0.0, description="Scale: the update B A is multiplied by alpha / r.")
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="Dropout on the adapters' input.")
    target_modules: list[str] | None = Field(
        default=None,
        description="Names of the linear layers that get adapters (e.g. [q_proj, v_proj]: every layer whose name ends so); "
        "null: the attention and MLP projections of every transformer block (q/k/v/o and gate/up/down for Llama, "
        "c_attn/c_proj/c_fc for GPT-2, query/key/value/dense for BERT).",
    )
    bias: Literal["none", "all", "lora_only"] = Field(
        default="none", description="Biases that train too: none, all of the model's, or those of the targeted layers."
    )
    modules_to_save: list[str] = Field(
        default_factory=list,
        description="Modules trained in full beside the adapters (e.g. [embed_tokens]); a new classification head always is.",
    )

    @field_validator("target_modules")
    @classmethod
    def _targets_named(cls, names: list[str] | None) -> list[str] | None:
        if names is not None and not names:
            raise ValueError("name at least one module, or null for the default projections")
        return names
