"""Fake hosts: a small YAML description of a node, materialised as a sysfs tree.

The tree imitates the kernel's layout, symlinks included (bus/pci/devices -> devices/pci...,
virtfnN/physfn, driver, iommu_group, class/net, class/infiniband, ...), so discovery reads
it exactly as it reads /sys. Next to sys/ the builder writes dev/ (placeholder device nodes),
proc/cpuinfo, and optionally etc/ and var/ (kubelet dirs, CDI dirs, container runtime
config, NRI socket) so that `doctor` can run against the whole fake root.

    python -m sriovdra.fakehost build demo/hosts/ethernet-baremetal.yaml /tmp/eth-node
    sriovdra discover --sysfs-root /tmp/eth-node/sys

The YAML schema is documented in demo/hosts/README.md; unknown keys are errors.

FakeKernel gives a built tree the kernel's reaction to driver (un)binding writes and to
sriov_numvfs writes (VFs disappear and appear exactly as the builder makes them); the host layer
(sriovdra.host.writer) uses it by itself on any sysfs root that carries MARKER.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import socket
import stat
import sys
import threading
from dataclasses import dataclass
from typing import Any

from sriovdra.guid import format_guid
from sriovdra.host.paths import FAKE_HOST_MARKER

MARKER = FAKE_HOST_MARKER  # at the fake root and at its sysfs root
FAKE_KERNEL_DIR = ".sriovdra-fakekernel"  # under the sysfs root: what the fake kernel keeps
DEFAULT_DRIVERS = "default-drivers"  # "<bdf> <driver>" lines: the driver whose ID table matches
SRIOV_STATE = "sriov"  # <pf bdf>.json: a PF's `vfs:` spec as the builder resolved it, to make VFs later
BUILDER_STATE = "builder.json"  # counters (ifindex, iommu group, uverbs, ...) and tree settings
VF_GUIDS = "vf-guids"  # <pf bdf>/<vf index>: "node port" GUIDs set through the PF ("firmware")

_LINKS = ("ethernet", "infiniband")
_PORT_STATE_NUM = {"Down": 1, "Init": 2, "Armed": 3, "Active": 4, "ActiveDefer": 5}
_PHYS_STATE_NUM = {"Sleep": 1, "Polling": 2, "Disabled": 3, "PortConfigurationTraining": 4,
                   "LinkUp": 5, "LinkErrorRecovery": 6, "PhyTest": 7}
_DEFAULT_VF_DEVICE = {"15b3": "101e", "8086": "1889", "14e4": "16dc"}

_HOST_KEYS = {"kind", "iommu", "noiommu", "modules", "rdmaNetnsMode", "kubelet", "cdi", "cniPlugins",
              "containerd", "crio", "vendor", "product", "devNodes"}
_FUNCTION_KEYS = {"pci", "vendor", "device", "class", "driver", "numa", "pcieRoot", "link",
                  "netdev", "mac", "mtu", "speed", "operstate", "eswitch", "eswitchCompat", "rdma",
                  "rdmaName", "firmware", "guid", "ports", "vfs", "representors"}
_GUID = re.compile(r"^[0-9a-f]{4}(:[0-9a-f]{4}){3}$")
_VFS_KEYS = {"total", "count", "device", "driver", "rdma", "netdev", "netdevPrefix", "offset",
             "stride", "guids", "portState", "mtu", "numa", "overrides", "probe", "enableError",
             "enableLimit"}
_ENABLE_ERROR_KEYS = {"errno", "above"}
_OVERRIDE_KEYS = {"driver", "netdev", "mac", "mtu", "operstate", "numa", "portState", "guid"}
_PORT_KEYS = {"state", "physState", "rate", "lid", "smLid", "linkLayer", "pkeys"}
_CONTAINERD_KEYS = {"configVersion", "cdi", "nri", "nriSocket"}
_CRIO_KEYS = {"nri"}


class FakeHostError(Exception):
    """A host description is invalid; the message names the field."""


@dataclass(frozen=True)
class FakeHost:
    root: str

    @property
    def sysfs(self) -> str:
        return os.path.join(self.root, "sys")

    @property
    def dev(self) -> str:
        return os.path.join(self.root, "dev")


# --- spec validation ----------------------------------------------------------------------


def _check_keys(obj: Any, allowed: set[str], where: str) -> dict:
    if obj is None:
        return {}
    if not isinstance(obj, dict):
        raise FakeHostError(f"{where}: expected a mapping, got {type(obj).__name__}")
    unknown = sorted(map(str, set(obj) - allowed))  # YAML keys may be numbers, null, ...
    if unknown:
        raise FakeHostError(f"{where}: unknown field(s) {', '.join(_show(k)[1:-1] for k in unknown[:10])}")
    return obj


_SHOWN = 60  # characters of a refused value quoted in a message
_INT_RANGE = (-(2**31), 2**32)  # every number of a host description (sizes, IDs, counters) fits


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _SHOWN else f"{text[:_SHOWN]}... ({len(text)} characters)"


def _get(obj: dict, key: str, kind: type | tuple, where: str, default: Any = None) -> Any:
    value = obj.get(key, default)
    if value is None:
        return default
    if kind is int and isinstance(value, bool) or not isinstance(value, kind):
        name = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise FakeHostError(f"{where}.{key}: expected {name}, got {_show(value)}")
    if isinstance(value, int) and not _INT_RANGE[0] <= value < _INT_RANGE[1]:
        raise FakeHostError(f"{where}.{key}: {_show(value)} is out of range")
    return value


def _component(value: str, where: str) -> str:
    """A name that becomes one path component of the tree (a driver, netdev, RDMA device, module):
    never a way out of it, never a name the kernel could not have."""
    too_long = len(value.encode("utf-8", "replace")) > 255
    if not value or value in (".", "..") or "/" in value or "\x00" in value or too_long:
        raise FakeHostError(f"{where}: {_show(value)} is not a file name (no '/', NUL, '.' or '..'; 1-255 bytes)")
    return value


def _name(obj: dict, key: str, where: str, default: str | None = None, *, empty: bool = False) -> str | None:
    """A string field used as a path component; empty=True allows "" (an unbound function's driver)."""
    value = _get(obj, key, str, where, default)
    if value is None or (empty and value == ""):
        return value
    return _component(value, f"{where}.{key}")


def _hexid(obj: dict, key: str, where: str, default: str | None) -> str | None:
    value = obj.get(key, default)
    if value is None:
        return None
    text = str(value).lower().removeprefix("0x")
    if not text or any(c not in "0123456789abcdef" for c in text):
        raise FakeHostError(f"{where}.{key}: expected a hex ID, got {_show(value)}")
    return text


def _guid(obj: dict, key: str, where: str, default: str | None = None) -> str | None:
    value = _get(obj, key, str, where, default)
    if value is not None and not _GUID.fullmatch(value):
        raise FakeHostError(f"{where}.{key}: expected a GUID like 0c42:a103:0065:8f2a, got {_show(value)}")
    return value


def _pkeys(port: dict, where: str) -> list[int]:
    """A port's P_Key table in index order (default: the default partition, full member, at 0).
    Entries are ints or hex strings; 0 marks an unused entry, as the kernel shows one."""
    table = []
    for i, raw in enumerate(_get(port, "pkeys", list, where, [0xFFFF])):
        try:
            pkey = int(raw, 16) if isinstance(raw, str) else raw
        except ValueError:
            pkey = None
        if isinstance(pkey, bool) or not isinstance(pkey, int) or not 0 <= pkey <= 0xFFFF:
            raise FakeHostError(f"{where}.pkeys[{i}]: expected a 16-bit P_Key like 0x8001, got {_show(raw)}")
        table.append(pkey)
    return table


def _parse_bdf(text: Any, where: str) -> tuple[int, int, int, int]:
    try:
        dom, bus, devfn = str(text).lower().split(":")
        dev, fn = devfn.split(".")
        d, b, v, f = int(dom, 16), int(bus, 16), int(dev, 16), int(fn, 16)
    except ValueError:
        raise FakeHostError(f"{where}.pci: expected a PCI address like 0000:3b:00.0, got {_show(text)}") from None
    if not (0 <= d <= 0xFFFF and 0 <= b <= 0xFF and 0 <= v <= 0x1F and 0 <= f <= 7):
        raise FakeHostError(f"{where}.pci: {_show(text)} is out of range")
    return d, b, v, f


def _bdf(dom: int, bus: int, dev: int, fn: int) -> str:
    return f"{dom:04x}:{bus:02x}:{dev:02x}.{fn:x}"


def _digest(*parts: object) -> bytes:
    return hashlib.sha1("/".join(map(str, parts)).encode()).digest()


def derived_mac(address: str) -> str:
    raw = _digest("mac", address)[:5]
    return "02:" + ":".join(f"{b:02x}" for b in raw)


def derived_guid(address: str) -> str:
    raw = _digest("guid", address)[:8].hex()
    return ":".join(raw[i:i + 4] for i in range(0, 16, 4))


# --- the builder ---------------------------------------------------------------------------


class _Tree:
    """Writes files and relative symlinks under one root; remembers created dirs."""

    def __init__(self, root: str) -> None:
        self.root = root
        self._dirs: set[str] = set()
        self.char_nodes = False  # dev/ entries as real character devices (1:3, like /dev/null)
        self.skip_dev = False  # the fake kernel without a fake dev root: never touch a real /dev

    def dev_node(self, rel: str) -> None:
        """A /dev entry: an empty file, or a char device that container runtimes accept."""
        if self.skip_dev:
            return
        if not self.char_nodes:
            self.write(rel, "")
            return
        self.mkdir(os.path.dirname(rel))
        path = self.abspath(rel)
        if not os.path.exists(path):
            os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 3))

    def abspath(self, rel: str) -> str:
        return os.path.join(self.root, rel)

    def mkdir(self, rel: str) -> str:
        path = self.abspath(rel)
        if path not in self._dirs:
            os.makedirs(path, exist_ok=True)
            self._dirs.add(path)
        return path

    def write(self, rel: str, content: object) -> None:
        self.mkdir(os.path.dirname(rel))
        with open(self.abspath(rel), "w") as f:
            f.write(f"{content}\n")

    def link(self, rel: str, target_rel: str) -> None:
        """A relative symlink at rel pointing to target_rel (both relative to the root)."""
        self.mkdir(os.path.dirname(rel))
        path = self.abspath(rel)
        target = os.path.relpath(self.abspath(target_rel), os.path.dirname(path))
        if os.path.lexists(path):
            os.unlink(path)
        os.symlink(target, path)


