"""Moving a netdev (VF or IPoIB) into a pod's network namespace and back, and PF-side VF settings.

Everything goes through rtnetlink (pyroute2). attach() either completes or puts the device back as it
found it; detach() finds the device wherever it ended up and restores what the snapshot describes.
Network namespaces are only ever opened, never created: a missing pod netns is an error.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import secrets
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError as _KernelError

from sriovdra import faults
from sriovdra.host import ipoib
from sriovdra.host import netns as netns_mod
from sriovdra.host.rtnl import RtnlError, rtnl_socket, rtnl_transact

ROOT_NETNS = "/proc/self/ns/net"

_SOL_NETLINK, _NETLINK_EXT_ACK = 270, 11  # include/uapi/linux/netlink.h
_ANSWER_SECONDS = 10.0  # the kernel answers at once; only a wedged rtnl lock takes longer
_IFF_UP = 0x1
_IFNAMSIZ = 16
_IFA_F_NODAD = 0x02
_RT_SCOPE_UNIVERSE = 0
_RT_SCOPE_LINK = 253
_RTM_SETLINK = 19
_RTEXT_FILTER_VF = 1
_VF_UNSUPPORTED = 0xFFFFFFFF  # what the kernel reports for spoofchk/trust a driver cannot tell
_ZERO_MAC = "00:00:00:00:00:00"
_LINK_STATES = {"auto": 0, "enable": 1, "disable": 2}
_VLAN_PROTOS = {"802.1q": 0x8100, "802.1ad": 0x88A8}


class NetlinkError(Exception):
    """A netlink step failed. str(): "<ifname>: <step> in netns <path>: <kernel message>"."""

    def __init__(self, ifname: str, step: str, netns: str, message: str, code: int | None = None) -> None:
        super().__init__(ifname, step, netns, message, code)
        self.ifname = ifname
        self.step = step
        self.netns = netns
        self.message = message
        self.code = code

    def __str__(self) -> str:
        return f"{self.ifname}: {self.step} in netns {self.netns}: {self.message}"


@dataclass(frozen=True)
class LinkSnapshot:
    """How the netdev was in the root netns before we touched it."""

    name: str
    ifindex: int
    mtu: int
    mac: str
    up: bool

    def to_dict(self) -> dict:
        return {"name": self.name, "ifindex": self.ifindex, "mtu": self.mtu, "mac": self.mac, "up": self.up}

    @classmethod
    def from_dict(cls, d: dict) -> LinkSnapshot:
        return cls(name=d["name"], ifindex=int(d["ifindex"]), mtu=int(d["mtu"]), mac=d["mac"], up=bool(d["up"]))


@dataclass(frozen=True)
class AttachRequest:
    host_name: str  # netdev name in the root netns now
    pod_name: str  # name inside the pod
    mtu: int | None = None
    mac: str | None = None
    ips: tuple[str, ...] = ()  # CIDR "10.1.2.3/24"
    routes: tuple[tuple[str, str | None], ...] = ()  # (dst CIDR, gateway or None)


@dataclass(frozen=True)
class Attached:
    original: LinkSnapshot
    ifindex: int  # in the pod netns
    name: str
    mac: str
    mtu: int
    ips: tuple[str, ...]
    carrier: bool | None = None  # IFLA_CARRIER right after up (an IPoIB netdev gets it once its broadcast join is done)

    def to_dict(self) -> dict:
        return {
            "original": self.original.to_dict(),
            "ifindex": self.ifindex,
            "name": self.name,
            "mac": self.mac,
            "mtu": self.mtu,
            "ips": list(self.ips),
            "carrier": self.carrier,
        }

    @classmethod
    def from_dict(cls, d: dict) -> Attached:
        return cls(
            original=LinkSnapshot.from_dict(d["original"]),
            ifindex=int(d["ifindex"]),
            name=d["name"],
            mac=d["mac"],
            mtu=int(d["mtu"]),
            ips=tuple(d.get("ips") or ()),
            carrier=d.get("carrier"),
        )


@dataclass
class _Progress:
    """Where an attach got to, so that a rollback knows where to look for the device."""

    tmp_name: str
    pod_index: int | None = None


_Interface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
_Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class _Plan:
    """The request's addresses and routes, parsed before anything is touched."""

    ips: tuple[_Interface, ...]
    link_routes: tuple[_Network, ...]  # no gateway
    gw_routes: tuple[tuple[_Network, _Address], ...]


