"""Pre-install checks of a node: each check says PASS, WARN, FAIL or SKIP with a one-line fix.

The checks read the host only (sysfs, /dev, runtime configuration, kubelet dirs) through
HostPaths, so they run the same on a node, in a container with the host mounted, and on a
fake host tree.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass

from sriovdra.host.discovery import DiscoveryError, discover
from sriovdra.host.ipam import DEFAULT_CNI_BIN_DIRS
from sriovdra.host.paths import HostPaths
from sriovdra.host.runtime_config import CONTAINERD_CONFIG, RuntimeConfig, read_runtimes
from sriovdra.host.sysfs import Sysfs
from sriovdra.host.system import iommu_state, module_loaded, rdma_netns_mode
from sriovdra.model import HOST_VM, IB_DRIVER, LINK_INFINIBAND, Inventory

PASS, WARN, FAIL, SKIP = "PASS", "WARN", "FAIL", "SKIP"
DEFAULT_CDI_DIRS = ("/etc/cdi", "/var/run/cdi")
DEFAULT_KUBELET_ROOT = "/var/lib/kubelet"
ZERO_GUID = "0000:0000:0000:0000"


@dataclass(frozen=True)
class Check:
    name: str
    status: str
    message: str
    fix: str | None = None

    def to_dict(self) -> dict:
        return {"name": self.name, "status": self.status, "message": self.message, "fix": self.fix}


@dataclass(frozen=True)
class DoctorOptions:
    kubelet_root_dir: str = DEFAULT_KUBELET_ROOT
    cdi_dirs: tuple[str, ...] = DEFAULT_CDI_DIRS
    containerd_config: str = CONTAINERD_CONFIG
    cni_bin_dirs: tuple[str, ...] = DEFAULT_CNI_BIN_DIRS


def failed(checks: list[Check]) -> bool:
    return any(c.status == FAIL for c in checks)


def run_checks(paths: HostPaths, opts: DoctorOptions | None = None) -> list[Check]:
    opts = opts or DoctorOptions()
    sysfs = Sysfs(paths.sysfs)
    try:
        inv = discover(paths)
    except DiscoveryError as e:
        checks = [Check("sysfs", FAIL, str(e), "point --sysfs-root (or --host-root) at the node's sysfs")]
    else:
        checks = [_sysfs(inv, paths), _sriov(inv), _infiniband(inv), _vf_drivers(inv),
                  _rdma_netns(inv, sysfs), _modules(inv, sysfs), _dev_nodes(inv, paths)]
    checks.append(_iommu(sysfs))
    checks.append(_kubelet(paths, opts))
    runtimes = read_runtimes(paths, opts.containerd_config)
    checks.append(_cdi_dirs(paths, opts, runtimes))
    checks.extend(_runtimes(paths, runtimes))
    checks.append(_cni_ipam(paths, opts))
    return checks


def _cni_ipam(paths: HostPaths, opts: DoctorOptions) -> Check:
    """VfConfig `ipam` runs a CNI IPAM plugin by name from these dirs (host-local is the usual one)."""
    dirs = ":".join(opts.cni_bin_dirs)
    found = [d for d in opts.cni_bin_dirs if os.access(paths.host_file(f"{d}/host-local"), os.X_OK)]
    if found:
        return Check("cni-ipam", PASS, f"host-local IPAM plugin in {found[0]}")
    return Check("cni-ipam", WARN, f"no host-local IPAM plugin in {dirs}: claims whose VfConfig sets ipam will "
                 "fail to attach (static ips work)",
                 "install the CNI plugins (containernetworking-plugins) or pass --cni-bin-dir")


def _names(items: list[str], limit: int = 4) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def _sysfs(inv: Inventory, paths: HostPaths) -> Check:
    msg = f"{len(inv.functions)} network PCI functions read from {paths.sysfs} ({inv.host.kind}"
    msg += f", {inv.host.hypervisor})" if inv.host.hypervisor else ")"
    if inv.problems:
        unreadable = _names([str(p) for p in inv.problems], 2)
        return Check("sysfs", WARN, f"{msg}; {len(inv.problems)} unreadable: {unreadable}",
                     "run `sriovdra discover` for the full list; those fields are left out")
    return Check("sysfs", PASS, msg)


def _pf_label(inv: Inventory, address: str) -> str:
    fn = inv.function(address)
    uplink = fn.uplink if fn else None
    return f"{uplink.name} ({address})" if uplink else address


def _sriov(inv: Inventory) -> Check:
    capable = [pf for pf in inv.pfs if pf.sriov_capable]
    if inv.host.kind == HOST_VM:
        if inv.vfs:
            return Check("sriov", PASS, f"VM ({inv.host.hypervisor}) with {len(inv.vfs)} passed-through VFs: "
                         + _names([vf.address for vf in inv.vfs]))
        return Check("sriov", FAIL, f"VM ({inv.host.hypervisor}) without passed-through VFs",
                     "attach SR-IOV or InfiniBand VFs to this VM (PCI passthrough) on the hypervisor")
    if not capable:
        if inv.dra_devices():
            return Check("sriov", WARN, "no SR-IOV capable PF: only PF InfiniBand ports will be published",
                         "enable SR-IOV in the BIOS and NIC firmware (mlxconfig SRIOV_EN=1 NUM_OF_VFS=N)")
        return Check("sriov", FAIL, "no SR-IOV capable PF and no InfiniBand device found",
                     "enable SR-IOV in the BIOS and NIC firmware (mlxconfig SRIOV_EN=1 NUM_OF_VFS=N)")
    counts = [f"{_pf_label(inv, pf.address)} {pf.sriov_numvfs or 0}/{pf.sriov_totalvfs} VFs" for pf in capable]
    empty = [pf for pf in capable if not pf.sriov_numvfs]
    if empty:
        first = _pf_label(inv, empty[0].address).split(" ")[0]
        return Check("sriov", WARN, f"{len(empty)} of {len(capable)} SR-IOV PFs have no VFs: " + _names(counts),
                     f"create VFs, e.g. echo 8 > /sys/bus/pci/devices/{empty[0].address}/sriov_numvfs ({first})")
    return Check("sriov", PASS, f"{len(capable)} SR-IOV PFs: " + _names(counts))


def _infiniband(inv: Inventory) -> Check:
    ports = [d for d in inv.dra_devices() if d.driver == IB_DRIVER]
    if not ports:
        return Check("infiniband", SKIP, "no InfiniBand ports")
    findings, fixes = [], []
    # Zero GUIDs first: such VFs never become Active, so that is the fix to try first.
    zero = [d.rdma_device or d.pci_address for d in ports if d.attributes.get("type") == "VF"
            and d.attributes.get("nodeGUID") == ZERO_GUID]
    if zero:
        findings.append(f"{len(zero)} VFs have an all-zero GUID: {_names(zero)}")
        fixes.append("set VF GUIDs (ip link set <pf> vf N node_guid G port_guid G) and rebind the VFs")
    down = [f"{d.rdma_device or d.pci_address} port {d.port} {d.attributes.get('portState', 'Unknown')}"
            for d in ports if d.attributes.get("portState") != "Active"]
    if down:
        findings.append(f"{len(down)} of {len(ports)} ports not Active: {_names(down)}")
        fixes.append("check cables and that a subnet manager (opensm/UFM) serves the fabric")
    if findings:
        return Check("infiniband", WARN, "; ".join(findings), "; ".join(fixes))
    return Check("infiniband", PASS, f"{len(ports)} InfiniBand ports, all Active")


def _vf_drivers(inv: Inventory) -> Check:
    if not inv.vfs:
        return Check("vf-drivers", SKIP, "no VFs")
    unbound = [vf.address for vf in inv.vfs if not vf.driver]
    vfio = [vf for vf in inv.vfs if vf.driver == "vfio-pci"]
    note = f" ({len(vfio)} on vfio-pci)" if vfio else ""
    if unbound:
        return Check("vf-drivers", WARN, f"{len(unbound)} VFs have no driver bound: {_names(unbound)}",
                     f"echo {unbound[0]} > /sys/bus/pci/drivers_probe (and check sriov_drivers_autoprobe)")
    return Check("vf-drivers", PASS, f"all {len(inv.vfs)} VFs have a driver bound{note}")


def _iommu(sysfs: Sysfs) -> Check:
    state = iommu_state(sysfs)
    if state.enabled and not state.noiommu:
        return Check("iommu", PASS, f"IOMMU on ({state.groups} groups): vfio-pci passthrough available")
    if state.noiommu:
        return Check("iommu", WARN, "vfio runs in unsafe no-IOMMU mode: a vfio-pci VF can DMA anywhere",
                     "boot with intel_iommu=on iommu=pt (AMD: amd_iommu=on) and disable enable_unsafe_noiommu_mode")
    return Check("iommu", WARN, "IOMMU is off: claims asking for driver vfio-pci will fail",
                 "boot with intel_iommu=on iommu=pt (AMD: amd_iommu=on)")


def _has_rdma(inv: Inventory) -> bool:
    return any(fn.rdma_devices for fn in inv.functions)


def _rdma_hardware(inv: Inventory) -> bool:
    """RDMA-capable hardware, whether or not its RDMA driver is loaded: visible RDMA devices,
    InfiniBand functions, or mlx5 (every ConnectX from 4 on does RoCE)."""
    return _has_rdma(inv) or any(inv.link_type(fn) == LINK_INFINIBAND or fn.driver == "mlx5_core"
                                 for fn in inv.functions)


def _rdma_netns(inv: Inventory, sysfs: Sysfs) -> Check:
    if not _has_rdma(inv):
        return Check("rdma-netns", SKIP, "no RDMA devices")
    mode = rdma_netns_mode(sysfs)
    if mode == "exclusive":
        return Check("rdma-netns", PASS, "RDMA netns mode exclusive: each pod sees only its own RDMA devices")
    fix = "rdma system set netns exclusive (persist with ib_core.netns_mode=0 on the kernel command line)"
    if mode == "shared":
        return Check("rdma-netns", WARN, "RDMA netns mode shared: every pod sees every RDMA device", fix)
    return Check("rdma-netns", WARN, "RDMA netns mode unknown (ib_core netns_mode not readable)", fix)


def _modules(inv: Inventory, sysfs: Sysfs) -> Check:
    required: dict[str, str] = {}  # module -> why
    optional: dict[str, str] = {"vfio_pci": "VfConfig driver vfio-pci"}
    if _rdma_hardware(inv):
        required["ib_uverbs"] = "RDMA verbs char devices"
        optional["rdma_ucm"] = "rdma_cm (RDMA connection manager)"
        if any(fn.driver == "mlx5_core" for fn in inv.functions):
            required["mlx5_ib"] = "RDMA devices of mlx5 NICs"
    missing_req = [m for m in required if not module_loaded(sysfs, m)]
    missing_opt = [m for m in optional if not module_loaded(sysfs, m)]
    if missing_req:
        why = "; ".join(f"{m}: {required[m]}" for m in missing_req)
        return Check("kernel-modules", FAIL, f"not loaded: {why}", f"modprobe {' '.join(missing_req)}")
    if missing_opt:
        why = "; ".join(f"{m}: {optional[m]}" for m in missing_opt)
        return Check("kernel-modules", WARN, f"not loaded: {why}", f"modprobe {' '.join(missing_opt)}")
    return Check("kernel-modules", PASS, "loaded: " + ", ".join([*required, *optional]))


def _dev_nodes(inv: Inventory, paths: HostPaths) -> Check:
    nodes = [c.path for c in inv.rdma_nodes()] + inv.vfio_nodes()
    if not nodes:
        return Check("dev-nodes", SKIP, "no RDMA or vfio-pci devices")
    missing = [n for n in nodes if not os.path.exists(paths.dev_file(n))]
    if missing:
        return Check("dev-nodes", WARN, f"{len(missing)} of {len(nodes)} device nodes missing under "
                     f"{paths.dev}: {_names(missing)}",
                     "check udev (rdma-core rules) and that /dev is the host's (mount it into the container)")
    return Check("dev-nodes", PASS, f"all {len(nodes)} RDMA/vfio device nodes present under {paths.dev}")


def _writable_dir(path: str) -> tuple[bool, str]:
    """(ok, how): a writable dir, or a missing one whose nearest existing parent is writable."""
    if os.path.isdir(path):
        return os.access(path, os.W_OK), "writable" if os.access(path, os.W_OK) else "not writable"
    parent = path
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    ok = os.path.isdir(parent) and os.access(parent, os.W_OK)
    return ok, "will be created" if ok else f"missing and {parent} is not writable"


def _kubelet(paths: HostPaths, opts: DoctorOptions) -> Check:
    root = opts.kubelet_root_dir
    missing = [d for d in ("plugins_registry", "plugins") if not os.path.isdir(paths.host_file(f"{root}/{d}"))]
    if missing:
        return Check("kubelet-dirs", FAIL, f"{root}/{missing[0]} not found: no kubelet here or another --root-dir",
                     "run on a Kubernetes node; pass --kubelet-root-dir if the kubelet uses --root-dir")
    return Check("kubelet-dirs", PASS, f"{root}/plugins_registry and {root}/plugins exist")


def _cdi_dirs(paths: HostPaths, opts: DoctorOptions, runtimes: list[RuntimeConfig]) -> Check:
    states = [(d, *_writable_dir(paths.host_file(d))) for d in opts.cdi_dirs]
    bad = [f"{d} ({how})" for d, ok, how in states if not ok]
    if bad:
        return Check("cdi-dirs", FAIL, "CDI spec dirs not writable: " + ", ".join(bad),
                     "run serve as root with these dirs mounted read-write (hostPath)")
    spec_dir = opts.cdi_dirs[-1]
    blind = [r.runtime for r in runtimes if r.cdi_spec_dirs and spec_dir not in r.cdi_spec_dirs]
    if blind:
        return Check("cdi-dirs", FAIL, f"{', '.join(blind)} does not read CDI specs from {spec_dir}",
                     f"add {spec_dir} to cdi_spec_dirs in the runtime configuration")
    return Check("cdi-dirs", PASS, ", ".join(f"{d} {how}" for d, _, how in states))


def _is_socket(path: str) -> bool:
    try:
        return stat.S_ISSOCK(os.stat(path).st_mode)
    except OSError:
        return False


def _runtimes(paths: HostPaths, runtimes: list[RuntimeConfig]) -> list[Check]:
    if not runtimes:
        return [Check("container-runtime", WARN, "no containerd or CRI-O configuration found",
                      "install containerd >= 1.7.2 or CRI-O >= 1.28 (CDI), with NRI enabled")]
    out = []
    for rt in runtimes:
        name = f"runtime-{rt.runtime}"
        if rt.error:
            out.append(Check(name, FAIL, f"{rt.config_path}: {rt.error}", f"fix {rt.config_path}"))
            continue
        problems, fixes, status = [], [], PASS
        if rt.cdi_enabled is False:
            status = FAIL
            problems.append("CDI disabled")
            fixes.append("set enable_cdi = true in the CRI plugin section")
        elif rt.cdi_enabled is None:
            status = WARN
            problems.append("enable_cdi unset (containerd 1.7 defaults to off)")
            fixes.append("set enable_cdi = true in the CRI plugin section")
        if rt.nri_enabled is False:
            status = FAIL
            problems.append("NRI disabled")
            fixes.append("enable NRI (containerd: [plugins.'io.containerd.nri.v1.nri'] disable = false;"
                         " CRI-O: [crio.nri] enable_nri = true)")
        elif rt.nri_enabled is None:
            status = FAIL if status == FAIL else WARN
            problems.append("NRI setting unset (containerd 1.7 defaults to off)")
            fixes.append("set disable = false under [plugins.'io.containerd.nri.v1.nri']")
        elif not _is_socket(paths.host_file(rt.nri_socket)):
            status = FAIL if status == FAIL else WARN
            problems.append(f"NRI socket {rt.nri_socket} not present (runtime not running or not restarted)")
            fixes.append(f"restart {rt.runtime} after enabling NRI")
        if problems:
            out.append(Check(name, status, f"{rt.config_path}: " + "; ".join(problems), "; ".join(fixes)))
        else:
            out.append(Check(name, PASS, f"{rt.config_path}: CDI and NRI enabled, NRI socket {rt.nri_socket}"))
    return out
