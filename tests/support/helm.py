"""Rendering Helm charts (the chart tier, tests/chart; the demo tests' DeviceClasses) with
hack/helm's sriovdra-helm-template, a small Go program
built from Debian sid packages (text/template + sprig + Helm's engine functions, values coalescing,
--set, values.schema.json validation and Helm's output format) because `helm` itself cannot be
downloaded here. What it does and does not imitate: hack/helm/README.md.

The build is part of the tier (hack/helm/build.sh, cached in ${SRIOVDRA_CACHE:-~/.cache/sriovdra}/helm):
a failed build is a test error, not a skip, so that a green run cannot hide it. The only skip is a
host that has no built binary and cannot build it (not root, or no apt-get/dpkg).

Usage in a test:
    def test_x(helm_template):
        docs = helm_template(CHART, sets=["image.tag=v1"])   # a list of parsed YAML documents
        docs.text                                             # the raw `helm template` output
        docs.sources                                          # "chart/templates/file.yaml" per doc
        with pytest.raises(helm_template.Error) as e: ...     # e.value.stderr, e.value.returncode
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.cachedbuild import ensure_built

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "sriovdra"
BUILD = REPO / "hack" / "helm" / "build.sh"
CACHE = Path(os.environ.get("SRIOVDRA_CACHE", Path.home() / ".cache" / "sriovdra")) / "helm"
BINARY = CACHE / "bin" / "sriovdra-helm-template"


class HelmRenderError(Exception):
    """The renderer exited non-zero: a template error, a schema violation or a bad --set."""

    def __init__(self, argv: list[str], returncode: int, stderr: str):
        super().__init__(f"{' '.join(argv)} exited {returncode}: {stderr.strip()}")
        self.argv = argv
        self.returncode = returncode
        self.stderr = stderr


class Rendered(list):
    """The parsed YAML documents of one render (a list of dicts, empty documents dropped), with the
    raw output in .text and each document's "# Source:" path in .sources (same order)."""

    text: str
    sources: list[str]

    def by_kind(self, kind: str) -> list[dict]:
        return [d for d in self if d.get("kind") == kind]

    def one(self, kind: str, name: str | None = None) -> dict:
        found = [d for d in self.by_kind(kind) if name is None or d.get("metadata", {}).get("name") == name]
        if len(found) != 1:
            raise LookupError(f"expected one {kind} named {name!r}, found {len(found)} in: "
                              f"{[(d.get('kind'), d.get('metadata', {}).get('name')) for d in self]}")
        return found[0]


def parse_output(text: str) -> Rendered:
    """Split `helm template` output into documents, remembering each one's "# Source:" line."""
    import yaml

    docs = Rendered()
    docs.text = text
    docs.sources = []
    for chunk in text.split("\n---"):
        chunk = chunk.removeprefix("---")
        source = ""
        for line in chunk.splitlines():
            if line.startswith("# Source: "):
                source = line.removeprefix("# Source: ").strip()
                break
        for doc in yaml.safe_load_all(chunk):
            if doc is not None:
                docs.append(doc)
                docs.sources.append(source)
    return docs


@dataclass
class HelmTemplate:
    """render(chart_dir, values_files=(), sets=(), namespace="sriovdra") -> Rendered.
    sets are --set (Helm types true/false/null/integers); set_strings are --set-string."""

    binary: Path
    Error = HelmRenderError

    def argv(self, chart_dir, values_files=(), sets=(), namespace="sriovdra", release="sriovdra",
             kube_version=None, set_strings=()) -> list[str]:
        argv = [str(self.binary), str(chart_dir), "--namespace", namespace, "--release", release]
        for f in values_files:
            argv += ["--values", str(f)]
        for s in sets:
            argv += ["--set", s]
        for s in set_strings:
            argv += ["--set-string", s]
        if kube_version:
            argv += ["--kube-version", kube_version]
        return argv

    def __call__(self, chart_dir, values_files=(), sets=(), namespace="sriovdra", release="sriovdra",
                 kube_version=None, set_strings=()) -> Rendered:
        argv = self.argv(chart_dir, values_files, sets, namespace, release, kube_version, set_strings)
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True)
        if proc.returncode != 0:
            raise HelmRenderError(argv, proc.returncode, proc.stderr)
        return parse_output(proc.stdout)


@pytest.fixture(scope="session")
def helm_template(request) -> HelmTemplate:
    ensure_built(request.config, BUILD, "sriovdra-helm-template is not built")
    return HelmTemplate(BINARY)
