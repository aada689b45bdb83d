"""The load tier: `serve` (one, or a rolling-update pair) against a fake host with many VFs, the API
stand-in and many kubelet-like client threads. The measured latencies are printed in the summary."""

from __future__ import annotations

import pytest

from tests.support.node import make_node

__all__ = ["make_node"]

_report: list[str] = []


def pytest_terminal_summary(terminalreporter):
    for line in _report:
        terminalreporter.write_line(line)


@pytest.fixture
def report():
    """report(line): printed in the session summary (latency figures, fault counts)."""
    return _report.append
