"""sriovdra.webhook.WebhookServer in-process, where its limits can be set small: connection limit,
per-connection timeouts, and stop() draining requests in flight while hanging up idle ones."""

import http.client
import json
import select
import socket
import ssl
import threading

import pytest

from sriovdra import admission
from sriovdra.webhook import CertificateError, ServingCertificate, WebhookOptions, WebhookServer, tls_context
from tests.support.waiting import wait
from tests.webhook.conftest import client_context
from tests.webhook.reviews import body, claim_object, ib

BIG = 300.0  # timeouts that must not be what ends a test: if one fires, the assertion after it fails


@pytest.fixture
def serve(pki):
    servers = []

    def _serve(review=admission.review, **opts) -> WebhookServer:
        options = WebhookOptions(cert_file=pki.server.cert, key_file=pki.server.key, port=0,
                                 bind_address="127.0.0.1", **{"io_timeout": BIG, "drain_timeout": BIG, **opts})
        server = WebhookServer(options, ServingCertificate(options.cert_file, options.key_file), review)
        server.start()
        servers.append(server)
        return server

    yield _serve
    for server in servers:
        if not server.stopping:
            server.stop()


def _conn(server, pki) -> http.client.HTTPSConnection:
    return http.client.HTTPSConnection("127.0.0.1", server.port, context=client_context(pki.ca.cert), timeout=60)


def _readyz(server, pki, conn=None) -> int:
    conn = conn or _conn(server, pki)
    conn.request("GET", "/readyz")
    resp = conn.getresponse()
    resp.read()
    return resp.status


def _in_thread(fn) -> threading.Thread:
    t = threading.Thread(target=fn, daemon=True)
    t.start()
    return t


def test_tls_context_is_tls_1_2_plus_and_http_1_1(pki):
    ctx = tls_context(pki.server.cert, pki.server.key)
    assert ctx.minimum_version == ctx.minimum_version.TLSv1_2


def test_certificate_errors_name_the_files(pki, tmp_path):
    with pytest.raises(CertificateError, match=f"{tmp_path}/none.crt: No such file or directory"):
        ServingCertificate(str(tmp_path / "none.crt"), pki.server.key)
    with pytest.raises(CertificateError, match=f"certificate {pki.server.cert} with key {pki.other_server.key}: "
                                               "KEY_VALUES_MISMATCH"):
        ServingCertificate(pki.server.cert, pki.other_server.key)


def test_stop_hangs_up_idle_keep_alive_connections_at_once(serve, pki):
    server = serve()
    idle = _conn(server, pki)
    assert _readyz(server, pki, idle) == 200  # now idle, waiting for its next request (timeout BIG)
    stopper = _in_thread(server.stop)
    wait(lambda: not stopper.is_alive(), timeout=60, what="stop() to return without waiting for the idle connection")
    with pytest.raises((ConnectionError, http.client.RemoteDisconnected, OSError)):
        _readyz(server, pki, idle)


