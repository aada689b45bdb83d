"""A local Kubernetes API server stand-in speaking the real REST JSON, driven by the real client.

Serves what a DRA node driver uses: Nodes (read), ResourceSlices (CRUD, list with field
selectors, watch, generateName, resourceVersion conflicts, delete preconditions) and
ResourceClaims (CRUD and the status subresource). Every object written is validated against
the Kubernetes 1.37 OpenAPI schema (kubernetes-validate, strict) plus the Go-only rules the
schema lacks (names, limits, one value per attribute); an invalid write gets the 422 a real
API server sends, and is recorded in `rejected` so tests can assert there were none.
Faults can be injected per request (status code, delay, a gate that holds the request, a
connection dropped before or after the request took effect), watch streams can be dropped, and
the server restarted on the same port with its state kept or lost, for the failure tests.

Watch semantics follow the real server: without a resourceVersion (or "0") the stream starts with
a synthetic ADDED event per existing object; from a given resourceVersion it replays the events
after it, or sends an ERROR event with a 410 Expired Status when that version is older than the
kept history. Every request is logged with its arrival time and answer (`log`).
"""

from __future__ import annotations

import copy
import json
import queue
import re
import socket
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

TRUE = ("1", "t", "T", "TRUE", "true", "True")  # Go strconv.ParseBool
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
C_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

SLICES = re.compile(r"^/apis/resource\.k8s\.io/v1/resourceslices(?:/(?P<name>[^/]+))?$")
CLAIMS = re.compile(r"^/apis/resource\.k8s\.io/v1/namespaces/(?P<ns>[^/]+)/resourceclaims"
                    r"(?:/(?P<name>[^/]+))?(?P<status>/status)?$")
NODES = re.compile(r"^/api/v1/nodes/(?P<name>[^/]+)$")


def go_rules(obj: dict) -> list[str]:
    """apiserver validation that the OpenAPI schema does not carry (ResourceSlice)."""
    problems = []
    if obj.get("kind") != "ResourceSlice":
        return problems
    spec = obj.get("spec", {})
    driver = spec.get("driver", "")
    if len(driver) > 63 or not DNS_SUBDOMAIN.match(driver):
        problems.append(f"spec.driver {driver!r}: not a DNS subdomain of at most 63 characters")
    devices = spec.get("devices", [])
    if len(devices) > 128:
        problems.append(f"spec.devices: {len(devices)} devices, at most 128")
    names = [d.get("name", "") for d in devices]
    if len(set(names)) != len(names):
        problems.append("spec.devices: duplicate device names")
    for d in devices:
        name = d.get("name", "")
        if len(name) > 63 or not DNS_LABEL.match(name):
            problems.append(f"device {name!r}: name is not a DNS label")
        attrs = d.get("attributes", {})
        if len(attrs) + len(d.get("capacity", {})) > 32:
            problems.append(f"device {name}: more than 32 attributes and capacities")
        for key, value in attrs.items():
            domain, _, ident = key.rpartition("/")
            if len(ident) > 32 or not C_IDENT.match(ident) or (domain and not DNS_SUBDOMAIN.match(domain)):
                problems.append(f"device {name}: attribute name {key!r} is invalid")
            set_fields = [k for k in ("int", "bool", "string", "version") if k in value]
            if len(set_fields) != 1:
                problems.append(f"device {name}: attribute {key!r} must have exactly one value, has {set_fields}")
            if isinstance(value.get("string"), str) and len(value["string"].encode()) > 64:
                problems.append(f"device {name}: attribute {key!r} longer than 64 bytes")
    pool = spec.get("pool", {})
    if pool.get("resourceSliceCount", 0) < 1:
        problems.append("spec.pool.resourceSliceCount must be at least 1")
    return problems


REASONS = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 405: "MethodNotAllowed",
           409: "Conflict", 410: "Expired", 422: "Invalid", 429: "TooManyRequests", 500: "InternalError",
           503: "ServiceUnavailable", 504: "Timeout"}  # metav1.StatusReason of each code, as the apiserver sends it
WATCH_HISTORY = 1000  # events kept for watches from a resourceVersion (the real watch cache keeps a window too)
DROP = object()  # put on a watcher's queue: end its stream without the terminating chunk


