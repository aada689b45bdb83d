"""`sriovdra serve` in a subprocess, against a fake host, the API stand-in and a kubelet-like client."""

from __future__ import annotations

import pytest

from tests.support.helm import helm_template
from tests.support.node import NODE, Node, NodeFactory

__all__ = ["NODE", "Node", "helm_template", "make_node"]


@pytest.fixture
def make_node(tmp_path, build_host):
    """make_node(spec) -> a Node whose serve is not started yet (call node.start())."""
    factory = NodeFactory(tmp_path)

    def _make(spec: dict) -> Node:
        host, _ = build_host(spec)
        return factory.make(host.root, host.sysfs, host.dev)

    yield _make
    factory.close()
