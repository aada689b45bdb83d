"""The pod network over real netlink: Driver records + PodNetwork + veth "VF netdevs" + netns "pods".

The NRI adapter is left out (tests/nri, tests/runtime cover it): the runtime's events are method
calls here, so every ordering and crash point can be played exactly.
"""

from __future__ import annotations

import json
import os
import threading

import pytest
from pyroute2 import IPRoute

from sriovdra.checkpoint import ATTACHED, ATTACHING, CheckpointStore
from sriovdra.claim import ClaimRef
from sriovdra.driver.core import Driver, DriverSettings
from sriovdra.driver.network import NetworkSettings, PodNetwork
from sriovdra.host.discovery import discover
from sriovdra.model import SRIOV_DRIVER
from sriovdra.nri.plugin import Pod
from tests.conftest import eth_pf
from tests.netns.conftest import PodNetns, in_pod, unique
from tests.support.claims import ClaimBook, allocated_claim, vf_config

HOST_LOCAL = "/usr/lib/cni/host-local"


class Rig:
    def __init__(self, tmp_path, build_host, vfs: int = 3) -> None:
        self.prefix = unique("sdb")[:8] + "v"
        host, self.paths = build_host({"host": {"iommu": True, "modules": ["vfio_pci"]}, "pfs": [eth_pf(
            rdma=False, vfs={"total": 8, "count": vfs, "offset": 2, "netdevPrefix": self.prefix})]})
        self.netdevs = [f"{self.prefix}{i}" for i in range(vfs)]
        with IPRoute() as ipr:
            for name in self.netdevs:
                ipr.link("add", ifname=name, kind="veth", peer=f"{name}p")
        self.inv = discover(self.paths)
        self.claims = ClaimBook()
        self.status: list[tuple[str, list]] = []
        lock = threading.RLock()
        self.net = PodNetwork(NetworkSettings(cni_bin_dirs=(os.path.dirname(HOST_LOCAL),)), lambda: self.inv,
                              on_attached=lambda d, rec: self.status.append((rec.claim.name, rec.attached())))
        self.driver = Driver(DriverSettings(SRIOV_DRIVER, "node1", str(tmp_path / "cdi"), str(tmp_path / "cp.json"),
                                            self.paths), lambda: self.inv, self.claims, network=self.net, lock=lock)
        self.net.drivers.append(self.driver)
        self.driver.start()
        self.tmp = tmp_path
        self.pods: list[PodNetns] = []

    def device(self, i: int) -> str:
        return [d.name for d in self.inv.dra_devices() if d.netdev == self.netdevs[i]][0]

    def prepare(self, name: str, devices: list[int], pod_uid: str, **config) -> ClaimRef:
        claim = allocated_claim(name, [self.device(i) for i in devices], pod_uid=pod_uid,
                                configs=[vf_config(**config)] if config else None)
        ref = self.claims.add(claim)
        out = self.driver.prepare([ref])[ref.uid]
        assert out.error is None, out.error
        return ref

    def pod(self, uid: str, name: str = "p") -> Pod:
        ns = PodNetns(str(self.tmp / unique("sdb-")))
        self.pods.append(ns)
        return Pod(id=f"sandbox-{uid}", uid=uid, name=name, namespace="default", netns=ns.path)

    def close(self) -> None:
        self.net.netlink.close()
        for ns in self.pods:
            ns.delete()
        with IPRoute() as ipr:
            for name in self.netdevs:
                for index in ipr.link_lookup(ifname=name):
                    ipr.link("del", index=index)


@pytest.fixture
def rig(tmp_path, build_host):
    r = Rig(tmp_path, build_host)
    yield r
    r.close()


def links_in(pod: Pod) -> dict[str, dict]:
    with in_pod(type("N", (), {"path": pod.netns})) as ipr:
        out = {}
        for link in ipr.get_links():
            name = link.get_attr("IFLA_IFNAME")
            addrs = [f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}" for a in ipr.get_addr(index=link["index"])
                     if a["scope"] == 0]
            out[name] = {"mtu": link.get_attr("IFLA_MTU"), "mac": link.get_attr("IFLA_ADDRESS"), "ips": addrs,
                         "up": bool(link["flags"] & 1)}
        return out


def host_link(name: str) -> dict | None:
    with IPRoute() as ipr:
        idx = ipr.link_lookup(ifname=name)
        if not idx:
            return None
        link = ipr.get_links(idx[0])[0]
        return {"mtu": link.get_attr("IFLA_MTU"), "mac": link.get_attr("IFLA_ADDRESS")}


