"""The device policy file of `serve --device-policy`: read at start, then watched for changes.

Watching is polling the file's content (a few hundred bytes, every 2 s), not inotify: a ConfigMap
volume is updated by the kubelet's atomic writer, which writes a new timestamped directory and
renames a `..data` symlink onto it; a watch on the file follows the old inode and dies with the old
directory, and mtimes say nothing about which directory the path resolves to now. Reading the
path again always sees the current content, and compares cheaply.

Reload rules: a new valid policy replaces the current one and on_change() is called (the caller
republishes); an invalid one is logged naming the field and the last good policy stays; a removed
file is logged and the last good policy stays (a vanished ConfigMap must not suddenly publish the
devices an admin excluded; an empty `rules: []` policy is how to go back to publishing everything).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from sriovdra.policy import DevicePolicy, PolicyError, load_policy

log = logging.getLogger(__name__)

POLL_SECONDS = 2.0
MAX_BYTES = 1 << 20  # a ConfigMap holds at most 1 MiB


class PolicyFileError(Exception):
    """The policy file cannot be used; str() names the file and the field."""


def read_policy(path: str, check: Callable[[DevicePolicy], None] | None = None) -> DevicePolicy:
    """Read, decode and (with check) validate a policy file; PolicyFileError says why not."""
    return _decode(path, _read(path), check)


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            content = f.read(MAX_BYTES + 1)
    except FileNotFoundError as e:
        raise PolicyFileError(f"device policy {path}: no such file") from e
    except OSError as e:
        raise PolicyFileError(f"device policy {path}: cannot read it: {e.strerror or e}") from e
    if len(content) > MAX_BYTES:
        raise PolicyFileError(f"device policy {path}: larger than {MAX_BYTES} bytes")
    return content


def _decode(path: str, content: bytes, check: Callable[[DevicePolicy], None] | None) -> DevicePolicy:
    try:
        policy = load_policy(content)
        if check is not None:
            check(policy)
    except PolicyError as e:
        raise PolicyFileError(f"device policy {path}: {e}") from e
    return policy


class PolicyFile:
    """The current policy from `path`; load errors at construction raise PolicyFileError.

    check(policy) raises PolicyError when a policy cannot be applied (e.g. the attribute limit on
    the current inventory); on_change() runs in the watch thread after a new policy is adopted."""

    def __init__(self, path: str, check: Callable[[DevicePolicy], None] | None = None,
                 on_change: Callable[[], None] | None = None, interval: float = POLL_SECONDS) -> None:
        self.path = path
        self.check = check
        self.on_change = on_change
        self.interval = interval
        self._seen: bytes | str = _read(path)  # the content last looked at, or why it could not be read
        self.current: DevicePolicy = _decode(path, self._seen, check)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def poll(self) -> bool:
        """Look at the file once; True when a new policy was adopted."""
        try:
            content: bytes | str = _read(self.path)
        except PolicyFileError as e:
            content = str(e)
        if content == self._seen:
            return False  # unchanged, or the same problem as last time: said once already
        self._seen = content
        if isinstance(content, str):
            log.error("%s; keeping the last good policy (%s)", content, self.current.summary())
            return False
        try:
            policy = _decode(self.path, content, self.check)
        except PolicyFileError as e:
            log.error("%s; keeping the last good policy (%s)", e, self.current.summary())
            return False
        if policy == self.current:
            return False  # reformatted, same meaning
        self.current = policy
        log.info("device policy %s reloaded: %s", self.path, policy.summary())
        if self.on_change is not None:
            self.on_change()
        return True

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="device-policy", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.poll()
            except Exception:  # noqa: BLE001 - a failed republish must not end the watching
                log.exception("device policy %s: applying the change failed", self.path)