class Netlink:
    def __init__(self, root_netns: str = ROOT_NETNS, *, temp_prefix: str = "sdrv") -> None:
        # Held open: devices go home to this namespace even if what the path names changes later.
        if len(temp_prefix) > 7:
            raise ValueError(f"temp_prefix {temp_prefix!r}: at most 7 characters (IFNAMSIZ)")
        self._temp_prefix = temp_prefix
        self.root_netns = root_netns
        try:
            self._root_fd = netns_mod.open_netns_fd(root_netns)
        except OSError as e:
            raise NetlinkError("-", "open root netns", root_netns, _describe(e), e.errno) from e

    def close(self) -> None:
        if self._root_fd >= 0:
            os.close(self._root_fd)
            self._root_fd = -1

    def __enter__(self) -> Netlink:
        return self

    def __exit__(self, *_exc) -> None:
        self.close()

    # ----- snapshot -----

    def snapshot(self, name: str) -> LinkSnapshot:
        with self._root() as root, _step(name, "look up link", self.root_netns):
            return self._snapshot(root, name)

    def _snapshot(self, root: IPRoute, name: str) -> LinkSnapshot:
        link = _link_by_name(root, name)
        if link is None:
            raise NetlinkError(name, "look up link", self.root_netns, "no such link", errno.ENODEV)
        return _as_snapshot(link)

    # ----- attach -----

    def attach(self, netns: str, req: AttachRequest) -> Attached:
        plan = _plan(req, netns)
        with self._root() as root:
            with _step(req.host_name, "look up link", self.root_netns):
                original = self._snapshot(root, req.host_name)
            with _netns_fd(req.host_name, netns) as pod_fd, _ipr_in(pod_fd, req.host_name, netns) as pod:
                with _step(req.pod_name, "check name", netns):
                    taken = _link_by_name(pod, req.pod_name) is not None
                if taken:
                    raise NetlinkError(req.pod_name, "check name", netns, "a link with this name already exists",
                                       errno.EEXIST)
                progress = _Progress(tmp_name=self._temp_name())
                try:
                    with _step(req.host_name, "attach", netns):  # a look-up error is a failed attach too
                        return self._attach(root, pod, pod_fd, netns, req, plan, original, progress)
                except NetlinkError as err:
                    self._rollback(root, pod, netns, original, progress, err)
                    raise

    def _attach(self, root: IPRoute, pod: IPRoute, pod_fd: int, netns: str, req: AttachRequest, plan: _Plan,
                original: LinkSnapshot, progress: _Progress) -> Attached:
        with _step(req.host_name, "set down", self.root_netns):
            root.link("set", index=original.ifindex, state="down")
        # Moving under a unique temporary name never clashes in the pod (the host name might); the
        # final rename happens inside, where a clash fails cleanly and is rolled back.
        with _step(req.host_name, "move to pod", netns):
            root.link("set", index=original.ifindex, net_ns_fd=pod_fd, ifname=progress.tmp_name)
        faults.point("attach.after-move-to-pod")
        moved = _link_by_name(pod, progress.tmp_name)
        if moved is None:
            raise NetlinkError(req.host_name, "move to pod", netns, f"not found as {progress.tmp_name} after the move")
        index = progress.pod_index = moved["index"]
        with _step(req.pod_name, "rename", netns):
            pod.link("set", index=index, ifname=req.pod_name)
        if req.mtu is not None:
            with _step(req.pod_name, f"set mtu {req.mtu}", netns):
                pod.link("set", index=index, mtu=req.mtu)
        if req.mac is not None:
            with _step(req.pod_name, f"set mac {req.mac}", netns):
                pod.link("set", index=index, address=req.mac)
        with _step(req.pod_name, "set up", netns):
            pod.link("set", index=index, state="up")
        _add_addresses(pod, index, req.pod_name, netns, plan.ips)
        _add_routes(pod, index, req.pod_name, netns, plan)
        link = pod.get_links(index)[0]
        return Attached(original=original, ifindex=index, name=link.get("ifname"), mac=link.get("address"),
                        mtu=link.get("mtu"), ips=_global_addresses(pod, index), carrier=_carrier(link))

    def _rollback(self, root: IPRoute, pod: IPRoute, netns: str, original: LinkSnapshot, progress: _Progress,
                  err: NetlinkError) -> None:
        try:
            with _step(original.name, "find device", netns):
                index = progress.pod_index or _find_moved(pod, original, progress.tmp_name)
            with _step(original.name, "find device", self.root_netns):
                if index is not None:
                    self._send_home(pod, netns, index, progress.tmp_name, original.name)
                    home = _link_by_name(root, progress.tmp_name)
                else:
                    home = _link_by_index(root, original.ifindex)
            if home is None:
                raise NetlinkError(original.name, "find device", netns, "neither in the pod nor at home")
            self._restore(root, home, original)
        except NetlinkError as rb:
            # Keep the step that failed first: it is the cause; the failed rollback is what to clean up.
            raise NetlinkError(err.ifname, err.step, err.netns, f"{err.message}; rollback failed: {rb}",
                               err.code) from rb

    # ----- detach -----

    def detach(self, netns: str | None, pod_name: str, original: LinkSnapshot, ifindex: int | None = None) -> str:
        """Put the device back as `original` describes: "restored", "already-home" or "missing"."""
        with self._root() as root, _step(pod_name, "detach", netns or self.root_netns):
            if netns is not None and self._detach_from_pod(root, netns, pod_name, original, ifindex):
                return "restored"
            return self._recover_in_root(root, pod_name, original, ifindex)

    def _detach_from_pod(self, root: IPRoute, netns: str, pod_name: str, original: LinkSnapshot,
                         ifindex: int | None) -> bool:
        try:
            pod_fd = netns_mod.open_netns_fd(netns)
        except OSError as e:
            if e.errno in (errno.ENOENT, errno.EINVAL):
                return False  # the pod's netns is gone: the device is at home or destroyed
            raise NetlinkError(pod_name, "open netns", netns, _describe(e), e.errno) from e
        try:
            with _ipr_in(pod_fd, pod_name, netns) as pod:
                link = _link_by_name(pod, pod_name)
                if link is not None and (link["index"] != ifindex if ifindex is not None
                                         else not _is_ours(link, original)):
                    link = None  # the pod's own link of that name (ours has left, or never came): never take it
                if link is None and ifindex is not None:
                    link = _link_by_index(pod, ifindex)
                if link is None:  # a crash between the move and the rename left it under our temporary name
                    link = next((x for x in pod.get_links() if (x.get("ifname") or "").startswith(self._temp_prefix)
                                 and _is_ours(x, original)), None)
                if link is None:
                    return False
                tmp = self._temp_name()
                self._send_home(pod, netns, link["index"], tmp, pod_name)
        finally:
            os.close(pod_fd)
        home = _link_by_name(root, tmp)
        if home is None:
            raise NetlinkError(pod_name, "find device", self.root_netns, f"not found as {tmp} after the move home")
        self._restore(root, home, original)
        return True

    def _recover_in_root(self, root: IPRoute, pod_name: str, original: LinkSnapshot, ifindex: int | None) -> str:
        links = list(root.get_links())
        named = next((x for x in links if x.get("ifname") == original.name), None)
        if named is not None and _is_ours(named, original):
            self._restore(root, named, original)
            return "already-home"
        link = _find_returned(links, pod_name, original, ifindex, self._temp_prefix)
        if link is None:
            return "missing"
        self._restore(root, link, original)
        return "restored"

    # ----- moving and restoring -----

    def _send_home(self, pod: IPRoute, netns: str, index: int, tmp: str, ifname: str) -> None:
        """Down, no addresses, a unique name (the pod name may be taken at home), then into the root netns."""
        with _step(ifname, "set down", netns):
            pod.link("set", index=index, state="down")
        with _step(ifname, "flush addresses", netns):
            for addr in pod.get_addr(index=index):
                _ignore(errno.EADDRNOTAVAIL, errno.ENOENT)(pod.addr)(
                    "del", index=index, address=addr.get("address"), prefixlen=addr["prefixlen"])
        with _step(ifname, f"rename to {tmp}", netns):
            pod.link("set", index=index, ifname=tmp)
        with _step(ifname, "move to root netns", netns):
            pod.link("set", index=index, net_ns_fd=self._root_fd)

    def _restore(self, root: IPRoute, link, original: LinkSnapshot) -> None:
        """Name, MTU, MAC and up/down state as in the snapshot; the link is in the root netns."""
        index, name, ns = link["index"], link.get("ifname"), self.root_netns
        if name != original.name:
            holder = _link_by_name(root, original.name)
            if holder is not None:
                raise NetlinkError(original.name, "rename home", ns,
                                   f"name taken by another link (ifindex {holder['index']}); device left as {name}",
                                   errno.EEXIST)
            with _step(original.name, "set down", ns):
                root.link("set", index=index, state="down")
            with _step(original.name, f"rename {name} back", ns):
                root.link("set", index=index, ifname=original.name)
        if link.get("mtu") != original.mtu:
            with _step(original.name, f"restore mtu {original.mtu}", ns):
                root.link("set", index=index, mtu=original.mtu)
        if link.get("address") != original.mac:
            with _step(original.name, f"restore mac {original.mac}", ns):
                root.link("set", index=index, address=original.mac)
        with _step(original.name, "set up" if original.up else "set down", ns):
            root.link("set", index=index, state="up" if original.up else "down")

    def _temp_name(self) -> str:
        return f"{self._temp_prefix}{secrets.token_hex(4)}"

    temp_name = _temp_name  # a unique name for a link we create (never clashes with a real one)

    # ----- reading and setting a link's state -----

    def mtu_and_carrier(self, netns: str, ifindex: int, ifname: str) -> tuple[int, bool | None] | None:
        """(MTU, carrier) of link `ifindex` in `netns` now; None when it (or the netns) is gone."""
        try:
            fd = netns_mod.open_netns_fd(netns)
        except OSError as e:
            if e.errno in (errno.ENOENT, errno.EINVAL):
                return None
            raise NetlinkError(ifname, "open netns", netns, _describe(e), e.errno) from e
        try:
            with _ipr_in(fd, ifname, netns) as ipr, _step(ifname, "read mtu and carrier", netns):
                link = _link_by_index(ipr, ifindex)
                return None if link is None else (link.get("mtu"), _carrier(link))
        finally:
            os.close(fd)

    def is_up(self, name: str) -> bool:
        """Whether `name` in the root netns is administratively up."""
        return self.snapshot(name).up

    def set_up(self, name: str, up: bool) -> None:
        """Bring `name` in the root netns up or down."""
        with self._root() as root:
            link = self._snapshot(root, name)
            with _step(name, "set up" if up else "set down", self.root_netns):
                root.link("set", index=link.ifindex, state="up" if up else "down")

    # ----- IPoIB P_Key children -----

    def ipoib_pkey(self, name: str) -> int | None:
        """The P_Key of IPoIB netdev `name` (IFLA_IPOIB_PKEY, as ipoib reports it), None for other links."""
        with self._root() as root, _step(name, "read IPoIB P_Key", self.root_netns):
            link = _link_by_name(root, name)
            info = link.get_attr("IFLA_LINKINFO") if link is not None else None
            if info is None or info.get_attr("IFLA_INFO_KIND") != "ipoib":
                return None
            data = info.get_attr("IFLA_INFO_DATA")
            return data.get_attr("IFLA_IPOIB_PKEY") if data is not None else None

    def add_ipoib_child(self, parent: str, name: str, pkey: int) -> int:
        """Create IPoIB P_Key child `name` of `parent` in the root netns; returns its ifindex."""
        step, ns = f"create IPoIB child for P_Key {pkey:#06x}", self.root_netns
        with self._root() as root:
            with _step(parent, "look up IPoIB parent", ns):
                link = _link_by_name(root, parent)
            if link is None:
                raise NetlinkError(parent, "look up IPoIB parent", ns, "no such link", errno.ENODEV)
            seq = secrets.randbits(31) | 1
            try:
                request = ipoib.child_request(seq, name, link["index"], pkey)
            except ValueError as e:
                raise NetlinkError(parent, step, ns, str(e), errno.EINVAL) from e
            try:
                self._transact(request, parent, step)
            except RtnlError as e:
                why = f"{e.text or os.strerror(e.errno)} ({errno.errorcode.get(e.errno, e.errno)})"
                raise NetlinkError(parent, step, ns, f"{why}: {ipoib.hint(e.errno)}", e.errno) from None
            with _step(name, "look up the new IPoIB child", ns):
                child = _link_by_name(root, name)
            if child is None:
                raise NetlinkError(name, "look up the new IPoIB child", ns, "created, but not found", errno.ENODEV)
            return child["index"]

    def _transact(self, request: bytes, ifname: str, step: str) -> None:
        """Send one request from the root netns and wait for its acknowledgement (RtnlError: refused)."""
        with _step(ifname, f"{step} (open netlink socket)", self.root_netns):
            sock = netns_mod.call_in(self._root_fd, rtnl_socket)
        with sock:
            rtnl_transact(request, sock=sock, timeout=_ANSWER_SECONDS)

    def delete_link(self, netns: str | None, unique_name: str, names: set[str], indexes: set[int],
                    root_indexes: set[int]) -> str:
        """Delete a link we created, wherever it is now: in `netns` if that still exists, else in the root
        netns. "deleted", or "missing" (it died with its netns). It is ours when it has `unique_name`
        (a temporary name only we give), or an ifindex we recorded (`indexes` in the pod, `root_indexes`
        in the root netns: a pod-side number means nothing there) together with a name in `names` or
        one of our temporary names: an ifindex alone may have been reused by someone else's link."""

        def matcher(known: set[int]):
            def ours(link) -> bool:
                name = link.get_attr("IFLA_IFNAME") or ""
                return name == unique_name or link["index"] in known and (
                    name in names or name.startswith(self._temp_prefix))
            return ours

        if netns is not None:
            try:
                fd = netns_mod.open_netns_fd(netns)
            except OSError as e:
                if e.errno not in (errno.ENOENT, errno.EINVAL):
                    raise NetlinkError(unique_name, "open netns", netns, _describe(e), e.errno) from e
                fd = -1  # the pod's netns is gone: so is the link, or it came home
            if fd >= 0:
                try:
                    with _ipr_in(fd, unique_name, netns) as pod:
                        if _delete_first(pod, matcher(indexes), unique_name, netns):
                            return "deleted"
                finally:
                    os.close(fd)
        with self._root() as root:
            return "deleted" if _delete_first(root, matcher(root_indexes), unique_name, self.root_netns) else "missing"

    # ----- PF-side VF settings -----

    def set_vf(self, pf: str, vf: int, *, mac=None, vlan=None, qos=None, proto=None, spoofchk=None, trust=None,
               link_state=None, min_rate=None, max_rate=None) -> None:
        """Apply the settings that are not None to VF `vf` of `pf` (IFLA_VFINFO_LIST on the PF)."""
        ifname = f"{pf} vf {vf}"
        with self._root() as root, _step(ifname, "look up PF", self.root_netns):
            link = _link_by_name(root, pf)
            if link is None:
                raise NetlinkError(ifname, "look up PF", self.root_netns, "no such link", errno.ENODEV)
            if (min_rate is None) != (max_rate is None):
                # The kernel takes both rates in one attribute: keep the one not given as it is.
                current = self._vf_settings(root, pf, link["index"], vf)
                min_rate = current["min_rate"] if min_rate is None else min_rate
                max_rate = current["max_rate"] if max_rate is None else max_rate
            try:
                spec = vf_spec(vf, mac=mac, vlan=vlan, qos=qos, proto=proto, spoofchk=spoofchk, trust=trust,
                               link_state=link_state, min_rate=min_rate, max_rate=max_rate)
            except ValueError as e:
                raise NetlinkError(ifname, "check VF settings", self.root_netns, str(e), errno.EINVAL) from e
            if len(spec) == 1:
                return  # nothing but the VF number: nothing to change
            with _step(ifname, "set VF", self.root_netns):
                send_vf_spec(root, link["index"], spec)

    def vf_settings(self, pf: str, vf: int) -> dict:
        """The VF's current settings (the keyword arguments of set_vf), to restore at detach."""
        with self._root() as root, _step(f"{pf} vf {vf}", "look up PF", self.root_netns):
            link = _link_by_name(root, pf)
            if link is None:
                raise NetlinkError(f"{pf} vf {vf}", "look up PF", self.root_netns, "no such link", errno.ENODEV)
            return self._vf_settings(root, pf, link["index"], vf)

    def _vf_settings(self, root: IPRoute, pf: str, index: int, vf: int) -> dict:
        with _step(f"{pf} vf {vf}", "read VF settings", self.root_netns):
            msg = root.link("get", index=index, ext_mask=_RTEXT_FILTER_VF)[0]
        settings = parse_vf_info(msg, vf)
        if settings is None:
            raise NetlinkError(f"{pf} vf {vf}", "read VF settings", self.root_netns, "the PF reports no such VF",
                               errno.ENODEV)
        return settings

    # ----- netns plumbing -----

    @contextmanager
    def _root(self) -> Iterator[IPRoute]:
        with _ipr_in(self._root_fd, "-", self.root_netns) as ipr:
            yield ipr