def test_attach_applies_config_and_detach_restores_the_host_view(rig):
    before = host_link(rig.netdevs[0])
    ref = rig.prepare("c1", [0], "pod-1", ifName="data0", mtu=1400, mac="02:aa:bb:cc:dd:01",
                      ips=["192.0.2.10/24", "2001:db8::10/64"], routes=[{"dst": "198.51.100.0/24", "gw": "192.0.2.1"}])
    pod = rig.pod("pod-1")
    rig.net.run_pod_sandbox(pod)
    inside = links_in(pod)["data0"]
    assert inside["mtu"] == 1400 and inside["mac"] == "02:aa:bb:cc:dd:01" and inside["up"]
    assert set(inside["ips"]) >= {"192.0.2.10/24", "2001:db8::10/64"}
    assert host_link(rig.netdevs[0]) is None
    rec = rig.driver.records[ref.uid]
    att = rec.devices[0].attachment
    assert att.state == ATTACHED and att.if_name == "data0" and att.netns == pod.netns
    on_disk = CheckpointStore(rig.driver.s.checkpoint_path).peek()[ref.uid].devices[0].attachment
    assert on_disk == att
    assert rig.status and rig.status[-1][0] == "c1"

    rig.net.stop_pod_sandbox(pod)
    assert host_link(rig.netdevs[0]) == before
    assert "data0" not in links_in(pod)
    assert rig.driver.records[ref.uid].devices[0].attachment is None
    rig.net.remove_pod_sandbox(pod)  # idempotent: nothing left to do
    assert host_link(rig.netdevs[0]) == before


def test_two_claims_in_one_pod_get_distinct_names(rig):
    rig.prepare("a", [0], "pod-2")
    rig.prepare("b", [1, 2], "pod-2", ifName="fast")
    pod = rig.pod("pod-2")
    rig.net.run_pod_sandbox(pod)
    assert {"net1", "fast", "fast-2"} <= set(links_in(pod))
    rig.net.stop_pod_sandbox(pod)
    assert all(host_link(n) for n in rig.netdevs)


def test_a_failing_device_rolls_back_the_whole_pod(rig):
    rig.prepare("a", [0], "pod-3")
    rig.prepare("b", [1], "pod-3", ifName="taken")
    before = [host_link(n) for n in rig.netdevs[:2]]
    pod = rig.pod("pod-3")
    squatter = unique("sdb")
    with IPRoute() as ipr:  # something else (another CNI plugin) already made "taken" in the pod
        ipr.link("add", ifname=squatter, kind="veth", peer=f"{squatter}p")
        ipr.link("set", index=ipr.link_lookup(ifname=squatter)[0], net_ns_fd=pod.netns, ifname="taken")
    with pytest.raises(Exception) as err:
        rig.net.run_pod_sandbox(pod)
    assert "claim default/b" in str(err.value) and rig.device(1) in str(err.value) and "taken" in str(err.value)
    assert [host_link(n) for n in rig.netdevs[:2]] == before
    assert set(links_in(pod)) == {"lo", "taken"}
    assert not any(d.attachment for r in rig.driver.records.values() for d in r.devices)


def test_vf_settings_go_through_the_pf_and_a_missing_pf_link_fails_cleanly(rig):
    # The fake PF's netdev is not a real link here: the PF-side step must fail with a message that
    # names the PF and the step, and roll the VF back home (not crash on the way).
    rig.prepare("v", [0], "pod-vlan", vlan=100, spoofChk=False)
    before = host_link(rig.netdevs[0])
    pod = rig.pod("pod-vlan")
    with pytest.raises(Exception) as err:
        rig.net.run_pod_sandbox(pod)
    pf = rig.inv.parent(rig.inv.function(rig.inv.dra_devices()[0].pci_address)).uplink.name
    assert type(err.value).__name__ == "AttachError"
    assert f"{pf} vf 0" in str(err.value) and "look up PF" in str(err.value), str(err.value)
    assert host_link(rig.netdevs[0]) == before
    assert not any(d.attachment for r in rig.driver.records.values() for d in r.devices)


def test_host_network_pods_and_pods_without_claims_are_left_alone(rig):
    rig.prepare("a", [0], "pod-4")
    rig.net.run_pod_sandbox(Pod(id="s", uid="pod-4", name="p", namespace="default", netns=None))
    assert host_link(rig.netdevs[0]) is not None
    other = rig.pod("someone-else")
    rig.net.run_pod_sandbox(other)
    assert set(links_in(other)) == {"lo"}