class _Builder:
    def __init__(self, spec: dict, root: str) -> None:
        self.spec = _check_keys(spec, {"description", "host", "pfs", "functions"}, "host description")
        self.t = _Tree(root)
        self.host = _check_keys(self.spec.get("host"), _HOST_KEYS, "host")
        self.modules: list[str] = [_component(m if isinstance(m, str) else "", f"host.modules[{i}]")
                                   for i, m in enumerate(_get(self.host, "modules", list, "host", []))]
        self.iommu = _get(self.host, "iommu", bool, "host", True)
        self.noiommu = _get(self.host, "noiommu", bool, "host", False)
        self.counters = {"ifindex": 2, "iommu": 10, "uverbs": 0, "mad": 0, "rdma": 0, "virtio": 0}
        self.default_drivers: dict[str, str] = {}
        self.sriov: dict[str, dict] = {}  # PF address -> what _make_vf needs (persisted for FakeKernel)
        self.any_rdma = False
        dev_nodes = _get(self.host, "devNodes", str, "host", "file")
        if dev_nodes not in ("file", "null-char"):
            raise FakeHostError(f"host.devNodes: expected file or null-char, got {_show(dev_nodes)}")
        self.t.char_nodes = dev_nodes == "null-char"

    @classmethod
    def resume(cls, root: str, skip_dev: bool) -> _Builder:
        """The builder of an existing tree, as _fake_kernel_state left it: to make VFs after the build."""
        b = cls.__new__(cls)
        b.t = _Tree(root)
        b.t.skip_dev = skip_dev
        saved = json.loads(_read_text(os.path.join(root, "sys", FAKE_KERNEL_DIR, BUILDER_STATE)) or "{}")
        b.t.char_nodes = saved.get("charNodes", False)
        b.iommu, b.noiommu = saved.get("iommu", True), saved.get("noiommu", False)
        b.counters = saved["counters"]
        b.host, b.modules, b.sriov, b.any_rdma = {}, [], {}, False
        lines = _read_text(os.path.join(root, "sys", FAKE_KERNEL_DIR, DEFAULT_DRIVERS)) or ""
        b.default_drivers = dict(line.split() for line in lines.splitlines() if line.strip())
        return b

    # host-wide pieces
    def build(self) -> None:
        kind = _get(self.host, "kind", str, "host", "baremetal")
        if kind not in ("baremetal", "vm"):
            raise FakeHostError(f"host.kind: expected baremetal or vm, got {_show(kind)}")
        self._host_identity(kind)
        self.t.mkdir("sys/bus/pci/devices")
        self.t.mkdir("sys/kernel/iommu_groups")
        self.t.write("sys/bus/pci/drivers_probe", "")
        self.t.write("sys/bus/pci/drivers_autoprobe", 1)
        pfs = _get(self.spec, "pfs", list, "host description", [])
        functions = _get(self.spec, "functions", list, "host description", [])
        for i, pf in enumerate(pfs):
            self._function(pf, f"pfs[{i}]", allow_vfs=True)
        for i, fn in enumerate(functions):
            self._function(fn, f"functions[{i}]", allow_vfs=False)
        self._modules()
        self._node_files()
        self._fake_kernel_state()

    def _fake_kernel_state(self) -> None:
        """What FakeKernel needs: each function's default driver, how to make each PF's VFs, the
        counters to continue from, and a marker on the sysfs root."""
        self.save_kernel_state()
        for address, state in sorted(self.sriov.items()):
            self.t.write(f"sys/{FAKE_KERNEL_DIR}/{SRIOV_STATE}/{address}.json", json.dumps(state, sort_keys=True))
        self.t.write(f"sys/{MARKER}", "built by sriovdra.fakehost")

    def save_kernel_state(self) -> None:
        lines = [f"{bdf} {driver}" for bdf, driver in sorted(self.default_drivers.items())]
        self.t.write(f"sys/{FAKE_KERNEL_DIR}/{DEFAULT_DRIVERS}", "\n".join(lines))
        builder = {"counters": self.counters, "charNodes": self.t.char_nodes, "iommu": self.iommu,
                   "noiommu": self.noiommu}
        self.t.write(f"sys/{FAKE_KERNEL_DIR}/{BUILDER_STATE}", json.dumps(builder, sort_keys=True))

    def _host_identity(self, kind: str) -> None:
        if kind == "vm":
            vendor = _get(self.host, "vendor", str, "host", "QEMU")
            product = _get(self.host, "product", str, "host", "Standard PC (Q35 + ICH9, 2009)")
        else:
            vendor = _get(self.host, "vendor", str, "host", "Dell Inc.")
            product = _get(self.host, "product", str, "host", "PowerEdge R760")
        self.t.write("sys/class/dmi/id/sys_vendor", vendor)
        self.t.write("sys/class/dmi/id/product_name", product)
        flags = "fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov sse sse2 ht"
        if kind == "vm":
            flags += " hypervisor"
        self.t.write("proc/cpuinfo", f"processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: {flags}\n")

    def _modules(self) -> None:
        for name in self.modules:
            self.t.mkdir(f"sys/module/{name}")
        if "vfio_pci" in self.modules:
            self.t.mkdir("sys/module/vfio/parameters")
            self.t.write("sys/module/vfio/parameters/enable_unsafe_noiommu_mode", "Y" if self.noiommu else "N")
            self._driver_dir("vfio-pci")
            self.t.dev_node("dev/vfio/vfio")
        mode = self.host.get("rdmaNetnsMode")
        if mode is not None:
            if mode not in ("shared", "exclusive"):
                raise FakeHostError(f"host.rdmaNetnsMode: expected shared or exclusive, got {_show(mode)}")
            self.t.write("sys/module/ib_core/parameters/netns_mode", "Y" if mode == "shared" else "N")
        if self.any_rdma:
            self.t.write("sys/class/infiniband_verbs/abi_version", 6)
            self.t.write("sys/class/infiniband_mad/abi_version", 5)
            if "rdma_ucm" in self.modules:
                self.t.write("sys/class/misc/rdma_cm/dev", "10:58")
                self.t.dev_node("dev/infiniband/rdma_cm")

    def _node_files(self) -> None:
        if _get(self.host, "kubelet", bool, "host", True):
            self.t.mkdir("var/lib/kubelet/plugins")
            self.t.mkdir("var/lib/kubelet/plugins_registry")
        if _get(self.host, "cdi", bool, "host", True):
            self.t.mkdir("etc/cdi")
            self.t.mkdir("var/run/cdi")
        if _get(self.host, "cniPlugins", bool, "host", True):
            # doctor only looks for it; a fake host never runs it
            self.t.write("opt/cni/bin/host-local", "#!/bin/sh\necho '{\"code\": 4, \"msg\": \"fake host\"}'\nexit 1\n")
            os.chmod(self.t.abspath("opt/cni/bin/host-local"), 0o755)
        ctd = self.host.get("containerd")
        if ctd is not None:
            self._containerd(_check_keys(ctd, _CONTAINERD_KEYS, "host.containerd"))
        crio = self.host.get("crio")
        if crio is not None:
            crio = _check_keys(crio, _CRIO_KEYS, "host.crio")
            nri = _get(crio, "nri", bool, "host.crio", True)
            self.t.write("etc/crio/crio.conf.d/10-nri.conf", f"[crio.nri]\nenable_nri = {str(nri).lower()}")

    def _containerd(self, ctd: dict) -> None:
        version = _get(ctd, "configVersion", int, "host.containerd", 3)
        if version not in (2, 3):
            raise FakeHostError(f"host.containerd.configVersion: expected 2 or 3, got {version}")
        cdi = _get(ctd, "cdi", bool, "host.containerd")
        nri = _get(ctd, "nri", bool, "host.containerd")
        cri = "io.containerd.cri.v1.runtime" if version == 3 else "io.containerd.grpc.v1.cri"
        lines = [f"version = {version}", "", f"[plugins.'{cri}']"]
        if cdi is not None:
            lines += [f"  enable_cdi = {str(cdi).lower()}", "  cdi_spec_dirs = ['/etc/cdi', '/var/run/cdi']"]
        if nri is not None:
            lines += ["[plugins.'io.containerd.nri.v1.nri']", f"  disable = {str(not nri).lower()}",
                      "  socket_path = '/var/run/nri/nri.sock'"]
        self.t.write("etc/containerd/config.toml", "\n".join(lines))
        if _get(ctd, "nriSocket", bool, "host.containerd", bool(nri)):
            _make_socket(self.t.abspath("var/run/nri/nri.sock"))

    # PCI functions
    def _function(self, spec: Any, where: str, allow_vfs: bool) -> None:
        spec = _check_keys(spec, _FUNCTION_KEYS if allow_vfs else _FUNCTION_KEYS - {"vfs", "representors"}, where)
        if "pci" not in spec:
            raise FakeHostError(f"{where}.pci: required")
        dom, bus, dev, fn = _parse_bdf(spec["pci"], where)
        address = _bdf(dom, bus, dev, fn)
        link = _get(spec, "link", str, where, "ethernet")
        if link not in _LINKS:
            raise FakeHostError(f"{where}.link: expected ethernet or infiniband, got {_show(link)}")
        parent_dir = self._parent_dir(spec, where, dom, bus)
        vendor = _hexid(spec, "vendor", where, "15b3")
        fnspec = {
            "address": address, "dir": f"{parent_dir}/{address}", "vendor": vendor,
            "device": _hexid(spec, "device", where, "101d" if link == "ethernet" else "101b"),
            "class": _hexid(spec, "class", where, "020000" if link == "ethernet" else "020700"),
            "driver": _name(spec, "driver", where, "mlx5_core", empty=True),
            "numa": _get(spec, "numa", int, where, -1),
            "link": link,
            "netdev": _name(spec, "netdev", where),
            "mac": _get(spec, "mac", str, where),
            "mtu": _get(spec, "mtu", int, where, 1500 if link == "ethernet" else 2044),
            "speed": _get(spec, "speed", int, where, 100000),
            "operstate": _get(spec, "operstate", str, where, "up"),
            "rdma": _get(spec, "rdma", bool, where, link == "infiniband"),
            "rdmaName": _name(spec, "rdmaName", where),
            "firmware": str(spec.get("firmware", "22.39.1002")),
            "guid": _guid(spec, "guid", where),
            "ports": self._ports(spec.get("ports", 1), where, link),
        }
        eswitch = _get(spec, "eswitch", str, where)
        if eswitch not in (None, "legacy", "switchdev"):
            raise FakeHostError(f"{where}.eswitch: expected legacy or switchdev, got {_show(eswitch)}")
        fnspec["defaultDriver"] = _default_driver(fnspec["driver"])
        self._pci_function(fnspec)
        if fnspec["netdev"] and eswitch and _get(spec, "eswitchCompat", bool, where, False):
            # Only NVIDIA's out-of-tree MLNX_OFED driver has this file; upstream kernels do not.
            self.t.write(f"{fnspec['dir']}/net/{fnspec['netdev']}/compat/devlink/mode", eswitch)
        if allow_vfs and "vfs" in spec:
            vfs = _check_keys(spec["vfs"], _VFS_KEYS, f"{where}.vfs")
            state = self._vfs(fnspec, vfs, f"{where}.vfs", (dom, bus, dev, fn))
            if _get(spec, "representors", bool, where, eswitch == "switchdev") and fnspec["netdev"]:
                state["representors"] = True
                self._representors(fnspec, _get(vfs, "count", int, where, 0))

    def _parent_dir(self, spec: dict, where: str, dom: int, bus: int) -> str:
        root = _get(spec, "pcieRoot", str, where)
        if root is None:
            return f"sys/devices/pci{dom:04x}:{bus:02x}"
        try:
            rdom, rbus = root.removeprefix("pci").split(":")
            rd, rb = int(rdom, 16), int(rbus, 16)
        except ValueError:
            raise FakeHostError(f"{where}.pcieRoot: expected pci<domain>:<bus>, got {_show(root)}") from None
        if (rd, rb) == (dom, bus):
            return f"sys/devices/{root}"
        return f"sys/devices/{root}/{_bdf(rd, rb, 0, 0)}"  # the root port above the device

    def _ports(self, value: Any, where: str, link: str) -> list[dict]:
        if isinstance(value, int) and not isinstance(value, bool):
            if not 0 <= value <= 255:  # IB port numbers are u8
                raise FakeHostError(f"{where}.ports: expected 0-255 ports, got {value}")
            value = [{} for _ in range(value)]
        if not isinstance(value, list):
            raise FakeHostError(f"{where}.ports: expected a count or a list of ports, got {_show(value)}")
        ports = []
        for i, p in enumerate(value):
            pw = f"{where}.ports[{i}]"
            p = _check_keys(p, _PORT_KEYS, pw)
            state = _get(p, "state", str, pw, "Active")
            if state not in _PORT_STATE_NUM:
                raise FakeHostError(f"{pw}.state: expected one of {', '.join(_PORT_STATE_NUM)}, got {_show(state)}")
            phys = _get(p, "physState", str, pw, "LinkUp" if state != "Down" else "Disabled")
            if phys not in _PHYS_STATE_NUM:
                raise FakeHostError(f"{pw}.physState: expected one of {', '.join(_PHYS_STATE_NUM)}, got {_show(phys)}")
            ports.append({
                "state": state, "physState": phys,
                "rate": _get(p, "rate", str, pw, "100 Gb/sec (4X EDR)"),
                "lid": _get(p, "lid", int, pw, i + 1 if link == "infiniband" else 0),
                "smLid": _get(p, "smLid", int, pw, 1 if link == "infiniband" else 0),
                "linkLayer": _get(p, "linkLayer", str, pw, "InfiniBand" if link == "infiniband" else "Ethernet"),
                "pkeys": _pkeys(p, pw),
            })
        return ports

    def _pci_function(self, f: dict, physfn: str | None = None) -> None:
        t, d, address = self.t, f["dir"], f["address"]
        t.mkdir(d)
        t.link(f"sys/bus/pci/devices/{address}", d)
        t.write(f"{d}/vendor", f"0x{f['vendor']}")
        t.write(f"{d}/device", f"0x{f['device']}")
        t.write(f"{d}/class", f"0x{f['class']}")
        t.write(f"{d}/numa_node", f["numa"])
        t.write(f"{d}/driver_override", "(null)")
        t.write(f"{d}/enable", 1)
        if f.get("defaultDriver"):
            self.default_drivers[address] = f["defaultDriver"]
        if f["driver"]:
            self._driver_dir(f["driver"])
            t.link(f"{d}/driver", f"sys/bus/pci/drivers/{f['driver']}")
            t.link(f"sys/bus/pci/drivers/{f['driver']}/{address}", d)
        if physfn:
            t.link(f"{d}/physfn", physfn)
        if self.iommu or (self.noiommu and f["driver"] == "vfio-pci"):
            self._iommu_group(f, d)
        if f["netdev"]:
            # virtio-net hangs its netdev off the virtio child device, not the PCI function
            parent = f"{d}/virtio{self._next('virtio')}" if f["driver"] == "virtio-pci" else d
            self._netdev(f, parent, f["netdev"])
        if f["rdma"]:
            self._rdma(f, d)

    def _next(self, counter: str) -> int:
        value = self.counters[counter]
        self.counters[counter] += 1
        return value

    def _driver_dir(self, name: str) -> None:
        base = f"sys/bus/pci/drivers/{name}"
        if not os.path.isdir(self.t.abspath(base)):
            for fname in ("bind", "unbind", "new_id", "remove_id"):
                self.t.write(f"{base}/{fname}", "")

    def _iommu_group(self, f: dict, d: str) -> None:
        group = self.counters["iommu"]
        self.counters["iommu"] += 1
        gdir = f"sys/kernel/iommu_groups/{group}"
        self.t.link(f"{gdir}/devices/{f['address']}", d)
        self.t.link(f"{d}/iommu_group", gdir)
        noiommu = not self.iommu
        if noiommu:
            self.t.write(f"{gdir}/name", "vfio-noiommu")
        if f["driver"] == "vfio-pci":
            self.t.dev_node(f"dev/vfio/{'noiommu-' if noiommu else ''}{group}")

    def _netdev(self, f: dict, d: str, name: str, phys_port_name: str | None = None) -> None:
        nd = f"{d}/net/{name}"
        ib = f["link"] == "infiniband"
        mac = f.get("mac") or (self._ipoib_hwaddr(f) if ib else derived_mac(f["address"] + name))
        t = self.t
        t.write(f"{nd}/address", mac)
        t.write(f"{nd}/addr_len", 20 if ib else 6)
        t.write(f"{nd}/mtu", f["mtu"])
        t.write(f"{nd}/operstate", f["operstate"])
        t.write(f"{nd}/carrier", 1 if f["operstate"] == "up" else 0)
        t.write(f"{nd}/speed", f["speed"] if f["operstate"] == "up" else -1)
        t.write(f"{nd}/type", 32 if ib else 1)
        t.write(f"{nd}/ifindex", self.counters["ifindex"])
        self.counters["ifindex"] += 1
        if phys_port_name:
            t.write(f"{nd}/phys_port_name", phys_port_name)
        t.link(f"{nd}/device", d)
        t.link(f"sys/class/net/{name}", nd)

    def _ipoib_hwaddr(self, f: dict) -> str:
        guid = (f["guid"] or derived_guid(f["address"])).replace(":", "")
        raw = "00000049fe800000" + "0" * 8 + guid
        return ":".join(raw[i:i + 2] for i in range(0, 40, 2))

    def _rdma(self, f: dict, d: str) -> None:
        self.any_rdma = True
        name = f["rdmaName"] or f"mlx5_{self.counters['rdma']}"
        self.counters["rdma"] += 1
        f["rdmaName"] = name
        rd = f"{d}/infiniband/{name}"
        t = self.t
        guid = f["guid"] or derived_guid(f["address"])
        t.write(f"{rd}/node_guid", guid)
        t.write(f"{rd}/sys_image_guid", guid)
        t.write(f"{rd}/fw_ver", f["firmware"])
        t.write(f"{rd}/hca_type", "MT4123" if f["link"] == "infiniband" else "MT4125")
        t.write(f"{rd}/node_type", "1: CA")
        t.link(f"{rd}/device", d)
        t.link(f"sys/class/infiniband/{name}", rd)
        u = self.counters["uverbs"]
        self.counters["uverbs"] += 1
        ud = f"{d}/infiniband_verbs/uverbs{u}"
        t.write(f"{ud}/ibdev", name)
        t.write(f"{ud}/abi_version", 1)
        t.write(f"{ud}/dev", f"231:{192 + u}")
        t.link(f"sys/class/infiniband_verbs/uverbs{u}", ud)
        t.dev_node(f"dev/infiniband/uverbs{u}")
        gbytes = guid.replace(":", "")
        for number, port in enumerate(f["ports"], start=1):
            pd = f"{rd}/ports/{number}"
            t.write(f"{pd}/state", f"{_PORT_STATE_NUM[port['state']]}: {port['state'].upper()}")
            t.write(f"{pd}/phys_state", f"{_PHYS_STATE_NUM[port['physState']]}: {port['physState']}")
            t.write(f"{pd}/rate", port["rate"])
            t.write(f"{pd}/lid", f"0x{port['lid']:x}")
            t.write(f"{pd}/sm_lid", f"0x{port['smLid']:x}")
            t.write(f"{pd}/link_layer", port["linkLayer"])
            pguid = f"{int(gbytes, 16) + number - 1:016x}" if int(gbytes, 16) else gbytes
            gid = "fe80:0000:0000:0000:" + ":".join(pguid[i:i + 4] for i in range(0, 16, 4))
            t.write(f"{pd}/gids/0", gid)
            for index, pkey in enumerate(port["pkeys"]):  # as the SM left it: unused entries read 0x0000
                t.write(f"{pd}/pkeys/{index}", f"0x{pkey:04x}")
            for kind, minor_base in (("umad", 0), ("issm", 64)):
                m = self.counters["mad"]
                md = f"{d}/infiniband_mad/{kind}{m}"
                t.write(f"{md}/ibdev", name)
                t.write(f"{md}/port", number)
                t.write(f"{md}/dev", f"231:{minor_base + m}")
                t.link(f"sys/class/infiniband_mad/{kind}{m}", md)
                t.dev_node(f"dev/infiniband/{kind}{m}")
            self.counters["mad"] += 1

    def _vfs(self, pf: dict, vfs: dict, where: str, pf_bdf: tuple[int, int, int, int]) -> dict:
        """Write the PF's SR-IOV files and its first `count` VFs; returns what makes any VF later."""
        count = _get(vfs, "count", int, where, 0)
        total = _get(vfs, "total", int, where, count)
        if not 0 <= total <= 0xFFFF:  # the SR-IOV capability's TotalVFs is 16-bit
            raise FakeHostError(f"{where}.total: must be between 0 and 65535, got {total}")
        if not 0 <= count <= total:
            raise FakeHostError(f"{where}.count: must be between 0 and total ({total}), got {count}")
        offset = _get(vfs, "offset", int, where, 1)
        stride = _get(vfs, "stride", int, where, 1)
        if offset < 1 or stride < 1:
            raise FakeHostError(f"{where}: offset and stride must be at least 1 (got {offset}, {stride})")
        last = (pf_bdf[2] << 3 | pf_bdf[3]) + offset + max(count - 1, 0) * stride
        if pf_bdf[1] + (last >> 8) > 0xFF:
            raise FakeHostError(f"{where}: {count} VFs at offset {offset} stride {stride} run past bus ff")
        d = pf["dir"]
        self.t.write(f"{d}/sriov_totalvfs", total)
        self.t.write(f"{d}/sriov_numvfs", count)
        self.t.write(f"{d}/sriov_offset", offset)
        self.t.write(f"{d}/sriov_stride", stride)
        self.t.write(f"{d}/sriov_drivers_autoprobe", 1)
        vf_device = _hexid(vfs, "device", where, _DEFAULT_VF_DEVICE.get(pf["vendor"], pf["device"]))
        self.t.write(f"{d}/sriov_vf_device", vf_device)
        overrides = _get(vfs, "overrides", dict, where, {})
        for key in overrides:  # up to total: VFs that a later sriov_numvfs write creates get theirs too
            if not isinstance(key, int) or not 0 <= key < total:
                raise FakeHostError(f"{where}.overrides: key {_show(key)} is not a VF index below total ({total})")
        guids = _get(vfs, "guids", str, where, "derived")
        if guids not in ("derived", "zero"):
            raise FakeHostError(f"{where}.guids: expected derived or zero, got {_show(guids)}")
        defaults = {
            "driver": _name(vfs, "driver", where, pf["driver"], empty=True),
            "netdevPrefix": _name(vfs, "netdevPrefix", where, f"{pf['netdev']}v" if pf["netdev"] else None),
            "portState": _get(vfs, "portState", str, where, pf["ports"][0]["state"] if pf["ports"] else "Active"),
            "numa": _get(vfs, "numa", int, where, pf["numa"]),
            "mtu": _get(vfs, "mtu", int, where, pf["mtu"]),
            "rdma": _get(vfs, "rdma", bool, where, pf["rdma"]),
            "device": vf_device,
            "guids": guids,
        }
        defaults["netdev"] = _get(vfs, "netdev", bool, where, defaults["netdevPrefix"] is not None)
        state = {"pf": pf, "pfBdf": list(pf_bdf), "offset": offset, "stride": stride, "defaults": defaults,
                 "overrides": {str(k): v for k, v in overrides.items()}, "representors": False,
                 "probe": _probe(vfs, where), "enableError": _enable_error(vfs, where),
                 "enableLimit": _enable_limit(vfs, where)}
        for i in sorted(overrides):  # every override is checked at build, also those beyond count
            ow_where = f"{where}.overrides[{i}]"
            self._vf_spec(pf, pf_bdf, offset + i * stride, i, defaults,
                          _check_keys(overrides[i], _OVERRIDE_KEYS, ow_where), ow_where)
        self.sriov[pf["address"]] = state
        for driver in {defaults["driver"], *(o.get("driver") for o in overrides.values() if isinstance(o, dict))}:
            if driver:  # the VF drivers are loaded whether or not VFs exist yet
                self._driver_dir(driver)
        for i in range(count):
            self.make_vf(state, i)
        return state

    def make_vf(self, state: dict, i: int) -> str:
        """VF i of the PF that `state` describes (see _vfs), bound to its driver; returns its address."""
        pf, offset, stride = state["pf"], state["offset"], state["stride"]
        ow_where = f"vfs.overrides[{i}]"
        overrides = _check_keys(state["overrides"].get(str(i)), _OVERRIDE_KEYS, ow_where)
        vf = self._vf_spec(pf, tuple(state["pfBdf"]), offset + i * stride, i, state["defaults"], overrides, ow_where)
        self._pci_function(vf, physfn=pf["dir"])
        self.t.link(f"{pf['dir']}/virtfn{i}", vf["dir"])
        return vf["address"]

    def _vf_spec(self, pf: dict, pf_bdf: tuple[int, int, int, int], routing_offset: int, i: int,
                 defaults: dict, ow: dict, where: str) -> dict:
        """VF i of a PF: its address follows the kernel's routing-ID rule (PF devfn + offset)."""
        dom, bus, dev, fn = pf_bdf
        devfn = (dev << 3 | fn) + routing_offset
        address = _bdf(dom, bus + (devfn >> 8), (devfn >> 3) & 0x1F, devfn & 7)
        driver = _name(ow, "driver", where, defaults["driver"], empty=True)
        kernel_netdev = driver not in ("", "vfio-pci")  # unbound and vfio-pci VFs have no netdev
        port_state = _get(ow, "portState", str, where, defaults["portState"])
        if port_state not in _PORT_STATE_NUM:
            raise FakeHostError(f"{where}.portState: expected one of {', '.join(_PORT_STATE_NUM)}, "
                                f"got {_show(port_state)}")
        active_ib = pf["link"] == "infiniband" and port_state == "Active"
        ports = [dict(p, state=port_state, physState="LinkUp" if port_state != "Down" else "Disabled",
                      lid=p["lid"] + 0x100 + i if active_ib else 0)
                 for p in pf["ports"][:1]]  # a VF has one port
        zero = defaults["guids"] == "zero"
        prefix = defaults["netdevPrefix"]
        return {
            "address": address, "dir": f"{os.path.dirname(pf['dir'])}/{address}", "vendor": pf["vendor"],
            "device": defaults["device"], "class": pf["class"], "driver": driver, "link": pf["link"],
            "defaultDriver": _default_driver(driver, defaults["driver"]),
            "numa": _get(ow, "numa", int, where, defaults["numa"]),
            "netdev": f"{prefix}{i}" if prefix and kernel_netdev and _get(ow, "netdev", bool, where,
                                                                            defaults["netdev"]) else None,
            "mac": _get(ow, "mac", str, where),
            "mtu": _get(ow, "mtu", int, where, defaults["mtu"]),
            "speed": pf["speed"], "operstate": _get(ow, "operstate", str, where, "up"),
            "rdma": defaults["rdma"] and kernel_netdev,
            "rdmaName": None, "firmware": pf["firmware"], "ports": ports,
            "guid": _guid(ow, "guid", where, "0000:0000:0000:0000" if zero else derived_guid(address)),
        }

    def _representors(self, pf: dict, count: int) -> None:
        for i in range(count):
            self.representor(pf, i)
        # The uplink gets its switchdev port name once representors exist.
        self.t.write(f"{pf['dir']}/net/{pf['netdev']}/phys_port_name", "p0")

    def representor(self, pf: dict, i: int) -> None:
        """The switchdev representor netdev of VF i, on the PF (phys_port_name pf0vf<i>)."""
        base = pf["netdev"].split("np")[0]  # systemd: ens1f1np1 -> representors ens1f1npf0vfN
        rep = dict(pf, mac=None, mtu=1500)
        self._netdev(rep, pf["dir"], f"{base}npf0vf{i}"[:15], phys_port_name=f"pf0vf{i}")


