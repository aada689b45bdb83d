"""A fake NRI runtime: the runtime side of the NRI protocol on a real unix socket, for plugin tests.

It behaves like containerd 2.1 with NRI 0.8 (pkg/adaptation, measured in real-runtime.md §5.3/§5.4):
 * accepts plugin connections on the NRI socket; serves Runtime.RegisterPlugin on mux conn 2 and
   rejects an empty name or an index that is not two digits;
 * as soon as the registration is accepted it calls Plugin.Configure on conn 1 -- by default before
   the RegisterPlugin reply is written, an order the real runtime can produce;
 * then Plugin.Synchronize with every pod it knows, split into chunks with more=True if asked;
   a plugin that does not echo `more` is dropped ("plugin does not handle split sync requests");
 * pod events go out as Plugin.StateChange, container creation as Plugin.CreateContainer, only for
   events the plugin subscribed to (mask 0 = all); an error status fails the call, and RunPodSandbox
   reports it as containerd does: "NRI RunPodSandbox failed: rpc error: code = Unknown desc = <msg>";
 * a plugin slower than the request timeout is disconnected and the call proceeds as if it had
   succeeded (fail-open), like containerd's "context deadline exceeded" handling;
 * pods survive stop()/restart() like containerd's state, so a reconnecting plugin re-learns them.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from dataclasses import dataclass, field

from sriovdra.nri import ttrpc as wire
from sriovdra.nri.proto import nri_pb2, ttrpc_pb2

PLUGIN_SERVICE = "nri.pkg.api.v1alpha1.Plugin"
RUNTIME_SERVICE = "nri.pkg.api.v1alpha1.Runtime"
CODES = {2: "Unknown", 12: "Unimplemented", 4: "DeadlineExceeded"}
ALL_EVENTS = (1 << (nri_pb2.LAST - 1)) - 1


class PluginError(Exception):
    """The plugin answered with a ttrpc error status (the runtime's view, rendered like containerd)."""

    def __init__(self, method: str, code: int, message: str) -> None:
        super().__init__(f"NRI {method} failed: rpc error: code = {CODES.get(code, code)} desc = {message}")
        self.code = code
        self.message = message


def pod_sandbox(name: str, *, namespace: str = "default", uid: str | None = None, host_network: bool = False,
                ips: tuple[str, ...] = ("10.234.0.7",), annotations: dict[str, str] | None = None,
                netns: str | None = None) -> nri_pb2.PodSandbox:
    """A PodSandbox as containerd fills it: the sandbox's OCI namespaces, new ones (pid, ipc, uts,
    mount) without a path, the network namespace with its file -- absent for host-network pods."""
    sandbox_id = f"{name}-{os.urandom(6).hex()}"
    namespaces = [nri_pb2.LinuxNamespace(type=t) for t in ("pid", "ipc", "uts", "mount")]
    if not host_network:
        path = netns or f"/run/containerd/io.containerd.grpc.v1.cri/netns/cni-{sandbox_id}"
        namespaces.append(nri_pb2.LinuxNamespace(type="network", path=path))
    return nri_pb2.PodSandbox(
        id=sandbox_id, name=name, uid=uid or f"uid-{name}", namespace=namespace,
        labels={"io.kubernetes.pod.name": name}, annotations=annotations or {}, runtime_handler="",
        linux=nri_pb2.LinuxPodSandbox(cgroup_parent="kubepods", namespaces=namespaces),
        pid=4242, ips=() if host_network else ips)


def container(pod: nri_pb2.PodSandbox, name: str) -> nri_pb2.Container:
    netns = [nri_pb2.LinuxNamespace(type="network", path="/proc/4242/ns/net")]
    return nri_pb2.Container(id=f"{name}-{os.urandom(6).hex()}", pod_sandbox_id=pod.id, name=name,
                             state=nri_pb2.CONTAINER_CREATED, linux=nri_pb2.LinuxContainer(namespaces=netns))


@dataclass
class _Pending:
    done: threading.Event = field(default_factory=threading.Event)
    response: ttrpc_pb2.Response | None = None


class PluginConn:
    """One plugin connection, seen from the runtime."""

    def __init__(self, sock: socket.socket, request_timeout: float, refuse_registration: str = "") -> None:
        self.sock = sock
        self.refuse_registration = refuse_registration
        self.request_timeout = request_timeout
        self.name = ""
        self.index = ""
        self.events = 0  # from ConfigureResponse (0 until configured)
        self.registered = threading.Event()
        self.ready = threading.Event()  # configured and synchronized
        self.closed = threading.Event()
        self.close_reason = ""
        self._register_reply: tuple[int, ttrpc_pb2.Response] | None = None
        self._pending: dict[int, _Pending] = {}
        self._next_stream = 1
        self._write = threading.Lock()
        self._state = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True, name="fake-nri-reader")
        self._reader.start()

    # ---- transport ----
    def _send(self, conn_id: int, msg: wire.Message) -> None:
        with self._write:
            self.sock.sendall(wire.encode(conn_id, msg))

    def _read(self) -> None:
        demux = wire.Demultiplexer()
        try:
            while data := self.sock.recv(1 << 16):
                for conn_id, msg in demux.feed(data):
                    self._dispatch(conn_id, msg)
        except OSError:
            pass
        finally:
            self.close("connection closed")

    def _dispatch(self, conn_id: int, msg: wire.Message) -> None:
        if conn_id == wire.RUNTIME_CONN and msg.type == wire.REQUEST:
            self._serve_runtime(msg)
        elif conn_id == wire.PLUGIN_CONN and msg.type == wire.RESPONSE:
            with self._state:
                slot = self._pending.pop(msg.stream_id, None)
            if slot is not None:
                slot.response = ttrpc_pb2.Response.FromString(msg.body)
                slot.done.set()

    def _serve_runtime(self, msg: wire.Message) -> None:
        req = ttrpc_pb2.Request.FromString(msg.body)
        if (req.service, req.method) != (RUNTIME_SERVICE, "RegisterPlugin"):
            status = ttrpc_pb2.Status(code=12, message=f"method {req.method}")
            self._reply(msg.stream_id, ttrpc_pb2.Response(status=status))
            return
        reg = nri_pb2.RegisterPluginRequest.FromString(req.payload)
        error = self.refuse_registration or _check_registration(reg)
        if error:
            self._reply(msg.stream_id, ttrpc_pb2.Response(status=ttrpc_pb2.Status(code=2, message=error)))
            self.close(f"registration refused: {error}")
            return
        self.name, self.index = reg.plugin_name, reg.plugin_idx
        # The real runtime signals "registered" before its reply is written: keep the reply for the
        # starter thread, which may send Configure first.
        self._register_reply = (msg.stream_id, ttrpc_pb2.Response(payload=nri_pb2.Empty().SerializeToString()))
        self.registered.set()

    def _reply(self, stream_id: int, resp: ttrpc_pb2.Response) -> None:
        self._send(wire.RUNTIME_CONN, wire.Message(stream_id, wire.RESPONSE, 0, resp.SerializeToString()))

    def send_register_reply(self) -> None:
        """Write the RegisterPlugin reply if not done yet."""
        if self._register_reply is not None:
            stream_id, resp = self._register_reply
            self._register_reply = None
            self._reply(stream_id, resp)

    # ---- calls into the plugin ----
    def call(self, method: str, req, resp_type, on_sent=lambda: None):
        """Call Plugin.<method>; returns the response message, or None if the plugin was too slow (it
        is then disconnected, as containerd does). Raises PluginError for an error status and
        ConnectionError if the plugin is gone."""
        with self._state:
            if self.closed.is_set():
                raise ConnectionError(f"plugin {self.index}-{self.name} is disconnected ({self.close_reason})")
            stream_id, self._next_stream = self._next_stream, self._next_stream + 2
            slot = self._pending[stream_id] = _Pending()
        body = ttrpc_pb2.Request(service=PLUGIN_SERVICE, method=method, payload=req.SerializeToString(),
                                 timeout_nano=int(self.request_timeout * 1e9))
        self._send(wire.PLUGIN_CONN, wire.Message(stream_id, wire.REQUEST, wire.FLAG_REMOTE_CLOSED,
                                                  body.SerializeToString()))
        on_sent()
        if not slot.done.wait(self.request_timeout):
            self.close(f"closing plugin {self.index}-{self.name}, failed to handle {method}: "
                       "context deadline exceeded")
            return None
        if slot.response is None:
            raise ConnectionError(f"plugin {self.index}-{self.name} disconnected during {method}")
        if slot.response.status.code:
            raise PluginError(method, slot.response.status.code, slot.response.status.message)
        return resp_type.FromString(slot.response.payload)

    def subscribed(self, event: int) -> bool:
        return bool((self.events or ALL_EVENTS) & (1 << (event - 1)))

    def close(self, reason: str) -> None:
        with self._state:
            if self.closed.is_set():
                return
            self.close_reason = reason
            self.closed.set()
            pending, self._pending = self._pending, {}
        for slot in pending.values():
            slot.done.set()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


