"""Moving a stand-in VF netdev (a veth end) into a real pod netns and back."""

from __future__ import annotations

import dataclasses
import errno
import os
import socket

import pytest
from pyroute2 import IPBatch, IPRoute
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

from sriovdra.host.netlink import (
    AttachRequest,
    Attached,
    LinkSnapshot,
    Netlink,
    NetlinkError,
    parse_vf_info,
    send_vf_spec,
    vf_spec,
)
from tests.netns.conftest import PodNetns, in_pod, unique, wait_gone

POD_NAME = "sdbnet1"
MAC = "02:5d:b0:00:00:01"


def host_link(name: str):
    with IPRoute() as ipr:
        links = [x for x in ipr.get_links() if x.get("ifname") == name]
    return links[0] if links else None


def state(link) -> tuple:
    return link.get("ifname"), link.get("mtu"), link.get("address"), bool(link["flags"] & 1)


def prepare(name: str, *, mtu: int, mac: str, up: bool) -> LinkSnapshot:
    """Give the stand-in VF distinctive settings, so that a restore is visible."""
    with IPRoute() as ipr:
        index = ipr.link_lookup(ifname=name)[0]
        ipr.link("set", index=index, mtu=mtu, address=mac, state="up" if up else "down")
    return LinkSnapshot(name=name, ifindex=index, mtu=mtu, mac=mac, up=up)


def pod_routes(pod: PodNetns, index: int) -> set[tuple]:
    with in_pod(pod) as ipr:
        routes = [r for r in ipr.get_routes(oif=index) if r.get("table") == 254]
    return {(r.get("dst"), r["dst_len"], r.get("gateway"), r["scope"]) for r in routes}


def move_home_by_hand(pod: PodNetns, name: str) -> None:
    """What the kernel does with a physical netdev when its netns dies: back to the root netns, same name."""
    root_fd = os.open("/proc/self/ns/net", os.O_RDONLY)
    try:
        with in_pod(pod) as ipr:
            ipr.link("set", index=ipr.link_lookup(ifname=name)[0], net_ns_fd=root_fd)
    finally:
        os.close(root_fd)


# ----- attach -----


def test_attach_configures_the_device_inside_the_pod(nl, veth, pod):
    vf, _ = veth
    before = prepare(vf, mtu=1500, mac="02:5d:b0:00:00:aa", up=True)
    req = AttachRequest(
        host_name=vf, pod_name=POD_NAME, mtu=9000, mac=MAC,
        ips=("10.99.0.5/24", "fd00:99::5/64"),
        routes=(("10.100.0.0/16", "10.99.0.1"), ("192.0.2.0/24", None), ("0.0.0.0/0", "169.254.1.1"),
                ("fd00:100::/48", "fd00:99::1")),
    )

    got = nl.attach(pod.path, req)

    assert host_link(vf) is None  # gone from the root netns
    with in_pod(pod) as ipr:
        link = ipr.get_links(got.ifindex)[0]
        addrs = {f"{a.get('address')}/{a['prefixlen']}" for a in ipr.get_addr(index=got.ifindex) if a["scope"] == 0}
    assert state(link) == (POD_NAME, 9000, MAC, True)
    assert addrs == {"10.99.0.5/24", "fd00:99::5/64"}
    routes = pod_routes(pod, got.ifindex)
    assert ("10.100.0.0", 16, "10.99.0.1", 0) in routes
    assert ("192.0.2.0", 24, None, 253) in routes
    # The default gateway is on no connected prefix: a link-scope host route makes it reachable.
    assert ("169.254.1.1", 32, None, 253) in routes
    assert (None, 0, "169.254.1.1", 0) in routes
    assert ("fd00:100::", 48, "fd00:99::1", 0) in routes
    assert got == Attached(original=before, ifindex=got.ifindex, name=POD_NAME, mac=MAC, mtu=9000,
                           ips=got.ips, carrier=True)  # a dummy has carrier once up
    assert set(got.ips) == addrs


def test_attach_keeps_mtu_and_mac_when_not_asked(nl, veth, pod):
    vf, _ = veth
    prepare(vf, mtu=1400, mac="02:5d:b0:00:00:ab", up=False)
    got = nl.attach(pod.path, AttachRequest(host_name=vf, pod_name=POD_NAME))
    assert (got.name, got.mtu, got.mac, got.ips) == (POD_NAME, 1400, "02:5d:b0:00:00:ab", ())


