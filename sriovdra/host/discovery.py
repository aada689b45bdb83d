"""Discovery: read the kernel's sysfs layout into the device model.

Layout read (all under the sysfs root):
  bus/pci/devices/<bdf>/{class,vendor,device,numa_node,driver,sriov_totalvfs,sriov_numvfs,
                         virtfnN,physfn,iommu_group,net/<if>/,infiniband/<dev>/,
                         infiniband_verbs/uverbsN/,infiniband_mad/{umadN,issmN}/}
  bus/pci/devices/<bdf>/infiniband/<dev>/{node_guid,fw_ver,hca_type,
                         ports/<n>/{state,phys_state,rate,lid,sm_lid,link_layer,gids/0,pkeys/<i>}}
  kernel/iommu_groups/<n>/name, class/misc/rdma_cm/dev
These per-device directories are the objects /sys/class/{net,infiniband,infiniband_verbs,
infiniband_mad} link to; reading them from the PCI side keeps every fact tied to its function.
A file that cannot be read degrades its field and is reported in Inventory.problems.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable

from sriovdra.host.paths import HostPaths
from sriovdra.host.sysfs import Sysfs
from sriovdra.host.system import detect_host
from sriovdra.model import (
    LINK_ETHERNET,
    LINK_INFINIBAND,
    LINK_UNKNOWN,
    ROLE_PF,
    CharDevice,
    HostInfo,
    IbPort,
    Inventory,
    NetDev,
    PciFunction,
    Problem,
    RdmaDevice,
    VfioGroup,
    classify_function,
)
from sriovdra.partition import BASE_MASK

PCI_DEVICES = "bus/pci/devices"
BDF = re.compile(r"^[0-9a-f]{4,8}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$")

_ARPHRD = {"1": LINK_ETHERNET, "32": LINK_INFINIBAND}
_PORT_STATES = {"0": "Nop", "1": "Down", "2": "Init", "3": "Armed", "4": "Active", "5": "ActiveDefer"}
_RATE = re.compile(r"^\s*([0-9]{1,5}(?:\.[0-9]{1,3})?)\s*Gb/sec(?:\s*\(([0-9]{1,2}X)[^)]*\))?")
MAX_PORT = 255  # IB port numbers are u8
MAX_PKEYS = 1 << 16  # P_Key table indexes are u16
MAX_VFS = 65536
MAX_NUMA_NODES = 1 << 16


class DiscoveryError(Exception):
    """The sysfs root itself is unusable (nothing to degrade to)."""


def _number(text: str, limit: int) -> int | None:
    """A sysfs name's number (virtfn12, ports/1, iommu group 7) if it is plain ASCII digits below limit."""
    if text.isascii() and text.isdecimal() and int(text) < limit:
        return int(text)
    return None


def discover(paths: HostPaths) -> Inventory:
    sysfs = Sysfs(paths.sysfs)
    if not os.path.isdir(sysfs.path(PCI_DEVICES)):
        raise DiscoveryError(
            f"{sysfs.path(PCI_DEVICES)} does not exist: is --sysfs-root ({paths.sysfs}) a sysfs tree?")
    host = detect_host(paths, sysfs)
    functions = []
    for bdf in sysfs.listdir(PCI_DEVICES, expected=True):
        if not BDF.match(bdf):
            sysfs.problems.append(Problem(sysfs.path(f"{PCI_DEVICES}/{bdf}"), "not a PCI address, ignored"))
            continue
        fn = _read_candidate(sysfs, bdf, host)
        if fn is not None:
            functions.append(fn)
    _link_vfs(sysfs, functions)
    rdma_cm = None
    if any(fn.rdma_devices for fn in functions) and sysfs.exists("class/misc/rdma_cm"):
        rdma_cm = _char_device(sysfs, "class/misc/rdma_cm", "rdma_cm")
    return Inventory(host=host, functions=functions, problems=sysfs.problems, rdma_cm=rdma_cm)