@dataclass
class Fault:
    """status 0: no error answer (only the delay, or the drop). drop "before": the connection closes
    without an answer and the request has no effect; "after": it takes effect, then the answer is lost."""

    method: str
    path: re.Pattern
    status: int = 500
    delay: float = 0.0
    times: int = 1
    hold: threading.Event | None = None  # the request waits until it is set
    drop: str = ""  # "", "before" or "after"


@dataclass
class Request:
    method: str
    path: str
    query: dict
    time: float  # time.monotonic() at arrival
    status: int = 0  # the answer's code; 0 while pending or when the connection was dropped


@dataclass
class Store:
    lock: threading.Lock = field(default_factory=threading.Lock)
    rv: int = 100
    slices: dict = field(default_factory=dict)
    claims: dict = field(default_factory=dict)
    nodes: dict = field(default_factory=dict)
    watchers: list = field(default_factory=list)
    requests: list = field(default_factory=list)  # (method, path, query)
    log: list = field(default_factory=list)  # Request, in arrival order
    rejected: list = field(default_factory=list)
    faults: list = field(default_factory=list)
    history: list = field(default_factory=list)  # (resourceVersion, event) of the last WATCH_HISTORY events
    watches: int = 0  # watch streams opened so far
    expired_before: int = 0  # watches from an older resourceVersion get 410 Expired

    def bump(self) -> str:
        self.rv += 1
        return str(self.rv)

    def emit(self, kind: str, obj: dict) -> None:
        """Called with the lock held, after the object got its resourceVersion."""
        event = {"type": kind, "object": copy.deepcopy(obj)}
        self.history.append((int(obj["metadata"]["resourceVersion"]), event))
        if len(self.history) > WATCH_HISTORY:
            self.expired_before = self.history.pop(0)[0]
        for q in list(self.watchers):
            q.put(event)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    store: Store
    validate = True

    def log_message(self, *args) -> None:
        pass

    _entry: Request | None = None
    _lose_answer = False

    def setup(self) -> None:
        super().setup()
        # Without NODELAY every round trip waits ~40 ms for a delayed ACK.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.connections.add(self.connection)

    def finish(self) -> None:
        self.server.connections.discard(self.connection)
        try:
            super().finish()
        except OSError:
            pass  # dropped by a fault or a restart

    def _drop_connection(self) -> None:
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _send(self, code: int, obj: dict, headers: dict | None = None) -> None:
        if self._lose_answer:  # the request took effect; the client never hears of it
            return self._drop_connection()
        if self._entry is not None:
            self._entry.status = code
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def _status(self, code: int, reason: str, message: str) -> None:
        # the real server asks throttled and unavailable clients to come back later
        headers = {"Retry-After": "1"} if code in (429, 503) else None
        self._send(code, status_body(code, reason, message), headers)

    def _body(self) -> dict:
        n = int(self.headers.get("Content-Length", 0))
        return json.loads(self.rfile.read(n) or b"{}")

    def _route(self, method: str) -> None:
        url = urlparse(self.path)
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        st = self.store
        st.requests.append((method, url.path, q))
        self._entry = Request(method, url.path, q, time.monotonic())
        self._lose_answer = False
        st.log.append(self._entry)
        fault = self._fault(method, url.path)
        if fault is not None:
            if fault.hold is not None:
                fault.hold.wait()
            if fault.delay:
                time.sleep(fault.delay)
            if fault.drop == "before":
                self._body() if method in ("POST", "PUT", "PATCH", "DELETE") else None
                return self._drop_connection()
            self._lose_answer = fault.drop == "after"
            if fault.status:
                self._body() if method in ("POST", "PUT", "PATCH", "DELETE") else None
                return self._status(fault.status, REASONS.get(fault.status, "InternalError"),
                                    f"injected fault {fault.status}")
        if m := NODES.match(url.path):
            node = st.nodes.get(m["name"])
            return self._send(200, node) if node else self._status(404, "NotFound", f'nodes "{m["name"]}" not found')
        if m := SLICES.match(url.path):
            return self._slices(method, m["name"], q)
        if m := CLAIMS.match(url.path):
            return self._claims(method, m["ns"], m["name"], bool(m["status"]))
        self._status(404, "NotFound", f"the server could not find the requested resource ({url.path})")

    def _fault(self, method: str, path: str) -> Fault | None:
        with self.store.lock:  # concurrent requests must not both take the last of `times`
            for f in self.store.faults:
                if f.method == method and f.path.search(path) and f.times > 0:
                    f.times -= 1
                    return f
        return None

    def do_GET(self):  # noqa: N802
        self._route("GET")

    def do_POST(self):  # noqa: N802
        self._route("POST")

    def do_PUT(self):  # noqa: N802
        self._route("PUT")

    def do_PATCH(self):  # noqa: N802
        self._route("PATCH")

    def do_DELETE(self):  # noqa: N802
        self._route("DELETE")

    def _invalid(self, obj: dict) -> str | None:
        if not self.validate:
            return None
        import kubernetes_validate

        problems = go_rules(obj)
        try:
            kubernetes_validate.validate(obj, "1.37", strict=True)
        except kubernetes_validate.ValidationError as e:
            problems.append(str(e).splitlines()[0])
        if problems:
            self.store.rejected.append((obj.get("kind"), obj.get("metadata", {}).get("name"), problems))
            return "; ".join(problems)
        return None

    def _slices(self, method: str, name: str | None, q: dict) -> None:
        st = self.store
        if method == "GET" and name is None and q.get("watch", "false") in TRUE:
            return self._watch(float(q.get("timeoutSeconds", "30")), q.get("fieldSelector", ""),
                               q.get("resourceVersion", ""))
        with st.lock:
            if method == "GET" and name is None:
                items = [o for o in st.slices.values() if _selected(o, q.get("fieldSelector", ""))]
                return self._send(200, {"apiVersion": "resource.k8s.io/v1", "kind": "ResourceSliceList",
                                        "metadata": {"resourceVersion": str(st.rv)}, "items": items})
            if method == "GET":
                o = st.slices.get(name)
                return self._send(200, o) if o else self._status(404, "NotFound",
                                                                 f'resourceslices.resource.k8s.io "{name}" not found')
            if method == "POST":
                o = self._body()
                md = o.setdefault("metadata", {})
                if "generateName" in md and not md.get("name"):
                    md["name"] = md["generateName"] + uuid.uuid4().hex[:5]
                error = self._invalid(o)
                if error:
                    return self._status(422, "Invalid", f'ResourceSlice "{md.get("name")}" is invalid: {error}')
                if md["name"] in st.slices:
                    return self._status(409, "AlreadyExists", f'resourceslices "{md["name"]}" already exists')
                md.update(uid=str(uuid.uuid4()), resourceVersion=st.bump(),
                          creationTimestamp="2026-11-22T00:00:00Z", generation=1)
                st.slices[md["name"]] = o
                st.emit("ADDED", o)
                return self._send(201, o)
            if method == "PUT":
                o = self._body()
                old = st.slices.get(name)
                if old is None:
                    return self._status(404, "NotFound", f'resourceslices.resource.k8s.io "{name}" not found')
                if o.get("metadata", {}).get("resourceVersion") not in (None, "", old["metadata"]["resourceVersion"]):
                    return self._status(409, "Conflict", f'Operation cannot be fulfilled on resourceslices '
                                        f'"{name}": the object has been modified; please apply your changes '
                                        'to the latest version and try again')
                error = self._invalid(o)
                if error:
                    return self._status(422, "Invalid", f'ResourceSlice "{name}" is invalid: {error}')
                o["metadata"].update(uid=old["metadata"]["uid"], resourceVersion=st.bump(),
                                     generation=old["metadata"]["generation"] + 1)
                st.slices[name] = o
                st.emit("MODIFIED", o)
                return self._send(200, o)
            if method == "DELETE":
                opts = self._body()
                o = st.slices.get(name)
                if o is None:
                    return self._status(404, "NotFound", f'resourceslices.resource.k8s.io "{name}" not found')
                pre = opts.get("preconditions") or {}
                for key in ("uid", "resourceVersion"):
                    if pre.get(key) and pre[key] != o["metadata"][key]:
                        return self._status(409, "Conflict", f"Precondition failed: {key} in precondition: "
                                            f"{pre[key]}, {key} in object meta: {o['metadata'][key]}")
                del st.slices[name]
                o["metadata"]["resourceVersion"] = st.bump()  # a deletion is a change with its own version
                st.emit("DELETED", o)
                return self._send(200, o)  # the real API server returns the deleted ResourceSlice
        self._status(405, "MethodNotAllowed", method)

    def _claims(self, method: str, ns: str, name: str | None, status: bool) -> None:
        st = self.store
        with st.lock:
            key = (ns, name)
            o = st.claims.get(key)
            if method == "GET" and name:
                return self._send(200, o) if o else self._status(
                    404, "NotFound", f'resourceclaims.resource.k8s.io "{name}" not found')
            if method == "PUT" and status:
                body = self._body()
                if o is None:
                    return self._status(404, "NotFound", f'resourceclaims.resource.k8s.io "{name}" not found')
                if body.get("metadata", {}).get("resourceVersion") not in (None, "", o["metadata"]["resourceVersion"]):
                    return self._status(409, "Conflict", f'Operation cannot be fulfilled on resourceclaims '
                                        f'"{name}": the object has been modified')
                new = copy.deepcopy(o)
                new["status"] = body.get("status", {})  # the status subresource ignores spec changes
                error = self._invalid(new) or _status_rules(new)
                if error:
                    return self._status(422, "Invalid", f'ResourceClaim "{name}" is invalid: {error}')
                new["metadata"]["resourceVersion"] = st.bump()
                st.claims[key] = new
                return self._send(200, new)
        self._status(405, "MethodNotAllowed", f"{method} {'status' if status else ''}")

    def _watch(self, timeout: float, selector: str, rv: str) -> None:
        q: queue.Queue = queue.Queue()
        st = self.store
        with st.lock:  # the starting state and the registration are one step: no event falls between
            if rv in ("", "0"):
                for o in st.slices.values():
                    q.put({"type": "ADDED", "object": copy.deepcopy(o)})
            elif not rv.isdigit():
                return self._status(400, "BadRequest", f"invalid resourceVersion {rv!r}")
            elif int(rv) < st.expired_before:
                q.put({"type": "ERROR", "object": status_body(
                    410, "Expired", f"too old resource version: {rv} ({st.expired_before})")})
                q.put(DROP)
            else:
                for version, event in st.history:
                    if version > int(rv):
                        q.put(event)
            st.watchers.append(q)
            st.watches += 1
        if self._entry is not None:
            self._entry.status = 200
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

        def chunk(b: bytes) -> None:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(b), b))
            self.wfile.flush()

        end = time.monotonic() + timeout
        try:
            while time.monotonic() < end and not self.server.stopping:
                try:
                    ev = q.get(timeout=0.1)
                except queue.Empty:
                    continue
                if ev is DROP:  # mid-stream, as a broken connection or an apiserver going away looks
                    return self._drop_connection()
                if ev["type"] == "ERROR" or _selected(ev["object"], selector):
                    chunk(json.dumps(ev).encode() + b"\n")
            chunk(b"")
        except OSError:
            pass
        finally:
            with st.lock:
                st.watchers.remove(q)