def test_attach_tolerates_routes_the_kernel_already_made(nl, veth, pod):
    vf, _ = veth
    req = AttachRequest(host_name=vf, pod_name=POD_NAME, ips=("10.99.0.5/24",), routes=(("10.99.0.0/24", None),))
    got = nl.attach(pod.path, req)
    assert ("10.99.0.0", 24, None, 253) in pod_routes(pod, got.ifindex)


# ----- attach failures: nothing is left half-done -----


def test_name_clash_in_the_pod_is_an_error_and_nothing_moves(nl, veth, pod):
    vf, _ = veth
    before = prepare(vf, mtu=1500, mac="02:5d:b0:00:00:ac", up=True)
    with in_pod(pod) as ipr:
        ipr.link("add", ifname=POD_NAME, kind="veth", peer="sdbother")

    with pytest.raises(NetlinkError) as exc:
        nl.attach(pod.path, AttachRequest(host_name=vf, pod_name=POD_NAME, mtu=9000))

    assert (exc.value.ifname, exc.value.step, exc.value.netns, exc.value.code) == (
        POD_NAME, "check name", pod.path, errno.EEXIST)
    assert str(exc.value).startswith(f"{POD_NAME}: check name in netns {pod.path}: ")
    assert state(host_link(vf)) == (vf, 1500, "02:5d:b0:00:00:ac", True)
    assert host_link(vf)["index"] == before.ifindex


def test_name_clash_at_the_rename_inside_the_pod_rolls_back(nl, veth, pod, mocker):
    """The pod gains the name between our check and our rename (a race): the move is undone."""
    vf, _ = veth
    prepare(vf, mtu=1500, mac="02:5d:b0:00:00:ad", up=True)
    with in_pod(pod) as ipr:
        ipr.link("add", ifname=POD_NAME, kind="veth", peer="sdbother")
    real = __import__("sriovdra.host.netlink", fromlist=["_link_by_name"])._link_by_name
    calls = iter(range(1000))
    # The first look-up in the pod is the name check: let it miss.
    mocker.patch("sriovdra.host.netlink._link_by_name",
                 side_effect=lambda ipr, name: None if name == POD_NAME and next(calls) == 0 else real(ipr, name))

    with pytest.raises(NetlinkError) as exc:
        nl.attach(pod.path, AttachRequest(host_name=vf, pod_name=POD_NAME))

    assert (exc.value.step, exc.value.code) == ("rename", errno.EEXIST)
    assert state(host_link(vf)) == (vf, 1500, "02:5d:b0:00:00:ad", True)
    with in_pod(pod) as ipr:
        assert sorted(x.get("ifname") for x in ipr.get_links()) == ["lo", POD_NAME, "sdbother"]


@pytest.mark.parametrize("up", [True, False])
@pytest.mark.parametrize("bad, step", [
    ({"mtu": 70000}, "set mtu 70000"),  # above a veth's max_mtu (65535)
    ({"mac": "01:00:5e:00:00:01"}, "set mac 01:00:5e:00:00:01"),  # multicast: refused
    ({"ips": ("10.99.0.5/24",), "routes": (("10.100.0.0/16", "10.99.0.300"),)}, "check request"),
    ({"ips": ("10.99.0.5/24",), "routes": (("10.100.0.0/16", "fd00::1"),)}, "check request"),
])
def test_a_failing_step_rolls_everything_back(nl, veth, pod, bad, step, up):
    vf, _ = veth
    before = prepare(vf, mtu=1450, mac="02:5d:b0:00:00:ae", up=up)

    with pytest.raises(NetlinkError) as exc:
        nl.attach(pod.path, AttachRequest(host_name=vf, pod_name=POD_NAME, **bad))

    assert exc.value.step == step
    assert "rollback failed" not in str(exc.value)
    home = host_link(vf)
    assert state(home) == (vf, 1450, "02:5d:b0:00:00:ae", up)
    assert home["index"] == before.ifindex
    with in_pod(pod) as ipr:
        assert [x.get("ifname") for x in ipr.get_links()] == ["lo"]


def test_a_route_the_kernel_refuses_rolls_back_addresses_too(nl, veth, pod):
    vf, _ = veth
    prepare(vf, mtu=1500, mac="02:5d:b0:00:00:af", up=True)
    # "::" as a gateway is refused by the kernel ("Invalid gateway address"): by then the device is in the
    # pod, renamed, up, with addresses and a first route.
    req = AttachRequest(host_name=vf, pod_name=POD_NAME, ips=("10.99.0.5/24", "fd00:99::5/64"),
                        routes=(("10.100.0.0/16", "10.99.0.1"), ("ff00::/8", "::")))
    with pytest.raises(NetlinkError) as exc:
        nl.attach(pod.path, req)
    assert exc.value.step.startswith("add route ff00::/8")
    assert state(host_link(vf)) == (vf, 1500, "02:5d:b0:00:00:af", True)
    with IPRoute() as ipr:
        assert ipr.get_addr(index=host_link(vf)["index"], family=socket.AF_INET) == ()


