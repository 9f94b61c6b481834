"""seqlm's offline `evaluate` metric modules and the scoring that feeds them; `load_metric(name)`.

The metric classes live in `seqlm.metrics.modules` (`evaluate.Metric` subclasses that run
offline). Importing `evaluate` costs about 3 s on a 2-core CPU (it imports transformers'
pipelines), so it happens only when a metric is first needed: a command that fails on a bad
path or config does not pay for it. `seqlm.metrics.Accuracy` etc. still resolve, lazily.
"""

from __future__ import annotations

from typing import Any


def load_metric(name: str, **kwargs: Any) -> Any:
    """An in-memory instance of one of seqlm's metrics (no hub access, no cache files)."""
    from seqlm.metrics.modules import METRICS

    return METRICS[name](keep_in_memory=True, **kwargs)


def __getattr__(name: str) -> Any:
    if name.startswith("__"):  # the import system probes dunders (__path__, ...): no reason to load evaluate
        raise AttributeError(f"module 'seqlm.metrics' has no attribute {name!r}")
    import importlib

    metric_modules = importlib.import_module("seqlm.metrics.modules")  # not `from seqlm.metrics import`: that asks __getattr__
    try:
        return getattr(metric_modules, name)
    except AttributeError:
        raise AttributeError(f"module 'seqlm.metrics' has no attribute {name!r}") from None
