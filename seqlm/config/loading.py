"""Read a YAML config, apply `--set key.path=value` overrides, validate against the schema.

Every failure is a `ConfigError` (exit 2) or, for a missing config file, a `DataError`
(exit 3) whose one-line message names the file, the key path and what is expected.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, TypeVar, get_args

import yaml
from pydantic import BaseModel, Discriminator, Tag, ValidationError

from seqlm.errors import ConfigError, DataError, first_line

Schema = TypeVar("Schema", bound=BaseModel)

# What PyYAML's constructors raise besides YAMLError: a timestamp-like `2024-13-45`, `!!int x`,
# an integer past Python's digit limit (ValueError); nesting deeper than the recursion limit.
_CONSTRUCTOR_ERRORS = (ValueError, OverflowError, RecursionError)


def read_yaml(path: Path) -> dict[str, Any]:
    """Safe-load a YAML mapping; errors name the file (and line/column for syntax errors)."""
    if not path.is_file():
        raise DataError(f"{path}: config file not found; pass the path of a YAML file (see configs/)")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}); save the config as UTF-8") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(
            f"{path}{where}: invalid YAML: {problem}; fix the syntax there (indentation with spaces, "
            "closed brackets and quotes, `key: value`)"
        ) from exc
    except _CONSTRUCTOR_ERRORS as exc:  # `a: 2024-13-45`, `a: !!int x`, 5000 digits, [[[[...
        raise ConfigError(f"{path}: invalid YAML value ({_reason(exc)}); quote it to make it a string") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys, not {type(data).__name__}")
    return data


def apply_override(data: dict[str, Any], assignment: str) -> None:
    """Apply one `key.path=value`; the value is parsed as YAML so `3`, `true`, `[a, b]` are typed."""
    key_path, sep, raw_value = assignment.partition("=")
    keys = key_path.strip().split(".")
    if not sep or not all(keys):
        raise ConfigError(f"--set {assignment!r}: expected key.path=value, e.g. --set training.max_steps=100")
    try:
        value = yaml.safe_load(raw_value) if raw_value.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {assignment!r}: the value is not valid YAML") from exc
    except _CONSTRUCTOR_ERRORS as exc:
        raise ConfigError(f"--set {assignment!r}: the value is not valid YAML ({_reason(exc)}); quote it to make it a string") from exc
    node = data
    for depth, key in enumerate(keys[:-1]):
        child = node.get(key)
        if child is None:  # an absent section, or one left empty in the YAML (`training:`)
            child = node[key] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"--set {assignment!r}: {'.'.join(keys[: depth + 1])!r} is a value, not a section")
        node = child
    node[keys[-1]] = value


def _reason(exc: BaseException) -> str:
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    return first_line(exc)


def union_member(schema: Any, data: dict[str, Any]) -> Any:
    """The class that validates `data`: `schema` itself, or for a discriminated union (e.g.
    `FinetuneConfig`, by `task:`) the member `data`'s tag selects; an unknown tag is a ConfigError."""
    if isinstance(schema, type):
        return schema
    union, *metadata = get_args(schema)
    discriminator = next(item for item in metadata if isinstance(item, Discriminator))
    members = {}
    for member in get_args(union):
        cls, *tags = get_args(member)
        members[next(tag.tag for tag in tags if isinstance(tag, Tag))] = cls
    tag = discriminator.discriminator(data)
    if tag not in members:
        key = (discriminator.custom_error_context or {}).get("key", "(top level)")
        raise ConfigError(f"{key}: {tag!r} is not one of {', '.join(members)}; set {key} to one of them")
    return members[tag]


def validate(schema: type[Schema], data: dict[str, Any], source: str) -> Schema:
    """Validate `data` (from `source`, for messages); the first problem becomes a ConfigError."""
    schema = union_member(schema, data)
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        messages = [_describe(schema, error) for error in exc.errors()]
        more = f" (and {len(messages) - 1} more problem(s))" if len(messages) > 1 else ""
        raise ConfigError(f"{source}: {messages[0]}{more}") from exc


def load_config(
    schema: type[Schema], path: Path | None, overrides: list[str], options: dict[str, Any] | None = None
) -> Schema:
    """The resolved config: YAML file < command-line `options` (e.g. --model) < `--set` overrides."""
    data: dict[str, Any] = read_yaml(path) if path is not None else {}
    data.update(options or {})
    for assignment in overrides:
        apply_override(data, assignment)
    source = str(path) if path is not None else "command line"
    if overrides and path is not None:
        source += " (with --set)"
    return validate(schema, data, source)


def to_yaml(config: BaseModel) -> str:
    """The resolved config as YAML text that `load_config` reads back to the same config."""
    return yaml.dump(config.model_dump(mode="json"), Dumper=_Dumper, sort_keys=False, allow_unicode=True)


class _Dumper(yaml.SafeDumper):
    """SafeDumper whose strings read back as written: with allow_unicode, PyYAML writes a NEL
    (U+0085) raw inside a plain or single-quoted scalar, and reading folds it into a space."""


def _represent_str(dumper: yaml.SafeDumper, text: str) -> yaml.ScalarNode:
    style = '"' if any(char in text for char in "\x85\u2028\u2029") else None  # double quotes escape them
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


_Dumper.add_representer(str, _represent_str)


def _describe(schema: type[BaseModel], error: dict[str, Any]) -> str:
    location = [part for part in error["loc"] if isinstance(part, str)]
    key = ".".join(str(part) for part in error["loc"]) or "(top level)"
    if error["type"] == "extra_forbidden":
        known = _fields_at(schema, location[:-1])
        hint = difflib.get_close_matches(location[-1], known, n=1, cutoff=0.6)
        suggestion = f"; did you mean '{hint[0]}'?" if hint else f"; known keys here: {', '.join(sorted(known))}"
        return f"unknown key {key!r}{suggestion}"  # repr: one line, whatever the key holds
    if error["type"] == "missing":
        return f"missing required key '{key}'"
    message = error["msg"].removeprefix("Value error, ")
    if error["loc"]:
        got = error.get("input")
        # A whole section as input (a section-level check failed) would only repeat the file.
        return f"key '{key}': {message}" + ("" if isinstance(got, dict) else f" (got {got!r})")
    return message


def _fields_at(schema: type[BaseModel], location: list[str]) -> list[str]:
    """Field names of the (nested) section at `location`, to suggest a correction."""
    model: type[BaseModel] = schema
    for name in location:
        field = model.model_fields.get(name)
        annotation = getattr(field, "annotation", None)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return list(model.model_fields)
