"""Load a trained language model and its tokenizer for inference (`predict`, `evaluate`).

`load_for_inference(model, device, head=...)` accepts an HF-format directory (config.json,
weights, tokenizer files — what `seqlm pretrain` and `seqlm finetune` write), a `.gguf` file
(`seqlm.models.gguf_files`), a packaged model's alias (`seqlm.models.packaged`), a LoRA run's `adapter/`
(its base model with the adapters merged, `seqlm.models.lora`) or a hub id, which is passed through to
`from_pretrained` unchanged (`model_source` decides which it is). It works out which head the model was saved with
(`seqlm.models.heads.detect_head`: causal LM, masked LM, sequence or token classifier), loads it in fp32 (lower precision is applied by autocast, see `seqlm.runtime.device`),
moves it to `device` and puts it in eval mode. Remote code runs only with `trust_remote_code=True`.

Every user-fixable problem (missing dir, no config.json, no or corrupted weights, no tokenizer,
weights that do not fit the architecture) is a `DataError` with one line naming the path and the fix.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch

from seqlm.errors import ConfigError, DataError, first_line
from seqlm.models.gguf_files import dequantized, gguf_source, is_gguf, no_reader_bar, plain_model
from seqlm.models.heads import HEADS, auto_class, detect_head, supports
from seqlm.models.lora import is_adapter_dir, load_adapter_dir
from seqlm.models.packaged import packaged_model_path

SAFETENSORS_FILES = ("model.safetensors", "model.safetensors.index.json")
PICKLE_FILES = ("pytorch_model.bin", "pytorch_model.bin.index.json")
# Any one of these is enough for AutoTokenizer to build a tokenizer (fast JSON, WordPiece vocab,
# GPT-2 style vocab+merges, sentencepiece model).
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "tokenizer.model", "spiece.model")


@dataclass
class LoadedModel:
    """A model ready for inference: `model` is in eval mode on the requested device."""

    model: Any  # a transformers PreTrainedModel with the head below (seqlm.models.heads)
    tokenizer: Any  # a transformers PreTrainedTokenizerBase
    head: str  # a key of seqlm.models.heads.HEADS
    path: str

    @property
    def max_positions(self) -> int | None:
        """Positions the model accepts (None when its config does not bound them)."""
        return max_positions(self.model.config)


def load_for_inference(model: str, device: torch.device | str, *, head: str = "auto", trust_remote_code: bool = False) -> LoadedModel:
    """Load `model` (a local HF-format dir or a hub id) with `head` (auto: the one it was saved with); see the module docstring."""
    from transformers import AutoConfig, AutoTokenizer

    local = Path(model).expanduser()
    if is_adapter_dir(local):  # a LoRA run's adapter/: its base model with the adapters merged
        chosen: list[str] = []

        def head_class(config: Any) -> Any:
            chosen.append(_resolve_head(config, head, model))
            return auto_class(chosen[0])

        loaded, tokenizer, _ = load_adapter_dir(local, head_class, trust_remote_code)
        return _ready(loaded, tokenizer, chosen[0], model, device, missing=[])
    found = model_source(model)
    source = found.path
    found.load_kwargs["trust_remote_code"] = trust_remote_code

    with quiet_transformers():
        try:
            config = AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code, **found.file_kwargs)
        except (OSError, ValueError, KeyError) as exc:
            raise DataError(_load_failure(model, local, "config", exc)) from exc
        head = _resolve_head(config, head, model)
        try:
            loaded, info = found.load(auto_class(head), config=config, dtype=torch.float32, output_loading_info=True)
        except Exception as exc:  # safetensors, torch and hub errors share no base class; all mean "unloadable"
            raise DataError(_load_failure(model, local, "weights", exc)) from exc
        try:
            tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code, **found.file_kwargs)
        except (OSError, ValueError, KeyError) as exc:
            raise DataError(_load_failure(model, local, "tokenizer", exc)) from exc

    return _ready(loaded, tokenizer, head, model, device, sorted(info.get("missing_keys") or []))


def _ready(loaded: Any, tokenizer: Any, head: str, model: str, device: torch.device | str, missing: list[str]) -> LoadedModel:
    """The loaded model checked (no weight `missing`), with its tokenizer's pad token set, on `device` in eval mode."""
    # Missing keys mean freshly initialised (random) weights, e.g. an encoder-only checkpoint
    # loaded with an LM head: its predictions would be noise, so refuse instead of warning.
    if missing:
        shown = ", ".join(missing[:3]) + (f" (+{len(missing) - 3} more)" if len(missing) > 3 else "")
        trained = "fine-tuned for that task" if head.endswith(("classification", "answering")) else "trained as a language model"
        raise DataError(
            f"{model}: the checkpoint lacks weights the {head} head needs ({shown}); "
            f"pass a model {trained} (e.g. a `seqlm pretrain` or `seqlm finetune` run's model/ dir)"
        )
    if head != "masked_lm" and tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token  # batching needs a pad id; it is masked out anyway
    if head == "sequence_classification" and loaded.config.pad_token_id is None and tokenizer.pad_token_id is not None:
        # GPT-style classifiers pool the last token that is not config.pad_token_id; without one they
        # refuse batches of more than one input. Padding then uses this same id (see seqlm.tasks.classification_predict).
        loaded.config.pad_token_id = tokenizer.pad_token_id
    if head == "masked_lm" and tokenizer.mask_token is None:
        raise DataError(f"{model}: the tokenizer has no mask token; a masked LM needs one (e.g. [MASK])")

    loaded.to(device)
    loaded.eval()
    return LoadedModel(model=loaded, tokenizer=tokenizer, head=head, path=model)


