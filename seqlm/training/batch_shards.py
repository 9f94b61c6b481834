"""Each rank's rows of a global batch (`shard_batch`), for DDP and FSDP runs: every rank draws the whole
batch, as one process would, and trains on its own contiguous slice of it.
"""

from __future__ import annotations

import torch

from seqlm.data.batch import Batch
from seqlm.data.example_batches import LABEL_ROWS as DECODER_LABELS
from seqlm.data.masking import IGNORE_INDEX
from seqlm.runtime.distributed import Cluster


def shard_batch(batch: Batch, cluster: Cluster) -> Batch:
    """This rank's rows of a global batch: contiguous slices, sizes differing by at most one.

    Padding columns no row of the slice needs are dropped, from the source-side inputs and from every
    per-token target (a 2-D target as wide as the inputs: MLM labels, tags), so targets always line up
    with the logits. Decoder labels that go to the model as an input (seq2seq `inputs["labels"]`, as
    wide as the longest target, not the longest source) are trimmed to their own widest row: the
    padding after a target only ever follows it (causal decoder), so no kept position changes. A rank
    left without a row (a global batch smaller than the number of processes: an epoch's last) gets
    one row that counts for nothing (weight 0, or every token target ignored), so that it still
    takes part in the step."""
    if not cluster.distributed:
        return batch
    rows, full_width = batch.inputs["input_ids"].shape
    # ceil(rows * r / W): the first ranks take the extra rows.
    start, end = (-(-rows * rank // cluster.world_size) for rank in (cluster.rank, cluster.rank + 1))
    if start == end:
        return _zero_weight_row(batch, full_width)
    inputs = {key: value[start:end] for key, value in batch.inputs.items()}
    targets = {key: value[start:end] for key, value in batch.targets.items()}
    mask = inputs.get("attention_mask")
    if mask is not None:
        width = int(mask.sum(dim=1).max())
        inputs = {key: value if key == DECODER_LABELS else value[:, :width] for key, value in inputs.items()}
        targets = {key: value[:, :width] if _per_token(value, full_width) else value for key, value in targets.items()}
    if DECODER_LABELS in inputs:
        labels = inputs[DECODER_LABELS]
        kept = (labels != IGNORE_INDEX).any(dim=0).nonzero()
        # Contiguous: HF seq2seq models `.view` their labels.
        inputs[DECODER_LABELS] = labels[:, : int(kept.max()) + 1 if len(kept) else 1].contiguous()
    return Batch(inputs, targets)


def _per_token(target: torch.Tensor, width: int) -> bool:
    return target.dim() == 2 and target.shape[1] == width


def _zero_weight_row(batch: Batch, width: int) -> Batch:
    inputs = {key: value[:1] for key, value in batch.inputs.items()}
    targets = {key: value[:1] for key, value in batch.targets.items()}
    labels = targets.get("labels")
    if DECODER_LABELS in inputs:
        inputs[DECODER_LABELS] = torch.full_like(inputs[DECODER_LABELS], IGNORE_INDEX)  # no target token counted, no loss
    elif labels is not None and _per_token(labels, width):
        targets["labels"] = torch.full_like(labels, IGNORE_INDEX)  # no token counted, no loss
    elif labels is not None and labels.dim() == 1:
        targets["weights"] = torch.zeros(1, dtype=torch.float32)
    else:
        raise ValueError("only batches with one label per example or per token can give a rank an empty share")
    return Batch(inputs, targets)
