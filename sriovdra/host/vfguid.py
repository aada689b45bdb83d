"""Setting InfiniBand VF node and port GUIDs through the PF, as `ip link set <pf> vf N node_guid G`.

rtnetlink: RTM_SETLINK on the PF's IPoIB netdev carrying
    IFLA_VFINFO_LIST { IFLA_VF_INFO { IFLA_VF_IB_NODE_GUID | IFLA_VF_IB_PORT_GUID: struct ifla_vf_guid } }
with struct ifla_vf_guid { __u32 vf; __u64 guid; } in the machine's layout (on 64-bit: 4 bytes of
padding after vf, 16 bytes) and the GUID a host-order u64 whose most significant byte is the first
one written (iproute2's get_guid). One message per GUID: the kernel's do_setvfinfo returns after
the first GUID attribute it handles. Nests carry no NLA_F_NESTED flag, as iproute2 sends them.

The VF's driver reads its GUIDs when it binds, so a VF bound to a network driver is rebound
(unbind + bind); a VF on vfio-pci or unbound gets them at its next bind. VFs held by a claim and
VFs that already carry the wanted GUIDs are not touched. A fake host has no netlink: its
FakeKernel records the GUIDs instead, as the firmware would.
"""

from __future__ import annotations

import errno
import itertools
import os
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass

from sriovdra.guid import byte_form, format_guid, guid_of_gid, parse_guid
from sriovdra.host import pci
from sriovdra.host.paths import HostPaths
from sriovdra.host.rdma import NLM_F_ACK, NLM_F_REQUEST, RdmaError, collect, encode_attr, parse_messages
from sriovdra.host.sriov import NON_NETWORK_DRIVERS, pf_dir
from sriovdra.host.writer import fake_kernel

# include/uapi/linux/rtnetlink.h, if_link.h
NETLINK_ROUTE = 0
RTM_SETLINK = 19
AF_UNSPEC = 0
IFLA_VFINFO_LIST = 22
IFLA_VF_INFO = 1
IFLA_VF_IB_NODE_GUID = 10
IFLA_VF_IB_PORT_GUID = 11
NODE, PORT = "node", "port"
GUID_ATTRS = {NODE: IFLA_VF_IB_NODE_GUID, PORT: IFLA_VF_IB_PORT_GUID}

_HEADER = struct.Struct("=IHHII")  # nlmsghdr: len, type, flags, seq, pid
_IFINFOMSG = struct.Struct("=BxHiII")  # ifi_family, pad, ifi_type, ifi_index, ifi_flags, ifi_change
VF_GUID = struct.Struct("@IQ")  # struct ifla_vf_guid, native alignment like the C compiler's
REPLY_TIMEOUT = 5.0

_HINTS = {
    errno.EOPNOTSUPP: "the netdev is not an IPoIB netdev whose driver sets VF GUIDs (mlx5_ib with ib_ipoib)",
    errno.ENODEV: "the netdev is gone",
    errno.EINVAL: "the VF index is out of range for this PF",
    errno.EPERM: "needs CAP_NET_ADMIN",
}

# (VF index, node|port, GUID): one GUID of one VF, set through its PF
Setter = Callable[[int, str, int], None]


class VfGuidError(Exception):
    """Setting a VF GUID failed; the message names the PF, the VF and the step."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.errno = code


def errno_name(code: int | None) -> str:
    """EOPNOTSUPP, not its Linux alias ENOTSUP that errno.errorcode gives."""
    if code == errno.EOPNOTSUPP:
        return "EOPNOTSUPP"
    return errno.errorcode.get(code or 0, str(code))


# --- the message ------------------------------------------------------------------------------


def setlink_vf_guid(seq: int, ifindex: int, vf: int, kind: str, guid: int, pid: int = 0) -> bytes:
    """RTM_SETLINK for one GUID (kind node or port) of VF `vf` of the PF netdev `ifindex`."""
    nested = encode_attr(IFLA_VFINFO_LIST, encode_attr(IFLA_VF_INFO, encode_attr(GUID_ATTRS[kind],
                                                                                 VF_GUID.pack(vf, guid))))
    body = _IFINFOMSG.pack(AF_UNSPEC, 0, ifindex, 0, 0) + nested
    return _HEADER.pack(_HEADER.size + len(body), RTM_SETLINK, NLM_F_REQUEST | NLM_F_ACK, seq, pid) + body


class RouteNetlink:
    """A NETLINK_ROUTE socket in the caller's network namespace, for RTM_SETLINK with an ack."""

    def __init__(self) -> None:
        try:
            self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE)
            self._sock.bind((0, 0))
            self._sock.settimeout(REPLY_TIMEOUT)
        except OSError as e:
            raise VfGuidError(f"cannot open a NETLINK_ROUTE socket: {e.strerror}", e.errno) from None
        self._seq = itertools.count(1)

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> RouteNetlink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def set_vf_guid(self, netdev: str, vf: int, kind: str, guid: int) -> None:
        """One GUID of one VF through the PF netdev; VfGuidError with the kernel's errno."""
        step = f"{netdev} VF {vf}: set {kind} GUID {byte_form(guid)}"
        try:
            index = socket.if_nametoindex(netdev)
        except OSError:
            raise VfGuidError(f"{step}: no netdev {netdev} in this network namespace (is ib_ipoib loaded, and does "
                              "sriovdra run in the host network namespace?)", errno.ENODEV) from None
        seq = next(self._seq)
        try:
            self._sock.send(setlink_vf_guid(seq, index, vf, kind, guid))
            while True:
                _, over = collect(parse_messages(self._sock.recv(1 << 16)), seq)
                if over:
                    return
        except TimeoutError:
            raise VfGuidError(f"{step}: no reply within {REPLY_TIMEOUT:g}s", errno.ETIMEDOUT) from None
        except RdmaError as e:  # collect() turns the kernel's NLMSG_ERROR into this
            hint = _HINTS.get(e.errno or 0)
            raise VfGuidError(f"{step}: {e} ({errno_name(e.errno)}){f': {hint}' if hint else ''}", e.errno) from None
        except OSError as e:
            raise VfGuidError(f"{step}: {e.strerror}", e.errno) from None


