"""Configs: every shipped YAML validates, and every way a config can be wrong is one line and a documented exit code.

The CLI runs through `typer.testing.CliRunner` on `seqlm.cli.app` (separate stdout/stderr).
Everything here fails before any run module is imported, except the missing-`data:` test,
which runs `seqlm pretrain` for real and must fail before training starts.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from seqlm.cli import app
from seqlm.config import COMMAND_SCHEMAS
from seqlm.config.loading import load_config, read_yaml, union_member, validate
from seqlm.config.schema import PretrainConfig

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
ALL_CONFIGS = sorted(CONFIGS.rglob("*.yaml"))
TINY_GPT_PRETRAIN = CONFIGS / "tiny" / "gpt_pretrain.yaml"


def command_of(path: Path) -> str:
    """`bert_pretrain.yaml` → pretrain; a name may also lead with its command (`finetune_any_hf_model.yaml`)."""
    parts = path.stem.split("_")
    return next((part for part in reversed(parts) if part in COMMAND_SCHEMAS), parts[-1])


def invoke(*args: str | Path):
    return CliRunner().invoke(app, [str(arg) for arg in args])


def assert_one_line_error(result, code: int, *fragments: str) -> str:
    """Exit `code`, nothing on stdout, exactly one `seqlm: error:` line on stderr holding every fragment."""
    report = f"exit {result.exit_code}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert result.exit_code == code, report
    assert "Traceback" not in result.output, report
    assert result.stdout == "", report
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, report
    line = lines[0]
    assert line.startswith("seqlm: error: "), report
    for fragment in fragments:
        assert fragment in line, f"{fragment!r} not in {line!r}"
    return line


def write_config(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def tiny_pretrain(tmp_path: Path, **changes: Any) -> dict[str, Any]:
    """The tiny GPT pretrain config, writing under tmp_path, with `section.key` changes applied."""
    data = yaml.safe_load(TINY_GPT_PRETRAIN.read_text(encoding="utf-8"))
    data["output_dir"] = str(tmp_path / "run")
    for dotted, value in changes.items():
        *parents, last = dotted.split("__")
        node = data
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    return data


# --------------------------------------------------------------------------- shipped configs


@pytest.mark.parametrize("path", ALL_CONFIGS, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_shipped_config_validates_against_its_command_schema(path: Path) -> None:
    command = command_of(path)
    assert command in COMMAND_SCHEMAS, f"{path.name}: the name must hold its command (_tokenize, _pretrain, _finetune, ...)"
    config = load_config(COMMAND_SCHEMAS[command], path, [])
    assert isinstance(config, union_member(COMMAND_SCHEMAS[command], read_yaml(path)))


def test_tiny_and_small_configs_exist_for_every_family_and_command() -> None:
    found = {path.relative_to(CONFIGS).as_posix() for path in ALL_CONFIGS}
    expected = {f"{size}/{family}_{command}.yaml" for size in ("tiny", "small") for family in ("gpt", "bert") for command in COMMAND_SCHEMAS}
    assert not expected - found, f"missing configs: {sorted(expected - found)}"


def _pipeline(size: str, family: str) -> dict[str, Any]:
    paths = {command: CONFIGS / size / f"{family}_{command}.yaml" for command in COMMAND_SCHEMAS}
    missing = [str(path.relative_to(REPO)) for path in paths.values() if not path.is_file()]
    if missing:
        pytest.fail(f"missing configs: {missing}")
    return {command: load_config(COMMAND_SCHEMAS[command], path, []) for command, path in paths.items()}


@pytest.mark.parametrize("size", ["tiny", "small"])
@pytest.mark.parametrize("family", ["gpt", "bert"])
def test_configs_of_one_pipeline_chain_into_each_other(size: str, family: str) -> None:
    """tokenize's output_dir is pretrain's data; pretrain's model/ is what finetune, evaluate and predict load."""
    configs = _pipeline(size, family)
    tokenize, pretrain, finetune, evaluate, predict = (configs[c] for c in ("tokenize", "pretrain", "finetune", "evaluate", "predict"))
    assert tokenize.tokenizer.kind == {"gpt": "bpe", "bert": "wordpiece"}[family]
    assert pretrain.objective == {"gpt": "clm", "bert": "mlm"}[family]
    assert pretrain.data == tokenize.output_dir
    assert evaluate.data == tokenize.output_dir
    assert Path(evaluate.model) == pretrain.output_dir / "model"
    assert Path(predict.model) == pretrain.output_dir / "model"
    for corpus_file in [*tokenize.corpus.train, *tokenize.corpus.validation]:
        assert (REPO / corpus_file).is_file(), corpus_file
    assert (REPO / predict.input).is_file(), predict.input
    assert Path(finetune.model) == pretrain.output_dir / "model"
    assert finetune.training.max_length <= pretrain.model.max_len
    for labelled_file in (finetune.data.train, finetune.data.validation, finetune.data.test):
        assert labelled_file is None or (REPO / labelled_file).is_file(), labelled_file


