"""InfiniBand VF GUIDs: the scheme (sriovdra.guid), the RTM_SETLINK message byte for byte, the live kernel's
answer, and assigning them on fake hosts (set, rebind, idempotence, claims)."""

from __future__ import annotations

import errno
import os
import struct
import subprocess
import sys

import pytest

from sriovdra import fakehost
from sriovdra.guid import (
    DERIVED,
    RANGE,
    GuidError,
    GuidPolicy,
    GuidRequest,
    assign,
    byte_form,
    derived_guid,
    format_guid,
    guid_of_gid,
    parse_guid,
    parse_policy,
)
from sriovdra.host import netns, pci, vfguid
from sriovdra.host.discovery import discover
from tests.conftest import ib_pf

IB_PF, VF0, VF1 = "0000:5e:00.0", "0000:5e:00.1", "0000:5e:00.2"
PF_GUID = 0x0C42_A103_0065_8F2A


# --- the scheme ---------------------------------------------------------------------------------


def test_derived_guid_layout():
    # 0x02 (locally administered) | VF index + 1, big-endian | the PF GUID's low 40 bits
    assert derived_guid(PF_GUID, 0) == 0x02_0001_0300658F2A
    assert derived_guid(PF_GUID, 0x1233) == 0x02_1234_0300658F2A
    assert format_guid(derived_guid(PF_GUID, 7)) == "0200:0803:0065:8f2a"
    with pytest.raises(GuidError):
        derived_guid(PF_GUID, 0xFFFF)


def test_derived_guids_are_unique_locally_administered_and_never_zero():
    pfs = [0x0C42_A103_0065_8F2A, 0x0C42_A103_0065_9B10, 0x9803_9B03_0065_8F2B]
    guids = [derived_guid(pf, j) for pf in pfs for j in range(512)]
    assert len(set(guids)) == len(guids)
    assert all(g >> 56 == 0x02 and g != 0 for g in guids)
    assert not set(guids) & set(pfs)


def test_guid_forms():
    assert parse_guid("0c42:a103:0065:8f2a", "x") == PF_GUID
    assert parse_guid("0c:42:a1:03:00:65:8f:2a", "x") == PF_GUID
    assert byte_form(PF_GUID) == "0c:42:a1:03:00:65:8f:2a" and format_guid(PF_GUID) == "0c42:a103:0065:8f2a"
    assert guid_of_gid("fe80:0000:0000:0000:0c42:a103:0065:8f2a") == PF_GUID
    assert guid_of_gid("fe80::1") is None and guid_of_gid(None) is None
    with pytest.raises(GuidError, match=r"^guids.start: expected a GUID"):
        parse_guid("0c42a10300658f2a", "guids.start")


@pytest.mark.parametrize("value, message", [
    ("random", r"^g: expected derived, none or"),
    ({"begin": "02:00:00:00:00:00:00:01"}, r"^g: unknown field\(s\) begin"),
    ({}, r"^g.start: required"),
    ({"start": "00:00:00:00:00:00:00:00"}, r"^g.start: the zero GUID"),
    ({"start": "02:00:00:00:00:00:01:00", "end": "02:00:00:00:00:00:00:ff"}, r"^g.end: .* is below start"),
])
def test_bad_policies_name_the_field(value, message):
    with pytest.raises(GuidError, match=message):
        parse_policy(value, "g")


def _range(start: int, end: int | None = None) -> GuidPolicy:
    return GuidPolicy(RANGE, start, end)


def test_range_slots_follow_sorted_pfs_and_their_totals_and_stay_when_counts_change():
    r = _range(0x0200_0000_0000_1000)
    requests = [GuidRequest("0000:86:00.0", r, None, 8, 2), GuidRequest("0000:3b:00.0", r, None, 16, 3),
                GuidRequest("0000:af:00.0", r, None, 4, 1)]
    out = assign(requests)
    assert out.errors == {}
    assert out.guids["0000:3b:00.0"] == {0: 0x0200_0000_0000_1000, 1: 0x1001 | 0x0200 << 48, 2: 0x0200_0000_0000_1002}
    assert out.guids["0000:86:00.0"] == {0: 0x0200_0000_0000_1010, 1: 0x0200_0000_0000_1011}  # after 16
    assert out.guids["0000:af:00.0"] == {0: 0x0200_0000_0000_1018}  # after 16 + 8
    grown = assign([GuidRequest("0000:3b:00.0", r, None, 16, 16), *requests[::2]])
    assert grown.guids["0000:86:00.0"] == out.guids["0000:86:00.0"]


