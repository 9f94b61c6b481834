"""Data-parallel and sharded training on torchrun, for real: several processes on the CPU (gloo).

Tolerances: a run of 2 processes adds its gradients in another order than 1 process (and runs
with 1 thread each), so losses agree to 1e-5 relative and weights to 1e-4 absolute after 30
AdamW steps; resuming a run of 2 processes is bit-identical to not stopping it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from seqlm.cli import app

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
CLASSIFY = REPO / "data" / "classify"
runner = CliRunner()
# Dropout 0: a single process draws one dropout mask for the whole batch, 2 processes one each.
COMMON = [
    "--set", "training.max_steps=30", "--set", "training.log_every=1", "--set", "training.eval_every=15",
    "--set", "model.dropout=0.0", "--device", "cpu", "-q",
]  # fmt: skip


def _seqlm(*args: str, timeout: float = 300, tmpdir: Path | None = None) -> subprocess.CompletedProcess:
    env = {**_env(), "TMPDIR": str(tmpdir)} if tmpdir is not None else _env()
    return subprocess.run([sys.executable, "-m", "seqlm", *args], cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env)


def _env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def _ok(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("distributed") / "data"
    result = runner.invoke(
        app, ["tokenize", "configs/tiny/gpt_tokenize.yaml", "--set", f"output_dir={data}", "--set", "corpus.max_documents=1000", "-q"]
    )
    assert result.exit_code == 0, result.output
    return data


def _pretrain(data: Path, run: Path, *extra: str) -> list[str]:
    return ["pretrain", "configs/tiny/gpt_pretrain.yaml", "--set", f"data={data}", "--set", f"output_dir={run}", *COMMON, *extra]


@pytest.fixture(scope="module")
def single(data: Path) -> Path:
    """One process, batch 16 (grad_accum 2 x 8)."""
    run = data.parent / "single"
    _ok(_seqlm(*_pretrain(data, run, "--set", "training.batch_size=8", "--set", "training.grad_accum=2")))
    return run


@pytest.fixture(scope="module")
def ddp(data: Path) -> Path:
    """Two processes, the same global batch: 4 per device x grad_accum 2 x 2 processes; reporting to TensorBoard."""
    run = data.parent / "ddp"
    scratch = data.parent / "ddp-tmpdir"  # its TMPDIR: see test_a_launch_leaves_no_temporary_files
    scratch.mkdir()
    settings = ["--set", "training.batch_size=4", "--set", "training.grad_accum=2", "--set", "training.report_to=[tensorboard]"]
    _ok(_seqlm(*_pretrain(data, run, *settings, "--nproc", "2"), tmpdir=scratch))
    return run


def test_a_launch_leaves_no_temporary_files(ddp: Path) -> None:
    """torch's elastic launcher makes a torchelastic_* log directory per launch and never removes
    it: a cron job launching every hour would fill /tmp. seqlm gives it one it removes. (Inductor's
    torchinductor_<user> cache, one per user and reused by every run, may be there.)"""
    left = sorted(p.name for p in (ddp.parent / "ddp-tmpdir").iterdir() if not p.name.startswith("torchinductor_"))
    assert left == []


def test_metrics_jsonl_holds_one_record_per_step_whatever_the_number_of_processes(single: Path, ddp: Path) -> None:
    for run in (single, ddp):
        records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        assert [r["step"] for r in records if "split" not in r] == list(range(1, 31)), run.name  # log_every 1, 30 steps
        assert [r["step"] for r in records if r.get("split") == "validation"] == [15, 30], run.name
    # training.report_to: rank 0 alone writes TensorBoard's event file, as it writes metrics.jsonl.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert len(list((ddp / "tensorboard").iterdir())) == 1
    events = EventAccumulator(str(ddp / "tensorboard"), size_guidance={"scalars": 0}).Reload()
    assert [event.step for event in events.Scalars("train/loss")] == list(range(1, 31))


def test_resuming_a_finished_run_of_two_processes_does_nothing(data: Path, ddp: Path) -> None:
    before = {str(p): p.stat().st_mtime_ns for p in ddp.rglob("*")}
    result = _seqlm(*_pretrain(data, ddp, "--set", "training.batch_size=4", "--set", "training.grad_accum=2", "--nproc", "2", "--resume"))
    _ok(result)
    assert result.stderr.count("this run finished at step 30") == 1 and "error" not in result.stderr
    assert {str(p): p.stat().st_mtime_ns for p in ddp.rglob("*")} == before


def _losses(run: Path) -> dict[int, float]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in records if "split" not in r}


def _weights(run: Path, name: str = "model") -> dict[str, torch.Tensor]:
    return load_file(run / name / "model.safetensors")


def _close_weights(expected: Path, got: Path, atol: float = 1e-4) -> None:
    a, b = _weights(expected), _weights(got)
    assert sorted(a) == sorted(b)
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=atol, msg=f"{key} differs")


def test_two_ddp_processes_match_one_process_with_the_same_global_batch(single: Path, ddp: Path) -> None:
    one, two = _losses(single), _losses(ddp)
    assert sorted(one) == sorted(two) == list(range(1, 31))
    for step in one:
        assert two[step] == pytest.approx(one[step], rel=1e-5), f"step {step}"
    assert one[30] < one[1] - 1.0  # it learned
    _close_weights(single, ddp)
    metrics = json.loads((ddp / "metrics.json").read_text())
    assert metrics["val_loss"] == pytest.approx(json.loads((single / "metrics.json").read_text())["val_loss"], rel=1e-5)
    assert metrics["tokens_seen"] == 30 * 16 * 64  # global tokens: both ranks counted


def test_fsdp_matches_ddp_and_its_model_loads_in_plain_transformers(data: Path, ddp: Path) -> None:
    run = data.parent / "fsdp"
    _ok(_seqlm(*_pretrain(data, run, "--set", "training.batch_size=4", "--set", "training.grad_accum=2",
                          "--set", "distributed.strategy=fsdp", "--nproc", "2")))  # fmt: skip
    for step, loss in _losses(ddp).items():
        assert _losses(run)[step] == pytest.approx(loss, rel=1e-5), f"step {step}"
    _close_weights(ddp, run)  # gathered from the shards, tied weights saved once as by save_pretrained

    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(run / "model")
    torch.testing.assert_close(model.transformer.wte.weight.detach(), _weights(ddp)["transformer.wte.weight"], rtol=0, atol=1e-4)


# Dropout on: each rank's RNG state must come back; checkpoints every 20 of 40 steps.
STOP_SETTINGS = [
    "--set", "training.max_steps=40", "--set", "training.checkpoint_every=20", "--set", "training.eval_every=20",
    "--set", "model.dropout=0.1", "--set", "training.batch_size=8", "--nproc", "2",
]  # fmt: skip


@pytest.fixture(scope="module")
def uninterrupted(data: Path) -> dict[tuple[str, str], Path]:
    """The uninterrupted 2-process run of each (strategy, checkpoint), made when first asked for."""

    class Runs(dict):
        def __missing__(self, key: tuple[str, str]) -> Path:
            run = data.parent / f"uninterrupted-{key[0]}-{key[1]}"
            _ok(_seqlm(*_pretrain(data, run, *STOP_SETTINGS, *_layout(*key))))
            self[key] = run
            return run

    return Runs()


def _layout(strategy: str, checkpoint: str) -> list[str]:
    return ["--set", f"distributed.strategy={strategy}", "--set", f"distributed.checkpoint={checkpoint}"]


def _start(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "seqlm", *args], cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _wait_for(marker: Path, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 300
    while not marker.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert marker.exists(), process.communicate()[1][-3000:]


def _running(pid: int) -> bool:
    """The process exists and has not exited (a zombie waiting for its parent has)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:  # gone
        return False


