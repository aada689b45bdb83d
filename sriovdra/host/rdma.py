"""RDMA netlink (NETLINK_RDMA, the "nldev" client): the netns mode, the device list, moving a device.

What `rdma system show netns`, `rdma dev` and `rdma dev set <dev> netns <ns>` do, encoded by hand
because pyroute2 has no RDMA netlink. Messages are a netlink header followed directly by
attributes (no family header). The encoders and decoders are pure; RdmaNetlink does the I/O.

A socket stays bound to the network namespace it was created in, and in exclusive mode an RDMA
device is only visible in its own netns: bringing a device home from a pod therefore needs a
socket opened inside the pod's netns (RdmaNetlink.in_netns), never a setns() of the caller.
"""

from __future__ import annotations

import errno
import itertools
import os
import socket
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

from sriovdra.host import netns

# include/uapi/linux/netlink.h
NETLINK_RDMA = 20
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
NLM_F_MULTI = 0x2
NLM_F_ACK = 0x4
NLM_F_DUMP = 0x300  # NLM_F_ROOT | NLM_F_MATCH
NLM_F_CAPPED = 0x100  # on NLMSG_ERROR: the echoed request is only its header
NLM_F_ACK_TLVS = 0x200  # on NLMSG_ERROR: extended-ack attributes follow
NLMSGERR_ATTR_MSG = 1
NLA_TYPE_MASK = 0x3FFF  # without NLA_F_NESTED / NLA_F_NET_BYTEORDER

# include/uapi/rdma/rdma_netlink.h
RDMA_NL_NLDEV = 5
RDMA_NLDEV_CMD_GET = 1
RDMA_NLDEV_CMD_SET = 2
RDMA_NLDEV_CMD_SYS_GET = 6
RDMA_NLDEV_ATTR_DEV_INDEX = 1  # u32
RDMA_NLDEV_ATTR_DEV_NAME = 2  # NUL-terminated string
RDMA_NLDEV_SYS_ATTR_NETNS_MODE = 66  # u8: 0 exclusive, 1 shared (iproute2 rdma/sys.c names them so)
RDMA_NLDEV_NET_NS_FD = 68  # u32

NETNS_MODES = {0: "exclusive", 1: "shared"}
REPLY_TIMEOUT = 5.0
RECV_BUFFER = 1 << 16

_HEADER = struct.Struct("=IHHII")  # nlmsghdr: len, type, flags, seq, pid (host byte order)
_ATTR = struct.Struct("=HH")  # nlattr: len, type

T = TypeVar("T")


