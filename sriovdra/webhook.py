"""The admission webhook's HTTPS server (stdlib http.server + ssl, one thread per connection).

POST /validate-resource-claim-parameters (or /validate): an AdmissionReview, answered by
sriovdra.admission. GET /readyz and /healthz: "ok". Robustness, because the API server calls
this synchronously on every claim write:
- the TLS handshake happens in the connection's thread, never in the accept loop, and every
  socket operation has a timeout: a slow or silent client holds one thread, not the server;
- each request has a deadline, from accept (kept alive: from the previous response) to its last
  body byte: a client trickling bytes just within the timeout is hung up on all the same;
- bodies are bounded (413 above the limit) and so are concurrent connections;
- the certificate and key files are re-read for each new connection: a rotated pair is served
  from then on, a broken one is logged and the previous pair kept (no restart, no outage);
- stop() (SIGTERM) stops accepting, closes idle keep-alive connections at once and lets the
  requests in flight finish.
"""

from __future__ import annotations

import http.server
import io
import json
import logging
import socket
import socketserver
import ssl
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from sriovdra import admission

log = logging.getLogger("sriovdra.webhook")

VALIDATE_PATHS = ("/validate-resource-claim-parameters", "/validate")
HEALTH_PATHS = ("/readyz", "/healthz")


@dataclass(frozen=True)
class WebhookOptions:
    cert_file: str
    key_file: str
    port: int  # 0: any free port (tests); WebhookServer.port says which
    bind_address: str = "0.0.0.0"
    # The API server sends object and oldObject, each at most etcd's 1.5 MiB.
    max_body_bytes: int = 4 << 20
    io_timeout: float = 10.0  # per socket operation: handshake, each read, each write, keep-alive idle
    # From accept (or, kept alive, the previous response) to the request's last body byte: a
    # client sending a byte every io_timeout / 2 would otherwise hold its slot for ever.
    request_deadline: float = 30.0
    max_connections: int = 128
    drain_timeout: float = 10.0  # how long stop() waits for requests in flight


class CertificateError(Exception):
    """The serving certificate or key cannot be used; str() names the files."""


