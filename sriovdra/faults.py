"""Named fault points for crash tests: a process started with SRIOVDRA_TEST_FAULTS=<point>[,<point>...]
kills itself with SIGKILL when it reaches one of them. Unset (always, outside tests), a point
costs one set lookup."""

from __future__ import annotations

import os
import signal

_ARMED = frozenset(filter(None, os.environ.get("SRIOVDRA_TEST_FAULTS", "").split(",")))


def point(name: str) -> None:
    if name in _ARMED:
        os.kill(os.getpid(), signal.SIGKILL)
