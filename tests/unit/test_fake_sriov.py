"""The fake kernel's sriov_numvfs: errnos as drivers/pci/iov.c has them, VFs that vanish without a trace and
appear exactly as the builder makes them, autoprobe, slow and absent driver probes, recorded VF GUIDs."""

from __future__ import annotations

import copy
import errno
import json
import os
import re
from collections import Counter

import pytest
import yaml

from sriovdra import fakehost
from sriovdra.fakehost import FakeHostError
from sriovdra.host import pci
from sriovdra.host.discovery import discover
from sriovdra.host.paths import HostPaths
from tests.conftest import REPO, eth_pf, ib_pf
from tests.support.waiting import wait

PF = "0000:3b:00.0"


def _spec(name: str) -> dict:
    with open(REPO / "demo" / "hosts" / f"{name}.yaml") as f:
        return yaml.safe_load(f)


def _kernel(paths: HostPaths) -> fakehost.FakeKernel:
    return fakehost.FakeKernel(paths.sysfs, paths.dev)


def _numvfs(paths: HostPaths, pf: str, value: str) -> None:
    _kernel(paths).write(f"{paths.sysfs}/bus/pci/devices/{pf}/sriov_numvfs", value)


def _errno(fn) -> int:
    with pytest.raises(OSError) as e:
        fn()
    return e.value.errno


def _with_counts(spec: dict, count: int | None) -> dict:
    """The spec with every PF's vfs.count set to count (None: as it is)."""
    spec = copy.deepcopy(spec)
    for pf in spec.get("pfs", []):
        if "vfs" in pf and count is not None:
            pf["vfs"]["count"] = count
    return spec


_COUNTERS = [(r"mlx5_\d+", "mlx5_N"), (r"\b(uverbs|umad|issm)\d+", r"\1N"), (r'"minor": \d+', '"minor": 0'),
             (r'"iommuGroup": \d+', '"iommuGroup": 0'), (r"iommu_groups/\d+", "iommu_groups/N"),
             (r"dev/vfio/(noiommu-)?\d+", r"dev/vfio/\1N")]


def _normalized(text: str) -> str:
    """Names and numbers the kernel hands out in creation order (RDMA devices, char devices, IOMMU groups)."""
    for pattern, repl in _COUNTERS:
        text = re.sub(pattern, repl, text)
    return text


def _inventory(paths: HostPaths) -> dict:
    return json.loads(_normalized(json.dumps(discover(paths).to_dict())))


def _shape(root: str) -> Counter:
    """Every path of the tree with its link target (or file/dir), counters normalized; the fake kernel's own
    state aside."""
    out = Counter()
    for top, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d != fakehost.FAKE_KERNEL_DIR]
        for name in dirs + files:
            path = os.path.join(top, name)
            kind = "-> " + os.readlink(path) if os.path.islink(path) else "dir" if os.path.isdir(path) else "file"
            out[_normalized(f"{os.path.relpath(path, root)} {kind}")] += 1
    return out


def _dangling(root: str) -> list[str]:
    return [os.path.join(top, n) for top, dirs, files in os.walk(root) for n in dirs + files
            if os.path.islink(os.path.join(top, n)) and not os.path.exists(os.path.join(top, n))]


@pytest.mark.parametrize("name", ["ethernet-baremetal", "infiniband-baremetal", "mixed"])
def test_provisioned_from_zero_equals_built_with_the_count(build_host, name):
    spec = _spec(name)
    _, built = build_host(spec)
    _, zero = build_host(_with_counts(spec, 0))
    for pf in spec["pfs"]:
        if pf.get("vfs", {}).get("count"):
            _numvfs(zero, pf["pci"], str(pf["vfs"]["count"]))
    assert _inventory(zero) == _inventory(built)
    assert _shape(zero.root) == _shape(built.root)
    assert _dangling(zero.root) == []