# ----- VF message building and parsing (pure: testable without SR-IOV hardware) -----


def vf_spec(vf: int, *, mac=None, vlan=None, qos=None, proto=None, spoofchk=None, trust=None, link_state=None,
            min_rate=None, max_rate=None) -> dict:
    """The pyroute2 `vf=` value for the settings that are not None."""
    spec: dict = {"vf": vf}
    if mac is not None:
        spec["mac"] = mac.lower()
    if vlan is None and (qos is not None or proto is not None):
        raise ValueError("qos and proto need a vlan")
    if vlan is not None:
        if proto is None:
            spec["vlan"] = {"vlan": vlan, "qos": qos or 0}
        else:
            # Only IFLA_VF_VLAN_LIST carries the protocol (802.1ad QinQ), as in iproute2.
            spec["vlan"] = [{"vlan": vlan, "qos": qos or 0, "proto": _vlan_proto(proto)}]
    if (min_rate is None) != (max_rate is None):
        raise ValueError("min_rate and max_rate go together")
    if min_rate is not None:
        spec["rate"] = {"min_tx_rate": min_rate, "max_tx_rate": max_rate}
    if spoofchk is not None:
        spec["spoofchk"] = int(bool(spoofchk))
    if trust is not None:
        spec["trust"] = int(bool(trust))
    if link_state is not None:
        spec["link_state"] = _link_state(link_state)
    return spec


