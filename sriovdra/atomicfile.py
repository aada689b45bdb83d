"""Crash-safe file replacement: a reader sees the old file or the new one, never a mix."""

from __future__ import annotations

import os
import tempfile


def write_atomic(path: str, data: bytes, mode: int = 0o644, dir_mode: int = 0o755) -> None:
    """Temp file in the same dir, fsync, chmod, rename over path, fsync the dir. An OSError names path
    (not the temp file, which is removed: a full disk must not be left fuller)."""
    directory = os.path.dirname(path) or "."
    try:
        os.makedirs(directory, mode=dir_mode, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    except OSError as e:
        raise OSError(e.errno, e.strerror, path) from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException as e:
        try:
            remove(tmp, sync=False)
        except OSError:
            pass  # the error that matters is the write's
        if isinstance(e, OSError):
            raise OSError(e.errno, e.strerror, path) from None
        raise
    fsync_dir(directory)


def remove(path: str, sync: bool = True) -> bool:
    """Unlink if present (and fsync the dir); True when something was removed."""
    if not os.path.lexists(path):
        return False  # not even tried: on a read-only file system unlink fails with EROFS for a missing file too
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    if sync:
        fsync_dir(os.path.dirname(path) or ".")
    return True


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