class RdmaError(Exception):
    """An RDMA netlink step failed; the message names the device (or the netns) and the step."""

    def __init__(self, message: str, errno_: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno_


# --- encoding ---------------------------------------------------------------------------


def nldev_type(op: int) -> int:
    """RDMA_NL_GET_TYPE(RDMA_NL_NLDEV, op): the client in the upper bits, the op in the low 10."""
    return RDMA_NL_NLDEV << 10 | op


def _align(n: int) -> int:
    return (n + 3) & ~3


def encode_attr(kind: int, value: bytes) -> bytes:
    raw = _ATTR.pack(_ATTR.size + len(value), kind) + value
    return raw + b"\0" * (_align(len(raw)) - len(raw))


def encode_u32(kind: int, value: int) -> bytes:
    return encode_attr(kind, struct.pack("=I", value))


def encode_message(op: int, flags: int, seq: int, attrs: bytes = b"", pid: int = 0) -> bytes:
    return _HEADER.pack(_HEADER.size + len(attrs), nldev_type(op), flags, seq, pid) + attrs


def sys_get_request(seq: int, pid: int = 0) -> bytes:
    """`rdma system show netns`."""
    return encode_message(RDMA_NLDEV_CMD_SYS_GET, NLM_F_REQUEST | NLM_F_ACK, seq, pid=pid)


def dev_dump_request(seq: int, pid: int = 0) -> bytes:
    """`rdma dev`: one reply per device of this netns, then NLMSG_DONE."""
    return encode_message(RDMA_NLDEV_CMD_GET, NLM_F_REQUEST | NLM_F_ACK | NLM_F_DUMP, seq, pid=pid)


def set_netns_request(seq: int, index: int, netns_fd: int, pid: int = 0) -> bytes:
    """`rdma dev set <dev> netns <ns>`: the device by index, the target netns by an open fd."""
    attrs = encode_u32(RDMA_NLDEV_ATTR_DEV_INDEX, index) + encode_u32(RDMA_NLDEV_NET_NS_FD, netns_fd)
    return encode_message(RDMA_NLDEV_CMD_SET, NLM_F_REQUEST | NLM_F_ACK, seq, attrs, pid=pid)


# --- decoding ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Message:
    type: int
    flags: int
    seq: int
    pid: int
    payload: bytes

    def attrs(self) -> dict[int, bytes]:
        return parse_attrs(self.payload)


def parse_messages(data: bytes) -> list[Message]:
    """Split one recv() worth of netlink messages."""
    out, off = [], 0
    while off + _HEADER.size <= len(data):
        length, kind, flags, seq, pid = _HEADER.unpack_from(data, off)
        if length < _HEADER.size or off + length > len(data):
            raise RdmaError(f"malformed netlink reply: message of {length} bytes at offset {off} of {len(data)}")
        out.append(Message(kind, flags, seq, pid, data[off + _HEADER.size:off + length]))
        off += _align(length)
    return out


def parse_attrs(payload: bytes) -> dict[int, bytes]:
    attrs, off = {}, 0
    while off + _ATTR.size <= len(payload):
        length, kind = _ATTR.unpack_from(payload, off)
        if length < _ATTR.size or off + length > len(payload):
            raise RdmaError(f"malformed netlink attribute: {length} bytes at offset {off} of {len(payload)}")
        attrs[kind & NLA_TYPE_MASK] = payload[off + _ATTR.size:off + length]
        off += _align(length)
    return attrs


def _error_detail(msg: Message) -> str | None:
    """The kernel's extended-ack text (NLMSGERR_ATTR_MSG), when it sent one."""
    if not msg.flags & NLM_F_ACK_TLVS or len(msg.payload) < 4 + _HEADER.size:
        return None
    echoed = _HEADER.size if msg.flags & NLM_F_CAPPED else _HEADER.unpack_from(msg.payload, 4)[0]
    text = parse_attrs(msg.payload[_align(4 + echoed):]).get(NLMSGERR_ATTR_MSG)
    return text.rstrip(b"\0").decode(errors="replace") if text else None


def _status(msg: Message) -> int:
    """The errno (positive) an NLMSG_ERROR/NLMSG_DONE carries; 0 is an ack."""
    if len(msg.payload) < 4:
        return 0
    return -struct.unpack_from("=i", msg.payload)[0]


def collect(messages: Iterable[Message], seq: int) -> tuple[list[Message], bool]:
    """The replies to request `seq` among messages, and whether the exchange is over.

    Over means an ack (NLMSG_ERROR 0) or the NLMSG_DONE closing a dump; a kernel error raises.
    Messages of other sequence numbers are stale replies and are skipped.
    """
    replies = []
    for msg in messages:
        if msg.seq != seq:
            continue
        if msg.type in (NLMSG_ERROR, NLMSG_DONE):
            code = _status(msg)
            if code:
                detail = _error_detail(msg) if msg.type == NLMSG_ERROR else None
                raise RdmaError(f"kernel replied {os.strerror(code)} (errno {code})"
                                + (f": {detail}" if detail else ""), code)
            return replies, True
        replies.append(msg)
    return replies, False


def netns_mode_of(reply: Message) -> str:
    value = reply.attrs().get(RDMA_NLDEV_SYS_ATTR_NETNS_MODE)
    if not value:
        raise RdmaError("the reply has no netns mode attribute")
    return NETNS_MODES.get(value[0], f"unknown ({value[0]})")


def device_of(reply: Message) -> tuple[str, int]:
    attrs = reply.attrs()
    index, name = attrs.get(RDMA_NLDEV_ATTR_DEV_INDEX), attrs.get(RDMA_NLDEV_ATTR_DEV_NAME)
    if index is None or len(index) < 4 or not name:
        raise RdmaError("a device reply lacks its index or name")
    return name.rstrip(b"\0").decode(errors="replace"), struct.unpack_from("=I", index)[0]


# --- the socket ---------------------------------------------------------------------------


def _open_socket() -> socket.socket:
    try:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_RDMA)
    except OSError as e:
        hint = " (the kernel has no RDMA netlink: is ib_core loaded?)" if e.errno == errno.EPROTONOSUPPORT else ""
        raise RdmaError(f"cannot open a NETLINK_RDMA socket: {e.strerror}{hint}", e.errno) from None
    try:
        sock.bind((0, 0))
        sock.settimeout(REPLY_TIMEOUT)
    except OSError as e:
        sock.close()
        raise RdmaError(f"cannot bind the NETLINK_RDMA socket: {e.strerror}", e.errno) from None
    return sock


