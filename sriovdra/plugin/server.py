"""The kubelet-facing gRPC side of one DRA driver: registration, DRA node service (v1 and
v1beta1) and device health (v1 and v1alpha1), on unix sockets under the kubelet root dir.

Start order (the kubelet dials the DRA socket as soon as it sees the registration socket):
stale sockets removed -> DRA server listening -> registration server listening. Stop order is
the reverse, registration first, so the kubelet stops sending calls before the service goes.

Early registration: `serve --drivers` listens before the driver is ready (this module imports
grpc and the protos, nothing else of ours), so the kubelet registers us while the checkpoint,
the inventory and the API client load. Every prepare and unprepare waits at the DriverGate
until the checkpoint is loaded and interrupted operations are finished (bounded: past it the
claim fails with a message and the kubelet retries), so no claim call ever sees a half-started
driver; health streams send nothing until the first inventory is known.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc

from sriovdra.plugin.proto import (
    dra_v1_pb2,
    dra_v1_pb2_grpc,
    dra_v1beta1_pb2,
    dra_v1beta1_pb2_grpc,
    health_v1_pb2,
    health_v1_pb2_grpc,
    health_v1alpha1_pb2,
    health_v1alpha1_pb2_grpc,
    pluginregistration_pb2,
    pluginregistration_pb2_grpc,
)

if TYPE_CHECKING:  # the driver core loads after the sockets listen (early registration)
    from sriovdra.driver.core import Driver
    from sriovdra.model import DeviceHealth

log = logging.getLogger(__name__)

# Advertised in GetInfo; v1 first: a 1.34+ kubelet takes the first token it supports.
SUPPORTED_VERSIONS = ["v1.DRAPlugin", "v1beta1.DRAPlugin", "v1.DRAResourceHealth", "v1alpha1.DRAResourceHealth"]
MAX_SOCKET_PATH = 107  # sun_path is 108 bytes with the terminating NUL
HEALTH_TIMEOUT_SECONDS = 30
HEALTH_RESEND_SECONDS = 10
# How long a claim call waits for a driver that is still starting. Well inside the kubelet's
# per-call timeout; past it the claim fails with a message and the kubelet calls again.
GATE_WAIT_SECONDS = 20.0


class SocketPathError(Exception):
    pass


@dataclass(frozen=True)
class PluginSockets:
    registration: str
    dra: str
    plugin_dir: str
    serialize_lock: str | None = None  # set for the rolling-update layout


def plugin_sockets(kubelet_root: str, driver: str, pod_uid: str | None = None) -> PluginSockets:
    """Socket paths as the kubelet plugin helper lays them out.

    Default: plugins_registry/<driver>-reg.sock and plugins/<driver>/dra.sock. With a pod UID
    (rolling updates, two instances at once): per-pod names and a flock file shared by both.
    """
    registry = os.path.join(kubelet_root, "plugins_registry")
    plugin_dir = os.path.join(kubelet_root, "plugins", driver)
    if pod_uid is None:
        sockets = PluginSockets(os.path.join(registry, f"{driver}-reg.sock"),
                                os.path.join(plugin_dir, "dra.sock"), plugin_dir)
    else:
        reg = os.path.join(registry, f"{driver}-{pod_uid}-reg.sock")
        if len(reg) > MAX_SOCKET_PATH:  # the helper's fallbacks: 8, then 16 hash bytes, unpadded base64url
            short = _b64(hashlib.sha256(pod_uid.encode()).digest()[:8])
            reg = os.path.join(registry, f"{driver}-{short}-reg.sock")
            if len(reg) > MAX_SOCKET_PATH:
                short = _b64(hashlib.sha256(f"{driver}\x00{pod_uid}".encode()).digest()[:16])
                reg = os.path.join(registry, f"dra-{short}-reg.sock")
        sockets = PluginSockets(reg, os.path.join(plugin_dir, f"dra-{pod_uid}.sock"), plugin_dir,
                                serialize_lock=os.path.join(plugin_dir, "serialize.lock"))
    for path in (sockets.registration, sockets.dra):
        if len(path.encode()) > MAX_SOCKET_PATH:
            raise SocketPathError(f"socket path {path} is {len(path.encode())} bytes, the limit is {MAX_SOCKET_PATH}: "
                                  "use a shorter --kubelet-root-dir")
    return sockets


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


# --- the driver behind the sockets ----------------------------------------------------------


class DriverUnavailable(Exception):
    """The driver did not become ready in time; str() says which and why."""


class DriverGate:
    """The driver a plugin server calls: given at once, or later (early registration). Claim calls
    wait for it, bounded."""

    def __init__(self, name: str, driver: Driver | None = None) -> None:
        self.name = name
        self._driver = driver
        self._ready = threading.Event()
        if driver is not None:
            self._ready.set()

    @property
    def ready(self) -> bool:
        return self._driver is not None

    def open(self, driver: Driver) -> None:
        """The checkpoint is loaded and interrupted operations are finished: calls may reach it."""
        self._driver = driver
        self._ready.set()

    def get(self, timeout: float | None = None) -> Driver:
        """The driver, once open; DriverUnavailable after timeout (default GATE_WAIT_SECONDS)."""
        timeout = GATE_WAIT_SECONDS if timeout is None else timeout
        if not self._ready.wait(timeout) or self._driver is None:
            raise DriverUnavailable(f"driver {self.name} is still starting (loading its checkpoint, the device "
                                    f"inventory and the API client) after {timeout:g}s: try again")
        return self._driver


# --- DRA node service ------------------------------------------------------------------------


def _claim_refs(request) -> list:
    from sriovdra.claim import ClaimRef  # loaded by the driver core by the time a call gets here

    return [ClaimRef(namespace=c.namespace, name=c.name, uid=c.uid) for c in request.claims]


def _driver_or_refuse(gate: DriverGate, request, response, what: str) -> Driver | None:
    """The driver, or None with every claim of the call answered "still starting" (the kubelet retries)."""
    try:
        return gate.get()
    except DriverUnavailable as e:
        for c in request.claims:
            response.claims[c.uid].error = str(e)
        log.warning("%s of %d claim(s): %s", what, len(request.claims), e)
        return None


def _dra_servicer(gate: DriverGate, pb2, base: type):
    """A servicer for one DRA API version; v1 and v1beta1 differ only in Device.share_id."""
    has_share_id = "share_id" in pb2.Device.DESCRIPTOR.fields_by_name

    class Servicer(base):
        def NodePrepareResources(self, request, context):
            started = time.monotonic()
            response = pb2.NodePrepareResourcesResponse()
            driver = _driver_or_refuse(gate, request, response, "prepare")
            if driver is None:
                return response
            refs = _claim_refs(request)
            outcomes = driver.prepare(refs)
            for ref in refs:
                outcome = outcomes[ref.uid]
                entry = response.claims[ref.uid]
                if outcome.error:
                    entry.error = outcome.error
                    log.warning("prepare %s: %s", ref, outcome.error)
                    continue
                for d in outcome.devices:
                    dev = entry.devices.add(request_names=[d.request], pool_name=d.pool, device_name=d.device,
                                            cdi_device_ids=d.cdi_ids)
                    if has_share_id and d.share_id is not None:
                        dev.share_id = d.share_id
            log.info("prepared %d claim(s) for %s in %.1f ms", len(refs), driver.s.driver,
                     (time.monotonic() - started) * 1000)
            return response

        def NodeUnprepareResources(self, request, context):
            response = pb2.NodeUnprepareResourcesResponse()
            driver = _driver_or_refuse(gate, request, response, "unprepare")
            if driver is None:
                return response
            refs = _claim_refs(request)
            errors = driver.unprepare(refs)
            for ref in refs:
                entry = response.claims[ref.uid]
                if errors[ref.uid]:
                    entry.error = errors[ref.uid]
                    log.warning("unprepare %s: %s", ref, errors[ref.uid])
            return response

    return Servicer()


# --- health ----------------------------------------------------------------------------------


class HealthBoard:
    """The latest health of every device; streams wake up when it changes. Version 0: nothing known
    yet (early registration), streams wait for the first update rather than report no devices."""

    def __init__(self, pool: str) -> None:
        self.pool = pool
        self._cond = threading.Condition()
        self._devices: list[DeviceHealth] = []
        self._version = 0
        self._wakes = 0
        self._closed = False

    def update(self, devices: list[DeviceHealth]) -> None:
        with self._cond:
            if devices != self._devices or self._version == 0:
                self._devices = list(devices)
                self._version += 1
                self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def wake(self) -> None:
        """Let waiting streams re-check their RPC (called when a stream is cancelled)."""
        with self._cond:
            self._wakes += 1
            self._cond.notify_all()

    def wait(self, seen: int, timeout: float) -> tuple[int, list[DeviceHealth], bool, bool]:
        """(version, devices, closed, woken): woken means only a wake() ended the wait."""
        with self._cond:
            wakes = self._wakes
            self._cond.wait_for(lambda: self._version != seen or self._closed or self._wakes != wakes, timeout)
            woken = self._wakes != wakes and self._version == seen and not self._closed
            return self._version, list(self._devices), self._closed, woken


MAX_HEALTH_STREAMS = 4  # the kubelet keeps one; each holds a worker thread for its lifetime


def _health_servicer(board: HealthBoard, pb2, base: type, resend: float, streams: threading.Semaphore):
    class Servicer(base):
        def NodeWatchResources(self, request, context):
            if not streams.acquire(blocking=False):
                context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                              f"at most {MAX_HEALTH_STREAMS} health streams at once (the kubelet needs one)")
            try:
                context.add_callback(board.wake)
                yield from self._stream(context)
            finally:
                streams.release()

        def _stream(self, context):
            seen = -1
            while context.is_active():
                seen, devices, closed, woken = board.wait(seen, resend if seen >= 0 else 0)
                if closed:
                    return
                if woken or seen == 0:
                    continue  # some stream was cancelled: re-check ours; or nothing known yet
                now = int(time.time())
                yield pb2.NodeWatchResourcesResponse(devices=[
                    pb2.DeviceHealth(device=pb2.DeviceIdentifier(pool_name=board.pool, device_name=d.device),
                                     health=pb2.HEALTHY if d.healthy else pb2.UNHEALTHY,
                                     last_updated_time=now, health_check_timeout_seconds=HEALTH_TIMEOUT_SECONDS,
                                     message=d.message[:1024])
                    for d in devices])

    return Servicer()


# --- registration ----------------------------------------------------------------------------


class _Registration(pluginregistration_pb2_grpc.RegistrationServicer):
    def __init__(self, driver_name: str, endpoint: str, on_status: Callable[[bool, str], None]) -> None:
        self.info = pluginregistration_pb2.PluginInfo(type="DRAPlugin", name=driver_name, endpoint=endpoint,
                                                      supported_versions=SUPPORTED_VERSIONS)
        self.on_status = on_status

    def GetInfo(self, request, context):
        return self.info

    def NotifyRegistrationStatus(self, request, context):
        self.on_status(request.plugin_registered, request.error)
        return pluginregistration_pb2.RegistrationStatusResponse()


class PluginServer:
    """Both gRPC servers of one driver."""

    def __init__(self, driver: Driver | DriverGate, sockets: PluginSockets, board: HealthBoard,
                 health_resend: float = HEALTH_RESEND_SECONDS, workers: int = 8) -> None:
        """driver: the driver itself, or a gate it is handed to later (early registration)."""
        self.gate = driver if isinstance(driver, DriverGate) else DriverGate(driver.s.driver, driver)
        self.name = self.gate.name
        self.sockets, self.board = sockets, board
        self.registered = threading.Event()
        self.registration_error = ""
        # Health streams each hold a thread; the cap keeps `workers - MAX_HEALTH_STREAMS` for prepare.
        self._dra = grpc.server(futures.ThreadPoolExecutor(max_workers=workers + MAX_HEALTH_STREAMS,
                                                           thread_name_prefix="dra"))
        streams = threading.Semaphore(MAX_HEALTH_STREAMS)
        dra_v1_pb2_grpc.add_DRAPluginServicer_to_server(
            _dra_servicer(self.gate, dra_v1_pb2, dra_v1_pb2_grpc.DRAPluginServicer), self._dra)
        dra_v1beta1_pb2_grpc.add_DRAPluginServicer_to_server(
            _dra_servicer(self.gate, dra_v1beta1_pb2, dra_v1beta1_pb2_grpc.DRAPluginServicer), self._dra)
        health_v1_pb2_grpc.add_DRAResourceHealthServicer_to_server(
            _health_servicer(board, health_v1_pb2, health_v1_pb2_grpc.DRAResourceHealthServicer, health_resend,
                             streams), self._dra)
        health_v1alpha1_pb2_grpc.add_DRAResourceHealthServicer_to_server(
            _health_servicer(board, health_v1alpha1_pb2, health_v1alpha1_pb2_grpc.DRAResourceHealthServicer,
                             health_resend, streams), self._dra)
        self._reg = grpc.server(futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="reg"))
        pluginregistration_pb2_grpc.add_RegistrationServicer_to_server(
            _Registration(self.name, sockets.dra, self._on_status), self._reg)

    def _on_status(self, registered: bool, error: str) -> None:
        if registered:
            log.info("kubelet registered %s", self.name)
            self.registration_error = ""
            self.registered.set()
        else:
            log.error("kubelet rejected %s: %s", self.name, error)
            self.registration_error = error
            self.registered.clear()

    def start(self) -> None:
        os.makedirs(self.sockets.plugin_dir, mode=0o750, exist_ok=True)
        os.makedirs(os.path.dirname(self.sockets.registration), mode=0o750, exist_ok=True)
        for path in (self.sockets.registration, self.sockets.dra):
            _remove_stale(path)
        _listen(self._dra, self.sockets.dra)
        self._dra.start()
        _listen(self._reg, self.sockets.registration)
        self._reg.start()

    def answers(self, timeout: float) -> str | None:
        """None when the registration server answers GetInfo over its socket as the kubelet would
        call it (its threads are not all stuck), else what went wrong."""
        if not os.path.exists(self.sockets.registration):
            return f"registration socket {self.sockets.registration} is gone"
        with grpc.insecure_channel(f"unix://{self.sockets.registration}") as channel:
            try:
                pluginregistration_pb2_grpc.RegistrationStub(channel).GetInfo(
                    pluginregistration_pb2.InfoRequest(), timeout=timeout)
            except grpc.RpcError as e:
                return f"GetInfo on {self.sockets.registration}: {e.code().name} {e.details()}"
        return None

    def stop(self, grace: float = 2.0) -> None:
        self._reg.stop(grace).wait()
        _remove_stale(self.sockets.registration)
        self.board.close()
        self._dra.stop(grace).wait()
        _remove_stale(self.sockets.dra)


def _listen(server: grpc.Server, path: str) -> None:
    try:
        bound = server.add_insecure_port(f"unix://{path}")
    except RuntimeError as e:
        raise SocketPathError(f"cannot listen on {path}: {e}") from None
    if not bound:
        raise SocketPathError(f"cannot listen on {path}")
    os.chmod(path, 0o600)


def _remove_stale(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def listen_early(kubelet_root: str, drivers: tuple[str, ...], pool: str, pod_uid: str | None = None,
                 health_resend: float = HEALTH_RESEND_SECONDS) -> dict[str, PluginServer]:
    """Every named driver's servers listening with a closed gate (early registration): the kubelet
    registers them now, claim calls wait until the caller opens each gate with its loaded driver."""
    servers: dict[str, PluginServer] = {}
    try:
        for name in drivers:
            server = PluginServer(DriverGate(name), plugin_sockets(kubelet_root, name, pod_uid), HealthBoard(pool),
                                  health_resend=health_resend)
            server.start()
            servers[name] = server
    except BaseException:
        for server in servers.values():
            server.stop(0)
        raise
    return servers