def test_range_end_and_overlaps_are_errors():
    out = assign([GuidRequest("0000:3b:00.0", _range(0x100, 0x107), None, 16, 8),
                  GuidRequest("0000:86:00.0", _range(0x100, 0x107), None, 16, 1)])
    assert "0000:3b:00.0" in out.guids and "is exhausted" in out.errors["0000:86:00.0"]
    overlap = assign([GuidRequest("0000:3b:00.0", _range(0x100), None, 16, 4),
                      GuidRequest("0000:86:00.0", _range(0x102), None, 16, 4)])
    assert list(overlap.guids) == ["0000:3b:00.0"]
    assert overlap.errors["0000:86:00.0"] == ("its GUID block 0000:0000:0000:0102..0000:0000:0000:0111 overlaps the "
                                              "GUIDs of 0000:3b:00.0 (overlapping GUID ranges)")
    # whole blocks count: 3b's block of 16 reaches 0x10f, 86's range starts there, though 3b has 1 VF now
    block = assign([GuidRequest("0000:3b:00.0", _range(0x100), None, 16, 1),
                    GuidRequest("0000:86:00.0", _range(0x10F), None, 16, 1)])
    assert list(block.guids) == ["0000:3b:00.0"]
    assert "overlaps the GUIDs of 0000:3b:00.0" in block.errors["0000:86:00.0"]
    # a range over derived GUIDs of another PF
    mixed = assign([GuidRequest("0000:3b:00.0", GuidPolicy(DERIVED), 0x0C42_A103_0065_8F2A, 8, 1),
                    GuidRequest("0000:86:00.0", _range(0x0200_0803_0065_8F2A), None, 4, 1)])
    assert "0000:3b:00.0" in mixed.guids and "0000:3b:00.0" in mixed.errors["0000:86:00.0"]


def test_a_pfs_block_does_not_depend_on_what_a_run_selects():
    r = _range(0x1000)
    occupants = {(0x1000, None): [("0000:3b:00.0", 16), ("0000:86:00.0", 8)]}
    alone = assign([GuidRequest("0000:86:00.0", r, None, 8, 2)], occupants)
    assert alone.guids["0000:86:00.0"] == {0: 0x1010, 1: 0x1011}  # after 3b's 16, though 3b is not in this run


def test_derived_needs_a_pf_guid_and_distinct_low_bits():
    d = GuidPolicy(DERIVED)
    out = assign([GuidRequest("a", d, None, 8, 2), GuidRequest("b", d, 0, 8, 0),
                  GuidRequest("c", d, 0x1111_0000_0000_0001, 8, 1), GuidRequest("e", d, 0x2222_0000_0000_0001, 8, 1)])
    assert out.errors["a"].startswith("no readable non-zero node GUID") and "guids: {start:" in out.errors["a"]
    assert out.guids["b"] == {}  # no VFs wanted: nothing to derive
    assert "same low 40 bits as e" in out.errors["c"] and "same low 40 bits as c" in out.errors["e"]


# --- the message ----------------------------------------------------------------------------------


@pytest.mark.skipif(sys.byteorder != "little" or struct.calcsize("@IQ") != 16,
                    reason="the literal below is the x86-64/arm64 layout")
def test_setlink_message_bytes_match_the_uapi_layout():
    msg = vfguid.setlink_vf_guid(seq=7, ifindex=5, vf=3, kind=vfguid.NODE, guid=0x0200_0100_A103_0065)
    expected = bytes.fromhex(
        "3c000000" "1300" "0500" "07000000" "00000000"  # nlmsghdr: len 60, RTM_SETLINK 19, REQUEST|ACK, seq, pid
        "00" "00" "0000" "05000000" "00000000" "00000000"  # ifinfomsg: AF_UNSPEC, pad, type, index 5, flags, change
        "1c00" "1600"  # IFLA_VFINFO_LIST (22), 28 bytes, no NLA_F_NESTED (as iproute2)
        "1800" "0100"  # IFLA_VF_INFO (1), 24 bytes
        "1400" "0a00"  # IFLA_VF_IB_NODE_GUID (10), 4 + sizeof(struct ifla_vf_guid) = 20
        "03000000" "00000000"  # __u32 vf = 3, 4 bytes of padding before the __u64
        "650003a100010002")  # __u64 guid, host order: iproute2's get_guid puts the first byte on top
    assert msg == expected
    port = vfguid.setlink_vf_guid(seq=7, ifindex=5, vf=3, kind=vfguid.PORT, guid=0x0200_0100_A103_0065)
    assert port[:42] + port[44:] == expected[:42] + expected[44:] and port[42:44] == b"\x0b\x00"  # type 11