@pytest.mark.parametrize("names", [{"pod_name": "sdb-way-too-long-name"}, {"pod_name": "sdb/x"}, {"pod_name": ""}])
def test_an_invalid_name_is_refused_before_anything_moves(nl, veth, pod, names):
    vf, _ = veth
    with pytest.raises(NetlinkError, match="is not a valid interface name") as exc:
        nl.attach(pod.path, AttachRequest(**{"host_name": vf, **names}))
    assert exc.value.step == "check request"
    assert host_link(vf) is not None


def test_missing_netns_is_an_error_and_creates_nothing(nl, veth, tmp_path):
    vf, _ = veth
    missing = str(tmp_path / unique("sdb-"))
    with pytest.raises(NetlinkError) as exc:
        nl.attach(missing, AttachRequest(host_name=vf, pod_name=POD_NAME))
    assert (exc.value.ifname, exc.value.step, exc.value.netns, exc.value.code) == (
        vf, "open netns", missing, errno.ENOENT)
    assert not os.path.exists(missing)
    assert host_link(vf) is not None


def test_a_file_that_is_not_a_netns_is_an_error(nl, veth, tmp_path):
    vf, _ = veth
    plain = tmp_path / "sdb-plain"
    plain.write_text("")
    with pytest.raises(NetlinkError, match="not a network namespace") as exc:
        nl.attach(str(plain), AttachRequest(host_name=vf, pod_name=POD_NAME))
    assert exc.value.step == "open netns"
    with pytest.raises(NetlinkError, match="not a network namespace"):
        nl.attach("/proc/self/ns/uts", AttachRequest(host_name=vf, pod_name=POD_NAME))
    assert host_link(vf) is not None


def test_unknown_host_link(nl, pod):
    name = unique()
    with pytest.raises(NetlinkError) as exc:
        nl.attach(pod.path, AttachRequest(host_name=name, pod_name=POD_NAME))
    assert str(exc.value) == f"{name}: look up link in netns /proc/self/ns/net: no such link"
    with pytest.raises(NetlinkError, match="no such link"):
        nl.snapshot(name)


def test_snapshot(nl, veth):
    vf, _ = veth
    expected = prepare(vf, mtu=1420, mac="02:5d:b0:00:00:b0", up=True)
    assert nl.snapshot(vf) == expected


# ----- detach -----


@pytest.mark.parametrize("up", [True, False])
def test_detach_restores_name_mtu_mac_and_state(nl, veth, pod, up):
    vf, _ = veth
    before = prepare(vf, mtu=1450, mac="02:5d:b0:00:00:b1", up=up)
    got = nl.attach(pod.path, AttachRequest(host_name=vf, pod_name=POD_NAME, mtu=9000, mac=MAC, ips=("10.99.0.5/24",)))

    assert nl.detach(pod.path, POD_NAME, got.original, got.ifindex) == "restored"

    home = host_link(vf)
    assert state(home) == (vf, 1450, "02:5d:b0:00:00:b1", up)
    assert home["index"] == before.ifindex
    with IPRoute() as ipr:
        assert ipr.get_addr(index=home["index"], family=socket.AF_INET) == ()
    with in_pod(pod) as ipr:
        assert [x.get("ifname") for x in ipr.get_links()] == ["lo"]


def test_detach_twice_is_a_no_op(nl, veth, pod):
    vf, _ = veth
    got = nl.attach(pod.path, AttachRequest(host_name=vf, pod_name=POD_NAME, mtu=9000))
    assert nl.detach(pod.path, POD_NAME, got.original, got.ifindex) == "restored"
    home = state(host_link(vf))
    assert nl.detach(pod.path, POD_NAME, got.original, got.ifindex) == "already-home"
    assert nl.detach(None, POD_NAME, got.original, got.ifindex) == "already-home"
    assert state(host_link(vf)) == home


