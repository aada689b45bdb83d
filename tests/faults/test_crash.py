"""serve killed (SIGKILL) at every fault point of sriovdra.faults.POINTS, restarted, and the kubelet's and the
runtime's replays played: the node must converge. One node per area (claims and pod network, provisioning,
slices), shared by its cases, each case leaving it as it found it."""

from __future__ import annotations

import os
import secrets
import subprocess
import uuid

import pytest

from sriovdra import fakehost, faults
from sriovdra.checkpoint import ATTACHED
from sriovdra.fakehost import FakeKernel
from sriovdra.host import pci, sriov
from sriovdra.model import SRIOV_DRIVER
from tests.conftest import eth_pf
from tests.faults.harness import CrashNode, pod_links, root_link
from tests.netns.conftest import PodNetns
from tests.support.claims import allocated_claim, vf_config
from tests.support.node import NodeFactory
from tests.support.nri_runtime import FakeRuntime, pod_sandbox
from tests.support.waiting import wait

pytestmark = pytest.mark.faults

AREAS = {"claims": ("prepare", "unprepare", "attach", "detach"), "provision": ("provision",), "slices": ("slices",)}


def points(area: str) -> list[str]:
    return [name for name, _ in faults.POINTS if name.split(".")[0] in AREAS[area]]


def test_every_point_has_an_area():
    """A point of a new area must get a scenario here, or the harness would silently skip it."""
    covered = {n for area in AREAS for n in points(area)}
    assert covered == faults.NAMES, f"fault points without a crash scenario: {sorted(faults.NAMES - covered)}"


def _unavailable() -> str | None:
    if os.geteuid() != 0:
        return "needs root to create veth pairs and network namespaces (pod network fault points)"
    if subprocess.run(["ip", "link", "show"], capture_output=True).returncode:
        return "no iproute2 `ip` command"
    return None


def _pf_numvfs(paths, pf: str) -> int:
    return sriov.read_state(paths, pf).numvfs


def _set_numvfs(paths, pf: str, count: int) -> None:
    """What an admin (or the kernel) does to the node behind serve's back."""
    kernel = FakeKernel(paths.sysfs, paths.dev)
    path = os.path.join(sriov.pf_dir(paths, pf), "sriov_numvfs")
    kernel.write(path, "0")
    if count:
        kernel.write(path, str(count))


# --- claims and the pod network -------------------------------------------------------------

PF = "0000:3b:00.0"
VFS = [f"0000:3b:00.{2 + i}" for i in range(4)]
DEVICES = [f"vf-0000-3b-00-{2 + i}" for i in range(4)]
VFIO, NETDEV, SURVIVOR = 0, 1, 3  # which VF each kind of claim gets
MAC = "02:5d:fa:17:00:01"


class ClaimsRig:
    """serve with NRI on a fake runtime; VF netdevs are real veths; a survivor claim stays prepared
    through every case (nothing that happens to other claims may lose it)."""

    def __init__(self, tmp, factory: NodeFactory) -> None:
        self.prefix = f"sdf{secrets.token_hex(2)}v"
        host = fakehost.build({"host": {"iommu": True, "modules": ["mlx5_core", "vfio_pci"]},
                               "pfs": [eth_pf(rdma=False, vfs={"total": 8, "count": 4, "offset": 2,
                                                               "netdevPrefix": self.prefix})]}, str(tmp / "host"))
        self.netdevs = [f"{self.prefix}{i}" for i in range(4)]
        for name in self.netdevs:
            subprocess.run(["ip", "link", "add", name, "type", "veth", "peer", "name", f"{name}p"], check=True)
        self.links = {name: root_link(name) for name in self.netdevs}
        self.runtime = FakeRuntime(os.path.join(factory.short, "nri.sock")).start()
        self.tmp = tmp
        self.cn = CrashNode(factory.make(host.root, host.sysfs, host.dev),
                            args=("--netdev-attach", "nri", "--nri-socket", self.runtime.socket_path))
        self.drivers = {a: pci.current_driver(self.cn.paths, a) for a in VFS}
        self.cn.start()
        self.survivor = self.cn.node.api.add_claim(allocated_claim("survivor", [DEVICES[SURVIVOR]]))
        assert self.cn.prepare(self.survivor).error == ""

    @property
    def api(self):
        return self.cn.node.api

    def uid(self, claim: dict) -> str:
        return claim["metadata"]["uid"]

    def converged(self, extra: dict[str, list[str]] | None = None, bound: dict[int, str] | None = None) -> None:
        prepared = {self.uid(self.survivor): [DEVICES[SURVIVOR]], **(extra or {})}
        drivers = {**self.drivers, **{VFS[i]: d for i, d in (bound or {}).items()}}
        self.cn.converged(prepared, drivers)

    def netdevs_home(self, netns: str | None = None) -> None:
        """Every VF netdev in the root netns with its original name, MTU and MAC; the pod keeps only lo."""
        for name, before in self.links.items():
            assert root_link(name) == before, f"netdev {name}: {root_link(name)}, was {before}"
        if netns:
            assert pod_links(netns) == ["lo"], f"left in the pod: {pod_links(netns)}"

    def close(self) -> None:
        self.runtime.stop()
        for name in self.netdevs:
            subprocess.run(["ip", "link", "del", name], capture_output=True)


