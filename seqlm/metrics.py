"""seqlm's metrics, loaded on first use: `load_metric(name)`.

The metric classes live in `seqlm.metric_modules` (`evaluate.Metric` subclasses that run
offline). Importing `evaluate` costs about 3 s on a 2-core CPU (it imports transformers'
pipelines), so it happens only when a metric is first needed: a command that fails on a bad
path or config does not pay for it. `seqlm.metrics.Accuracy` etc. still resolve, lazily.
"""

from __future__ import annotations

from typing import Any


def load_metric(name: str, **kwargs: Any) -> Any:
    """An in-memory instance of one of seqlm's metrics (no hub access, no cache files)."""
    from seqlm.metric_modules import METRICS

    return METRICS[name](keep_in_memory=True, **kwargs)


def __getattr__(name: str) -> Any:
    if name.startswith("__"):  # the import system probes dunders (__path__, ...): no reason to load evaluate
        raise AttributeError(f"module 'seqlm.metrics' has no attribute {name!r}")
    from seqlm import metric_modules

    try:
        return getattr(metric_modules, name)
    except AttributeError:
        raise AttributeError(f"module 'seqlm.metrics' has no attribute {name!r}") from None