def _ranks_of(process: subprocess.Popen) -> list[int]:
    """The pids of the launcher's ranks (its child processes)."""
    children = Path(f"/proc/{process.pid}/task/{process.pid}/children")
    return [int(pid) for pid in children.read_text().split()] if children.exists() else []


@pytest.mark.parametrize(
    ("strategy", "checkpoint", "stop"),
    [("ddp", "full", signal.SIGTERM), ("fsdp", "sharded", signal.SIGTERM), ("fsdp", "sharded", signal.SIGKILL)],
)
def test_a_stopped_two_process_run_resumes_exactly(
    data: Path, uninterrupted: dict[tuple[str, str], Path], strategy: str, checkpoint: str, stop: signal.Signals
) -> None:
    """SIGTERM to `seqlm ... --nproc 2`: every rank checkpoints the same step, exit 143. SIGKILL to the
    launcher and its ranks (a lost node): the last complete checkpoint. Either way `--resume` with 2
    processes ends bit-identical to the uninterrupted run."""
    settings = [*STOP_SETTINGS, *_layout(strategy, checkpoint)]
    stopped = data.parent / f"stopped-{strategy}-{checkpoint}-{stop.name}"

    process = _start(_pretrain(data, stopped, *settings))
    _wait_for(stopped / "checkpoints" / "step-000020" / "COMPLETE", process)
    ranks = _ranks_of(process)
    if stop == signal.SIGKILL:
        for pid in [process.pid, *ranks]:
            os.kill(pid, signal.SIGKILL)
        process.communicate(timeout=60)
        for pid in ranks:  # the ranks are gone too (a node lost with everything on it)
            while _running(pid):
                time.sleep(0.05)
    else:
        process.send_signal(stop)
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 143, stderr[-3000:]
        assert stderr.count("SIGTERM at step") == 1, stderr  # rank 0 speaks for the run
        assert "--nproc 2 --resume" in stderr
    if checkpoint == "sharded":
        shards = sorted(p.name for p in (stopped / "checkpoints" / "step-000020" / "sharded").iterdir())
        assert shards == [".metadata", "__0_0.distcp", "__1_0.distcp"]
        assert not (stopped / "checkpoints" / "step-000020" / "model.safetensors").exists()
        refused = runner.invoke(app, ["evaluate", "--model", str(stopped / "checkpoints" / "step-000020"), "--data", str(data)])
        assert refused.exit_code == 3 and "a sharded checkpoint" in refused.output and "use the run's model/" in refused.output

    _ok(_seqlm(*_pretrain(data, stopped, *settings, "--resume")))
    expected, got = _weights(uninterrupted[strategy, checkpoint]), _weights(stopped)
    assert all(torch.equal(expected[key], got[key]) for key in expected)
    assert _losses(stopped) == _losses(uninterrupted[strategy, checkpoint])


