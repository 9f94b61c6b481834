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
        "training.epochs",
        "training.log_every",
        "training.eval_every",
        "training.checkpoint_every",
        "training.keep_last",
        "training.report_to",  # report sinks are rebuilt from metrics.jsonl on every resume
        "resume",
        "overwrite",
        "device",
        "distributed.timeout_s",
        # A distributed checkpoint records its strategy and number of processes, and the resume checks
        # those (seqlm.training.parallel); a single process resumes any of its own checkpoints.
        "distributed.strategy",
        "distributed.checkpoint",  # how the next checkpoints are written; each one says how it was
        "output_dir",  # the run directory may have been moved
    }
)


def check_resumable(saved: dict[str, Any], current: dict[str, Any], checkpoint: str) -> list[str]:
    """The accepted (harmless) differences, as `key: old -> new`; ConfigError listing any other."""
    differences = _differences(_flatten(saved), _flatten(current))
    refused = [line for key, line in differences if key not in HARMLESS_KEYS and not key.startswith("version:")]
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
    """(key, description) of each difference. A key only one side has comes from another seqlm
    version (a setting added or removed since): it is reported but never refused."""
    differences = []
    for key in sorted(set(saved) | set(current)):
        if key not in saved or key not in current:
            shown = f"{current[key]!r} (new setting)" if key in current else f"{saved[key]!r} (no longer a setting)"
            differences.append((f"version:{key}", f"{key}: {shown}"))
        elif saved[key] != current[key]:
            differences.append((key, f"{key}: {saved[key]!r} -> {current[key]!r}"))
    return differences
