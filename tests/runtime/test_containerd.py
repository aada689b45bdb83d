"""Smoke tests of the real-runtime tier that need no NRI: containerd 2.1 runs CRI pods here, takes
the CDI specs `sriovdra serve` writes, and leaves nothing behind. The network-attach tests (NRI)
build on the same fixtures (tests/runtime/conftest.py)."""

from __future__ import annotations

import ipaddress
import os
import subprocess

import pytest

from sriovdra.model import SRIOV_DRIVER
from tests.support.claims import allocated_claim, ref, vf_config

pytestmark = pytest.mark.runtime


def test_pod_runs_and_is_torn_down_without_leftovers(containerd, pods):
    pod = pods.run("envpod")
    cid = pods.run_container(pod, ["sh", "-c", "env; exec sleep 3600"], env={"SRIOVDRA_TEST": "hello"})
    # the container's own output (CRI log file) and an exec see the env
    assert pods.sh(cid, "echo $SRIOVDRA_TEST") == "hello\n"
    for _ in range(50):
        if "SRIOVDRA_TEST=hello" in pods.cri.logs(cid):
            break
        subprocess.run(["sleep", "0.05"])
    assert "SRIOVDRA_TEST=hello" in pods.cri.logs(cid)
    # a pod network: its own netns file under containerd's state dir, eth0 from the private subnet
    netns = pods.cri.pod_netns(pod.id)
    assert netns and netns.startswith(containerd.netns_dir + "/") and os.path.exists(netns)
    [ip] = pods.cri.pod_ips(pod.id)
    assert ipaddress.ip_address(ip) in ipaddress.ip_network(containerd.subnet.cidr)
    assert f"inet {ip}/" in pods.sh(cid, "ip -o -4 addr show dev eth0")
    assert containerd.pod_routes() and containerd.ipam_leases() == [ip]

    containerd.note_ids()
    pods.down(pod)
    assert not os.path.exists(netns)
    assert containerd.leftovers() == []
    assert pods.cri.list_containers() == []


def test_pod_survives_a_runtime_restart(containerd, pods):
    pod = pods.run("restart")
    cid = pods.run_container(pod)
    seconds = containerd.restart()
    assert seconds < 10
    assert [p.id for p in pods.cri.list_pods()] == [pod.id]
    assert pods.sh(cid, "echo alive") == "alive\n"


def _prepare_and_check_env(ctd, pods, vf_host, serve) -> None:
    node = serve(vf_host, "--netdev-attach", "none", runtime=ctd)
    plugin = node.plugins()[SRIOV_DRIVER]
    vf = vf_host.vfs[0]
    claim = node.api.add_claim(allocated_claim("net", [vf["device"]], configs=[vf_config(ifName="net1")]))
    result = node.kubelet.prepare(plugin, [ref(claim)]).claims[claim["metadata"]["uid"]]
    assert not result.error, result.error
    [dev] = result.devices
    cdi_ids = list(dev.cdi_device_ids)
    assert cdi_ids and os.listdir(ctd.cdi_dir), "serve wrote no CDI spec into containerd's spec dir"

    pod = pods.run("cdipod")
    cid = pods.run_container(pod, cdi_devices=cdi_ids)
    env = pods.sh(cid, "env")
    token = vf["pci"].replace(":", "_").replace(".", "_")
    assert f"SRIOVNETWORK_VF_DEVICE_{token}={vf['pci']}" in env
    assert f"SRIOVNETWORK_{token}_NETDEV=net1" in env
    pods.down(pod)

    node.kubelet.unprepare(plugin, [ref(claim)])
    assert os.listdir(ctd.cdi_dir) == []


def test_cdi_spec_from_serve_is_applied_by_containerd(containerd, pods, vf_host, serve):
    """The harness plays kubelet: NodePrepareResources through serve's DRA socket -> CDI device IDs
    -> CreateContainer(CDI_devices=...). containerd 2.1's CDI 1.0.1 library must accept the spec
    serve wrote (cdiVersion <= 1.0.0, no unknown fields) or CreateContainer fails. The netdev
    itself is not moved here (--netdev-attach none: no NRI plugin yet); only the CDI edits count."""
    _prepare_and_check_env(containerd, pods, vf_host, serve)


def test_cdi_spec_from_serve_is_applied_by_containerd_17(containerd17, pods17, vf_host, serve):
    """The same on the optional second target, containerd 1.7 (CDI library 0.8.0: cdiVersion <= 0.8.0)."""
    _prepare_and_check_env(containerd17, pods17, vf_host, serve)


def test_host_network_pod_sees_the_vf_veths(containerd, pods, vf_host):
    pod = pods.run("hostnet", host_network=True)
    assert pods.cri.pod_netns(pod.id) is None
    assert pods.cri.pod_ips(pod.id) == [] or all(
        ipaddress.ip_address(a) not in ipaddress.ip_network(containerd.subnet.cidr) for a in pods.cri.pod_ips(pod.id))
    cid = pods.run_container(pod)
    links = pods.sh(cid, "ip -o link")
    assert all(f": {name}@" in links for name in vf_host.netdevs()), links


def test_cleanup_kills_tasks_leaked_past_cri(runtime_stack, tmp_path):
    """containerd 2.1.9 leaks the pause task of a pod an NRI plugin refuses: CRI no longer lists
    it but `ctr tasks ls` does (shared/notes/real-runtime.md §6.4). A task made with `ctr run`
    is invisible to CRI in the same way: cleanup must find, kill and delete it, and leave no shim,
    mount, cgroup or /run/containerd dir behind. A containerd of its own: the tier's stays clean."""
    import tempfile

    from tests.support.containerd import Containerd

    base = tempfile.mkdtemp(prefix="sdrctd-", dir="/tmp")
    ctd = Containerd(base, cdi_dir=str(tmp_path / "cdi"), cache=runtime_stack)
    try:
        ctd.write_config()
        ctd.start()
        p = ctd.ctr("run", "-d", "--runc-binary", "/usr/sbin/runc", "docker.io/library/bbox:1", "leaked",
                    "sleep", "3600")
        assert p.returncode == 0, p.stderr
        assert ctd.cri.list_pods() == [] and ctd.task_ids() == ["leaked"] and ctd.shim_pids()
        assert os.path.exists(ctd.nri_socket)
        notes, leftovers = ctd.cleanup()
        assert any("leaked" in n for n in notes), notes
        assert leftovers == []
        assert not os.path.exists(base)
    finally:
        ctd.cleanup()
