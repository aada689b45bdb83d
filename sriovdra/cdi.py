"""CDI (Container Device Interface) specs: what goes into a container for each prepared device.

One transient spec file per claim, `<vendor>-<class>_<claimUID>.json`, in the CDI dir
(default /var/run/cdi). Device names embed the claim UID, so a name is never reused and a
runtime's spec cache can never serve a stale device. The cdiVersion written is the minimum
the content needs (runtimes drop a whole file whose version they do not know).

Environment per device (documented in the README):
  SR-IOV VF, token T = PCI address with ':' and '.' -> '_' (0000_3b_00_2), as the upstream
  SR-IOV DRA driver names them:
    SRIOVNETWORK_VF_DEVICE_<T>=<pci>        SRIOVNETWORK_<T>_VFIO_DEVICE=/dev/vfio/<group>
    SRIOVNETWORK_<T>_RDMA_DEVICE=mlx5_3     SRIOVNETWORK_<T>_RDMA_UVERB|_RDMA_UMAD|_RDMA_ISSM|_RDMA_CM
    SRIOVNETWORK_<T>_NETDEV|_MTU|_MAC|_VLAN (from VfConfig, when set)
  InfiniBand port, i = the device's index in the prepare call, as the InfiniBand seed's tests read:
    IB_DEVICE_<i>=<device name>  IB_DEVICE_<i>_IBDEV  _PORT  _PCI_ADDRESS  _NODE_GUID  _PORT_GUID
    _NETDEV  _UVERBS  _UMAD  _ISSM (admin access only)  _RDMA_CM  _PKEY=0x8001  _TRAFFIC_CLASS  _MTU
    _PKEY_INDEX (where the port's P_Key table has the partition)
    DRA_ADMIN_ACCESS=true for admin-access devices
  InfiniBand, once per claim (spec-level containerEdits), only when every IB device of the claim
  agrees (these are per process, not per device): NCCL_IB_PKEY=<P_Key index>, UCX_IB_PKEY=<partition>,
  NCCL_IB_TC, UCX_IB_TRAFFIC_CLASS, UCX_IB_PATH_MTU (library_env)
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from urllib.parse import quote

from sriovdra.atomicfile import remove, write_atomic
from sriovdra.config import IbConfig, VfConfig
from sriovdra.model import IB_DRIVER, SRIOV_DRIVER, CharDevice, DraDevice, Inventory
from sriovdra.partition import BASE_MASK, PartitionCheck

CDI_KINDS = {SRIOV_DRIVER: f"{SRIOV_DRIVER}/vf", IB_DRIVER: f"{IB_DRIVER}/port"}
# `serve --netdev-attach cdi`: netdev moves go into specs of their own (cdiVersion 1.1.0), so a
# runtime that cannot read 1.1.0 drops only those files, never the env/device-node specs.
NETDEV_KINDS = {SRIOV_DRIVER: f"{SRIOV_DRIVER}/netdev", IB_DRIVER: f"{IB_DRIVER}/netdev"}
DEFAULT_CDI_DIR = "/var/run/cdi"

_VENDOR = re.compile(r"^[A-Za-z]([A-Za-z0-9_.-]*[A-Za-z0-9])?$")
_CLASS = _VENDOR
_DEVICE_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9_.:-]*[A-Za-z0-9])?$")
_VERSIONS = ["0.3.0", "0.4.0", "0.5.0", "0.6.0", "0.7.0", "0.8.0", "1.0.0", "1.1.0"]


class CdiError(Exception):
    pass


@dataclass(frozen=True)
class DeviceNode:
    path: str  # inside the container
    host_path: str | None = None  # where it is on the host; written only when it differs (fake /dev roots)
    type: str = "c"

    def to_json(self) -> dict:
        out = {"path": self.path, "type": self.type}
        if self.host_path and self.host_path != self.path:
            out["hostPath"] = self.host_path
        return out


@dataclass
class Edits:
    env: list[str] = field(default_factory=list)
    device_nodes: list[DeviceNode] = field(default_factory=list)
    net_devices: list[tuple[str, str]] = field(default_factory=list)  # (host interface, name in the pod)

    def to_json(self) -> dict:
        out: dict = {}
        if self.env:
            out["env"] = list(self.env)
        if self.device_nodes:
            out["deviceNodes"] = [n.to_json() for n in self.device_nodes]
        if self.net_devices:
            out["netDevices"] = [{"hostInterfaceName": h, "name": n} for h, n in self.net_devices]
        return out


@dataclass
class CdiDevice:
    name: str
    edits: Edits


@dataclass
class Spec:
    kind: str
    devices: list[CdiDevice]
    edits: Edits | None = None  # applied once when any device of the spec is injected

    def qualified(self, name: str) -> str:
        return f"{self.kind}={name}"

    def to_json(self) -> dict:
        body: dict = {"kind": self.kind, "devices": [{"name": d.name, "containerEdits": d.edits.to_json()}
                                                      for d in self.devices]}
        if self.edits and self.edits.to_json():
            body["containerEdits"] = self.edits.to_json()
        return {"cdiVersion": minimum_version(body), **body}


def minimum_version(spec: dict) -> str:
    """The lowest cdiVersion whose schema has every field the spec uses (CDI specs-go rules)."""
    need = "0.3.0"

    def bump(v: str) -> None:
        nonlocal need
        if _VERSIONS.index(v) > _VERSIONS.index(need):
            need = v

    edits = [spec.get("containerEdits") or {}] + [d.get("containerEdits") or {} for d in spec.get("devices", [])]
    if "annotations" in spec or any("annotations" in d for d in spec.get("devices", [])):
        bump("0.6.0")
    if "." in spec.get("kind", "").partition("/")[2]:
        bump("0.6.0")
    for d in spec.get("devices", []):
        if d.get("name", "")[:1].isdigit():
            bump("0.5.0")
    for e in edits:
        if any("type" in m for m in e.get("mounts", [])):
            bump("0.4.0")
        if any("hostPath" in n for n in e.get("deviceNodes", [])):
            bump("0.5.0")
        if "intelRdt" in e or "additionalGids" in e:
            bump("0.7.0")
        if "netDevices" in e:
            bump("1.1.0")
    return need


def validate(spec: dict) -> list[str]:
    """The checks runtimes apply (CDI pkg/parser and specs-go), as messages."""
    problems = []
    vendor, _, cls = spec.get("kind", "").partition("/")
    if not (_VENDOR.match(vendor) and _CLASS.match(cls)):
        problems.append(f"kind {spec.get('kind')!r} is not <vendor>/<class>")
    version = spec.get("cdiVersion")
    if version not in _VERSIONS:
        problems.append(f"cdiVersion {version!r} is unknown")
    elif _VERSIONS.index(version) < _VERSIONS.index(minimum_version(spec)):
        problems.append(f"cdiVersion {version} is below the {minimum_version(spec)} the content needs")
    devices = spec.get("devices") or []
    if not devices:
        problems.append("a spec needs at least one device")
    names = [d.get("name", "") for d in devices]
    for name in names:
        if not _DEVICE_NAME.match(name):
            problems.append(f"device name {name!r} is invalid")
    if len(set(names)) != len(names):
        problems.append("device names must be unique")
    for e in (spec.get("containerEdits") or {}).get("env", []):
        if not isinstance(e, str) or "=" not in e or e.startswith("="):
            problems.append(f"spec containerEdits: env {e!r} is not KEY=VALUE")
    for d in devices:
        edits = d.get("containerEdits") or {}
        if not edits:
            problems.append(f"device {d.get('name')!r} has empty containerEdits")
        for e in edits.get("env", []):
            if not isinstance(e, str) or "=" not in e or e.startswith("="):
                problems.append(f"device {d.get('name')!r}: env {e!r} is not KEY=VALUE")
        for n in edits.get("deviceNodes", []):
            if not n.get("path", "").startswith("/"):
                problems.append(f"device {d.get('name')!r}: device node path {n.get('path')!r} is not absolute")
        nets = edits.get("netDevices", [])
        for key in ("hostInterfaceName", "name"):
            values = [n.get(key) for n in nets]
            if not all(values) or len(set(values)) != len(values):
                problems.append(f"device {d.get('name')!r}: netDevices {key} must be set and unique")
    return problems


def spec_file_name(kind: str, claim_uid: str) -> str:
    """The CDI transient spec name, <vendor>-<class>_<id>.json. Characters outside [A-Za-z0-9._-]
    of the ID are percent-encoded: one-to-one (no two UIDs share a file) and never a path."""
    vendor, _, cls = kind.partition("/")
    name = f"{vendor}-{cls}_{quote(claim_uid, safe='')}.json"
    if len(name.encode()) > 255:
        raise CdiError(f"claim UID {claim_uid[:40]!r}... is too long to name a spec file")
    return name


def write_spec(cdi_dir: str, file_name: str, spec: Spec) -> dict:
    """Validate, then write atomically; returns the JSON written. Runtimes read the dir without locks."""
    data = spec.to_json()
    write_json(cdi_dir, file_name, data)
    return data


def write_json(cdi_dir: str, file_name: str, data: dict) -> None:
    problems = validate(data)
    if problems:
        raise CdiError(f"refusing to write an invalid CDI spec {file_name}: {'; '.join(problems)}")
    write_atomic(os.path.join(cdi_dir, file_name), (json.dumps(data, indent=2) + "\n").encode())


def remove_spec(cdi_dir: str, file_name: str) -> bool:
    """Remove a spec file if present; True when something was removed."""
    return remove(os.path.join(cdi_dir, file_name))


# --- what goes into the container for each device -------------------------------------------


def _node(path: str, dev_root_map) -> DeviceNode:
    return DeviceNode(path=path, host_path=dev_root_map(path))


def _pci_token(address: str) -> str:
    return address.replace(":", "_").replace(".", "_")


def vf_edits(inv: Inventory, dev: DraDevice, config: VfConfig, dev_file) -> Edits:
    """Env and device nodes for an SR-IOV VF. dev_file maps /dev/x to its host location."""
    t = _pci_token(dev.pci_address)
    env = [f"SRIOVNETWORK_VF_DEVICE_{t}={dev.pci_address}"]
    nodes: list[DeviceNode] = []
    fn = inv.function(dev.pci_address)
    if config.vfio:
        group = fn.iommu_group if fn else None
        if group is None:
            raise CdiError(f"device {dev.name} ({dev.pci_address}) has no IOMMU group: vfio-pci needs one")
        vfio = f"/dev/vfio/{group.dev_name}"
        env.append(f"SRIOVNETWORK_{t}_VFIO_DEVICE={vfio}")
        nodes += [_node("/dev/vfio/vfio", dev_file), _node(vfio, dev_file)]
    elif fn and fn.rdma_devices:
        rd = fn.rdma_devices[0]
        env.append(f"SRIOVNETWORK_{t}_RDMA_DEVICE={rd.name}")
        chars: list[tuple[str, CharDevice | None]] = [("UVERB", rd.uverbs)]
        if rd.ports:
            chars += [("UMAD", rd.ports[0].umad)]
        chars += [("CM", inv.rdma_cm)]
        for suffix, c in chars:
            if c is not None:
                env.append(f"SRIOVNETWORK_{t}_RDMA_{suffix}={c.path}")
                nodes.append(_node(c.path, dev_file))
    if config.add_vhost_mount:
        nodes += [_node("/dev/vhost-net", dev_file), _node("/dev/net/tun", dev_file)]
    for key, value in (("NETDEV", config.if_name), ("MTU", config.mtu), ("MAC", config.mac), ("VLAN", config.vlan)):
        if value is not None:
            env.append(f"SRIOVNETWORK_{t}_{key}={value}")
    return Edits(env=env, device_nodes=nodes)


def ib_edits(inv: Inventory, dev: DraDevice, config: IbConfig, index: int, admin: bool, dev_file,
             partition: PartitionCheck | None = None) -> Edits:
    """Env and device nodes for an InfiniBand port; index numbers the devices of one prepare call.
    partition: where config.pkey was found in the port's P_Key table (sriovdra.partition)."""
    p = f"IB_DEVICE_{index}"
    a = dev.attributes
    env = [f"{p}={dev.name}", f"{p}_IBDEV={dev.rdma_device}", f"{p}_PORT={dev.port}",
           f"{p}_PCI_ADDRESS={dev.pci_address}"]
    for key, attr in (("NODE_GUID", "nodeGUID"), ("PORT_GUID", "portGUID")):
        if attr in a:
            env.append(f"{p}_{key}={a[attr]}")
    if dev.netdev:
        env.append(f"{p}_NETDEV={dev.netdev}")
    nodes: list[DeviceNode] = []
    fn = inv.function(dev.pci_address)
    rd = next((r for r in (fn.rdma_devices if fn else []) if r.name == dev.rdma_device), None)
    port = next((x for x in (rd.ports if rd else []) if x.number == dev.port), None)
    chars = [("UVERBS", rd.uverbs if rd else None), ("UMAD", port.umad if port else None)]
    if admin:  # the subnet-management interface is for admin-access claims only
        chars.append(("ISSM", port.issm if port else None))
    chars.append(("RDMA_CM", inv.rdma_cm))
    for key, c in chars:
        if c is not None:
            env.append(f"{p}_{key}={c.path}")
            nodes.append(_node(c.path, dev_file))
    if config.pkey is not None:
        env.append(f"{p}_PKEY=0x{config.pkey:04X}")
        if partition is not None and partition.index is not None:
            env.append(f"{p}_PKEY_INDEX={partition.index}")
    if config.traffic_class is not None:
        env.append(f"{p}_TRAFFIC_CLASS={config.traffic_class}")
    if config.mtu is not None:
        env.append(f"{p}_MTU={config.mtu}")
    if admin:
        env.append("DRA_ADMIN_ACCESS=true")
    return Edits(env=env, device_nodes=nodes)


