"""Network namespaces by file: open one safely, and run code inside one without moving the caller.

A netlink socket stays bound to the namespace it was created in, so "a socket in the pod's netns"
means: create it in a short-lived thread that has entered that netns (namespaces are per thread),
then use it from anywhere. No process is forked and the caller's threads never change netns.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import threading
from collections.abc import Callable
from typing import TypeVar

CLONE_NEWNET = 0x40000000  # include/uapi/linux/sched.h
_NS_GET_NSTYPE = 0xB703  # ioctl(nsfs fd): which kind of namespace the file is

T = TypeVar("T")


class EnterError(OSError):
    """setns() into the namespace failed (the file was opened, the thread could not enter it)."""


def open_netns_fd(path: str) -> int:
    """An fd on an existing network namespace file (never creates one); OSError(EINVAL) for anything else."""
    if not os.path.isabs(path):
        raise OSError(errno.EINVAL, f"not an absolute path: {path!r}")
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        kind = fcntl.ioctl(fd, _NS_GET_NSTYPE)
    except OSError:
        kind = None  # ENOTTY: an ordinary file, e.g. a netns mount point left after the netns was deleted
    if kind != CLONE_NEWNET:
        os.close(fd)
        raise OSError(errno.EINVAL, "not a network namespace")
    return fd


def _enter(fd: int) -> None:
    if hasattr(os, "setns"):  # Python 3.12+
        os.setns(fd, CLONE_NEWNET)
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def call_in(fd: int, fn: Callable[[], T]) -> T:
    """fn() run in a short-lived thread that first enters the netns behind fd; EnterError when it cannot.
    Whatever fn creates (a socket) keeps the netns it was created in."""
    result: dict[str, object] = {}

    def run() -> None:
        try:
            _enter(fd)
        except OSError as e:
            result["error"] = EnterError(e.errno, e.strerror)
            return
        try:
            result["value"] = fn()
        except BaseException as e:  # handed to the caller's thread
            result["error"] = e

    thread = threading.Thread(target=run, name="sriovdra-netns", daemon=True)
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]  # type: ignore[misc]
    return result["value"]  # type: ignore[return-value]