def test_resuming_with_another_number_of_processes_is_refused(data: Path, ddp: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    _ok(_seqlm(*_pretrain(data, run, "--set", "training.batch_size=4", "--set", "training.max_steps=10",
                          "--set", "training.checkpoint_every=5", "--nproc", "2")))  # fmt: skip
    result = _seqlm(*_pretrain(data, run, "--set", "training.batch_size=4", "--set", "training.max_steps=20",
                               "--set", "training.checkpoint_every=5", "--resume"))  # fmt: skip
    assert result.returncode == 2
    assert "written by a run of 2 process(es), and this run has 1" in result.stderr
    assert "Traceback" not in result.stderr


def _classify_files(root: Path) -> tuple[Path, Path, Path]:
    """993 training verses: with 32 per step the epoch's last batch has 1 example, and one rank none of it."""
    rows = (CLASSIFY / "train.jsonl").read_text(encoding="utf-8").splitlines()
    files = root / "train.jsonl", root / "validation.jsonl", root / "test.jsonl"
    for path, part in zip(files, (rows[:993], rows[993:1193], rows[1193:1293])):
        path.write_text("\n".join(part) + "\n", encoding="utf-8")
    return files


def _finetune(model: Path, files: tuple[Path, Path, Path], run: Path, *extra: str) -> list[str]:
    train, validation, test = files
    settings = {
        "model": model, "output_dir": run, "data.train": train, "data.validation": validation, "data.test": test,
        "training.max_steps": 33, "training.eval_every": 11, "training.log_every": 1, "training.early_stopping.patience": "null",
    }  # fmt: skip
    args = ["finetune", "configs/tiny/gpt_finetune.yaml", "--device", "cpu", "-q"]
    for key, value in settings.items():
        args += ["--set", f"{key}={value}"]
    return [*args, *extra]


def _finetune_on_one_and_two_processes(
    model: Path, files: tuple[Path, Path, Path], root: Path, config: str, atol: float = 1e-4
) -> tuple[Path, dict, dict]:
    """The same global batch (32) on one process and on two (16 each): losses to 1e-5, weights to `atol`.
    Returns the one-process run and both runs' metrics.json (one, two)."""
    one, two = root / "one", root / "two"
    for run, extra in ((one, ["--set", "training.batch_size=32"]), (two, ["--set", "training.batch_size=16", "--nproc", "2"])):
        args = _finetune(model, files, run, *extra)
        args[1] = config
        _ok(_seqlm(*args))
    for step, loss in _losses(one).items():
        assert _losses(two)[step] == pytest.approx(loss, rel=1e-5), f"step {step}"
    _close_weights(one, two, atol)
    return one, json.loads((one / "metrics.json").read_text()), json.loads((two / "metrics.json").read_text())


def _evaluate_on_one_and_two_processes(model: Path, data: Path, root: Path, *extra: str) -> None:
    """`seqlm evaluate --nproc 1` and `--nproc 2` write the same metrics (floats summed in another order: to 1e-6)."""
    reports = []
    for nproc in ("1", "2"):
        output = root / f"eval-{nproc}"
        _ok(_seqlm("evaluate", "--model", str(model), "--data", str(data), "--set", f"output_dir={output}",
                   "--set", "batch_size=8", *extra, "--device", "cpu", "--nproc", nproc, "-q"))  # fmt: skip
        reports.append(json.loads((output / "metrics.json").read_text()))
    assert reports[0].keys() == reports[1].keys()
    for key, value in reports[0].items():
        assert reports[1][key] == (pytest.approx(value, rel=1e-6) if isinstance(value, float) else value), key


def test_finetune_and_evaluate_on_two_processes_match_one(single: Path, tmp_path: Path) -> None:
    """Fine-tuning across an epoch end whose last batch is smaller than the number of ranks, then
    `seqlm evaluate --nproc 2`: the same figures as one process (metrics gathered, not averaged)."""
    files = _classify_files(tmp_path)
    one, expected, got = _finetune_on_one_and_two_processes(single / "model", files, tmp_path, "configs/tiny/gpt_finetune.yaml")
    for key in ("val_accuracy", "test_accuracy", "best_step", "val_examples", "test_examples"):
        assert got[key] == expected[key], key
    assert got["test_loss"] == pytest.approx(expected["test_loss"], rel=1e-5)
    _evaluate_on_one_and_two_processes(one / "model", files[2], tmp_path / "classifier", "--set", "max_batches=25")
    _evaluate_on_one_and_two_processes(single / "model", single.parent / "data", tmp_path / "lm", "--set", "max_batches=25")


def test_two_nodes_on_one_host_complete_a_run(data: Path, ddp: Path, tmp_path: Path) -> None:
    """torchrun --nnodes 2 with a c10d rendezvous on 127.0.0.1: the same run as 2 processes on one node."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    run = tmp_path / "nodes"
    args = _pretrain(data, run, "--set", "training.batch_size=4", "--set", "training.grad_accum=2")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
                "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "seqlm-test"]  # fmt: skip
    env = {**_env(), "OMP_NUM_THREADS": "1", "TMPDIR": str(tmp_path)}  # torchrun's own torchelastic_* log dirs
    nodes = [subprocess.Popen([*torchrun, "-m", "seqlm", *args], cwd=REPO, env=env, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    errors = [node.communicate(timeout=300)[1] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], errors[0][-2000:] + errors[1][-2000:]
    _close_weights(ddp, run, atol=1e-6)
    assert _losses(run) == pytest.approx(_losses(ddp), rel=1e-6)


def test_a_rank_that_dies_ends_the_run_with_a_clear_message(data: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    process = _start(_pretrain(data, run, "--set", "training.batch_size=4", "--set", "training.max_steps=100000", "--nproc", "2"))
    deadline = time.monotonic() + 120
    while not (run / "metrics.jsonl").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    ranks = _ranks_of(process)
    assert len(ranks) == 2
    os.kill(ranks[1], signal.SIGKILL)
    _, stderr = process.communicate(timeout=120)  # never a hang: rank 0's next collective fails at once
    assert process.returncode == 128 + signal.SIGKILL
    assert f"(pid {ranks[1]}) was killed by SIGKILL; the other ranks were stopped" in stderr
    assert not any(_running(pid) for pid in ranks)


def test_an_error_rank_0_finds_stops_every_rank_with_one_message(data: Path, single: Path) -> None:
    """The run dir holds a run: rank 0 refuses it (exit 2) and the other rank exits with it, silently."""
    result = _seqlm(*_pretrain(data, single, "--nproc", "2"), timeout=120)
    assert result.returncode == 2
    assert result.stderr.count("seqlm: error:") == 1, result.stderr
    assert "already holds a run" in result.stderr and "Traceback" not in result.stderr


def test_bert_mlm_with_nsp_under_fsdp_matches_ddp(tmp_path: Path) -> None:
    """BERT ties its output layer to its input embedding: FSDP keeps that block with the root
    (sharding it on its own would split the tie), and `model/` saves the tied weight once."""
    data = tmp_path / "data"
    tokenized = runner.invoke(
        app, ["tokenize", "configs/tiny/bert_tokenize.yaml", "--set", f"output_dir={data}", "--set", "corpus.max_documents=1000", "-q"]
    )
    assert tokenized.exit_code == 0, tokenized.output
    runs = {}
    for strategy in ("ddp", "fsdp"):
        runs[strategy] = tmp_path / strategy
        _ok(_seqlm("pretrain", "configs/tiny/bert_nsp_pretrain.yaml", "--set", f"data={data}", "--set", f"output_dir={runs[strategy]}",
                   "--set", "training.max_steps=10", "--set", "training.log_every=1", "--set", "training.eval_every=5",
                   "--set", "model.dropout=0.0", "--set", f"distributed.strategy={strategy}", "--device", "cpu", "--nproc", "2", "-q"))  # fmt: skip
    for step, loss in _losses(runs["ddp"]).items():
        assert _losses(runs["fsdp"])[step] == pytest.approx(loss, rel=1e-5), f"step {step}"
    _close_weights(runs["ddp"], runs["fsdp"])

    from transformers import AutoModelForPreTraining

    model = AutoModelForPreTraining.from_pretrained(runs["fsdp"] / "model")
    assert model.cls.predictions.decoder.weight is model.bert.embeddings.word_embeddings.weight


def test_a_rank_that_stops_responding_times_the_others_out(data: Path, tmp_path: Path) -> None:
    """SIGSTOP one rank: the other's next collective gives up after distributed.timeout_s (10 s here)
    with a message saying so, instead of waiting forever."""
    run = tmp_path / "run"
    args = _pretrain(data, run, "--set", "training.batch_size=4", "--set", "training.max_steps=100000",
                     "--set", "distributed.timeout_s=10", "--nproc", "2")  # fmt: skip
    process = _start(args)
    deadline = time.monotonic() + 120
    while not (run / "metrics.jsonl").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    waiting, stopped = _ranks_of(process)
    os.kill(stopped, signal.SIGSTOP)
    stopped_at = time.monotonic()
    while _running(waiting) and time.monotonic() - stopped_at < 60:
        time.sleep(0.1)
    timed_out_after = time.monotonic() - stopped_at
    os.kill(stopped, signal.SIGCONT)  # a stopped process cannot take the launcher's SIGTERM: let it go
    _, stderr = process.communicate(timeout=120)
    assert 9 < timed_out_after < 40, timed_out_after
    assert process.returncode == 1
    assert "Timed out waiting 10000ms" in stderr and "if another rank of the run failed or was stopped" in stderr


def _tagged_files(root: Path, model: Path, max_length: int) -> tuple[Path, Path, Path]:
    """POS sentences whose windows (for this model's tokenizer) number 32k + 1: the epoch's last global
    batch holds one window, so one rank gets none of it (a row whose every tag is ignored)."""
    import transformers

    from seqlm.data.word_windows import encode_words

    rows = (REPO / "data" / "tasks" / "token_classification" / "pos_ud_ewt" / "train.jsonl").read_text(encoding="utf-8").splitlines()
    tokenizer = transformers.AutoTokenizer.from_pretrained(model)
    n = 300
    while len(encode_words(tokenizer, [json.loads(row)["tokens"] for row in rows[:n]], max_length).input_ids) % 32 != 1:
        n += 1
    files = root / "train.jsonl", root / "validation.jsonl", root / "test.jsonl"
    for path, part in zip(files, (rows[:n], rows[1400:1500], rows[1500:1600])):
        path.write_text("\n".join(part) + "\n", encoding="utf-8")
    return files


def test_token_classification_on_two_processes_matches_one(single: Path, tmp_path: Path) -> None:
    """Rows of different lengths (each rank trims its padding, labels included), an epoch end with a
    rank left without rows, then `seqlm evaluate --nproc 2`: the figures of one process."""
    # The token-classification head has its own dropout (GPT-2's defaults to 0.1): off, like the body's.
    model = tmp_path / "model"
    shutil.copytree(single / "model", model)
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, "classifier_dropout": 0.0}))
    files = _tagged_files(tmp_path, model, 64)
    # Weights to 5e-4: GPT-2's attention key bias has a zero gradient in exact arithmetic (it adds the same
    # q·b to every logit of a query), so its gradient is rounding noise, which AdamW scales up to steps of
    # about lr (2e-3 here); ranks that trim padding round differently. Every other weight agrees to 2e-5.
    one, expected, got = _finetune_on_one_and_two_processes(model, files, tmp_path, "configs/tiny/bert_pos_finetune.yaml", 5e-4)
    for key in ("best_step", "val_words", "test_words", "val_accuracy", "test_accuracy"):
        assert got[key] == expected[key], key
    _evaluate_on_one_and_two_processes(one / "model", files[2], tmp_path / "tagger")
