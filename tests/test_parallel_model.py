"""The pieces of a distributed run that need no second process: row sharding, the --nproc
argument handling, and the config rules (the real runs are in test_distributed.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from seqlm.cli import app
from seqlm.config.schema import DistributedConfig
from seqlm.data.batch import Batch
from seqlm.runtime.distributed import SINGLE, Cluster, sharded_results
from seqlm.runtime.launcher import _root_cause, strip_nproc
from seqlm.training.batch_shards import shard_batch


def _batch(rows: int, widths: list[int] | None = None) -> Batch:
    widths = widths or [6] * rows
    ids = torch.arange(rows * 6).reshape(rows, 6)
    mask = torch.tensor([[1] * w + [0] * (6 - w) for w in widths])
    return Batch({"input_ids": ids, "attention_mask": mask}, {"labels": torch.arange(rows)})


@pytest.mark.parametrize("rows", [7, 8, 16])
def test_ranks_get_contiguous_disjoint_rows_that_cover_the_batch(rows: int) -> None:
    shares = [shard_batch(_batch(rows), Cluster(rank, 3)) for rank in range(3)]
    labels = torch.cat([share.targets["labels"] for share in shares])
    assert labels.tolist() == list(range(rows))
    sizes = [len(share.targets["labels"]) for share in shares]
    assert max(sizes) - min(sizes) <= 1


def test_a_share_drops_padding_columns_none_of_its_rows_needs() -> None:
    share = shard_batch(_batch(4, widths=[6, 5, 2, 3]), Cluster(1, 2))
    assert share.inputs["input_ids"].shape == (2, 3)
    assert share.inputs["attention_mask"].tolist() == [[1, 1, 0], [1, 1, 1]]


def test_a_share_trims_per_token_targets_to_its_inputs_width() -> None:
    """Per-token targets (MLM labels, tags, decoder labels) lose the same padding columns as the inputs."""
    batch = _batch(4, widths=[6, 5, 2, 3])
    batch.targets["labels"] = torch.arange(24).reshape(4, 6)
    batch.targets["next_sentence_label"] = torch.arange(4)  # one per row: sliced by rows only
    share = shard_batch(batch, Cluster(1, 2))
    assert share.targets["labels"].tolist() == [[12, 13, 14], [18, 19, 20]]
    assert share.targets["next_sentence_label"].tolist() == [2, 3]


def test_a_rank_without_rows_gets_one_row_whose_token_targets_are_ignored() -> None:
    batch = _batch(1)
    batch.targets["labels"] = torch.arange(6).reshape(1, 6)
    empty = shard_batch(batch, Cluster(1, 2))
    assert empty.targets["labels"].tolist() == [[-100] * 6]


def test_a_rank_without_rows_gets_one_example_at_weight_zero() -> None:
    batch = _batch(1)
    assert shard_batch(batch, Cluster(0, 2)).targets["labels"].tolist() == [0]
    empty = shard_batch(batch, Cluster(1, 2))
    assert empty.targets["weights"].tolist() == [0.0] and len(empty.targets["labels"]) == 1


def _seq2seq_batch(source_widths: list[int], target_widths: list[int]) -> Batch:
    """Sources padded to the longest (6), decoder labels (a model input) to the longest target, with IGNORE_INDEX."""
    batch = _batch(len(source_widths), source_widths)
    width = max(target_widths)
    rows = [[100 + 10 * row + col if col < w else -100 for col in range(width)] for row, w in enumerate(target_widths)]
    labels = torch.tensor(rows)
    return Batch({**batch.inputs, "labels": labels}, {"label_smoothing": torch.full((len(source_widths),), 0.1)})


@pytest.mark.parametrize(
    ("target_widths", "kept"),
    [([9, 3, 8, 4], 8), ([2, 3, 1, 4], 4), ([6, 6, 3, 3], 3)],  # wider than the sources, narrower, as wide as them
)
def test_decoder_labels_are_trimmed_to_their_own_width_not_the_sources(target_widths: list[int], kept: int) -> None:
    """seq2seq labels used to be cut to the share's source width: targets lost their last tokens (eos)."""
    batch = _seq2seq_batch([6, 5, 2, 3], target_widths)
    share = shard_batch(batch, Cluster(1, 2))
    assert share.inputs["input_ids"].shape == (2, 3) and share.inputs["attention_mask"].shape == (2, 3)
    assert share.inputs["labels"].tolist() == batch.inputs["labels"][2:, :kept].tolist()
    assert share.inputs["labels"].is_contiguous()  # HF seq2seq models `.view` their labels
    assert (share.inputs["labels"] != -100).sum() == sum(target_widths[2:])  # every target token, none lost
    assert share.targets["label_smoothing"].tolist() == pytest.approx([0.1, 0.1])
    first = shard_batch(batch, Cluster(0, 2))
    assert (first.inputs["labels"] != -100).sum() == sum(target_widths[:2])