@pytest.fixture
def private_netns(tmp_path):
    """A network namespace of our own (only lo in it): the kernel answers, nothing shared changes."""
    if os.geteuid() != 0:
        pytest.skip("needs root to create a network namespace")
    path = tmp_path / "ns"
    path.touch()
    if subprocess.run(["unshare", f"--net={path}", "true"], capture_output=True).returncode:
        pytest.skip("cannot create a network namespace (unshare --net failed)")
    fd = os.open(path, os.O_RDONLY)
    yield fd
    os.close(fd)
    subprocess.run(["umount", str(path)], check=True)


def _live(fd: int, netdev: str) -> vfguid.VfGuidError:
    def attempt() -> None:
        vfguid.set_vf_guid(netdev, 0, vfguid.NODE, 0x0200_0100_0000_0001)

    with pytest.raises(vfguid.VfGuidError) as e:
        netns.call_in(fd, attempt)
    return e.value


def test_the_live_kernel_refuses_a_netdev_that_is_not_ipoib(private_netns):
    e = _live(private_netns, "lo")
    assert e.errno == errno.EOPNOTSUPP
    assert str(e).startswith("lo VF 0: set node GUID 02:00:01:00:00:00:00:01: ")
    assert "(EOPNOTSUPP): the netdev is not an IPoIB netdev" in str(e)


def test_a_missing_pf_netdev_is_named(private_netns):
    e = _live(private_netns, "ibp59s0")
    assert e.errno == errno.ENODEV
    assert str(e).startswith("ibp59s0 VF 0: set node GUID 02:00:01:00:00:00:00:01: no netdev ibp59s0 in this")


# --- assigning on fake hosts ------------------------------------------------------------------------


@pytest.fixture
def ib(build_host):
    _, paths = build_host({"host": {"modules": ["vfio_pci"]},
                           "pfs": [ib_pf(vfs={"total": 8, "count": 3, "guids": "zero",
                                              "overrides": {2: {"driver": "vfio-pci"}}})]})
    return paths


def _guids(paths, vf: str) -> tuple[str, str]:
    rd = discover(paths).function(vf).rdma_devices[0]
    return rd.node_guid, rd.ports[0].gid0


def test_assign_sets_rebinds_and_is_idempotent(ib, monkeypatch):
    plan = {0: 0x0200_0100_0000_0001, 1: 0x0200_0200_0000_0001}
    results = vfguid.assign(ib, IB_PF, "ibp94s0", plan)
    assert [(r.index, r.address, r.action) for r in results] == [(0, VF0, vfguid.REBOUND), (1, VF1, vfguid.REBOUND)]
    assert _guids(ib, VF0) == ("0200:0100:0000:0001", "fe80:0000:0000:0000:0200:0100:0000:0001")
    assert _guids(ib, VF1)[0] == "0200:0200:0000:0001"
    writes = []
    monkeypatch.setattr(fakehost.FakeKernel, "write", lambda self, path, value: writes.append(path))
    monkeypatch.setattr(fakehost.FakeKernel, "set_vf_guid", lambda *a: writes.append(a))
    assert [r.action for r in vfguid.assign(ib, IB_PF, "ibp94s0", plan)] == [vfguid.UNCHANGED] * 2
    assert writes == []