def guid_setter(paths: HostPaths, pf: str, netdev: str | None) -> Setter:
    """Netlink on a real host; the fake kernel's record on a fake host tree."""
    where = f"{pf} ({netdev})" if netdev else pf
    if not netdev:
        def no_netdev(vf: int, kind: str, guid: int) -> None:
            raise VfGuidError(f"{where} VF {vf}: set {kind} GUID: the PF has no IPoIB netdev to set it through "
                              "(load ib_ipoib)", errno.ENODEV)

        return no_netdev
    kernel = fake_kernel(paths)
    if kernel is not None:
        def fake(vf: int, kind: str, guid: int) -> None:
            try:
                kernel.set_vf_guid(pf, vf, kind, guid)
            except OSError as e:
                raise VfGuidError(f"{where} VF {vf}: set {kind} GUID {byte_form(guid)}: {e.strerror} "
                                  f"({errno_name(e.errno)})", e.errno) from None

        return fake

    def live(vf: int, kind: str, guid: int) -> None:
        with RouteNetlink() as nl:
            try:
                nl.set_vf_guid(netdev, vf, kind, guid)
            except VfGuidError as e:
                raise VfGuidError(f"{pf}: {e}", e.errno) from None

    return live


# --- assigning ------------------------------------------------------------------------------

SET, REBOUND, UNCHANGED, SKIPPED, FAILED = "set", "set+rebound", "unchanged", "skipped", "failed"


@dataclass(frozen=True)
class VfGuidResult:
    index: int
    address: str | None
    guid: int
    action: str  # set (applies at the next bind), set+rebound, unchanged, skipped (held by a claim), failed
    message: str = ""

    def to_dict(self) -> dict:
        return {"vfID": self.index, "pciAddress": self.address, "guid": format_guid(self.guid),
                "action": self.action, "message": self.message}


def current_guids(paths: HostPaths, pf: str, index: int) -> tuple[int | None, int | None]:
    """(node GUID, port GUID) the VF shows now: its RDMA device's, else the fake kernel's record."""
    vf = os.path.join(pf_dir(paths, pf), f"virtfn{index}")
    ib = os.path.join(vf, "infiniband")
    for name in sorted(os.listdir(ib)) if os.path.isdir(ib) else []:
        node = _read(os.path.join(ib, name, "node_guid"))
        try:
            node_guid = parse_guid(node, "node_guid") if node else None
        except ValueError:
            node_guid = None
        return node_guid, guid_of_gid(_read(os.path.join(ib, name, "ports", "1", "gids", "0")))
    kernel = fake_kernel(paths)
    recorded = kernel.vf_guids(pf, index) if kernel is not None else None
    return recorded if recorded is not None else (None, None)


def assign(paths: HostPaths, pf: str, netdev: str | None, guids: dict[int, int], *, held: frozenset[str] = frozenset(),
           setter: Setter | None = None) -> list[VfGuidResult]:
    """Give VF i of the PF node GUID = port GUID = guids[i]; one VF failing does not stop the others."""
    setter = setter or guid_setter(paths, pf, netdev)
    out = []
    for index, guid in sorted(guids.items()):
        link = os.path.join(pf_dir(paths, pf), f"virtfn{index}")
        address = os.path.basename(os.path.realpath(link)) if os.path.isdir(link) else None
        if address is None:
            out.append(VfGuidResult(index, None, guid, FAILED, f"{pf} VF {index}: no such VF"))
        elif address in held:
            out.append(VfGuidResult(index, address, guid, SKIPPED, "held by a claim: left as it is"))
        elif current_guids(paths, pf, index) == (guid, guid):
            out.append(VfGuidResult(index, address, guid, UNCHANGED))
        else:
            out.append(_set_one(paths, pf, index, address, guid, setter))
    return out


def _set_one(paths: HostPaths, pf: str, index: int, address: str, guid: int, setter: Setter) -> VfGuidResult:
    try:
        setter(index, NODE, guid)
        setter(index, PORT, guid)
        driver = pci.current_driver(paths, address)
        if driver is None or driver in NON_NETWORK_DRIVERS:
            note = f"{driver or 'unbound'}: applies when a network driver binds it"
            return VfGuidResult(index, address, guid, SET, note)
        pci.rebind(paths, address)
    except (VfGuidError, pci.PciBindError) as e:
        return VfGuidResult(index, address, guid, FAILED, str(e))
    return VfGuidResult(index, address, guid, REBOUND)


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None
