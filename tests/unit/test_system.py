"""Host-wide facts: VM detection, IOMMU, modules, RDMA netns mode."""

import os

import pytest

from sriovdra.host import system
from sriovdra.host.paths import HostPaths
from sriovdra.host.sysfs import Sysfs


def _host(tmp_path, files: dict[str, str]) -> HostPaths:
    for rel, content in files.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    return HostPaths.resolve(str(tmp_path))


@pytest.mark.parametrize("files, kind, hypervisor", [
    ({"sys/hypervisor/type": "xen\n"}, "vm", "xen"),
    ({"sys/class/dmi/id/sys_vendor": "QEMU\n", "sys/class/dmi/id/product_name": "Standard PC\n"}, "vm", "qemu"),
    ({"sys/class/dmi/id/sys_vendor": "Microsoft Corporation\n",
      "sys/class/dmi/id/product_name": "Virtual Machine\n"}, "vm", "hyperv"),
    ({"sys/class/dmi/id/sys_vendor": "Amazon EC2\n", "sys/class/dmi/id/product_name": "c5.metal\n"},
     "baremetal", None),
    ({"sys/class/dmi/id/sys_vendor": "Amazon EC2\n", "sys/class/dmi/id/product_name": "p5.48xlarge\n"}, "vm", "ec2"),
    # The CPUID flag wins over an unknown DMI vendor: bare metal never sets it.
    ({"sys/class/dmi/id/sys_vendor": "Dell Inc.\n", "proc/cpuinfo": "flags\t: fpu hypervisor\n"}, "vm", "cpuid-flag"),
    ({"sys/class/dmi/id/sys_vendor": "QEMU\n", "proc/cpuinfo": "flags\t: fpu hypervisor\n"}, "vm", "qemu"),
    ({"proc/cpuinfo": "processor: 0\nflags\t: fpu sse hypervisor\n"}, "vm", "cpuid-flag"),
    ({"proc/cpuinfo": "flags\t: fpu sse\n"}, "baremetal", None),
    # Xen dom0 is the physical host even though it runs under the hypervisor.
    ({"sys/hypervisor/type": "xen\n", "proc/xen/capabilities": "control_d\n",
      "proc/cpuinfo": "flags\t: fpu hypervisor\n"}, "baremetal", None),
])
def test_detect_host(tmp_path, files, kind, hypervisor):
    info = system.detect_host(_host(tmp_path, files))
    assert (info.kind, info.hypervisor) == (kind, hypervisor)


def test_proc_of_another_host_is_not_read(tmp_path):
    """--sysfs-root alone: this machine's /proc/cpuinfo must not decide for the other tree."""
    _host(tmp_path, {"root/proc/cpuinfo": "flags\t: fpu hypervisor\n",
                      "other/sys/class/dmi/id/sys_vendor": "Dell Inc.\n"})
    mixed = HostPaths.resolve(str(tmp_path / "root"), str(tmp_path / "other/sys"))
    assert system.detect_host(mixed).kind == "baremetal"
    assert system.detect_host(HostPaths.resolve(str(tmp_path / "root"))).kind == "vm"


def test_iommu_modules_and_rdma_netns(tmp_path):
    paths = _host(tmp_path, {"sys/module/ib_core/parameters/netns_mode": "N\n",
                             "sys/module/vfio/parameters/enable_unsafe_noiommu_mode": "Y\n"})
    os.makedirs(tmp_path / "sys/kernel/iommu_groups/3")
    sysfs = Sysfs(paths.sysfs)
    assert system.rdma_netns_mode(sysfs) == "exclusive"
    assert system.module_loaded(sysfs, "vfio") and not system.module_loaded(sysfs, "mlx5_ib")
    state = system.iommu_state(sysfs)
    assert state.enabled and state.groups == 1 and state.noiommu


def test_unknown_rdma_netns_mode(tmp_path):
    assert system.rdma_netns_mode(Sysfs(str(tmp_path))) is None


def test_host_paths_resolve(tmp_path):
    p = HostPaths.resolve(str(tmp_path))
    assert (p.sysfs, p.dev, p.root) == (f"{tmp_path}/sys", f"{tmp_path}/dev", str(tmp_path))
    assert p.host_file("/etc/cdi") == f"{tmp_path}/etc/cdi"
    assert p.dev_file("/dev/infiniband/uverbs0") == f"{tmp_path}/dev/infiniband/uverbs0"
    q = HostPaths.resolve(None, "/x/sys", "/y/dev")
    assert (q.sysfs, q.dev, q.root) == ("/x/sys", "/y/dev", "/")