def _probe(vfs: dict, where: str) -> str | float:
    """vfs.probe: immediate, never (the VF driver never binds by itself), or seconds until a bound
    VF's netdevs and RDMA devices appear (a slow driver probe)."""
    value = vfs.get("probe", "immediate")
    if value in ("immediate", "never"):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < 86400:
        return float(value)
    raise FakeHostError(f"{where}.probe: expected immediate, never or a number of seconds > 0, got {_show(value)}")


def _enable_limit(vfs: dict, where: str) -> int | None:
    """vfs.enableLimit: N: the PF driver's sriov_configure enables at most N VFs and the write still
    succeeds (sriov_numvfs_store only warns "%d VFs requested; only %d enabled")."""
    limit = vfs.get("enableLimit")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise FakeHostError(f"{where}.enableLimit: expected a number of VFs of at least 1, got {_show(limit)}")
    return limit


def _enable_error(vfs: dict, where: str) -> dict | None:
    """vfs.enableError: {errno: ENOMEM, above: 0}: writing more than `above` VFs fails with that errno
    (SR-IOV disabled in the firmware or BIOS, not enough bus numbers or MMIO space)."""
    spec = vfs.get("enableError")
    if spec is None:
        return None
    spec = _check_keys(spec, _ENABLE_ERROR_KEYS, f"{where}.enableError")
    name = _get(spec, "errno", str, f"{where}.enableError", "ENOMEM")
    if not hasattr(errno, name) or not name.startswith("E"):
        raise FakeHostError(f"{where}.enableError.errno: expected an errno name like ENOMEM, got {_show(name)}")
    above = _get(spec, "above", int, f"{where}.enableError", 0)
    if above < 0:
        raise FakeHostError(f"{where}.enableError.above: must be at least 0, got {above}")
    return {"errno": name, "above": above}


