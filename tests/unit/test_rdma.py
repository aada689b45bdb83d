"""RDMA netlink: the exact request bytes, parsing of hand-built replies, and the live kernel.

Byte strings are written out by hand from the layouts in include/uapi/linux/netlink.h and
include/uapi/rdma/rdma_netlink.h (little-endian hosts, as netlink uses host byte order):
nlmsghdr = len u32, type u16, flags u16, seq u32, pid u32; nlattr = len u16, type u16, value,
padded to 4 bytes. Message types: RDMA_NL_NLDEV (5) << 10 | op: GET 0x1401, SET 0x1402,
SYS_GET 0x1406.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import time

import pytest

from sriovdra.host import rdma
from sriovdra.host.rdma import RdmaError, RdmaNetlink

pytestmark = pytest.mark.skipif(sys.byteorder != "little", reason="the hand-written bytes are little-endian")


def h(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


PID = "d2040000"  # the kernel's replies carry our port id, 1234
DEV0 = h(f"24000000 0114 0200 02000000 {PID}  0800 0100 01000000  0b00 0200 6d6c78355f3000 00")  # 1, mlx5_0
DEV3 = h(f"24000000 0114 0200 02000000 {PID}  0800 0100 03000000  0b00 0200 6d6c78355f3300 00")  # 3, mlx5_3
DUMP_DONE = h(f"14000000 0300 0200 02000000 {PID}  00000000")


def sys_reply(mode: int, seq: int = 1) -> bytes:
    return h(f"18000000 0614 0000 {seq:02x}000000 {PID}  0500 4200 {mode:02x} 000000")


def ack(request: bytes, error: str = "00000000") -> bytes:
    """NLMSG_ERROR with NLM_F_CAPPED: status, then the request's header echoed."""
    return h(f"24000000 0200 0001 {request[8:12].hex()} {PID} {error}") + request[:16]


# --- requests ---------------------------------------------------------------------------------


def test_message_types():
    assert [rdma.nldev_type(op) for op in (1, 2, 6)] == [0x1401, 0x1402, 0x1406]


def test_sys_get_request_bytes():
    assert rdma.sys_get_request(seq=1) == h("10000000 0614 0500 01000000 00000000")


def test_device_dump_request_bytes():
    # NLM_F_REQUEST | NLM_F_ACK | NLM_F_DUMP = 0x305
    assert rdma.dev_dump_request(seq=2) == h("10000000 0114 0503 02000000 00000000")


def test_set_netns_request_bytes():
    assert rdma.set_netns_request(seq=3, index=7, netns_fd=11, pid=0x4d2) == h(
        "20000000 0214 0500 03000000 d2040000"
        "0800 0100 07000000"  # RDMA_NLDEV_ATTR_DEV_INDEX = 7
        "0800 4400 0b000000")  # RDMA_NLDEV_NET_NS_FD (68) = 11


def test_attributes_are_padded_to_four_bytes():
    assert rdma.encode_attr(2, b"mlx5_0\0") == h("0b00 0200 6d6c78355f3000 00")
    assert rdma.encode_attr(66, b"\x01") == h("0500 4200 01 000000")
    assert rdma.encode_attr(1, b"\0" * 4) == h("0800 0100 00000000")


# --- replies ----------------------------------------------------------------------------------


def test_a_device_dump_with_two_devices():
    stale = h(f"18000000 0614 0000 09000000 {PID}  0500 4200 01 000000")  # an old reply, seq 9
    replies, over = rdma.collect(rdma.parse_messages(stale + DEV0 + DEV3 + DUMP_DONE), seq=2)
    assert over
    assert [rdma.device_of(r) for r in replies] == [("mlx5_0", 1), ("mlx5_3", 3)]
    assert all(r.flags & rdma.NLM_F_MULTI for r in replies)


def test_a_dump_split_across_reads_goes_on_until_done():
    first, over = rdma.collect(rdma.parse_messages(DEV0), seq=2)
    assert (len(first), over) == (1, False)
    rest, over = rdma.collect(rdma.parse_messages(DEV3 + DUMP_DONE), seq=2)
    assert (len(rest), over) == (1, True)