@pytest.fixture(scope="module")
def claims_rig(tmp_path_factory):
    reason = _unavailable()
    if reason:
        pytest.skip(reason)
    tmp = tmp_path_factory.mktemp("claims")
    factory = NodeFactory(tmp)
    rig = None
    try:
        rig = ClaimsRig(tmp, factory)
        yield rig
    finally:
        factory.close()
        if rig is not None:
            rig.close()


def _runtime_event(rt: FakeRuntime, event: str, sandbox) -> None:
    """A pod event as containerd sends it. A plugin that dies during the request is a fatal plugin error
    for containerd's NRI adaptation (isFatalError: ttrpc closed): it drops the plugin and goes on, so
    the sandbox runs (fail-open) or is gone as asked."""
    try:
        getattr(rt, event)(sandbox)
    except ConnectionError:
        if event == "run_pod_sandbox":
            rt.pods[sandbox.id] = sandbox
        elif event == "remove_pod_sandbox":
            rt.pods.pop(sandbox.id, None)


def _prepare_case(rig: ClaimsRig, point: str) -> list[str]:
    cn, notes = rig.cn, []
    claim = rig.api.add_claim(allocated_claim(f"c-{secrets.token_hex(3)}", [DEVICES[VFIO]],
                                              configs=[vf_config(driver="vfio-pci")]))
    uid = rig.uid(claim)
    cn.prepare_dies(claim, point)
    cn.start()
    if point == "prepare.after-commit":  # committed before the kill: kept as prepared
        rig.converged({uid: [DEVICES[VFIO]]}, {VFIO: "vfio-pci"})
        notes.append("restart kept it prepared")
    else:
        rig.converged()
        notes.append("restart rolled it back (no spec, driver restored)")
    entry = cn.prepare(claim)  # the kubelet retries
    assert entry.error == ""
    assert [(d.device_name, list(d.cdi_device_ids)) for d in entry.devices] == \
           [(DEVICES[VFIO], [f"{SRIOV_DRIVER}/vf={DEVICES[VFIO]}-{uid}"])]
    rig.converged({uid: [DEVICES[VFIO]]}, {VFIO: "vfio-pci"})
    notes.append("retried prepare: prepared once, one CDI spec, vfio-pci bound")
    assert cn.unprepare(claim) == ""
    rig.converged()
    notes.append("unprepare: spec gone, driver restored")
    return notes


def _unprepare_case(rig: ClaimsRig, point: str) -> list[str]:
    cn = rig.cn
    claim = rig.api.add_claim(allocated_claim(f"c-{secrets.token_hex(3)}", [DEVICES[VFIO]],
                                              configs=[vf_config(driver="vfio-pci")]))
    assert cn.prepare(claim).error == ""
    cn.unprepare_dies(claim, point)
    cn.start()
    rig.converged()
    assert cn.unprepare(claim) == ""  # the kubelet retries: an unknown claim is done
    rig.converged()
    return ["restart finished the unprepare (spec gone, driver restored)", "retried unprepare: ok"]


def _pod_case(rig: ClaimsRig, point: str) -> list[str]:
    cn, rt, notes = rig.cn, rig.runtime, []
    pod_uid = str(uuid.uuid4())
    claim = rig.api.add_claim(allocated_claim(f"n-{secrets.token_hex(3)}", [DEVICES[NETDEV]], pod_uid=pod_uid,
                                              configs=[vf_config(ifName="net1", mtu=1400, mac=MAC)]))
    uid = rig.uid(claim)
    assert cn.prepare(claim).error == ""
    ns = PodNetns(str(rig.tmp / f"pod-{secrets.token_hex(3)}"))
    try:
        sandbox = pod_sandbox("pod-n", uid=pod_uid, netns=ns.path)

        def attached() -> bool:
            rec = cn.records().get(uid)
            att = rec.devices[0].attachment if rec else None
            return att is not None and att.state == ATTACHED

        if point.startswith("attach."):
            _runtime_event(rt, "run_pod_sandbox", sandbox)
            cn.killed(point)
            cn.start()
            wait(attached, timeout=20, what="the attach redone after the restart")
            notes.append("Synchronize after the restart redid the attach")
        else:
            _runtime_event(rt, "run_pod_sandbox", sandbox)
            wait(attached, what="the attach")
            _runtime_event(rt, "stop_pod_sandbox", sandbox)
            cn.killed(point)
            cn.start()
            notes.append("netdev home before the checkpoint said so")
        if point.startswith("attach."):
            inside = root_link("net1", ns.path)
            assert inside is not None and (inside.mtu, inside.mac) == (1400, MAC), f"in the pod: {inside}"
            assert root_link(rig.netdevs[NETDEV]) is None
            notes.append("net1 in the pod with MTU 1400 and the MAC asked")
            _runtime_event(rt, "stop_pod_sandbox", sandbox)
        _runtime_event(rt, "remove_pod_sandbox", sandbox)
        rig.netdevs_home(ns.path)
        assert cn.unprepare(claim) == ""
        rig.netdevs_home(ns.path)
        rig.converged()
        notes.append("after unprepare: every netdev home with its name, MTU and MAC")
    finally:
        ns.delete()
    return notes


