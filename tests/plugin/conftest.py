"""`sriovdra serve` in a subprocess, against a fake host, the API stand-in and a kubelet-like client."""

from __future__ import annotations

from tests.support.helm import helm_template
from tests.support.node import NODE, Node, make_node

__all__ = ["NODE", "Node", "helm_template", "make_node"]
