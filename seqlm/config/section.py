"""`Section`: the base of every config section (unknown keys refused, YAML booleans never read as numbers)."""

from __future__ import annotations

from typing import get_args

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_booleans_for_numbers(cls, value: object, info: ValidationInfo) -> object:
        """YAML reads true/yes/on as booleans, which pydantic would silently turn into 1 (or 0)."""
        if isinstance(value, bool) and info.field_name is not None:
            annotation = cls.model_fields[info.field_name].annotation
            accepted = set(get_args(annotation)) or {annotation}
            if bool not in accepted and accepted & {int, float}:
                raise ValueError(f"expected a number, not the boolean {str(value).lower()}")
        return value
