"""sriovdra.kube.backoff: exponential, capped, jitter that only lengthens."""

from __future__ import annotations

from sriovdra.kube.backoff import Backoff


def test_delays_double_from_first_up_to_the_cap():
    b = Backoff(first=0.1, cap=1.0, jitter=0.0)
    assert [round(b.next(), 3) for _ in range(6)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]


def test_jitter_never_shortens_and_stays_within_its_share():
    b = Backoff(first=1.0, cap=1.0, jitter=0.25)
    delays = [b.next() for _ in range(200)]
    assert all(1.0 <= d <= 1.25 for d in delays)
    assert len(set(delays)) > 1  # nodes that failed together do not retry in step


def test_reset_starts_over_and_many_failures_do_not_overflow():
    b = Backoff(first=0.5, cap=30.0, jitter=0.0)
    for _ in range(5000):
        b.next()
    assert b.nominal() == 30.0
    b.reset()
    assert b.next() == 0.5