@dataclass(frozen=True)
class SpecItem:
    """One device of a claim's spec: the device, its effective config, admin access, IB env index and
    (IB with a pkey) the P_Key table lookup."""

    device: DraDevice
    config: VfConfig | IbConfig
    admin: bool = False
    index: int = 0
    partition: PartitionCheck | None = None


# UCX_IB_PATH_MTU takes these only (UCX src/uct/ib/base/ib_iface.c uct_ib_mtu_values): no 256.
_UCX_PATH_MTUS = (512, 1024, 2048, 4096)


def library_env(items: list[SpecItem]) -> list[str]:
    """The RDMA libraries' variables for IbConfig, once per claim. A process has one value of each,
    whatever devices it uses, so a variable is set only when every IB device of the claim has the
    same value (a device without the field counts as disagreeing: it stays on the default)."""

    def agreed(values: list) -> object | None:
        return values[0] if values and values[0] is not None and values.count(values[0]) == len(values) else None

    configs = [it.config for it in items if isinstance(it.config, IbConfig)]
    if not configs:
        return []
    env = []
    pkey = agreed([c.pkey for c in configs])
    if pkey is not None:
        # NCCL binds its QPs to a P_Key *index* (ibv_qp_attr.pkey_index); a port's index is its own.
        index = agreed([it.partition.index if it.partition else None for it in items])
        if index is not None:
            env.append(f"NCCL_IB_PKEY={index}")
        env.append(f"UCX_IB_PKEY=0x{pkey & BASE_MASK:04x}")  # UCX: the partition, 0..0x7fff
    tc = agreed([c.traffic_class for c in configs])
    if tc is not None:
        env += [f"NCCL_IB_TC={tc}", f"UCX_IB_TRAFFIC_CLASS={tc}"]
    mtu = agreed([c.mtu for c in configs])
    if mtu in _UCX_PATH_MTUS:
        env.append(f"UCX_IB_PATH_MTU={mtu}")
    return env