# --------------------------------------------------------------------------- --print-config and --set


def test_print_config_prints_round_tripping_yaml_and_does_no_work(tmp_path: Path) -> None:
    output_dir = tmp_path / "x"
    result = invoke("pretrain", TINY_GPT_PRETRAIN, "--print-config", "--set", f"output_dir={output_dir}")
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    printed = yaml.safe_load(result.stdout)
    assert isinstance(printed, dict)
    reloaded = validate(PretrainConfig, printed, "stdout")
    assert reloaded == load_config(PretrainConfig, TINY_GPT_PRETRAIN, [f"output_dir={output_dir}"])
    assert reloaded.output_dir == output_dir
    assert not output_dir.exists()


def test_print_config_round_trips_through_a_file(tmp_path: Path) -> None:
    """What --print-config prints is itself a valid config file that prints the same."""
    first = invoke("pretrain", TINY_GPT_PRETRAIN, "--print-config", "--set", f"output_dir={tmp_path / 'x'}")
    assert first.exit_code == 0, first.output
    saved = tmp_path / "resolved_pretrain.yaml"
    saved.write_text(first.stdout, encoding="utf-8")
    second = invoke("pretrain", saved, "--print-config")
    assert second.exit_code == 0, second.output
    assert second.stdout == first.stdout


def test_set_overrides_are_typed(tmp_path: Path) -> None:
    result = invoke(
        "pretrain", TINY_GPT_PRETRAIN, "--print-config",
        "--set", f"output_dir={tmp_path / 'x'}",
        "--set", "training.max_steps=7",
        "--set", "model.dropout=0.25",
        "-s", "optim.betas=[0.8,0.9]",
    )
    assert result.exit_code == 0, result.output
    printed = yaml.safe_load(result.stdout)
    assert printed["training"]["max_steps"] == 7 and type(printed["training"]["max_steps"]) is int
    assert printed["model"]["dropout"] == 0.25 and type(printed["model"]["dropout"]) is float
    assert printed["optim"]["betas"] == [0.8, 0.9]
    # untouched keys keep the file's values
    assert printed["training"]["seq_len"] == 64
    assert printed["optim"]["lr"] == 3.0e-3


def test_later_set_wins_and_set_beats_command_line_options() -> None:
    result = invoke(
        "evaluate", CONFIGS / "tiny" / "gpt_evaluate.yaml", "--print-config",
        "--model", "from/option", "--set", "batch_size=3", "--set", "batch_size=5",
    )
    assert result.exit_code == 0, result.output
    printed = yaml.safe_load(result.stdout)
    assert printed["model"] == "from/option"  # option beats the YAML file
    assert printed["batch_size"] == 5
    result = invoke("evaluate", CONFIGS / "tiny" / "gpt_evaluate.yaml", "--print-config", "--model", "a", "--set", "model=b")
    assert result.exit_code == 0, result.output
    assert yaml.safe_load(result.stdout)["model"] == "b"


