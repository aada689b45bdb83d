"""Low-level sysfs reads that never raise: a failure becomes a Problem and a None value.

Optional files (a property the device may not have) are silent when absent; expected files
record a Problem so that `discover` can say what it could not read.
"""

from __future__ import annotations

import errno
import os
import stat

from sriovdra.model import Problem

# Reading these returns EINVAL/ENOTSUPP/ENODEV when the link is down or the driver has no
# answer: that is a value ("unknown"), not a problem.
_QUIET_ERRNOS = {errno.EINVAL, errno.EOPNOTSUPP, errno.ENODEV, errno.ENXIO, 524}  # 524: ENOTSUPP


class Sysfs:
    def __init__(self, root: str) -> None:
        self.root = root.rstrip("/") or "/"
        self.problems: list[Problem] = []

    def path(self, rel: str) -> str:
        return f"{self.root}/{rel}"

    def exists(self, rel: str) -> bool:
        return os.path.exists(self.path(rel))

    def _problem(self, rel: str, message: str) -> None:
        self.problems.append(Problem(path=self.path(rel), message=message))

    def read(self, rel: str, *, expected: bool = True) -> str | None:
        """The file's text without the trailing newline, or None."""
        # os.open/os.read: a third of the cost of open() on the 24k reads of a large node.
        try:
            # O_NONBLOCK: a FIFO (or a tty) where an attribute should be must not hang discovery
            fd = os.open(f"{self.root}/{rel}", os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
            try:
                raw = os.read(fd, 65536)
                if not raw and not stat.S_ISREG(os.fstat(fd).st_mode):  # checked only when empty: cheap
                    self._problem(rel, "not a regular file")
                    return None
            finally:
                os.close(fd)
        except FileNotFoundError:
            if expected:
                self._problem(rel, "missing")
            return None
        except OSError as e:
            if e.errno not in _QUIET_ERRNOS:
                self._problem(rel, e.strerror or str(e))
            return None
        text = raw.decode("utf-8", errors="replace").strip()
        if "\x00" in text:
            self._problem(rel, "contains NUL bytes")
            return None
        return text

    def read_int(self, rel: str, *, expected: bool = True, base: int = 10) -> int | None:
        text = self.read(rel, expected=expected)
        if text is None:
            return None
        try:
            return int(text, base)
        except ValueError:
            self._problem(rel, f"expected an integer, got {text[:40]!r}")
            return None

    def read_hex_id(self, rel: str, *, expected: bool = True) -> str | None:
        """0x15b3 -> 15b3; anything that is not hex is a problem."""
        text = self.read(rel, expected=expected)
        if text is None:
            return None
        value = text.lower().removeprefix("0x")
        if not value or any(c not in "0123456789abcdef" for c in value):
            self._problem(rel, f"expected a hex ID, got {text[:40]!r}")
            return None
        return value

    def listdir(self, rel: str, *, expected: bool = False) -> list[str]:
        try:
            return sorted(os.listdir(self.path(rel)))
        except FileNotFoundError:
            if expected:
                self._problem(rel, "missing")
            return []
        except OSError as e:
            self._problem(rel, e.strerror or str(e))
            return []

    def link_name(self, rel: str) -> str | None:
        """The basename a symlink points to (driver -> mlx5_core), None if absent."""
        target = self.link_target(rel)
        return os.path.basename(target) if target is not None else None

    def link_target(self, rel: str) -> str | None:
        """The raw target of a symlink, None if absent or not a link."""
        try:
            return os.readlink(self.path(rel))
        except FileNotFoundError:
            return None
        except OSError as e:
            self._problem(rel, e.strerror or str(e))
            return None