def send_vf_spec(ipr: IPRoute, pf_index: int, spec: dict) -> None:
    """RTM_SETLINK on the PF with IFLA_VFINFO_LIST (an IPBatch here compiles the message without sending)."""
    ipr.link("set", index=pf_index, vf=dict(spec), command_map={"set": (_RTM_SETLINK, "req")})


def parse_vf_info(link, vf: int) -> dict | None:
    """Settings of VF `vf` from a link message with IFLA_VFINFO_LIST, or None when it has no such VF."""
    vflist = link.get("IFLA_VFINFO_LIST")
    for info in vflist.get_attrs("IFLA_VF_INFO") if vflist else ():
        mac = info.get("IFLA_VF_MAC")
        if mac is None or mac["vf"] != vf:
            continue
        vlan = info.get("IFLA_VF_VLAN") or {}
        vlist = info.get("IFLA_VF_VLAN_LIST")
        first = vlist.get_attrs("IFLA_VF_VLAN_INFO") if vlist else []
        rate = info.get("IFLA_VF_RATE") or {}
        state = info.get("IFLA_VF_LINK_STATE")
        states = {v: k for k, v in _LINK_STATES.items()}
        return {
            "mac": mac["mac"],
            "vlan": vlan.get("vlan", 0),
            "qos": vlan.get("qos", 0),
            "proto": first[0]["proto"] if first else None,
            "spoofchk": _vf_flag(info.get("IFLA_VF_SPOOFCHK"), "spoofchk"),
            "trust": _vf_flag(info.get("IFLA_VF_TRUST"), "trust"),
            "link_state": states.get(state["link_state"]) if state else None,
            "min_rate": rate.get("min_tx_rate", 0),
            "max_rate": rate.get("max_tx_rate", 0),
        }
    return None


