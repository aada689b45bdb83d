"""IbConfig on the netdev side over real netlink: veths stand in for IPoIB netdevs of IB VFs.

IbConfig.mtu (the IB MTU) becomes the pod-side IPoIB MTU (minus the 4-byte IPoIB header) and is
restored at detach; it is final only once the netdev has carrier (a veth's carrier comes with its
peer up, as an IPoIB netdev's comes with its broadcast-group join). IbConfig.pkey asks for an
IPoIB P_Key child; this kernel has no ib_ipoib, so the real attempt must fail cleanly, and the
crash-recovery paths run on veth stand-ins for a child.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import threading

import pytest
from pyroute2 import IPRoute

from sriovdra.checkpoint import ATTACHING, Attachment, CheckpointStore
from sriovdra.daemon import _status_entry
from sriovdra.driver.core import Driver, DriverSettings
from sriovdra.driver.network import NetworkSettings, PodNetwork
from sriovdra.host.discovery import discover
from sriovdra.host.netlink import Netlink
from sriovdra.model import IB_DRIVER
from sriovdra.nri.plugin import Pod
from tests.conftest import ib_pf
from tests.netns.conftest import PodNetns, unique
from tests.netns.test_pod_network import host_link, links_in
from tests.support.claims import SEED_IB_CONFIG, ClaimBook, allocated_claim

IB_API = {"apiVersion": "ib.resource.sigs.k8s.io/v1alpha1", "kind": "IbConfig"}


class IbRig:
    """An IB PF with 2 VFs whose IPoIB netdevs are veths; the ib.sigs.k8s.io driver with NRI attach."""

    def __init__(self, tmp_path, build_host) -> None:
        self.prefix = unique("sdb")[:8] + "i"
        _, self.paths = build_host({"pfs": [ib_pf(ports=[{"pkeys": [0xFFFF, 0x8001]}],
                                                  vfs={"total": 4, "count": 2, "offset": 1,
                                                       "netdevPrefix": self.prefix})]})
        self.netdevs = [f"{self.prefix}{i}" for i in range(2)]
        with IPRoute() as ipr:
            for name in self.netdevs:
                ipr.link("add", ifname=name, kind="veth", peer=f"{name}p")
        self.inv = discover(self.paths)
        self.claims = ClaimBook()
        self.status_writes: list[str] = []  # claim UIDs whose status the network asked to rewrite
        self.net = PodNetwork(NetworkSettings(ipoib_settle_seconds=0), lambda: self.inv,
                              on_attached=lambda driver, rec: self.status_writes.append(rec.claim.uid))
        self.net.netlink.close()
        # temporary link names unique to this test, so "nothing left behind" can be checked exactly
        self.temp_prefix = f"sq{secrets.token_hex(2)}"
        self.net.netlink = Netlink(temp_prefix=self.temp_prefix)
        self.driver = Driver(DriverSettings(IB_DRIVER, "node1", str(tmp_path / "cdi"), str(tmp_path / "cp.json"),
                                            self.paths), lambda: self.inv, self.claims, network=self.net,
                             lock=threading.RLock())
        self.net.drivers.append(self.driver)
        self.driver.start()
        self.tmp = tmp_path
        self.pods: list[PodNetns] = []
        self.extra_links: list[str] = []

    def device(self, i: int) -> str:
        return next(d.name for d in self.inv.dra_devices() if d.netdev == self.netdevs[i])

    def prepare(self, name: str, pod_uid: str, **config):
        claim = allocated_claim(name, [self.device(0)], driver=IB_DRIVER, request="ib", pod_uid=pod_uid,
                                configs=[{**IB_API, **config}] if config else None)
        ref = self.claims.add(claim)
        out = self.driver.prepare([ref])[ref.uid]
        assert out.error is None, out.error
        return ref

    def pod(self, uid: str) -> Pod:
        ns = PodNetns(str(self.tmp / unique("sdb-")))
        self.pods.append(ns)
        return Pod(id=f"sandbox-{uid}", uid=uid, name="p", namespace="default", netns=ns.path)

    def ours_in_root(self) -> list[str]:
        with IPRoute() as ipr:
            return [x.get_attr("IFLA_IFNAME") for x in ipr.get_links()
                    if (x.get_attr("IFLA_IFNAME") or "").startswith(self.temp_prefix)]

    def close(self) -> None:
        self.net.netlink.close()
        for ns in self.pods:
            ns.delete()
        with IPRoute() as ipr:
            for name in self.netdevs + self.extra_links:
                for index in ipr.link_lookup(ifname=name):
                    ipr.link("del", index=index)


@pytest.fixture
def rig(tmp_path, build_host):
    r = IbRig(tmp_path, build_host)
    yield r
    r.close()


def _conditions(dev) -> dict:
    return {c["type"]: c for c in _status_entry(IB_DRIVER, dev)["conditions"]}


def _up(name: str) -> bool:
    with IPRoute() as ipr:
        return bool(ipr.get_links(ipr.link_lookup(ifname=name)[0])[0]["flags"] & 1)


def test_ib_mtu_becomes_the_ipoib_netdev_mtu_and_is_restored(rig):
    before = host_link(rig.netdevs[0])
    ref = rig.prepare("ib", "pod-1", mtu=4096, trafficClass=96)
    pod = rig.pod("pod-1")
    rig.net.run_pod_sandbox(pod)
    assert links_in(pod)["net1"]["mtu"] == 4092  # IB MTU 4096 minus the 4-byte IPoIB header
    dev = rig.driver.records[ref.uid].devices[0]
    # no carrier yet (peer down; an IPoIB netdev before its broadcast join): the MTU may still be lowered
    mtu = _conditions(dev)["IPoIBMTUReady"]
    assert (mtu["status"], mtu["reason"]) == ("Unknown", "AwaitingBroadcastJoin")
    assert rig.net.refresh_ipoib() is True and rig.status_writes == [ref.uid]  # still waiting, nothing new
    with IPRoute() as ipr:  # carrier comes
        ipr.link("set", index=ipr.link_lookup(ifname=f"{rig.netdevs[0]}p")[0], state="up")
    rig.net.synchronize([pod])  # re-reads it (as the poll after attach does) and rewrites the status
    assert rig.status_writes == [ref.uid, ref.uid]
    entry = _status_entry(IB_DRIVER, dev)
    conditions = {c["type"]: c for c in entry["conditions"]}
    assert conditions["IPoIBMTUReady"]["status"] == "True" and "IBPartitionReady" not in conditions
    assert entry["data"]["ib"]["netdev"] == {"interfaceName": "net1", "mtu": 4092, "pkeyChild": False}
    assert entry["data"]["ib"]["trafficClass"] == {"value": 96, "appliedBy": "application"}
    rig.net.stop_pod_sandbox(pod)
    assert host_link(rig.netdevs[0]) == before


@pytest.mark.skipif(os.path.exists("/sys/module/ib_ipoib"), reason="ib_ipoib is loaded: the failure path needs a "
                                                                   "kernel without it")
def test_pkey_child_fails_cleanly_without_ib_ipoib_and_leaves_nothing_behind(rig):
    before = host_link(rig.netdevs[0])
    ref = rig.prepare("ib", "pod-2", **{k: v for k, v in SEED_IB_CONFIG.items() if k not in IB_API})
    saved: list[dict | None] = []
    real_save = rig.driver.save

    def save() -> None:  # what the checkpoint held at each step
        att = rig.driver.records[ref.uid].devices[0].attachment
        saved.append(dict(att.ipoib_child) if att and att.ipoib_child else None)
        real_save()

    rig.driver.save = save
    parent_up_at_create: list[bool] = []
    real_add = rig.net.netlink.add_ipoib_child

    def add_ipoib_child(parent, name, pkey):
        parent_up_at_create.append(_up(parent))
        return real_add(parent, name, pkey)

    rig.net.netlink.add_ipoib_child = add_ipoib_child
    pod = rig.pod("pod-2")
    with pytest.raises(Exception) as err:
        rig.net.run_pod_sandbox(pod)
    message = str(err.value)
    assert type(err.value).__name__ == "AttachError"
    # "Unknown device type": the kernel parsed our IFLA_LINKINFO and looked the kind "ipoib" up
    for part in (rig.device(0), rig.netdevs[0], "P_Key 0x8001", "Unknown device type", "is ib_ipoib loaded?",
                 "claim default/ib"):
        assert part in message, (part, message)
    # intent was recorded before the attempt: a crash there would have been rolled back from it
    intent = next(s for s in saved if s)
    assert intent["parent"] == rig.netdevs[0] and intent["pkey"] == 0x8001 and intent["ifindex"] is None
    # the parent was down: brought up for the child (recorded first), and put back down by the rollback
    assert intent["parent_up"] is False and parent_up_at_create == [True] and not _up(rig.netdevs[0])
    assert intent["name"].startswith(rig.temp_prefix)
    # rolled back: the parent as it was, nothing created anywhere, nothing recorded
    assert host_link(rig.netdevs[0]) == before
    assert rig.ours_in_root() == [] and set(links_in(pod)) == {"lo"}
    assert rig.driver.records[ref.uid].devices[0].attachment is None
    assert CheckpointStore(rig.driver.s.checkpoint_path).peek()[ref.uid].devices[0].attachment is None


def _stand_in_child(rig: IbRig, name: str) -> int:
    """A link playing a P_Key child that was created (a veth: this kernel has no ipoib)."""
    peer = unique("sdb")
    rig.extra_links += [name, peer]
    with IPRoute() as ipr:
        ipr.link("add", ifname=name, kind="veth", peer=peer)
        return ipr.link_lookup(ifname=name)[0]


def _crashed_attach(rig: IbRig, ref, pod: Pod, child: dict, if_name: str = "net1") -> None:
    dev = rig.driver.records[ref.uid].devices[0]
    dev.attachment = Attachment(pod=pod.uid, sandbox=pod.id, netns=pod.netns, pod_name="default/p", state=ATTACHING,
                                if_name=if_name, ipoib_child=child)
    rig.driver.save()


def test_a_crash_right_after_creating_the_child_is_undone_at_unprepare(rig):
    before = host_link(rig.netdevs[0])
    ref = rig.prepare("ib", "pod-3", pkey=0x8001)
    pod = rig.pod("pod-3")
    name = rig.net.netlink.temp_name()
    _stand_in_child(rig, name)  # created; serve died before it recorded the ifindex
    _crashed_attach(rig, ref, pod, {"parent": rig.netdevs[0], "pkey": 0x8001, "name": name, "ifindex": None})
    assert rig.driver.unprepare([ref]) == {ref.uid: None}
    assert rig.ours_in_root() == [] and host_link(rig.netdevs[0]) == before


def test_a_crash_after_moving_the_child_is_undone_in_the_pod(rig):
    ref = rig.prepare("ib", "pod-4", pkey=0x8001)
    pod = rig.pod("pod-4")
    name = rig.net.netlink.temp_name()
    index = _stand_in_child(rig, name)
    with IPRoute() as ipr:  # moved into the pod and renamed, then serve died
        ipr.link("set", index=index, net_ns_fd=pod.netns, ifname="net1")
    _crashed_attach(rig, ref, pod, {"parent": rig.netdevs[0], "pkey": 0x8001, "name": name, "ifindex": index})
    assert "net1" in links_in(pod)
    rig.net.stop_pod_sandbox(pod)
    assert set(links_in(pod)) == {"lo"} and rig.driver.records[ref.uid].devices[0].attachment is None


def test_the_pods_own_link_of_that_name_is_never_deleted(rig):
    ref = rig.prepare("ib", "pod-5", pkey=0x8001)
    pod = rig.pod("pod-5")
    own = _stand_in_child(rig, unique("sdb"))
    with IPRoute() as ipr:  # something else made "net1" in the pod; our child never got that far
        ipr.link("set", index=own, net_ns_fd=pod.netns, ifname="net1")
    _crashed_attach(rig, ref, pod, {"parent": rig.netdevs[0], "pkey": 0x8001, "name": rig.net.netlink.temp_name(),
                                    "ifindex": own + 100000})
    rig.net.stop_pod_sandbox(pod)
    assert "net1" in links_in(pod) and rig.driver.records[ref.uid].devices[0].attachment is None


def _failing_ipam_plugin(rig: IbRig) -> tuple[dict, str]:
    """A CNI IPAM plugin whose DEL fails until the file it names exists (a locked store, say)."""
    bin_dir = rig.tmp / "cni-bin"
    bin_dir.mkdir(exist_ok=True)
    fixed = rig.tmp / "ipam-fixed"
    plugin = bin_dir / "sdb-flaky"
    plugin.write_text(f"""#!/bin/sh