def _read_candidate(sysfs: Sysfs, bdf: str, host: HostInfo) -> PciFunction | None:
    """A network-class function, or any function with an RDMA device (eRDMA is class 0x00ff)."""
    base = f"{PCI_DEVICES}/{bdf}"
    class_code = sysfs.read_hex_id(f"{base}/class")
    if not (class_code and class_code.startswith("02")) and not sysfs.exists(f"{base}/infiniband"):
        return None
    entries = set(sysfs.listdir(base))
    fn = PciFunction(address=bdf, class_code=class_code)
    fn.vendor = sysfs.read_hex_id(f"{base}/vendor")
    fn.device = sysfs.read_hex_id(f"{base}/device")
    fn.driver = sysfs.link_name(f"{base}/driver") if "driver" in entries else None
    numa = sysfs.read_int(f"{base}/numa_node", expected=False)
    if numa is not None and not -1 <= numa < MAX_NUMA_NODES:
        sysfs.problems.append(Problem(sysfs.path(f"{base}/numa_node"), f"NUMA node {numa} out of range"))
    fn.numa_node = numa if numa is not None and 0 <= numa < MAX_NUMA_NODES else -1
    fn.pcie_root = _pcie_root(sysfs.link_target(base) or "")
    if "iommu_group" in entries:
        fn.iommu_group = _iommu_group(sysfs, base)
    if "sriov_totalvfs" in entries:
        fn.sriov_totalvfs = sysfs.read_int(f"{base}/sriov_totalvfs")
        fn.sriov_numvfs = sysfs.read_int(f"{base}/sriov_numvfs")
        fn.vf_addresses = _virtfns(sysfs, base, entries)
    if "physfn" in entries:
        fn.pf_address = sysfs.link_name(f"{base}/physfn")
    fn.netdevs = [_read_netdev(sysfs, f"{d}/{name}", name) for d in _net_dirs(sysfs, base, entries)
                  for name in sysfs.listdir(d)]
    if "infiniband" in entries:
        fn.rdma_devices = _read_rdma(sysfs, base, entries)
    fn.role, fn.passthrough = classify_function(
        has_physfn="physfn" in entries,
        sriov_totalvfs=fn.sriov_totalvfs,
        vendor=fn.vendor,
        device=fn.device,
        host_kind=host.kind,
        has_infiniband=any(p.is_infiniband for r in fn.rdma_devices for p in r.ports)
        or (class_code or "").startswith("0207"),
    )
    if fn.role == ROLE_PF and fn.sriov_capable:
        fn.eswitch_mode = _eswitch_mode(sysfs, base, fn)
    return fn


def _net_dirs(sysfs: Sysfs, base: str, entries: set[str]) -> list[str]:
    """net/ under the function, or under its virtio child (virtio-net: <bdf>/virtio2/net/eth0)."""
    if "net" in entries:
        return [f"{base}/net"]
    return [f"{base}/{e}/net" for e in sorted(entries) if e.startswith("virtio") and sysfs.exists(f"{base}/{e}/net")]


def _eswitch_mode(sysfs: Sysfs, base: str, pf: PciFunction) -> str | None:
    """legacy or switchdev without devlink: MLNX_OFED's compat file when present; else switchdev
    exactly when VF representors exist (they do, one per VF, in switchdev mode); a PF with VFs and
    no representors is legacy; a PF without VFs cannot tell (None)."""
    if pf.uplink is not None:
        mode = sysfs.read(f"{base}/net/{pf.uplink.name}/compat/devlink/mode", expected=False)
        if mode in ("legacy", "switchdev"):
            return mode
    if pf.has_representors:
        return "switchdev"
    return "legacy" if pf.sriov_numvfs else None


def _pcie_root(target: str) -> str | None:
    """bus/pci/devices/<bdf> -> ../../../devices/pci0000:3a/0000:3a:00.0/0000:3b:00.0 -> pci0000:3a."""
    for part in target.split("/"):
        if part.startswith("pci") and ":" in part:
            return part
    return None


def _iommu_group(sysfs: Sysfs, base: str) -> VfioGroup | None:
    name = sysfs.link_name(f"{base}/iommu_group")
    if name is None:
        return None
    number = _number(name, 1 << 31)
    if number is None:
        sysfs.problems.append(Problem(sysfs.path(f"{base}/iommu_group"), f"not a group number: {name!r}"))
        return None
    label = sysfs.read(f"kernel/iommu_groups/{name}/name", expected=False)
    return VfioGroup(number=number, noiommu=label == "vfio-noiommu")


