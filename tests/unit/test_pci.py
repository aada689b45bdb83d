"""vfio-pci rebinding (sriovdra.host.pci) against fake trees and their fake kernel."""

from __future__ import annotations

import errno
import os

import pytest
import yaml

from sriovdra import fakehost
from sriovdra.host import pci
from sriovdra.host.discovery import discover
from sriovdra.host.paths import HostPaths
from tests.conftest import REPO

ETH_VF = "0000:3b:00.2"  # VF 0 of ens1f0np0: netdev ens1f0np0v0 and an RDMA device
IB_VF = "0000:3b:00.1"  # VF 0 of the first ConnectX-7 (infiniband-baremetal)


def _spec(name: str) -> dict:
    with open(REPO / "demo" / "hosts" / f"{name}.yaml") as f:
        return yaml.safe_load(f)


def _build(tmp_path, spec: dict | str, name: str = "host") -> HostPaths:
    """A private copy: the session's demo hosts are shared and must not change."""
    if isinstance(spec, str):
        spec = _spec(spec)
    return HostPaths.resolve(fakehost.build(spec, str(tmp_path / name)).root)


def _snapshot(root: str) -> dict[str, str]:
    """Every path of the tree with its link target or file content, the fake kernel's own state aside."""
    out = {}
    for top, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d != fakehost.FAKE_KERNEL_DIR]
        for name in dirs + files:
            path = os.path.join(top, name)
            rel = os.path.relpath(path, root)
            if os.path.islink(path):
                out[rel] = "-> " + os.readlink(path)
            elif not os.path.isfile(path):  # directories, sockets, char nodes
                out[rel] = oct(os.lstat(path).st_mode)
            else:
                with open(path, "rb") as f:
                    out[rel] = f.read().decode(errors="replace")
    return out


@pytest.fixture
def eth(tmp_path) -> HostPaths:
    return _build(tmp_path, "ethernet-baremetal")


def test_bind_to_vfio_pci_hides_the_netdev_and_rdma_device_and_restore_brings_them_back(eth):
    before, tree = discover(eth).to_dict(), _snapshot(eth.root)

    assert pci.bind(eth, ETH_VF, "vfio-pci") == "mlx5_core"

    inv = discover(eth)
    vf = inv.function(ETH_VF)
    assert (vf.driver, vf.netdevs, vf.rdma_devices) == ("vfio-pci", [], [])
    assert f"/dev/vfio/{vf.iommu_group.number}" in inv.vfio_nodes()
    assert os.path.exists(os.path.join(eth.dev, "vfio", str(vf.iommu_group.number)))
    assert not os.path.lexists(os.path.join(eth.sysfs, "class/net/ens1f0np0v0"))
    assert os.path.islink(os.path.join(eth.sysfs, "bus/pci/drivers/vfio-pci", ETH_VF))
    assert not os.path.lexists(os.path.join(eth.sysfs, "bus/pci/drivers/mlx5_core", ETH_VF))
    with open(os.path.join(eth.sysfs, "bus/pci/devices", ETH_VF, "driver_override")) as f:
        assert f.read().strip() == "(null)"  # cleared after the bind
    published = {d.pci_address: d for d in inv.dra_devices()}
    assert published[ETH_VF].netdev is None and published[ETH_VF].rdma_device is None

    pci.restore(eth, ETH_VF, "mlx5_core")

    assert discover(eth).to_dict() == before
    assert _snapshot(eth.root) == tree  # links, files and /dev nodes exactly as built


def test_infiniband_vf_round_trip(tmp_path):
    paths = _build(tmp_path, "infiniband-baremetal")
    before, tree = discover(paths).to_dict(), _snapshot(paths.root)
    original = pci.bind(paths, IB_VF, "vfio-pci")
    vf = discover(paths).function(IB_VF)
    assert (original, vf.driver, vf.rdma_devices) == ("mlx5_core", "vfio-pci", [])
    pci.restore(paths, IB_VF, original)
    assert discover(paths).to_dict() == before
    assert _snapshot(paths.root) == tree


def test_bind_is_a_no_op_when_already_bound(eth, monkeypatch):
    pci.bind(eth, ETH_VF, "vfio-pci")
    tree = _snapshot(eth.root)
    writes = []
    monkeypatch.setattr(fakehost.FakeKernel, "write", lambda self, path, value: writes.append(path))
    assert pci.bind(eth, ETH_VF, "vfio-pci") == "vfio-pci"
    assert writes == [] and _snapshot(eth.root) == tree


def test_restore_of_a_restored_device_writes_nothing(eth, monkeypatch):
    pci.restore(eth, ETH_VF, pci.bind(eth, ETH_VF, "vfio-pci"))
    tree = _snapshot(eth.root)
    writes = []
    monkeypatch.setattr(fakehost.FakeKernel, "write", lambda self, path, value: writes.append(path))
    pci.restore(eth, ETH_VF, "mlx5_core")
    assert writes == [] and _snapshot(eth.root) == tree


def test_restore_clears_an_override_left_by_an_interrupted_bind(eth):
    override = os.path.join(eth.sysfs, "bus/pci/devices", ETH_VF, "driver_override")
    with open(override, "w") as f:
        f.write("vfio-pci\n")
    pci.restore(eth, ETH_VF, "mlx5_core")
    with open(override) as f:
        assert f.read().strip() == "(null)"