def test_stop_lets_the_request_in_flight_finish(serve, pki):
    entered, release = threading.Event(), threading.Event()

    def slow_review(data):
        entered.set()
        release.wait(60)
        return admission.review(data)

    server = serve(slow_review)
    result = {}

    def client():
        conn = _conn(server, pki)
        conn.request("POST", "/validate", body=body(claim_object("ResourceClaim", "v1", [ib(pkey=0)])),
                     headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        result.update(status=resp.status, connection=resp.headers["Connection"], body=json.loads(resp.read()))

    requester = _in_thread(client)
    wait(entered.is_set, what="the request to be in review")
    stopper = _in_thread(server.stop)
    wait(lambda: server.stopping, what="stop() to begin")
    with pytest.raises(ConnectionRefusedError):  # no longer accepting
        socket.create_connection(("127.0.0.1", server.port), timeout=60)
    assert stopper.is_alive()  # still waiting for the request in flight
    release.set()
    wait(lambda: not stopper.is_alive() and not requester.is_alive(), timeout=60, what="drain")
    assert result["status"] == 200 and result["connection"] == "close"
    assert result["body"]["response"]["allowed"] is False


def test_connection_limit_refuses_extra_connections_until_one_closes(serve, pki):
    server = serve(max_connections=2)
    silent = [socket.create_connection(("127.0.0.1", server.port), timeout=60) for _ in range(2)]
    extra = socket.create_connection(("127.0.0.1", server.port), timeout=60)
    assert extra.recv(1) == b""  # closed by the server without a handshake
    extra.close()
    silent[0].close()  # its thread sees EOF in the handshake and frees the slot
    wait(lambda: _try_readyz(server, pki) == 200, what="a free connection slot")
    silent[1].close()


def _try_readyz(server, pki) -> int:
    try:
        return _readyz(server, pki)
    except OSError:
        return 0


def test_silent_connection_is_dropped_after_the_io_timeout(serve, pki):
    server = serve(io_timeout=0.2)
    silent = socket.create_connection(("127.0.0.1", server.port), timeout=60)
    assert silent.recv(1) == b""  # the server gave up on the handshake and closed
    silent.close()
    assert _readyz(server, pki) == 200


def test_a_bug_in_review_costs_one_request(serve, pki):
    calls = []

    def buggy(data):
        calls.append(1)
        if len(calls) == 1:
            raise KeyError("boom")
        return admission.review(data)

    server = serve(buggy)
    conn = _conn(server, pki)
    for expected in (500, 200):
        conn.request("POST", "/validate", body=body(claim_object("ResourceClaim", "v1", [ib()])),
                     headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        resp.read()
        assert resp.status == expected


# -- slow clients: a deadline per request, not only per socket operation -----------------

# A byte every TRICKLE_IO_TIMEOUT / 4: well within the timeout even on a busy machine, so only
# the deadline can end the request.
TRICKLE_IO_TIMEOUT = 1.0
TRICKLE_DEADLINE = 2.0
TRICKLE_MAX_BYTES = 300  # far beyond what the deadline lets through; reaching it means it never hung up


def _client_hello(pki) -> bytes:
    """The first flight of a TLS client, to be sent byte by byte over a plain socket."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = client_context(pki.ca.cert).wrap_bio(incoming, outgoing, server_hostname="127.0.0.1")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def _hung_up(sock) -> bool:
    """Whether the server closed `sock`, waiting TRICKLE_IO_TIMEOUT / 4 to see."""
    if not select.select([sock], [], [], TRICKLE_IO_TIMEOUT / 4)[0]:
        return False
    sock.setblocking(False)  # readable may be only a TLS 1.3 session ticket: no data is no hang-up
    try:
        return sock.recv(1) == b""
    except (ssl.SSLWantReadError, BlockingIOError):
        return False
    finally:
        sock.settimeout(60)


def _trickle(sock, data: bytes) -> None:
    """Send `data` one byte every TRICKLE_IO_TIMEOUT / 4 until the server hangs up."""
    for byte in data[:TRICKLE_MAX_BYTES]:
        try:
            sock.sendall(bytes([byte]))
            if _hung_up(sock):
                return
        except (ConnectionError, ssl.SSLError):
            return
    raise AssertionError(f"the server still waits for the request after {TRICKLE_MAX_BYTES} slow bytes")


@pytest.mark.parametrize("phase", ["handshake", "headers", "body", "kept-alive headers"])
def test_a_client_trickling_bytes_is_hung_up_on_at_the_request_deadline(serve, pki, phase):
    # One slot: while the trickler holds it nobody else is served, so being served again below
    # shows that the server hung up on it (rather than the client giving up).
    server = serve(max_connections=1, io_timeout=TRICKLE_IO_TIMEOUT, request_deadline=TRICKLE_DEADLINE)
    raw = socket.create_connection(("127.0.0.1", server.port), timeout=60)
    if phase == "handshake":
        _trickle(raw, _client_hello(pki))
    else:
        conn = client_context(pki.ca.cert).wrap_socket(raw, server_hostname="127.0.0.1")
        payload = body(claim_object("ResourceClaim", "v1", [ib()]))
        head = (f"POST /validate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(payload)}\r\n\r\n").encode()
        if phase == "kept-alive headers":  # a first request in time, then the next one trickled
            conn.sendall(head + payload)
            assert conn.makefile("rb").readline().startswith(b"HTTP/1.1 200")
        if phase == "body":
            conn.sendall(head)
            _trickle(conn, payload)
        else:
            _trickle(conn, head * 4)
        conn.close()
    raw.close()
    wait(lambda: _try_readyz(server, pki) == 200, what="the slot held by the trickling client to be free")


def test_the_request_deadline_spares_a_client_that_is_merely_idle_between_requests(serve, pki):
    server = serve(io_timeout=BIG, request_deadline=BIG)
    conn = _conn(server, pki)
    for _ in range(3):  # a fresh deadline for each request on the kept-alive connection
        assert _readyz(server, pki, conn) == 200
