"""The node-wide lock between serve's claim operations and `sriovdra provision`'s host changes.

An exclusive flock on <state-dir>/host.lock. serve holds it while it prepares or unprepares a claim;
provision holds it while it re-reads serve's checkpoints and writes sriov_numvfs, and while it
re-reads them and rebinds one VF, so that no claim can start on a VF between provision's check
and its change.

flock belongs to an open file description: two opens of the same file in one process would
block each other. Every user of one path in a process therefore shares one HostLock (for_path),
which is re-entrant (serve's network attach holds the claim operations of several drivers at once).
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

HOST_LOCK = "host.lock"


def host_lock_path(state_dir: str) -> str:
    return os.path.join(state_dir, HOST_LOCK)


class HostLock:
    _instances: dict[str, HostLock] = {}  # one per path per process: see the module docstring
    _instances_lock = threading.Lock()

    def __init__(self, path: str) -> None:
        self.path = path
        self._mutex = threading.RLock()
        self._depth = 0
        self._file = None

    @classmethod
    def for_path(cls, path: str) -> HostLock:
        key = os.path.abspath(path)
        with cls._instances_lock:
            lock = cls._instances.get(key)
            if lock is None:
                lock = cls._instances[key] = cls(key)
            return lock

    @classmethod
    def of_state_dir(cls, state_dir: str) -> HostLock:
        return cls.for_path(host_lock_path(state_dir))

    @contextmanager
    def held(self) -> Iterator[None]:
        """Exclusive across processes (flock) and threads; re-entrant in the thread that holds it."""
        with self._mutex:
            if self._depth == 0:
                os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
                # 0600 like the checkpoints beside it: nobody else gets to hold (or block) the host's lock
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
                f = os.fdopen(fd, "a")  # noqa: SIM115 - kept open while held
                try:
                    fcntl.flock(f, fcntl.LOCK_EX)
                except BaseException:
                    f.close()
                    raise
                self._file = f
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if self._depth == 0 and self._file is not None:
                    fcntl.flock(self._file, fcntl.LOCK_UN)
                    self._file.close()
                    self._file = None
