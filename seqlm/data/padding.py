"""Pad token-id rows of different lengths into one batch tensor."""

from __future__ import annotations

import torch


def pad_rows(batch: list[list[int]], pad_id: int, *, left: bool) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(ids) for ids in batch)
    rows, masks = [], []
    for ids in batch:
        gap = width - len(ids)
        rows.append([pad_id] * gap + ids if left else ids + [pad_id] * gap)
        masks.append([0] * gap + [1] * len(ids) if left else [1] * len(ids) + [0] * gap)
    return torch.tensor(rows, dtype=torch.long), torch.tensor(masks, dtype=torch.long)