def _vf_flag(attr, key: str) -> bool | None:
    if attr is None or attr[key] == _VF_UNSUPPORTED:
        return None
    return bool(attr[key])


def _vlan_proto(proto) -> int:
    if isinstance(proto, int):
        return proto
    try:
        return _VLAN_PROTOS[str(proto).lower()]
    except KeyError:
        raise ValueError(f"vlan proto {proto!r}: expected 802.1Q or 802.1ad") from None


def _link_state(state) -> int:
    if isinstance(state, int) and state in _LINK_STATES.values():
        return state
    try:
        return _LINK_STATES[str(state).lower()]
    except KeyError:
        raise ValueError(f"link_state {state!r}: expected auto, enable or disable") from None


# ----- attach helpers -----


def _plan(req: AttachRequest, netns: str) -> _Plan:
    try:
        for name in (req.host_name, req.pod_name):
            _check_ifname(name)
        ips = tuple(ipaddress.ip_interface(ip) for ip in req.ips)
        link_routes, gw_routes = [], []
        for dst, gw in req.routes:
            net = ipaddress.ip_network(dst, strict=False)
            if gw is None:
                link_routes.append(net)
            else:
                gateway = ipaddress.ip_address(gw)
                if gateway.version != net.version:
                    raise ValueError(f"route {dst} via {gw}: address families differ")
                gw_routes.append((net, gateway))
    except ValueError as e:
        raise NetlinkError(req.host_name, "check request", netns, str(e), errno.EINVAL) from e
    return _Plan(ips=ips, link_routes=tuple(link_routes), gw_routes=tuple(gw_routes))