def test_evaluate_config_from_options_alone() -> None:
    result = invoke("evaluate", "--model", "some/model", "--data", "some/data", "--print-config")
    assert result.exit_code == 0, result.output
    printed = yaml.safe_load(result.stdout)
    assert printed["model"] == "some/model" and printed["data"] == "some/data"


# --------------------------------------------------------------------------- unknown keys


def test_unknown_top_level_key_in_file(tmp_path: Path) -> None:
    data = tiny_pretrain(tmp_path)
    data["trainig"] = data.pop("training")
    path = write_config(tmp_path / "typo.yaml", data)
    assert_one_line_error(invoke("pretrain", path), 2, str(path), "'trainig'", "did you mean 'training'")


def test_unknown_nested_key_in_file(tmp_path: Path) -> None:
    path = write_config(tmp_path / "typo.yaml", tiny_pretrain(tmp_path, training__max_step=5))
    assert_one_line_error(invoke("pretrain", path), 2, str(path), "training.max_step", "did you mean 'max_steps'")


def test_unknown_nested_key_via_set() -> None:
    result = invoke("pretrain", TINY_GPT_PRETRAIN, "--set", "training.max_step=5")
    assert_one_line_error(result, 2, str(TINY_GPT_PRETRAIN), "training.max_step", "did you mean 'max_steps'")


def test_unknown_top_level_section_via_set() -> None:
    result = invoke("pretrain", TINY_GPT_PRETRAIN, "--set", "trainig.max_steps=5")
    assert_one_line_error(result, 2, "'trainig'", "did you mean 'training'")


def test_unknown_key_without_close_match_lists_known_keys(tmp_path: Path) -> None:
    result = invoke("pretrain", TINY_GPT_PRETRAIN, "--set", "training.zzzz=1")
    assert_one_line_error(result, 2, "training.zzzz", "known keys here:", "max_steps", "seq_len")


@pytest.mark.parametrize("command", sorted(COMMAND_SCHEMAS))
def test_every_command_rejects_unknown_keys(command: str) -> None:
    path = CONFIGS / "tiny" / f"gpt_{command}.yaml"
    assert_one_line_error(invoke(command, path, "--set", "no_such_key=1"), 2, str(path), "no_such_key")


# --------------------------------------------------------------------------- wrong types and ranges


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"training__batch_size": "many"}, "training.batch_size"),
        ({"training__batch_size": 0}, "training.batch_size"),
        ({"model__dropout": 1.5}, "model.dropout"),
        ({"objective": "xlm"}, "objective"),
        ({"optim__betas": [0.9, 0.98, 0.999]}, "optim.betas"),
    ],
    ids=["batch_size-many", "batch_size-0", "dropout-1.5", "objective-xlm", "betas-3"],
)
def test_wrong_type_or_range_in_file(tmp_path: Path, change: dict[str, Any], key: str) -> None:
    path = write_config(tmp_path / "bad.yaml", tiny_pretrain(tmp_path, **change))
    assert_one_line_error(invoke("pretrain", path), 2, str(path), f"'{key}'")


def test_wrong_type_via_set() -> None:
    assert_one_line_error(invoke("pretrain", TINY_GPT_PRETRAIN, "--set", "training.batch_size=many"), 2, "'training.batch_size'")


@pytest.mark.parametrize("assignment", ["training.max_steps=true", "training.checkpoint_every=yes", "model.dropout=on"])
def test_yaml_boolean_is_not_a_number(assignment: str) -> None:
    """YAML 1.1 reads true/yes/on as booleans; they must not silently become 1 (or 1.0)."""
    key = assignment.partition("=")[0]
    result = invoke("pretrain", TINY_GPT_PRETRAIN, "--set", assignment)
    assert_one_line_error(result, 2, f"'{key}'", "expected a number, not the boolean true")


def test_booleans_still_accepted_where_booleans_belong() -> None:
    result = invoke("pretrain", TINY_GPT_PRETRAIN, "--print-config", "--set", "whole_word_mask=yes")
    assert result.exit_code == 0, result.output
    assert yaml.safe_load(result.stdout)["whole_word_mask"] is True


