"""The malloc tuning applies on glibc Linux and is a harmless no-op elsewhere."""

from __future__ import annotations

import platform
import sys

from seqlm.allocator import keep_freed_memory


def test_keep_freed_memory_is_accepted_on_glibc() -> None:
    applied = keep_freed_memory()
    if sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc":
        assert applied
    else:
        assert applied is False
