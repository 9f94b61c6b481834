"""End to end through the real CLI on tiny models: tokenize → pretrain → evaluate → predict.

The shipped configs under configs/tiny/ are run as users run them, with only output paths
redirected into a temporary directory. Each model must actually learn, and its `model/`
must load in plain transformers and give the numbers `seqlm evaluate` reports.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from conftest import fp32_unless_set
from typer.testing import CliRunner

from seqlm.cli import app
from seqlm.data.token_store import TokenDataset

pytestmark = pytest.mark.slow
runner = CliRunner()


def seqlm(*args: str) -> str:
    result = runner.invoke(app, fp32_unless_set([str(arg) for arg in args]))  # compared with fp32 references
    assert result.exit_code == 0, f"seqlm {' '.join(map(str, args))} failed ({result.exit_code}):\n{result.output}"
    return result.stdout


@pytest.fixture(scope="module")
def gpt_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("gpt")
    seqlm("tokenize", "configs/tiny/gpt_tokenize.yaml", "--set", f"output_dir={root}/data")
    seqlm("pretrain", "configs/tiny/gpt_pretrain.yaml", "--set", f"output_dir={root}/run", "--set", f"data={root}/data")
    return root


@pytest.fixture(scope="module")
def bert_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("bert") / "data"
    seqlm("tokenize", "configs/tiny/bert_tokenize.yaml", "--set", f"output_dir={data}")
    return data


@pytest.fixture(scope="module")
def bert_run(bert_data: Path) -> Path:
    run = bert_data.parent / "run"
    seqlm("pretrain", "configs/tiny/bert_pretrain.yaml", "--set", f"output_dir={run}", "--set", f"data={bert_data}")
    return run


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _validation_windows(data: Path, seq_len: int) -> list[torch.Tensor]:
    """Consecutive non-overlapping windows of the validation stream, the last one shorter."""
    tokens = torch.from_numpy(np.asarray(TokenDataset.open(data).split("validation").tokens, dtype=np.int64))
    n_full = len(tokens) // seq_len
    windows = list(tokens[: n_full * seq_len].reshape(n_full, seq_len).split(32))
    if len(tokens) % seq_len > 1:
        windows.append(tokens[n_full * seq_len :][None, :])
    return windows


def _plain_transformers_loss(model: torch.nn.Module, windows: list[torch.Tensor]) -> float:
    """Token-level loss the way a transformers user computes it: mean loss per window, weighted by its tokens."""
    model.eval()
    total, count = 0.0, 0
    with torch.inference_mode():
        for batch in windows:
            loss = model(input_ids=batch, labels=batch).loss
            scored = batch.shape[0] * (batch.shape[1] - 1)
            total += float(loss) * scored
            count += scored
    return total / count


def test_clm_run_directory_has_the_documented_layout(gpt_run: Path) -> None:
    run = gpt_run / "run"
    for name in ("config.yaml", "metrics.jsonl", "metrics.json", "model/config.json", "model/model.safetensors", "model/tokenizer.json"):
        assert (run / name).is_file(), name
    assert (run / "checkpoints" / "step-000150" / "model.safetensors").is_file()
    assert (run / "checkpoints" / "step-000150" / "trainer_state.pt").is_file()
    assert not list(run.glob("**/*.tmp-*")), "temporary files left behind"
    records = _records(run / "metrics.jsonl")
    train_records = [r for r in records if "split" not in r]
    assert [r["step"] for r in train_records] == [50, 100, 150, 200, 250, 300]
    assert all({"loss", "lr", "tokens_per_s", "tokens_seen"} <= set(r) for r in train_records)
    assert [r["step"] for r in records if r.get("split") == "validation"] == [100, 200, 300]
    final = json.loads((run / "metrics.json").read_text())
    assert final["steps"] == 300 and final["tokens_seen"] == 300 * 16 * 64


def test_clm_learns_below_initial_loss_and_unigram_entropy(gpt_run: Path) -> None:
    final = json.loads((gpt_run / "run" / "metrics.json").read_text())
    train_tokens = np.asarray(TokenDataset.open(gpt_run / "data").split("train").tokens)
    counts = np.bincount(train_tokens).astype(np.float64)
    p = counts[counts > 0] / counts.sum()
    unigram_entropy = float(-(p * np.log(p)).sum())  # nats/token of the best context-free model
    config = transformers.AutoConfig.from_pretrained(gpt_run / "run" / "model")
    torch.manual_seed(0)
    initial_loss = _plain_transformers_loss(transformers.AutoModelForCausalLM.from_config(config), _validation_windows(gpt_run / "data", 64)[:2])
    assert final["val_loss"] < initial_loss - 1.5, (final["val_loss"], initial_loss)
    # A model using context must beat the unigram entropy; 0.3 nats is a clear margin (seen: ~0.6).
    assert final["val_loss"] < unigram_entropy - 0.3, (final["val_loss"], unigram_entropy)


def test_clm_model_loads_in_plain_transformers_with_the_loss_evaluate_reports(gpt_run: Path) -> None:
    model_dir = gpt_run / "run" / "model"
    stdout = seqlm("evaluate", "--model", model_dir, "--data", gpt_run / "data", "--json", "--set", f"output_dir={gpt_run}/eval")
    reported = json.loads(stdout)  # stdout carries only the JSON
    assert json.loads((gpt_run / "eval" / "metrics.json").read_text()) == reported
    assert reported["objective"] == "clm" and reported["stride"] == reported["seq_len"] == 64
    assert reported["perplexity"] == pytest.approx(math.exp(reported["loss"]))

    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir)
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    assert len(tokenizer) == model.config.vocab_size
    windows = _validation_windows(gpt_run / "data", 64)
    assert reported["tokens"] == sum(w.shape[0] * (w.shape[1] - 1) for w in windows)
    assert _plain_transformers_loss(model, windows) == pytest.approx(reported["loss"], rel=1e-4)


def test_clm_sliding_window_scores_every_token_once(gpt_run: Path) -> None:
    stdout = seqlm("evaluate", "--model", gpt_run / "run" / "model", "--data", gpt_run / "data", "--json", "--set", "stride=16", "--set", "max_batches=2", "--set", f"output_dir={gpt_run}/eval16")
    reported = json.loads(stdout)
    assert reported["stride"] == 16 and reported["windows"] == 32
    assert reported["tokens"] == 63 + 31 * 16


def test_clm_predict_continues_prompts_in_input_order(gpt_run: Path, tmp_path: Path) -> None:
    output = tmp_path / "out.jsonl"
    seqlm("predict", "configs/tiny/gpt_predict.yaml", "--model", gpt_run / "run" / "model", "--output", output)
    prompts = Path("data/prompts/continue.txt").read_text().splitlines()
    records = _records(output)
    assert [r["input"] for r in records] == prompts
    assert all(r["n_generated_tokens"] > 0 and r["generated"] for r in records)


def test_clm_continues_from_its_own_checkpoint(gpt_run: Path) -> None:
    run = gpt_run / "continued"
    seqlm(
        "pretrain", "configs/tiny/gpt_pretrain.yaml", "--set", f"output_dir={run}", "--set", f"data={gpt_run}/data",
        "--set", f"model.from_pretrained={gpt_run}/run/model", "--set", "training.max_steps=20",
        "--set", "training.log_every=10", "--set", "optim.lr=5e-4", "--set", "optim.warmup_steps=0",
    )
    first = _records(run / "metrics.jsonl")[0]
    before = json.loads((gpt_run / "run" / "metrics.json").read_text())["val_loss"]
    assert first["loss"] < before + 0.5, "continued training did not start from the trained weights"


def test_mlm_learns_above_the_most_frequent_token_rate(bert_run: Path, bert_data: Path) -> None:
    model_dir = bert_run / "model"
    reported = json.loads(seqlm("evaluate", "configs/tiny/bert_evaluate.yaml", "--model", model_dir, "--data", bert_data, "--json", "--set", f"output_dir={bert_run}/eval"))
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    tokens = np.asarray(TokenDataset.open(bert_data).split("validation").tokens)
    maskable = tokens[~np.isin(tokens, tokenizer.all_special_ids)]
    most_frequent_rate = np.bincount(maskable).max() / len(maskable)
    # Always guessing the most frequent token scores ~0.06 here; the trained model ~0.10.
    assert reported["accuracy"] > most_frequent_rate + 0.02, (reported["accuracy"], most_frequent_rate)
    assert reported["objective"] == "mlm" and math.isfinite(reported["pseudo_perplexity"])
    assert reported["pseudo_perplexity_tokens"] > 0
    assert isinstance(transformers.AutoModelForMaskedLM.from_pretrained(model_dir), transformers.BertForMaskedLM)
    again = json.loads(seqlm("evaluate", "configs/tiny/bert_evaluate.yaml", "--model", model_dir, "--data", bert_data, "--json", "--set", f"output_dir={bert_run}/eval"))
    assert again == reported, "masked evaluation must be deterministic (fixed seed)"


def test_mlm_fills_masks(bert_run: Path, tmp_path: Path) -> None:
    output = tmp_path / "fills.jsonl"
    seqlm("predict", "configs/tiny/bert_predict.yaml", "--model", bert_run / "model", "--output", output)
    records = _records(output)
    assert [r["input"] for r in records] == Path("data/prompts/fill_mask.txt").read_text().splitlines()
    for record in records:
        candidates = record["masks"][0]
        assert len(candidates) == 5
        scores = [c["score"] for c in candidates]
        assert scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1 + 1e-6


def test_mlm_with_next_sentence_prediction_reports_both_losses(bert_data: Path) -> None:
    run = bert_data.parent / "nsp"
    seqlm("pretrain", "configs/tiny/bert_nsp_pretrain.yaml", "--set", f"output_dir={run}", "--set", f"data={bert_data}", "--set", "training.max_steps=100", "--set", "training.eval_every=50")
    records = _records(run / "metrics.jsonl")
    train_records = [r for r in records if "split" not in r]
    assert all({"lm_loss", "nsp_loss"} <= set(r) for r in train_records)
    assert all(r["loss"] == pytest.approx(r["lm_loss"] + r["nsp_loss"]) for r in train_records)
    final = json.loads((run / "metrics.json").read_text())
    assert {"val_loss", "val_accuracy", "val_nsp_loss", "val_nsp_accuracy"} <= set(final)
    assert isinstance(transformers.AutoModelForPreTraining.from_pretrained(run / "model"), transformers.BertForPreTraining)
    reported = json.loads(seqlm("evaluate", "--model", run / "model", "--data", bert_data, "--json", "--set", "max_batches=2", "--set", "pseudo_perplexity_windows=1", "--set", f"output_dir={run}/eval"))
    assert reported["objective"] == "mlm" and math.isfinite(reported["loss"])


def test_llama_family_trains_and_loads_in_plain_transformers(gpt_run: Path) -> None:
    run = gpt_run / "llama"
    seqlm(
        "pretrain", "configs/tiny/gpt_pretrain.yaml", "--set", f"output_dir={run}", "--set", f"data={gpt_run}/data",
        "--set", "model.family=llama", "--set", "training.max_steps=30", "--set", "training.log_every=10",
        "--set", "training.eval_every=30", "--set", "training.checkpoint_every=null",
    )
    records = [r for r in _records(run / "metrics.jsonl") if "split" not in r]
    assert records[-1]["loss"] < records[0]["loss"]
    assert isinstance(transformers.AutoModelForCausalLM.from_pretrained(run / "model"), transformers.LlamaForCausalLM)


def test_bf16_autocast_on_cpu_trains_when_the_cpu_supports_it(gpt_run: Path) -> None:
    from seqlm.runtime.device import cpu_can_run_bf16

    run = gpt_run / "bf16"
    args = [
        "pretrain", "configs/tiny/gpt_pretrain.yaml", "--set", f"output_dir={run}", "--set", f"data={gpt_run}/data",
        "--set", "training.precision=bf16", "--set", "training.max_steps=20", "--set", "training.log_every=10",
        "--set", "training.eval_every=20", "--set", "training.checkpoint_every=null", "--device", "cpu",
    ]
    if not cpu_can_run_bf16():
        result = runner.invoke(app, args)
        assert result.exit_code == 2 and "bf16" in result.stderr
        return
    seqlm(*args)
    final = json.loads((run / "metrics.json").read_text())
    assert math.isfinite(final["val_loss"])
    # Weights stay fp32 (autocast computes in bf16); the saved model is fp32 too.
    assert transformers.AutoModelForCausalLM.from_pretrained(run / "model").lm_head.weight.dtype == torch.float32


def test_mlm_with_nsp_model_fills_masks(bert_data: Path, tmp_path: Path) -> None:
    run = bert_data.parent / "nsp"  # trained by test_mlm_with_next_sentence_prediction_reports_both_losses
    if not (run / "model").is_dir():
        seqlm("pretrain", "configs/tiny/bert_nsp_pretrain.yaml", "--set", f"output_dir={run}", "--set", f"data={bert_data}", "--set", "training.max_steps=20")
    output = tmp_path / "fills.jsonl"
    seqlm("predict", "configs/tiny/bert_predict.yaml", "--model", run / "model", "--output", output)
    assert len(_records(output)) == len(Path("data/prompts/fill_mask.txt").read_text().splitlines())


def test_a_dataset_from_another_tokenizer_is_refused(gpt_run: Path, bert_data: Path) -> None:
    model = gpt_run / "run" / "model"
    evaluate = runner.invoke(app, ["evaluate", "--model", str(model), "--data", str(bert_data)])
    assert evaluate.exit_code == 3 and "different tokenizer" in evaluate.stderr
    pretrain = runner.invoke(app, [
        "pretrain", "configs/tiny/gpt_pretrain.yaml", "--set", f"output_dir={gpt_run}/mismatch", "--set", f"data={bert_data}",
        "--set", f"model.from_pretrained={model}",
    ])
    assert pretrain.exit_code == 3 and "different tokenizer" in pretrain.stderr
    assert not (gpt_run / "mismatch" / "model").exists()


def test_checkpoint_loop_state_loads_with_weights_only_and_restores(gpt_run: Path) -> None:
    from seqlm.config.schema import OptimConfig
    from seqlm.training.checkpoint import load_trainer_state
    from seqlm.training.optim import build_optimizer, build_scheduler
    from seqlm.training.state import LoopState

    checkpoint = gpt_run / "run" / "checkpoints" / "step-000150"
    saved = load_trainer_state(checkpoint)  # torch.load(weights_only=True): no pickled code
    assert saved["step"] == 150 and saved["tokens_seen"] == 150 * 16 * 64
    assert json.loads((checkpoint / "trainer_state.json").read_text())["step"] == 150
    model = transformers.AutoModelForCausalLM.from_pretrained(checkpoint)
    optimizer = build_optimizer(model, OptimConfig(), torch.device("cpu"))
    state = LoopState(optimizer, build_scheduler(optimizer, 300, OptimConfig()))
    state.load_state_dict(saved)
    assert state.step == 150 and state.scheduler.last_epoch == 150
    assert all("exp_avg" in s for s in state.optimizer.state.values()) and state.optimizer.state
