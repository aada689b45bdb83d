"""Writing kernel attributes in sysfs: the real kernel, or the fake kernel of a fake host tree.

Every sysfs write of the product (driver binding, sriov_numvfs, sriov_drivers_autoprobe) goes
through sysfs_writer(paths), so that a fake host tree (FAKE_HOST_MARKER on its sysfs root), which
has no kernel behind its files, gets sriovdra.fakehost.FakeKernel playing the kernel's part.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from sriovdra.host.paths import FAKE_HOST_MARKER, HostPaths

if TYPE_CHECKING:
    from sriovdra.fakehost import FakeKernel

Writer = Callable[[str, str], None]  # (absolute sysfs path, value)


def is_fake(paths: HostPaths) -> bool:
    return os.path.exists(os.path.join(paths.sysfs, FAKE_HOST_MARKER))


def fake_kernel(paths: HostPaths) -> FakeKernel | None:
    """The fake kernel of a fake host tree, None for a real sysfs."""
    if not is_fake(paths):
        return None
    from sriovdra.fakehost import FakeKernel  # test and demo trees only

    return FakeKernel(paths.sysfs, paths.dev)


def sysfs_writer(paths: HostPaths) -> Writer:
    """Real sysfs, or the fake kernel for a fake host tree."""
    kernel = fake_kernel(paths)
    return kernel.write if kernel is not None else write_sysfs


def write_sysfs(path: str, value: str) -> None:
    # One write() per attribute: sysfs takes the value of the first write and no O_CREAT,
    # so a missing attribute is ENOENT rather than a new file.
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def errno_name(code: int | None) -> str:
    """The errno's name for messages: EOPNOTSUPP, not its Linux alias ENOTSUP that errno.errorcode gives."""
    if code == errno.EOPNOTSUPP:
        return "EOPNOTSUPP"
    return errno.errorcode.get(code or 0, str(code))
