"""The seq2seq task in real runs: a `seqlm finetune` killed with SIGKILL resumes bit-identical, and two
DDP processes (gloo) train and validate as one process with the same global batch.

A tiny T5 from scratch (width 32, one block each side) on word rows like tests/test_seq2seq.py's copy task.
Tolerances as in test_distributed.py: 2 processes add gradients in another order than 1 (losses to 1e-5
relative, weights to 1e-4 absolute); resuming is bit-identical.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from conftest import seqlm
from test_distributed import _close_weights, _losses, _ok
from test_distributed import _seqlm as seqlm_process
from test_resume import _kill_after_step_20_resume_and_compare, _records
from test_seq2seq import _copy_rows, tokenizer_dir  # noqa: F401  (tokenizer_dir: a fixture)

pytestmark = pytest.mark.slow


def _write(path: Path, pairs: list[tuple[str, str]]) -> Path:
    path.write_text("".join(json.dumps({"source": source, "target": target}) + "\n" for source, target in pairs), encoding="utf-8")
    return path


def _config(root: Path, tokenizer: Path, train: Path, validation: Path, dropout: float, training: dict) -> Path:
    """A finetune config file for a tiny T5 (its output_dir is set on the command line)."""
    config = {
        "task": "seq2seq",
        "model": {"family": "t5", "tokenizer": str(tokenizer), "d_model": 32, "n_heads": 2, "encoder_layers": 1,
                  "decoder_layers": 1, "d_ff": 64, "dropout": dropout},
        "data": {"train": str(train), "validation": str(validation)},
        "optim": {"lr": 5.0e-3, "warmup_steps": 5},
        "training": {"eval_generate_examples": 16, "label_smoothing": 0.1, "precision": "fp32",
                     "early_stopping": {"patience": None}, **training},
        "generation": {"max_new_tokens": 12},
    }  # fmt: skip
    path = root / "finetune.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


# --------------------------------------------------------------------------- generation leaves the training's RNG alone


def test_generation_in_a_validation_leaves_the_training_rng_as_it_was(tokenizer_dir: Path) -> None:  # noqa: F811
    """`generate` seeds its own stream (sampling is reproducible) and used to reseed the global one, so
    after each validation every rank of a DDP run drew the same dropout masks, and a single process the
    masks of its first steps again."""
    from transformers import AutoTokenizer

    from seqlm.config.finetune import EncoderDecoderConfig
    from seqlm.config.generation import GenerationConfig
    from seqlm.models.seq2seq_models import build_encoder_decoder
    from seqlm.runtime.device import Precision
    from seqlm.tasks.seq2seq_generation import encode_sources, generate

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    sizes = EncoderDecoderConfig(family="t5", tokenizer=str(tokenizer_dir), d_model=32, n_heads=2, encoder_layers=1, decoder_layers=1)
    model = build_encoder_decoder(sizes, tokenizer)
    sources, _ = encode_sources(tokenizer, _copy_rows(5, seed=2), None)
    settings = GenerationConfig(max_new_tokens=6, do_sample=True)

    def sampled() -> list[str]:
        return [candidates[0].text for candidates in generate(model, tokenizer, sources, settings, 2, Precision(torch.device("cpu"), "fp32"), seed=3)]

    torch.manual_seed(11)
    before = torch.get_rng_state()
    first = sampled()
    assert torch.equal(torch.get_rng_state(), before)
    assert sampled() == first  # the same samples: generation seeds its own stream


# --------------------------------------------------------------------------- SIGKILL, then --resume


def _resume_args(config: Path, run: Path) -> list[str]:
    return ["finetune", str(config), "--device", "cpu", "--set", f"output_dir={run}"]


@pytest.fixture(scope="module")
def copying(tmp_path_factory: pytest.TempPathFactory, tokenizer_dir: Path) -> tuple[Path, Path]:  # noqa: F811
    """(config, uninterrupted run): copying 600 rows, 38 steps of 16 an epoch, dropout and label smoothing
    0.1; a checkpoint and a validation (loss, and BLEU picking best/) every 10 of 40 steps."""
    root = tmp_path_factory.mktemp("seq2seq_resume")
    rows = _copy_rows(640, seed=7)
    train, validation = _write(root / "train.jsonl", [(r, r) for r in rows[:600]]), _write(root / "validation.jsonl", [(r, r) for r in rows[600:]])
    training = {"batch_size": 16, "max_steps": 40, "checkpoint_every": 10, "eval_every": 10, "log_every": 5, "keep_last": 2}
    config = _config(root, tokenizer_dir, train, validation, 0.1, training)
    seqlm(*_resume_args(config, root / "uninterrupted"), "-q")
    return config, root / "uninterrupted"


def test_seq2seq_sigkill_mid_epoch_then_resume_is_bit_identical(copying: tuple[Path, Path], tmp_path: Path) -> None:
    config, expected = copying
    run = tmp_path / "killed"
    _kill_after_step_20_resume_and_compare(_resume_args(config, run), run, expected)  # model/, best/, metrics.jsonl
    validations = {r["step"]: r for r in _records(run) if r.get("split") == "validation"}
    assert sorted(validations) == [10, 20, 30, 40]  # before, at and after the kill
    assert all(r["val_generated"] == 16 for r in validations.values())
    assert any(r["val_bleu"] > 0 for r in validations.values()), validations  # BLEU had something to choose by
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics == {**json.loads((expected / "metrics.json").read_text()), "train_time_s": metrics["train_time_s"]}
    assert metrics["task"] == "seq2seq" and metrics["best_val_bleu"] == max(r["val_bleu"] for r in validations.values())


# --------------------------------------------------------------------------- 2 DDP processes = 1 process


def _rewritten(row: str) -> str:
    """Targets wider than their sources (the words reversed, plus eos) and narrower (the first two words)."""
    words = row.split()
    return " ".join(words[::-1] if len(words) % 2 else words[:2])


def test_two_ddp_processes_match_one_process_for_seq2seq(tmp_path: Path, tokenizer_dir: Path) -> None:  # noqa: F811
    """The same global batch of 16 on one process and on two (8 each), dropout 0, label smoothing 0.1.
    161 training rows: each epoch's last batch holds one example, so one rank gets a row that counts for
    nothing. Each rank trims its share's sources and decoder labels each to their own width (labels
    used to be cut to the sources' width). Validation: the loss split over the ranks, generation by
    every rank on the DDP-unwrapped model; the figures of one process. Then `seqlm evaluate --nproc 2` (beam
search) on the trained model gives one process's scores."""
    rows = _copy_rows(185, seed=5)
    train = _write(tmp_path / "train.jsonl", [(r, _rewritten(r)) for r in rows[:161]])
    validation = _write(tmp_path / "validation.jsonl", [(r, _rewritten(r)) for r in rows[161:]])
    config = _config(tmp_path, tokenizer_dir, train, validation, 0.0, {"max_steps": 30, "eval_every": 15, "log_every": 1})
    one, two = tmp_path / "one", tmp_path / "two"
    seqlm(*_resume_args(config, one), "--set", "training.batch_size=16", "-q")
    _ok(seqlm_process(*_resume_args(config, two), "--set", "training.batch_size=8", "--nproc", "2", "-q"))

    losses_one, losses_two = _losses(one), _losses(two)
    assert sorted(losses_one) == sorted(losses_two) == list(range(1, 31))
    for step, loss in losses_one.items():
        assert losses_two[step] == pytest.approx(loss, rel=1e-5), f"step {step}"
    assert sum(losses_one[s] for s in range(26, 31)) < sum(losses_one[s] for s in range(1, 6)) - 2.5  # it learned
    _close_weights(one, two)
    validations = [[r for r in _records(run) if r.get("split") == "validation"] for run in (one, two)]
    assert [r["step"] for r in validations[1]] == [15, 30]
    for expected, got in zip(*validations):
        assert got.keys() == expected.keys() and got["val_generated"] == 16
        for key, value in expected.items():
            assert got[key] == (pytest.approx(value, rel=1e-5) if isinstance(value, float) else value), (expected["step"], key)
    metrics = [json.loads((run / "metrics.json").read_text()) for run in (one, two)]
    assert metrics[1]["best_step"] == metrics[0]["best_step"]
    # `seqlm evaluate --nproc 2` on the trained model: each rank scores its share, the figures are one process's.
    scores = []
    for run, extra in ((tmp_path / "eval-one", []), (tmp_path / "eval-two", ["--nproc", "2"])):
        arguments = ["evaluate", "--model", str(one / "model"), "--data", str(validation), "--set", f"output_dir={run}",
                     "--set", "precision=fp32"]  # as before evaluate defaulted to auto: generation compared to 1e-5
        _ok(seqlm_process(*arguments, "--set", "generation.max_new_tokens=12", "--set", "generation.num_beams=2", *extra, "-q"))
        scores.append(json.loads((run / "metrics.json").read_text()))
    assert scores[1].keys() == scores[0].keys() and scores[0]["examples"] == 24
    for key, value in scores[0].items():
        assert scores[1][key] == (pytest.approx(value, rel=1e-5) if isinstance(value, float) else value), key