def test_a_netdev_is_in_one_pod_at_a_time(rig):
    claim = allocated_claim("shared", [rig.device(0)], pod_uid="pod-5")
    claim["status"]["reservedFor"].append({"resource": "pods", "name": "other", "uid": "pod-6"})
    ref = rig.claims.add(claim)
    assert rig.driver.prepare([ref])[ref.uid].error is None
    rig.net.run_pod_sandbox(rig.pod("pod-5"))
    with pytest.raises(Exception, match="is in pod default/p; a network device can be in one pod at a time"):
        rig.net.run_pod_sandbox(rig.pod("pod-6"))


def test_unprepare_of_a_claim_still_in_a_pod_brings_it_home(rig):
    before = host_link(rig.netdevs[0])
    ref = rig.prepare("a", [0], "pod-7", mtu=1300)
    rig.net.run_pod_sandbox(rig.pod("pod-7"))
    assert rig.driver.unprepare([ref]) == {ref.uid: None}
    assert host_link(rig.netdevs[0]) == before


def test_synchronize_redoes_an_interrupted_attach_and_attaches_missed_pods(rig):
    ref = rig.prepare("a", [0], "pod-8", ifName="x1", mtu=1450)
    pod = rig.pod("pod-8")
    rig.net.run_pod_sandbox(pod)
    # the process died after moving the netdev but before recording ATTACHED
    rec = rig.driver.records[ref.uid]
    rec.devices[0].attachment.state = ATTACHING
    rig.driver.save()
    missed = rig.pod("pod-9")
    ref2 = rig.prepare("b", [1], "pod-9")
    rig.net.synchronize([pod, missed])
    assert links_in(pod)["x1"]["mtu"] == 1450 and rec.devices[0].attachment.state == ATTACHED
    assert "net1" in links_in(missed) and rig.driver.records[ref2.uid].devices[0].attachment.state == ATTACHED


def test_synchronize_brings_home_devices_of_vanished_pods(rig):
    before = host_link(rig.netdevs[0])
    ref = rig.prepare("a", [0], "pod-10", mtu=1280)
    pod = rig.pod("pod-10")
    rig.net.run_pod_sandbox(pod)
    # the pod went away while we were not looking; a physical VF would be back in the root netns
    # under its pod-side name: play that by moving it home by hand
    with in_pod(type("N", (), {"path": pod.netns})) as ipr:
        idx = ipr.link_lookup(ifname="net1")[0]
        ipr.link("set", index=idx, state="down")
        ipr.link("set", index=idx, net_ns_fd="/proc/self/ns/net")
    rig.net.synchronize([])
    assert host_link(rig.netdevs[0]) == before
    assert rig.driver.records[ref.uid].devices[0].attachment is None


def test_ipam_host_local_allocates_and_releases(rig, tmp_path):
    if not os.access(HOST_LOCAL, os.X_OK):
        pytest.skip(f"{HOST_LOCAL} missing (Debian containernetworking-plugins; CI installs it)")
    ipam = {"type": "host-local", "dataDir": str(tmp_path / "ipam"),
            "ranges": [[{"subnet": "10.77.0.0/24", "rangeStart": "10.77.0.10", "gateway": "10.77.0.1"}]],
            "routes": [{"dst": "10.88.0.0/16"}]}
    ref = rig.prepare("a", [0], "pod-11", ipam=ipam)
    pod = rig.pod("pod-11")
    rig.net.run_pod_sandbox(pod)
    assert links_in(pod)["net1"]["ips"] == ["10.77.0.10/24"]
    with in_pod(type("N", (), {"path": pod.netns})) as ipr:
        routes = {r.get_attr("RTA_DST"): r.get_attr("RTA_GATEWAY") for r in ipr.get_routes(family=2)}
    assert routes.get("10.88.0.0") == "10.77.0.1"
    leases = [f for f in os.listdir(tmp_path / "ipam" / "sriovdra") if f.startswith("10.")]
    assert leases == ["10.77.0.10"]
    assert rig.driver.records[ref.uid].devices[0].attachment.ips == ["10.77.0.10/24"]
    rig.net.stop_pod_sandbox(pod)
    assert [f for f in os.listdir(tmp_path / "ipam" / "sriovdra") if f.startswith("10.")] == []


def test_checkpoint_show_lists_attachments(rig, tmp_path):
    rig.prepare("a", [0], "pod-12", ifName="n0")
    rig.net.run_pod_sandbox(rig.pod("pod-12", name="web"))
    data = json.load(open(rig.driver.s.checkpoint_path))
    att = next(iter(data["claims"].values()))["devices"][0]["attachment"]
    assert att["pod_name"] == "default/web" and att["if_name"] == "n0" and att["state"] == "attached"