def test_an_empty_dump_is_just_done():
    assert rdma.collect(rdma.parse_messages(DUMP_DONE), seq=2) == ([], True)


@pytest.mark.parametrize("mode,name", [(0, "exclusive"), (1, "shared"), (7, "unknown (7)")])
def test_sys_get_reply(mode, name):
    request = rdma.sys_get_request(seq=1)
    replies, over = rdma.collect(rdma.parse_messages(sys_reply(mode) + ack(request)), seq=1)
    assert over and rdma.netns_mode_of(replies[0]) == name


def test_an_error_reply_raises_with_the_errno():
    request = rdma.set_netns_request(seq=3, index=7, netns_fd=11)
    with pytest.raises(RdmaError) as e:
        rdma.collect(rdma.parse_messages(ack(request, error="a1ffffff")), seq=3)  # -95
    assert e.value.errno == errno.EOPNOTSUPP
    assert str(e.value) == "kernel replied Operation not supported (errno 95)"


def test_an_error_reply_with_the_kernels_extended_ack_message():
    request = rdma.set_netns_request(seq=3, index=7, netns_fd=11)
    # NLM_F_CAPPED | NLM_F_ACK_TLVS, then NLMSGERR_ATTR_MSG "shared mode"
    reply = (h(f"34000000 0200 0003 03000000 {PID} a1ffffff") + request[:16]
             + h("1000 0100 736861726564206d6f646500"))
    with pytest.raises(RdmaError, match=r"^kernel replied Operation not supported \(errno 95\): shared mode$"):
        rdma.collect(rdma.parse_messages(reply), seq=3)


def test_a_failed_dump_reports_the_error_in_done():
    done = h(f"14000000 0300 0200 02000000 {PID}  eaffffff")  # -22
    with pytest.raises(RdmaError) as e:
        rdma.collect(rdma.parse_messages(DEV0 + done), seq=2)
    assert e.value.errno == errno.EINVAL


@pytest.mark.parametrize("data", [DEV0[:-4], h("08000000 0300 0000 01000000 00000000")])
def test_truncated_messages_are_errors(data):
    with pytest.raises(RdmaError, match="malformed netlink reply"):
        rdma.parse_messages(data)


def test_a_malformed_attribute_is_an_error():
    bad = h(f"18000000 0614 0000 01000000 {PID}  0900 4200 01 000000")  # says 9 bytes, has 8
    with pytest.raises(RdmaError, match="malformed netlink attribute"):
        rdma.netns_mode_of(rdma.parse_messages(bad)[0])


def test_a_device_reply_without_a_name_is_an_error():
    bad = h(f"18000000 0114 0200 02000000 {PID}  0800 0100 01000000")
    with pytest.raises(RdmaError, match="lacks its index or name"):
        rdma.device_of(rdma.parse_messages(bad)[0])


# --- RdmaNetlink over a scripted socket ------------------------------------------------------


class ScriptedSocket:
    """Answers each send() with the next scripted list of reads."""

    def __init__(self, *answers: list[bytes] | Exception) -> None:
        self.answers, self.sent, self.reads, self.closed = list(answers), [], [], False

    def send(self, data: bytes) -> int:
        self.sent.append(data)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            self.reads = [answer]
        else:
            self.reads = list(answer)
        return len(data)

    def recv(self, size: int) -> bytes:
        item = self.reads.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    def close(self) -> None:
        self.closed = True


def dump_answer(seq: int) -> list[bytes]:
    """DEV0, DEV3 and DONE with their sequence number set to seq, in two reads."""
    def resequence(msg: bytes) -> bytes:
        return msg[:8] + seq.to_bytes(4, "little") + msg[12:]
    return [resequence(DEV0), resequence(DEV3) + resequence(DUMP_DONE)]


def test_devices_and_netns_mode_through_the_socket():
    sock = ScriptedSocket(dump_answer(1), [sys_reply(0, seq=2) + ack(rdma.sys_get_request(seq=2))])
    with RdmaNetlink(sock) as nl:
        assert nl.devices() == {"mlx5_0": 1, "mlx5_3": 3}
        assert nl.netns_mode() == "exclusive"
    assert sock.sent == [rdma.dev_dump_request(seq=1), rdma.sys_get_request(seq=2)]
    assert sock.closed


