"""The NRI plugin: stays registered with the container runtime for as long as the driver runs.

A background thread connects to the runtime's NRI socket, registers, and serves pod and container
events (sriovdra.nri.session). When the socket is missing or the runtime restarts it reconnects with
exponential backoff; every new connection starts with a Synchronize of all pods the runtime has.
"""

from __future__ import annotations

import logging
import random
import re
import socket
import threading
from dataclasses import dataclass

from sriovdra.nri.api import Container, ContainerAdjustment, Handlers, LinuxDevice, Pod
from sriovdra.nri.session import RuntimeInfo, Session, SessionError
from sriovdra.nri.ttrpc import FramingError

__all__ = ["Container", "ContainerAdjustment", "Handlers", "LinuxDevice", "NriPlugin", "Pod"]

log = logging.getLogger("sriovdra.nri")

DEFAULT_SOCKET = "/var/run/nri/nri.sock"
_INDEX = re.compile(r"[0-9]{2}")  # the runtime rejects anything else (nri api.CheckPluginIndex)


@dataclass
class Backoff:
    """Exponential delays between connection attempts, with jitter so that restarted runtimes are
    not hit by every plugin on the node at the same instant."""

    minimum: float
    maximum: float
    attempts: int = 0

    def next(self) -> float:
        delay = min(self.maximum, self.minimum * 2 ** self.attempts)
        self.attempts = min(self.attempts + 1, 32)  # the cap keeps 2 ** attempts a small float
        return delay * random.uniform(0.75, 1.0)

    def reset(self) -> None:
        self.attempts = 0


class NriPlugin:
    def __init__(self, socket_path: str, handlers: Handlers, name: str = "sriovdra", index: str = "50",
                 backoff_min: float = 0.2, backoff_max: float = 10.0) -> None:
        if not _INDEX.fullmatch(index):
            raise ValueError(f"NRI plugin index must be exactly two digits (00-99), got {index!r}")
        if not name:
            raise ValueError("NRI plugin name must not be empty")
        if not 0 < backoff_min <= backoff_max:
            raise ValueError(f"need 0 < backoff_min <= backoff_max, got {backoff_min}, {backoff_max}")
        self.socket_path = socket_path
        self.handlers = handlers
        self.name = name
        self.index = index
        self.connected = threading.Event()  # Configure and Synchronize answered; cleared on disconnect
        self.runtime: str | None = None  # "containerd/2.1.9", from the last Configure
        self.connects = 0  # successful registrations
        self._backoff = Backoff(backoff_min, backoff_max)
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._session: Session | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("NRI plugin already started")
        self._thread = threading.Thread(target=self._run, name=f"nri-{self.index}-{self.name}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        with self._lock:
            if self._session is not None:
                self._session.close()
        if self._thread is not None and self._thread is not threading.current_thread():  # stop() from a handler
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("NRI plugin thread did not stop within %.1fs (a handler still running?)", timeout)

    def _run(self) -> None:
        outage = False  # a missing socket is logged once per outage, not per attempt
        while not self._stopping.is_set():
            sock = self._connect(quiet=outage)
            outage = sock is None
            if sock is not None:
                self._serve(sock)
            self._stopping.wait(self._backoff.next())

    def _connect(self, quiet: bool) -> socket.socket | None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(self.socket_path)
        except OSError as e:
            sock.close()
            if not quiet:
                log.warning("NRI socket %s not available (%s); retrying until it is", self.socket_path, e)
            return None
        log.info("connected to NRI socket %s", self.socket_path)
        return sock

    def _serve(self, sock: socket.socket) -> None:
        session = Session(sock, self.handlers, self.name, self.index,
                          on_registered=self._registered, on_ready=self._ready)
        with self._lock:
            if self._stopping.is_set():  # stop() ran between connect and here: it could not close us
                sock.close()
                return
            self._session = session
        try:
            session.run()
            if not self._stopping.is_set():
                log.warning("NRI runtime %s closed the connection", self.runtime or self.socket_path)
        except (SessionError, FramingError, OSError) as e:
            log.warning("NRI connection to %s lost: %s", self.socket_path, e)
        except Exception:  # a bug must not end the thread: the driver would silently stop seeing pods
            log.exception("NRI connection to %s failed unexpectedly", self.socket_path)
        finally:
            with self._lock:
                self._session = None
            self.connected.clear()
            sock.close()
        if session.ready:
            self._backoff.reset()  # it worked: come back fast after a runtime restart

    def _registered(self) -> None:
        self.connects += 1

    def _ready(self, info: RuntimeInfo) -> None:
        self.runtime = str(info)
        self.connected.set()
        log.info("NRI plugin %s-%s registered with %s", self.index, self.name, self.runtime)
