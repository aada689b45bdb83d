"""Early registration: with --drivers the plugin sockets listen before the driver is loaded; claim
calls wait at the DriverGate until the checkpoint is loaded, a start that fails leaves no socket."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading

import pytest

from sriovdra.claim import ClaimRef
from sriovdra.driver.core import Driver, DriverSettings
from sriovdra.host.discovery import discover
from sriovdra.model import SRIOV_DRIVER
from sriovdra.plugin import server as server_mod
from sriovdra.plugin.server import listen_early
from tests.conftest import eth_pf
from tests.support.claims import ClaimBook, allocated_claim, ref
from tests.support.kubelet import Kubelet

HOST = {"host": {"modules": ["mlx5_core", "vfio_pci"]}, "pfs": [eth_pf(vfs={"total": 8, "count": 2, "offset": 2})]}
VF = "vf-0000-3b-00-2"


@pytest.fixture
def early():
    root = tempfile.mkdtemp(prefix="k", dir="/tmp")  # unix socket paths must stay short
    servers = listen_early(root, (SRIOV_DRIVER,), "node1")
    yield servers[SRIOV_DRIVER], Kubelet(root)
    servers[SRIOV_DRIVER].stop(0)
    shutil.rmtree(root, ignore_errors=True)


def _driver(tmp_path, paths, claims: ClaimBook) -> Driver:
    inv = discover(paths)
    settings = DriverSettings(driver=SRIOV_DRIVER, pool="node1", cdi_dir=str(tmp_path / "cdi"),
                              checkpoint_path=str(tmp_path / "st" / "cp.json"), paths=paths, netdev_attach="none")
    return Driver(settings, inventory=lambda: inv, claims=claims)


def test_the_kubelet_registers_before_the_driver_loads_and_claim_calls_fail_softly(early, monkeypatch):
    server, kubelet = early
    [sock] = kubelet.sockets()
    plugin = kubelet.register(sock)  # GetInfo is answered with no driver behind the socket yet
    assert plugin.name == SRIOV_DRIVER and server.registered.is_set()
    monkeypatch.setattr(server_mod, "GATE_WAIT_SECONDS", 0.01)
    claim = ("default", "c1", "uid-1")
    prep = kubelet.prepare(plugin, [claim]).claims["uid-1"].error
    unprep = kubelet.unprepare(plugin, [claim]).claims["uid-1"].error
    for error in (prep, unprep):
        assert error.startswith(f"driver {SRIOV_DRIVER} is still starting") and error.endswith("try again")


def test_a_prepare_waiting_at_the_gate_goes_on_once_the_driver_is_loaded(early, tmp_path, build_host):
    server, kubelet = early
    plugin = kubelet.register(kubelet.sockets()[0])
    claim = allocated_claim("c1", [VF])
    got = {}
    caller = threading.Thread(target=lambda: got.update(kubelet.prepare(plugin, [ref(claim)]).claims))
    caller.start()  # waits at the gate (GATE_WAIT_SECONDS is far longer than this test)
    _, paths = build_host(HOST)
    driver = _driver(tmp_path, paths, ClaimBook(claim))
    assert driver.start() == []  # the checkpoint loaded: only now may claim calls reach the driver
    server.gate.open(driver)
    caller.join()
    entry = got[claim["metadata"]["uid"]]
    assert entry.error == "" and [d.device_name for d in entry.devices] == [VF]
    assert driver.records[claim["metadata"]["uid"]].claim == ClaimRef(*ref(claim))


def test_health_streams_send_nothing_before_the_first_inventory(early):
    server, _ = early
    assert server.board.wait(-1, 0)[0] == 0  # version 0: nothing known; streams skip it
    server.board.update([])  # a node with no devices is still news once known
    assert server.board.wait(0, 0)[0] == 1


def test_a_start_that_fails_after_listening_leaves_no_socket(make_node, tmp_path):
    node = make_node(HOST)
    missing = tmp_path / "no-policy.yaml"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SRIOVDRA_", "KUBECONFIG", "NODE_NAME"))}
    proc = subprocess.run(node.serve_args("--drivers", SRIOV_DRIVER, "--device-policy", str(missing)),
                          capture_output=True, text=True, env=env, timeout=120)  # a hang guard, not a speed limit
    assert proc.returncode == 2, proc.stderr
    assert f"error: device policy {missing}: no such file" in proc.stderr
    assert node.kubelet.sockets() == []
    assert not os.path.exists(os.path.join(node.kubelet_root, "plugins", SRIOV_DRIVER, "dra.sock"))
