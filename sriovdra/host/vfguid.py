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
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

from sriovdra.guid import byte_form, guid_of_gid, parse_guid
from sriovdra.host import pci
from sriovdra.host.paths import HostPaths
from sriovdra.host.rdma import NLM_F_ACK, NLM_F_REQUEST, encode_attr
from sriovdra.host.rtnl import RtnlError, rtnl_transact
from sriovdra.host.sriov import NON_NETWORK_DRIVERS, pf_dir
from sriovdra.host.writer import errno_name, fake_kernel

# include/uapi/linux/rtnetlink.h, if_link.h
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
_SEQ = itertools.count(1)  # sequence numbers of this process's requests

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


# --- the message ------------------------------------------------------------------------------


def setlink_vf_guid(seq: int, ifindex: int, vf: int, kind: str, guid: int, pid: int = 0) -> bytes:
    """RTM_SETLINK for one GUID (kind node or port) of VF `vf` of the PF netdev `ifindex`."""
    nested = encode_attr(IFLA_VFINFO_LIST, encode_attr(IFLA_VF_INFO, encode_attr(GUID_ATTRS[kind],
                                                                                 VF_GUID.pack(vf, guid))))
    body = _IFINFOMSG.pack(AF_UNSPEC, 0, ifindex, 0, 0) + nested
    return _HEADER.pack(_HEADER.size + len(body), RTM_SETLINK, NLM_F_REQUEST | NLM_F_ACK, seq, pid) + body


def set_vf_guid(netdev: str, vf: int, kind: str, guid: int) -> None:
    """One GUID of one VF through the PF netdev, in the caller's network namespace; VfGuidError with
    the kernel's errno and extended-ack text."""
    step = f"{netdev} VF {vf}: set {kind} GUID {byte_form(guid)}"
    try:
        index = socket.if_nametoindex(netdev)
    except OSError:
        raise VfGuidError(f"{step}: no netdev {netdev} in this network namespace (is ib_ipoib loaded, and does "
                          "sriovdra run in the host network namespace?)", errno.ENODEV) from None
    try:
        rtnl_transact(setlink_vf_guid(next(_SEQ), index, vf, kind, guid))
    except RtnlError as e:
        hint = _HINTS.get(e.errno)
        raise VfGuidError(f"{step}: {e} ({errno_name(e.errno)}){f': {hint}' if hint else ''}", e.errno) from None


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
        try:
            set_vf_guid(netdev, vf, kind, guid)
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


def vf_address(paths: HostPaths, pf: str, index: int) -> str | None:
    link = os.path.join(pf_dir(paths, pf), f"virtfn{index}")
    return os.path.basename(os.path.realpath(link)) if os.path.isdir(link) else None


def assign(paths: HostPaths, pf: str, netdev: str | None, guids: dict[int, int], *,
           held: Callable[[str], bool] = lambda address: False,
           lock: Callable[[], AbstractContextManager] = nullcontext,
           setter: Setter | None = None) -> list[VfGuidResult]:
    """Give VF i of the PF node GUID = port GUID = guids[i]; one VF failing does not stop the others.

    Per VF, under lock() (serve's node-wide host lock): held(address) is asked again (a claim may have
    started since the plan), then a VF a crash left unbound between unbind and bind is bound again,
    then the GUIDs are set and the VF rebound."""
    setter = setter or guid_setter(paths, pf, netdev)
    out = []
    for index, guid in sorted(guids.items()):
        with lock():
            out.append(_one(paths, pf, index, guid, held, setter))
    return out


def _one(paths: HostPaths, pf: str, index: int, guid: int, held: Callable[[str], bool], setter: Setter) -> VfGuidResult:
    address = vf_address(paths, pf, index)
    if address is None:
        return VfGuidResult(index, None, guid, FAILED, f"{pf} VF {index}: no such VF")
    if held(address):
        return VfGuidResult(index, address, guid, SKIPPED, "held by a claim: left as it is")
    try:
        recovered = _recover(paths, pf, address)
    except pci.PciBindError as e:
        return VfGuidResult(index, address, guid, FAILED, f"{pf} VF {index}: left unbound: {e}")
    if current_guids(paths, pf, index) == (guid, guid):
        return VfGuidResult(index, address, guid, REBOUND if recovered else UNCHANGED,
                            f"bound to {recovered} again (left unbound)" if recovered else "")
    return _set_one(paths, pf, index, address, guid, setter)


def _recover(paths: HostPaths, pf: str, address: str) -> str | None:
    """A VF left unbound by an interrupted rebind (driver_override names its driver), or unbound while
    the PF probes its VFs, gets bound again; returns the driver it got, None when nothing was done."""
    if pci.current_driver(paths, address) is not None:
        return None
    override = pci.override(paths, address)
    if override is None and not _autoprobe(paths, pf):
        return None  # autoprobe off and no override: unbound on purpose
    if override in NON_NETWORK_DRIVERS:
        return None
    driver = pci.probe(paths, address)
    return driver if driver is not None and driver not in NON_NETWORK_DRIVERS else None


def _autoprobe(paths: HostPaths, pf: str) -> bool:
    return _read(os.path.join(pf_dir(paths, pf), "sriov_drivers_autoprobe")) != "0"


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
