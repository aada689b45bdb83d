"""Discovery on every demo host, every published attribute, and degraded sysfs trees."""

import os
import shutil

import pytest

from sriovdra import model
from sriovdra.host.discovery import DiscoveryError, discover
from sriovdra.host.paths import HostPaths
from sriovdra.model import IB_DRIVER, SRIOV_DRIVER
from tests.conftest import DEMO_HOSTS, eth_pf, ib_pf

SRIOV_ATTRIBUTES = {"vendor", "deviceID", "pfDeviceID", "pciAddress", "PFName", "EswitchMode", "vfID",
                    "pfPciAddress", "linkType", "rdmaCapable", "numaNode", "resource.kubernetes.io/pciBusID",
                    "resource.kubernetes.io/pcieRoot"}
IB_SEED_ATTRIBUTES = {"type", "linkSpeed", "portState", "firmwareVersion", "nodeGUID", "portGUID", "numaNode",
                      "pciAddress", "resource.kubernetes.io/pciBusID", "resource.kubernetes.io/pcieRoot"}


def _devices(inv, driver=None):
    return {d.name: d for d in inv.dra_devices() if driver in (None, d.driver)}


@pytest.mark.parametrize("name", DEMO_HOSTS)
def test_every_device_of_every_demo_host_fits_the_api_limits(demo_inventories, name):
    inv = demo_inventories[name]
    devices = inv.dra_devices()
    assert devices, f"{name} publishes no devices"
    assert inv.problems == []
    assert len({d.name for d in devices}) == len(devices), "device names must be unique on the node"
    for dev in devices:
        assert model.limit_problems(dev) == [], dev.name


def test_ethernet_host_publishes_every_vf_with_the_anchor_attributes(demo_inventories):
    inv = demo_inventories["ethernet-baremetal"]
    assert [pf.address for pf in inv.pfs] == ["0000:01:00.0", "0000:3b:00.0", "0000:3b:00.1", "0000:af:00.0"]
    assert len(inv.vfs) == 16
    devices = _devices(inv)
    assert {d.driver for d in devices.values()} == {SRIOV_DRIVER}
    assert len(devices) == 16
    vf = devices["vf-0000-3b-00-3"]
    assert vf.attributes == {
        "vendor": "15b3", "deviceID": "101e", "pciAddress": "0000:3b:00.3", "vfID": 1, "linkType": "ethernet",
        "rdmaCapable": True, "passthrough": False, "pfDeviceID": "101d", "pfPciAddress": "0000:3b:00.0",
        "PFName": "ens1f0np0", "EswitchMode": "legacy", "numaNode": 0,
        "resource.kubernetes.io/pciBusID": "0000:3b:00.3", "resource.kubernetes.io/pcieRoot": "pci0000:3a",
        "dra.net/numaNode": 0, "k8s.cni.cncf.io/deviceID": "0000:3b:00.3",
    }
    assert SRIOV_ATTRIBUTES <= set(vf.attributes)
    assert vf.netdev == "ens1f0np0v1" and vf.rdma_device == "mlx5_2"


def test_switchdev_pf_names_its_uplink_not_a_representor(demo_inventories):
    inv = demo_inventories["ethernet-baremetal"]
    pf = inv.function("0000:3b:00.1")
    assert pf.eswitch_mode == "switchdev"
    assert len(pf.netdevs) == 5  # uplink + 4 representors
    attrs = _devices(inv)["vf-0000-3b-01-2"].attributes
    assert attrs["PFName"] == "ens1f1np1" and attrs["EswitchMode"] == "switchdev" and attrs["vfID"] == 0


def test_vfio_bound_vf_is_published_without_netdev_or_rdma(demo_inventories):
    inv = demo_inventories["ethernet-baremetal"]
    vf = inv.function("0000:3b:01.1")
    assert vf.driver == "vfio-pci" and vf.netdevs == [] and vf.vf_index == 7
    assert vf.iommu_group is not None and not vf.iommu_group.noiommu
    assert _devices(inv)["vf-0000-3b-01-1"].attributes["rdmaCapable"] is False


