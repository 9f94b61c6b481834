"""LoRA (`training.lora`) on any model seqlm trains, through the `peft` package.

`attach_lora(model, lora, new_weights, base)` injects low-rank adapters into `model` in place (peft's
`get_peft_model`: the model object stays the one the loop trains, its targeted linear layers now carry
`lora_A`/`lora_B`) and freezes every other weight, except the modules that hold newly initialised
weights (a classification head: peft's `modules_to_save`, trained in full) and those `lora.modules_to_save`
names. The optimizer then only sees the adapters, the head and any bias `lora.bias` trains
(`seqlm.training.optim` keeps parameters with `requires_grad` only).

The returned `Adapters` gives what a run saves:
- `merged()`: a copy of the model with every adapter merged into its weight (peft's `merge_and_unload`), a
  plain transformers model: the run's `model/` and `best/`, loadable without peft;
- `adapter_only()`: what `save_pretrained` writes as a standard peft adapter dir (`adapter_config.json`,
  `adapter_model.safetensors`: `PeftModel.from_pretrained(base, dir)` loads it), plus the trained model's
  `config.json` (its head, labels, seqlm marker) so that `load_adapter_dir` can rebuild the model; this is
  also what a checkpoint holds in place of the full weights;
- `load_checkpoint(dir)`: the adapter weights back from such a checkpoint (the base model is loaded as at
  the start of the run).
Under FSDP the model's weights are shards: `keep_layout()` (before sharding) keeps a copy of the model's structure
on the meta device, and `merged`/`adapter_only` take the weights gathered from the shards (`weights`).
"""

from __future__ import annotations

import copy
import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from seqlm.config.lora import LoraConfig
from seqlm.errors import ConfigError, DataError, first_line

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
_BYTES_PER_TRAINED = 4 * 3  # fp32 weight + AdamW's two moments


def is_adapter_dir(path: Path) -> bool:
    """Whether `path` is a peft adapter dir (a LoRA run's adapter/, or one of its checkpoints)."""
    return (path / ADAPTER_CONFIG).is_file()


def _linear_like(module: torch.nn.Module) -> bool:
    from transformers.pytorch_utils import Conv1D  # GPT-2's transposed linear layer

    return isinstance(module, (torch.nn.Linear, Conv1D))


def default_targets(model: torch.nn.Module, new_modules: set[str]) -> list[str]:
    """Every linear layer inside the model's repeated transformer blocks (a numbered module on its path): the
    attention and MLP projections, whatever each architecture calls them; never a new head, embeddings or pooler."""
    return [
        name for name, module in model.named_modules()
        if _linear_like(module) and any(part.isdigit() for part in name.split(".")) and name not in new_modules
    ]  # fmt: skip


def linear_names(model: torch.nn.Module) -> list[str]:
    """The distinct last names of the model's linear layers (what `target_modules` may name), in model order."""
    return list(dict.fromkeys(name.rsplit(".", 1)[-1] for name, module in model.named_modules() if _linear_like(module) and name))


