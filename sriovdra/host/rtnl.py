"""One rtnetlink request with an acknowledgement, over a raw NETLINK_ROUTE socket (no pyroute2).

rtnl_transact sends a request that carries NLM_F_ACK and waits for the kernel's NLMSG_ERROR for its
sequence number: errno 0 returns, anything else raises RtnlError with the errno and the kernel's
extended-ack text (NLMSGERR_ATTR_MSG), when it sent one. NETLINK_CAP_ACK keeps the echoed request
out of the error; NETLINK_EXT_ACK asks for the text. Callers encode the request themselves and name
the object and step in their own error.
"""

from __future__ import annotations

import errno
import os
import socket
import struct

from sriovdra.host.rdma import NLMSG_ERROR, NLMSGERR_ATTR_MSG, RdmaError, parse_attrs, parse_messages

NETLINK_ROUTE = 0
SOL_NETLINK = 270
NETLINK_CAP_ACK = 10
NETLINK_EXT_ACK = 11
NLM_F_CAPPED = 0x100
NLM_F_ACK_TLVS = 0x200
REPLY_TIMEOUT = 5.0

_HEADER = struct.Struct("=IHHII")  # nlmsghdr: len, type, flags, seq, pid


class RtnlError(Exception):
    """The kernel refused the request (errno, text) or no answer came; str() is the kernel's text or strerror."""

    def __init__(self, code: int, text: str = "") -> None:
        super().__init__(text or os.strerror(code))
        self.errno = code
        self.text = text


def rtnl_socket() -> socket.socket:
    """A NETLINK_ROUTE socket in the caller's network namespace, with capped and extended acks."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE)
    try:
        sock.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)
        try:
            sock.setsockopt(SOL_NETLINK, NETLINK_EXT_ACK, 1)
        except OSError:  # before 4.12: plain errnos
            pass
        sock.bind((0, 0))
    except BaseException:
        sock.close()
        raise
    return sock


def rtnl_transact(msg: bytes, *, sock: socket.socket | None = None, timeout: float = REPLY_TIMEOUT) -> None:
    """Send one request (its header must ask for NLM_F_ACK) and wait for its acknowledgement.

    sock: a NETLINK_ROUTE socket to use (e.g. one opened in another network namespace); by default a
    fresh one in the caller's namespace, closed afterwards. Raises RtnlError(errno, extended-ack text);
    OSError from the socket itself is turned into RtnlError with that errno."""
    if len(msg) < _HEADER.size:
        raise ValueError(f"not a netlink message: {len(msg)} bytes")
    seq = _HEADER.unpack_from(msg)[3]
    own = sock is None
    try:
        if sock is None:
            sock = rtnl_socket()
        sock.settimeout(timeout)
        sock.sendto(msg, (0, 0))
        while True:
            answer = _ack(sock.recv(1 << 16), seq)
            if answer is not None:
                code, text = answer
                if code:
                    raise RtnlError(code, text)
                return
    except TimeoutError:
        raise RtnlError(errno.ETIMEDOUT, f"no answer from the kernel within {timeout:g}s") from None
    except OSError as e:
        raise RtnlError(e.errno or errno.EIO, e.strerror or str(e)) from None
    finally:
        if own and sock is not None:
            sock.close()


def _ack(data: bytes, seq: int) -> tuple[int, str] | None:
    """(errno, extended-ack text) of the NLMSG_ERROR answering `seq` in one recv(), None without one."""
    try:
        messages = parse_messages(data)
    except RdmaError as e:
        raise RtnlError(errno.EPROTO, f"bad answer from the kernel: {e}") from None
    for m in messages:
        if m.type != NLMSG_ERROR or m.seq != seq:
            continue  # stale answers or notifications
        if len(m.payload) < 4:
            raise RtnlError(errno.EPROTO, "bad answer from the kernel: NLMSG_ERROR too short")
        code = -struct.unpack_from("=i", m.payload)[0]
        text = ""
        if m.flags & NLM_F_ACK_TLVS and len(m.payload) >= 4 + _HEADER.size:
            echoed = _HEADER.size if m.flags & NLM_F_CAPPED else _HEADER.unpack_from(m.payload, 4)[0]
            try:
                raw = parse_attrs(m.payload[4 + (echoed + 3 & ~3):]).get(NLMSGERR_ATTR_MSG)
            except RdmaError:
                raw = None
            text = raw.split(b"\0", 1)[0].decode(errors="replace") if raw else ""
        return code, text
    return None
