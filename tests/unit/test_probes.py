"""sriovdra.probes: the HTTP liveness/readiness endpoints, over a real socket."""

from __future__ import annotations

import socket

import pytest

from sriovdra.probes import Check, ProbeAddressError, ProbeServer, parse_address, render
from tests.support.httpget import http_get


def get(server: ProbeServer, path: str) -> tuple[int, str]:
    return http_get(*server.address, path, timeout=5)


@pytest.fixture
def probes():
    state = {"live": [Check("rescan", True, "last rescan finished 1s ago")],
             "ready": [Check("registration:x", True), Check("slices:x", False, "first sync pending")]}

    def ready():
        if state.get("boom"):
            raise RuntimeError("boom")
        return state["ready"]

    server = ProbeServer(("127.0.0.1", 0), lambda: state["live"], ready)
    server.start()
    yield server, state
    server.stop()


def test_ok_is_200_and_a_failed_check_is_503_naming_it(probes):
    server, state = probes
    assert get(server, "/livez") == (200, "ok\n")
    assert get(server, "/healthz") == (200, "ok\n")
    code, body = get(server, "/readyz")
    assert code == 503
    assert body == "[-]slices:x failed: first sync pending\nreadyz check failed\n"
    state["ready"] = [Check("registration:x", True)]
    assert get(server, "/readyz") == (200, "ok\n")


def test_verbose_lists_every_check(probes):
    server, _ = probes
    code, body = get(server, "/readyz?verbose")
    assert code == 503
    assert body.splitlines() == ["[+]registration:x ok", "[-]slices:x failed: first sync pending",
                                 "readyz check failed"]
    assert get(server, "/livez?verbose=1") == (200, "[+]rescan ok: last rescan finished 1s ago\nlivez check passed\n")


def test_unknown_path_is_404_and_a_broken_check_is_500_and_the_server_lives_on(probes):
    server, state = probes
    code, body = get(server, "/metrics")
    assert code == 404 and "/livez" in body
    state["boom"] = True
    code, body = get(server, "/readyz")
    assert code == 500 and "boom" in body
    assert get(server, "/livez") == (200, "ok\n")


def test_a_taken_port_is_an_error_naming_the_address():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(ProbeAddressError, match=f"127.0.0.1:{port}: Address already in use"):
            ProbeServer(("127.0.0.1", port), list, list)


@pytest.mark.parametrize("value, expected", [
    ("127.0.0.1:51515", ("127.0.0.1", 51515)),
    ("0.0.0.0:0", ("0.0.0.0", 0)),
    ("[::1]:8080", ("::1", 8080)),
    ("localhost:9", ("localhost", 9)),
])
def test_parse_address(value, expected):
    assert parse_address(value) == expected


@pytest.mark.parametrize("value", ["51515", ":51515", "127.0.0.1:", "127.0.0.1:http", "127.0.0.1:70000", "[::1]"])
def test_parse_address_refuses(value):
    with pytest.raises(ProbeAddressError, match="HOST:PORT"):
        parse_address(value)


def test_render_without_checks_is_ok():
    assert render("readyz", [], verbose=False) == (200, "ok\n")