def _virtfns(sysfs: Sysfs, base: str, entries: set[str]) -> dict[int, str]:
    by_index: dict[int, str] = {}
    for entry in entries:
        index = _number(entry[6:], MAX_VFS) if entry.startswith("virtfn") else None
        if index is not None:
            target = sysfs.link_name(f"{base}/{entry}")
            if target:
                by_index[index] = target
    return dict(sorted(by_index.items()))


def _read_netdev(sysfs: Sysfs, base: str, name: str) -> NetDev:
    speed = sysfs.read_int(f"{base}/speed", expected=False)
    return NetDev(
        name=name,
        mac=sysfs.read(f"{base}/address"),
        mtu=sysfs.read_int(f"{base}/mtu"),
        operstate=sysfs.read(f"{base}/operstate"),
        speed_mbps=speed if speed is not None and speed >= 0 else None,
        link_type=_ARPHRD.get(sysfs.read(f"{base}/type") or "", LINK_UNKNOWN),
        phys_port_name=sysfs.read(f"{base}/phys_port_name", expected=False) or None,
        dev_port=sysfs.read_int(f"{base}/dev_port", expected=False),
    )


def _char_device(sysfs: Sysfs, base: str, name: str) -> CharDevice:
    dev = sysfs.read(f"{base}/dev", expected=False)
    major = minor = None
    if dev and ":" in dev:
        a, _, b = dev.partition(":")
        if a.isdigit() and b.isdigit():
            major, minor = int(a), int(b)
    return CharDevice(name=name, path=f"/dev/infiniband/{name}", major=major, minor=minor)


def _read_rdma(sysfs: Sysfs, base: str, entries: set[str]) -> list[RdmaDevice]:
    uverbs: dict[str, CharDevice] = {}
    mads: dict[tuple[str, int, str], CharDevice] = {}  # (ibdev, port, "umad"/"issm")
    if "infiniband_verbs" in entries:
        for name in sysfs.listdir(f"{base}/infiniband_verbs"):
            cbase = f"{base}/infiniband_verbs/{name}"
            ibdev = sysfs.read(f"{cbase}/ibdev")
            if ibdev:
                uverbs[ibdev] = _char_device(sysfs, cbase, name)
    if "infiniband_mad" in entries:
        for name in sysfs.listdir(f"{base}/infiniband_mad"):
            kind = "umad" if name.startswith("umad") else "issm" if name.startswith("issm") else None
            if kind is None:
                continue
            cbase = f"{base}/infiniband_mad/{name}"
            ibdev = sysfs.read(f"{cbase}/ibdev")
            port = sysfs.read_int(f"{cbase}/port")
            if ibdev and port is not None and 0 < port <= MAX_PORT:
                mads[(ibdev, port, kind)] = _char_device(sysfs, cbase, name)
    devices = []
    for name in sysfs.listdir(f"{base}/infiniband"):
        dbase = f"{base}/infiniband/{name}"
        ports = []
        for pname in sysfs.listdir(f"{dbase}/ports"):
            number = _number(pname, MAX_PORT + 1)
            if not number:
                sysfs.problems.append(Problem(sysfs.path(f"{dbase}/ports/{pname}"), "not a port number, ignored"))
                continue
            port = _read_port(sysfs, f"{dbase}/ports/{pname}", number)
            port.umad = mads.get((name, port.number, "umad"))
            port.issm = mads.get((name, port.number, "issm"))
            ports.append(port)
        ports.sort(key=lambda p: p.number)
        devices.append(RdmaDevice(
            name=name,
            node_guid=sysfs.read(f"{dbase}/node_guid"),
            fw_ver=sysfs.read(f"{dbase}/fw_ver", expected=False),
            hca_type=sysfs.read(f"{dbase}/hca_type", expected=False),
            ports=ports,
            uverbs=uverbs.get(name),
        ))
    return devices