def test_move_looks_up_the_index_then_sends_set():
    sock = ScriptedSocket(dump_answer(1), [ack(rdma.set_netns_request(seq=2, index=3, netns_fd=11))])
    RdmaNetlink(sock).move("mlx5_3", 11)
    assert sock.sent[1] == rdma.set_netns_request(seq=2, index=3, netns_fd=11)


def test_move_of_a_device_not_in_the_namespace():
    nl = RdmaNetlink(ScriptedSocket(dump_answer(1)), netns="/var/run/netns/pod-a")
    with pytest.raises(RdmaError) as e:
        nl.move("mlx5_9", 11)
    assert str(e.value) == "RDMA device mlx5_9: move to netns fd 11: no such RDMA device in /var/run/netns/pod-a"
    assert e.value.errno == errno.ENODEV


def test_move_in_shared_mode_says_what_to_change():
    refused = ack(rdma.set_netns_request(seq=2, index=3, netns_fd=11), error="a1ffffff")
    with pytest.raises(RdmaError) as e:
        RdmaNetlink(ScriptedSocket(dump_answer(1), [refused])).move("mlx5_3", 11)
    assert str(e.value) == ("RDMA device mlx5_3: move to netns fd 11: kernel replied Operation not supported "
                            "(errno 95) (moving RDMA devices needs the exclusive netns mode: "
                            "rdma system set netns exclusive)")


def test_no_reply_is_a_timeout_error():
    with pytest.raises(RdmaError, match=r"^read the RDMA netns mode: no reply within 5s$"):
        RdmaNetlink(ScriptedSocket(TimeoutError())).netns_mode()


# --- the live kernel (this VM has no RDMA) ----------------------------------------------------


def test_live_kernel():
    """The CI kernel has no RDMA: opening the socket fails with a message saying so. A kernel with
    RDMA netlink but no devices answers with an empty list and a mode."""
    try:
        with RdmaNetlink() as nl:
            devices, mode = nl.devices(), nl.netns_mode()
    except RdmaError as e:
        assert str(e).startswith("cannot open a NETLINK_RDMA socket: "), e
        if e.errno == errno.EPROTONOSUPPORT:
            assert str(e).endswith("(the kernel has no RDMA netlink: is ib_core loaded?)")
    else:
        assert mode in ("shared", "exclusive")
        assert all(isinstance(n, str) and isinstance(i, int) for n, i in devices.items())


def test_in_netns_of_a_missing_namespace():
    with pytest.raises(RdmaError) as e:
        RdmaNetlink.in_netns("/var/run/netns/does-not-exist")
    assert str(e.value) == ("network namespace /var/run/netns/does-not-exist: cannot open it: "
                            "No such file or directory")


def test_in_netns_names_the_namespace_when_the_socket_fails():
    own = "/proc/self/ns/net"
    try:
        with RdmaNetlink.in_netns(own) as nl:
            assert isinstance(nl.devices(), dict)  # a kernel with RDMA netlink
    except RdmaError as e:
        assert str(e).startswith(f"network namespace {own}: "), e


def _netns_of_this_thread() -> str:
    return os.readlink("/proc/thread-self/ns/net")


def test_call_in_netns_runs_in_the_target_and_leaves_the_caller_alone():
    """A throwaway netns (unshare -n) stands in for a pod's."""
    try:
        holder = subprocess.Popen(["unshare", "--net", "sleep", "30"])
    except FileNotFoundError:
        pytest.fail("unshare (util-linux) is needed for this test")
    try:
        path = f"/proc/{holder.pid}/ns/net"
        deadline = time.monotonic() + 10
        while os.readlink(path) == os.readlink("/proc/self/ns/net") and time.monotonic() < deadline:
            time.sleep(0.01)  # until unshare has entered the new netns
        mine = _netns_of_this_thread()
        seen = rdma.call_in_netns(path, _netns_of_this_thread)
        assert seen == os.readlink(path) != mine
        assert _netns_of_this_thread() == mine
    finally:
        holder.kill()
        holder.wait()
