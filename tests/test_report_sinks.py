"""`training.report_to: [tensorboard]`: the run's records as TensorBoard event files, read back with
TensorBoard's own EventAccumulator; a resume shows each step once; the setting in every training config. The end-to-end run with SIGKILL is in
tests/test_resume.py."""

from __future__ import annotations

import time
import typing
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from seqlm.config.finetune_base import FinetuneTrainingConfig
from seqlm.config.loading import load_config
from seqlm.config.schema import PretrainConfig, TrainingConfig
from seqlm.training.report_sinks import SINKS
from seqlm.training.run_dir import RunDir
from seqlm.training.tensorboard_sink import hyperparameters

REPO = Path(__file__).resolve().parents[1]
CONFIG = "output_dir: runs/x\ntraining:\n  max_steps: 8\n  report_to:\n  - tensorboard\n  lora: null\noptim:\n  betas:\n  - 0.9\n  - 0.98\n"


def _train(step: int, loss: float) -> dict:
    return {"step": step, "loss": loss, "mlm_loss": loss - 1, "grad_norm": 0.5, "tokens_per_s": 1000.0, "lr": 0.01, "tokens_seen": 64 * step}


def events(run: Path) -> EventAccumulator:
    accumulator = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0, "tensors": 0})
    accumulator.Reload()
    return accumulator


def steps(accumulator: EventAccumulator, tag: str) -> list[int]:
    return [event.step for event in accumulator.Scalars(tag)]


def test_records_text_and_hparams_are_read_back(tmp_path: Path) -> None:
    run = RunDir(tmp_path, ["tensorboard"])
    run.start(CONFIG)
    for step in (2, 4):
        run.log(_train(step, 5.0 - step))
    run.log({"step": 4, "split": "validation", "val_loss": 2.5, "val_f1": float("nan"), "val_accuracy": 0.75})
    run.log({"step": 4, "split": "test", "test_loss": 2.0, "test_accuracy": 0.5})
    run.write_metrics({"task": "classification", "steps": 4, "stopped_early": False, "val_loss": 2.5, "best_val_accuracy": 0.75})

    accumulator = events(tmp_path)
    scalars = set(accumulator.Tags()["scalars"])
    assert {f"train/{key}" for key in ("loss", "mlm_loss", "grad_norm", "tokens_per_s", "lr", "tokens_seen")} <= scalars
    assert {"validation/loss", "validation/accuracy", "test/loss", "test/accuracy"} <= scalars
    assert "validation/f1" not in scalars  # NaN is null in metrics.jsonl: no point
    assert [(e.step, e.value) for e in accumulator.Scalars("train/loss")] == [(2, 3.0), (4, 1.0)]
    assert accumulator.Scalars("train/tokens_seen")[-1].value == 256
    assert accumulator.Scalars("validation/accuracy")[0].value == 0.75
    text = accumulator.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "report_to:" in text and "max_steps: 8" in text

    assert {"final/steps", "final/val_loss", "final/best_val_accuracy"} <= scalars
    assert "final/task" not in scalars and "final/stopped_early" not in scalars
    content = accumulator.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    assert start.hparams["training.max_steps"].number_value == 8
    assert start.hparams["training.report_to"].string_value == '["tensorboard"]'
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    assert {info.name.tag for info in experiment.metric_infos} >= {"final/steps", "final/best_val_accuracy"}


def test_a_resume_drops_the_records_after_its_checkpoint(tmp_path: Path) -> None:
    first = RunDir(tmp_path, ["tensorboard"])
    first.start(CONFIG)
    for step in range(1, 7):
        first.log(_train(step, 10.0 - step))
    first.log({"step": 6, "split": "validation", "val_loss": 4.0})
    before = [e.wall_time for e in events(tmp_path).Scalars("train/loss")[:3]]
    time.sleep(0.01)
    # Killed: the writer is never closed. The checkpoint of step 3 was written when 3 records were.
    resumed = RunDir(tmp_path, ["tensorboard"])
    resumed.resume(CONFIG, 3, 3)
    for step in range(4, 9):
        resumed.log(_train(step, 20.0 - step))
    resumed.log({"step": 8, "split": "validation", "val_loss": 3.0})
    resumed.write_metrics({"steps": 8, "val_loss": 3.0})

    accumulator = events(tmp_path)
    assert [e.wall_time for e in accumulator.Scalars("train/loss")[:3]] == before  # when first written
    assert [(e.step, e.value) for e in accumulator.Scalars("train/loss")] == [
        (1, 9.0), (2, 8.0), (3, 7.0), (4, 16.0), (5, 15.0), (6, 14.0), (7, 13.0), (8, 12.0)
    ]  # fmt: skip
    assert steps(accumulator, "validation/loss") == [8]
    assert len(list((tmp_path / "tensorboard").iterdir())) == 1


def test_a_sink_is_opt_in_and_its_stale_output_goes(tmp_path: Path) -> None:
    plain = RunDir(tmp_path)
    plain.start(CONFIG)
    plain.log(_train(1, 1.0))
    assert not (tmp_path / "tensorboard").exists()

    reported = RunDir(tmp_path, ["tensorboard"])
    reported.resume(CONFIG, 1, 1)  # enabled on a resume: the records so far are in it
    assert steps(events(tmp_path), "train/loss") == [1]
    reported.log(_train(2, 1.0))
    reported.close()
    # Resumed without it from step 1, its files would show step 2, which the run discarded.
    RunDir(tmp_path).resume(CONFIG, 1, 1)
    assert not (tmp_path / "tensorboard").exists()


def test_report_to_is_in_every_training_config_and_names_the_registered_sinks() -> None:
    for schema in (TrainingConfig, FinetuneTrainingConfig):
        field = schema.model_fields["report_to"]
        assert field.default == []
        (item,) = typing.get_args(field.annotation)
        assert set(typing.get_args(item)) == set(SINKS)
    config = load_config(PretrainConfig, REPO / "configs/tiny/gpt_pretrain.yaml", ["training.report_to=[tensorboard]"])
    assert config.training.report_to == ["tensorboard"]
    with pytest.raises(Exception, match="report_to"):
        load_config(PretrainConfig, REPO / "configs/tiny/gpt_pretrain.yaml", ["training.report_to=[wandb]"])


def test_hyperparameters_are_the_config_by_dotted_key() -> None:
    assert hyperparameters(CONFIG) == {
        "output_dir": "runs/x",
        "training.max_steps": 8,
        "training.report_to": '["tensorboard"]',
        "optim.betas": "[0.9, 0.98]",
    }