@dataclass
class Adapters:
    """The adapters attached to a model, and what a run saves of them (see the module docstring)."""

    peft_model: Any  # peft.PeftModel around the training model (`peft_model.base_model.model` is that model)
    trainable: int
    total: int  # the model's own parameters (adapters and the trained copies of saved modules not counted)
    targets: list[str]
    layout: Any = None  # keep_layout(): the peft model on the meta device, for the weights gathered from FSDP shards

    def keep_layout(self) -> None:
        """Before FSDP shards the model: keep its structure (parameters on the meta device: no memory) for `merged`."""
        memo: dict[int, Any] = {
            id(param): torch.nn.Parameter(param.to("meta"), requires_grad=param.requires_grad) for param in self.peft_model.parameters()
        }  # fmt: skip
        self.layout = copy.deepcopy(self.peft_model, memo)  # buffers (small, some not in the state dict) are copied

    def merged(self, weights: dict[str, torch.Tensor] | None = None) -> Any:
        """A plain transformers model with the adapters merged (a copy: training goes on with the adapters).
        `weights`: the training model's full state dict gathered from FSDP shards (after `keep_layout`)."""
        if weights is None:
            return copy.deepcopy(self.peft_model).merge_and_unload()
        peft_model = copy.deepcopy(self.layout)
        _load_tied(peft_model.base_model.model, weights)
        return peft_model.merge_and_unload()

    def adapter_only(self, weights: dict[str, torch.Tensor] | None = None) -> AdapterView:
        """`weights`: the trained parameters gathered from FSDP shards (keyed as in the training model)."""
        peft_keyed = None if weights is None else {f"base_model.model.{key}": value for key, value in weights.items()}
        return AdapterView(self.peft_model, peft_keyed)

    def load_checkpoint(self, directory: Path) -> None:
        """Restore the adapter weights (and fully trained modules) a checkpoint holds."""
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        if not is_adapter_dir(directory):
            raise ConfigError(
                f"{directory} holds full weights, not adapters: the run did not use training.lora; resume it without lora, "
                "or start a new run in another output_dir"
            )
        result = set_peft_model_state_dict(self.peft_model, load_file(directory / ADAPTER_WEIGHTS))
        if result.unexpected_keys:
            raise ConfigError(f"{directory}: the adapters differ from training.lora ({result.unexpected_keys[0]}, ...); undo the change")

    def describe(self) -> str:
        """One line for the run's log: what trains, and what a checkpoint holds against a full one."""
        shown = ", ".join(dict.fromkeys(name.rsplit(".", 1)[-1] for name in self.targets))
        ours, full = _size(self.trainable * _BYTES_PER_TRAINED), _size(self.total * _BYTES_PER_TRAINED)
        return (
            f"lora: adapters on {len(self.targets)} layers ({shown}); {self.trainable:,} of {self.total:,} parameters trained "
            f"({100 * self.trainable / self.total:.2f}%); a checkpoint holds them and their optimizer state "
            f"(~{ours}, against ~{full} for full fine-tuning)"
        )


def _load_tied(model: torch.nn.Module, weights: dict[str, torch.Tensor]) -> None:
    """Put `weights` into `model` (on the meta device) as its parameters, keeping tied weights tied (a gathered
    state dict holds a copy under each name of a tied weight: GPT-2's output layer and input embedding)."""
    first: dict[int, str] = {}
    tied = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        if id(param) in first:
            tied[name] = first[id(param)]
        else:
            first[id(param)] = name
    model.load_state_dict(weights, assign=True)
    for name, owner in tied.items():
        parent, _, leaf = name.rpartition(".")
        setattr(model.get_submodule(parent), leaf, model.get_parameter(owner))


def _size(n_bytes: float) -> str:
    return f"{n_bytes / 1e9:.3g} GB" if n_bytes >= 1e9 else f"{n_bytes / 1e6:.3g} MB"


@dataclass
class AdapterView:
    """`save_pretrained(dir)`: the peft adapter dir, plus the trained model's config.json."""

    peft_model: Any
    state_dict: dict[str, torch.Tensor] | None = None  # the peft model's trained weights gathered from FSDP shards

    def save_pretrained(self, directory: Path) -> None:
        given = {} if self.state_dict is None else {"state_dict": self.state_dict}
        self.peft_model.save_pretrained(str(directory), save_embedding_layers=False, **given)
        model = self.peft_model.base_model.model
        config = copy.deepcopy(model.config)
        config.architectures = [type(model).__name__]  # the head it was trained with (save_pretrained sets this for a model)
        config.save_pretrained(directory)