def test_intel_vfs_have_no_rdma_and_numa_one(demo_inventories):
    attrs = _devices(demo_inventories["ethernet-baremetal"])["vf-0000-af-02-3"].attributes
    assert attrs["vendor"] == "8086" and attrs["deviceID"] == "1889" and attrs["pfDeviceID"] == "159b"
    assert attrs["rdmaCapable"] is False and attrs["numaNode"] == 1 and attrs["vfID"] == 3


def test_plain_nic_is_listed_but_never_published(demo_inventories):
    inv = demo_inventories["ethernet-baremetal"]
    nic = inv.function("0000:01:00.0")
    assert nic.role == "PF" and not nic.sriov_capable
    assert all(d.pci_address != nic.address for d in inv.dra_devices())


def test_infiniband_host_publishes_pf_and_vf_ports_with_the_seed_attributes(demo_inventories):
    inv = demo_inventories["infiniband-baremetal"]
    devices = _devices(inv, IB_DRIVER)
    assert len(devices) == 10 and set(devices) == {d.name for d in inv.dra_devices()}
    pf = devices["ib-0000-3b-00-0-p1"].attributes
    assert IB_SEED_ATTRIBUTES <= set(pf)
    assert pf["type"] == "PF" and "parentDevice" not in pf
    assert pf["linkSpeed"] == "400Gb/s" and pf["linkWidth"] == "4X"
    assert pf["portState"] == "Active" and pf["physState"] == "LinkUp"
    assert pf["firmwareVersion"] == "28.39.1002"
    assert pf["nodeGUID"] == "0c42:a103:0065:8f2a"
    assert pf["portGUID"] == "fe80:0000:0000:0000:0c42:a103:0065:8f2a"
    assert pf["numaNode"] == 0 and pf["pciAddress"] == "0000:3b:00.0"
    vf = devices["ib-0000-86-00-2-p1"].attributes
    assert vf["type"] == "VF" and vf["parentDevice"] == inv.function("0000:86:00.0").rdma_devices[0].name
    assert vf["numaNode"] == 1 and vf["vfID"] == 1 and vf["pfPciAddress"] == "0000:86:00.0"
    assert devices["ib-0000-86-00-4-p1"].attributes["portState"] == "Down"


def test_infiniband_char_devices_and_port_facts(demo_inventories):
    inv = demo_inventories["infiniband-baremetal"]
    rdma = inv.function("0000:3b:00.0").rdma_devices[0]
    assert rdma.uverbs.path == "/dev/infiniband/uverbs0" and (rdma.uverbs.major, rdma.uverbs.minor) == (231, 192)
    port = rdma.ports[0]
    assert port.umad.path == "/dev/infiniband/umad0" and port.issm.path == "/dev/infiniband/issm0"
    assert port.lid == 5 and port.sm_lid == 1 and port.link_layer == "InfiniBand"
    assert port.rate == "400 Gb/sec (4X NDR)"
    assert inv.rdma_cm.path == "/dev/infiniband/rdma_cm" and (inv.rdma_cm.major, inv.rdma_cm.minor) == (10, 58)
    nodes = {c.path for c in inv.rdma_nodes()}
    assert len(nodes) == 10 * 3 + 1  # uverbs, umad, issm for 10 RDMA devices of one port, and rdma_cm


def test_vm_passthrough_vfs_are_reported_as_vfs(demo_inventories):
    inv = demo_inventories["infiniband-vm"]
    assert inv.host.kind == "vm" and inv.host.hypervisor == "qemu"
    assert sorted(vf.address for vf in inv.vfs) == ["0000:00:08.0", "0000:00:09.0"]
    assert all(vf.passthrough and vf.pf_address is None for vf in inv.vfs)
    devices = _devices(inv)
    assert set(devices) == {"ib-0000-00-08-0-p1", "ib-0000-00-09-0-p1"}
    assert all(d.attributes["type"] == "VF" and d.attributes["passthrough"] for d in devices.values())
    assert inv.function("0000:00:03.0").role == "PF"  # virtio-net


