"""The device model: what a node has, and how each piece becomes a DRA device.

Pure data and rules, no I/O: the host layer (sriovdra.host) fills these dataclasses from
sysfs, everything above consumes them. Two DRA drivers share one inventory:

* ``sriovnetwork.openshift.io`` publishes Ethernet virtual functions (RoCE-capable or not),
  one DRA device per VF.
* ``ib.sigs.k8s.io`` publishes InfiniBand ports, one DRA device per port of every PF and VF
  whose link layer is InfiniBand.

A PCI function belongs to exactly one of the two (decided by its link type), so the same
hardware is never offered twice.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Union

SRIOV_DRIVER = "sriovnetwork.openshift.io"
IB_DRIVER = "ib.sigs.k8s.io"
DRIVERS = (SRIOV_DRIVER, IB_DRIVER)
STANDARD_DOMAIN = "resource.kubernetes.io"

ROLE_PF = "PF"
ROLE_VF = "VF"

LINK_ETHERNET = "ethernet"
LINK_INFINIBAND = "infiniband"
LINK_UNKNOWN = "unknown"

HOST_BAREMETAL = "baremetal"
HOST_VM = "vm"

# Device IDs of SR-IOV virtual functions (vendor -> device IDs). A function with one of these
# IDs is a VF even when it has no physfn link, which is what a VF passed through into a VM
# looks like. Sources: the kernel's mlx4/mlx5 PCI tables (entries flagged as VFs) and the PCI
# ID database entries named "... Virtual Function".
KNOWN_VF_DEVICE_IDS: dict[str, frozenset[str]] = {
    # Mellanox/NVIDIA: ConnectX-2/3 (mlx4), ConnectX-4..8 (mlx5, 101e is the generic mlx5 VF), BlueField
    "15b3": frozenset({"1002", "1004", "1012", "1014", "1016", "1018", "101a", "101c", "101e", "a2d3"}),
    # Intel: 82576, I350, 82599, X540, X550, X552, 700 series, X722, E800 (adaptive VF)
    "8086": frozenset({"10ca", "1520", "10ed", "1515", "1565", "15a8", "154c", "1571",
                       "37cd", "1889", "15c5", "1530"}),
    # Broadcom NetXtreme-E / NetXtreme-C VFs
    "14e4": frozenset({"16c1", "16cb", "16d3", "16dc", "16e1", "16e5", "1606", "1807",
                       "1808", "1809", "d800"}),
}

# Physical-function IDs of InfiniBand-capable HCAs: inside a VM these stay PFs (a whole HCA
# passed through), unlike unknown IB functions, which a VM only ever gets as VFs.
KNOWN_PF_DEVICE_IDS: dict[str, frozenset[str]] = {
    "15b3": frozenset({"1003", "1007", "1011", "1013", "1015", "1017", "1019", "101b", "101d", "101f",
                       "1021", "1023", "a2d2", "a2d6", "a2dc"}),
}

AttributeValue = Union[bool, int, str]

MAX_ATTRIBUTES = 32  # attributes + capacities per device
MAX_STRING_BYTES = 64  # string and version attribute values
MAX_IDENTIFIER = 32  # the C identifier part of an attribute name
MAX_DOMAIN = 63  # the domain part of an attribute name
MAX_DEVICE_NAME = 63
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

# Every attribute name each driver can publish (vf_attributes / ib_port_attributes below): a device
# policy may not set these (tests/unit/test_policy.py checks the list against every demo device).
_TOPOLOGY_ATTRIBUTES = ("numaNode", f"{STANDARD_DOMAIN}/pciBusID", f"{STANDARD_DOMAIN}/pcieRoot", "dra.net/numaNode")
BUILTIN_ATTRIBUTES: dict[str, frozenset[str]] = {
    SRIOV_DRIVER: frozenset({"vendor", "deviceID", "pciAddress", "vfID", "linkType", "rdmaCapable", "passthrough",
                             "pfDeviceID", "pfPciAddress", "PFName", "EswitchMode", "k8s.cni.cncf.io/deviceID",
                             *_TOPOLOGY_ATTRIBUTES}),
    IB_DRIVER: frozenset({"type", "linkSpeed", "linkWidth", "portState", "physState", "firmwareVersion", "nodeGUID",
                          "ibDevice", "portGUID", "pciAddress", "port", "vendor", "deviceID", "vfID", "passthrough",
                          "pfPciAddress", "parentDevice", *_TOPOLOGY_ATTRIBUTES}),
}

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_C_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


@dataclass(frozen=True)
class CharDevice:
    """A character device node as the node sees it (path under /dev) with its numbers."""

    name: str
    path: str
    major: int | None = None
    minor: int | None = None

    def to_dict(self) -> dict:
        return {"name": self.name, "path": self.path, "major": self.major, "minor": self.minor}


@dataclass
class NetDev:
    name: str
    mac: str | None = None
    mtu: int | None = None
    operstate: str | None = None
    speed_mbps: int | None = None  # None when the link is down or the driver does not say
    link_type: str = LINK_UNKNOWN
    phys_port_name: str | None = None
    dev_port: int | None = None  # which port of a multi-port function (mlx4: one netdev per port)

    @property
    def is_representor(self) -> bool:
        """Switchdev VF/SF representors (pf0vf3, pf0sf1, c1pf0vf2) are not uplinks."""
        name = self.phys_port_name or ""
        return bool(re.match(r"^(c\d+)?pf\d+(vf|sf)\d+$", name))

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "mac": self.mac,
            "mtu": self.mtu,
            "operstate": self.operstate,
            "speedMbps": self.speed_mbps,
            "linkType": self.link_type,
            "physPortName": self.phys_port_name,
            "devPort": self.dev_port,
        }


@dataclass
class IbPort:
    number: int
    state: str = "Unknown"  # Down, Init, Armed, Active, ActiveDefer, Unknown
    phys_state: str = "Unknown"  # LinkUp, Polling, Disabled, ...
    rate: str | None = None  # as the kernel writes it: "100 Gb/sec (4X EDR)"
    link_speed: str | None = None  # "100Gb/s"
    link_width: str | None = None  # "4X"
    lid: int | None = None
    sm_lid: int | None = None
    link_layer: str | None = None  # "InfiniBand" or "Ethernet" (RoCE)
    gid0: str | None = None  # GID index 0: the port GUID with the subnet prefix
    umad: CharDevice | None = None
    issm: CharDevice | None = None
    # The P_Key table the subnet manager programmed (ports/<n>/pkeys/<index>): index -> P_Key, unused
    # (zero) entries left out. None when it could not be read (a hidden RDMA device): unknown, not empty.
    pkeys: dict[int, int] | None = None

    @property
    def is_infiniband(self) -> bool:
        return (self.link_layer or "").lower() == "infiniband"

    def to_dict(self) -> dict:
        return {
            "port": self.number,
            "state": self.state,
            "physState": self.phys_state,
            "rate": self.rate,
            "linkSpeed": self.link_speed,
            "linkWidth": self.link_width,
            "lid": self.lid,
            "smLid": self.sm_lid,
            "linkLayer": self.link_layer,
            "portGUID": self.gid0,
            "umad": self.umad.to_dict() if self.umad else None,
            "issm": self.issm.to_dict() if self.issm else None,
            "pkeys": None if self.pkeys is None else [{"index": i, "pkey": f"0x{k:04x}"}
                                                      for i, k in sorted(self.pkeys.items())],
        }


@dataclass
class RdmaDevice:
    """An RDMA (verbs) device such as mlx5_0, with its ports and char devices."""

    name: str
    node_guid: str | None = None
    fw_ver: str | None = None
    hca_type: str | None = None
    ports: list[IbPort] = field(default_factory=list)
    uverbs: CharDevice | None = None

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "nodeGUID": self.node_guid,
            "firmwareVersion": self.fw_ver,
            "hcaType": self.hca_type,
            "uverbs": self.uverbs.to_dict() if self.uverbs else None,
            "ports": [p.to_dict() for p in self.ports],
        }


@dataclass
class VfioGroup:
    number: int
    noiommu: bool = False

    @property
    def dev_name(self) -> str:
        return f"noiommu-{self.number}" if self.noiommu else str(self.number)


@dataclass
class PciFunction:
    """One network PCI function: an SR-IOV PF, a VF, or a plain NIC/HCA (role PF)."""

    address: str
    role: str = ROLE_PF
    vendor: str | None = None  # hex without 0x: "15b3"
    device: str | None = None  # hex without 0x: "101e"
    class_code: str | None = None  # hex without 0x: "020000"
    driver: str | None = None  # bound kernel driver, None when unbound
    numa_node: int = -1
    pcie_root: str | None = None  # "pci0000:3a"
    iommu_group: VfioGroup | None = None
    netdevs: list[NetDev] = field(default_factory=list)
    rdma_devices: list[RdmaDevice] = field(default_factory=list)
    # SR-IOV PF side
    sriov_totalvfs: int | None = None
    sriov_numvfs: int | None = None
    eswitch_mode: str | None = None  # legacy / switchdev, None when not readable
    vf_addresses: dict[int, str] = field(default_factory=dict)  # VF index (virtfnN) -> address
    # VF side
    vf_index: int | None = None
    pf_address: str | None = None
    passthrough: bool = False  # a VF without a visible PF (VM passthrough)

    @property
    def sriov_capable(self) -> bool:
        return bool(self.sriov_totalvfs)

    @property
    def uplink(self) -> NetDev | None:
        """The function's own netdev: the first that is not a switchdev representor."""
        for nd in self.netdevs:
            if not nd.is_representor:
                return nd
        return None

    def port_netdev(self, port: int) -> NetDev | None:
        """The netdev of IB port `port`: the one whose dev_port is port-1, else the uplink."""
        own = [nd for nd in self.netdevs if not nd.is_representor]
        for nd in own:
            if nd.dev_port is not None and nd.dev_port == port - 1:
                return nd
        return self.uplink if len(own) <= 1 or port == 1 else None

    @property
    def has_representors(self) -> bool:
        return any(nd.is_representor for nd in self.netdevs)

    def to_dict(self) -> dict:
        return {
            "pciAddress": self.address,
            "role": self.role,
            "vendor": self.vendor,
            "device": self.device,
            "class": self.class_code,
            "driver": self.driver,
            "numaNode": self.numa_node,
            "pcieRoot": self.pcie_root,
            "iommuGroup": self.iommu_group.number if self.iommu_group else None,
            "vfioNoIommu": self.iommu_group.noiommu if self.iommu_group else None,
            "netdevs": [n.to_dict() for n in self.netdevs],
            "rdmaDevices": [r.to_dict() for r in self.rdma_devices],
            "sriovTotalVFs": self.sriov_totalvfs,
            "sriovNumVFs": self.sriov_numvfs,
            "eswitchMode": self.eswitch_mode,
            "vfs": [{"vfID": i, "pciAddress": a} for i, a in sorted(self.vf_addresses.items())],
            "vfIndex": self.vf_index,
            "pfPciAddress": self.pf_address,
            "passthrough": self.passthrough,
        }