def _check_ifname(name: str) -> None:
    # The kernel's rules (dev_valid_name), checked before anything moves.
    if not name or len(name.encode()) > _IFNAMSIZ - 1 or name in (".", "..") or any(c in name for c in "/: \t\n"):
        raise ValueError(f"{name!r} is not a valid interface name")


def _add_addresses(pod: IPRoute, index: int, ifname: str, netns: str, ips) -> None:
    for ip in ips:
        # No DAD: the address is ours by IPAM, and routes via it must work at once.
        flags = {"flags": _IFA_F_NODAD} if ip.version == 6 else {}
        with _step(ifname, f"add address {ip}", netns):
            _ignore(errno.EEXIST)(pod.addr)("add", index=index, address=str(ip.ip), prefixlen=ip.network.prefixlen,
                                            **flags)


def _add_routes(pod: IPRoute, index: int, ifname: str, netns: str, plan: _Plan) -> None:
    """Link-scope routes first, so that every gateway is reachable when its routes go in."""
    on_link = [ip.network for ip in plan.ips] + list(plan.link_routes)
    link_routes = list(plan.link_routes)
    for _net, gw in plan.gw_routes:
        if not any(gw.version == n.version and gw in n for n in on_link):
            host = ipaddress.ip_network(gw)  # a /32 or /128 to the gateway itself
            link_routes.append(host)
            on_link.append(host)
    for net in link_routes:
        with _step(ifname, f"add route {net}", netns):
            _ignore(errno.EEXIST)(pod.route)("add", **_route_args(index, net, None))
    for net, gw in plan.gw_routes:
        with _step(ifname, f"add route {net} via {gw}", netns):
            _ignore(errno.EEXIST)(pod.route)("add", **_route_args(index, net, gw))