def test_bind_without_the_vfio_pci_module_fails_and_changes_nothing(tmp_path):
    spec = _spec("ethernet-baremetal")
    spec["host"]["modules"] = [m for m in spec["host"]["modules"] if m != "vfio_pci"]
    spec["pfs"][0]["vfs"].pop("overrides")  # a vfio-pci VF would create the driver dir itself
    paths = _build(tmp_path, spec)
    tree = _snapshot(paths.root)
    with pytest.raises(pci.PciBindError) as e:
        pci.bind(paths, ETH_VF, "vfio-pci")
    assert str(e.value) == (f"{ETH_VF}: bind to vfio-pci: {paths.sysfs}/bus/pci/drivers/vfio-pci does not exist "
                            "(is the vfio-pci module loaded?)")
    assert pci.current_driver(paths, ETH_VF) == "mlx5_core"
    assert _snapshot(paths.root) == tree


def test_a_failed_bind_rolls_back_to_the_original_driver(tmp_path):
    spec = _spec("ethernet-baremetal")
    spec["host"]["iommu"] = False  # vfio-pci's probe fails without an IOMMU group
    paths = _build(tmp_path, spec)
    before, tree = discover(paths).to_dict(), _snapshot(paths.root)
    with pytest.raises(pci.PciBindError) as e:
        pci.bind(paths, ETH_VF, "vfio-pci")
    assert str(e.value) == (f"{ETH_VF}: bind to vfio-pci: write {ETH_VF} to {paths.sysfs}/bus/pci/drivers/vfio-pci/"
                            "bind: Invalid argument; rolled back to mlx5_core")
    assert discover(paths).to_dict() == before
    assert _snapshot(paths.root) == tree


def test_restore_to_no_driver_leaves_the_function_unbound(eth):
    pci.restore(eth, ETH_VF, None)
    vf = discover(eth).function(ETH_VF)
    assert (vf.driver, vf.netdevs) == (None, [])
    pci.restore(eth, ETH_VF, "mlx5_core")
    assert [n.name for n in discover(eth).function(ETH_VF).netdevs] == ["ens1f0np0v0"]


@pytest.mark.parametrize("call", [
    lambda p: pci.current_driver(p, "0000:3b:1f.7"),
    lambda p: pci.bind(p, "0000:3b:1f.7", "vfio-pci"),
    lambda p: pci.restore(p, "0000:3b:1f.7", "mlx5_core"),
])
def test_unknown_function(eth, call):
    missing = r"^0000:3b:1f\.7: no such PCI device \(.*/bus/pci/devices/0000:3b:1f\.7 does not exist\)$"
    with pytest.raises(pci.PciBindError, match=missing):
        call(eth)


@pytest.mark.parametrize("bdf", ["../../../etc", "3b:00.2", ""])
def test_not_a_pci_address(eth, bdf):
    with pytest.raises(pci.PciBindError, match="not a PCI address"):
        pci.bind(eth, bdf, "vfio-pci")


def test_not_a_driver_name(eth):
    with pytest.raises(pci.PciBindError, match="is not a driver name"):
        pci.bind(eth, ETH_VF, "../vfio-pci")


def test_a_tree_without_the_marker_gets_no_fake_kernel(eth):
    """Plain files do not rebind anything: the check after binding catches it and rolls back."""
    os.unlink(os.path.join(eth.sysfs, fakehost.MARKER))
    with pytest.raises(pci.PciBindError, match="verify: bound to mlx5_core instead of vfio-pci"):
        pci.bind(eth, ETH_VF, "vfio-pci")


# --- the fake kernel's rules, as the kernel has them ---------------------------------------------


def _kernel(paths: HostPaths) -> fakehost.FakeKernel:
    return fakehost.FakeKernel(paths.sysfs, paths.dev)


def _errno(fn) -> int:
    with pytest.raises(OSError) as e:
        fn()
    return e.value.errno


def test_fake_kernel_errnos(eth):
    k, drivers = _kernel(eth), f"{eth.sysfs}/bus/pci/drivers"
    assert _errno(lambda: k.write(f"{drivers}/mlx5_core/bind", ETH_VF)) == errno.EBUSY
    assert _errno(lambda: k.write(f"{drivers}/vfio-pci/unbind", ETH_VF)) == errno.ENODEV
    k.write(f"{drivers}/mlx5_core/unbind", ETH_VF)
    # vfio-pci has no ID table: without driver_override it matches nothing
    assert _errno(lambda: k.write(f"{drivers}/vfio-pci/bind", ETH_VF)) == errno.ENODEV
    assert _errno(lambda: k.write(f"{drivers}/nonexistent/bind", ETH_VF)) == errno.ENOENT
    assert _errno(lambda: k.write(f"{drivers}/mlx5_core/bind", "0000:3b:1f.7")) == errno.ENODEV


def test_fake_kernel_drivers_probe_follows_override_then_default(eth):
    k, dev = _kernel(eth), f"{eth.sysfs}/bus/pci/devices/{ETH_VF}"
    k.write(f"{dev}/driver/unbind", ETH_VF)
    k.write(f"{dev}/driver_override", "vfio-pci")
    k.write(f"{eth.sysfs}/bus/pci/drivers_probe", ETH_VF)
    assert pci.current_driver(eth, ETH_VF) == "vfio-pci"
    k.write(f"{dev}/driver/unbind", ETH_VF)
    k.write(f"{dev}/driver_override", "\n")
    k.write(f"{eth.sysfs}/bus/pci/drivers_probe", ETH_VF)
    assert pci.current_driver(eth, ETH_VF) == "mlx5_core"
    assert [n.name for n in discover(eth).function(ETH_VF).netdevs] == ["ens1f0np0v0"]


def test_fake_kernel_leaves_a_dev_root_outside_the_fake_host_alone(eth, tmp_path):
    assert fakehost.FakeKernel(eth.sysfs, str(tmp_path)).dev is None
