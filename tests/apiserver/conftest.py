"""The real-apiserver tier: etcd + dra-test-apiserver (the k8s.io/apiextensions-apiserver code,
built from Debian sid packages by hack/apiserver/build.sh) serving CRDs that imitate the built-in
resource.k8s.io/v1 API. What differs from a kube-apiserver: shared/notes/real-apiserver.md §6.

The build is part of the tier (hack/apiserver/build.sh, cached in
${SRIOVDRA_CACHE:-~/.cache/sriovdra}/apiserver): a failed build or start is a test error, not a
skip, so that a green run cannot hide it. The only skip is a host that has no built binaries and
cannot build them (not root, or no apt-get/dpkg).
"""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import pytest

from tests.support.cachedbuild import ensure_built

REPO = Path(__file__).resolve().parents[2]
HACK = REPO / "hack" / "apiserver"

_timings: dict[str, float] = {}


def pytest_terminal_summary(terminalreporter):
    if _timings:
        parts = [f"{k} {v:.1f}s" for k, v in _timings.items()]
        terminalreporter.write_line("real apiserver: " + ", ".join(parts))


def _load_realapi():
    spec = importlib.util.spec_from_file_location("sriovdra_realapi", HACK / "realapi.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# One server for the whole tier. Package scope (this directory) rather than session: in a run of
# the whole suite the server is stopped as soon as the last test here is done.
@pytest.fixture(scope="package")
def real_apiserver_server(request, tmp_path_factory):
    """The running server (realapi.RealApiServer: url, kubeconfig, rundir, logs)."""
    ensure_built(request.config, HACK / "build.sh", "the real-apiserver binaries are not built", timings=_timings,
                 labels=("build check", "cold build", "failed build"))
    realapi = _load_realapi()
    server = realapi.RealApiServer(str(tmp_path_factory.mktemp("real-apiserver")))
    t0 = time.monotonic()
    try:
        server.start()
    except Exception as e:  # noqa: BLE001 - any start failure is the tier's failure
        server.stop()
        pytest.fail(f"starting etcd + dra-test-apiserver failed: {type(e).__name__}: {e}", pytrace=False)
    _timings["start (readyz)"] = server.timings["readyz"]
    _timings["start (CRDs established)"] = time.monotonic() - t0
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="package")
def real_apiserver(real_apiserver_server):
    """(kubeconfig path, kubernetes ApiClient made by the driver's own new_api_client)."""
    from sriovdra.kube.api import new_api_client

    client = new_api_client(real_apiserver_server.kubeconfig)
    try:
        yield real_apiserver_server.kubeconfig, client
    finally:
        client.close()
