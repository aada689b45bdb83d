"""The chart tier: charts/sriovdra rendered by tests/support/helm.py's `helm_template` fixture."""

from tests.support.helm import helm_template

__all__ = ["helm_template"]
