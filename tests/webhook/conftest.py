"""`sriovdra webhook` as a real subprocess on 127.0.0.1, over real TLS, with certificates made by
the openssl CLI (tests skip with the reason when it is missing: `apt-get install openssl`)."""

from __future__ import annotations

import http.client
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import threading
from dataclasses import dataclass, field

import pytest

from tests.support.waiting import wait
from tests.webhook.certs import OPENSSL, Pair, make_ca, make_server

_LISTENING = re.compile(r"webhook listening on https://127\.0\.0\.1:(\d+)")


@dataclass(frozen=True)
class Pki:
    ca: Pair
    server: Pair  # signed by ca, for 127.0.0.1
    other_ca: Pair
    other_server: Pair  # signed by other_ca: what a rotation brings


@pytest.fixture(scope="session")
def pki(tmp_path_factory) -> Pki:
    if OPENSSL is None:
        pytest.skip("the openssl CLI is not installed (apt-get install openssl): the webhook tests make "
                    "their certificates with it")
    d = str(tmp_path_factory.mktemp("pki"))
    ca, other_ca = make_ca(d, "ca"), make_ca(d, "other-ca")
    return Pki(ca, make_server(ca, d, "server"), other_ca, make_server(other_ca, d, "other-server"))


def client_context(cafile: str) -> ssl.SSLContext:
    """What the API server does: trust only the caBundle's CA, verify 127.0.0.1 against the SAN."""
    return ssl.create_default_context(cafile=cafile)


@dataclass
class Webhook:
    proc: subprocess.Popen
    port: int
    cafile: str
    lines: list[str] = field(default_factory=list)
    reader: threading.Thread | None = None

    def connect(self, cafile: str | None = None) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection("127.0.0.1", self.port, context=client_context(cafile or self.cafile),
                                           timeout=30)

    def request(self, method: str, path: str, body: bytes | None = None, *, content_type="application/json",
                conn: http.client.HTTPSConnection | None = None, headers: dict | None = None):
        """(status, headers, body); on `conn` when given (keep-alive), else on a new connection."""
        own = conn is None
        conn = conn or self.connect()
        try:
            hdrs = {"Content-Type": content_type} if content_type else {}
            conn.request(method, path, body=body, headers={**hdrs, **(headers or {})})
            resp = conn.getresponse()
            return resp.status, resp.headers, resp.read()
        finally:
            if own:
                conn.close()

    def post(self, body: bytes, path="/validate-resource-claim-parameters", **kw):
        return self.request("POST", path, body, **kw)

    @property
    def log(self) -> str:
        return "".join(self.lines)

    def wait_log(self, text: str) -> None:
        wait(lambda: text in self.log, what=f"{text!r} in the webhook's log")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            if self.reader is not None:
                self.reader.join(timeout=30)  # every line logged before the exit is in self.lines


def _env() -> dict:
    return {k: v for k, v in os.environ.items() if not k.startswith("SRIOVDRA_")}


def run_webhook(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sriovdra", "webhook", *args], capture_output=True, text=True,
                          env=_env(), timeout=60)


def _collect(proc: subprocess.Popen, lines: list[str]) -> None:
    for line in proc.stderr:  # drained continuously: a full pipe would block the webhook's logging
        lines.append(line)


@pytest.fixture
def start_webhook():
    """start_webhook(cert, key, cafile) -> a running Webhook (port from its log); stopped at teardown."""
    started: list[Webhook] = []

    def _start(cert: str, key: str, cafile: str, *extra: str) -> Webhook:
        proc = subprocess.Popen([sys.executable, "-m", "sriovdra", "webhook", "--tls-cert-file", cert,
                                 "--tls-private-key-file", key, "--port", "0", "--bind-address", "127.0.0.1",
                                 "--log-level", "debug", *extra],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=_env())
        hook = Webhook(proc, 0, cafile)
        started.append(hook)
        hook.reader = threading.Thread(target=_collect, args=(proc, hook.lines), daemon=True)
        hook.reader.start()

        def listening():
            if proc.poll() is not None:
                raise AssertionError(f"webhook exited with {proc.returncode}: {hook.log}")
            m = _LISTENING.search(hook.log)
            return int(m.group(1)) if m else 0

        hook.port = wait(listening, timeout=30, what="the webhook to listen")
        return hook

    yield _start
    for hook in started:
        hook.stop(signal.SIGKILL)


@pytest.fixture
def live_pair(tmp_path, pki) -> Pair:
    """Copies of the server pair at paths the test may replace (rotation)."""
    d = tmp_path / "live"
    d.mkdir()
    pair = Pair(str(d / "tls.crt"), str(d / "tls.key"))
    shutil.copy(pki.server.cert, pair.cert)
    shutil.copy(pki.server.key, pair.key)
    return pair


@pytest.fixture
def webhook(start_webhook, live_pair, pki) -> Webhook:
    return start_webhook(live_pair.cert, live_pair.key, pki.ca.cert)