def _default_driver(*candidates: str) -> str | None:
    """The driver the kernel would probe: the first candidate that is a real driver. vfio-pci
    has no ID table (it binds only by driver_override), "" is an unbound function."""
    return next((d for d in candidates if d not in ("", "vfio-pci")), None)


def _make_socket(path: str) -> None:
    """Leave a real unix socket inode at path.

    Bound through /proc/self/fd/<dir> so that a deep path does not hit the 108-byte sun_path limit.
    """
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(os.path.dirname(path), os.O_PATH | os.O_DIRECTORY)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.bind(f"/proc/self/fd/{fd}/{os.path.basename(path)}")
    finally:
        os.close(fd)


# --- the fake kernel ------------------------------------------------------------------------

# What a network driver hangs off the PCI device, in the kernel's names: binding the device to
# another driver makes them disappear with the driver, binding it back creates them again.
_DRIVER_CHILDREN = ("net", "infiniband", "infiniband_verbs", "infiniband_mad")
_CHAR_DEV_CHILDREN = ("infiniband_verbs", "infiniband_mad")  # their entries have /dev/infiniband nodes


class FakeKernel:
    """The kernel's side of PCI driver binding, for a fake tree built by `build`.

    A fake tree is plain files, so writing bind/unbind/driver_override does nothing by itself.
    write() keeps attribute values (driver_override) and changes the tree as the kernel would: unbind drops the
    driver links, bind and drivers_probe match the device (driver_override, else its default
    driver) and create them. What a network driver creates (net/<if>, infiniband/<dev>, their
    /sys/class links and /dev/infiniband nodes) is stashed under FAKE_KERNEL_DIR when the driver
    lets go and put back unchanged when that driver binds again; vfio-pci gets /dev/vfio/<group>.
    Errors are the kernel's errnos (ENODEV: no match or not bound, EBUSY: already bound).

    A PF's sriov_numvfs behaves as drivers/pci/iov.c sriov_numvfs_store: the same value is a no-op,
    more than sriov_totalvfs is ERANGE, a PF without a driver ENOENT, a non-zero value while VFs
    exist EBUSY; 0 removes every VF with all it has (PCI dir, links, IOMMU group, netdevs, RDMA
    devices, /dev nodes, representors); N makes VFs 0..N-1 exactly as the builder makes them from
    the PF's `vfs:` spec. New VFs are probed by their driver unless sriov_drivers_autoprobe is 0 or
    `vfs.probe` is never (then they appear unbound, and a bind creates their netdevs); with
    `vfs.probe: <seconds>` the driver binds at once but netdevs and RDMA devices appear later, from
    a timer thread. VF GUIDs set through the PF (set_vf_guid) are kept per PF and VF index like
    firmware does, applied to the VF's RDMA device whenever a network driver binds it, and
    forgotten when the VFs are removed.
    """

    _lock = threading.Lock()  # one tree, one kernel: writes are serialised like the device lock

    def __init__(self, sysfs: str, dev: str | None = None) -> None:
        self.sysfs = os.path.realpath(sysfs)
        # Only a dev root that belongs to a fake host (the marker beside it) is ever touched.
        fake_dev = dev and os.path.exists(os.path.join(os.path.dirname(os.path.abspath(dev)), MARKER))
        self.dev = os.path.realpath(dev) if fake_dev else None
        self._tree = _Tree(self.sysfs)

    def write(self, path: str, value: str) -> None:
        """Write an attribute under the sysfs root, with the kernel's reaction to it."""
        with self._lock:
            fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)  # ENOENT like sysfs; bind/unbind keep nothing
            os.close(fd)
            parent = os.path.relpath(os.path.realpath(os.path.dirname(path)), self.sysfs)
            name, arg = os.path.basename(path), value.strip()
            if parent == "bus/pci" and name == "drivers_probe":
                self._probe(arg)
            elif os.path.dirname(parent) == "bus/pci/drivers" and name in ("bind", "unbind"):
                (self._bind if name == "bind" else self._unbind)(os.path.basename(parent), arg)
            elif name == "driver_override":
                self._tree.write(f"{parent}/{name}", arg or "(null)")  # an empty write clears it
            elif name == "sriov_numvfs":
                self._numvfs(parent, arg)
            elif name == "sriov_drivers_autoprobe":
                if arg not in ("0", "1"):
                    raise _kernel_error(errno.EINVAL)  # kstrtobool would take y/n too; we write 0/1
                self._tree.write(f"{parent}/{name}", arg)
            else:
                self._tree.write(f"{parent}/{name}", arg)

    def set_vf_guid(self, pf_bdf: str, vf: int, kind: str, guid: int) -> None:
        """What RTM_SETLINK IFLA_VF_IB_NODE_GUID / _PORT_GUID on the PF's IPoIB netdev does: record
        the GUID for VF `vf`; the VF's driver picks it up at its next bind. kind: node or port."""
        with self._lock:
            dev = self._device(pf_bdf)
            if not self._is_infiniband(dev):
                raise _kernel_error(errno.EOPNOTSUPP)  # rtnetlink: not an ARPHRD_INFINIBAND netdev
            if not 0 <= vf < int(_read_text(os.path.join(self.sysfs, dev, "sriov_numvfs")) or 0):
                raise _kernel_error(errno.EINVAL)
            node, port = self.vf_guids(pf_bdf, vf) or (0, 0)
            node, port = (guid, port) if kind == "node" else (node, guid)
            self._tree.write(f"{FAKE_KERNEL_DIR}/{VF_GUIDS}/{pf_bdf}/{vf}", f"{node:016x} {port:016x}")

    def vf_guids(self, pf_bdf: str, vf: int) -> tuple[int, int] | None:
        """(node GUID, port GUID) recorded for VF `vf` of the PF, None when nothing was set."""
        text = _read_text(os.path.join(self.sysfs, FAKE_KERNEL_DIR, VF_GUIDS, pf_bdf, str(vf)))
        if not text:
            return None
        node, port = text.split()
        return int(node, 16), int(port, 16)

    def _is_infiniband(self, dev: str) -> bool:
        net = os.path.join(self.sysfs, dev, "net")
        names = sorted(os.listdir(net)) if os.path.isdir(net) else []
        return any(_read_text(os.path.join(net, n, "type")) == "32" for n in names)

    # SR-IOV
    def _numvfs(self, dev: str, arg: str) -> None:
        try:
            wanted = int(arg, 0)
        except ValueError:
            raise _kernel_error(errno.EINVAL) from None
        base = os.path.join(self.sysfs, dev)
        total = _read_text(os.path.join(base, "sriov_totalvfs"))
        if total is None:
            raise _kernel_error(errno.ENOENT)
        if not 0 <= wanted <= int(total):
            raise _kernel_error(errno.ERANGE)
        current = int(_read_text(os.path.join(base, "sriov_numvfs")) or 0)
        if wanted == current:
            return
        if self._driver_of(dev) is None:
            raise _kernel_error(errno.ENOENT)  # no PF driver with sriov_configure
        if wanted == 0:
            self._remove_vfs(dev)
        elif current:
            raise _kernel_error(errno.EBUSY)
        else:
            wanted = self._add_vfs(dev, wanted)
        self._tree.write(f"{dev}/sriov_numvfs", wanted)

    def _add_vfs(self, dev: str, count: int) -> int:
        """Make the VFs; returns how many the PF driver enabled (enableLimit: maybe fewer, still success)."""
        pf_bdf = os.path.basename(dev)
        text = _read_text(os.path.join(self.sysfs, FAKE_KERNEL_DIR, SRIOV_STATE, f"{pf_bdf}.json"))
        if text is None:
            raise _kernel_error(errno.ENOENT)
        state = json.loads(text)
        failure = state.get("enableError")
        if failure and count > failure["above"]:
            raise _kernel_error(getattr(errno, failure["errno"]))
        count = min(count, state.get("enableLimit") or count)
        _, bus, slot, fn = state["pfBdf"]
        last = (slot << 3 | fn) + state["offset"] + (count - 1) * state["stride"]
        if bus + (last >> 8) > 0xFF:
            raise _kernel_error(errno.ENOMEM)  # sriov_enable: "can't enable N VFs (bus out of range)"
        root = os.path.dirname(self.sysfs)
        builder = _Builder.resume(root, skip_dev=self.dev != os.path.realpath(os.path.join(root, "dev")))
        made = [builder.make_vf(state, i) for i in range(count)]
        if state["representors"]:
            for i in range(count):
                builder.representor(state["pf"], i)
        builder.save_kernel_state()
        self._autoprobe(dev, made, state["probe"])
        return count

    def _autoprobe(self, pf_dev: str, made: list[str], probe: str | float) -> None:
        """The builder binds every VF; undo what the driver would not have done (yet)."""
        autoprobe = _read_text(os.path.join(self.sysfs, pf_dev, "sriov_drivers_autoprobe")) != "0"
        bound = [(bdf, dev, driver) for bdf in made if (driver := self._driver_of(dev := self._device(bdf)))]
        if not autoprobe or probe == "never":
            for bdf, _, driver in bound:
                self._unbind(driver, bdf)  # what the driver creates waits in the stash for a bind
        elif probe != "immediate":
            token = os.urandom(8).hex()  # this probe's: a VF made again meanwhile has its own
            for bdf, dev, driver in bound:
                self._stash(bdf, dev, driver)
                if os.path.exists(os.path.join(self.sysfs, FAKE_KERNEL_DIR, "stash", bdf, "owner")):
                    self._tree.write(f"{FAKE_KERNEL_DIR}/stash/{bdf}/probe", token)
            timer = threading.Timer(float(probe), self._probed, args=(bound, token))
            timer.daemon = True
            timer.start()

    def _probed(self, bound: list[tuple[str, str, str]], token: str) -> None:
        """A slow probe finishing: the netdevs and RDMA devices of its VFs, if still bound to that driver."""
        with self._lock:
            for bdf, dev, driver in bound:
                stash = os.path.join(self.sysfs, FAKE_KERNEL_DIR, "stash", bdf)
                if _read_text(os.path.join(stash, "probe")) == token and self._driver_of(dev) == driver:
                    self._unstash(bdf, dev, driver)
                    self._apply_guids(bdf, dev)

    def _remove_vfs(self, dev: str) -> None:
        base = os.path.join(self.sysfs, dev)
        removed = []
        for entry in sorted(os.listdir(base)):
            if entry.startswith("virtfn"):
                vf_dev = os.path.relpath(os.path.realpath(os.path.join(base, entry)), self.sysfs)
                removed.append(self._remove_vf(vf_dev))
                os.unlink(os.path.join(base, entry))
        net = os.path.join(base, "net")
        for name in sorted(os.listdir(net)) if os.path.isdir(net) else []:
            if re.match(r"^pf\d+vf\d+$", _read_text(os.path.join(net, name, "phys_port_name")) or ""):
                shutil.rmtree(os.path.join(net, name))  # switchdev representors go with their VFs
                os.unlink(os.path.join(self.sysfs, "class/net", name))
        path = os.path.join(self.sysfs, FAKE_KERNEL_DIR, DEFAULT_DRIVERS)
        gone = set(removed)
        lines = [line for line in (_read_text(path) or "").splitlines() if line.split() and line.split()[0] not in gone]
        self._tree.write(f"{FAKE_KERNEL_DIR}/{DEFAULT_DRIVERS}", "\n".join(lines))
        shutil.rmtree(os.path.join(self.sysfs, FAKE_KERNEL_DIR, VF_GUIDS, os.path.basename(dev)), ignore_errors=True)

    def _remove_vf(self, dev: str) -> str:
        """Everything of one VF, as pci_iov_remove_virtfn leaves it: nothing. Returns its address."""
        bdf = os.path.basename(dev)
        driver = self._driver_of(dev)
        if driver is not None:
            self._unbind(driver, bdf)  # moves netdevs, RDMA devices and /dev nodes into the stash
        shutil.rmtree(os.path.join(self.sysfs, FAKE_KERNEL_DIR, "stash", bdf), ignore_errors=True)
        _remove_if_empty(os.path.join(self.sysfs, FAKE_KERNEL_DIR, "stash"))
        if self.dev:
            shutil.rmtree(os.path.join(self.dev, FAKE_KERNEL_DIR, bdf), ignore_errors=True)
            _remove_if_empty(os.path.join(self.dev, FAKE_KERNEL_DIR))
        group = os.path.join(self.sysfs, dev, "iommu_group")
        if os.path.lexists(group):
            gdir = os.path.realpath(group)
            os.unlink(os.path.join(gdir, "devices", bdf))
            if not os.listdir(os.path.join(gdir, "devices")):
                shutil.rmtree(gdir)
        os.unlink(os.path.join(self.sysfs, "bus/pci/devices", bdf))
        shutil.rmtree(os.path.join(self.sysfs, dev))
        return bdf

    def _apply_guids(self, bdf: str, dev: str) -> None:
        """A bound VF's RDMA device shows the GUIDs recorded for it: node_guid, port GID 0 and the
        IPoIB address (its last 8 bytes are the port GUID)."""
        physfn = os.path.join(self.sysfs, dev, "physfn")
        if not os.path.lexists(physfn):
            return
        pf_base = os.path.realpath(physfn)
        index = next((int(e[6:]) for e in os.listdir(pf_base) if e.startswith("virtfn")
                      and os.path.basename(os.path.realpath(os.path.join(pf_base, e))) == bdf), None)
        guids = self.vf_guids(os.path.basename(pf_base), index) if index is not None else None
        if guids is None:
            return
        node, port = (format_guid(g) for g in guids)
        ib = os.path.join(self.sysfs, dev, "infiniband")
        for name in sorted(os.listdir(ib)) if os.path.isdir(ib) else []:
            self._tree.write(f"{dev}/infiniband/{name}/node_guid", node)
            for p in sorted(os.listdir(os.path.join(ib, name, "ports"))):
                if p == "1":  # a VF has one port; GID 0 is the subnet prefix and the port GUID
                    self._tree.write(f"{dev}/infiniband/{name}/ports/{p}/gids/0", f"fe80:0000:0000:0000:{port}")
        net = os.path.join(self.sysfs, dev, "net")
        for name in sorted(os.listdir(net)) if os.path.isdir(net) else []:
            address = _read_text(os.path.join(net, name, "address")) or ""
            if _read_text(os.path.join(net, name, "type")) == "32" and address.count(":") == 19:
                raw = port.replace(":", "")
                tail = ":".join(raw[i:i + 2] for i in range(0, 16, 2))
                self._tree.write(f"{dev}/net/{name}/address", address[:36] + tail)

    # the driver core
    def _device(self, bdf: str) -> str:
        """The device's real directory, relative to the sysfs root."""
        link = os.path.join(self.sysfs, "bus/pci/devices", bdf)
        if "/" in bdf or not bdf or not os.path.isdir(link):
            raise _kernel_error(errno.ENODEV)
        return os.path.relpath(os.path.realpath(link), self.sysfs)

    def _driver_of(self, dev: str) -> str | None:
        try:
            return os.path.basename(os.readlink(os.path.join(self.sysfs, dev, "driver")))
        except FileNotFoundError:
            return None

    def _default_driver(self, bdf: str) -> str | None:
        try:
            with open(os.path.join(self.sysfs, FAKE_KERNEL_DIR, DEFAULT_DRIVERS)) as f:
                return dict(line.split() for line in f if line.strip()).get(bdf)
        except FileNotFoundError:
            return None

    def _override(self, dev: str) -> str | None:
        value = _read_text(os.path.join(self.sysfs, dev, "driver_override"))
        return None if value in (None, "", "(null)") else value

    def _matches(self, bdf: str, dev: str, driver: str) -> bool:
        override = self._override(dev)
        return override == driver if override else driver == self._default_driver(bdf)

    def _unbind(self, driver: str, bdf: str) -> None:
        dev = self._device(bdf)
        if self._driver_of(dev) != driver:
            raise _kernel_error(errno.ENODEV)
        self._stash(bdf, dev, driver)
        os.unlink(os.path.join(self.sysfs, dev, "driver"))
        os.unlink(os.path.join(self.sysfs, "bus/pci/drivers", driver, bdf))
        if driver == "vfio-pci":
            self._vfio_node(dev, present=False)

    def _bind(self, driver: str, bdf: str) -> None:
        dev = self._device(bdf)
        if self._driver_of(dev) is not None:
            raise _kernel_error(errno.EBUSY)
        if not self._matches(bdf, dev, driver) or not self._can_probe(dev):
            raise _kernel_error(errno.ENODEV)
        self._attach(bdf, dev, driver)

    def _can_probe(self, dev: str) -> bool:
        """pci_device_can_probe (drivers/pci/pci-driver.c), checked by pci_device_probe, the bus probe of
        both an explicit bind and drivers_probe: a VF probes only while its PF's sriov_drivers_autoprobe
        is on or it has a driver_override."""
        physfn = os.path.join(self.sysfs, dev, "physfn")
        if not os.path.lexists(physfn) or self._override(dev):
            return True
        return _read_text(os.path.join(os.path.realpath(physfn), "sriov_drivers_autoprobe")) != "0"

    def _probe(self, bdf: str) -> None:
        dev = self._device(bdf)
        if self._driver_of(dev) is not None or not self._can_probe(dev):
            return  # the kernel's really_probe takes ENODEV as "no match": drivers_probe says nothing
        driver = self._override(dev) or self._default_driver(bdf)
        if driver and os.path.isdir(os.path.join(self.sysfs, "bus/pci/drivers", driver)):
            self._attach(bdf, dev, driver)

    def _attach(self, bdf: str, dev: str, driver: str) -> None:
        if driver == "vfio-pci" and not os.path.lexists(os.path.join(self.sysfs, dev, "iommu_group")):
            raise _kernel_error(errno.EINVAL)  # what vfio-pci's probe says
        self._tree.link(f"{dev}/driver", f"bus/pci/drivers/{driver}")
        self._tree.link(f"bus/pci/drivers/{driver}/{bdf}", dev)
        self._unstash(bdf, dev, driver)
        self._apply_guids(bdf, dev)
        if driver == "vfio-pci":
            self._vfio_node(dev, present=True)

    # what the network driver creates
    def _moves(self, bdf: str, dev: str) -> list[tuple[str, str]]:
        """(live path, stash path) of everything a network driver created for the device."""
        stash = os.path.join(self.sysfs, FAKE_KERNEL_DIR, "stash", bdf)
        base = os.path.join(self.sysfs, dev)
        children = [c for c in sorted(os.listdir(base)) if c in _DRIVER_CHILDREN or c.startswith("virtio")]
        moves = []
        for child in children:
            for cls, name in self._class_entries(base, child):
                moves.append((os.path.join(self.sysfs, "class", cls, name), os.path.join(stash, "class", cls, name)))
                if cls in _CHAR_DEV_CHILDREN and self.dev:
                    moves.append((os.path.join(self.dev, "infiniband", name),
                                  os.path.join(self.dev, FAKE_KERNEL_DIR, bdf, "infiniband", name)))
            moves.append((os.path.join(base, child), os.path.join(stash, "device", child)))
        return moves

    def _class_entries(self, base: str, child: str) -> list[tuple[str, str]]:
        """The /sys/class links of a child: class/<cls>/<name> for each entry (virtio: its net/)."""
        if child.startswith("virtio"):
            return [("net", n) for n in sorted(os.listdir(os.path.join(base, child, "net")))] \
                if os.path.isdir(os.path.join(base, child, "net")) else []
        return [(child, n) for n in sorted(os.listdir(os.path.join(base, child)))]

    def _stash(self, bdf: str, dev: str, driver: str) -> None:
        moves = [(live, kept) for live, kept in self._moves(bdf, dev) if os.path.lexists(live)]
        if not moves:
            return
        for live, kept in moves:
            os.makedirs(os.path.dirname(kept), exist_ok=True)
            os.rename(live, kept)
        self._tree.write(f"{FAKE_KERNEL_DIR}/stash/{bdf}/owner", driver)

    def _unstash(self, bdf: str, dev: str, driver: str) -> None:
        stash = os.path.join(self.sysfs, FAKE_KERNEL_DIR, "stash", bdf)
        if _read_text(os.path.join(stash, "owner")) != driver:
            return  # nothing stashed, or another driver, which would create other things: not modelled
        for child in sorted(os.listdir(os.path.join(stash, "device"))):
            os.rename(os.path.join(stash, "device", child), os.path.join(self.sysfs, dev, child))
        for cls in sorted(os.listdir(os.path.join(stash, "class"))):
            for name in sorted(os.listdir(os.path.join(stash, "class", cls))):
                os.rename(os.path.join(stash, "class", cls, name), os.path.join(self.sysfs, "class", cls, name))
        if self.dev and os.path.isdir(os.path.join(self.dev, FAKE_KERNEL_DIR, bdf)):
            kept = os.path.join(self.dev, FAKE_KERNEL_DIR, bdf, "infiniband")
            for name in sorted(os.listdir(kept)):
                os.rename(os.path.join(kept, name), os.path.join(self.dev, "infiniband", name))
            shutil.rmtree(os.path.join(self.dev, FAKE_KERNEL_DIR, bdf))
            _remove_if_empty(os.path.join(self.dev, FAKE_KERNEL_DIR))  # leave dev/ as it was built
        shutil.rmtree(stash)
        _remove_if_empty(os.path.dirname(stash))

    def _vfio_node(self, dev: str, present: bool) -> None:
        """/dev/vfio/<group> exists while a device of the group is bound to vfio-pci."""
        group_link = os.path.join(self.sysfs, dev, "iommu_group")
        if not self.dev or not os.path.lexists(group_link):
            return
        group = os.path.basename(os.readlink(group_link))
        gdir = os.path.join(self.sysfs, "kernel/iommu_groups", group)
        noiommu = _read_text(os.path.join(gdir, "name")) == "vfio-noiommu"
        node = os.path.join(self.dev, "vfio", f"noiommu-{group}" if noiommu else group)
        if present:
            template = os.path.join(self.dev, "vfio", "vfio")
            tree = _Tree(self.dev)
            tree.char_nodes = os.path.exists(template) and stat.S_ISCHR(os.stat(template).st_mode)
            tree.dev_node(os.path.relpath(node, self.dev))
            return
        members = os.listdir(os.path.join(gdir, "devices")) if os.path.isdir(os.path.join(gdir, "devices")) else []
        if not any(self._driver_of(self._device(m)) == "vfio-pci" for m in members) and os.path.lexists(node):
            os.unlink(node)


