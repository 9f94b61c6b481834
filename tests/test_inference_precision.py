"""`seqlm evaluate` and `seqlm predict` default to `precision: auto`, resolved as training resolves it (bf16
autocast on CUDA and on CPUs with native bf16, fp32 elsewhere), and what bf16 computes agrees with fp32 on
tiny trained models: classifier labels equal on at least 99% of the inputs, perplexity within 1%."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import REPO, invoke, seqlm, sets

from seqlm.config.inference import EvaluateConfig, PredictConfig
from seqlm.runtime import device as runtime_device
from seqlm.runtime.device import cpu_can_run_bf16, resolve_precision

CPU = torch.device("cpu")
LABELS_EQUAL_AT_LEAST = 0.99
PERPLEXITY_WITHIN = 0.01
needs_cpu_bf16 = pytest.mark.skipif(not cpu_can_run_bf16(), reason="torch runs no bf16 on this CPU")


def test_evaluate_and_predict_default_to_auto() -> None:
    assert EvaluateConfig(model="m", data=Path("d")).precision == "auto"
    assert PredictConfig(model="m").precision == "auto"


@pytest.mark.parametrize(("native", "expected"), [(True, "bf16"), (False, "fp32")])
def test_auto_is_bf16_only_on_cpus_with_native_bf16(monkeypatch: pytest.MonkeyPatch, native: bool, expected: str) -> None:
    monkeypatch.setattr(runtime_device, "cpu_has_native_bf16", lambda: native)
    assert resolve_precision(PredictConfig(model="m").precision, CPU) == expected
    assert resolve_precision(EvaluateConfig(model="m", data=Path("d")).precision, CPU) == expected
    assert resolve_precision("fp32", CPU) == "fp32"  # an explicit choice is kept


# --------------------------------------------------------------------------- agreement on tiny trained models


@needs_cpu_bf16
def test_inference_casts_each_weight_once_per_context_not_per_forward() -> None:
    """Precision.inference() is no_grad + autocast: autocast caches its bf16 weight casts there (under
    inference_mode it would cast every weight again at each forward: a decoding step's largest cost)."""
    from seqlm.runtime.device import Precision

    layer, inputs = torch.nn.Linear(64, 64), torch.randn(4, 64)

    def casts(context) -> int:
        with torch.profiler.profile() as profile, context:
            for _ in range(10):
                assert layer(inputs).dtype == torch.bfloat16
        return sum(event.count for event in profile.key_averages() if event.key == "aten::_to_copy")

    assert casts(Precision(torch.device("cpu"), "bf16").inference()) == 10 + 2  # the inputs each time; weight and bias once
    assert casts(_inference_mode_autocast()) == 3 * 10  # what it replaced


def _inference_mode_autocast():
    from contextlib import ExitStack

    stack = ExitStack()
    stack.enter_context(torch.inference_mode())
    stack.enter_context(torch.autocast("cpu", dtype=torch.bfloat16))
    return stack


@pytest.fixture(scope="module")
def classifier(tiny_bert: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """configs/tiny/bert_classifier's fine-tuning of the tiny BERT, 200 steps (fp32): a model with margins, not ties."""
    run = tmp_path_factory.mktemp("precision-classifier")
    seqlm("finetune", "configs/tiny/bert_finetune.yaml", *sets(model=tiny_bert, output_dir=run, training__max_steps=200,
                                                                training__eval_every=200), "-q")  # fmt: skip
    return run / "model"


def _labels(model: Path, inputs: Path, output: Path, precision: str) -> list[str]:
    seqlm("predict", "--model", model, "-i", inputs, "-o", output, "--device", "cpu", "--top-k", 1, *sets(precision=precision), "-q")
    return [json.loads(line)["label"] for line in output.read_text(encoding="utf-8").splitlines()]


@needs_cpu_bf16
@pytest.mark.slow
def test_bf16_labels_equal_fp32s_on_99_percent(classifier: Path, tmp_path: Path) -> None:
    inputs = tmp_path / "test.jsonl"
    lines = (REPO / "data" / "classify" / "test.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    inputs.write_text("".join(lines[::4]), encoding="utf-8")  # 300 verses of every label
    fp32 = _labels(classifier, inputs, tmp_path / "fp32.jsonl", "fp32")
    bf16 = _labels(classifier, inputs, tmp_path / "bf16.jsonl", "bf16")
    assert len(set(fp32)) > 1, "the tiny classifier predicts a constant class; train it more"
    equal = sum(a == b for a, b in zip(fp32, bf16)) / len(fp32)
    assert len(bf16) == len(fp32) == 300 and equal >= LABELS_EQUAL_AT_LEAST, f"labels equal on {equal:.1%}"


def _perplexity(model: Path, data: Path, output: Path, precision: str) -> dict:
    args = ("evaluate", "--model", model, "--data", data, "--device", "cpu", "--json", *sets(output_dir=output, precision=precision))
    return json.loads(seqlm(*args, "-q"))


@needs_cpu_bf16
@pytest.mark.slow
def test_bf16_perplexity_is_within_1_percent_of_fp32s(tiny_gpt: Path, tmp_path: Path) -> None:
    data = tiny_gpt.parent.parent / "data"
    fp32 = _perplexity(tiny_gpt, data, tmp_path / "fp32", "fp32")
    bf16 = _perplexity(tiny_gpt, data, tmp_path / "bf16", "bf16")
    assert (fp32["inference_precision"], bf16["inference_precision"]) == ("fp32", "bf16")
    assert bf16["tokens"] == fp32["tokens"] > 10_000
    assert abs(bf16["perplexity"] / fp32["perplexity"] - 1) <= PERPLEXITY_WITHIN, (bf16["perplexity"], fp32["perplexity"])


@needs_cpu_bf16
@pytest.mark.slow
@pytest.mark.parametrize(("native", "expected"), [(True, "bf16"), (False, "fp32")])
def test_the_commands_resolve_auto_and_say_which_precision_ran(
    tiny_gpt: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, native: bool, expected: str
) -> None:
    monkeypatch.setattr(runtime_device, "cpu_has_native_bf16", lambda: native)
    data = tiny_gpt.parent.parent / "data"
    metrics = json.loads(seqlm("evaluate", "--model", tiny_gpt, "--data", data, "--device", "cpu", "--json",
                               *sets(output_dir=tmp_path, precision="auto", max_batches=1), "-q"))  # fmt: skip
    assert metrics["inference_precision"] == expected
    assert json.loads((tmp_path / "metrics.json").read_text(encoding="utf-8"))["inference_precision"] == expected
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("It is a truth\n", encoding="utf-8")
    result = invoke("predict", "--model", tiny_gpt, "-i", prompts, "--device", "cpu", *sets(precision="auto", generation__max_new_tokens=2))
    assert result.exit_code == 0, result.output
    assert f"on cpu ({expected})" in result.stderr