@pytest.mark.parametrize("name", ["ethernet-baremetal", "infiniband-baremetal"])
def test_zero_removes_every_trace_of_the_vfs(build_host, name):
    spec = _spec(name)
    host, paths = build_host(spec)
    _, empty = build_host(_with_counts(spec, 0))
    for pf in spec["pfs"]:
        _numvfs(paths, pf["pci"], "0")
    assert _inventory(paths) == _inventory(empty)
    assert _shape(host.root) == _shape(os.path.dirname(empty.sysfs))
    assert _dangling(host.root) == []
    assert not os.path.exists(os.path.join(host.sysfs, fakehost.FAKE_KERNEL_DIR, "stash"))
    assert not os.path.exists(os.path.join(host.dev, fakehost.FAKE_KERNEL_DIR))


def test_counters_continue_without_collisions(build_host):
    _, paths = build_host({"host": {"modules": ["vfio_pci"]}, "pfs": [eth_pf(vfs={"total": 8, "count": 4}), ib_pf()]})
    before = discover(paths)
    _numvfs(paths, PF, "0")
    _numvfs(paths, PF, "8")
    inv = discover(paths)
    groups = [f.iommu_group.number for f in inv.functions]
    rdma = [r.name for f in inv.functions for r in f.rdma_devices]
    uverbs = [r.uverbs.name for f in inv.functions for r in f.rdma_devices]
    assert len(set(groups)) == len(groups) and len(set(rdma)) == len(rdma) and len(set(uverbs)) == len(uverbs)
    ifindex = [open(os.path.join(paths.sysfs, "class/net", n, "ifindex")).read() for n in os.listdir(
        os.path.join(paths.sysfs, "class/net"))]
    assert len(set(ifindex)) == len(ifindex)
    old_vf_groups = {f.iommu_group.number for f in before.vfs if f.pf_address == PF}
    assert not old_vf_groups & set(groups)  # numbers are never reused, as the kernel's ida would not promise
    for node in uverbs:
        assert os.path.exists(os.path.join(paths.dev, "infiniband", node))


def test_errnos_as_sriov_numvfs_store(build_host):
    _, paths = build_host({"pfs": [eth_pf(vfs={"total": 8, "count": 2})]})
    numvfs = os.path.join(paths.sysfs, "bus/pci/devices", PF, "sriov_numvfs")
    assert _errno(lambda: _numvfs(paths, PF, "9")) == errno.ERANGE
    assert _errno(lambda: _numvfs(paths, PF, "70000")) == errno.ERANGE
    assert _errno(lambda: _numvfs(paths, PF, "four")) == errno.EINVAL
    assert _errno(lambda: _numvfs(paths, PF, "4")) == errno.EBUSY  # VFs exist: through 0 first
    mtime = os.stat(numvfs).st_mtime_ns
    _numvfs(paths, PF, "2")  # the same count: nothing happens
    assert os.stat(numvfs).st_mtime_ns == mtime and len(discover(paths).vfs) == 2
    _numvfs(paths, PF, "0x0")  # kstrtou16 base 0
    assert discover(paths).vfs == []
    pci.restore(paths, PF, None)
    assert _errno(lambda: _numvfs(paths, PF, "1")) == errno.ENOENT  # no PF driver, no sriov_configure


def test_enable_error_knob(build_host):
    _, paths = build_host({"pfs": [eth_pf(vfs={"total": 8, "count": 2, "enableError": {"errno": "EIO", "above": 4}})]})
    _numvfs(paths, PF, "0")
    assert _errno(lambda: _numvfs(paths, PF, "5")) == errno.EIO
    assert discover(paths).vfs == []
    _numvfs(paths, PF, "4")
    assert len(discover(paths).vfs) == 4


def test_vfs_past_bus_ff_are_enomem(build_host):
    _, paths = build_host({"pfs": [eth_pf("0000:ff:00.0", vfs={"total": 300, "count": 0})]})
    assert _errno(lambda: _numvfs(paths, "0000:ff:00.0", "300")) == errno.ENOMEM
    _numvfs(paths, "0000:ff:00.0", "200")
    assert len(discover(paths).vfs) == 200


def test_switchdev_representors_follow_the_vfs(build_host):
    _, paths = build_host({"pfs": [eth_pf(eswitch="switchdev", vfs={"total": 8, "count": 0})]})
    _numvfs(paths, PF, "3")
    pf = discover(paths).function(PF)
    assert [n.phys_port_name for n in pf.netdevs] == ["p0", "pf0vf0", "pf0vf1", "pf0vf2"]
    assert pf.eswitch_mode == "switchdev"
    _numvfs(paths, PF, "0")
    assert [n.name for n in discover(paths).function(PF).netdevs] == ["ens1f0"]
    assert not [n for n in os.listdir(os.path.join(paths.sysfs, "class/net")) if "npf0vf" in n]