class ModelSource(NamedTuple):
    """What to pass to `from_pretrained`: `path` (a dir or a hub id) and the model's `load_kwargs`."""

    path: str
    load_kwargs: dict[str, Any]  # use_safetensors for a local dir; gguf_file for a .gguf file

    @property
    def file_kwargs(self) -> dict[str, Any]:
        """For AutoConfig / AutoTokenizer too: the .gguf file that holds config and tokenizer (else nothing)."""
        return {"gguf_file": self.load_kwargs["gguf_file"]} if "gguf_file" in self.load_kwargs else {}

    def load(self, auto_class: Any, **kwargs: Any) -> Any:
        """`auto_class.from_pretrained(path, **kwargs, **load_kwargs)`, as a plain float model (`plain_model`)."""
        kwargs = {**kwargs, **self.load_kwargs}
        if "gguf_file" not in kwargs:
            loaded = auto_class.from_pretrained(self.path, **kwargs)
        else:
            with no_reader_bar():
                loaded = auto_class.from_pretrained(self.path, quantization_config=dequantized(self.path, kwargs["gguf_file"]), **kwargs)
        plain_model(loaded[0] if isinstance(loaded, tuple) else loaded)
        return loaded


def model_source(model: str) -> ModelSource:
    """A checked local model dir (with `use_safetensors`), a `.gguf` file (its dir, with `gguf_file`), a packaged
    model (an alias such as `minilm` or `smollm2`, see `seqlm.models.packaged`) or a hub id."""
    local = packaged_model_path(model) or Path(model).expanduser()
    if local.is_dir():
        return ModelSource(str(local), {"use_safetensors": check_model_dir(local)})
    if local.is_file() and is_gguf(local):
        return ModelSource(*gguf_source(local, model))
    if local.exists():
        raise DataError(f"{model}: is a file, not a model directory; pass the directory holding config.json (or a .gguf file)")
    if not plausible_hub_id(model):
        raise DataError(f"{model}: model directory not found; pass a dir written by `seqlm pretrain` (its model/) or a hub id")
    return ModelSource(model, {})


def remote_code_warning(model: str) -> str:
    """The warning every command prints when a config sets trust_remote_code: true."""
    return f"trust_remote_code: true: Python code shipped with {model} may run on this machine; use it only for sources you trust"


def max_positions(config: Any) -> int | None:
    """The model's position limit from its config (GPT-2 `n_positions` is aliased to this name)."""
    value = getattr(config, "max_position_embeddings", None)
    return int(value) if isinstance(value, int) and value > 0 else None


