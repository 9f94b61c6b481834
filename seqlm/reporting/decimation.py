"""Fewer points for long curves, with the shape kept: per-bucket min/max.

A 100,000-step metrics.jsonl is 100,000 points per curve, far more than a figure's pixels. The
points are cut into `buckets` runs of consecutive steps; each keeps its first and last point and
its lowest and highest value, so a one-step spike (a loss blow-up) still shows at full height
and the envelope of a noisy curve is drawn as it is. Curves short enough are drawn as they are.
"""

from __future__ import annotations

import numpy as np

# About two buckets per horizontal pixel of a report figure (≈ 1000 px wide): every extreme shows.
DEFAULT_BUCKETS = 2000


def decimate(steps: np.ndarray, values: np.ndarray, buckets: int = DEFAULT_BUCKETS) -> tuple[np.ndarray, np.ndarray]:
    """`steps`/`values` (same length, steps ascending) cut to at most 4 points per bucket. NaN values (a
    null in the log) are dropped first; a curve of at most 4 * `buckets` points is returned whole."""
    finite = np.isfinite(values)
    if not finite.all():
        steps, values = steps[finite], values[finite]
    n = len(values)
    if n <= 4 * buckets:
        return steps, values
    size = -(-n // buckets)  # points per bucket, rounded up: the last bucket may be shorter
    rows = -(-n // size)
    padded_low = np.full(rows * size, np.inf)
    padded_low[:n] = values
    padded_high = np.full(rows * size, -np.inf)
    padded_high[:n] = values
    starts = np.arange(rows) * size
    keep = np.concatenate(
        [
            starts,
            np.minimum(starts + size, n) - 1,
            starts + padded_low.reshape(rows, size).argmin(axis=1),
            starts + padded_high.reshape(rows, size).argmax(axis=1),
        ]
    )
    keep = np.unique(keep)  # sorted: the points stay in step order
    return steps[keep], values[keep]
