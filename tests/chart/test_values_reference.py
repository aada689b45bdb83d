"""The README's chart configuration reference is what hack/gen_values_reference.py makes of values.yaml."""

from __future__ import annotations

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent


def _generator():
    spec = importlib.util.spec_from_file_location("gen_values_reference", REPO / "hack" / "gen_values_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_reference_is_regenerated():
    gen = _generator()
    readme = (REPO / "README.md").read_text()
    assert readme == gen.render_readme(readme, gen.VALUES.read_text()), \
        "README.md's chart configuration reference is stale: run python hack/gen_values_reference.py --write"


def test_every_leaf_value_has_a_row_with_its_default():
    gen = _generator()
    rows = {key: default for key, default, _ in gen.rows(gen.VALUES.read_text())}
    assert rows["kubeletPlugin.numVFs"] == "0" and rows["webhook.failurePolicy"] == '"Fail"'
    assert rows["provisioning"] == "null" and rows["kubeletPlugin.tolerations"] == "[]"
    assert "kubeletPlugin.resources.requests" not in rows  # Kubernetes fields stay one row
    values_text = "a:\n  b: 1  # the b\n  # the c\n  c: [x]\nd: {e: 1}\n"
    assert gen.rows(values_text) == [("a.b", "1", "the b"), ("a.c", '["x"]', "the c"), ("d", '{"e": 1}', "")]
