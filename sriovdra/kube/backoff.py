"""Retry delays for calls to the API server: exponential, capped, with jitter.

The jitter only ever lengthens a delay (by up to `jitter` of it): a retry never comes sooner than
the nominal delay, and the nodes of a cluster that lost the API server together do not all come
back in step when it returns.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass
class Backoff:
    first: float = 0.1  # seconds before the first retry
    cap: float = 30.0  # no delay is longer than cap * (1 + jitter)
    jitter: float = 0.25
    failures: int = 0  # since the last success

    def nominal(self) -> float:
        """The delay before the next retry, without jitter."""
        return min(self.first * 2 ** min(self.failures, 32), self.cap)

    def next(self) -> float:
        """Count a failure and return how long to wait before retrying."""
        delay = self.nominal() * (1 + random.uniform(0, self.jitter))
        self.failures += 1
        return delay

    def reset(self) -> None:
        self.failures = 0
