"""Real network namespaces and veth pairs: a veth end stands in for a VF netdev.

Skipped unless we are root and the kernel lets us create a veth pair. Names start with "sdb"
(links) and "sdb-" (namespaces) so that concurrent test runs on a shared machine never collide.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import time

import pytest
from pyroute2 import IPRoute

from sriovdra.host.netlink import Netlink


def _unavailable() -> str | None:
    if os.geteuid() != 0:
        return "needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN) to create veth pairs and network namespaces"
    name = f"sdb{secrets.token_hex(4)}"
    try:
        with IPRoute() as ipr:
            ipr.link("add", ifname=name, kind="veth", peer=f"{name}p")
            ipr.link("del", ifname=name)
    except Exception as e:  # any failure means: no veth here
        return f"cannot create a veth pair: {e}"
    return None


_REASON = _unavailable()


@pytest.fixture(autouse=True)
def _needs_netns():
    if _REASON:
        pytest.skip(_REASON)


def unique(prefix: str = "sdb") -> str:
    return f"{prefix}{secrets.token_hex(4)}"


@pytest.fixture
def veth():
    """(vf, peer): `vf` plays the VF netdev; its peer stays in the root netns, up, so the VF gets a carrier."""
    vf = unique()
    peer = f"{vf}p"
    with IPRoute() as ipr:
        ipr.link("add", ifname=vf, kind="veth", peer=peer)
        ipr.link("set", index=ipr.link_lookup(ifname=peer)[0], state="up")
    yield vf, peer
    with IPRoute() as ipr:
        for name in (vf, peer):
            for index in ipr.link_lookup(ifname=name):
                ipr.link("del", index=index)


class PodNetns:
    """A network namespace bind-mounted on a file, like a runtime's pod sandbox netns."""

    def __init__(self, path: str) -> None:
        self.path = path
        open(path, "w").close()
        subprocess.run(["unshare", f"--net={path}", "true"], check=True)

    def delete(self) -> None:
        if os.path.ismount(self.path):
            subprocess.run(["umount", self.path], check=True)
        if os.path.exists(self.path):
            os.unlink(self.path)


@pytest.fixture
def pod(tmp_path):
    ns = PodNetns(str(tmp_path / unique("sdb-")))
    yield ns
    ns.delete()


@pytest.fixture
def nl():
    netlink = Netlink(temp_prefix="sdbt")  # temporary names in the shared-machine namespace
    yield netlink
    netlink.close()


def in_pod(pod: PodNetns) -> IPRoute:
    return IPRoute(netns=pod.path, flags=0)


def wait_gone(name: str, timeout: float = 5.0) -> bool:
    """The kernel destroys a dead netns's veth asynchronously (cleanup_net runs from a workqueue)."""
    deadline = time.monotonic() + timeout
    with IPRoute() as ipr:
        while time.monotonic() < deadline:
            if not ipr.link_lookup(ifname=name):
                return True
            time.sleep(0.05)
    return False
