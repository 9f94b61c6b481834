"""Graceful stop on SIGTERM / SIGINT while training.

The first signal only sets a flag: the loop finishes the optimizer step it is in, writes a
complete checkpoint and ends with `TrainingInterrupted` (exit 143 for SIGTERM, 130 for
SIGINT). A second SIGINT (Ctrl-C twice) stops at once with KeyboardInterrupt; an atomic
checkpoint write cut short that way leaves no directory that looks complete.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class StopRequest:
    def __init__(self) -> None:
        self.signal: signal.Signals | None = None

    def __call__(self) -> signal.Signals | None:
        return self.signal


@contextmanager
def graceful_stop() -> Iterator[StopRequest]:
    """Handle SIGTERM/SIGINT as stop requests for the duration (main thread only; elsewhere a no-op)."""
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return

    def handle(signum: int, frame: Any) -> None:
        if request.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # the second Ctrl-C: stop now
        request.signal = signal.Signals(signum)

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield request
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