def test_autoprobe_off_vfs_appear_unbound_and_a_bind_brings_their_netdevs(build_host):
    _, paths = build_host({"pfs": [eth_pf(vfs={"total": 8, "count": 0})]})
    k = _kernel(paths)
    k.write(os.path.join(paths.sysfs, "bus/pci/devices", PF, "sriov_drivers_autoprobe"), "0")
    _numvfs(paths, PF, "2")
    vfs = discover(paths).vfs
    assert [(v.driver, v.netdevs, v.rdma_devices) for v in vfs] == [(None, [], [])] * 2
    assert pci.bind(paths, vfs[0].address, "mlx5_core") is None
    vf = discover(paths).function(vfs[0].address)
    assert (vf.driver, [n.name for n in vf.netdevs], len(vf.rdma_devices)) == ("mlx5_core", ["ens1f0v0"], 1)
    assert _errno(lambda: k.write(os.path.join(paths.sysfs, "bus/pci/devices", PF, "sriov_drivers_autoprobe"),
                                  "maybe")) == errno.EINVAL


def test_probe_never_leaves_vfs_unbound(build_host):
    _, paths = build_host({"pfs": [eth_pf(vfs={"total": 8, "count": 0, "probe": "never"})]})
    _numvfs(paths, PF, "2")
    assert [(v.driver, v.netdevs) for v in discover(paths).vfs] == [(None, [])] * 2


def test_a_slow_probe_binds_first_and_creates_netdevs_later(build_host):
    _, paths = build_host({"pfs": [ib_pf(vfs={"total": 8, "count": 0, "probe": 0.3})]})
    _numvfs(paths, "0000:5e:00.0", "2")
    vfs = discover(paths).vfs
    assert [(v.driver, v.netdevs, v.rdma_devices) for v in vfs] == [("mlx5_core", [], [])] * 2
    wait(lambda: all(v.netdevs and v.rdma_devices for v in discover(paths).vfs), what="the slow probe")


def test_a_slow_probe_of_removed_vfs_does_nothing(build_host):
    host, paths = build_host({"pfs": [ib_pf(vfs={"total": 8, "count": 0, "probe": 0.2})]})
    _numvfs(paths, "0000:5e:00.0", "2")
    _numvfs(paths, "0000:5e:00.0", "0")
    shape = _shape(host.root)
    _numvfs(paths, "0000:5e:00.0", "1")  # a new probe timer: once it fired, the old one has fired too
    wait(lambda: discover(paths).vfs[0].netdevs, what="the second probe")
    _numvfs(paths, "0000:5e:00.0", "0")
    assert _shape(host.root) == shape and _dangling(host.root) == []


def test_vf_guids_are_kept_like_firmware_and_applied_at_bind(build_host):
    _, paths = build_host({"pfs": [ib_pf(vfs={"total": 8, "count": 2, "guids": "zero"})]})
    k, ib_pf_addr, vf = _kernel(paths), "0000:5e:00.0", "0000:5e:00.1"
    k.set_vf_guid(ib_pf_addr, 0, "node", 0x0200_0100_0000_0001)
    k.set_vf_guid(ib_pf_addr, 0, "port", 0x0200_0100_0000_0002)
    assert k.vf_guids(ib_pf_addr, 0) == (0x0200_0100_0000_0001, 0x0200_0100_0000_0002)
    rd = discover(paths).function(vf).rdma_devices[0]
    assert rd.node_guid == "0000:0000:0000:0000"  # the driver has not read it yet
    pci.rebind(paths, vf)
    fn = discover(paths).function(vf)
    rd = fn.rdma_devices[0]
    assert rd.node_guid == "0200:0100:0000:0001"
    assert rd.ports[0].gid0 == "fe80:0000:0000:0000:0200:0100:0000:0002"
    assert fn.netdevs[0].mac.endswith("02:00:01:00:00:00:00:02")  # IPoIB: the port GID's GUID
    assert _errno(lambda: k.set_vf_guid(ib_pf_addr, 2, "node", 1)) == errno.EINVAL  # no VF 2
    _numvfs(paths, ib_pf_addr, "0")
    assert k.vf_guids(ib_pf_addr, 0) is None  # gone with the VFs
    _, eth = build_host({"pfs": [eth_pf()]})
    assert _errno(lambda: _kernel(eth).set_vf_guid(PF, 0, "node", 1)) == errno.EOPNOTSUPP  # not IPoIB