def test_missing_required_key(tmp_path: Path) -> None:
    data = tiny_pretrain(tmp_path)
    del data["data"]
    path = write_config(tmp_path / "nodata.yaml", data)
    assert_one_line_error(invoke("pretrain", path), 2, str(path), "missing required key 'data'")


# --------------------------------------------------------------------------- malformed files


@pytest.mark.parametrize(
    "text",
    ["output_dir: out\ndata: [a, b\nobjective: clm\n", "output_dir: out\nmodel:\n\tfamily: gpt2\n"],
    ids=["unbalanced-bracket", "tab-indent"],
)
def test_malformed_yaml_names_file_line_and_column(tmp_path: Path, text: str) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(text, encoding="utf-8")
    line = assert_one_line_error(invoke("pretrain", path), 2, "invalid YAML")
    assert re.search(re.escape(str(path)) + r":\d+:\d+: ", line), line


@pytest.mark.parametrize(
    ("content", "fragment"),
    [(b"- a\n- b\n", "top level must be a mapping"), (b"output_dir: \xff\xfe\n", "not UTF-8"), (b"", "missing required key")],
    ids=["list", "not-utf8", "empty"],
)
def test_file_that_is_not_a_mapping_or_not_text(tmp_path: Path, content: bytes, fragment: str) -> None:
    path = tmp_path / "odd.yaml"
    path.write_bytes(content)
    assert_one_line_error(invoke("pretrain", path), 2, str(path), fragment)


def test_missing_config_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    assert_one_line_error(invoke("pretrain", path), 3, str(path), "not found")


def test_missing_data_dir_fails_fast_before_training(tmp_path: Path) -> None:
    """Runs the real `seqlm pretrain`: it must stop at the dataset, before creating the run dir."""
    data_dir = tmp_path / "no_such_dataset"
    config = tiny_pretrain(tmp_path, data=str(data_dir))
    path = write_config(tmp_path / "pretrain.yaml", config)
    assert_one_line_error(invoke("pretrain", path, "--device", "cpu"), 3, str(data_dir))
    assert not Path(config["output_dir"]).exists()


# --------------------------------------------------------------------------- cross-field validation


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        (["model.family=bert"], "objective 'clm'"),
        (["objective=mlm"], "objective 'mlm'"),  # the tiny GPT config says family gpt2
        (["nsp=true"], "nsp"),
        (["training.seq_len=128"], "seq_len"),
        (["model.d_model=65"], "divisible by n_heads"),
    ],
    ids=["clm-bert", "mlm-gpt2", "nsp-clm", "seq_len>max_len", "d_model%n_heads"],
)
def test_cross_field_validation(overrides: list[str], fragment: str) -> None:
    args: list[str] = []
    for assignment in overrides:
        args += ["--set", assignment]
    assert_one_line_error(invoke("pretrain", TINY_GPT_PRETRAIN, *args), 2, str(TINY_GPT_PRETRAIN), fragment)


def test_section_level_error_does_not_echo_the_whole_section() -> None:
    line = assert_one_line_error(invoke("pretrain", TINY_GPT_PRETRAIN, "--set", "model.d_model=65"), 2, "'model'")
    assert line.endswith("d_model (65) must be divisible by n_heads (2)"), line


def test_cross_field_validation_in_file(tmp_path: Path) -> None:
    path = write_config(tmp_path / "clm_bert.yaml", tiny_pretrain(tmp_path, model__family="bert"))
    assert_one_line_error(invoke("pretrain", path), 2, str(path), "objective 'clm'")


# --------------------------------------------------------------------------- bad --set syntax


@pytest.mark.parametrize(
    "assignment",
    ["foo", "=5", "training..max_steps=5", "optim.betas=[0.8", "training.max_steps.x=1"],
    ids=["no-equals", "no-key", "empty-part", "bad-yaml-value", "value-not-section"],
)
def test_bad_set_syntax(assignment: str) -> None:
    assert_one_line_error(invoke("pretrain", TINY_GPT_PRETRAIN, "--set", assignment), 2, "--set")
