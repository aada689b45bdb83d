"""Garbage, missing and odd sysfs content never crashes discover or doctor, and whatever is
published still fits the API limits. (Cases first found by a review of the discovery code.)"""

import json
import os
import shutil

import pytest

from sriovdra import model
from sriovdra.doctor import run_checks
from sriovdra.host.discovery import discover
from sriovdra.host.paths import HostPaths
from tests.conftest import eth_pf, ib_pf

ETH_VF, ETH_PF, IB_PF = "0000:3b:00.2", "0000:3b:00.0", "0000:5e:00.0"


def _write(path, data):
    if os.path.islink(path) or os.path.isfile(path):
        os.unlink(path)
    elif os.path.isdir(path):
        shutil.rmtree(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def _mkdir(path):
    if os.path.islink(path) or os.path.isfile(path):
        os.unlink(path)
    os.makedirs(path, exist_ok=True)


def _link(path, target):
    if os.path.islink(path) or os.path.isfile(path):
        os.unlink(path)
    elif os.path.isdir(path):
        shutil.rmtree(path)
    os.symlink(target, path)


def _ibdev(dev):
    return os.path.join("infiniband", os.listdir(dev(IB_PF, "infiniband"))[0])


CASES = {
    "class garbage": lambda root, dev: _write(dev(ETH_VF, "class"), "hello"),
    "numa huge": lambda root, dev: _write(dev(ETH_VF, "numa_node"), "9" * 30),
    "sriov_totalvfs is a dir": lambda root, dev: _mkdir(dev(ETH_PF, "sriov_totalvfs")),
    "sriov_numvfs negative": lambda root, dev: _write(dev(ETH_PF, "sriov_numvfs"), "-5"),
    "virtfn huge index": lambda root, dev: _link(dev(ETH_PF, "virtfn" + "9" * 20), "../0000:3b:00.2"),
    "virtfn unicode digit": lambda root, dev: _link(dev(ETH_PF, "virtfn\u00b3"), "../0000:3b:00.2"),
    "physfn dangling": lambda root, dev: _link(dev(ETH_VF, "physfn"), "../nowhere"),
    "physfn is a file": lambda root, dev: _write(dev(ETH_VF, "physfn"), "x"),
    "physfn loop": lambda root, dev: _link(dev(ETH_VF, "physfn"), "physfn"),
    "net is a file": lambda root, dev: _write(dev(ETH_VF, "net"), "x"),
    "mtu binary": lambda root, dev: _write(dev(ETH_PF, "net/ens1f0/mtu"), b"\xff\xfe"),
    "address with NUL": lambda root, dev: _write(dev(ETH_PF, "net/ens1f0/address"), b"\xff\xfe\x00"),
    "infiniband is a file": lambda root, dev: _write(dev(IB_PF, "infiniband"), "x"),
    "ports is a file": lambda root, dev: _write(dev(IB_PF, _ibdev(dev) + "/ports"), "x"),
    "port huge number": lambda root, dev: _mkdir(dev(IB_PF, _ibdev(dev) + "/ports/" + "9" * 26)),
    "port unicode digit": lambda root, dev: _mkdir(dev(IB_PF, _ibdev(dev) + "/ports/\u00b3")),
    "lid garbage": lambda root, dev: _write(dev(IB_PF, _ibdev(dev) + "/ports/1/lid"), "0xZZ"),
    "lid huge": lambda root, dev: _write(dev(IB_PF, _ibdev(dev) + "/ports/1/lid"), "0x" + "f" * 40),
    "state garbage": lambda root, dev: _write(dev(IB_PF, _ibdev(dev) + "/ports/1/state"), ":::"),
    "rate huge": lambda root, dev: _write(dev(IB_PF, _ibdev(dev) + "/ports/1/rate"), "1" * 5000 + " Gb/sec (4X EDR)"),
    "gid long": lambda root, dev: _write(dev(IB_PF, _ibdev(dev) + "/ports/1/gids/0"), "a" * 300),
    "node_guid with NUL": lambda root, dev: _write(dev(IB_PF, _ibdev(dev) + "/node_guid"), b"00\x0000"),
    "umad port garbage": lambda root, dev: [_write(os.path.join(dev(IB_PF, "infiniband_mad"), n, "port"), "abc")
                                            for n in os.listdir(dev(IB_PF, "infiniband_mad"))],
    "uverbs ibdev is a dir": lambda root, dev: [_mkdir(os.path.join(dev(IB_PF, "infiniband_verbs"), n, "ibdev"))
                                                for n in os.listdir(dev(IB_PF, "infiniband_verbs"))],
    "iommu_group not a number": lambda root, dev: _link(dev(ETH_VF, "iommu_group"),
                                                        "../../kernel/iommu_groups/abc"),
    "iommu_group unicode digit": lambda root, dev: _link(dev(ETH_VF, "iommu_group"),
                                                         "../../kernel/iommu_groups/\u00b3"),
    "iommu_groups is a file": lambda root, dev: _write(os.path.join(root, "sys/kernel/iommu_groups"), "x"),
    "driver loop": lambda root, dev: _link(dev(ETH_VF, "driver"), "driver"),
    "PCI entry is a file": lambda root, dev: _write(os.path.join(root, "sys/bus/pci/devices/0000:99:00.0"), "x"),
    "PCI entry dangling": lambda root, dev: _link(os.path.join(root, "sys/bus/pci/devices/0000:99:00.0"),
                                                  "../nowhere"),
    "hypervisor/type is a dir": lambda root, dev: _mkdir(os.path.join(root, "sys/hypervisor/type")),
    "DMI binary": lambda root, dev: _write(os.path.join(root, "sys/class/dmi/id/sys_vendor"), b"\xff\xff"),
    "netns_mode is a dir": lambda root, dev: _mkdir(os.path.join(root, "sys/module/ib_core/parameters/netns_mode")),
    "rdma_cm dev garbage": lambda root, dev: _write(os.path.join(root, "sys/class/misc/rdma_cm/dev"), "1:2:3"),
    "cpuinfo is a dir": lambda root, dev: _mkdir(os.path.join(root, "proc/cpuinfo")),
    "containerd version string": lambda root, dev: _write(os.path.join(root, "etc/containerd/config.toml"),
                                                          'version = "3"\n'),
    "containerd plugins list": lambda root, dev: _write(os.path.join(root, "etc/containerd/config.toml"),
                                                        "version = 3\nplugins = [1]\n"),
    "containerd socket int": lambda root, dev: _write(os.path.join(root, "etc/containerd/config.toml"),
                                                      "version = 3\n[plugins.'io.containerd.nri.v1.nri']\n"
                                                      "socket_path = 5\n"),
    "containerd cdi dirs ints": lambda root, dev: _write(
        os.path.join(root, "etc/containerd/config.toml"),
        "version = 3\n[plugins.'io.containerd.cri.v1.runtime']\ncdi_spec_dirs = [1]\n"),
    "containerd config is a dir": lambda root, dev: _mkdir(os.path.join(root, "etc/containerd/config.toml")),
    "crio table is a string": lambda root, dev: _write(os.path.join(root, "etc/crio/crio.conf"), 'crio = "x"\n'),
    "crio sections are strings": lambda root, dev: _write(os.path.join(root, "etc/crio/crio.conf"),
                                                          '[crio]\nnri = "x"\nruntime = 1\n'),
    "crio cdi dirs int": lambda root, dev: _write(os.path.join(root, "etc/crio/crio.conf"),
                                                  "[crio.runtime]\ncdi_spec_dirs = 5\n"),
    "cdi dir is a file": lambda root, dev: _write(os.path.join(root, "etc/cdi"), "x"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_hostile_content_degrades_and_never_crashes(build_host, case):
    host, paths = build_host({
        "host": {"modules": ["mlx5_ib", "ib_uverbs", "rdma_ucm", "vfio_pci"], "rdmaNetnsMode": "exclusive",
                 "containerd": {"configVersion": 3, "cdi": True, "nri": True}},
        "pfs": [eth_pf(eswitch="switchdev"), ib_pf()]})
    CASES[case](host.root, lambda bdf, rel="": os.path.join(host.sysfs, "bus/pci/devices", bdf, rel))
    inv = discover(paths)
    json.dumps(inv.to_dict())
    for dev in inv.dra_devices():
        assert model.limit_problems(dev) == [], dev.name
    checks = run_checks(HostPaths.resolve(host.root))
    assert {c.name for c in checks} >= {"sysfs", "iommu", "cdi-dirs"}


def test_bad_runtime_config_values_are_reported_not_raised(build_host):
    host, paths = build_host({"host": {"containerd": {"configVersion": 3}}})
    CASES["containerd socket int"](host.root, None)
    c = {c.name: c for c in run_checks(paths)}["runtime-containerd"]
    assert c.status == "FAIL" and "socket_path must be a string, got 5" in c.message
