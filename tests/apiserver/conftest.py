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
import os
import shutil
import subprocess
import sys
import time
from collections import deque
from pathlib import Path

import pytest

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


def _ensure_built(config) -> None:
    """Run build.sh unless its --check says the binaries are up to date; stream its progress to
    the terminal (a cold build takes 5-15 min) and fail with its output's tail when it fails.
    Skips only when a build is needed and this host cannot build (not root, no apt-get/dpkg)."""
    build = str(HACK / "build.sh")
    t0 = time.monotonic()
    if subprocess.run([build, "--check"], stdin=subprocess.DEVNULL).returncode == 0:
        _timings["build check"] = time.monotonic() - t0
        return
    if os.geteuid() != 0:
        pytest.skip("the real-apiserver binaries are not built and building them (hack/apiserver/build.sh: "
                    "Debian packages through a private apt config) needs root")
    missing = [t for t in ("apt-get", "apt-cache", "dpkg", "flock") if shutil.which(t) is None]
    if missing:
        pytest.skip(f"the real-apiserver binaries are not built and building them needs {', '.join(missing)}")
    capman = config.pluginmanager.getplugin("capturemanager")
    tail: deque[str] = deque(maxlen=40)
    with capman.global_and_fixture_disabled():
        sys.stderr.write("\nbuilding the real apiserver (hack/apiserver/build.sh, once per cache)\n")
        proc = subprocess.Popen([build], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, errors="replace")
        try:
            for line in proc.stdout:
                tail.append(line)
                sys.stderr.write(line)
                sys.stderr.flush()
            rc = proc.wait()
        except BaseException:
            proc.kill()
            proc.wait()
            raise
    _timings["cold build" if rc == 0 else "failed build"] = time.monotonic() - t0
    if rc != 0:
        pytest.fail(f"hack/apiserver/build.sh failed (exit {rc}); its output ends with:\n{''.join(tail)}",
                    pytrace=False)


# One server for the whole tier. Package scope (this directory) rather than session: in a run of
# the whole suite the server is stopped as soon as the last test here is done.
@pytest.fixture(scope="package")
def real_apiserver_server(request, tmp_path_factory):
    """The running server (realapi.RealApiServer: url, kubeconfig, rundir, logs)."""
    _ensure_built(request.config)
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
