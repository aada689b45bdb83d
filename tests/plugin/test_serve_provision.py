"""serve --num-vfs / --provision-config: VFs made at start, before the plugins load, and published."""

from __future__ import annotations

import json
import os

import pytest

from sriovdra.checkpoint import PREPARED, CheckpointStore, ClaimRecord, PreparedDevice
from sriovdra.claim import ClaimRef
from sriovdra.host.discovery import discover
from sriovdra.host.paths import HostPaths
from sriovdra.model import IB_DRIVER, SRIOV_DRIVER
from tests.conftest import REPO, eth_pf, ib_pf
from tests.support.waiting import wait

HOST = {"pfs": [eth_pf(vfs={"total": 8, "count": 0, "offset": 2}),
                ib_pf(vfs={"total": 8, "count": 0, "guids": "zero"})]}


def _devices(node, driver: str) -> dict[str, dict]:
    slices = node.api.slices(driver)
    return {d["name"]: d for s in slices for d in s["spec"]["devices"]}


@pytest.fixture
def stopping(make_node):
    nodes = []

    def _make(spec):
        node = make_node(spec)
        nodes.append(node)
        return node

    yield _make
    for node in nodes:
        node.stop()


def test_vfs_are_made_at_start_and_published(stopping):
    node = stopping(HOST)
    node.start("--num-vfs", "4", sockets=2)
    vfs = wait(lambda: len(_devices(node, SRIOV_DRIVER)) == 4 and _devices(node, SRIOV_DRIVER), what="VF slice")
    assert sorted(vfs) == ["vf-0000-3b-00-2", "vf-0000-3b-00-3", "vf-0000-3b-00-4", "vf-0000-3b-00-5"]
    ib = wait(lambda: len(_devices(node, IB_DRIVER)) == 5 and _devices(node, IB_DRIVER), what="IB slice")
    attrs = ib["ib-0000-5e-00-1-p1"]["attributes"]
    assert attrs["nodeGUID"] == {"string": "0200:0103:0001:0002"}  # derived from the PF's GUID
    assert attrs["portGUID"] == {"string": "fe80:0000:0000:0000:0200:0103:0001:0002"}
    log = node.log()
    assert "provisioning: 0000:3b:00.0 (ens1f0): 0 VFs -> 4 (created)" in log
    assert "provisioning: 0000:5e:00.0 ibp94s0: 4/4 PCI, 4/4 bound, 4/4 netdev, 4/4 RDMA" in log


def test_drivers_restrict_which_pfs_get_vfs(stopping):
    node = stopping(HOST)
    node.start("--num-vfs", "20", "--drivers", IB_DRIVER)  # clamped to sriov_totalvfs
    wait(lambda: len(_devices(node, IB_DRIVER)) == 9, what="IB slice")
    inv = discover(HostPaths.resolve(node.host_root))
    assert [(f.address, f.sriov_numvfs) for f in inv.pfs] == [("0000:3b:00.0", 0), ("0000:5e:00.0", 8)]


def test_a_pf_with_claimed_vfs_is_left_alone_and_serving_goes_on(stopping):
    node = stopping({"pfs": [eth_pf(vfs={"total": 8, "count": 2, "offset": 2}), ib_pf(vfs={"total": 8, "count": 0})]})
    rec = ClaimRecord(claim=ClaimRef("default", "c1", "uid-1"), state=PREPARED,
                      devices=[PreparedDevice(request="vf", pool="node1", device="vf-0000-3b-00-2",
                                              pci_address="0000:3b:00.2", cdi_ids=[], config={})])
    os.makedirs(node.state_dir, exist_ok=True)
    CheckpointStore(os.path.join(node.state_dir, f"{SRIOV_DRIVER}.checkpoint.json")).save({"uid-1": rec})
    node.start("--num-vfs", "4", sockets=2)
    wait(lambda: len(_devices(node, IB_DRIVER)) == 5, what="IB slice with the new VFs")
    # the two drivers publish independently: wait for the SR-IOV slice too, then check it kept its 2 VFs
    vfs = wait(lambda: _devices(node, SRIOV_DRIVER), what="SR-IOV slice")
    assert sorted(vfs) == ["vf-0000-3b-00-2", "vf-0000-3b-00-3"]
    log = node.log()
    assert "ERROR" in log and ("claims hold some: vf-0000-3b-00-2 (0000:3b:00.2) by claim default/c1 uid uid-1 "
                               "[prepared]") in log


def test_a_provision_config_file(stopping, tmp_path):
    config = tmp_path / "provision.yaml"
    config.write_text(json.dumps({"pfs": [{"pf": "ens1f0", "numVFs": 3}]}))
    node = stopping(HOST)
    node.start("--provision-config", str(config), sockets=2)
    assert sorted(wait(lambda: len(_devices(node, SRIOV_DRIVER)) == 3 and _devices(node, SRIOV_DRIVER),
                       what="VF slice")) == ["vf-0000-3b-00-2", "vf-0000-3b-00-3", "vf-0000-3b-00-4"]


def test_a_vm_is_not_touched(stopping):
    import yaml

    with open(REPO / "demo" / "hosts" / "infiniband-vm.yaml") as f:
        node = stopping(yaml.safe_load(f))
    before = discover(HostPaths.resolve(node.host_root)).to_dict()
    node.start("--num-vfs", "4")
    wait(lambda: len(_devices(node, IB_DRIVER)) == 2, what="the passthrough VFs' slice")
    assert "provisioning: skipped, this is a VM" in node.log()
    assert discover(HostPaths.resolve(node.host_root)).to_dict() == before