def test_a_vfio_vf_gets_its_guid_at_its_next_network_bind(ib):
    assert pci.bind(ib, VF1, "vfio-pci") == "mlx5_core"
    [r] = vfguid.assign(ib, IB_PF, "ibp94s0", {1: 0x0200_0200_0000_0001})
    assert (r.action, r.message) == (vfguid.SET, "vfio-pci: applies when a network driver binds it")
    assert pci.current_driver(ib, VF1) == "vfio-pci"
    assert vfguid.current_guids(ib, IB_PF, 1) == (0x0200_0200_0000_0001,) * 2  # the fake kernel's record
    pci.restore(ib, VF1, "mlx5_core")
    assert _guids(ib, VF1)[0] == "0200:0200:0000:0001"
    [unbound] = vfguid.assign(ib, IB_PF, "ibp94s0", {2: 0x0200_0300_0000_0001})  # VF 2 is on vfio-pci as built
    assert unbound.action == vfguid.SET


def test_held_vfs_are_left_alone_and_one_failure_stops_no_other(ib):
    before = _guids(ib, VF0)
    results = vfguid.assign(ib, IB_PF, "ibp94s0", {0: 0x0200_0100_0000_0001, 1: 0x0200_0200_0000_0001,
                                                   5: 0x0200_0600_0000_0001}, held=lambda a: a == VF0)
    assert [r.action for r in results] == [vfguid.SKIPPED, vfguid.REBOUND, vfguid.FAILED]
    assert results[2].message == f"{IB_PF} VF 5: no such VF"
    assert _guids(ib, VF0) == before


def test_without_an_ipoib_netdev_the_error_names_pf_vf_and_step(ib):
    [r] = vfguid.assign(ib, IB_PF, None, {0: 0x0200_0100_0000_0001})
    assert r.action == vfguid.FAILED
    assert r.message == (f"{IB_PF} VF 0: set node GUID: the PF has no IPoIB netdev to set it through "
                         "(load ib_ipoib)")


def test_rebind_of_an_unbound_function_says_so(ib):
    pci.restore(ib, VF0, None)
    with pytest.raises(pci.PciBindError, match=f"^{VF0}: rebind: not bound to any driver$"):
        pci.rebind(ib, VF0)


# --- review fixes ------------------------------------------------------------------------------------


def test_a_vf_left_unbound_by_an_interrupted_rebind_is_bound_again(ib):
    from sriovdra.host import pci
    from sriovdra.host.writer import sysfs_writer

    plan = {0: 0x0200_0100_0000_0001}
    vfguid.assign(ib, IB_PF, "ibp94s0", plan)
    write = sysfs_writer(ib)
    dev = os.path.join(ib.sysfs, "bus/pci/devices", VF0)
    write(os.path.join(dev, "driver_override"), "mlx5_core")  # rebind's first steps, then the crash
    write(os.path.join(dev, "driver", "unbind"), VF0)
    assert pci.current_driver(ib, VF0) is None
    [result] = vfguid.assign(ib, IB_PF, "ibp94s0", plan)
    assert (result.action, pci.current_driver(ib, VF0)) == (vfguid.REBOUND, "mlx5_core")
    assert _guids(ib, VF0)[0] == "0200:0100:0000:0001"


def test_rebind_puts_back_a_driver_override_it_found(ib):
    from sriovdra.host import pci
    from sriovdra.host.writer import sysfs_writer

    sysfs_writer(ib)(os.path.join(ib.sysfs, "bus/pci/devices", VF1, "driver_override"), "mlx5_core")
    assert pci.rebind(ib, VF1) == "mlx5_core"
    assert pci.override(ib, VF1) == "mlx5_core"
    pci.rebind(ib, VF0)
    assert pci.override(ib, VF0) is None


def test_rtnl_ack_carries_errno_and_extended_ack_text():
    import struct

    from sriovdra.host import rtnl

    attr = struct.pack("=HH", 4 + 12, 1) + b"bad VF index"
    payload = struct.pack("=i", -errno.EINVAL) + struct.pack("=IHHII", 16, 19, 5, 7, 0) + attr
    msg = struct.pack("=IHHII", 16 + len(payload), 2, rtnl.NLM_F_CAPPED | rtnl.NLM_F_ACK_TLVS, 7, 0) + payload
    assert rtnl._ack(msg, 7) == (errno.EINVAL, "bad VF index")
    assert rtnl._ack(msg, 8) is None
    ok = struct.pack("=IHHII", 36, 2, rtnl.NLM_F_CAPPED, 7, 0) + struct.pack("=i", 0) + bytes(16)
    assert rtnl._ack(ok, 7) == (0, "")