def _kernel_error(code: int) -> OSError:
    """The bare errno a sysfs write returns: the fake is no more talkative than the kernel."""
    return OSError(code, os.strerror(code))


def _remove_if_empty(path: str) -> None:
    try:
        os.rmdir(path)
    except OSError:
        pass


def _read_text(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except FileNotFoundError:
        return None


def load_spec(path: str) -> dict:
    import yaml

    try:
        with open(path) as f:
            spec = yaml.safe_load(f)
    except OSError as e:
        raise FakeHostError(f"{path}: {e.strerror}") from None
    except (yaml.YAMLError, ValueError) as e:  # ValueError: an integer past Python's 4300-digit limit
        raise FakeHostError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(spec, dict):
        raise FakeHostError(f"{path}: expected a mapping at the top level")
    return spec


def build(spec: dict | str, dest: str, *, replace: bool = False) -> FakeHost:
    """Materialise a host description (a dict or a YAML file path) under dest.

    dest must be empty or absent; with replace=True a previous fake host there (recognised by
    its marker file) is removed first. Nothing else is ever deleted.
    """
    if isinstance(spec, str):
        spec = load_spec(spec)
    dest = os.path.abspath(dest)
    if os.path.exists(dest) and os.listdir(dest):
        if not (replace and os.path.exists(os.path.join(dest, MARKER))):
            raise FakeHostError(f"{dest}: not empty (use replace=True / --replace for a previous fake host)")
        shutil.rmtree(dest)
    os.makedirs(dest, exist_ok=True)
    try:
        _Builder(spec, dest).build()
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)  # never leave a half-built tree
        raise
    with open(os.path.join(dest, MARKER), "w") as f:
        f.write("built by sriovdra.fakehost\n")
    return FakeHost(root=dest)


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m sriovdra.fakehost",
                                     description="Build a fake host tree from a YAML host description.")
    sub = parser.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="materialise SPEC under DEST")
    b.add_argument("spec")
    b.add_argument("dest")
    b.add_argument("--replace", action="store_true", help="replace a fake host previously built at DEST")
    args = parser.parse_args(argv)
    try:
        host = build(args.spec, args.dest, replace=args.replace)
    except FakeHostError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"fake host built: --sysfs-root {host.sysfs} --dev-root {host.dev} (host root {host.root})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