def status_body(code: int, reason: str, message: str) -> dict:
    """A metav1.Status as the apiserver sends with every error."""
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": reason, "code": code}


def _status_rules(claim: dict) -> str | None:
    """status.devices entries must name an allocated device (Go validation)."""
    results = {(r.get("driver"), r.get("pool"), r.get("device"))
               for r in claim.get("status", {}).get("allocation", {}).get("devices", {}).get("results", [])}
    for e in claim.get("status", {}).get("devices", []) or []:
        if (e.get("driver"), e.get("pool"), e.get("device")) not in results:
            return f"status.devices: {e.get('driver')}/{e.get('pool')}/{e.get('device')} is not allocated"
    return None


def _selected(obj: dict, selector: str) -> bool:
    for term in filter(None, selector.split(",")):
        key, _, value = term.partition("=")
        node = obj
        for part in key.split("."):
            node = node.get(part, {}) if isinstance(node, dict) else {}
        if node != value:
            return False
    return True


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True  # a restart binds the same port while old connections are in TIME_WAIT

    def __init__(self, address, handler) -> None:
        super().__init__(address, handler)
        self.stopping = False
        self.connections: set[socket.socket] = set()

    def handle_error(self, request, client_address) -> None:
        if not isinstance(sys.exc_info()[1], OSError):  # connections cut by faults and restarts are expected
            super().handle_error(request, client_address)


