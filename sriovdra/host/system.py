"""Host-wide facts: VM or baremetal, IOMMU, loaded kernel modules, RDMA netns mode."""

from __future__ import annotations

import os
from dataclasses import dataclass

from sriovdra.host.paths import HostPaths
from sriovdra.host.sysfs import Sysfs
from sriovdra.model import HOST_BAREMETAL, HOST_VM, HostInfo

# DMI sys_vendor / product_name values that only virtual machines report.
_VM_VENDORS = {
    "qemu": "qemu",
    "xen": "xen",
    "vmware, inc.": "vmware",
    "innotek gmbh": "virtualbox",
    "parallels software international inc.": "parallels",
    "bochs": "bochs",
}
_VM_PRODUCTS = {
    "kvm": "kvm",
    "virtual machine": "hyperv",  # Microsoft Corporation / Virtual Machine
    "google compute engine": "gce",
    "openstack nova": "openstack",
    "openstack compute": "openstack",
    "alibaba cloud ecs": "alibaba",
    "virtualbox": "virtualbox",
    "hvm domu": "xen",
}


def detect_host(paths: HostPaths, sysfs: Sysfs | None = None) -> HostInfo:
    """VM or baremetal.

    In order: a Xen dom0 (/proc/xen/capabilities says control_d) is the physical host; the
    CPUID hypervisor flag (bare metal never sets it) or /sys/hypervisor mark a VM; then DMI
    names of hypervisors and clouds (EC2 *.metal instances are not VMs). /proc is only read
    when it belongs to the same host as the sysfs (sysfs == <host-root>/sys): a --sysfs-root
    pointed at another tree is judged by that tree alone.
    """
    sysfs = sysfs or Sysfs(paths.sysfs)
    same_host = os.path.abspath(paths.sysfs) == os.path.abspath(paths.host_file("/sys"))
    if same_host and "control_d" in _read_host(paths, "/proc/xen/capabilities"):
        return HostInfo(kind=HOST_BAREMETAL, hypervisor=None)
    if same_host and cpu_has_hypervisor_flag(paths):
        return HostInfo(kind=HOST_VM, hypervisor=_dmi_hypervisor(sysfs) or "cpuid-flag")
    hv = sysfs.read("hypervisor/type", expected=False)
    if hv:
        return HostInfo(kind=HOST_VM, hypervisor=hv)
    dmi = _dmi_hypervisor(sysfs)
    return HostInfo(kind=HOST_VM, hypervisor=dmi) if dmi else HostInfo(kind=HOST_BAREMETAL)


def _dmi_hypervisor(sysfs: Sysfs) -> str | None:
    vendor = (sysfs.read("class/dmi/id/sys_vendor", expected=False) or "").strip().lower()
    product = (sysfs.read("class/dmi/id/product_name", expected=False) or "").strip().lower()
    if vendor in _VM_VENDORS:
        return _VM_VENDORS[vendor]
    if product in _VM_PRODUCTS:
        return _VM_PRODUCTS[product]
    if vendor == "amazon ec2" and not product.endswith(".metal"):
        return "ec2"
    return None


def _read_host(paths: HostPaths, name: str) -> str:
    try:
        with open(paths.host_file(name), encoding="utf-8", errors="replace") as f:
            return f.read(4096)
    except OSError:
        return ""


def cpu_has_hypervisor_flag(paths: HostPaths) -> bool:
    """The first 'flags' line of /proc/cpuinfo; bare metal never sets 'hypervisor'."""
    try:
        with open(paths.host_file("/proc/cpuinfo"), encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return "hypervisor" in line.split(":", 1)[-1].split()
    except OSError:
        pass
    return False


@dataclass(frozen=True)
class IommuState:
    groups: int  # number of IOMMU groups; 0 means no IOMMU translation
    noiommu: bool  # vfio's unsafe no-IOMMU mode is enabled

    @property
    def enabled(self) -> bool:
        return self.groups > 0


def iommu_state(sysfs: Sysfs) -> IommuState:
    groups = len(sysfs.listdir("kernel/iommu_groups"))
    noiommu = (sysfs.read("module/vfio/parameters/enable_unsafe_noiommu_mode", expected=False)
               or "N").upper() in ("Y", "1")
    return IommuState(groups=groups, noiommu=noiommu)


def module_loaded(sysfs: Sysfs, name: str) -> bool:
    """/sys/module/<name> exists for loaded modules (and built-ins that have parameters)."""
    return os.path.isdir(sysfs.path(f"module/{name}"))


def rdma_netns_mode(sysfs: Sysfs) -> str | None:
    """'shared' or 'exclusive': ib_core's netns_mode follows `rdma system set netns`."""
    value = sysfs.read("module/ib_core/parameters/netns_mode", expected=False)
    if value is None:
        return None
    return "shared" if value.upper() in ("Y", "1") else "exclusive"