cat >/dev/null
[ -e {fixed} ] && exit 0
echo '{{"cniVersion":"1.0.0","code":11,"msg":"store is locked"}}'
exit 1
""")
    plugin.chmod(0o755)
    rig.net.s = dataclasses.replace(rig.net.s, cni_bin_dirs=(str(bin_dir),))
    return {"type": "sdb-flaky"}, str(fixed)


def test_an_undo_step_that_fails_keeps_the_record_and_the_others_are_done(rig):
    """Each undo step runs on its own: the child is deleted although the IPAM release fails, and the
    record keeps what remains (not dropped) until a retry succeeds."""
    ref = rig.prepare("ib", "pod-6", pkey=0x8001)
    pod = rig.pod("pod-6")
    ipam, fixed = _failing_ipam_plugin(rig)
    name = rig.net.netlink.temp_name()
    index = _stand_in_child(rig, name)
    with IPRoute() as ipr:
        ipr.link("set", index=index, net_ns_fd=pod.netns, ifname="net1")
    _crashed_attach(rig, ref, pod, {"parent": rig.netdevs[0], "pkey": 0x8001, "name": name, "ifindex": index})
    rig.driver.records[ref.uid].devices[0].attachment.ipam = ipam
    rig.driver.save()
    rig.net.stop_pod_sandbox(pod)  # logs, never fails the teardown
    assert set(links_in(pod)) == {"lo"}  # the child is deleted
    for att in (rig.driver.records[ref.uid].devices[0].attachment,
                CheckpointStore(rig.driver.s.checkpoint_path).peek()[ref.uid].devices[0].attachment):
        assert att is not None and att.ipam == ipam and att.ipoib_child is None and att.state == ATTACHING
    with pytest.raises(Exception, match="IPAM release"):  # the pod's next attach finishes the undo first
        rig.net.run_pod_sandbox(pod)
    error = rig.driver.unprepare([ref])[ref.uid]
    assert error and "IPAM release" in error and "store is locked" in error and "still recorded" in error
    open(fixed, "w").close()
    assert rig.driver.unprepare([ref]) == {ref.uid: None}


def test_exclusive_rdma_netns_leaves_the_ipoib_netdev_settings_alone(rig):
    """Moving the RDMA device recreates its IPoIB netdevs in the host netns: no child, no MTU."""
    before = host_link(rig.netdevs[0])
    rig.net.s = dataclasses.replace(rig.net.s, rdma_exclusive=True)
    ref = rig.prepare("ib", "pod-7", pkey=0x8001, mtu=2048)
    calls: list[str] = []
    rig.net.netlink.add_ipoib_child = lambda *a: calls.append("child")
    moved: list[str] = []
    rig.net._rdma_move = lambda rdma, netns, into: moved.append(rdma)  # no RDMA device on this kernel
    pod = rig.pod("pod-7")
    rig.net.run_pod_sandbox(pod)
    dev = rig.driver.records[ref.uid].devices[0]
    assert calls == [] and moved == [dev.rdma_device] and dev.attachment.ipoib_child is None
    assert links_in(pod)["net1"]["mtu"] == before["mtu"]  # not 2044
    entry = _status_entry(IB_DRIVER, dev)
    assert "not applied" in entry["data"]["ib"]["netdev"]["notApplied"]
    assert {c["type"]: c["reason"] for c in entry["conditions"]}["IPoIBMTUReady"] == "ExclusiveRdmaNetns"
    rig.net.stop_pod_sandbox(pod)
    assert host_link(rig.netdevs[0]) == before