def test_detach_finds_the_device_by_ifindex_when_the_netns_is_gone(nl, veth, pod):
    vf, _ = veth
    before = prepare(vf, mtu=1450, mac="02:5d:b0:00:00:b2", up=True)
    got = nl.attach(pod.path, AttachRequest(host_name=vf, pod_name=POD_NAME, mtu=9000, mac=MAC))
    move_home_by_hand(pod, POD_NAME)
    pod.delete()

    assert nl.detach(pod.path, POD_NAME, got.original, got.ifindex) == "restored"
    assert state(host_link(vf)) == (vf, 1450, "02:5d:b0:00:00:b2", True)
    assert host_link(vf)["index"] == before.ifindex


def test_detach_finds_the_device_by_mac_when_nothing_else_matches(nl, veth, pod):
    vf, _ = veth
    prepare(vf, mtu=1450, mac="02:5d:b0:00:00:b3", up=False)
    got = nl.attach(pod.path, AttachRequest(host_name=vf, pod_name=POD_NAME, mtu=9000))
    move_home_by_hand(pod, POD_NAME)
    # A snapshot whose ifindex no longer fits (the device came back with another one): only the MAC is left.
    original = dataclasses.replace(got.original, ifindex=0x7FFF0000)

    assert nl.detach(None, POD_NAME, original) == "restored"
    assert state(host_link(vf)) == (vf, 1450, "02:5d:b0:00:00:b3", False)


def test_detach_finds_the_device_left_under_a_temporary_name(nl, veth, pod):
    """serve killed after the move into the pod and before the rename: no pod-side ifindex was recorded."""
    vf, _ = veth
    before = prepare(vf, mtu=1450, mac="02:5d:b0:00:00:b4", up=True)
    pod_fd = os.open(pod.path, os.O_RDONLY)
    try:
        with IPRoute() as ipr:
            ipr.link("set", index=before.ifindex, net_ns_fd=pod_fd, ifname=nl.temp_name())
    finally:
        os.close(pod_fd)

    assert nl.detach(pod.path, POD_NAME, before) == "restored"
    assert state(host_link(vf)) == (vf, 1450, "02:5d:b0:00:00:b4", True)
    with in_pod(pod) as ipr:
        assert [x.get("ifname") for x in ipr.get_links()] == ["lo"]


def test_detach_does_not_take_an_unrelated_link_with_the_pod_name(nl, veth, pod):
    """pod_name (often eth0) may be a real host link: never rename a link on the name alone."""
    vf, _ = veth
    got = nl.attach(pod.path, AttachRequest(host_name=vf, pod_name=POD_NAME, mac=MAC))
    pod.delete()
    assert wait_gone(vf)
    other = unique()
    with IPRoute() as ipr:
        ipr.link("add", ifname=other, kind="veth", peer=f"{other}p")
    try:
        original = dataclasses.replace(got.original, ifindex=0x7FFF0000)
        assert nl.detach(None, other, original, ifindex=None) == "missing"
        assert host_link(other) is not None
    finally:
        with IPRoute() as ipr:
            ipr.link("del", ifname=other)


def test_detach_leaves_the_pods_own_link_of_the_same_name_alone(nl, veth, pod):
    """Ours already left the pod and the pod has another link with the pod name: that one stays."""
    vf, _ = veth
    before = prepare(vf, mtu=1450, mac="02:5d:b0:00:00:b5", up=True)
    got = nl.attach(pod.path, AttachRequest(host_name=vf, pod_name=POD_NAME, mac=MAC))
    move_home_by_hand(pod, POD_NAME)
    with in_pod(pod) as ipr:
        ipr.link("add", ifname=POD_NAME, kind="veth", peer="sdbother")

    assert nl.detach(pod.path, POD_NAME, got.original, got.ifindex) == "restored"
    assert state(host_link(vf)) == (vf, 1450, "02:5d:b0:00:00:b5", True)
    assert host_link(vf)["index"] == before.ifindex
    with in_pod(pod) as ipr:
        assert sorted(x.get("ifname") for x in ipr.get_links()) == ["lo", POD_NAME, "sdbother"]


def test_detach_of_a_veth_whose_netns_died_is_missing(nl, veth, pod):
    """A veth is destroyed with its netns (a physical VF would come home instead)."""
    vf, _ = veth
    got = nl.attach(pod.path, AttachRequest(host_name=vf, pod_name=POD_NAME))
    pod.delete()
    assert wait_gone(vf)
    assert nl.detach(pod.path, POD_NAME, got.original, got.ifindex) == "missing"
    assert nl.detach(None, POD_NAME, got.original, got.ifindex) == "missing"