def _route_args(index: int, net, gw) -> dict:
    args = {
        "oif": index,
        "family": socket.AF_INET if net.version == 4 else socket.AF_INET6,
        "dst_len": net.prefixlen,
        "scope": _RT_SCOPE_LINK if gw is None else _RT_SCOPE_UNIVERSE,
    }
    if net.prefixlen:
        args["dst"] = str(net.network_address)
    if gw is not None:
        args["gateway"] = str(gw)
    return args


def _global_addresses(ipr: IPRoute, index: int) -> tuple[str, ...]:
    return tuple(f"{a.get('address')}/{a['prefixlen']}" for a in ipr.get_addr(index=index)
                 if a["scope"] == _RT_SCOPE_UNIVERSE)


def _find_moved(pod: IPRoute, original: LinkSnapshot, tmp: str) -> int | None:
    """The device in the pod after a failed move: a move+rename can move and then fail the rename."""
    link = _link_by_name(pod, tmp)
    if link is None:
        link = _link_by_name(pod, original.name)
        if link is not None and link.get("address") != original.mac:
            link = None  # the pod's own link of that name
    return None if link is None else link["index"]


# ----- finding a device that came home on its own -----


def _is_ours(link, original: LinkSnapshot) -> bool:
    return link["index"] == original.ifindex or (original.mac != _ZERO_MAC and link.get("address") == original.mac)