class ApiServer:
    """Start with `with ApiServer() as api:`; api.kubeconfig(path) writes a kubeconfig for it."""

    def __init__(self, validate: bool = True) -> None:
        self.store = Store()
        self._validate = validate
        self.restarts = 0
        self._listen(0)

    @property
    def validate(self) -> bool:
        return self._validate

    @validate.setter
    def validate(self, on: bool) -> None:
        """Off where the stand-in's own cost would be measured (schema validation takes ~60 ms a write)."""
        self._validate = on
        self.httpd.RequestHandlerClass.validate = on

    def _listen(self, port: int) -> None:
        handler = type("Handler", (_Handler,), {"store": self.store, "validate": self._validate})
        self.httpd = _Server(("127.0.0.1", port), handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> ApiServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop()

    def _stop(self) -> None:
        """Stop listening and cut every open connection (watches included), as a dying process does."""
        self.httpd.stopping = True
        self.httpd.shutdown()
        self.httpd.server_close()
        for conn in list(self.httpd.connections):
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def restart(self, keep_state: bool = True) -> None:
        """Stop and start again on the same port. keep_state=False is a wiped etcd: nothing is left,
        not even Nodes (add them again), and resourceVersions start over."""
        port = self.httpd.server_address[1]
        self._stop()
        if not keep_state:
            self.store = Store()
        else:  # what the old process had in memory, not in etcd
            with self.store.lock:
                self.store.watchers.clear()
                self.store.faults.clear()
        self.restarts += 1
        self._listen(port)
        self.thread.start()

    def drop_watches(self) -> int:
        """End every open watch stream abruptly (no terminating chunk); returns how many."""
        with self.store.lock:
            watchers = list(self.store.watchers)
        for q in watchers:
            q.put(DROP)
        return len(watchers)

    def watching(self) -> int:
        with self.store.lock:
            return len(self.store.watchers)

    def kubeconfig(self, path: str) -> str:
        with open(path, "w") as f:
            json.dump({"apiVersion": "v1", "kind": "Config", "current-context": "standin",
                       "clusters": [{"name": "standin", "cluster": {"server": self.url}}],
                       "users": [{"name": "driver", "user": {"token": "standin-token"}}],
                       "contexts": [{"name": "standin", "context": {"cluster": "standin", "user": "driver"}}]}, f)
        return path

    def add_node(self, name: str) -> dict:
        node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "uid": str(uuid.uuid4())}}
        self.store.nodes[name] = node
        return node

    def add_claim(self, claim: dict) -> dict:
        with self.store.lock:
            claim = copy.deepcopy(claim)
            md = claim.setdefault("metadata", {})
            md.setdefault("uid", str(uuid.uuid4()))
            md["resourceVersion"] = self.store.bump()
            self.store.claims[(md["namespace"], md["name"])] = claim
            return claim

    def delete_claim(self, namespace: str, name: str) -> None:
        with self.store.lock:
            self.store.claims.pop((namespace, name), None)

    def claim(self, namespace: str, name: str) -> dict:
        return copy.deepcopy(self.store.claims[(namespace, name)])

    def slices(self, driver: str | None = None) -> list[dict]:
        with self.store.lock:
            return [copy.deepcopy(s) for s in self.store.slices.values()
                    if driver is None or s["spec"]["driver"] == driver]

    def delete_all_slices(self) -> None:
        """What the kubelet does at its start (DeleteCollection by node)."""
        with self.store.lock:
            for name in list(self.store.slices):
                o = self.store.slices.pop(name)
                o["metadata"]["resourceVersion"] = self.store.bump()
                self.store.emit("DELETED", o)

    def inject(self, method: str, path: str, status: int = 500, delay: float = 0.0, times: int = 1,
               hold: threading.Event | None = None, drop: str = "") -> Fault:
        """The next `times` requests of `method` whose path matches the regex `path` get the fault
        (see Fault). Returns it: `fault.times` says how many are left."""
        if drop not in ("", "before", "after"):
            raise ValueError(f"drop={drop!r}: one of '', 'before', 'after'")
        fault = Fault(method, re.compile(path), status, delay, times, hold, drop)
        with self.store.lock:
            self.store.faults.append(fault)
        return fault

    def requests_to(self, method: str, path: str) -> list[Request]:
        """The logged requests of `method` whose path matches the regex `path`, in arrival order."""
        pattern = re.compile(path)
        return [r for r in list(self.store.log) if r.method == method and pattern.search(r.path)]