def test_a_rank_without_rows_gets_one_seq2seq_row_whose_decoder_labels_are_ignored() -> None:
    batch = _seq2seq_batch([4], [7])
    assert shard_batch(batch, Cluster(0, 2)).inputs["labels"].tolist() == [[100, 101, 102, 103, 104, 105, 106]]
    empty = shard_batch(batch, Cluster(1, 2))
    assert empty.inputs["labels"].tolist() == [[-100] * 7]
    assert empty.inputs["input_ids"].shape == (1, 6) and "weights" not in empty.targets


def test_one_process_leaves_batches_and_results_as_they_are() -> None:
    batch = _batch(3)
    assert shard_batch(batch, SINGLE) is batch
    assert sharded_results(SINGLE, [1, 2, 3], lambda item: item * 10) == [10, 20, 30]


def test_nproc_is_removed_from_the_ranks_command_line() -> None:
    argv = ["pretrain", "c.yaml", "--nproc", "4", "--set", "x=1", "--nproc=2", "--resume"]
    assert strip_nproc(argv) == ["pretrain", "c.yaml", "--set", "x=1", "--resume"]


def test_sharded_checkpoints_need_fsdp() -> None:
    with pytest.raises(ValueError, match="checkpoint: sharded needs strategy: fsdp"):
        DistributedConfig(checkpoint="sharded")
    assert DistributedConfig(strategy="fsdp", checkpoint="sharded").checkpoint == "sharded"


def test_nproc_under_torchrun_is_a_usage_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    result = CliRunner().invoke(
        app, ["pretrain", "configs/tiny/gpt_pretrain.yaml", "--set", f"output_dir={tmp_path}", "--nproc", "2"]
    )
    assert result.exit_code == 2
    assert "--nproc starts torchrun itself; under torchrun, leave it out" in result.output


@pytest.mark.parametrize("command", ["tokenize", "predict"])
def test_single_process_commands_refuse_to_run_under_torchrun(command: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    config = "configs/tiny/gpt_tokenize.yaml" if command == "tokenize" else "configs/tiny/gpt_predict.yaml"
    result = CliRunner().invoke(app, [command, config])
    assert result.exit_code == 2
    assert f"seqlm {command} runs as one process; run it without torchrun" in result.output


def test_the_launcher_reports_the_failure_that_explains_the_others() -> None:
    """A rank that timed out (exit 1) is the cause, not the stopped peer that took the launcher's SIGTERM
    when it was resumed in the same second (exit 143); a signal-killed rank and a data error come first."""
    from types import SimpleNamespace

    def failures(*codes_and_times: tuple[int, int]) -> dict[int, SimpleNamespace]:
        return {rank: SimpleNamespace(exitcode=code, timestamp=at) for rank, (code, at) in enumerate(codes_and_times)}

    assert _root_cause(failures((143, 100), (1, 100)))[0] == 1
    assert _root_cause(failures((1, 100), (143, 101)))[0] == 0
    assert _root_cause(failures((143, 100), (1, 101)))[0] == 0  # a real stop, its peer's collective broke after
    assert _root_cause(failures((1, 100), (3, 101)))[0] == 1
    assert _root_cause(failures((1, 100), (-9, 101)))[0] == 1
