"""Network attach end to end on a real containerd 2.1: `sriovdra serve` with its NRI plugin on the
runtime's NRI socket, VF netdevs that are real veths, the harness playing the kubelet:
NodePrepareResources -> CRI RunPodSandbox / CreateContainer with the CDI device IDs -> checks
inside the pod -> teardown -> the device is back on the host as it was."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import uuid

import grpc
import pytest

from sriovdra.model import SRIOV_DRIVER
from tests.support.waiting import wait
from tests.support.claims import allocated_claim, ref, vf_config

pytestmark = pytest.mark.runtime


def host_link(name: str) -> dict | None:
    """name -> {mtu, mac, up} in the root netns, or None."""
    p = subprocess.run(["ip", "-j", "link", "show", "dev", name], capture_output=True, text=True)
    if p.returncode:
        return None
    [link] = json.loads(p.stdout)
    return {"mtu": link["mtu"], "mac": link["address"], "up": "UP" in link["flags"]}


class Harness:
    """One serve with NRI on the tier's containerd, and the kubelet's side of a pod's life."""

    def __init__(self, containerd, pods, serve, host, tmp_path) -> None:
        self.ctd, self.pods, self.host = containerd, pods, host
        self.args = ("--netdev-attach", "nri", "--nri-socket", containerd.nri_socket,
                     "--cni-bin-dir", containerd.cni_bin)
        self.node = serve(host, *self.args)
        self.tmp = tmp_path
        self.wait_nri()

    def wait_nri(self, times: int = 1) -> None:
        """Until serve's NRI plugin has registered with containerd `times` times (per log)."""
        wait(lambda: self.log().count("NRI plugin 50-sriovdra registered with") >= times, what="NRI registration",
             timeout=30)

    def log(self) -> str:
        with open(self.node.log_path, errors="replace") as f:
            return f.read()

    def plugin(self):
        return self.node.plugins()[SRIOV_DRIVER]

    def prepare(self, name: str, vfs: list[int], pod_uid: str, **config) -> dict:
        claim = allocated_claim(name, [self.host.vfs[i]["device"] for i in vfs], pod_uid=pod_uid,
                                configs=[vf_config(**config)] if config else None)
        self.node.api.add_claim(claim)
        entry = wait(lambda: self._prepare_once(claim), what=f"prepare of {name}", timeout=30)
        claim["cdi"] = [i for d in entry.devices for i in d.cdi_device_ids]
        return claim

    def _prepare_once(self, claim):
        entry = self.node.kubelet.prepare(self.plugin(), [ref(claim)]).claims[claim["metadata"]["uid"]]
        if "not connected" in entry.error:
            return None  # NRI (re)connecting after a start: the kubelet retries the same way
        assert entry.error == "", entry.error
        return entry

    def unprepare(self, claim) -> None:
        resp = self.node.kubelet.unprepare(self.plugin(), [ref(claim)])
        assert resp.claims[claim["metadata"]["uid"]].error == ""

    def pod(self, name: str, uid: str, claims: list[dict]):
        pod = self.pods.run(name, uid=uid)
        cid = self.pods.run_container(pod, cdi_devices=[i for c in claims for i in c["cdi"]])
        return pod, cid

    def links(self, cid: str) -> dict[str, dict]:
        text = self.pods.sh(cid, "ip -o link; echo ---; ip -o addr")
        links_part, addr_part = text.split("---\n")
        links = {}
        for line in links_part.splitlines():
            name = line.split(": ")[1].split("@")[0]
            mtu = int(line.split(" mtu ")[1].split()[0])
            mac = line.split("link/ether ")[1].split()[0] if "link/ether " in line else None
            links[name] = {"mtu": mtu, "mac": mac, "up": ",UP" in line or "<UP" in line, "ips": []}
        for line in addr_part.splitlines():
            parts = line.split()
            if parts[2] in ("inet", "inet6") and parts[1] in links and "scope global" in line:
                links[parts[1]]["ips"].append(parts[3])
        return links