def test_detach_when_the_pod_does_not_hold_it_looks_at_home(nl, veth, pod):
    vf, _ = veth
    original = nl.snapshot(vf)
    assert nl.detach(pod.path, POD_NAME, original, ifindex=original.ifindex + 1000) == "already-home"


def test_name_taken_on_the_way_home_is_an_error_then_a_retry_restores(nl, veth, pod):
    vf, _ = veth
    prepare(vf, mtu=1450, mac="02:5d:b0:00:00:b4", up=True)
    got = nl.attach(pod.path, AttachRequest(host_name=vf, pod_name=POD_NAME, mac=MAC))
    with IPRoute() as ipr:  # someone takes the name while the device is in the pod
        ipr.link("add", ifname=vf, kind="veth", peer=unique())
    try:
        with pytest.raises(NetlinkError, match="name taken by another link") as exc:
            nl.detach(pod.path, POD_NAME, got.original, got.ifindex)
        assert (exc.value.ifname, exc.value.step, exc.value.code) == (vf, "rename home", errno.EEXIST)
        left_as = str(exc.value).rsplit("device left as ", 1)[1]
        assert left_as.startswith("sdbt") and host_link(left_as) is not None
    finally:
        with IPRoute() as ipr:
            ipr.link("del", ifname=vf)

    assert nl.detach(pod.path, POD_NAME, got.original, got.ifindex) == "restored"
    assert state(host_link(vf)) == (vf, 1450, "02:5d:b0:00:00:b4", True)


def test_no_fd_or_helper_process_leaks(nl, veth, pod):
    vf, _ = veth
    req = AttachRequest(host_name=vf, pod_name=POD_NAME, mtu=9000, mac=MAC, ips=("10.99.0.5/24", "fd00:99::5/64"),
                        routes=(("0.0.0.0/0", "10.99.0.1"),))

    def cycle():
        got = nl.attach(pod.path, req)
        assert nl.detach(pod.path, POD_NAME, got.original, got.ifindex) == "restored"

    cycle()  # first use may set up lazily kept state
    fds, children = len(os.listdir("/proc/self/fd")), _children()
    for _ in range(50):
        cycle()
    assert len(os.listdir("/proc/self/fd")) == fds
    assert _children() == children == set()


def _children() -> set[str]:
    pid = os.getpid()
    found: set[str] = set()
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/children") as f:
            found.update(f.read().split())
    return found


# ----- checkpointed records -----


def test_records_round_trip_through_json_dicts():
    snap = LinkSnapshot(name="ens1f0v3", ifindex=12, mtu=1500, mac="02:00:00:00:00:03", up=True)
    att = Attached(original=snap, ifindex=4, name="net1", mac=MAC, mtu=9000, ips=("10.0.0.2/24",))
    assert LinkSnapshot.from_dict(snap.to_dict()) == snap
    assert Attached.from_dict(att.to_dict()) == att
    assert att.to_dict()["original"] == {"name": "ens1f0v3", "ifindex": 12, "mtu": 1500,
                                         "mac": "02:00:00:00:00:03", "up": True}


# ----- PF-side VF settings: no SR-IOV here, so check the message and the error path -----


def compiled(spec: dict, pf_index: int = 7) -> ifinfmsg:
    ipb = IPBatch()
    try:
        send_vf_spec(ipb, pf_index, spec)
        msg = ifinfmsg(bytes(ipb.batch))
    finally:
        ipb.close()
    msg.decode()
    return msg


def vf_attrs(msg: ifinfmsg) -> dict:
    (info,) = msg.get("IFLA_VFINFO_LIST").get_attrs("IFLA_VF_INFO")
    return {name: dict(value) if not hasattr(value, "get_attrs") else value for name, value in info["attrs"]}


def test_vf_message_carries_every_setting_given():
    spec = vf_spec(3, mac="02:AA:00:00:00:03", vlan=100, qos=2, spoofchk=False, trust=True, link_state="disable",
                   min_rate=10, max_rate=1000)
    msg = compiled(spec)
    assert (msg["header"]["type"], msg["index"]) == (19, 7)  # RTM_SETLINK on the PF
    attrs = vf_attrs(msg)
    assert attrs["IFLA_VF_MAC"]["mac"] == "02:aa:00:00:00:03"
    assert {k: attrs["IFLA_VF_VLAN"][k] for k in ("vf", "vlan", "qos")} == {"vf": 3, "vlan": 100, "qos": 2}
    assert attrs["IFLA_VF_SPOOFCHK"]["spoofchk"] == 0
    assert attrs["IFLA_VF_TRUST"]["trust"] == 1
    assert attrs["IFLA_VF_LINK_STATE"]["link_state"] == 2
    assert (attrs["IFLA_VF_RATE"]["min_tx_rate"], attrs["IFLA_VF_RATE"]["max_tx_rate"]) == (10, 1000)
    assert all(v["vf"] == 3 for k, v in attrs.items())


