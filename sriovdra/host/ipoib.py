"""IP over InfiniBand: the netdev MTU an IB MTU allows, and P_Key child interfaces over rtnetlink.

A P_Key child (`ip link add link ib0 name ib0.8001 type ipoib pkey 0x8001`) is an IPoIB netdev of
its own partition on the same port; the parent keeps the default partition. It is created with one
RTM_NEWLINK message, encoded here by hand so that tests can compare it byte for byte with the uapi
(include/uapi/linux/netlink.h, rtnetlink.h, if_link.h). The kernel sets the full-membership bit of
a child's P_Key itself (its broadcast group always uses the full P_Key), so 0x0001 and 0x8001 make
the same child. Children made over rtnetlink may share a P_Key with another child of the same
parent on current kernels (the one-child-per-P_Key rule, ENOTUNIQ, is the sysfs create_child
interface's); P_Keys 0x0000 and 0x8000 get EINVAL. Without ib_ipoib the kernel knows no "ipoib"
link kind and answers EOPNOTSUPP.

Pure: building bytes only; sriovdra.host.netlink sends them (sriovdra.host.rtnl reads the answer).
"""

from __future__ import annotations

import errno
import socket
import struct

from sriovdra.partition import pkey_problem

# drivers/infiniband/ulp/ipoib/ipoib.h: IPOIB_ENCAP_LEN, IPOIB_UD_MTU(ib_mtu) = ib_mtu - IPOIB_ENCAP_LEN
IPOIB_ENCAP_LEN = 4

# include/uapi/linux/netlink.h
NLM_F_REQUEST, NLM_F_ACK, NLM_F_EXCL, NLM_F_CREATE = 0x1, 0x4, 0x200, 0x400
NLA_F_NESTED = 0x8000
# include/uapi/linux/rtnetlink.h, if_link.h
RTM_NEWLINK = 16
IFLA_IFNAME, IFLA_LINK, IFLA_LINKINFO = 3, 5, 18
IFLA_INFO_KIND, IFLA_INFO_DATA = 1, 2
IFLA_IPOIB_PKEY, IFLA_IPOIB_MODE, IFLA_IPOIB_UMCAST = 1, 2, 3

_NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_IFINFOMSG = struct.Struct("=BxHiII")  # family, pad, type, index, flags, change
_NLATTR = struct.Struct("=HH")  # len, type


def netdev_mtu(ib_mtu: int) -> int:
    """The IPoIB netdev MTU that carries `ib_mtu`-byte IB packets: the 4-byte IPoIB header comes off.
    Datagram mode cannot exceed it; connected mode could, but its multicast still goes over UD."""
    return ib_mtu - IPOIB_ENCAP_LEN


def _align(n: int) -> int:
    return (n + 3) & ~3


def _attr(kind: int, payload: bytes) -> bytes:
    raw = _NLATTR.pack(_NLATTR.size + len(payload), kind) + payload
    return raw + b"\0" * (_align(len(raw)) - len(raw))


def child_request(seq: int, name: str, parent_index: int, pkey: int) -> bytes:
    """RTM_NEWLINK creating IPoIB P_Key child `name` of the netdev with ifindex `parent_index`."""
    problem = pkey_problem(pkey)
    if problem:
        raise ValueError(problem)
    encoded = name.encode()
    if not encoded or len(encoded) > 15:
        raise ValueError(f"{name!r} is not a valid interface name")
    info = _attr(IFLA_INFO_KIND, b"ipoib\0") + _attr(IFLA_INFO_DATA | NLA_F_NESTED,
                                                       _attr(IFLA_IPOIB_PKEY, struct.pack("=H", pkey)))
    body = (_IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
            + _attr(IFLA_IFNAME, encoded + b"\0")
            + _attr(IFLA_LINK, struct.pack("=I", parent_index))
            + _attr(IFLA_LINKINFO | NLA_F_NESTED, info))
    flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(body), RTM_NEWLINK, flags, seq, 0) + body


def hint(code: int) -> str:
    """What a failed child creation most likely means, for the error message."""
    if code == errno.EOPNOTSUPP:
        return "the kernel knows no ipoib link type: is ib_ipoib loaded? (modprobe ib_ipoib)"
    if code == errno.ENODEV:
        return "the parent is not an IPoIB netdev (is ib_ipoib loaded and the port InfiniBand?)"
    if code == errno.ENOTUNIQ:  # the sysfs create_child rule; a kernel may apply it to rtnetlink too
        return "this kernel allows one child per P_Key and parent (see `ip -d link show type ipoib`)"
    if code == errno.EINVAL:
        return "the kernel refused the P_Key (0x0000 and 0x8000 are invalid) or the parent"
    return "is ib_ipoib loaded and the parent an IPoIB netdev?"