@pytest.fixture
def rig(containerd, pods, serve, make_vf_host, tmp_path):
    return Harness(containerd, pods, serve, make_vf_host(3), tmp_path)


def test_one_vf_moves_into_the_pod_and_back(rig):
    vf = rig.host.vfs[0]
    before = host_link(vf["netdev"])
    uid = str(uuid.uuid4())
    claim = rig.prepare("one", [0], uid)
    pod, cid = rig.pod("one", uid, [claim])
    links = rig.links(cid)
    assert "net1" in links and links["net1"]["mac"] == vf["mac"] and links["net1"]["up"]
    assert host_link(vf["netdev"]) is None
    token = vf["pci"].replace(":", "_").replace(".", "_")
    assert f"SRIOVNETWORK_VF_DEVICE_{token}={vf['pci']}" in rig.pods.sh(cid, "env")
    status = wait(lambda: [d for d in rig.node.api.claim("default", "one")["status"].get("devices", [])
                           if d.get("networkData")], what="networkData")
    assert status[0]["networkData"]["interfaceName"] == "net1"
    assert status[0]["networkData"]["hardwareAddress"] == vf["mac"]
    assert {c["type"] for c in status[0]["conditions"]} >= {"Ready", "NetworkReady"}
    rig.pods.down(pod)
    assert host_link(vf["netdev"]) == before
    rig.unprepare(claim)
    assert os.listdir(rig.ctd.cdi_dir) == []


def test_config_mtu_mac_ifname_ips_and_routes(rig):
    uid = str(uuid.uuid4())
    claim = rig.prepare("cfg", [0], uid, ifName="data0", mtu=1400, mac="02:11:22:33:44:55",
                        ips=["192.0.2.10/24", "2001:db8::10/64"],
                        routes=[{"dst": "198.51.100.0/24", "gw": "192.0.2.1"}])
    pod, cid = rig.pod("cfg", uid, [claim])
    data0 = rig.links(cid)["data0"]
    assert (data0["mtu"], data0["mac"]) == (1400, "02:11:22:33:44:55")
    assert set(data0["ips"]) == {"192.0.2.10/24", "2001:db8::10/64"}
    assert "198.51.100.0/24 via 192.0.2.1 dev data0" in rig.pods.sh(cid, "ip route")
    assert rig.pods.sh(cid, "echo $SRIOVNETWORK_0000_3b_00_2_NETDEV") == "data0\n"
    before_mtu = rig.host.vfs[0]
    rig.pods.down(pod)
    home = host_link(before_mtu["netdev"])
    assert home["mtu"] == 1500 and home["mac"] == before_mtu["mac"]
    rig.unprepare(claim)


def test_two_claims_in_one_pod_and_two_pods(rig):
    uid1, uid2 = str(uuid.uuid4()), str(uuid.uuid4())
    a = rig.prepare("a", [0], uid1, ifName="fast")
    b = rig.prepare("b", [1], uid1)
    c = rig.prepare("c", [2], uid2)
    pod1, cid1 = rig.pod("p1", uid1, [a, b])
    pod2, cid2 = rig.pod("p2", uid2, [c])
    assert {"fast", "net1"} <= set(rig.links(cid1)) and "net1" in rig.links(cid2)
    assert all(host_link(v["netdev"]) is None for v in rig.host.vfs)
    rig.pods.down(pod1)
    rig.pods.down(pod2)
    assert all(host_link(v["netdev"]) for v in rig.host.vfs)
    for claim in (a, b, c):
        rig.unprepare(claim)


def test_ipam_host_local_through_the_cni_protocol(rig, tmp_path):
    uid = str(uuid.uuid4())
    ipam = {"type": "host-local", "dataDir": str(tmp_path / "ipam"),
            "ranges": [[{"subnet": "10.199.0.0/24", "rangeStart": "10.199.0.20", "gateway": "10.199.0.1"}]]}
    claim = rig.prepare("ipam", [0], uid, ipam=ipam)
    pod, cid = rig.pod("ipam", uid, [claim])
    assert rig.links(cid)["net1"]["ips"] == ["10.199.0.20/24"]
    status = wait(lambda: [d for d in rig.node.api.claim("default", "ipam")["status"].get("devices", [])
                           if d.get("networkData")], what="networkData")
    assert status[0]["networkData"]["ips"] == ["10.199.0.20/24"]
    rig.pods.down(pod)
    assert not [f for f in os.listdir(tmp_path / "ipam" / "sriovdra") if f.startswith("10.")]
    rig.unprepare(claim)