def test_large_host_has_1024_vfs(demo_inventories):
    inv = demo_inventories["large"]
    assert len(inv.vfs) == 1024 and len(inv.pfs) == 8
    devices = inv.dra_devices()
    assert sum(d.driver == SRIOV_DRIVER for d in devices) == 768
    assert sum(d.driver == IB_DRIVER for d in devices) == 2 + 256


def test_missing_sysfs_root_is_an_error_naming_the_path(tmp_path):
    with pytest.raises(DiscoveryError, match=f"{tmp_path}/sys/bus/pci/devices does not exist"):
        discover(HostPaths.resolve(str(tmp_path)))


# --- degraded sysfs: a bad file degrades one field and is reported ----------------------------


@pytest.fixture
def degraded(build_host):
    host, paths = build_host({"pfs": [eth_pf(), ib_pf()]})
    dev = lambda bdf, rel="": os.path.join(host.sysfs, "bus/pci/devices", bdf, rel)  # noqa: E731
    return host, paths, dev


def _problem_paths(inv):
    return {p.path: p.message for p in inv.problems}


def test_missing_vendor_is_reported_and_falls_back_to_the_pf(degraded):
    host, paths, dev = degraded
    os.unlink(dev("0000:3b:00.2", "vendor"))
    inv = discover(paths)
    assert _problem_paths(inv) == {dev("0000:3b:00.2", "vendor"): "missing"}
    assert _devices(inv)["vf-0000-3b-00-2"].attributes["vendor"] == "15b3"


def test_garbage_numa_node_is_reported_and_reads_as_unknown(degraded):
    host, paths, dev = degraded
    with open(dev("0000:3b:00.0", "numa_node"), "w") as f:
        f.write("zzz\n")
    inv = discover(paths)
    assert "expected an integer, got 'zzz'" in _problem_paths(inv)[dev("0000:3b:00.0", "numa_node")]
    assert inv.function("0000:3b:00.0").numa_node == -1


def test_unreadable_file_is_reported_with_the_os_error(degraded):
    host, paths, dev = degraded
    guid = dev("0000:5e:00.0", "infiniband/mlx5_3/node_guid")
    os.unlink(guid)
    os.mkdir(guid)  # reading a directory fails with EISDIR even as root
    inv = discover(paths)
    assert _problem_paths(inv) == {guid: "Is a directory"}
    attrs = _devices(inv)["ib-0000-5e-00-0-p1"].attributes
    assert "nodeGUID" not in attrs and attrs["portState"] == "Active"


def test_driver_that_is_not_a_symlink_is_reported(degraded):
    host, paths, dev = degraded
    os.unlink(dev("0000:3b:00.3", "driver"))
    with open(dev("0000:3b:00.3", "driver"), "w") as f:
        f.write("mlx5_core\n")
    inv = discover(paths)
    assert dev("0000:3b:00.3", "driver") in _problem_paths(inv)
    assert inv.function("0000:3b:00.3").driver is None
    assert "vf-0000-3b-00-3" in _devices(inv)


def test_missing_port_state_and_garbage_rate_degrade_the_port_only(degraded):
    host, paths, dev = degraded
    port = dev("0000:5e:00.0", "infiniband/mlx5_3/ports/1")
    os.unlink(os.path.join(port, "state"))
    with open(os.path.join(port, "rate"), "w") as f:
        f.write("fast\n")
    inv = discover(paths)
    assert set(_problem_paths(inv)) == {os.path.join(port, "state")}
    attrs = _devices(inv)["ib-0000-5e-00-0-p1"].attributes
    assert attrs["portState"] == "Unknown" and "linkSpeed" not in attrs


def test_dangling_links_and_odd_entries_do_not_break_the_inventory(degraded):
    host, paths, dev = degraded
    os.symlink("../../../devices/nowhere", os.path.join(host.sysfs, "bus/pci/devices/not-a-bdf"))
    os.unlink(dev("0000:3b:00.0", "virtfn1"))
    os.symlink("../0000:ff:1f.7", dev("0000:3b:00.0", "virtfn1"))  # dangling
    inv = discover(paths)
    assert "not a PCI address" in _problem_paths(inv)[os.path.join(host.sysfs, "bus/pci/devices/not-a-bdf")]
    assert inv.function("0000:3b:00.3").vf_index is None  # its virtfn link now points elsewhere
    assert len(inv.vfs) == 4