def test_without_a_fake_dev_root_no_dev_node_is_written(build_host, tmp_path):
    _, paths = build_host({"pfs": [ib_pf(vfs={"total": 8, "count": 0})]})
    before = sorted(os.listdir(os.path.join(paths.dev, "infiniband")))
    fakehost.FakeKernel(paths.sysfs, str(tmp_path / "elsewhere")).write(
        f"{paths.sysfs}/bus/pci/devices/0000:5e:00.0/sriov_numvfs", "2")
    assert sorted(os.listdir(os.path.join(paths.dev, "infiniband"))) == before
    assert not os.path.exists(tmp_path / "elsewhere")
    assert len(discover(paths).vfs) == 2


def test_overrides_may_name_vfs_up_to_total(build_host):
    _, paths = build_host({"pfs": [eth_pf(vfs={"total": 4, "count": 0, "overrides": {3: {"netdev": False}}})]})
    _numvfs(paths, PF, "4")
    assert [bool(v.netdevs) for v in discover(paths).vfs] == [True, True, True, False]


@pytest.mark.parametrize("vfs, message", [
    ({"count": 1, "probe": "later"}, r"pfs\[0\].vfs.probe: expected immediate, never or a number"),
    ({"count": 1, "probe": 0}, r"pfs\[0\].vfs.probe"),
    ({"count": 1, "enableError": {"errno": "EWHAT"}}, r"pfs\[0\].vfs.enableError.errno: expected an errno name"),
    ({"count": 1, "enableError": {"above": -1}}, r"pfs\[0\].vfs.enableError.above: must be at least 0"),
    ({"count": 1, "enableError": {"when": 1}}, r"pfs\[0\].vfs.enableError: unknown field\(s\) when"),
    ({"count": 1, "total": 4, "overrides": {4: {}}}, r"pfs\[0\].vfs.overrides: key 4 is not a VF index below total"),
    ({"count": 0, "total": 4, "overrides": {3: {"portState": "Up"}}}, r"pfs\[0\].vfs.overrides\[3\].portState"),
])
def test_new_knobs_are_strict(tmp_path, vfs, message):
    with pytest.raises(FakeHostError, match=message):
        fakehost.build({"pfs": [eth_pf(vfs=vfs)]}, str(tmp_path / "h"))


def test_a_vf_binds_with_autoprobe_off_only_through_driver_override(build_host):
    # pci_device_can_probe: a VF probes while its PF's sriov_drivers_autoprobe is on, or with driver_override
    from sriovdra.host import sriov
    from sriovdra.host.writer import sysfs_writer

    _, paths = build_host({"pfs": [eth_pf(vfs={"total": 8, "count": 0})]})
    write = sysfs_writer(paths)
    pf = os.path.join(paths.sysfs, "bus/pci/devices/0000:3b:00.0")
    write(os.path.join(pf, "sriov_drivers_autoprobe"), "0")
    sriov.set_num_vfs(paths, "0000:3b:00.0", 1)
    vf = "0000:3b:00.1"
    with pytest.raises(OSError) as e:
        write(os.path.join(paths.sysfs, "bus/pci/drivers/mlx5_core/bind"), vf)
    assert e.value.errno == errno.ENODEV
    write(os.path.join(paths.sysfs, "bus/pci/drivers_probe"), vf)  # silently nothing, like the kernel
    assert pci.current_driver(paths, vf) is None
    write(os.path.join(paths.sysfs, "bus/pci/devices", vf, "driver_override"), "mlx5_core")
    write(os.path.join(paths.sysfs, "bus/pci/drivers/mlx5_core/bind"), vf)
    assert pci.current_driver(paths, vf) == "mlx5_core"
