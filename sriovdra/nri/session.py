"""One connection of the plugin to the runtime: register, answer Configure and Synchronize, then
serve events until the runtime hangs up.

Everything runs on the caller's thread. The runtime sends one request at a time per plugin and
waits for the answer, so requests are answered inline. RegisterPlugin is not awaited in a blocking
call: its reply can arrive after the runtime's Configure request (the runtime configures the plugin
as soon as it has accepted the registration, before its reply is written), so both are just
messages handled by the same read loop.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

from sriovdra.nri import convert
from sriovdra.nri import ttrpc as wire
from sriovdra.nri.api import Handlers, Pod
from sriovdra.nri.proto import nri_pb2, ttrpc_pb2

log = logging.getLogger("sriovdra.nri")

PLUGIN_SERVICE = nri_pb2.DESCRIPTOR.services_by_name["Plugin"].full_name  # nri.pkg.api.v1alpha1.Plugin
RUNTIME_SERVICE = nri_pb2.DESCRIPTOR.services_by_name["Runtime"].full_name
SUBSCRIBED = (nri_pb2.RUN_POD_SANDBOX, nri_pb2.STOP_POD_SANDBOX, nri_pb2.REMOVE_POD_SANDBOX,
              nri_pb2.CREATE_CONTAINER)
DEFAULT_REQUEST_TIMEOUT = 2.0  # containerd's default; NRI 0.6 (containerd 1.7) reports 0 = not told
SETUP_TIMEOUT = 10.0  # register + configure + synchronize; the runtime's own registration timeout is 5 s
CODE_UNKNOWN = 2  # google.golang.org/grpc/codes
CODE_UNIMPLEMENTED = 12
_REGISTER_STREAM = 1  # the first (and only) stream the plugin opens as a ttrpc client
_RECV_SIZE = 1 << 16


class SessionError(Exception):
    """The runtime refused the plugin or broke the protocol; the connection is closed."""


class RequestError(Exception):
    """Answer the current request with this ttrpc status instead of a response."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def event_mask(events: tuple[int, ...] = SUBSCRIBED) -> int:
    """ConfigureResponse.events: bit (event - 1) per event."""
    mask = 0
    for event in events:
        mask |= 1 << (event - 1)
    return mask


@dataclass
class RuntimeInfo:
    name: str
    version: str
    request_timeout: float  # seconds

    def __str__(self) -> str:
        return f"{self.name}/{self.version}"


