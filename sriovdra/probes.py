"""The liveness and readiness endpoints of `serve`, for the kubelet's httpGet probes.

Kubernetes conventions (as kube-apiserver's /livez and /readyz): 200 with body "ok" when every
check passes, 503 listing the failed checks otherwise; `?verbose` lists every check, `[+]` or
`[-]`, with its detail. /healthz is /livez. The checks are callables given by the caller, so this
module knows nothing of what serve runs; they must be quick and must not block.

The plugin runs with hostNetwork, so the chart binds 127.0.0.1 and sets the probes' host to it:
the kubelet probes from the node's namespace, and nothing off the node can reach the port.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str = ""


Checks = Callable[[], list[Check]]


class ProbeAddressError(Exception):
    pass


def parse_address(value: str) -> tuple[str, int]:
    """HOST:PORT (IPv6 as [::1]:PORT) to a bind address."""
    host, sep, port = value.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ProbeAddressError(f"expected HOST:PORT like 127.0.0.1:51515, got {value!r}")
    return host, int(port)


def render(probe: str, checks: list[Check], verbose: bool) -> tuple[int, str]:
    """The status code and body for one probe."""
    failed = [c for c in checks if not c.ok]
    if not verbose and not failed:
        return 200, "ok\n"
    shown = checks if verbose else failed
    lines = [f"[{'+' if c.ok else '-'}]{c.name} {'ok' if c.ok else 'failed'}{f': {c.detail}' if c.detail else ''}"
             for c in shown]
    lines.append(f"{probe} check {'failed' if failed else 'passed'}")
    return (503 if failed else 200), "\n".join(lines) + "\n"


class ProbeServer:
    def __init__(self, address: tuple[str, int], live: Checks, ready: Checks) -> None:
        self.routes = {"/livez": live, "/healthz": live, "/readyz": ready}
        try:
            self._server = ThreadingHTTPServer(address, _handler(self.routes))
        except OSError as e:
            raise ProbeAddressError(f"cannot serve the probes on {address[0]}:{address[1]}: {e.strerror}") from None
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="probes", daemon=True)

    @property
    def address(self) -> tuple[str, int]:
        return self._server.server_address[:2]

    def start(self) -> None:
        self._thread.start()
        log.info("liveness and readiness on http://%s:%d/livez and /readyz", *self.address)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _handler(routes: dict[str, Checks]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "sriovdra"
        timeout = 10  # a client that connects and sends nothing does not hold a thread forever

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            url = urlsplit(self.path)
            checks = routes.get(url.path)
            if checks is None:
                self._reply(404, f"no such endpoint {url.path}: try /livez or /readyz\n")
                return
            try:
                verbose = "verbose" in parse_qs(url.query, keep_blank_values=True)
                code, body = render(url.path.lstrip("/"), checks(), verbose)
            except Exception as e:  # noqa: BLE001 - a broken check is a failed probe, not a dead server
                log.exception("probe %s failed", url.path)
                code, body = 500, f"internal error: {e}\n"
            self._reply(code, body)

        def _reply(self, code: int, body: str) -> None:
            raw = body.encode()
            self.send_response(code)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(raw)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(raw)

        def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's signature
            log.debug("probe %s: " + format, self.client_address[0], *args)

    return Handler
