"""`training.lora` on every task, with tiny random models (2 layers, width 32): only the adapters (and a new head)
train, every other weight is bit-unchanged; model/ is the merged model and equals the base + adapter/ through
peft; evaluate/predict take adapter/ as well; a bad target is a one-line config error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import REPO, invoke, seqlm, sets, write_jsonl
from safetensors.torch import load_file

from seqlm.config.lora import LoraConfig
from seqlm.errors import ConfigError
from seqlm.models.loading import load_for_inference
from seqlm.models.lora import attach_lora

LORA = sets(training__lora__r=4, training__lora__alpha=8)
CLASSIFY = REPO / "data" / "classify"
POS = REPO / "data" / "tasks" / "token_classification" / "pos_ud_ewt"


def _save(model: torch.nn.Module, tokenizer, directory: Path) -> Path:  # noqa: ANN001
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory: pytest.TempPathFactory, tiny_tokenizer) -> Path:  # noqa: ANN001
    from transformers import GPT2Config, GPT2LMHeadModel

    tokenizer = tiny_tokenizer("bpe")
    config = GPT2Config(
        vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=2, n_positions=64, resid_pdrop=0.0, embd_pdrop=0.0,
        attn_pdrop=0.0, bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    return _save(GPT2LMHeadModel(config), tokenizer, tmp_path_factory.mktemp("lora_gpt2") / "model")


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory: pytest.TempPathFactory, tiny_tokenizer) -> Path:  # noqa: ANN001
    from transformers import BertConfig, BertForMaskedLM

    tokenizer = tiny_tokenizer("wordpiece")
    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    return _save(BertForMaskedLM(config), tokenizer, tmp_path_factory.mktemp("lora_bert") / "model")


def _classify_files(root: Path) -> tuple[Path, Path]:
    rows = (CLASSIFY / "train.jsonl").read_text(encoding="utf-8").splitlines()
    train, validation = root / "train.jsonl", root / "validation.jsonl"
    train.write_text("\n".join(rows[:256]) + "\n", encoding="utf-8")
    validation.write_text("\n".join(rows[1200:1264]) + "\n", encoding="utf-8")
    return train, validation


def classify_args(model: Path, root: Path, run: Path, **overrides: object) -> list[str]:
    train, validation = _classify_files(root)
    settings = {
        "model": model, "output_dir": run, "data.train": train, "data.validation": validation, "data.test": "null",
        "training.max_steps": 8, "training.batch_size": 16, "training.max_length": 32, "training.eval_every": 4,
        "training.log_every": 1, "training.early_stopping.patience": "null", "optim.lr": 1e-2, **overrides,
    }  # fmt: skip
    args = ["finetune", "configs/tiny/gpt_finetune.yaml", "--device", "cpu", *LORA]
    for key, value in settings.items():
        args += ["--set", f"{key}={value}"]
    return args


def _frozen_unchanged_and_adapted_changed(base_dir: Path, merged_dir: Path, adapted: tuple[str, ...]) -> None:
    """Every weight the merged model shares with the base is bit-identical, but those of the adapted layers."""
    base, merged = load_file(base_dir / "model.safetensors"), load_file(merged_dir / "model.safetensors")
    shared = [name for name in base if name in merged]
    assert len(shared) > 10
    changed = [name for name in shared if not torch.equal(base[name], merged[name])]
    assert changed and all(any(f".{part}." in name for part in adapted) and name.endswith("weight") for name in changed), changed


def _merged_equals_base_plus_adapter(merged_dir: Path, adapter_dir: Path, auto_class, inputs: dict) -> None:  # noqa: ANN001
    from peft import PeftModel
    from transformers import AutoConfig

    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    base = auto_class.from_pretrained(config["base_model_name_or_path"], config=AutoConfig.from_pretrained(adapter_dir))  # its labels
    with torch.no_grad():
        expected = PeftModel.from_pretrained(base, adapter_dir).eval()(**inputs).logits
        got = auto_class.from_pretrained(merged_dir).eval()(**inputs).logits
        via_seqlm = load_for_inference(str(adapter_dir), "cpu").model(**inputs).logits
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(via_seqlm, expected, rtol=1e-5, atol=1e-5)


def test_lora_classification_trains_adapters_and_the_head_only(gpt2_dir: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForSequenceClassification

    run = tmp_path / "run"
    result = invoke(*classify_args(gpt2_dir, tmp_path, run))
    assert result.exit_code == 0, result.output
    assert "lora: adapters on 8 layers (c_attn, c_proj, c_fc)" in result.stderr and "for full fine-tuning" in result.stderr
    _frozen_unchanged_and_adapted_changed(gpt2_dir, run / "model", ("c_attn", "c_proj", "c_fc"))
    assert {"adapter_config.json", "adapter_model.safetensors", "config.json"} <= {p.name for p in (run / "adapter").iterdir()}
    assert not (run / "adapter" / "model.safetensors").exists() and (run / "best-adapter" / "adapter_config.json").is_file()
    adapter = load_file(run / "adapter" / "adapter_model.safetensors")
    assert any(".score." in name for name in adapter) and all("lora_" in name or ".score." in name for name in adapter)
    inputs = {"input_ids": torch.tensor([[5, 17, 40, 99, 3]])}
    _merged_equals_base_plus_adapter(run / "model", run / "adapter", AutoModelForSequenceClassification, inputs)
    losses = [r["loss"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "loss" in r and "split" not in r]
    assert losses[-1] < losses[0]  # it learned something
    out = tmp_path / "predicted.jsonl"
    seqlm("predict", "--model", run / "adapter", "--input", CLASSIFY / "test.jsonl", "--output", out, "-q")
    assert len(out.read_text().splitlines()) == len((CLASSIFY / "test.jsonl").read_text().splitlines())


def test_lora_token_classification_on_bert(bert_dir: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForTokenClassification

    train = write_jsonl(tmp_path / "train.jsonl", [json.loads(line) for line in (POS / "train.jsonl").read_text().splitlines()[:128]])
    validation = write_jsonl(tmp_path / "val.jsonl", [json.loads(line) for line in (POS / "validation.jsonl").read_text().splitlines()[:32]])
    run = tmp_path / "run"
    settings = sets(
        model=bert_dir, output_dir=run, data__train=train, data__validation=validation, data__test="null", training__max_steps=4,
        training__batch_size=16, training__max_length=32, training__eval_every=4,
    )  # fmt: skip
    seqlm("finetune", "configs/tiny/bert_pos_finetune.yaml", *settings, *LORA, "--device", "cpu", "-q")
    _frozen_unchanged_and_adapted_changed(bert_dir, run / "model", ("query", "key", "value", "dense"))
    inputs = {"input_ids": torch.tensor([[2, 17, 40, 99, 3]]), "attention_mask": torch.ones(1, 5, dtype=torch.long)}
    _merged_equals_base_plus_adapter(run / "model", run / "adapter", AutoModelForTokenClassification, inputs)


def test_lora_continues_pretraining_a_causal_lm(gpt2_dir: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    data, run = tmp_path / "data", tmp_path / "run"
    seqlm("tokenize", "configs/tiny/gpt_tokenize.yaml", *sets(output_dir=data, corpus__max_documents=200, tokenizer__pretrained=gpt2_dir), "-q")
    settings = sets(output_dir=run, data=data, model__from_pretrained=gpt2_dir, training__max_steps=4, training__seq_len=32, training__batch_size=4)
    seqlm("pretrain", "configs/tiny/gpt_pretrain.yaml", *settings, *LORA, "--set", "optim.lr=1e-2", "--device", "cpu", "-q")
    _frozen_unchanged_and_adapted_changed(gpt2_dir, run / "model", ("c_attn", "c_proj", "c_fc"))
    inputs = {"input_ids": torch.tensor([[5, 17, 40, 99, 3]])}
    _merged_equals_base_plus_adapter(run / "model", run / "adapter", AutoModelForCausalLM, inputs)


def test_merging_into_gathered_weights_keeps_the_output_layer_tied(gpt2_dir: Path) -> None:
    """Under FSDP `merged` puts the weights gathered from the shards (a copy under each name of a tied weight) into the
    layout kept on the meta device before sharding: the same merged model as the live one, GPT-2's output layer tied."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(gpt2_dir)
    adapters = attach_lora(model, LoraConfig(r=4, alpha=8), [], str(gpt2_dir))
    adapters.keep_layout()
    assert {param.device.type for param in adapters.layout.parameters()} == {"meta"}
    torch.manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:  # zero at first: merging would change nothing
                param.normal_()
    gathered = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    got, expected = adapters.merged(gathered).state_dict(), adapters.merged().state_dict()
    assert got.keys() == expected.keys() and all(torch.equal(got[key], expected[key]) for key in got)
    merged = adapters.merged(gathered)
    assert merged.lm_head.weight is merged.transformer.wte.weight


