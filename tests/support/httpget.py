"""Plain-HTTP GETs as the kubelet's httpGet probes send them, and a free local port to serve them on."""

from __future__ import annotations

import http.client
import socket


def http_get(host: str, port: int, path: str, timeout: float = 10.0) -> tuple[int, str]:
    """(status, body) of one GET on a fresh connection."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read().decode()
    finally:
        conn.close()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
