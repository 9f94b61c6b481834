"""The config schema of every command, and loading YAML with --set overrides into it."""

from typing import Any

from seqlm.config.finetune import FinetuneConfig
from seqlm.config.inference import EvaluateConfig, PredictConfig
from seqlm.config.schema import PretrainConfig, TokenizeConfig

# The schema of each command; finetune's is a union whose `task:` key picks the member.
COMMAND_SCHEMAS: dict[str, Any] = {
    "tokenize": TokenizeConfig,
    "pretrain": PretrainConfig,
    "finetune": FinetuneConfig,
    "evaluate": EvaluateConfig,
    "predict": PredictConfig,
}