def _read_port(sysfs: Sysfs, base: str, number: int) -> IbPort:
    port = IbPort(number=number)
    state = sysfs.read(f"{base}/state")
    if state:
        port.state = _PORT_STATES.get(state.split(":", 1)[0].strip(), "Unknown")
    phys = sysfs.read(f"{base}/phys_state")
    if phys:
        port.phys_state = phys.split(":", 1)[-1].strip() or "Unknown"
    port.rate = sysfs.read(f"{base}/rate", expected=False)
    if port.rate:
        m = _RATE.match(port.rate)
        if m:
            port.link_speed = f"{m.group(1)}Gb/s"
            port.link_width = m.group(2)
    port.link_layer = sysfs.read(f"{base}/link_layer")
    if port.is_infiniband:  # LIDs are 16-bit
        port.lid = _u16(sysfs, f"{base}/lid")
        port.sm_lid = _u16(sysfs, f"{base}/sm_lid")
    port.gid0 = sysfs.read(f"{base}/gids/0", expected=False)
    return port  # pkeys: read on demand (read_pkey_table), never by the periodic rescan


def read_pkey_table(paths: HostPaths, pci_address: str, rdma_device: str, port: int
                    ) -> tuple[dict[int, int] | None, list[Problem]]:
    """One port's P_Key table and what could not be read. On demand only: mlx5 answers every
    ports/<n>/pkeys/<i> read with a firmware query (128 entries a port), too much for the rescan;
    prepare reads the allocated port's, `sriovdra discover -o json|yaml` every port's."""
    sysfs = Sysfs(paths.sysfs)
    table = _pkey_table(sysfs, f"{PCI_DEVICES}/{pci_address}/infiniband/{rdma_device}/ports/{port}/pkeys")
    return table, list(sysfs.problems)


def pkey_reader(paths: HostPaths, on_problem: Callable[[Problem], None]) -> Callable[[str, str, int], dict | None]:
    """read_pkey_table as partition.check_device takes it, reporting what could not be read."""
    def read(pci_address: str, rdma_device: str, port: int) -> dict[int, int] | None:
        table, problems = read_pkey_table(paths, pci_address, rdma_device, port)
        for problem in problems:
            on_problem(problem)
        return table
    return read


def with_pkey_tables(inv: Inventory, paths: HostPaths) -> Inventory:
    """Fill IbPort.pkeys of every port in `inv` (in place; problems added to inv.problems)."""
    for fn in inv.functions:
        for rd in fn.rdma_devices:
            for port in rd.ports:
                port.pkeys, problems = read_pkey_table(paths, fn.address, rd.name, port.number)
                inv.problems += problems
    return inv


def _pkey_table(sysfs: Sysfs, rel: str) -> dict[int, int] | None:
    """The port's P_Key table, {index: P_Key}, without unused entries (0x0000; base 0 is no partition).

    None (unknown) without the directory, or when any entry cannot be read: a partial table would
    make a partition look missing when it is only unreadable.
    """
    if not sysfs.exists(rel):
        return None
    table: dict[int, int] = {}
    for name in sysfs.listdir(rel):
        index = _number(name, MAX_PKEYS)
        value = sysfs.read_int(f"{rel}/{name}", base=16) if index is not None else None
        if value is None:  # read_int has reported why
            if index is None:
                sysfs.problems.append(Problem(sysfs.path(f"{rel}/{name}"), "not a P_Key index; table unknown"))
            return None
        if not 0 <= value <= 0xFFFF:
            sysfs.problems.append(Problem(sysfs.path(f"{rel}/{name}"), f"P_Key {value:#x} is not 16-bit; "
                                                                      f"table unknown"))
            return None
        if value & BASE_MASK:
            table[index] = value
    return table


def _u16(sysfs: Sysfs, rel: str) -> int | None:
    value = sysfs.read_int(rel, base=16, expected=False)
    if value is not None and not 0 <= value <= 0xFFFF:
        sysfs.problems.append(Problem(sysfs.path(rel), f"LID {value:#x} is not 16-bit"))
        return None
    return value


def _link_vfs(sysfs: Sysfs, functions: list[PciFunction]) -> None:
    """Fill each VF's index and PF address from the PFs' virtfn links."""
    by_address = {f.address: f for f in functions}
    for pf in functions:
        for index, address in pf.vf_addresses.items():
            vf = by_address.get(address)
            if vf is not None:
                vf.vf_index = index
                vf.pf_address = pf.address
    for vf in functions:
        if vf.pf_address and vf.vf_index is None and vf.pf_address not in by_address:
            base = f"{PCI_DEVICES}/{vf.pf_address}"
            for index, address in _virtfns(sysfs, base, set(sysfs.listdir(base))).items():
                if address == vf.address:
                    vf.vf_index = index