def tls_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    """A server context for this pair: TLS 1.2+, HTTP/1.1 only."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols(["http/1.1"])
    try:
        # A password callback, so that an encrypted key fails here instead of prompting on a tty.
        ctx.load_cert_chain(cert_file, key_file, password=lambda: b"")
    except ssl.SSLError as e:
        raise CertificateError(f"certificate {cert_file} with key {key_file}: {e.reason or e} "
                               "(expected a PEM certificate chain and its unencrypted PEM private key)") from None
    except OSError as e:
        raise CertificateError(f"{e.filename or cert_file}: {e.strerror or e}") from None
    return ctx


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise CertificateError(f"{path}: {e.strerror or e}") from None


class ServingCertificate:
    """The TLS context for new connections, reloaded when the certificate or key file changes.

    Files are compared by content, not mtime: a Secret volume swaps a symlink (new inode), but
    an in-place copy within one mtime tick would keep the same stat. Reading two small files per
    new connection costs microseconds beside a handshake."""

    def __init__(self, cert_file: str, key_file: str) -> None:
        self.cert_file, self.key_file = cert_file, key_file
        self._lock = threading.Lock()  # connection threads call context() concurrently
        self._loaded = self._contents()
        self._context = tls_context(cert_file, key_file)
        self._rejected: tuple[bytes, bytes] | None = None
        self._unreadable = ""

    def _contents(self) -> tuple[bytes, bytes]:
        return _read(self.cert_file), _read(self.key_file)

    def context(self) -> ssl.SSLContext:
        with self._lock:
            try:
                current = self._contents()
            except CertificateError as e:  # mid-rotation (a file briefly missing): keep serving
                if str(e) != self._unreadable:
                    log.warning("%s; still serving the previous certificate", e)
                    self._unreadable = str(e)
                return self._context
            self._unreadable = ""
            if current == self._loaded or current == self._rejected:
                return self._context
            try:
                # Read the files again rather than the bytes above (ssl loads only from files): if
                # they changed once more meanwhile, the next connection sees that and reloads.
                new = tls_context(self.cert_file, self.key_file)
            except CertificateError as e:
                log.error("not using the changed certificate files: %s; still serving the previous certificate", e)
                self._rejected = current
                return self._context
            self._context, self._loaded, self._rejected = new, current, None
            log.info("serving the new certificate from %s", self.cert_file)
            return new


Review = Callable[[bytes], tuple[admission.AdmissionRequest, admission.Verdict, Mapping]]


class WebhookServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    block_on_close = False  # stop() drains connections itself, with a bound
    request_queue_size = 128

    def __init__(self, opts: WebhookOptions, certs: ServingCertificate, review: Review = admission.review) -> None:
        self.address_family = socket.AF_INET6 if ":" in opts.bind_address else socket.AF_INET
        self.opts, self.certs, self.review = opts, certs, review
        self.stopping = False
        self._slots = threading.BoundedSemaphore(opts.max_connections)
        self._cond = threading.Condition()
        self._handlers: set[_Handler] = set()
        self._thread: threading.Thread | None = None
        super().__init__((opts.bind_address, opts.port), _Handler)

    @property
    def port(self) -> int:
        return self.server_address[1]

    def server_bind(self) -> None:
        # HTTPServer's own also resolves the address's FQDN: a DNS lookup (slow or hanging where
        # DNS is) for a name nothing here uses.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), self.server_address[1]

    # -- connections: bounded, TLS in the connection's own thread ----------------------------

    def process_request(self, request, client_address) -> None:
        if not self._slots.acquire(blocking=False):
            log.warning("refusing a connection from %s: %d connections open (the limit)", client_address[0],
                        self.opts.max_connections)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def finish_request(self, request, client_address) -> None:
        accepted = time.monotonic()
        # The handshake's timeout bounds the whole handshake (CPython keeps one deadline across
        # its reads), so a trickled ClientHello cannot outlast the request deadline either.
        request.settimeout(min(self.opts.io_timeout, self.opts.request_deadline))
        try:
            conn = self.certs.context().wrap_socket(request, server_side=True)
        except OSError as e:  # ssl.SSLError, timeouts and resets are OSErrors
            log.debug("TLS handshake with %s failed: %s", client_address[0], e)
            return
        try:
            _Handler(conn, client_address, self, deadline=accepted + self.opts.request_deadline)
        finally:
            conn.close()

    def handle_error(self, request, client_address) -> None:
        error = sys.exc_info()[1]
        if isinstance(error, OSError):  # resets, timeouts, TLS alerts: the client's business
            log.debug("connection from %s: %s", client_address[0], error)
        else:
            log.exception("connection from %s failed", client_address[0])

    # -- keep-alive bookkeeping, so that stop() can close idle connections -------------------

    def track(self, handler: _Handler) -> None:
        with self._cond:
            self._handlers.add(handler)

    def untrack(self, handler: _Handler) -> None:
        with self._cond:
            self._handlers.discard(handler)
            self._cond.notify_all()

    def await_request(self, handler: _Handler) -> bool:
        """The connection waits for its next request; False when stopping (close it instead)."""
        with self._cond:
            handler.idle = True
            return not self.stopping

    def begin_request(self, handler: _Handler) -> bool:
        """A request line arrived; False when stop() already hung up on this idle connection."""
        with self._cond:
            handler.idle = False
            return not handler.hung_up

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self.serve_forever, name="webhook-accept", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop accepting, hang up idle keep-alive connections, wait for requests in flight."""
        if self._thread is not None:
            self.shutdown()
            self._thread.join()
        self.server_close()  # refuse new connections now: the API server tries another endpoint
        with self._cond:
            self.stopping = True
            for handler in self._handlers:
                if handler.idle:
                    handler.hang_up()
            if not self._cond.wait_for(lambda: not self._handlers, timeout=self.opts.drain_timeout):
                log.warning("%d connection(s) still busy after %.0f s; closing anyway", len(self._handlers),
                            self.opts.drain_timeout)


