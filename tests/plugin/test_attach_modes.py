"""serve's netdev modes without a runtime: vfio-pci rebinding, CDI netDevices, and failing closed
when NRI is not connected (the runtime tier proves NRI attach itself)."""

from __future__ import annotations

import json
import os
import signal

import grpc
import pytest

from sriovdra.host.discovery import discover
from sriovdra.host.paths import HostPaths
from sriovdra.model import SRIOV_DRIVER
from tests.conftest import eth_pf
from tests.support.claims import allocated_claim, ref, vf_config

HOST = {"host": {"iommu": True, "modules": ["mlx5_core", "mlx5_ib", "ib_uverbs", "vfio_pci"]},
        "pfs": [eth_pf(vfs={"total": 8, "count": 2, "offset": 2})]}
VF, VF_PCI = "vf-0000-3b-00-2", "0000:3b:00.2"


def _driver_of(node, pci: str) -> str | None:
    fn = discover(HostPaths(sysfs=node.sysfs, dev=node.dev, root=node.host_root)).function(pci)
    return fn.driver


def _specs(node) -> list[str]:
    return os.listdir(node.cdi_dir) if os.path.isdir(node.cdi_dir) else []


def _prepare(node, claim):
    plugin = node.plugins()[SRIOV_DRIVER]
    return node.kubelet.prepare(plugin, [ref(claim)]).claims[claim["metadata"]["uid"]]


def _unprepare(node, claim):
    plugin = node.plugins()[SRIOV_DRIVER]
    return node.kubelet.unprepare(plugin, [ref(claim)]).claims[claim["metadata"]["uid"]]


@pytest.fixture
def make(make_node):
    nodes = []

    def _make(*flags, env=None):
        n = make_node(HOST)
        n.start(*flags, env=env)
        nodes.append(n)
        return n

    yield _make
    for n in nodes:
        n.stop()


def test_vfio_pci_rebinds_at_prepare_and_restores_at_unprepare(make):
    node = make("--netdev-attach", "nri", "--nri-socket", "/nonexistent/nri.sock")
    claim = node.api.add_claim(allocated_claim("dpdk", [VF], configs=[vf_config(driver="vfio-pci")]))
    entry = _prepare(node, claim)
    assert entry.error == ""  # vfio devices have no netdev: NRI is not needed
    assert _driver_of(node, VF_PCI) == "vfio-pci"
    spec = json.load(open(os.path.join(node.cdi_dir, f"{SRIOV_DRIVER}-vf_{claim['metadata']['uid']}.json")))
    paths = [n["path"] for n in spec["devices"][0]["containerEdits"]["deviceNodes"]]
    assert "/dev/vfio/vfio" in paths and any(p.startswith("/dev/vfio/") and p[10:].isdigit() for p in paths)
    record = json.load(open(os.path.join(node.state_dir, f"{SRIOV_DRIVER}.checkpoint.json")))
    [dev] = next(iter(record["claims"].values()))["devices"]
    assert dev["original_driver"] == "mlx5_core"
    assert _unprepare(node, claim).error == ""
    assert _driver_of(node, VF_PCI) == "mlx5_core"


def test_a_crash_after_the_rebind_is_rolled_back_at_restart(make):
    node = make(env={"SRIOVDRA_TEST_FAULTS": "prepare.after-bind"})
    claim = node.api.add_claim(allocated_claim("dpdk", [VF], configs=[vf_config(driver="vfio-pci")]))
    with pytest.raises(grpc.RpcError):
        _prepare(node, claim)
    assert node.proc.wait(timeout=10) == -signal.SIGKILL
    node.proc = None
    assert _driver_of(node, VF_PCI) == "vfio-pci"  # the kill left it rebound
    node.start()
    node.plugins()  # registered: the start (and its recovery) is over; the killed one's socket was stale
    assert _driver_of(node, VF_PCI) == "mlx5_core"  # rolled back at start
    assert _specs(node) == []


def test_nri_mode_fails_closed_while_not_connected(make):
    node = make("--netdev-attach", "nri", "--nri-socket", "/nonexistent/nri.sock")
    claim = node.api.add_claim(allocated_claim("net", [VF]))
    entry = _prepare(node, claim)
    assert "cannot be attached to the pod" in entry.error and "/nonexistent/nri.sock" in entry.error
    assert "sriovdra doctor" in entry.error
    assert _specs(node) == []


def test_cdi_mode_writes_a_separate_netdevices_spec(make):
    node = make("--netdev-attach", "cdi")
    claim = node.api.add_claim(allocated_claim("net", [VF], configs=[vf_config(ifName="fast0")]))
    uid = claim["metadata"]["uid"]
    entry = _prepare(node, claim)
    assert entry.error == ""
    assert list(entry.devices[0].cdi_device_ids) == [f"{SRIOV_DRIVER}/vf={VF}-{uid}",
                                                     f"{SRIOV_DRIVER}/netdev={VF}-{uid}"]
    net = json.load(open(os.path.join(node.cdi_dir, f"{SRIOV_DRIVER}-netdev_{uid}.json")))
    assert net["cdiVersion"] == "1.1.0"
    assert net["devices"][0]["containerEdits"] == {"netDevices": [{"hostInterfaceName": "ens1f0v0",
                                                                   "name": "fast0"}]}
    main = json.load(open(os.path.join(node.cdi_dir, f"{SRIOV_DRIVER}-vf_{uid}.json")))
    assert main["cdiVersion"] != "1.1.0" and "netDevices" not in json.dumps(main)
    assert _unprepare(node, claim).error == ""
    assert os.listdir(node.cdi_dir) == []


def test_cdi_mode_refuses_settings_the_runtime_cannot_apply(make):
    node = make("--netdev-attach", "cdi")
    claim = node.api.add_claim(allocated_claim("net", [VF], configs=[vf_config(ips=["192.0.2.1/24"])]))
    entry = _prepare(node, claim)
    assert f"device {VF}: ips need --netdev-attach nri" in entry.error