def test_overlong_values_are_clipped_to_the_api_limit(degraded):
    host, paths, dev = degraded
    with open(dev("0000:5e:00.0", "infiniband/mlx5_3/fw_ver"), "w") as f:
        f.write("9" * 200 + "\n")
    inv = discover(paths)
    dev_ = _devices(inv)["ib-0000-5e-00-0-p1"]
    assert dev_.attributes["firmwareVersion"] == "9" * 64
    assert model.limit_problems(dev_) == []


def test_speed_of_a_down_link_is_unknown_not_a_problem(build_host):
    host, paths = build_host({"pfs": [eth_pf(operstate="down")]})
    inv = discover(paths)
    assert inv.problems == []
    assert inv.function("0000:3b:00.0").uplink.speed_mbps is None


# --- review findings: upstream-kernel layouts --------------------------------------------------


def test_eswitch_mode_without_the_mlnx_ofed_compat_file(build_host):
    """Upstream kernels have no compat/devlink/mode: representors mean switchdev, VFs without them legacy."""
    _, paths = build_host({"pfs": [eth_pf(eswitch="switchdev"), eth_pf("0000:3b:00.1", netdev="ens1f1", vfs={
        "total": 8, "count": 2, "offset": 9}), eth_pf("0000:3c:00.0", netdev="ens2f0", vfs={"total": 8, "count": 0})]})
    inv = discover(paths)
    assert [inv.function(a).eswitch_mode for a in ("0000:3b:00.0", "0000:3b:00.1", "0000:3c:00.0")] == \
        ["switchdev", "legacy", None]
    assert not os.path.exists(os.path.join(paths.sysfs, "bus/pci/devices/0000:3b:00.0/net/ens1f0/compat"))


def test_eswitch_compat_file_wins_when_present(build_host):
    _, paths = build_host({"pfs": [eth_pf(eswitch="switchdev", eswitchCompat=True, representors=False)]})
    assert discover(paths).function("0000:3b:00.0").eswitch_mode == "switchdev"


def test_ib_vf_on_vfio_pci_is_published_from_pci_facts(build_host):
    _, paths = build_host({"pfs": [ib_pf(vfs={"count": 2, "overrides": {1: {"driver": "vfio-pci"}}})]})
    devices = _devices(discover(paths), IB_DRIVER)
    dev = devices["ib-0000-5e-00-2-p1"]
    assert dev.rdma_device is None and dev.attributes["type"] == "VF" and dev.attributes["vfID"] == 1
    assert dev.attributes["parentDevice"] == devices["ib-0000-5e-00-0-p1"].rdma_device


def test_vf_whose_rdma_and_netdev_moved_into_a_pod_keeps_its_device(build_host):
    """In exclusive RDMA mode the kernel hides a moved device's infiniband/ and net/ entries."""
    host, paths = build_host({"pfs": [ib_pf()]})
    vf = os.path.join(host.sysfs, "bus/pci/devices/0000:5e:00.1")
    for sub in ("infiniband", "net", "infiniband_verbs", "infiniband_mad"):
        shutil.rmtree(os.path.join(vf, sub))
    assert "ib-0000-5e-00-1-p1" in _devices(discover(paths))


def test_hca_passed_whole_into_a_vm_is_a_pf(build_host):
    _, paths = build_host({"host": {"kind": "vm"}, "functions": [
        {"pci": "0000:00:08.0", "link": "infiniband", "device": "1021", "netdev": "ibp0s8"},
        {"pci": "0000:00:09.0", "link": "infiniband", "device": "101e", "netdev": "ibp0s9"}]})
    inv = discover(paths)
    assert inv.function("0000:00:08.0").role == "PF" and inv.function("0000:00:09.0").role == "VF"


def test_virtio_net_netdev_is_found_under_its_virtio_device(demo_inventories):
    nic = demo_inventories["infiniband-vm"].function("0000:00:03.0")
    assert nic.uplink is not None and nic.uplink.name == "eth0"