def model_label_names(model_config: Any, model: str) -> list[str]:
    """Label names in id order from a classifier's id2label (sequence or token); multi-label and regression models are refused."""
    problem = getattr(model_config, "problem_type", None)
    if problem in ("regression", "multi_label_classification") or getattr(model_config, "num_labels", 0) < 2:
        raise DataError(f"{model}: a {problem or 'one-output'} model; seqlm evaluate scores single-label classifiers (2+ classes)")
    id2label = {int(key): str(value) for key, value in (getattr(model_config, "id2label", None) or {}).items()}
    if sorted(id2label) != list(range(model_config.num_labels)):
        raise DataError(f"{model}: config.json's id2label does not name classes 0..{model_config.num_labels - 1}; fix id2label/label2id")
    names = [id2label[i] for i in range(model_config.num_labels)]
    if len(set(names)) != len(names):
        raise DataError(f"{model}: config.json's id2label names a class twice ({names}); give each class its own name")
    return names


def token_limit(requested: int | None, model_config: Any, tokenizer: Any, key: str) -> int:
    """Tokens per input/window: `requested` (never more than the model's positions), else the
    model's positions or the tokenizer's limit when lower (e.g. RoBERTa: 514 positions, 512 usable).
    `key` names the setting in messages."""
    positions = max_positions(model_config)
    if requested is not None:
        if positions is not None and requested > positions:
            raise ConfigError(f"{key} ({requested}) exceeds the model's {positions} positions; set it to {positions} or less")
        return requested
    tokenizer_limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(tokenizer_limit, int) and 0 < tokenizer_limit < (positions or 1_000_000):
        return tokenizer_limit
    if positions is None:
        raise ConfigError(f"the model's config sets no position limit; set {key}")
    return positions


def _resolve_head(config: Any, head: str, model: str) -> str:
    if head != "auto":
        if not supports(config, head):
            raise DataError(f"{model}: a {type(config).__name__} model has no {head} head in transformers")
        return head
    detected = detect_head(config)
    if detected is None:
        known = ", ".join(HEADS)
        raise DataError(f"{model}: {type(config).__name__} has none of the heads seqlm uses ({known}); pass such a model")
    return detected


def check_model_dir(path: Path) -> bool:
    """Fail early with a precise message; returns whether the weights are safetensors."""
    if not (path / "config.json").is_file():
        raise DataError(f"{path}: no config.json; pass the model/ dir of a `seqlm pretrain` run (or any HF save_pretrained dir)")
    has_safetensors = any((path / name).is_file() for name in SAFETENSORS_FILES)
    if not has_safetensors and (path / "sharded").is_dir():
        raise DataError(
            f"{path}: a sharded checkpoint (distributed.checkpoint: sharded) holds no full weights; "
            "use the run's model/ or best/, or resume the run from it"
        )
    if not has_safetensors and not any((path / name).is_file() for name in PICKLE_FILES):
        raise DataError(f"{path}: no model weights (model.safetensors or pytorch_model.bin); the training run may not have finished")
    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        raise DataError(f"{path}: no tokenizer files (tokenizer.json or vocab files); copy them from the dataset's tokenizer/ dir")
    single = path / "model.safetensors"
    if single.is_file():
        from safetensors import safe_open

        # Opening validates the header against the file size, so truncated copies fail here.
        try:
            with safe_open(str(single), framework="pt") as handle:
                handle.keys()
        except Exception as exc:  # SafetensorError is not exported under a stable name
            raise DataError(f"{single}: unreadable or corrupted weights ({first_line(exc)}); re-copy or re-save the model") from exc
    return has_safetensors


def plausible_hub_id(name: str) -> bool:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def _load_failure(model: str, local: Path, what: str, exc: Exception) -> str:
    detail = first_line(exc)
    if local.is_dir():
        return f"{model}: could not load the {what} ({detail}); re-save the model dir with save_pretrained"
    return (
        f"{model}: no such local directory, and loading it as a hub id failed ({detail}); "
        "check the path, or the hub id and your network (HF_HUB_OFFLINE)"
    )


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """Hide transformers' load report and progress bars: this module reports problems itself."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