def test_vf_message_has_only_the_settings_given():
    attrs = vf_attrs(compiled(vf_spec(0, spoofchk=True)))
    assert list(attrs) == ["IFLA_VF_SPOOFCHK"]
    assert vf_spec(0) == {"vf": 0}


def test_vf_vlan_protocol_goes_in_the_vlan_list():
    attrs = vf_attrs(compiled(vf_spec(1, vlan=10, proto="802.1ad")))
    (ivvi,) = attrs["IFLA_VF_VLAN_LIST"].get_attrs("IFLA_VF_VLAN_INFO")
    assert (ivvi["vf"], ivvi["vlan"], ivvi["qos"], ivvi["proto"]) == (1, 10, 0, 0x88A8)


@pytest.mark.parametrize("kwargs", [{"qos": 3}, {"proto": "802.1Q"}, {"vlan": 1, "proto": "bogus"},
                                    {"link_state": "sometimes"}, {"min_rate": 1}])
def test_vf_spec_rejects_incomplete_settings(kwargs):
    with pytest.raises(ValueError):
        vf_spec(0, **kwargs)


def test_vf_settings_parse_what_the_kernel_reports():
    link = ifinfmsg()
    link["attrs"] = [("IFLA_IFNAME", "pf0"), ("IFLA_VFINFO_LIST", {"attrs": [
        ("IFLA_VF_INFO", {"attrs": [("IFLA_VF_MAC", {"vf": vf, "mac": f"02:00:00:00:00:0{vf}"}),
                                    ("IFLA_VF_VLAN", {"vf": vf, "vlan": 10 * vf, "qos": vf, }),
                                    ("IFLA_VF_RATE", {"vf": vf, "min_tx_rate": 0, "max_tx_rate": 100 * vf}),
                                    ("IFLA_VF_SPOOFCHK", {"vf": vf, "spoofchk": 1}),
                                    ("IFLA_VF_TRUST", {"vf": vf, "trust": 0xFFFFFFFF}),
                                    ("IFLA_VF_LINK_STATE", {"vf": vf, "link_state": 1})]})
        for vf in (0, 1)]})]
    link.encode()
    decoded = ifinfmsg(link.data)
    decoded.decode()
    assert parse_vf_info(decoded, 1) == {
        "mac": "02:00:00:00:00:01", "vlan": 10, "qos": 1, "proto": None, "spoofchk": True,
        "trust": None,  # the driver cannot tell
        "link_state": "enable", "min_rate": 0, "max_rate": 100,
    }
    assert parse_vf_info(decoded, 5) is None


def test_set_vf_on_a_device_without_vfs_names_pf_and_vf(nl, veth):
    vf, _ = veth
    with pytest.raises(NetlinkError) as exc:
        nl.set_vf(vf, 2, spoofchk=True)
    assert (exc.value.ifname, exc.value.step) == (f"{vf} vf 2", "set VF")
    assert str(exc.value).startswith(f"{vf} vf 2: set VF in netns /proc/self/ns/net: ")
    with pytest.raises(NetlinkError, match=f"{vf} vf 2: read VF settings .*no such VF"):
        nl.vf_settings(vf, 2)
    with pytest.raises(NetlinkError, match="look up PF"):
        nl.set_vf(unique(), 0, trust=True)
    nl.set_vf(vf, 2)  # nothing to change: no request at all


def test_netlink_in_another_root_netns(veth, pod):
    """root_netns need not be ours: devices go home to the namespace given."""
    vf, _ = veth
    with in_pod(pod) as ipr:
        ipr.link("add", ifname="sdbv0", kind="veth", peer="sdbv0p")
    inner = PodNetns(pod.path + "x")
    try:
        with Netlink(pod.path, temp_prefix="sdbt") as nl:
            before = nl.snapshot("sdbv0")
            got = nl.attach(inner.path, AttachRequest(host_name="sdbv0", pod_name=POD_NAME, mtu=9000))
            assert got.mtu == 9000
            assert nl.detach(inner.path, POD_NAME, got.original, got.ifindex) == "restored"
            assert nl.snapshot("sdbv0") == before
    finally:
        inner.delete()
