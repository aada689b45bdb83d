"""The load tier: `serve` (one, or a rolling-update pair) against a fake host with many VFs, the API
stand-in and many kubelet-like client threads. The measured latencies are printed in the summary."""

from __future__ import annotations

import pytest

from tests.support.node import Node, NodeFactory

_report: list[str] = []


def pytest_terminal_summary(terminalreporter):
    for line in _report:
        terminalreporter.write_line(line)


@pytest.fixture
def report():
    """report(line): printed in the session summary (latency figures, fault counts)."""
    return _report.append


@pytest.fixture
def make_node(tmp_path, build_host):
    """make_node(spec) -> a Node whose serve is not started yet; every serve it started is killed after."""
    factory = NodeFactory(tmp_path)

    def _make(spec: dict) -> Node:
        host, _ = build_host(spec)
        return factory.make(host.root, host.sysfs, host.dev)

    yield _make
    factory.close()
