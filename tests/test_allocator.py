"""The malloc tuning applies on glibc Linux and is a harmless no-op elsewhere."""

from __future__ import annotations

import platform
import sys

import pytest

from seqlm.runtime.allocator import keep_freed_memory, release_large_buffers


@pytest.mark.parametrize("policy", [keep_freed_memory, release_large_buffers])
def test_each_policy_is_accepted_on_glibc(policy) -> None:
    applied = policy()
    if sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc":
        assert applied
    else:
        assert applied is False
