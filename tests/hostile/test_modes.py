"""What serve creates is not open to other local users, whatever the umask it inherits: sockets
0600, state dir 0700, checkpoints and host.lock 0600, CDI specs not group/world writable (0644:
the runtime reads them), and the probe server bound only where it was asked (127.0.0.1)."""

from __future__ import annotations

import os
import socket
import stat

import pytest

from sriovdra import fakehost
from sriovdra.checkpoint import checkpoint_path
from sriovdra.host.hostlock import HostLock, host_lock_path
from sriovdra.model import SRIOV_DRIVER
from tests.conftest import eth_pf
from tests.support.claims import allocated_claim, ref
from tests.support.node import NodeFactory


def _mode(path: str) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def node(tmp_path):
    host = fakehost.build({"host": {"modules": ["mlx5_core"]}, "pfs": [eth_pf()]}, str(tmp_path / "host"))
    factory = NodeFactory(tmp_path)
    n = factory.make(host.root, host.sysfs, host.dev)
    old = os.umask(0)  # serve inherits it: every restrictive mode below must be the product's own doing
    try:
        n.port = _free_port()
        n.start("--probe-address", f"127.0.0.1:{n.port}", sockets=1)
    finally:
        os.umask(old)
    yield n
    n.stop()
    factory.close()


def _listening_tcp(pid: int) -> list[str]:
    """Local addresses (hex, as /proc/net/tcp* shows them) of the process's listening TCP sockets."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    out = []
    for table in ("tcp", "tcp6"):
        with open(f"/proc/{pid}/net/{table}") as f:
            for line in f.readlines()[1:]:
                cols = line.split()
                if cols[3] == "0A" and cols[9] in inodes:  # 0A: LISTEN
                    out.append(cols[1])
    return out


def test_sockets_state_checkpoint_and_specs_are_private(node):
    plugin = node.plugins()[SRIOV_DRIVER]
    for sock in node.kubelet.sockets() + [plugin.endpoint]:
        assert stat.S_ISSOCK(os.lstat(sock).st_mode) and _mode(sock) == 0o600, (sock, oct(_mode(sock)))
    claim = node.api.add_claim(allocated_claim("m1", ["vf-0000-3b-00-2"]))
    resp = node.kubelet.prepare(plugin, [ref(claim)])
    assert resp.claims[claim["metadata"]["uid"]].error == ""
    assert _mode(node.state_dir) == 0o700
    cp = checkpoint_path(node.state_dir, SRIOV_DRIVER)
    assert _mode(cp) == 0o600
    for name in os.listdir(node.state_dir):  # whatever else lives there (locks, temp files)
        assert _mode(os.path.join(node.state_dir, name)) & 0o077 == 0, (name, oct(_mode(os.path.join(node.state_dir,
                                                                                                      name))))
    [spec] = os.listdir(node.cdi_dir)
    assert _mode(os.path.join(node.cdi_dir, spec)) & 0o022 == 0  # readable by the runtime, writable by us only
    assert _mode(node.cdi_dir) & 0o022 == 0
    node.kubelet.unprepare(plugin, [ref(claim)])


def test_probe_server_listens_only_where_asked(node):
    addresses = _listening_tcp(node.proc.pid)
    assert addresses == [f"0100007F:{node.port:04X}"], addresses  # 127.0.0.1:<port>, nothing else


def test_host_lock_is_private(tmp_path):
    state = str(tmp_path / "state")
    old = os.umask(0)
    try:
        with HostLock.of_state_dir(state).held():
            pass
    finally:
        os.umask(old)
    assert _mode(state) == 0o700 and _mode(host_lock_path(state)) == 0o600
