"""seqlm.training.resume: which config changes a resume accepts (logged) and which it refuses (listed)."""

from __future__ import annotations

import pytest

from seqlm.errors import ConfigError
from seqlm.training.resume import check_resumable

SAVED = {"model": {"d_model": 64}, "training": {"max_steps": 100, "log_every": 10, "batch_size": 8}, "resume": "never"}


def test_harmless_changes_are_returned_for_the_log() -> None:
    current = {**SAVED, "training": {**SAVED["training"], "max_steps": 200, "log_every": 5}, "resume": "always"}
    assert check_resumable(SAVED, current, "ckpt") == [
        "resume: 'never' -> 'always'", "training.log_every: 10 -> 5", "training.max_steps: 100 -> 200"
    ]  # fmt: skip


def test_changes_to_what_is_computed_are_refused_with_every_difference() -> None:
    current = {**SAVED, "model": {"d_model": 32}, "training": {**SAVED["training"], "batch_size": 4}}
    with pytest.raises(ConfigError) as raised:
        check_resumable(SAVED, current, "ckpt")
    assert "model.d_model: 64 -> 32" in str(raised.value) and "training.batch_size: 8 -> 4" in str(raised.value)


def test_settings_added_or_removed_by_another_seqlm_version_do_not_block_a_resume() -> None:
    current = {**SAVED, "model": {"d_model": 64, "trust_remote_code": False}}
    older = {**SAVED, "legacy": 1}
    assert check_resumable(SAVED, current, "ckpt") == ["model.trust_remote_code: False (new setting)"]
    assert check_resumable(older, SAVED, "ckpt") == ["legacy: 1 (no longer a setting)"]
