"""IP over InfiniBand: the netdev MTU an IB MTU allows, and P_Key child interfaces over rtnetlink.

A P_Key child (`ip link add link ib0 name ib0.8001 type ipoib pkey 0x8001`) is an IPoIB netdev of
its own partition on the same port; the parent keeps the default partition. It is created with one
RTM_NEWLINK message, encoded here by hand so that tests can compare it byte for byte with the uapi
(include/uapi/linux/netlink.h, rtnetlink.h, if_link.h). The kernel sets the full-membership bit of
a child's P_Key itself (its broadcast group always uses the full P_Key), so 0x0001 and 0x8001 make
the same child. Without ib_ipoib the kernel knows no "ipoib" link kind and answers EOPNOTSUPP.

Pure: building and parsing bytes only; sriovdra.host.netlink sends them.
"""

from __future__ import annotations

import errno
import socket
import struct

# drivers/infiniband/ulp/ipoib/ipoib.h: IPOIB_ENCAP_LEN, IPOIB_UD_MTU(ib_mtu) = ib_mtu - IPOIB_ENCAP_LEN
IPOIB_ENCAP_LEN = 4

# include/uapi/linux/netlink.h
NLMSG_ERROR = 2
NLM_F_REQUEST, NLM_F_ACK, NLM_F_EXCL, NLM_F_CREATE = 0x1, 0x4, 0x200, 0x400
NLM_F_CAPPED, NLM_F_ACK_TLVS = 0x100, 0x200  # flags of an NLMSG_ERROR answer
NLA_F_NESTED = 0x8000
NLMSGERR_ATTR_MSG = 1
# include/uapi/linux/rtnetlink.h, if_link.h
RTM_NEWLINK = 16
IFLA_IFNAME, IFLA_LINK, IFLA_LINKINFO = 3, 5, 18
IFLA_INFO_KIND, IFLA_INFO_DATA = 1, 2
IFLA_IPOIB_PKEY, IFLA_IPOIB_MODE, IFLA_IPOIB_UMCAST = 1, 2, 3

_NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_IFINFOMSG = struct.Struct("=BxHiII")  # family, pad, type, index, flags, change
_NLATTR = struct.Struct("=HH")  # len, type


class IpoibMessageError(ValueError):
    """A kernel answer that is not a well-formed netlink acknowledgement."""


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
    if not 0 < pkey <= 0xFFFF or pkey & 0x7FFF == 0:
        raise ValueError(f"P_Key {pkey:#x} is not a valid partition key")
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


def parse_ack(data: bytes, seq: int) -> tuple[int, str] | None:
    """(errno, extended-ack text or "") of the acknowledgement of request `seq` in `data` (errno 0 =
    success), or None when `data` holds no answer to it."""
    offset = 0
    while offset + _NLMSGHDR.size <= len(data):
        length, kind, flags, got_seq, _pid = _NLMSGHDR.unpack_from(data, offset)
        if length < _NLMSGHDR.size or offset + length > len(data):
            raise IpoibMessageError(f"truncated netlink message at byte {offset}")
        if kind == NLMSG_ERROR and got_seq == seq:
            return _error(data[offset + _NLMSGHDR.size:offset + length], flags)
        offset += _align(length)
    return None


def _error(payload: bytes, flags: int) -> tuple[int, str]:
    if len(payload) < 4 + _NLMSGHDR.size:
        raise IpoibMessageError("NLMSG_ERROR too short")
    code = -struct.unpack_from("=i", payload)[0]
    echoed = _NLMSGHDR.size if flags & NLM_F_CAPPED else _NLMSGHDR.unpack_from(payload, 4)[0]
    text = ""
    offset = 4 + _align(echoed)
    while flags & NLM_F_ACK_TLVS and offset + _NLATTR.size <= len(payload):
        length, kind = _NLATTR.unpack_from(payload, offset)
        if length < _NLATTR.size:
            break
        if kind & ~NLA_F_NESTED == NLMSGERR_ATTR_MSG:
            text = payload[offset + _NLATTR.size:offset + length].split(b"\0", 1)[0].decode(errors="replace")
        offset += _align(length)
    return code, text


def hint(code: int) -> str:
    """What a failed child creation most likely means, for the error message."""
    if code == errno.EOPNOTSUPP:
        return "the kernel knows no ipoib link type: is ib_ipoib loaded? (modprobe ib_ipoib)"
    if code == errno.ENODEV:
        return "the parent is not an IPoIB netdev (is ib_ipoib loaded and the port InfiniBand?)"
    if code == errno.ENOTUNIQ:  # ipoib allows one child per P_Key and parent
        return "the parent already has a child for this P_Key (made by hand? see `ip -d link show type ipoib`)"
    return "is ib_ipoib loaded and the parent an IPoIB netdev?"
