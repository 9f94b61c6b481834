"""seqlm's `evaluate.Metric` modules: the evaluate protocol gives the same numbers as numpy.

`load_metric` must work with the hub unreachable (HF_HUB_OFFLINE=1, set by conftest) and
must not fetch or cache any evaluate module.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import evaluate
import numpy as np
import pytest

from seqlm.metrics import METRICS, Accuracy, ClassificationReport, Generation, SequenceLabelling, TokenPerplexity, load_metric


def chunks(values: np.ndarray, sizes: list[int]) -> list[np.ndarray]:
    return np.split(values, np.cumsum(sizes)[:-1])


def test_registry() -> None:
    assert METRICS == {
        "token_perplexity": TokenPerplexity,
        "accuracy": Accuracy,
        "classification_report": ClassificationReport,
        "sequence_labelling": SequenceLabelling,
        "generation": Generation,
    }
    assert isinstance(load_metric("token_perplexity"), TokenPerplexity)
    assert isinstance(load_metric("accuracy"), Accuracy)
    assert isinstance(load_metric("accuracy"), evaluate.Metric)
    with pytest.raises(KeyError):
        load_metric("bleu")


def test_token_perplexity_equals_numpy() -> None:
    rng = np.random.default_rng(0)
    n_windows = 300
    tokens = rng.integers(0, 128, size=n_windows)
    nll = rng.gamma(2.0, 1.5, size=n_windows) * tokens  # summed NLL of each window, ~3 nats/token
    metric = load_metric("token_perplexity")
    sizes = [1, 7, 0, 50, 42, 200]
    for p, r in zip(chunks(nll, sizes), chunks(tokens, sizes)):
        metric.add_batch(predictions=p.tolist(), references=r.tolist())
    result = metric.compute()
    loss = nll.sum() / tokens.sum()  # Σ NLL / Σ tokens, not a mean of per-window means
    assert result["tokens"] == int(tokens.sum())
    assert isinstance(result["tokens"], int)
    assert result["loss"] == pytest.approx(loss, rel=1e-12)
    assert result["perplexity"] == pytest.approx(np.exp(loss), rel=1e-12)
    assert result["loss"] != pytest.approx(np.mean(nll[tokens > 0] / tokens[tokens > 0]), rel=1e-3)


def test_token_perplexity_single_batch_and_compute_kwargs() -> None:
    metric = load_metric("token_perplexity")
    assert metric.compute(predictions=[2.0, 4.0], references=[1, 3]) == pytest.approx(
        {"loss": 1.5, "perplexity": math.exp(1.5), "tokens": 4}
    )
    # add_batch + compute(inputs) together count both.
    metric.add_batch(predictions=[3.0], references=[1])
    assert metric.compute(predictions=[1.0], references=[1])["loss"] == pytest.approx(2.0)


def test_token_perplexity_huge_loss_does_not_overflow() -> None:
    result = load_metric("token_perplexity").compute(predictions=[1e6], references=[10])
    assert result["loss"] == pytest.approx(1e5)
    assert math.isfinite(result["perplexity"])


def test_accuracy_equals_numpy() -> None:
    rng = np.random.default_rng(1)
    expected = rng.integers(0, 50, size=5000)
    predicted = np.where(rng.random(5000) < 0.3, expected, rng.integers(0, 50, size=5000))
    metric = load_metric("accuracy")
    sizes = [10, 0, 990, 1, 3999]
    for p, r in zip(chunks(predicted, sizes), chunks(expected, sizes)):
        metric.add_batch(predictions=p.tolist(), references=r.tolist())
    assert metric.compute()["accuracy"] == pytest.approx(float(np.mean(predicted == expected)), abs=1e-15)
    assert load_metric("accuracy").compute(predictions=[1, 2, 3], references=[1, 2, 3]) == {"accuracy": 1.0}
    assert load_metric("accuracy").compute(predictions=[1, 2], references=[2, 1]) == {"accuracy": 0.0}


def test_compute_resets_the_metric() -> None:
    metric = load_metric("accuracy")
    metric.add_batch(predictions=[0, 0], references=[0, 1])
    assert metric.compute()["accuracy"] == 0.5
    metric.add_batch(predictions=[1], references=[1])
    assert metric.compute()["accuracy"] == 1.0


def test_instances_are_independent() -> None:
    a, b = load_metric("token_perplexity"), load_metric("token_perplexity")
    a.add_batch(predictions=[10.0], references=[5])
    b.add_batch(predictions=[1.0], references=[1])
    assert a.compute()["loss"] == pytest.approx(2.0)
    assert b.compute()["loss"] == pytest.approx(1.0)


# --------------------------------------------------------------------------- empty input


def test_empty_batches_give_nan() -> None:
    perplexity = load_metric("token_perplexity")
    perplexity.add_batch(predictions=[], references=[])
    result = perplexity.compute()
    assert result["tokens"] == 0
    assert math.isnan(result["loss"]) and math.isnan(result["perplexity"])

    accuracy = load_metric("accuracy")
    accuracy.add_batch(predictions=[], references=[])
    assert math.isnan(accuracy.compute()["accuracy"])


def test_windows_without_tokens_give_nan() -> None:
    result = load_metric("token_perplexity").compute(predictions=[0.0, 0.0], references=[0, 0])
    assert result["tokens"] == 0
    assert math.isnan(result["loss"]) and math.isnan(result["perplexity"])


@pytest.mark.parametrize("name", ["token_perplexity", "accuracy"])
def test_compute_with_nothing_added_gives_the_empty_result(name: str) -> None:
    # e.g. `seqlm evaluate` on a split too short to give a single window: no batch at all.
    metric = load_metric(name)
    result = metric.compute()
    assert all(math.isnan(value) for key, value in result.items() if key != "tokens")
    # ... and the metric is still usable afterwards.
    metric.add_batch(predictions=[1], references=[1])
    expected = {"accuracy": 1.0} if name == "accuracy" else {"loss": 1.0, "perplexity": math.e, "tokens": 1}
    assert metric.compute() == expected


# --------------------------------------------------------------------------- offline, no hub modules


def _files(root: Path) -> set[Path]:
    return {path for path in root.rglob("*") if path.is_file()} if root.exists() else set()


def test_load_metric_does_not_touch_network_or_module_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    assert os.environ["HF_HUB_OFFLINE"] == "1"

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"network access: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(evaluate, "load", refuse)
    caches = [Path(evaluate.config.HF_MODULES_CACHE), Path(evaluate.config.HF_METRICS_CACHE)]
    before = [_files(cache) for cache in caches]

    samples = {
        "sequence_labelling": ([["B-PER", "O"]], [["B-PER", "I-PER"]]),  # tag sequences, not ids
        "generation": (["the cats sat"], [["the cat sat", "a cat sat"]]),  # texts (rouge-score's nltk stemmer: no download)
    }
    for name in METRICS:
        metric = load_metric(name)
        predictions, references = samples.get(name, ([1, 2], [1, 3]))
        metric.add_batch(predictions=predictions, references=references)
        assert metric.compute()
        assert metric.keep_in_memory
        assert metric.cache_file_name is None

    assert [_files(cache) for cache in caches] == before


@pytest.mark.slow  # a fresh interpreter imports evaluate and datasets again: several seconds
def test_fresh_process_offline_downloads_no_hub_module(tmp_path: Path) -> None:
    """In a new interpreter with an empty HF_HOME: works offline, and HF_HOME stays empty of modules."""
    script = """
import json, socket
def refuse(*args, **kwargs):
    raise RuntimeError("network access")
socket.socket.connect = refuse
socket.create_connection = refuse
from seqlm.metrics import load_metric
out = {}
for name in ("token_perplexity", "accuracy"):
    metric = load_metric(name)
    metric.add_batch(predictions=[2, 1], references=[2, 2])
    out[name] = metric.compute()
print(json.dumps(out))
"""
    home = tmp_path / "hf-home"
    env = {**os.environ, "HF_HOME": str(home), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    env.pop("HF_MODULES_CACHE", None)
    env.pop("HF_EVALUATE_CACHE", None)
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["accuracy"] == {"accuracy": 0.5}
    assert out["token_perplexity"]["loss"] == pytest.approx(0.75)
    downloaded = [p for p in _files(home) if "modules" in p.parts or p.suffix == ".py"]
    assert downloaded == []