class _Handler(http.server.BaseHTTPRequestHandler):
    server: WebhookServer
    protocol_version = "HTTP/1.1"  # keep-alive: the API server reuses its connections
    # Status line, headers and body leave in one write (flushed after each request), and without
    # Nagle: a separate small body write waits out the client's delayed ACK, 40 ms per request.
    wbufsize = 1 << 16
    disable_nagle_algorithm = True
    server_version = "sriovdra-webhook"
    sys_version = ""
    idle = True
    hung_up = False
    served = False  # a request was answered on this connection: the next one gets a new deadline

    def __init__(self, request, client_address, server: WebhookServer, *, deadline: float) -> None:
        self.deadline = deadline  # monotonic; for the request being read
        super().__init__(request, client_address, server)

    def setup(self) -> None:
        self.timeout = self.server.opts.io_timeout
        super().setup()
        self.rfile = io.BufferedReader(_DeadlineReader(self.rfile.detach(), self))
        self.server.track(self)

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass  # the client is gone: nothing left to flush to
        finally:
            self.server.untrack(self)

    def hang_up(self) -> None:
        """Called by stop() under the server's lock: wake the thread blocked reading this socket."""
        self.hung_up = True
        try:
            # The plain socket's shutdown (not SSLSocket's, which would drop the TLS state under
            # the reading thread): the blocked read sees EOF and the handler closes.
            socket.socket.shutdown(self.connection, socket.SHUT_RDWR)
        except OSError:
            pass

    def handle_one_request(self) -> None:
        if not self.server.await_request(self):
            self.close_connection = True
            return
        if self.served:
            self.deadline = time.monotonic() + self.server.opts.request_deadline
        super().handle_one_request()
        self.served = True

    def parse_request(self) -> bool:
        if not self.server.begin_request(self):
            self.close_connection = True
            return False
        return super().parse_request()

    # -- responses ------------------------------------------------------------------------

    def _send(self, code: int, body: bytes, content_type: str, *, close: bool = False,
              headers: Mapping[str, str] | None = None) -> None:
        # The request is read: the response gets a whole io_timeout, not what its deadline left.
        self.connection.settimeout(self.server.opts.io_timeout)
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        if close or self.server.stopping:
            self.send_header("Connection", "close")  # also sets close_connection
        self.end_headers()
        self.wfile.write(body)

    def _text(self, code: int, message: str, **kw) -> None:
        self._send(code, (message + "\n").encode(), "text/plain; charset=utf-8", **kw)

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path in HEALTH_PATHS:
            if self.server.stopping:
                self._text(503, "stopping")
            else:
                self._text(200, "ok")
        elif path in VALIDATE_PATHS:
            self._text(405, f"{path} takes POST with an AdmissionReview", headers={"Allow": "POST"})
        else:
            self._text(404, f"no such path {path} (POST {VALIDATE_PATHS[0]}, GET {HEALTH_PATHS[0]})")

    def do_POST(self) -> None:
        # The body is read (or, too large, discarded) before any refusal: a response to a client
        # still sending would be lost to the reset that closing on unread data causes, and on a
        # kept-alive connection the unread body would be taken for the next request.
        body = self._read_body()
        if body is None:
            return
        path = self.path.split("?", 1)[0]  # the API server appends ?timeout=10s
        if path not in VALIDATE_PATHS:
            return self._text(404 if path not in HEALTH_PATHS else 405,
                              f"no such path {path} for POST (POST {VALIDATE_PATHS[0]})")
        if self.headers.get_content_type() != "application/json":
            return self._text(415, f"Content-Type must be application/json, got "
                                   f"{self.headers.get('Content-Type', 'none')!r}")
        try:
            req, verdict, answer = self.server.review(body)
        except admission.ReviewError as e:
            log.warning("malformed AdmissionReview from %s: %s", self.client_address[0], e)
            return self._text(400, f"malformed AdmissionReview: {e}")
        except Exception:  # a bug must cost one request, not the server
            log.exception("reviewing a request from %s failed", self.client_address[0])
            return self._text(500, "internal error reviewing the AdmissionReview (logged by the webhook)")
        _log_verdict(req, verdict)
        self._send(200, json.dumps(answer).encode(), "application/json")

    def _read_body(self) -> bytes | None:
        """The request body, or None after answering 411/413 or when the client went away."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self._text(411, "send the AdmissionReview with a Content-Length, not chunked", close=True)
            return None
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            length = -1
        if length < 0:
            self._text(411, "a Content-Length is required", close=True)
            return None
        limit = self.server.opts.max_body_bytes
        if length > limit:
            # Discarded up to twice the limit so that the client reads the 413; beyond, it is abuse.
            if length > 2 * limit or not self._discard(length):
                self.close_connection = True
                return None
            self._text(413, f"body of {length} bytes is above the limit of {limit}", close=True)
            return None
        body = self.rfile.read(length)
        if len(body) < length:  # the client went away mid-body
            self.close_connection = True
            return None
        return body

    def _discard(self, length: int) -> bool:
        while length > 0:
            chunk = self.rfile.read(min(length, 1 << 16))
            if not chunk:
                return False
            length -= len(chunk)
        return True

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's signature
        log.debug("%s %s", self.client_address[0], format % args)


class _DeadlineReader(io.RawIOBase):
    """The connection's reads, each with a timeout of what is left of the request's deadline.

    A timeout per read alone bounds only the gap between bytes; the deadline bounds the sum. The
    TimeoutError ends the connection (BaseHTTPRequestHandler.handle_one_request catches it)."""

    def __init__(self, raw: io.RawIOBase, handler: _Handler) -> None:
        self.raw, self.handler = raw, handler

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int | None:
        opts = self.handler.server.opts
        left = self.handler.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"request not received within the {opts.request_deadline:g} s deadline")
        self.handler.connection.settimeout(min(opts.io_timeout, left))
        return self.raw.readinto(buffer)

    def close(self) -> None:
        self.raw.close()  # the socket's file reference: the socket closes once every file is closed
        super().close()


def _log_verdict(req: admission.AdmissionRequest, verdict: admission.Verdict) -> None:
    what = f"{req.operation} {req.gvk} {req.object_name}"
    if not verdict.allowed:
        log.info("denied %s: %s", what, verdict.message.replace("\n", " "))
    elif verdict.warnings:
        log.info("allowed %s with warnings: %s", what, " ".join(verdict.warnings))
    else:
        log.debug("allowed %s", what)
