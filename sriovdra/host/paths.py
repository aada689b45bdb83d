"""Where the host's files are: every read of sysfs, /dev and host files goes through HostPaths.

Tests and demos point these at a fake host tree; a containerised doctor points host_root at
the host's root mounted into the container.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

DEFAULT_HOST_ROOT = "/"
# Written by sriovdra.fakehost at a fake host's root and its sysfs root: a tree with no kernel behind it
FAKE_HOST_MARKER = ".sriovdra-fakehost"


@dataclass(frozen=True)
class HostPaths:
    sysfs: str = "/sys"
    dev: str = "/dev"
    root: str = DEFAULT_HOST_ROOT  # for /proc, /etc, /var/lib/kubelet, ...

    @classmethod
    def resolve(cls, host_root: str | None = None, sysfs_root: str | None = None,
                dev_root: str | None = None) -> HostPaths:
        """sysfs and dev default to <host_root>/sys and <host_root>/dev."""
        root = os.path.abspath(host_root or DEFAULT_HOST_ROOT)
        return cls(
            sysfs=os.path.abspath(sysfs_root) if sysfs_root else os.path.join(root, "sys"),
            dev=os.path.abspath(dev_root) if dev_root else os.path.join(root, "dev"),
            root=root,
        )

    def host_file(self, absolute: str) -> str:
        """A path as the node names it (/etc/cdi) -> where to read it here."""
        return os.path.join(self.root, absolute.lstrip("/"))

    def dev_file(self, node_path: str) -> str:
        """/dev/infiniband/uverbs0 -> where that node is under the dev root."""
        rel = os.path.relpath(node_path, "/dev")
        return os.path.join(self.dev, rel)