@dataclass(frozen=True)
class HostInfo:
    kind: str = HOST_BAREMETAL  # baremetal | vm
    hypervisor: str | None = None  # what gave the VM away, e.g. "kvm" or "cpuid-flag"

    def to_dict(self) -> dict:
        return {"kind": self.kind, "hypervisor": self.hypervisor}


@dataclass(frozen=True)
class Problem:
    """Something discovery could not read; the named field is degraded, nothing else."""

    path: str
    message: str

    def to_dict(self) -> dict:
        return {"path": self.path, "message": self.message}

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


@dataclass(frozen=True)
class DraDevice:
    """A device as published in a ResourceSlice, plus where it comes from on the node."""

    driver: str
    name: str
    attributes: dict[str, AttributeValue]
    pci_address: str
    port: int | None = None  # IB port number for ib.sigs.k8s.io devices
    rdma_device: str | None = None
    netdev: str | None = None

    def slice_attributes(self) -> dict[str, dict]:
        """Attributes in resource.k8s.io/v1 form: {"name": {"string": "x"}}."""
        return {k: attribute_json(v) for k, v in self.attributes.items()}

    def to_dict(self) -> dict:
        return {
            "driver": self.driver,
            "name": self.name,
            "pciAddress": self.pci_address,
            "port": self.port,
            "rdmaDevice": self.rdma_device,
            "netdev": self.netdev,
            "attributes": self.slice_attributes(),
        }


