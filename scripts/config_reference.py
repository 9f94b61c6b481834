"""Print the config reference (Markdown tables) from the pydantic schemas.

README.md holds this output between the `<!-- config-reference -->` markers; a test keeps
them equal. Regenerate with `.venv/bin/python scripts/config_reference.py --write`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import get_args

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from seqlm.config import COMMAND_SCHEMAS  # noqa: E402
from seqlm.config.finetune import FINETUNE_TASK_CONFIGS  # noqa: E402

BEGIN, END = "<!-- config-reference:begin -->", "<!-- config-reference:end -->"


def _type_name(annotation: object) -> str:
    text = str(annotation).replace("typing.", "").replace("pathlib._local.", "").replace("pathlib.", "")
    for noise in ("<class '", "'>", "seqlm.config.schema.", "seqlm.config.finetune."):
        text = text.replace(noise, "")
    text = text.replace("NoneType", "null").replace("Literal", "one of ")
    return text.replace(" | ", " or ").replace("'", "")


def _section(model: type[BaseModel], prefix: str) -> tuple[list[str], list[tuple[str, type[BaseModel]]]]:
    rows, nested = [], []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            nested.append((f"{prefix}{name}", annotation))
            continue
        # An optional section (`lora: LoraConfig | None`): its own row (null turns it off), then its keys.
        optional = [arg for arg in get_args(annotation) if isinstance(arg, type) and issubclass(arg, BaseModel)]
        if optional:
            nested.append((f"{prefix}{name}", optional[0]))
            annotation = "a section (its keys below) or null"
        if field.default is not PydanticUndefined:
            default = "null" if field.default is None else f"`{field.default}`"
        elif field.default_factory is not None:
            default = f"`{field.default_factory()}`"
        else:
            default = "**required**"
        description = (field.description or "").replace("|", "\\|")
        rows.append(f"| `{prefix}{name}` | {_type_name(annotation)} | {default} | {description} |")
    return rows, nested


def reference() -> str:
    lines = []
    for command, schema in COMMAND_SCHEMAS.items():
        for title, model in _members(command, schema):
            lines += _table(title, model)
    return "\n".join(lines).rstrip() + "\n"


def _members(command: str, schema: object) -> list[tuple[str, type[BaseModel]]]:
    """One table per command; a union (finetune) gets one per member, titled by its task."""
    if isinstance(schema, type):
        return [(f"`seqlm {command}`", schema)]
    return [(f"`seqlm {command}` — `task: {task}`", model) for task, model in FINETUNE_TASK_CONFIGS.items()]


def _table(title: str, schema: type[BaseModel]) -> list[str]:
    lines = [f"#### {title}", "", "| key | type | default | meaning |", "|---|---|---|---|"]
    queue: list[tuple[str, type[BaseModel]]] = [("", schema)]
    while queue:
        prefix, model = queue.pop(0)
        rows, nested = _section(model, f"{prefix}." if prefix else "")
        lines += rows
        queue += nested
    return lines + [""]


def readme_block(readme: str) -> str:
    start, end = readme.index(BEGIN) + len(BEGIN), readme.index(END)
    return readme[start:end].strip("\n") + "\n"


if __name__ == "__main__":
    text = reference()
    if "--write" in sys.argv:
        readme_path = ROOT / "README.md"
        readme = readme_path.read_text(encoding="utf-8")
        start, end = readme.index(BEGIN) + len(BEGIN), readme.index(END)
        readme_path.write_text(readme[:start] + "\n" + text + readme[end:], encoding="utf-8")
    else:
        sys.stdout.write(text)
