"""A seq2seq model warm-started from two encoder checkpoints (`model: {encoder:, decoder:}`), through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from conftest import invoke, seqlm

from seqlm.config.finetune import WarmStartConfig
from seqlm.models.seq2seq_models import warm_start


def test_a_warm_start_reports_only_the_cross_attention_as_new(tiny_bert: Path) -> None:
    from transformers import AutoModelForMaskedLM

    model, tokenizer, new = warm_start(WarmStartConfig(encoder=str(tiny_bert)))
    assert type(model).__name__ == "EncoderDecoderModel"
    layers = model.decoder.config.num_hidden_layers
    assert new and all(".crossattention." in name for name in new)  # an MLM checkpoint brings its LM head
    assert len({name.split(".crossattention.")[0] for name in new}) == layers
    assert model.generation_config.decoder_start_token_id == tokenizer.cls_token_id
    assert model.generation_config.eos_token_id == tokenizer.sep_token_id
    pretrained = AutoModelForMaskedLM.from_pretrained(tiny_bert)
    # Encoder and decoder both start from the checkpoint's weights (the decoder's self-attention too).
    torch.testing.assert_close(model.encoder.embeddings.word_embeddings.weight, pretrained.bert.embeddings.word_embeddings.weight)
    torch.testing.assert_close(
        model.decoder.bert.encoder.layer[0].attention.self.query.weight, pretrained.bert.encoder.layer[0].attention.self.query.weight
    )


def test_a_decoder_with_another_vocabulary_is_refused(tiny_bert: Path, tiny_gpt: Path, tmp_path: Path) -> None:
    config = {"output_dir": str(tmp_path / "run"), "task": "seq2seq", "model": {"encoder": str(tiny_bert), "decoder": str(tiny_gpt)},
              "data": {"train": str(_pairs(tmp_path / "train.jsonl", 8))}}  # fmt: skip
    (tmp_path / "finetune.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    result = invoke("finetune", tmp_path / "finetune.yaml")
    assert result.exit_code == 3 and "model.decoder: " in result.stderr and "another vocabulary" in result.stderr, result.output
    assert not (tmp_path / "run" / "model").exists()


def _pairs(path: Path, n: int) -> Path:
    words = "the cat sat on a mat and the dog ran to the park".split()
    rows = [" ".join(words[i % 5 : i % 5 + 6]) for i in range(n)]
    path.write_text("".join(json.dumps({"source": row, "target": " ".join(row.split()[:3])}) + "\n" for row in rows), encoding="utf-8")
    return path


@pytest.mark.slow
def test_a_warm_started_model_trains_saves_and_loads_as_a_seq2seq_lm(tiny_bert: Path, tmp_path: Path) -> None:
    """finetune → the saved dir is an HF EncoderDecoderModel that evaluate scores and predict applies."""
    train, validation = _pairs(tmp_path / "train.jsonl", 64), _pairs(tmp_path / "validation.jsonl", 8)
    config = {
        "output_dir": str(tmp_path / "run"), "task": "seq2seq", "model": {"encoder": str(tiny_bert)},
        "data": {"train": str(train), "validation": str(validation)},
        "optim": {"lr": 1.0e-3, "warmup_steps": 2},
        "training": {"batch_size": 8, "max_steps": 30, "eval_every": 30, "eval_generate_examples": 8, "precision": "fp32", "log_every": 10},
        "generation": {"max_new_tokens": 8},
    }  # fmt: skip
    (tmp_path / "finetune.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    seqlm("finetune", tmp_path / "finetune.yaml")
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    losses = [r["loss"] for r in records if "loss" in r and "val_loss" not in r]
    assert losses[-1] < losses[0] * 0.85, losses  # it learns (the cross-attention starts random)

    from transformers import AutoModelForSeq2SeqLM

    saved = AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "run" / "model")
    assert type(saved).__name__ == "EncoderDecoderModel"
    result = invoke("predict", "--device", "cpu", "--model", tmp_path / "run" / "model", "-i", validation, "--set", "text_field=source",
                    "--set", "generation.max_new_tokens=8")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert len(result.stdout.splitlines()) == 8