def attach_lora(model: torch.nn.Module, lora: LoraConfig, new_weights: list[str], base: str) -> Adapters:
    """Inject adapters into `model` in place; see the module docstring. `base` is what adapter_config.json
    records as the base model (a local path is made absolute). ConfigError when `lora.target_modules` names
    no layer of the model (the names it has are listed), or the model was built from scratch."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model
    from transformers.pytorch_utils import Conv1D

    parameters = [name for name, _ in model.named_parameters()]
    if new_weights and set(new_weights) >= set(parameters):
        raise ConfigError("training.lora adapts a pretrained model; this one is built from scratch (every weight new): drop training.lora")
    new_modules = {name.rsplit(".", 1)[0] for name in new_weights}
    if lora.target_modules is None:
        targets = default_targets(model, new_modules)
    else:
        wanted = tuple(lora.target_modules)
        targets = [
            name for name, module in model.named_modules()
            if _linear_like(module) and any(name == key or name.endswith("." + key) for key in wanted)
        ]  # fmt: skip
    if not targets:
        names = ", ".join(linear_names(model)) or "none"
        raise ConfigError(
            f"training.lora.target_modules: no layer of this {type(model).__name__} is named "
            f"{', '.join(lora.target_modules or ['(a block projection)'])}; its linear layers are named: {names}"
        )
    modules = dict(model.named_modules())
    missing = [name for name in lora.modules_to_save if not any(n == name or n.endswith("." + name) for n in modules)]
    if missing:
        raise ConfigError(f"training.lora.modules_to_save: no module named {missing[0]!r}; e.g. {', '.join(list(modules)[1:8])}")
    total = sum(param.numel() for param in model.parameters())
    config = PeftLoraConfig(
        r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=targets, bias=lora.bias,
        modules_to_save=sorted(new_modules | set(lora.modules_to_save)) or None,
        fan_in_fan_out=any(isinstance(modules[name], Conv1D) for name in targets),
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # peft's notes on the model card and on transformers deprecations
        peft_model = get_peft_model(model, config)
    local = Path(base).expanduser()
    peft_model.peft_config["default"].base_model_name_or_path = str(local.resolve()) if local.exists() else base
    trainable = sum(param.numel() for param in model.parameters() if param.requires_grad)
    return Adapters(peft_model, trainable, total, targets)


def adapters_for_run(
    model: torch.nn.Module, lora: LoraConfig | None, new_weights: list[str], base: str, checkpoint: Path | None,
    info: Callable[[str], None],
) -> Adapters | None:
    """A run's adapters (`attach_lora`; None without `training.lora`), restored from the `checkpoint` it resumes
    from, described in one log line. ConfigError when the checkpoint and `lora` disagree."""  # fmt: skip
    if lora is None:
        if checkpoint is not None and is_adapter_dir(checkpoint):
            raise ConfigError(f"{checkpoint} holds adapters (the run used training.lora); resume it with the same training.lora")
        return None
    adapters = attach_lora(model, lora, new_weights, base)
    if checkpoint is not None:
        adapters.load_checkpoint(checkpoint)
    info(adapters.describe())
    return adapters


def load_adapter_dir(directory: Path, auto_class_for: Any, trust_remote_code: bool = False) -> tuple[Any, Any, Any]:
    """(merged model, tokenizer, config) from an adapter dir seqlm wrote: the base model named in adapter_config.json
    (a dir, .gguf file, packaged alias or hub id) with the saved config's head, the adapters merged into it.
    `auto_class_for(config)` is the transformers class to load the base with."""
    from peft import PeftModel
    from transformers import AutoConfig, AutoTokenizer

    from seqlm.models.gguf_files import plain_model
    from seqlm.models.loading import model_source, quiet_transformers

    if not (directory / "config.json").is_file():
        raise DataError(f"{directory}: an adapter dir without the trained model's config.json; pass the run's model/ (merged) instead")
    base = json.loads((directory / ADAPTER_CONFIG).read_text(encoding="utf-8")).get("base_model_name_or_path")
    try:
        source = model_source(base) if base else None
    except DataError:
        source = None  # moved or deleted since: the run's own config may still name it
    if source is None:
        base = _run_base(directory) or base
        if base is None:
            raise DataError(f"{directory / ADAPTER_CONFIG}: names no base_model_name_or_path; set it to the base model's dir")
        source = model_source(base)
    with quiet_transformers():
        try:
            config = AutoConfig.from_pretrained(directory, trust_remote_code=trust_remote_code)
            model = source.load(auto_class_for(config), config=config, dtype=torch.float32, trust_remote_code=trust_remote_code)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # peft calls transformers APIs deprecated for v6
                merged = plain_model(PeftModel.from_pretrained(model, str(directory)).merge_and_unload())
            tokenizer = AutoTokenizer.from_pretrained(directory, trust_remote_code=trust_remote_code)
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            raise DataError(f"{directory}: could not load the adapters onto {base} ({first_line(exc)}); check adapter_config.json's base model") from exc
    return merged, tokenizer, config


def _run_base(directory: Path) -> str | None:
    """The base model the run that wrote `directory` (its adapter/ or best-adapter/) started from, per its config.yaml."""
    import yaml

    saved = directory.parent / "config.yaml"
    try:
        config = yaml.safe_load(saved.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None
    model = config.get("model") if isinstance(config, dict) else None
    base = model.get("from_pretrained") if isinstance(model, dict) else model  # pretrain: model.from_pretrained
    if not isinstance(base, str):
        return None
    local = Path(base)
    return str(saved.parent / local) if not local.is_absolute() and (saved.parent / local).exists() else base