def _find_returned(links: list, pod_name: str, original: LinkSnapshot, ifindex: int | None, temp_prefix: str):
    """Our device in the root netns under another name, or None.

    A physical netdev whose netns dies comes home under its pod name (or devN on a clash), keeping its
    ifindex when free. The pod-side ifindex is a number from another netns, so it only counts together
    with a name we would have given it; a MAC only counts when it is unique.
    """
    by_index = [x for x in links if x["index"] == original.ifindex]
    if by_index:
        return by_index[0]
    if ifindex is not None:
        for link in links:
            name = link.get("ifname") or ""
            if link["index"] == ifindex and (name == pod_name or name.startswith(temp_prefix) or
                                             (name.startswith("dev") and name[3:].isdigit())):
                return link
    by_mac = [x for x in links if original.mac != _ZERO_MAC and x.get("address") == original.mac]
    if len(by_mac) == 1:
        return by_mac[0]
    return None


# ----- small netlink helpers -----


def _delete_first(ipr: IPRoute, match, ifname: str, netns: str) -> bool:
    """Delete the first link `match` accepts; False when there is none."""
    with _step(ifname, "find link to delete", netns):
        link = next((x for x in ipr.get_links() if match(x)), None)
    if link is None:
        return False
    with _step(link.get_attr("IFLA_IFNAME") or ifname, "delete link", netns):
        _ignore(errno.ENODEV)(ipr.link)("del", index=link["index"])
    return True


def _link_by_name(ipr: IPRoute, name: str):
    try:
        links = ipr.get_links(ifname=name)
    except _KernelError as e:
        if e.code == errno.ENODEV:
            return None
        raise
    return links[0] if links else None


def _link_by_index(ipr: IPRoute, index: int):
    try:
        return ipr.get_links(index)[0]
    except _KernelError as e:
        if e.code == errno.ENODEV:
            return None
        raise


def _carrier(link) -> bool | None:
    carrier = link.get_attr("IFLA_CARRIER")
    return None if carrier is None else bool(carrier)


def _as_snapshot(link) -> LinkSnapshot:
    return LinkSnapshot(name=link.get("ifname"), ifindex=link["index"], mtu=link.get("mtu"),
                        mac=link.get("address"), up=bool(link["flags"] & _IFF_UP))


def _ignore(*codes: int):
    """Wrap a call so that the kernel errors `codes` count as success (EEXIST on an already-present route)."""

    def wrap(fn):
        def call(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except _KernelError as e:
                if e.code not in codes:
                    raise
                return None

        return call

    return wrap


def _describe(e: BaseException) -> str:
    code = getattr(e, "code", None) if isinstance(e, _KernelError) else getattr(e, "errno", None)
    if isinstance(e, _KernelError):
        text = e.args[1] if len(e.args) > 1 and e.args[1] else os.strerror(code)
    elif isinstance(e, OSError):
        text = e.strerror or str(e)
    else:
        text = str(e) or type(e).__name__
    name = errno.errorcode.get(code) if isinstance(code, int) else None
    return f"{text} ({name})" if name else text


@contextmanager
def _step(ifname: str, step: str, netns: str) -> Iterator[None]:
    """Turn a kernel or OS error into a NetlinkError naming the interface, the step and the netns."""
    try:
        yield
    except NetlinkError:
        raise
    except (_KernelError, OSError, TimeoutError, RuntimeError) as e:
        code = e.code if isinstance(e, _KernelError) else getattr(e, "errno", None)
        raise NetlinkError(ifname, step, netns, _describe(e), code) from e


@contextmanager
def _netns_fd(ifname: str, netns: str) -> Iterator[int]:
    try:
        fd = netns_mod.open_netns_fd(netns)
    except OSError as e:
        raise NetlinkError(ifname, "open netns", netns, _describe(e), e.errno) from e
    try:
        yield fd
    finally:
        os.close(fd)


def _rtnl_socket() -> socket.socket:
    """A NETLINK_ROUTE socket set up as pyroute2 sets up its own (buffers, extended ack)."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC, 0)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    sock.setsockopt(_SOL_NETLINK, _NETLINK_EXT_ACK, 1)
    return sock


@contextmanager
def _ipr_in(ns_fd: int, ifname: str, netns: str) -> Iterator[IPRoute]:
    """An rtnetlink socket inside the namespace we hold open: made in a thread that entered exactly
    that namespace (not whatever the path names by then), without pyroute2's forked helper
    (~300 ms a socket here, against a few ms)."""
    with _step(ifname, "open netlink socket", netns):
        sock = netns_mod.call_in(ns_fd, _rtnl_socket)
        try:
            ipr = IPRoute(use_socket=sock, ext_ack=True)
        except BaseException:
            sock.close()
            raise
    try:
        yield ipr
    finally:
        ipr.close()
