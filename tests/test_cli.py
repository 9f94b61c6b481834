"""The CLI's contract: fast startup, exit codes, one-line errors, tracebacks only with --debug, results only on stdout.

Subprocesses run the real entry points (`python -m seqlm`, `seqlm.cli.main`); in-process
tests use `typer.testing.CliRunner` and replace a command's run module with a stub, so the
dispatcher's error handling is exercised without torch.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from seqlm.cli import app
from seqlm.config import COMMAND_SCHEMAS
from seqlm.config.inference import EvaluateConfig
from seqlm.config.schema import TokenizeConfig
from seqlm.errors import ConfigError, DataError

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "tiny"
HEAVY = ("torch", "transformers", "datasets")


def python(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=120, env={**os.environ}, **kwargs
    )


# --------------------------------------------------------------------------- startup stays light

_IMPORT_PROBE = """
import json, sys
sys.argv = ["seqlm", *json.loads(sys.argv[1])]
from seqlm.cli import main
try:
    main()
    code = 0
except SystemExit as exc:
    code = exc.code
heavy = sorted(m for m in sys.modules if m.split(".")[0] in {"torch", "transformers", "datasets", "tensorboard"})
print("PROBE " + json.dumps({"code": code, "heavy": heavy}))
"""


@pytest.mark.parametrize(
    ("argv", "code"),
    [
        (["--help"], 0),
        (["pretrain", "--help"], 0),
        (["evaluate", "-h"], 0),
        (["pretrain", str(TINY / "gpt_pretrain.yaml"), "--print-config"], 0),
        (["pretrain", str(TINY / "gpt_pretrain.yaml"), "--set", "trainig.max_steps=5"], 2),
        (["tokenize", "no/such/config.yaml"], 3),
    ],
    ids=["help", "pretrain-help", "evaluate-h", "print-config", "config-error", "missing-config"],
)
def test_startup_does_not_import_heavy_libraries(argv: list[str], code: int) -> None:
    proc = python("-c", _IMPORT_PROBE, json.dumps(argv))
    probe = [line for line in proc.stdout.splitlines() if line.startswith("PROBE ")]
    assert proc.returncode == 0 and probe, proc.stderr
    result = json.loads(probe[-1].removeprefix("PROBE "))
    assert result["code"] == code, proc.stderr
    assert result["heavy"] == [], f"{argv} imported {result['heavy'][:5]}..."


def test_python_dash_m_seqlm_help() -> None:
    proc = python("-m", "seqlm", "--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    for command in COMMAND_SCHEMAS:
        assert command in proc.stdout


def test_python_dash_m_seqlm_print_config_matches_in_process() -> None:
    """`python -m seqlm` is the same program as the app: same resolved config, bytes for bytes."""
    args = ["pretrain", str(TINY / "gpt_pretrain.yaml"), "--print-config", "--set", "training.max_steps=3"]
    proc = python("-m", "seqlm", *args)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    in_process = CliRunner().invoke(app, args)
    assert in_process.exit_code == 0
    assert proc.stdout == in_process.stdout
    assert yaml.safe_load(proc.stdout)["training"]["max_steps"] == 3


# --------------------------------------------------------------------------- shell completion (Typer's)


def test_shell_completion_script_and_its_answers(tmp_path: Path) -> None:
    """`--show-completion` prints the script for the shell it runs in, `--install-completion` installs it
    (here into a scratch HOME), and the script's call completes commands and options, whether seqlm
    was started as `seqlm` or `python -m seqlm`."""
    env = {**os.environ, "SHELL": "/bin/bash", "HOME": str(tmp_path)}
    seqlm = f"{sys.executable} -m seqlm"
    shown = subprocess.run(["bash", "-c", f"{seqlm} --show-completion"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert "_SEQLM_COMPLETE=complete_bash" in shown.stdout and "complete -o default -F _seqlm_completion seqlm" in shown.stdout
    installed = subprocess.run(["bash", "-c", f"{seqlm} --install-completion"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert installed.returncode == 0, installed.stderr
    assert (tmp_path / ".bash_completions" / "seqlm.sh").read_text() == shown.stdout.rstrip("\n")
    assert "source" in (tmp_path / ".bashrc").read_text()

    def complete(words: str) -> list[str]:
        request = {"_SEQLM_COMPLETE": "complete_bash", "COMP_WORDS": words, "COMP_CWORD": str(len(words.split()) - 1)}
        answer = subprocess.run([sys.executable, "-m", "seqlm"], cwd=REPO, env={**env, **request}, capture_output=True, text=True, timeout=60)
        assert answer.returncode == 0, answer.stderr
        return answer.stdout.split()

    assert complete("seqlm pre") == ["pretrain", "predict"]
    assert "--overwrite" in complete("seqlm pretrain --ov")


# --------------------------------------------------------------------------- a user error from a real run


@pytest.fixture(scope="module")
def evaluate_missing_model() -> dict[str, subprocess.CompletedProcess]:
    """`python -m seqlm evaluate --model /nonexistent --data /nonexistent`, without and with --debug.

    Both import torch (seconds each), so they run side by side.
    """
    base = [sys.executable, "-m", "seqlm", "evaluate", "--model", "/nonexistent", "--data", "/nonexistent", "--device", "cpu"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    procs = {
        name: subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for name, args in {"plain": base, "debug": [*base, "--debug"]}.items()
    }
    results = {}
    for name, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=180)
        results[name] = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    return results


def test_missing_model_is_a_data_error_on_one_line(evaluate_missing_model) -> None:
    proc = evaluate_missing_model["plain"]
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout == ""
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("seqlm: error: /nonexistent")


def test_missing_model_with_debug_shows_the_traceback(evaluate_missing_model) -> None:
    proc = evaluate_missing_model["debug"]
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout == ""
    assert "Traceback (most recent call last)" in proc.stderr
    assert "DataError" in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("seqlm: error: /nonexistent")


# --------------------------------------------------------------------------- the dispatcher, with a stub run module


@pytest.fixture
def tokenize_args(tmp_path: Path) -> list[str]:
    return ["tokenize", str(TINY / "gpt_tokenize.yaml"), "--set", f"output_dir={tmp_path / 'out'}"]


def stub_run(monkeypatch: pytest.MonkeyPatch, command: str, run) -> list[tuple]:
    """Make `seqlm.commands.{command}` a module whose run() is `run`; returns the calls it received."""
    calls: list[tuple] = []

    def recording_run(config, console, **kwargs):
        calls.append((config, console, kwargs))
        return run(config, console, **kwargs)

    module = types.ModuleType(f"seqlm.commands.{command}")
    module.run = recording_run
    monkeypatch.setitem(sys.modules, f"seqlm.commands.{command}", module)
    return calls


def raiser(exc: BaseException):
    def run(config, console, **kwargs):
        raise exc

    return run


def test_dispatch_hands_the_validated_config_to_the_run_module(monkeypatch, tokenize_args, tmp_path) -> None:
    calls = stub_run(monkeypatch, "tokenize", lambda config, console, **kw: None)
    result = CliRunner().invoke(app, tokenize_args)
    assert result.exit_code == 0, result.output
    [(config, _console, kwargs)] = calls
    assert isinstance(config, TokenizeConfig)
    assert config.output_dir == tmp_path / "out"
    assert kwargs == {}


def test_evaluate_passes_json_flag_and_options(monkeypatch) -> None:
    calls = stub_run(monkeypatch, "evaluate", lambda config, console, **kw: None)
    result = CliRunner().invoke(app, ["evaluate", "--model", "m", "--data", "d", "--device", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    [(config, _console, kwargs)] = calls
    assert isinstance(config, EvaluateConfig)
    assert (config.model, config.data, config.device) == ("m", Path("d"), "cpu")
    assert kwargs == {"json_output": True}


def test_unexpected_error_exits_1_and_points_to_debug(monkeypatch, tokenize_args) -> None:
    stub_run(monkeypatch, "tokenize", raiser(RuntimeError("boom")))
    result = CliRunner().invoke(app, tokenize_args)
    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("seqlm: error: unexpected RuntimeError: boom")
    assert "rerun with --debug" in lines[0]


def test_unexpected_error_with_debug_prints_the_traceback(monkeypatch, tokenize_args) -> None:
    stub_run(monkeypatch, "tokenize", raiser(RuntimeError("boom")))
    result = CliRunner().invoke(app, [*tokenize_args, "--debug"])
    assert result.exit_code == 1, result.output
    assert "Traceback (most recent call last)" in result.stderr
    assert "RuntimeError: boom" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("seqlm: error: unexpected RuntimeError")


def test_unexpected_error_with_empty_message_still_one_line(monkeypatch, tokenize_args) -> None:
    stub_run(monkeypatch, "tokenize", raiser(KeyError("x")))
    result = CliRunner().invoke(app, tokenize_args)
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("seqlm: error: unexpected KeyError")


@pytest.mark.parametrize(("exc", "code"), [(DataError("bad data\nsecond line"), 3), (ConfigError("bad config"), 2)])
def test_user_errors_from_a_run_keep_their_exit_code_and_first_line(monkeypatch, tokenize_args, exc, code) -> None:
    stub_run(monkeypatch, "tokenize", raiser(exc))
    result = CliRunner().invoke(app, tokenize_args)
    assert result.exit_code == code, result.output
    assert result.stderr.strip().splitlines() == [f"seqlm: error: {str(exc).splitlines()[0]}"]


def test_user_error_with_debug_prints_the_traceback_then_the_line(monkeypatch, tokenize_args) -> None:
    stub_run(monkeypatch, "tokenize", raiser(DataError("no such corpus")))
    result = CliRunner().invoke(app, [*tokenize_args, "--debug"])
    assert result.exit_code == 3
    assert "Traceback (most recent call last)" in result.stderr and "DataError: no such corpus" in result.stderr
    assert result.stderr.strip().splitlines()[-1] == "seqlm: error: no such corpus"


def test_keyboard_interrupt_exits_130(monkeypatch, tokenize_args) -> None:
    stub_run(monkeypatch, "tokenize", raiser(KeyboardInterrupt()))
    result = CliRunner().invoke(app, tokenize_args)
    assert result.exit_code == 130, result.output
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == ["seqlm: error: interrupted"]


def test_stdout_carries_only_results(monkeypatch, tokenize_args) -> None:
    def run(config, console, **kwargs):
        console.info("progress goes to stderr")
        console.warn("so do warnings")
        print("RESULT")

    stub_run(monkeypatch, "tokenize", run)
    result = CliRunner().invoke(app, tokenize_args)
    assert result.exit_code == 0, result.output
    assert result.stdout == "RESULT\n"
    assert "progress goes to stderr" in result.stderr and "so do warnings" in result.stderr

    quiet = CliRunner().invoke(app, [*tokenize_args, "--quiet"])
    assert quiet.exit_code == 0
    assert quiet.stdout == "RESULT\n"
    assert "progress goes to stderr" not in quiet.stderr and "so do warnings" in quiet.stderr


def test_print_config_writes_only_yaml_to_stdout_and_runs_nothing(monkeypatch, tokenize_args) -> None:
    calls = stub_run(monkeypatch, "tokenize", raiser(AssertionError("--print-config must not run")))
    result = CliRunner().invoke(app, [*tokenize_args, "--print-config"])
    assert result.exit_code == 0, result.output
    assert calls == []
    assert result.stderr == ""
    printed = yaml.safe_load(result.stdout)
    assert TokenizeConfig.model_validate(printed).corpus.train == ["data/corpus/train.txt"]


def test_bad_option_is_a_usage_error(tokenize_args) -> None:
    result = CliRunner().invoke(app, [*tokenize_args, "--no-such-option"])
    assert result.exit_code == 2
    assert result.stdout == ""
    assert "Traceback" not in result.output


def test_run_modules_load_the_evaluate_library_only_when_a_metric_is_needed() -> None:
    """`evaluate` imports transformers' pipelines (~3 s): a command failing on a bad path must not pay for it."""
    code = (
        "import sys\n"
        "import seqlm.commands.evaluate, seqlm.commands.pretrain, seqlm.commands.finetune, seqlm.commands.predict\n"
        "assert 'evaluate' not in sys.modules, 'evaluate imported at module import'\n"
        "from seqlm.metrics import load_metric\n"
        "load_metric('accuracy')\n"
        "assert 'evaluate' in sys.modules\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