CASES = {"prepare": _prepare_case, "unprepare": _unprepare_case, "attach": _pod_case, "detach": _pod_case}


@pytest.mark.parametrize("point", points("claims"))
def test_claims_converge_after_a_kill(claims_rig, point, record_property):
    record_property("fault_case", point)
    claims_rig.cn.start(fault=point)
    notes = CASES[point.split(".")[0]](claims_rig, point)  # each check reads the checkpoint, which must verify
    claims_rig.cn.one_slice_set()
    record_property("fault_outcome", "; ".join(["killed", *notes, "one slice set"]))


def test_survivor_unprepares_last(claims_rig):
    """The claim prepared before every case is intact and unprepares cleanly."""
    claims_rig.converged()
    claims_rig.cn.checkpoint_show()
    assert claims_rig.cn.unprepare(claims_rig.survivor) == ""
    claims_rig.cn.converged({}, claims_rig.drivers)
    claims_rig.netdevs_home()
    claims_rig.cn.checkpoint_show()


# --- provisioning ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def plain_factory(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("node")
    factory = NodeFactory(tmp)
    yield tmp, factory
    factory.close()


@pytest.fixture(scope="module")
def provision_node(plain_factory):
    tmp, factory = plain_factory
    host = fakehost.build({"pfs": [eth_pf(vfs={"total": 8, "count": 2, "offset": 2})]},
                          str(tmp / "provision-host"))
    cn = CrashNode(factory.make(host.root, host.sysfs, host.dev))
    yield cn
    cn.stop()


@pytest.mark.parametrize("point", points("provision"))
def test_provisioning_converges_after_a_kill(provision_node, point, record_property):
    record_property("fault_case", point)
    cn = provision_node
    wanted = _pf_numvfs(cn.paths, PF) + 2
    cn.start("--num-vfs", str(wanted), fault=point)
    cn.killed(point)
    left = _pf_numvfs(cn.paths, PF)
    cn.start("--num-vfs", str(wanted))  # the pod restarts with the same flags
    cn.plugin()
    assert _pf_numvfs(cn.paths, PF) == wanted
    cn.one_slice_set()
    record_property("fault_outcome", f"killed with sriov_numvfs={left}; restart provisioned {wanted} VFs; "
                                     "one slice set")


# --- slice publishing -----------------------------------------------------------------------

# point -> (VFs published before, VFs after the change, the kubelet deleted the slices meanwhile)
SLICE_CASES = {"slices.after-delete": (130, 100, False),  # 2 slices -> 1: one obsolete
               "slices.after-update": (100, 130, False),  # 1 -> 2: one changed, one missing
               "slices.after-create": (130, 200, True)}  # none left -> 2 missing


@pytest.fixture(scope="module")
def slices_node(plain_factory):
    tmp, factory = plain_factory
    host = fakehost.build({"pfs": [eth_pf(rdma=False, vfs={"total": 256, "count": 130, "offset": 2})]},
                          str(tmp / "slices-host"))
    cn = CrashNode(factory.make(host.root, host.sysfs, host.dev))
    cn.start()
    yield cn
    cn.stop()


@pytest.mark.parametrize("point", points("slices"))
def test_slices_converge_after_a_kill(slices_node, point, record_property):
    record_property("fault_case", point)
    assert point in SLICE_CASES, f"no slice scenario for {point}"
    cn = slices_node
    before, after, wiped = SLICE_CASES[point]
    if _pf_numvfs(cn.paths, PF) != before or cn.node.proc is None:  # the case's starting point
        cn.start()
        _set_numvfs(cn.paths, PF, before)
        cn.one_slice_set()
    cn.stop()
    _set_numvfs(cn.paths, PF, after)
    if wiped:
        cn.node.api.delete_all_slices()
    cn.start(fault=point)
    cn.killed(point)
    left = len(cn.node.api.slices(SRIOV_DRIVER))
    cn.start()
    cn.one_slice_set()
    record_property("fault_outcome", f"{before} -> {after} VFs{' (slices deleted)' if wiped else ''}: killed with "
                                     f"{left} slice(s); restart: one set of {after} devices")