def test_target_modules_that_match_nothing_name_the_layers_there_are(gpt2_dir: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(gpt2_dir)
    with pytest.raises(ConfigError, match=r"no layer of this GPT2LMHeadModel is named q_proj; its linear layers are named: c_attn, c_proj, c_fc"):
        attach_lora(model, LoraConfig(target_modules=["q_proj"]), [], str(gpt2_dir))
    result = invoke(*classify_args(gpt2_dir, tmp_path, tmp_path / "run"), "--set", "training.lora.target_modules=[q_proj]")
    assert result.exit_code == 2 and "training.lora.target_modules: no layer" in result.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "run" / "model").exists()


def test_lora_with_freeze_body_is_refused(gpt2_dir: Path, tmp_path: Path) -> None:
    result = invoke(*classify_args(gpt2_dir, tmp_path, tmp_path / "run"), "--set", "training.freeze=body")
    assert result.exit_code == 2 and "use freeze: none with lora" in result.stderr


def test_lora_seq2seq_on_a_decoder_only_model(gpt2_dir: Path, tmp_path: Path) -> None:
    """Prompt + target on a causal LM: the adapters train, the merged model keeps seqlm's prompt marker, and the
    adapter dir loads as the same prompted model (its head read from the saved config)."""
    from transformers import AutoModelForCausalLM

    rows = [{"source": line.split(" ", 3)[-1][:60], "target": line.split(" ", 3)[-1][:20]} for line in
            (CLASSIFY / "train.jsonl").read_text().splitlines()[:96]]  # fmt: skip
    train, validation = write_jsonl(tmp_path / "train.jsonl", rows[:80]), write_jsonl(tmp_path / "val.jsonl", rows[80:])
    run = tmp_path / "run"
    settings = sets(
        model=gpt2_dir, output_dir=run, data__train=train, data__validation=validation, training__max_steps=4, training__batch_size=16,
        training__max_source_length=24, training__max_target_length=16, training__eval_every=4, training__eval_generate_examples=4,
        generation__max_new_tokens=4,
    )  # fmt: skip
    seqlm("finetune", "configs/tiny/gpt_translate_finetune.yaml", *settings, *LORA, "--device", "cpu", "-q")
    _frozen_unchanged_and_adapted_changed(gpt2_dir, run / "model", ("c_attn", "c_proj", "c_fc"))
    assert json.loads((run / "adapter" / "config.json").read_text())["seqlm"]["head"] == "prompted_lm"
    assert load_for_inference(str(run / "adapter"), "cpu").head == "prompted_lm"
    _merged_equals_base_plus_adapter(run / "model", run / "adapter", AutoModelForCausalLM, {"input_ids": torch.tensor([[5, 17, 40]])})


def test_an_adapter_dir_whose_base_moved_loads_the_base_its_run_names(gpt2_dir: Path, tmp_path: Path) -> None:
    import shutil

    run = tmp_path / "run"
    seqlm(*classify_args(gpt2_dir, tmp_path, run, **{"training.max_steps": 2}), "-q")
    adapter_config = json.loads((run / "adapter" / "adapter_config.json").read_text())
    assert adapter_config["base_model_name_or_path"] == str(gpt2_dir.resolve())
    moved = tmp_path / "copy"
    shutil.copytree(run, moved)
    (moved / "adapter" / "adapter_config.json").write_text(json.dumps({**adapter_config, "base_model_name_or_path": "/gone/model"}))
    inputs = {"input_ids": torch.tensor([[5, 17, 40]])}
    with torch.no_grad():
        expected = load_for_inference(str(run / "model"), "cpu").model(**inputs).logits
        torch.testing.assert_close(load_for_inference(str(moved / "adapter"), "cpu").model(**inputs).logits, expected, rtol=1e-5, atol=1e-5)