def device_name(dra_device: str, claim_uid: str) -> str:
    """The CDI device name: unique per claim and device, never reused."""
    return f"{dra_device}-{claim_uid}"


def claim_spec(driver: str, claim_uid: str, items: list[SpecItem], inv: Inventory, dev_file) -> Spec:
    """The transient spec of one claim, as serve writes it and `sriovdra cdi generate` prints it."""
    kind = CDI_KINDS[driver]
    devices = []
    for it in items:
        if driver == IB_DRIVER:
            edits = ib_edits(inv, it.device, it.config, it.index, it.admin, dev_file, it.partition)
        else:
            edits = vf_edits(inv, it.device, it.config, dev_file)
        devices.append(CdiDevice(name=device_name(it.device.name, claim_uid), edits=edits))
    shared = Edits(env=library_env(items)) if driver == IB_DRIVER else None
    return Spec(kind=kind, devices=devices, edits=shared)


def netdev_spec(driver: str, claim_uid: str, moves: list[tuple[str, str, str]]) -> Spec:
    """The --netdev-attach cdi spec of one claim: per (DRA device, host netdev, pod-side name) a CDI
    device that has the runtime move the netdev into the pod (netDevices, cdiVersion 1.1.0)."""
    devices = [CdiDevice(name=device_name(device, claim_uid), edits=Edits(net_devices=[(netdev, if_name)]))
               for device, netdev, if_name in moves]
    return Spec(kind=NETDEV_KINDS[driver], devices=devices)
