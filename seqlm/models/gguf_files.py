"""A `.gguf` file (llama.cpp's single-file format: weights, often quantized, with the tokenizer and the
chat template as metadata) as a model source.

transformers reads one with `from_pretrained(its_dir, gguf_file=its_name)`, config, tokenizer and
weights alike, and de-quantizes the weights to float; it needs the `gguf` package (the `llm` extra).
What seqlm trains from such a file is saved as a plain HF directory (safetensors), never as GGUF: the
weights are always de-quantized (`GgufConfig(dequantize=True)`: no packed GGUF layers, which cannot be
trained), and `plain_model` then drops transformers' GGUF quantizer, which would refuse `save_pretrained`.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from seqlm.errors import DataError

GGUF_SUFFIX = ".gguf"
_MAGIC = b"GGUF"  # the first four bytes of every GGUF file
EXTRA_HINT = 'install the `llm` extra: pip install -e ".[llm]"'


def is_gguf(path: Path) -> bool:
    """Whether `path` names a GGUF file by its extension (its contents are checked by `gguf_source`)."""
    return path.suffix.lower() == GGUF_SUFFIX


def gguf_source(path: Path, name: str) -> tuple[str, dict[str, Any]]:
    """(the file's directory, {"gguf_file": its name}) for `from_pretrained`; `name` is what the user wrote.
    DataError when the `gguf` package is missing or the file is no GGUF file."""
    if importlib.util.find_spec("gguf") is None:
        raise DataError(f"{name}: reading a .gguf model needs the PyPI package gguf, which is not installed; {EXTRA_HINT}")
    try:
        with open(path, "rb") as handle:
            magic = handle.read(len(_MAGIC))
    except OSError as exc:
        raise DataError(f"{name}: cannot read the file ({exc.strerror}); check its permissions") from exc
    if magic != _MAGIC:
        raise DataError(f"{name}: not a GGUF file (it does not start with 'GGUF'); pass a .gguf model file or an HF model directory")
    return str(path.parent), {"gguf_file": path.name}


def dequantized(directory: str, name: str) -> Any:
    """The `quantization_config` a model's `from_pretrained(directory, gguf_file=name)` gets: every weight unpacked to float."""
    from transformers import GgufConfig

    return GgufConfig(gguf_file=str(Path(directory) / name), dequantize=True)


@contextmanager
def no_reader_bar() -> Iterator[None]:
    """transformers' GGUF reader draws a tqdm bar of its own, which its progress-bar switch does not reach: off here."""
    from functools import partial

    from transformers import modeling_gguf_pytorch_utils as reader

    bar = reader.tqdm
    reader.tqdm = partial(bar, disable=True)
    try:
        yield
    finally:
        reader.tqdm = bar


def plain_model(model: Any) -> Any:
    """`model` (just loaded) as a plain float model: a GGUF load's quantizer record is dropped (its weights are
    de-quantized already, see `gguf_source`), so that it saves as safetensors; any other model is returned as it is."""
    quantizer = getattr(model, "hf_quantizer", None)
    method = getattr(getattr(quantizer, "quantization_config", None), "quant_method", None)
    if quantizer is not None and str(getattr(method, "value", method)) == "gguf":
        quantizer.remove_quantization_config(model)
    return model
