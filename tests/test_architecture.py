"""The package's layers import in one direction (read from the source, nothing is executed).

- a task module (`seqlm.tasks.TASK_MODULES`) never imports `seqlm.commands` or another task;
- `seqlm.training` imports no task: it gets objectives and batches, never a task by name;
- only `seqlm.models` imports transformers' `AutoModel*` classes (or names one);
- nothing imports `seqlm.cli` (but `python -m seqlm`'s `__main__`);
- every subpackage says its role in its `__init__` docstring, and no module is a `utils.py`.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from seqlm.tasks import TASK_MODULES

PACKAGE = Path(__file__).resolve().parent.parent / "seqlm"
MODULES = sorted(PACKAGE.rglob("*.py"))


def _name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every module `path` imports, at any depth (function-level imports included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _importing(prefix: str) -> dict[str, set[str]]:
    return {_name(path): {name for name in _imports(path) if name == prefix or name.startswith(prefix + ".")} for path in MODULES}


TASKS = {f"seqlm.tasks.{module}" for module in TASK_MODULES.values()}


@pytest.mark.parametrize("task", sorted(TASKS))
def test_a_task_imports_no_command_and_no_other_task(task: str) -> None:
    imported = _imports(PACKAGE / "tasks" / f"{task.rsplit('.', 1)[1]}.py")
    assert not {name for name in imported if name.startswith("seqlm.commands")}
    others = {name for name in imported if any(name == other or name.startswith(other + ".") for other in TASKS - {task})}
    assert not others, f"{task} imports {others}"


def test_training_imports_no_task() -> None:
    for module, names in _importing("seqlm.tasks").items():
        if module.startswith("seqlm.training"):
            assert not names, f"{module} imports {names}"


def test_only_models_name_transformers_auto_model_classes() -> None:
    for path in MODULES:
        module = _name(path)
        if module.startswith("seqlm.models"):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        named = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
        named |= {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
        named |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) for alias in node.names}
        autos = {name for name in named if name.startswith("AutoModel")}
        assert not autos, f"{module} uses {autos}; ask seqlm.models for the head instead"


def test_nothing_imports_the_cli() -> None:
    for module, names in _importing("seqlm.cli").items():
        if module != "seqlm.__main__":  # `python -m seqlm`: the entry point itself
            assert not names, f"{module} imports the CLI"


def test_commands_do_not_branch_on_a_task_name() -> None:
    for path in (PACKAGE / "commands").glob("*.py"):
        if path.stem in ("tokenize", "pretrain"):  # the language-model data path: no task registry there
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Compare):
                constants = [c.value for c in ast.walk(node) if isinstance(c, ast.Constant) and isinstance(c.value, str)]
                assert not set(constants) & set(TASK_MODULES), f"{path.name}:{node.lineno} compares with a task name"


def test_every_subpackage_states_its_role_and_there_is_no_utils_module() -> None:
    for init in PACKAGE.glob("*/__init__.py"):
        docstring = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8")))
        assert docstring and len(docstring.splitlines()[0]) > 20, f"{init.parent.name}/__init__.py: no one-line role"
    assert not [path for path in MODULES if path.stem in ("utils", "helpers", "misc")]
