"""Resuming a run: which config changes a resume accepts, and which it refuses.

A resumed run must continue the same computation. Changes that only affect logging, the
schedule's length or where it runs are accepted and logged; any other difference (model,
data, batch, objective, optimizer, seed, ...) is refused with the list of differences.
"""

from __future__ import annotations

from typing import Any

from seqlm.errors import ConfigError

# Keys a resume may change: how often things are logged/saved, how long to train, where.
HARMLESS_KEYS = frozenset(
    {
        "training.max_steps",
        "training.log_every",
        "training.eval_every",
        "training.checkpoint_every",
        "resume",
        "device",
        "output_dir",  # the run directory may have been moved
    }
)


def check_resumable(saved: dict[str, Any], current: dict[str, Any], checkpoint: str) -> list[str]:
    """The accepted (harmless) differences, as `key: old -> new`; ConfigError listing any other."""
    differences = _differences(_flatten(saved), _flatten(current))
    refused = [line for key, line in differences if key not in HARMLESS_KEYS]
    if refused:
        raise ConfigError(
            f"cannot resume from {checkpoint}: the config differs in what the run computes ({'; '.join(refused)}); "
            "undo these changes, or start a new run in another output_dir"
        )
    return [line for _, line in differences]


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _differences(saved: dict[str, Any], current: dict[str, Any]) -> list[tuple[str, str]]:
    keys = sorted(set(saved) | set(current))
    return [(key, f"{key}: {saved.get(key)!r} -> {current.get(key)!r}") for key in keys if saved.get(key) != current.get(key)]