def call_in_netns(path: str, fn: Callable[[], T]) -> T:
    """fn() run in a short-lived thread inside the netns at path (sriovdra.host.netns.call_in)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise RdmaError(f"network namespace {path}: cannot open it: {e.strerror}", e.errno) from None
    try:
        return netns.call_in(fd, fn)
    except netns.EnterError as e:
        raise RdmaError(f"network namespace {path}: cannot enter it: {e.strerror}", e.errno) from None
    finally:
        os.close(fd)


class RdmaNetlink:
    """A NETLINK_RDMA socket in one network namespace: the caller's, or the one given to in_netns."""

    def __init__(self, sock: socket.socket | None = None, netns: str | None = None) -> None:
        self._sock = sock if sock is not None else _open_socket()
        self._seq = itertools.count(1)
        self._where = f" in {netns}" if netns else ""

    @classmethod
    def in_netns(cls, path: str) -> RdmaNetlink:
        """A socket created inside the netns at path (e.g. a pod's /var/run/netns/<id>)."""
        def open_there() -> socket.socket:
            try:
                return _open_socket()
            except RdmaError as e:
                raise RdmaError(f"network namespace {path}: {e}", e.errno) from None

        return cls(call_in_netns(path, open_there), netns=path)

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> RdmaNetlink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def netns_mode(self) -> str:
        """"shared" or "exclusive": whether RDMA devices follow network namespaces."""
        replies = self._exchange("read the RDMA netns mode", sys_get_request)
        if not replies:
            raise RdmaError(f"read the RDMA netns mode{self._where}: the kernel sent no reply")
        try:
            return netns_mode_of(replies[0])
        except RdmaError as e:
            raise RdmaError(f"read the RDMA netns mode{self._where}: {e}") from None

    def devices(self) -> dict[str, int]:
        """The RDMA devices visible in this socket's netns: name -> index."""
        replies = self._exchange("list RDMA devices", dev_dump_request)
        try:
            return dict(device_of(r) for r in replies)
        except RdmaError as e:
            raise RdmaError(f"list RDMA devices{self._where}: {e}") from None

    def move(self, name: str, netns_fd: int) -> None:
        """Move RDMA device `name` (seen from this socket's netns) to the netns netns_fd refers to."""
        step = f"RDMA device {name}: move to netns fd {netns_fd}"
        index = self.devices().get(name)
        if index is None:
            raise RdmaError(f"{step}: no such RDMA device{self._where or ' in this network namespace'}",
                            errno.ENODEV)
        try:
            self._exchange(step, lambda seq: set_netns_request(seq, index, netns_fd))
        except RdmaError as e:
            if e.errno == errno.EOPNOTSUPP:
                raise RdmaError(f"{e} (moving RDMA devices needs the exclusive netns mode: "
                                "rdma system set netns exclusive)", e.errno) from None
            raise

    def _exchange(self, step: str, request: Callable[[int], bytes]) -> list[Message]:
        """Send one request and read its replies up to the ack or NLMSG_DONE."""
        seq = next(self._seq)
        what = f"{step}{self._where}"
        replies: list[Message] = []
        try:
            self._sock.send(request(seq))
            while True:
                got, over = collect(parse_messages(self._sock.recv(RECV_BUFFER)), seq)
                replies += got
                if over:
                    return replies
        except TimeoutError:
            raise RdmaError(f"{what}: no reply within {REPLY_TIMEOUT:g}s", errno.ETIMEDOUT) from None
        except OSError as e:
            raise RdmaError(f"{what}: {e.strerror}", e.errno) from None
        except RdmaError as e:
            raise RdmaError(f"{what}: {e}", e.errno) from None