@dataclass
class Inventory:
    host: HostInfo
    functions: list[PciFunction]
    problems: list[Problem] = field(default_factory=list)
    rdma_cm: CharDevice | None = None  # host-wide /dev/infiniband/rdma_cm (rdma_ucm loaded)

    def __post_init__(self) -> None:
        # An inventory is a snapshot: discovery builds it once and nothing changes it afterwards,
        # so the lookups and the device list are computed once (prepare reads them every call).
        self._by_address = {f.address: f for f in self.functions}
        self._devices: list[DraDevice] | None = None

    def function(self, address: str) -> PciFunction | None:
        return self._by_address.get(address)

    def parent(self, fn: PciFunction) -> PciFunction | None:
        return self._by_address.get(fn.pf_address) if fn.pf_address else None

    @property
    def pfs(self) -> list[PciFunction]:
        return [f for f in self.functions if f.role == ROLE_PF]

    @property
    def vfs(self) -> list[PciFunction]:
        return [f for f in self.functions if f.role == ROLE_VF]

    def link_type(self, fn: PciFunction) -> str:
        return link_type(fn, self.parent(fn))

    def dra_devices(self) -> list[DraDevice]:
        if self._devices is None:
            self._devices = dra_devices(self)
        return list(self._devices)

    def vfio_nodes(self) -> list[str]:
        """The /dev/vfio nodes that vfio-pci bound functions need."""
        groups = [f.iommu_group for f in self.functions if f.driver == "vfio-pci" and f.iommu_group]
        return ["/dev/vfio/vfio", *(f"/dev/vfio/{g.dev_name}" for g in groups)] if groups else []

    def rdma_nodes(self) -> list[CharDevice]:
        """Every RDMA char device of the node: uverbs, umad and issm per port, rdma_cm."""
        nodes = []
        for fn in self.functions:
            for rd in fn.rdma_devices:
                nodes += [c for c in (rd.uverbs, *(x for p in rd.ports for x in (p.umad, p.issm))) if c]
        return nodes + ([self.rdma_cm] if self.rdma_cm and nodes else [])

    def to_dict(self) -> dict:
        return {
            "host": self.host.to_dict(),
            "rdmaCm": self.rdma_cm.to_dict() if self.rdma_cm else None,
            "functions": [f.to_dict() for f in self.functions],
            "devices": [d.to_dict() for d in self.dra_devices()],
            "problems": [p.to_dict() for p in self.problems],
        }


