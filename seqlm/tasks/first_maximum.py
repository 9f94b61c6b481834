"""Each row's greedy choice, `first_maximum(scores)`: the index of its first largest score, what
`scores.max(dim=-1).indices` gives (a NaN counts as the largest, as there), in two cheap passes.

Why: on a CPU `max` with indices walks a row one element at a time, while `amax` (values only) runs vectorized;
for 360 rows of a 7,476-token vocabulary the one took 1.37 ms, the maxima of blocks of 64 and then `max` over
those blocks and over the one block holding each row's maximum 0.29 ms (2 cores). Few rows gain nothing:
below `FEW_ROWS` it is `max` itself.
"""

from __future__ import annotations

import torch

BLOCK = 64
FEW_ROWS = 16


def first_maximum(scores: torch.Tensor) -> torch.Tensor:
    """rows × vocabulary → rows: the index of each row's first maximum (see the module docstring)."""
    rows, width = scores.shape
    if rows < FEW_ROWS or width < 2 * BLOCK or not scores.is_contiguous():
        return scores.max(dim=-1).indices
    full = width - width % BLOCK
    blocks = scores.as_strided((rows, full // BLOCK, BLOCK), (width, BLOCK, 1)).amax(dim=-1)
    if full < width:
        blocks = torch.cat([blocks, scores[:, full:].amax(dim=-1, keepdim=True)], dim=1)
    first_block = blocks.max(dim=-1).indices * BLOCK  # the first block holding the row's maximum
    # The last block may be short: its columns past the end repeat the last one, after it (never chosen first).
    columns = (first_block[:, None] + torch.arange(BLOCK, device=scores.device)).clamp_max(width - 1)
    return first_block + scores.gather(1, columns).max(dim=-1).indices