def _check_registration(reg: nri_pb2.RegisterPluginRequest) -> str:
    if not reg.plugin_name:
        return "invalid (empty) plugin name"
    if len(reg.plugin_idx) != 2 or not reg.plugin_idx.isdigit():
        return f'invalid plugin index: invalid plugin index "{reg.plugin_idx}", must be 2 digits'
    return ""


class FakeRuntime:
    def __init__(self, socket_path: str, *, name: str = "containerd", version: str = "2.1.9",
                 request_timeout: float = 2.0, registration_timeout: float = 5.0, sync_chunk: int = 0,
                 configure_before_register_reply: bool = True, refuse_registration: str = "") -> None:
        self.socket_path = socket_path
        self.name = name
        self.version = version
        self.request_timeout = request_timeout
        self.registration_timeout = registration_timeout
        self.sync_chunk = sync_chunk  # pods per Synchronize message; 0 = all in one
        self.configure_before_register_reply = configure_before_register_reply
        self.refuse_registration = refuse_registration  # error text for every RegisterPlugin
        self.pods: dict[str, nri_pb2.PodSandbox] = {}  # runtime state: survives restarts
        self.plugins: list[PluginConn] = []  # ready plugins
        self.log: list[str] = []  # what the runtime did to plugins, like containerd's log lines
        self._listener: socket.socket | None = None
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)

    # ---- lifecycle ----
    def start(self) -> FakeRuntime:
        if os.path.exists(self.socket_path):
            os.unlink(self.socket_path)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(self.socket_path)
        listener.listen()
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True, name="fake-nri-accept").start()
        return self

    def stop(self) -> None:
        """The runtime goes away: socket removed, plugin connections closed. Pods are kept."""
        listener, self._listener = self._listener, None
        if listener is not None:
            try:
                listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() thread
            except OSError:
                pass
            listener.close()
        if os.path.exists(self.socket_path):
            os.unlink(self.socket_path)
        with self._lock:
            plugins, self.plugins = self.plugins, []
        for plugin in plugins:
            plugin.close("runtime stopped")

    def restart(self) -> None:
        self.stop()
        self.start()

    def wait_plugin(self, timeout: float = 5.0, count: int = 1) -> PluginConn:
        """Wait until `count` plugin connections have been set up since start; returns the newest."""
        with self._ready:
            if not self._ready.wait_for(lambda: len(self.plugins) >= count, timeout):
                raise TimeoutError(f"no NRI plugin ready within {timeout}s; runtime log: {self.log}")
            return self.plugins[-1]

    # ---- plugin setup (per connection, like adaptation.acceptPluginConnections) ----
    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                sock, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=self._setup, args=(sock,), daemon=True, name="fake-nri-setup").start()

    def _setup(self, sock: socket.socket) -> None:
        plugin = PluginConn(sock, self.request_timeout, self.refuse_registration)
        try:
            self._register(plugin)
            self._configure(plugin)
            self._synchronize(plugin)
        except (ConnectionError, PluginError, OSError, TimeoutError) as e:
            self.log.append(f"failed to start external plugin: {e}")
            plugin.close(str(e))
            return
        with self._ready:
            self.plugins.append(plugin)
            self._ready.notify_all()

    def _register(self, plugin: PluginConn) -> None:
        deadline = time.monotonic() + self.registration_timeout
        while not plugin.registered.wait(0.01):
            if plugin.closed.is_set():
                raise ConnectionError(f"failed to register plugin: {plugin.close_reason}")
            if time.monotonic() > deadline:
                raise TimeoutError("plugin registration timed out")
        self.log.append(f"plugin registered as {plugin.index}-{plugin.name}")

    def _configure(self, plugin: PluginConn) -> None:
        req = nri_pb2.ConfigureRequest(runtime_name=self.name, runtime_version=self.version,
                                       registration_timeout=int(self.registration_timeout * 1000),
                                       request_timeout=int(self.request_timeout * 1000))
        if not self.configure_before_register_reply:
            plugin.send_register_reply()
        resp = plugin.call("Configure", req, nri_pb2.ConfigureResponse, on_sent=plugin.send_register_reply)
        if resp is None:
            raise TimeoutError("failed to configure plugin: context deadline exceeded")
        if resp.events & ~ALL_EVENTS:
            raise ConnectionError(f"invalid plugin events: 0x{resp.events:x}")
        plugin.events = resp.events

    def _synchronize(self, plugin: PluginConn) -> None:
        pods = list(self.pods.values())
        size = self.sync_chunk or max(len(pods), 1)
        chunks = [pods[i:i + size] for i in range(0, len(pods), size)] or [[]]
        for n, chunk in enumerate(chunks):
            more = n < len(chunks) - 1
            resp = plugin.call("Synchronize", nri_pb2.SynchronizeRequest(pods=chunk, more=more),
                               nri_pb2.SynchronizeResponse)
            if resp is None:
                raise TimeoutError("failed to synchronize plugin: context deadline exceeded")
            if more and resp.more != more:
                raise ConnectionError("plugin does not handle split sync requests")

    # ---- CRI-driven events ----
    def _active(self) -> list[PluginConn]:
        with self._lock:
            self.plugins = [p for p in self.plugins if not p.closed.is_set()]
            return sorted(self.plugins, key=lambda p: p.index)

    def _state_change(self, event: int, pod: nri_pb2.PodSandbox) -> None:
        for plugin in self._active():
            if plugin.subscribed(event):
                if plugin.call("StateChange", nri_pb2.StateChangeEvent(event=event, pod=pod), nri_pb2.Empty) is None:
                    self.log.append(plugin.close_reason)

    def run_pod_sandbox(self, pod: nri_pb2.PodSandbox) -> None:
        """Raises PluginError("NRI RunPodSandbox failed: ...") if a plugin refuses the pod."""
        try:
            self._state_change(nri_pb2.RUN_POD_SANDBOX, pod)
        except PluginError as e:
            raise PluginError("RunPodSandbox", e.code, e.message) from None
        self.pods[pod.id] = pod

    def stop_pod_sandbox(self, pod: nri_pb2.PodSandbox) -> None:
        self._state_change(nri_pb2.STOP_POD_SANDBOX, pod)

    def remove_pod_sandbox(self, pod: nri_pb2.PodSandbox) -> None:
        self._state_change(nri_pb2.REMOVE_POD_SANDBOX, pod)
        self.pods.pop(pod.id, None)

    def create_container(self, pod: nri_pb2.PodSandbox, ctr: nri_pb2.Container) -> nri_pb2.ContainerAdjustment:
        """The merged adjustment of all subscribed plugins (here: the last one that answered)."""
        adjust = nri_pb2.ContainerAdjustment()
        for plugin in self._active():
            if plugin.subscribed(nri_pb2.CREATE_CONTAINER):
                resp = plugin.call("CreateContainer", nri_pb2.CreateContainerRequest(pod=pod, container=ctr),
                                   nri_pb2.CreateContainerResponse)
                if resp is None:
                    self.log.append(plugin.close_reason)
                else:
                    adjust.MergeFrom(resp.adjust)
        return adjust

    def call(self, method: str, req, resp_type):
        """Any Plugin method on the newest plugin (for methods this fake does not drive itself)."""
        return self._active()[-1].call(method, req, resp_type)