# --- classification ---------------------------------------------------------------------


def classify_function(
    *,
    has_physfn: bool,
    sriov_totalvfs: int | None,
    vendor: str | None,
    device: str | None,
    host_kind: str,
    has_infiniband: bool,
) -> tuple[str, bool]:
    """Decide PF or VF, and whether a VF is a passthrough VF (its PF is not visible).

    The rule, first match wins:
      1. a ``physfn`` link           -> VF (baremetal VF, parent known)
      2. ``sriov_totalvfs`` > 0      -> PF (SR-IOV capable physical function)
      3. a known VF device ID        -> VF, passthrough (a VF handed to a VM keeps its ID)
      4. a VM and an InfiniBand HCA  -> VF, passthrough, unless its ID is a known PF
         (a whole HCA passed through stays a PF)
      5. otherwise                   -> PF (a plain NIC/HCA without SR-IOV)
    Rule 3 is what the upstream drivers miss: inside a VM there is no physfn link.
    """
    if has_physfn:
        return ROLE_VF, False
    if sriov_totalvfs:
        return ROLE_PF, False
    if vendor and device and device in KNOWN_VF_DEVICE_IDS.get(vendor, ()):
        return ROLE_VF, True
    if host_kind == HOST_VM and has_infiniband and device not in KNOWN_PF_DEVICE_IDS.get(vendor or "", ()):
        return ROLE_VF, True
    return ROLE_PF, False


def link_type(fn: PciFunction, parent: PciFunction | None = None) -> str:
    """Ethernet or InfiniBand: RDMA port link layer, then netdev type, then PF, then PCI class."""
    for rd in fn.rdma_devices:
        for port in rd.ports:
            if port.link_layer:
                return LINK_INFINIBAND if port.is_infiniband else LINK_ETHERNET
    for nd in fn.netdevs:
        if nd.link_type != LINK_UNKNOWN and not nd.is_representor:
            return nd.link_type
    if parent is not None:
        return link_type(parent)
    if fn.class_code:
        if fn.class_code.startswith("0207"):
            return LINK_INFINIBAND
        if fn.class_code.startswith("02"):
            return LINK_ETHERNET
    return LINK_UNKNOWN


# --- DRA devices ------------------------------------------------------------------------


def pci_label(address: str) -> str:
    """0000:3b:00.2 -> 0000-3b-00-2 (a DNS-label fragment)."""
    return address.lower().replace(":", "-").replace(".", "-")


def vf_device_name(address: str) -> str:
    return f"vf-{pci_label(address)}"


def ib_device_name(address: str, port: int) -> str:
    return f"ib-{pci_label(address)}-p{port}"


