"""Greedy choice (`seqlm.tasks.first_maximum`): the index `scores.max(dim=-1).indices` gives, first maximum on
ties, NaN counted as the largest, for vocabularies that are and are not a multiple of the block, and few rows."""

from __future__ import annotations

import pytest
import torch

from seqlm.tasks.first_maximum import BLOCK, FEW_ROWS, first_maximum


@pytest.mark.parametrize("width", [BLOCK * 3, 7476, 2 * BLOCK + 1, 50])
@pytest.mark.parametrize("rows", [1, FEW_ROWS, 40])
def test_the_first_maximum_as_max_gives_it(rows: int, width: int) -> None:
    generator = torch.Generator().manual_seed(rows * width)
    scores = torch.randn(rows, width, generator=generator)
    assert torch.equal(first_maximum(scores), scores.max(dim=-1).indices)
    # Ties (rounded scores), a row of one value, a row of -inf, a maximum in the last (short) block, NaNs.
    tied = (scores * 2).round()
    tied[0] = 1.0
    tied[-1] = -float("inf")
    if rows > 2:
        tied[1, -1] = 100.0
        tied[2, width // 2] = float("nan")
        tied[2, width // 3] = float("nan")
    assert torch.equal(first_maximum(tied), tied.max(dim=-1).indices)


def test_a_non_contiguous_batch_falls_back_to_max() -> None:
    scores = torch.randn(BLOCK * 4, 40).t()  # 40 rows × 256, transposed: not contiguous
    assert torch.equal(first_maximum(scores), scores.max(dim=-1).indices)
