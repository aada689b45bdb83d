"""Polling for something another process does (serve, the runtime): no fixed sleeps in tests."""

from __future__ import annotations

import time


def wait(predicate, timeout: float = 10.0, what: str = "condition", interval: float = 0.02):
    """The predicate's first truthy value; AssertionError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")