def clip(value: str, limit: int = MAX_STRING_BYTES) -> str:
    """Cut a string to the API's byte limit without splitting a UTF-8 character."""
    raw = value.encode()
    if len(raw) <= limit:
        return value
    return raw[:limit].decode(errors="ignore")


def _put(attrs: dict[str, AttributeValue], name: str, value: AttributeValue | None) -> None:
    """Set an attribute the API server will accept: strings clipped, out-of-range ints left out."""
    if value is None:
        return
    if isinstance(value, str):
        attrs[name] = clip(value)
    elif isinstance(value, bool) or INT64_MIN <= value <= INT64_MAX:
        attrs[name] = value


def _topology(attrs: dict[str, AttributeValue], fn: PciFunction, numa: int) -> None:
    _put(attrs, "numaNode", numa)
    _put(attrs, f"{STANDARD_DOMAIN}/pciBusID", fn.address)
    _put(attrs, f"{STANDARD_DOMAIN}/pcieRoot", fn.pcie_root)
    # dra.net/numaNode is what DraNet and dra-driver-cpu publish: matchAttribute across drivers.
    _put(attrs, "dra.net/numaNode", numa)


def _numa(fn: PciFunction, parent: PciFunction | None) -> int:
    if fn.numa_node >= 0 or parent is None:
        return fn.numa_node
    return parent.numa_node


def vf_attributes(fn: PciFunction, parent: PciFunction | None, link: str) -> dict[str, AttributeValue]:
    """Attributes of an Ethernet VF (driver sriovnetwork.openshift.io)."""
    attrs: dict[str, AttributeValue] = {}
    _put(attrs, "vendor", fn.vendor or (parent.vendor if parent else None))
    _put(attrs, "deviceID", fn.device)
    _put(attrs, "pciAddress", fn.address)
    _put(attrs, "vfID", fn.vf_index)
    _put(attrs, "linkType", link)
    _put(attrs, "rdmaCapable", bool(fn.rdma_devices))
    _put(attrs, "passthrough", fn.passthrough)
    if parent is not None:
        _put(attrs, "pfDeviceID", parent.device)
        _put(attrs, "pfPciAddress", parent.address)
        uplink = parent.uplink
        _put(attrs, "PFName", uplink.name if uplink else None)
        _put(attrs, "EswitchMode", parent.eswitch_mode)
    _topology(attrs, fn, _numa(fn, parent))
    _put(attrs, "k8s.cni.cncf.io/deviceID", fn.address)  # Multus DRA integration key
    return attrs


def ib_port_attributes(
    fn: PciFunction, parent: PciFunction | None, rdma: RdmaDevice | None, port: IbPort
) -> dict[str, AttributeValue]:
    """Attributes of one InfiniBand port (driver ib.sigs.k8s.io), named as the IB seed documents.

    rdma is None when the function's RDMA device is not visible (bound to vfio-pci, or moved
    into a pod's network namespace in exclusive mode): the PCI facts are still published.
    """
    attrs: dict[str, AttributeValue] = {}
    _put(attrs, "type", fn.role)
    _put(attrs, "linkSpeed", port.link_speed)
    _put(attrs, "linkWidth", port.link_width)
    _put(attrs, "portState", port.state)
    _put(attrs, "physState", port.phys_state)
    if rdma is not None:
        _put(attrs, "firmwareVersion", rdma.fw_ver)
        _put(attrs, "nodeGUID", rdma.node_guid)
        _put(attrs, "ibDevice", rdma.name)
    _put(attrs, "portGUID", port.gid0)
    _put(attrs, "pciAddress", fn.address)
    _put(attrs, "port", port.number)
    _put(attrs, "vendor", fn.vendor)
    _put(attrs, "deviceID", fn.device)
    if fn.role == ROLE_VF:
        _put(attrs, "vfID", fn.vf_index)
        _put(attrs, "passthrough", fn.passthrough)
        if parent is not None:
            _put(attrs, "pfPciAddress", parent.address)
            if parent.rdma_devices:
                _put(attrs, "parentDevice", parent.rdma_devices[0].name)
    _topology(attrs, fn, _numa(fn, parent))
    return attrs