def test_plugin_restart_with_a_running_pod(rig):
    vf = rig.host.vfs[0]
    before = host_link(vf["netdev"])
    uid = str(uuid.uuid4())
    claim = rig.prepare("r", [0], uid, ifName="keep0")
    pod, cid = rig.pod("r", uid, [claim])
    rig.node.stop(signal.SIGKILL)
    rig.node.start(*rig.args)
    rig.plugin()
    rig.wait_nri(2)
    assert "keep0" in rig.links(cid)  # untouched by the restart
    rig.pods.down(pod)  # the restarted plugin gets StopPodSandbox and brings it home
    assert host_link(vf["netdev"]) == before
    rig.unprepare(claim)


def test_driver_killed_between_prepare_and_pod_start(rig):
    uid = str(uuid.uuid4())
    claim = rig.prepare("late", [0], uid, ifName="late0")
    rig.node.stop(signal.SIGKILL)
    pod = rig.pods.run("late", uid=uid)  # no plugin: the runtime starts the pod without the device
    rig.node.start(*rig.args)
    rig.plugin()
    rig.wait_nri(2)
    cid = rig.pods.run_container(pod, cdi_devices=claim["cdi"])
    wait(lambda: "late0" in rig.links(cid), what="late attach at Synchronize", timeout=30)
    rig.pods.down(pod)
    assert host_link(rig.host.vfs[0]["netdev"]) is not None
    rig.unprepare(claim)


def test_runtime_restart_reconnects(rig):
    uid = str(uuid.uuid4())
    claim = rig.prepare("before", [0], uid)
    pod, cid = rig.pod("before", uid, [claim])
    rig.ctd.restart()
    rig.wait_nri(2)
    uid2 = str(uuid.uuid4())
    claim2 = rig.prepare("after", [1], uid2)  # retried while NRI reconnects, as the kubelet does
    pod2, cid2 = rig.pod("after", uid2, [claim2])
    assert "net1" in rig.links(cid2) and "net1" in rig.links(cid)
    rig.pods.down(pod2)
    assert host_link(rig.host.vfs[1]["netdev"]) is not None
    # containerd 2.1.9 sends no NRI events for pods that predate its restart: unprepare (which the
    # kubelet does after the pod is gone) brings the device home; a veth dies with its netns.
    rig.pods.down(pod)
    rig.unprepare(claim)
    rig.unprepare(claim2)
    assert "unpreparing" not in json.dumps(json.load(open(os.path.join(
        rig.node.state_dir, f"{SRIOV_DRIVER}.checkpoint.json"))))


def test_a_failing_attach_fails_the_pod_cleanly(rig):
    vf = rig.host.vfs[0]
    uid = str(uuid.uuid4())
    claim = rig.prepare("fail", [0], uid)
    subprocess.run(["ip", "link", "set", vf["netdev"], "name", "sdrgone"], check=True)  # the VF netdev vanished
    try:
        with pytest.raises(grpc.RpcError) as err:
            rig.pods.run("fail", uid=uid)
        assert "claim default/fail" in err.value.details() and vf["device"] in err.value.details()
    finally:
        subprocess.run(["ip", "link", "set", "sdrgone", "name", vf["netdev"]], check=True)
    rig.ctd.remove_pods()  # containerd 2.1.9 leaks the refused sandbox's pause task (real-runtime.md §6.4)
    pod, cid = rig.pod("fail", uid, [claim])  # the kubelet retries: now it works
    assert "net1" in rig.links(cid)
    rig.pods.down(pod)
    rig.unprepare(claim)