class Session:
    """The plugin side of one connection; `on_registered` and `on_ready` (registered, configured and
    synchronized) are called on the caller's thread."""

    def __init__(self, sock: socket.socket, handlers: Handlers, name: str, index: str,
                 on_registered: Callable[[], None] = lambda: None,
                 on_ready: Callable[[RuntimeInfo], None] = lambda info: None) -> None:
        self._sock = sock
        self._handlers = handlers
        self._name = name
        self._index = index
        self._on_registered = on_registered
        self._on_ready = on_ready
        self._demux = wire.Demultiplexer()
        self.registered = False
        self.synced = False
        self.runtime: RuntimeInfo | None = None
        self._announced = False
        self._sync_pods: list[Pod] = []  # Synchronize chunks (more=True) collected until the last one
        self._methods: dict[str, Callable[[bytes], bytes]] = {
            "Configure": self._configure, "Synchronize": self._synchronize, "StateChange": self._state_change,
            "CreateContainer": self._create_container, "Shutdown": self._shutdown,
            "UpdateContainer": lambda _: nri_pb2.UpdateContainerResponse().SerializeToString(),
            "StopContainer": lambda _: nri_pb2.StopContainerResponse().SerializeToString(),
        }

    @property
    def ready(self) -> bool:
        return self.registered and self.synced

    def run(self) -> None:
        """Serve until the runtime closes the connection (returns) or breaks the protocol (raises
        SessionError / FramingError). OSError from the socket propagates."""
        self._sock.settimeout(SETUP_TIMEOUT)
        self._register()
        while True:
            try:
                data = self._sock.recv(_RECV_SIZE)
            except TimeoutError:
                raise SessionError(f"runtime did not register and synchronize the plugin within {SETUP_TIMEOUT}s "
                                   f"(registered={self.registered}, configured={self.runtime is not None})") from None
            if not data:
                self._demux.finish()
                return
            for conn_id, msg in self._demux.feed(data):
                self._dispatch(conn_id, msg)

    def close(self) -> None:
        """Unblock run() from another thread: it returns as if the runtime had hung up."""
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # not connected any more

    def _register(self) -> None:
        req = nri_pb2.RegisterPluginRequest(plugin_name=self._name, plugin_idx=self._index)
        body = ttrpc_pb2.Request(service=RUNTIME_SERVICE, method="RegisterPlugin", payload=req.SerializeToString(),
                                 timeout_nano=int(SETUP_TIMEOUT * 1e9))
        self._send(wire.RUNTIME_CONN, wire.Message(_REGISTER_STREAM, wire.REQUEST, wire.FLAG_REMOTE_CLOSED,
                                                   body.SerializeToString()))

    def _send(self, conn_id: int, msg: wire.Message) -> None:
        self._sock.sendall(wire.encode(conn_id, msg))

    def _dispatch(self, conn_id: int, msg: wire.Message) -> None:
        if conn_id == wire.RUNTIME_CONN and msg.type == wire.RESPONSE and msg.stream_id == _REGISTER_STREAM:
            self._registration_reply(msg.body)
        elif conn_id == wire.PLUGIN_CONN and msg.type == wire.REQUEST:
            self._send(conn_id, wire.Message(msg.stream_id, wire.RESPONSE, 0, self._serve(msg.body)))
        else:
            log.debug("ignoring ttrpc message type %d on mux conn %d stream %d", msg.type, conn_id, msg.stream_id)

    def _registration_reply(self, body: bytes) -> None:
        resp = ttrpc_pb2.Response.FromString(body)
        if resp.status.code:
            raise SessionError(f"runtime refused registration as {self._index}-{self._name}: "
                               f"{resp.status.message} (code {resp.status.code})")
        self.registered = True
        self._on_registered()
        self._maybe_ready()

    def _serve(self, body: bytes) -> bytes:
        """One request from the runtime -> the serialized ttrpc.Response (errors as a status)."""
        req = ttrpc_pb2.Request.FromString(body)
        method = self._methods.get(req.method) if req.service == PLUGIN_SERVICE else None
        try:
            if method is None:
                raise RequestError(CODE_UNIMPLEMENTED, f"method {req.service}/{req.method} not implemented")
            return ttrpc_pb2.Response(payload=method(req.payload)).SerializeToString()
        except RequestError as e:
            return ttrpc_pb2.Response(status=ttrpc_pb2.Status(code=e.code, message=str(e))).SerializeToString()

    def _call(self, what: str, fn: Callable[..., object], *args: object, refusal: bool = False) -> object:
        """Run a handler: time it, and turn its exception into an error answer for the runtime.
        `refusal`: raising is how the handler rejects the request, so no traceback is logged."""
        start = time.monotonic()
        try:
            return fn(*args)
        except Exception as e:
            log.warning("NRI %s failed: %s", what, e, exc_info=not refusal)
            raise RequestError(CODE_UNKNOWN, str(e) or type(e).__name__) from e
        finally:
            self._warn_if_slow(what, time.monotonic() - start)

    def _warn_if_slow(self, what: str, took: float) -> None:
        limit = self.runtime.request_timeout if self.runtime else DEFAULT_REQUEST_TIMEOUT
        if took > limit / 2:
            log.warning("NRI %s took %.2fs; the runtime disconnects plugins slower than %.1fs "
                        "(and lets the pod proceed without them)", what, took, limit)

    def _configure(self, payload: bytes) -> bytes:
        req = nri_pb2.ConfigureRequest.FromString(payload)
        timeout = req.request_timeout / 1000 if req.request_timeout > 0 else DEFAULT_REQUEST_TIMEOUT
        self.runtime = RuntimeInfo(req.runtime_name, req.runtime_version, timeout)
        log.info("NRI configured by %s (request timeout %.1fs)", self.runtime, timeout)
        return nri_pb2.ConfigureResponse(events=event_mask()).SerializeToString()

    def _synchronize(self, payload: bytes) -> bytes:
        req = nri_pb2.SynchronizeRequest.FromString(payload)
        self._sync_pods += [convert.pod(p) for p in req.pods]
        if not req.more:
            pods, self._sync_pods = self._sync_pods, []
            self._call(f"synchronize ({len(pods)} pods)", self._handlers.synchronize, pods)
            self.synced = True
            self._maybe_ready()
        return nri_pb2.SynchronizeResponse(more=req.more).SerializeToString()  # echoing `more` is required

    def _state_change(self, payload: bytes) -> bytes:
        evt = nri_pb2.StateChangeEvent.FromString(payload)
        handler = {nri_pb2.RUN_POD_SANDBOX: self._handlers.run_pod_sandbox,
                   nri_pb2.STOP_POD_SANDBOX: self._handlers.stop_pod_sandbox,
                   nri_pb2.REMOVE_POD_SANDBOX: self._handlers.remove_pod_sandbox}.get(evt.event)
        if handler is not None:
            pod = convert.pod(evt.pod)
            self._call(f"{nri_pb2.Event.Name(evt.event)} {pod.namespace}/{pod.name}", handler, pod,
                       refusal=evt.event == nri_pb2.RUN_POD_SANDBOX)
        return nri_pb2.Empty().SerializeToString()

    def _create_container(self, payload: bytes) -> bytes:
        req = nri_pb2.CreateContainerRequest.FromString(payload)
        pod, ctr = convert.pod(req.pod), convert.container(req.container)
        adj = self._call(f"CREATE_CONTAINER {pod.namespace}/{pod.name}/{ctr.name}",
                         self._handlers.create_container, pod, ctr, refusal=True)
        return nri_pb2.CreateContainerResponse(adjust=convert.adjustment(adj)).SerializeToString()

    def _shutdown(self, payload: bytes) -> bytes:
        log.info("NRI runtime %s is shutting down", self.runtime)
        return nri_pb2.Empty().SerializeToString()

    def _maybe_ready(self) -> None:
        if self.ready and self.runtime is not None and not self._announced:
            self._announced = True
            self._sock.settimeout(None)  # set up: from now on the runtime may stay silent for days
            self._on_ready(self.runtime)
