"""The kubelet-facing gRPC side of one DRA driver: registration, DRA node service (v1 and
v1beta1) and device health (v1 and v1alpha1), on unix sockets under the kubelet root dir.

Start order (the kubelet dials the DRA socket as soon as it sees the registration socket):
stale sockets removed -> DRA server listening -> registration server listening. Stop order is
the reverse, registration first, so the kubelet stops sending calls before the service goes.
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

import grpc

from sriovdra.claim import ClaimRef
from sriovdra.driver.core import Driver
from sriovdra.model import DeviceHealth
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

log = logging.getLogger(__name__)

# Advertised in GetInfo; v1 first: a 1.34+ kubelet takes the first token it supports.
SUPPORTED_VERSIONS = ["v1.DRAPlugin", "v1beta1.DRAPlugin", "v1.DRAResourceHealth", "v1alpha1.DRAResourceHealth"]
MAX_SOCKET_PATH = 107  # sun_path is 108 bytes with the terminating NUL
HEALTH_TIMEOUT_SECONDS = 30
HEALTH_RESEND_SECONDS = 10


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


# --- DRA node service ------------------------------------------------------------------------


def _dra_servicer(driver: Driver, pb2, base: type):
    """A servicer for one DRA API version; v1 and v1beta1 differ only in Device.share_id."""
    has_share_id = "share_id" in pb2.Device.DESCRIPTOR.fields_by_name

    class Servicer(base):
        def NodePrepareResources(self, request, context):
            refs = [ClaimRef(namespace=c.namespace, name=c.name, uid=c.uid) for c in request.claims]
            started = time.monotonic()
            outcomes = driver.prepare(refs)
            response = pb2.NodePrepareResourcesResponse()
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
            refs = [ClaimRef(namespace=c.namespace, name=c.name, uid=c.uid) for c in request.claims]
            errors = driver.unprepare(refs)
            response = pb2.NodeUnprepareResourcesResponse()
            for ref in refs:
                entry = response.claims[ref.uid]
                if errors[ref.uid]:
                    entry.error = errors[ref.uid]
                    log.warning("unprepare %s: %s", ref, errors[ref.uid])
            return response

    return Servicer()


# --- health ----------------------------------------------------------------------------------


class HealthBoard:
    """The latest health of every device; streams wake up when it changes."""

    def __init__(self, pool: str) -> None:
        self.pool = pool
        self._cond = threading.Condition()
        self._devices: list[DeviceHealth] = []
        self._version = 0
        self._wakes = 0
        self._closed = False

    def update(self, devices: list[DeviceHealth]) -> None:
        with self._cond:
            if devices != self._devices:
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
                if woken:
                    continue  # some stream was cancelled: re-check ours
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

    def __init__(self, driver: Driver, sockets: PluginSockets, board: HealthBoard,
                 health_resend: float = HEALTH_RESEND_SECONDS, workers: int = 8) -> None:
        self.driver, self.sockets, self.board = driver, sockets, board
        self.registered = threading.Event()
        self.registration_error = ""
        # Health streams each hold a thread; the cap keeps `workers - MAX_HEALTH_STREAMS` for prepare.
        self._dra = grpc.server(futures.ThreadPoolExecutor(max_workers=workers + MAX_HEALTH_STREAMS,
                                                           thread_name_prefix="dra"))
        streams = threading.Semaphore(MAX_HEALTH_STREAMS)
        dra_v1_pb2_grpc.add_DRAPluginServicer_to_server(
            _dra_servicer(driver, dra_v1_pb2, dra_v1_pb2_grpc.DRAPluginServicer), self._dra)
        dra_v1beta1_pb2_grpc.add_DRAPluginServicer_to_server(
            _dra_servicer(driver, dra_v1beta1_pb2, dra_v1beta1_pb2_grpc.DRAPluginServicer), self._dra)
        health_v1_pb2_grpc.add_DRAResourceHealthServicer_to_server(
            _health_servicer(board, health_v1_pb2, health_v1_pb2_grpc.DRAResourceHealthServicer, health_resend,
                             streams), self._dra)
        health_v1alpha1_pb2_grpc.add_DRAResourceHealthServicer_to_server(
            _health_servicer(board, health_v1alpha1_pb2, health_v1alpha1_pb2_grpc.DRAResourceHealthServicer,
                             health_resend, streams), self._dra)
        self._reg = grpc.server(futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="reg"))
        pluginregistration_pb2_grpc.add_RegistrationServicer_to_server(
            _Registration(driver.s.driver, sockets.dra, self._on_status), self._reg)

    def _on_status(self, registered: bool, error: str) -> None:
        if registered:
            log.info("kubelet registered %s", self.driver.s.driver)
            self.registration_error = ""
            self.registered.set()
        else:
            log.error("kubelet rejected %s: %s", self.driver.s.driver, error)
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
