"""Safe by default: remote code runs only when a config asks for it (and is then warned about);
weights are read from safetensors and the loop state with torch.load(weights_only=True)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import transformers
from typer.testing import CliRunner

from seqlm.cli import app
from seqlm.config.finetune import FinetuneRunConfig
from seqlm.config.inference import EvaluateConfig, PredictConfig
from seqlm.config.schema import ModelConfig

runner = CliRunner()


@pytest.fixture(scope="module")
def tiny_model(tiny_tokenizer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("safety") / "model"
    tokenizer = tiny_tokenizer("bpe")
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(
        transformers.GPT2Config(vocab_size=len(tokenizer), n_layer=1, n_embd=32, n_head=2, n_positions=32)
    )
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def test_trust_remote_code_is_off_unless_a_config_sets_it() -> None:
    assert ModelConfig().trust_remote_code is False
    for schema in (FinetuneRunConfig, EvaluateConfig, PredictConfig):
        assert schema.model_fields["trust_remote_code"].default is False


def _spy_on_from_pretrained(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    seen: list[object] = []
    real = transformers.AutoConfig.from_pretrained

    def spy(*args, **kwargs):
        seen.append(kwargs.get("trust_remote_code"))
        return real(*args, **kwargs)

    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", spy)
    return seen


def test_predict_passes_false_by_default(tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = _spy_on_from_pretrained(monkeypatch)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("The sea\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    result = runner.invoke(app, ["predict", "--model", str(tiny_model), "-i", str(prompts), "-o", str(out), "--set", "generation.max_new_tokens=2"])
    assert result.exit_code == 0, result.output
    assert seen and all(value is False for value in seen)
    assert "trust_remote_code" not in result.stderr


def test_setting_it_is_warned_and_passed_through(tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = _spy_on_from_pretrained(monkeypatch)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("The sea\n", encoding="utf-8")
    result = runner.invoke(
        app,
        ["predict", "--model", str(tiny_model), "-i", str(prompts), "-o", str(tmp_path / "out.jsonl"),
         "--set", "generation.max_new_tokens=2", "--set", "trust_remote_code=true"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "trust_remote_code: true" in result.stderr and "only for sources you trust" in result.stderr
    assert True in seen


def test_saved_models_are_safetensors_only(tiny_model: Path) -> None:
    from seqlm.training.checkpoint import save_model

    target = tiny_model.parent / "saved"
    save_model(target, transformers.AutoModelForCausalLM.from_pretrained(tiny_model), transformers.AutoTokenizer.from_pretrained(tiny_model))
    names = {path.name for path in target.iterdir()}
    assert "model.safetensors" in names and not any(name.endswith((".bin", ".pt", ".pkl")) for name in names)
    assert json.loads((target / "config.json").read_text())["model_type"] == "gpt2"