def dra_devices(inv: Inventory) -> list[DraDevice]:
    """Every device the node offers, sorted by driver and name (the ResourceSlice order)."""
    out: list[DraDevice] = []
    for fn in inv.functions:
        parent = inv.parent(fn)
        link = link_type(fn, parent)
        uplink = fn.uplink
        if link == LINK_INFINIBAND:
            ports: list[tuple[RdmaDevice | None, IbPort]] = [
                (rdma, port) for rdma in fn.rdma_devices for port in rdma.ports
                if port.is_infiniband or not port.link_layer]
            if not fn.rdma_devices:
                ports = [(None, IbPort(number=1))]  # a hidden RDMA device: still the function's port 1
            for rdma, port in ports:
                netdev = fn.port_netdev(port.number)
                out.append(DraDevice(
                    driver=IB_DRIVER,
                    name=ib_device_name(fn.address, port.number),
                    attributes=ib_port_attributes(fn, parent, rdma, port),
                    pci_address=fn.address,
                    port=port.number,
                    rdma_device=rdma.name if rdma else None,
                    netdev=netdev.name if netdev else None,
                ))
        elif fn.role == ROLE_VF and link in (LINK_ETHERNET, LINK_UNKNOWN):
            out.append(DraDevice(
                driver=SRIOV_DRIVER,
                name=vf_device_name(fn.address),
                attributes=vf_attributes(fn, parent, link),
                pci_address=fn.address,
                rdma_device=fn.rdma_devices[0].name if fn.rdma_devices else None,
                netdev=uplink.name if uplink else None,
            ))
    out.sort(key=lambda d: (d.driver, d.name))
    return out


# --- health -----------------------------------------------------------------------------


@dataclass(frozen=True)
class DeviceHealth:
    device: str
    healthy: bool
    message: str = ""


def device_health(inv: Inventory, driver: str) -> list[DeviceHealth]:
    """IB ports are healthy when Active; VFs when their PF's uplink is not down."""
    out = []
    for d in inv.dra_devices():
        if d.driver != driver:
            continue
        if driver == IB_DRIVER:
            state = d.attributes.get("portState", "Unknown")
            out.append(DeviceHealth(d.name, state == "Active", f"port {d.port} is {state}"))
            continue
        fn = inv.function(d.pci_address)
        parent = inv.parent(fn) if fn else None
        uplink = parent.uplink if parent else None
        if uplink is not None and uplink.operstate == "down":
            out.append(DeviceHealth(d.name, False, f"PF {uplink.name} link is down"))
        else:
            out.append(DeviceHealth(d.name, True, "VF present" + (f", PF {uplink.name} {uplink.operstate}"
                                                                  if uplink else "")))
    return out


# --- API limits -------------------------------------------------------------------------


def attribute_json(value: AttributeValue) -> dict:
    if isinstance(value, bool):  # before int: bool is an int subclass
        return {"bool": value}
    if isinstance(value, int):
        return {"int": value}
    return {"string": value}


def attribute_name_problems(name: str) -> list[str]:
    """Check a qualified attribute name: C identifier, optionally prefixed by a DNS domain."""
    domain, _, ident = name.rpartition("/")
    problems = []
    if domain:
        if len(domain) > MAX_DOMAIN or not _DNS_SUBDOMAIN.match(domain):
            problems.append(f"attribute {name!r}: domain must be a DNS subdomain of at most {MAX_DOMAIN} characters")
    if len(ident) > MAX_IDENTIFIER or not _C_IDENTIFIER.match(ident):
        problems.append(f"attribute {name!r}: name must be a C identifier of at most {MAX_IDENTIFIER} characters")
    return problems


def limit_problems(dev: DraDevice) -> list[str]:
    """Everything about a device the API server would reject (resource.k8s.io/v1 validation)."""
    problems = []
    if len(dev.name) > MAX_DEVICE_NAME or not _DNS_LABEL.match(dev.name):
        problems.append(f"device name {dev.name!r} is not a DNS label")
    if len(dev.attributes) > MAX_ATTRIBUTES:
        problems.append(f"device {dev.name}: {len(dev.attributes)} attributes, limit {MAX_ATTRIBUTES}")
    for name, value in dev.attributes.items():
        problems.extend(attribute_name_problems(name))
        if isinstance(value, str) and len(value.encode()) > MAX_STRING_BYTES:
            problems.append(f"device {dev.name}: attribute {name!r} longer than {MAX_STRING_BYTES} bytes")
        if isinstance(value, int) and not isinstance(value, bool) and not INT64_MIN <= value <= INT64_MAX:
            problems.append(f"device {dev.name}: attribute {name!r} does not fit int64")
    return problems
