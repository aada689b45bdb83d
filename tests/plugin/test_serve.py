"""serve end to end: registration, prepare/unprepare over gRPC, CDI specs, checkpoints, slices, status."""

from __future__ import annotations

import json
import os
import signal

import grpc
import pytest

from sriovdra.model import IB_DRIVER, SRIOV_DRIVER
from tests.conftest import eth_pf, ib_pf
from tests.support.waiting import wait
from tests.support.claims import SEED_IB_CONFIG, allocated_claim, ref, vf_config

HOST = {"host": {"modules": ["mlx5_core", "mlx5_ib", "ib_uverbs", "rdma_ucm", "vfio_pci"]},
        "pfs": [eth_pf(vfs={"total": 8, "count": 4, "offset": 2}), ib_pf()]}
VF = ["vf-0000-3b-00-2", "vf-0000-3b-00-3", "vf-0000-3b-00-4", "vf-0000-3b-00-5"]


@pytest.fixture
def node(make_node):
    n = make_node(HOST)
    n.start(sockets=2)
    yield n
    n.stop()


def test_registration_answers_like_a_dra_plugin(node):
    plugins = node.plugins()
    assert set(plugins) == {SRIOV_DRIVER, IB_DRIVER}
    p = plugins[SRIOV_DRIVER]
    assert p.versions == ["v1.DRAPlugin", "v1beta1.DRAPlugin", "v1.DRAResourceHealth", "v1alpha1.DRAResourceHealth"]
    assert p.endpoint == os.path.join(node.kubelet_root, "plugins", SRIOV_DRIVER, "dra.sock")
    assert p.registration_socket == os.path.join(node.kubelet_root, "plugins_registry", f"{SRIOV_DRIVER}-reg.sock")


def test_prepare_returns_devices_and_writes_the_cdi_spec(node):
    claim = node.api.add_claim(allocated_claim("c1", VF[:1], configs=[vf_config(ifName="net1", mtu=9000)]))
    plugin = node.plugins()[SRIOV_DRIVER]
    resp = node.kubelet.prepare(plugin, [ref(claim)])
    uid = claim["metadata"]["uid"]
    assert list(resp.claims) == [uid]
    entry = resp.claims[uid]
    assert entry.error == ""
    [dev] = entry.devices
    assert (list(dev.request_names), dev.pool_name, dev.device_name) == (["vf"], "node1", VF[0])
    assert list(dev.cdi_device_ids) == [f"{SRIOV_DRIVER}/vf={VF[0]}-{uid}"]
    spec_path = os.path.join(node.cdi_dir, f"{SRIOV_DRIVER}-vf_{uid}.json")
    spec = json.load(open(spec_path))
    assert spec["kind"] == f"{SRIOV_DRIVER}/vf" and spec["devices"][0]["name"] == f"{VF[0]}-{uid}"
    env = spec["devices"][0]["containerEdits"]["env"]
    assert "SRIOVNETWORK_VF_DEVICE_0000_3b_00_2=0000:3b:00.2" in env
    assert "SRIOVNETWORK_0000_3b_00_2_NETDEV=net1" in env and "SRIOVNETWORK_0000_3b_00_2_MTU=9000" in env
    # status.devices written asynchronously, through the status subresource
    status = wait(lambda: node.api.claim("default", "c1")["status"].get("devices"), what="claim status")
    assert status[0]["driver"] == SRIOV_DRIVER and status[0]["device"] == VF[0]
    assert status[0]["conditions"][0]["type"] == "Ready" and status[0]["conditions"][0]["status"] == "True"
    assert status[0]["data"] == {"config": {"ifName": "net1", "mtu": 9000}}
    # unprepare removes the spec and the checkpoint entry
    unprep = node.kubelet.unprepare(plugin, [ref(claim)])
    assert unprep.claims[uid].error == ""
    assert not os.path.exists(spec_path)
    assert node.api.store.rejected == []


def _cdi_specs(node):
    return sorted(os.listdir(node.cdi_dir)) if os.path.isdir(node.cdi_dir) else []


def test_slices_of_both_drivers_are_published_valid_and_owned_by_the_node(node):
    slices = wait(lambda: len(node.api.slices()) == 2 and node.api.slices(), what="slices")
    by_driver = {s["spec"]["driver"]: s for s in slices}
    sriov = by_driver[SRIOV_DRIVER]
    assert sriov["spec"]["nodeName"] == "node1" and sriov["spec"]["pool"] == {
        "name": "node1", "generation": 0, "resourceSliceCount": 1}
    assert [d["name"] for d in sriov["spec"]["devices"]] == VF
    assert sriov["metadata"]["ownerReferences"] == [{"apiVersion": "v1", "kind": "Node", "name": "node1",
                                                     "uid": node.api.store.nodes["node1"]["metadata"]["uid"],
                                                     "controller": True}]
    assert sriov["metadata"]["name"].startswith(f"00000-{SRIOV_DRIVER}-node1-")
    assert {d["name"] for d in by_driver[IB_DRIVER]["spec"]["devices"]} == {
        "ib-0000-5e-00-0-p1", "ib-0000-5e-00-1-p1", "ib-0000-5e-00-2-p1"}
    assert node.api.store.rejected == []


def test_slices_come_back_after_the_kubelet_wipes_them(node):
    wait(lambda: len(node.api.slices()) == 2, what="slices")
    node.api.delete_all_slices()
    slices = wait(lambda: len(node.api.slices()) == 2 and node.api.slices(), timeout=5, what="republished slices")
    assert all(s["spec"]["pool"]["generation"] == 0 for s in slices)


def test_inventory_changes_reach_slices_and_health_without_restart(node):
    plugin = node.plugins()[IB_DRIVER]
    wait(lambda: len(node.api.slices(IB_DRIVER)) == 1, what="IB slice")
    vf = os.path.join(node.sysfs, "bus/pci/devices/0000:5e:00.1/infiniband")
    port = os.path.join(vf, os.listdir(vf)[0], "ports/1")
    with open(os.path.join(port, "state"), "w") as f:
        f.write("1: DOWN\n")

    def published_state():
        devices = node.api.slices(IB_DRIVER)[0]["spec"]["devices"]
        return next(d for d in devices if d["name"] == "ib-0000-5e-00-1-p1")["attributes"]["portState"]["string"]

    wait(lambda: published_state() == "Down", timeout=10, what="port state in the slice")
    [msg] = node.kubelet.health(plugin, "v1")
    health = {d.device.device_name: d for d in msg.devices}
    assert health["ib-0000-5e-00-1-p1"].health == 2 and "Down" in health["ib-0000-5e-00-1-p1"].message
    assert health["ib-0000-5e-00-0-p1"].health == 1
    assert health["ib-0000-5e-00-0-p1"].health_check_timeout_seconds == 30
    assert {d.device.pool_name for d in msg.devices} == {"node1"}


def test_health_v1alpha1_streams_every_device(node):
    plugin = node.plugins()[SRIOV_DRIVER]
    [msg] = node.kubelet.health(plugin, "v1alpha1")
    assert sorted(d.device.device_name for d in msg.devices) == VF
    assert all(d.health == 1 for d in msg.devices)


def test_prepare_is_idempotent_and_unprepare_tolerates_repeats_and_strangers(node):
    plugin = node.plugins()[SRIOV_DRIVER]
    claim = node.api.add_claim(allocated_claim("c1", VF[:2]))
    first = node.kubelet.prepare(plugin, [ref(claim)])
    again = node.kubelet.prepare(plugin, [ref(claim)])
    assert first == again and len(first.claims[claim["metadata"]["uid"]].devices) == 2
    stranger = ("default", "gone", "0000-not-known")
    for _ in range(2):
        resp = node.kubelet.unprepare(plugin, [ref(claim), stranger])
        assert set(resp.claims) == {claim["metadata"]["uid"], "0000-not-known"}
        assert all(e.error == "" for e in resp.claims.values())
    assert _cdi_specs(node) == []


def test_v1beta1_and_several_claims_in_one_call(node):
    plugin = node.plugins()[IB_DRIVER]
    a = node.api.add_claim(allocated_claim("ib-a", ["ib-0000-5e-00-1-p1"], driver=IB_DRIVER, request="ib",
                                           configs=[SEED_IB_CONFIG]))
    b = node.api.add_claim(allocated_claim("ib-b", ["ib-0000-5e-00-2-p1"], driver=IB_DRIVER, request="ib"))
    resp = node.kubelet.prepare(plugin, [ref(a), ref(b)], version="v1beta1")
    assert set(resp.claims) == {a["metadata"]["uid"], b["metadata"]["uid"]}
    envs = {}
    for c in (a, b):
        spec = json.load(open(os.path.join(node.cdi_dir, f"{IB_DRIVER}-port_{c['metadata']['uid']}.json")))
        envs[c["metadata"]["name"]] = spec["devices"][0]["containerEdits"]["env"]
    # The InfiniBand seed's IbConfig reaches the container; devices of one call are numbered apart.
    assert {"IB_DEVICE_0=ib-0000-5e-00-1-p1", "IB_DEVICE_0_PKEY=0x8001", "IB_DEVICE_0_TRAFFIC_CLASS=128",
            "IB_DEVICE_0_MTU=4096", "IB_DEVICE_0_PORT=1"} <= set(envs["ib-a"])
    assert "IB_DEVICE_1=ib-0000-5e-00-2-p1" in envs["ib-b"]
    assert not any(e.startswith("IB_DEVICE_1_PKEY") for e in envs["ib-b"])


def test_admin_access_adds_issm_and_the_admin_env(node):
    plugin = node.plugins()[IB_DRIVER]
    c = node.api.add_claim(allocated_claim("pf", ["ib-0000-5e-00-0-p1"], driver=IB_DRIVER, request="ib",
                                           admin_access=True))
    assert node.kubelet.prepare(plugin, [ref(c)]).claims[c["metadata"]["uid"]].error == ""
    spec = json.load(open(os.path.join(node.cdi_dir, f"{IB_DRIVER}-port_{c['metadata']['uid']}.json")))
    edits = spec["devices"][0]["containerEdits"]
    assert "DRA_ADMIN_ACCESS=true" in edits["env"]
    assert any(n["path"].startswith("/dev/infiniband/issm") for n in edits["deviceNodes"])
    assert all(n["hostPath"].startswith(node.dev) for n in edits["deviceNodes"])  # the fake /dev
    assert spec["cdiVersion"] == "0.5.0"  # hostPath needs 0.5.0, nothing needs more


@pytest.mark.parametrize("case, expect", [
    ("missing", "claim default/missing: cannot read it from the API server: HTTP 404 NotFound"),
    ("unallocated", "claim default/unallocated is not allocated"),
    ("replaced", "was replaced"),
    ("unknown-device", "request 'vf' device 'vf-0000-99-00-1': no such sriovnetwork.openshift.io device"),
    ("wrong-pool", "allocated from pool 'node2', this node's pool is 'node1'"),
    ("bad-config", "config[0] (FromClaim) for request 'vf': VfConfig.mtu: expected an integer, got a string 'big'"),
    ("unknown-field", "VfConfig: unknown field(s) colour"),
    ("class-then-claim", None),
])
def test_per_claim_errors_name_the_claim_request_and_field(node, case, expect):
    plugin = node.plugins()[SRIOV_DRIVER]
    good = node.api.add_claim(allocated_claim("good", VF[3:4]))
    if case == "missing":
        bad = ("default", "missing", "uid-m")
    else:
        claim = {
            "unallocated": lambda: allocated_claim("unallocated", VF[:1]),
            "replaced": lambda: allocated_claim("replaced", VF[:1]),
            "unknown-device": lambda: allocated_claim("unknown-device", ["vf-0000-99-00-1"]),
            "wrong-pool": lambda: allocated_claim("wrong-pool", VF[:1], pool="node2"),
            "bad-config": lambda: allocated_claim("bad-config", VF[:1], configs=[vf_config(mtu="big")]),
            "unknown-field": lambda: allocated_claim("unknown-field", VF[:1], configs=[vf_config(colour="red")]),
            "class-then-claim": lambda: allocated_claim("class-then-claim", VF[:1],
                                                        class_configs=[vf_config(mtu=1500, ifName="cls0")],
                                                        configs=[vf_config(mtu=9000)]),
        }[case]()
        if case == "unallocated":
            del claim["status"]["allocation"]
        stored = node.api.add_claim(claim)
        bad = ref(stored)
        if case == "replaced":
            bad = (bad[0], bad[1], "the-old-uid")
    resp = node.kubelet.prepare(plugin, [bad, ref(good)])
    assert resp.claims[good["metadata"]["uid"]].error == ""  # the other claim is served regardless
    error = resp.claims[bad[2]].error
    if expect is None:
        assert error == ""
        spec = json.load(open(os.path.join(node.cdi_dir, f"{SRIOV_DRIVER}-vf_{bad[2]}.json")))
        env = spec["devices"][0]["containerEdits"]["env"]
        assert "SRIOVNETWORK_0000_3b_00_2_MTU=9000" in env and "SRIOVNETWORK_0000_3b_00_2_NETDEV=cls0" in env
    else:
        assert expect in error, error
        assert not os.path.exists(os.path.join(node.cdi_dir, f"{SRIOV_DRIVER}-vf_{bad[2]}.json"))


def test_a_device_serves_one_claim_at_a_time(node):
    plugin = node.plugins()[SRIOV_DRIVER]
    a = node.api.add_claim(allocated_claim("a", VF[:1]))
    b = node.api.add_claim(allocated_claim("b", VF[:1]))
    assert node.kubelet.prepare(plugin, [ref(a)]).claims[a["metadata"]["uid"]].error == ""
    error = node.kubelet.prepare(plugin, [ref(b)]).claims[b["metadata"]["uid"]].error
    assert f"already prepared for claim default/a (uid {a['metadata']['uid']})" in error
    node.kubelet.unprepare(plugin, [ref(a)])
    assert node.kubelet.prepare(plugin, [ref(b)]).claims[b["metadata"]["uid"]].error == ""


def test_concurrent_prepares_never_give_a_device_twice(node):
    from concurrent.futures import ThreadPoolExecutor

    plugin = node.plugins()[SRIOV_DRIVER]
    claims = [node.api.add_claim(allocated_claim(f"c{i}", [VF[i % 4]])) for i in range(12)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda c: node.kubelet.prepare(plugin, [ref(c)]), claims))
    winners = {}
    for c, r in zip(claims, results, strict=True):
        entry = r.claims[c["metadata"]["uid"]]
        if not entry.error:
            winners.setdefault(entry.devices[0].device_name, []).append(c["metadata"]["name"])
    assert sorted(winners) == VF and all(len(v) == 1 for v in winners.values())
    assert len(_cdi_specs(node)) == 4


def test_restart_between_prepare_and_unprepare(node):
    plugin = node.plugins()[SRIOV_DRIVER]
    claim = node.api.add_claim(allocated_claim("c1", VF[:2]))
    before = node.kubelet.prepare(plugin, [ref(claim)])
    assert node.stop() == 0
    assert node.kubelet.sockets() == []  # SIGTERM removes the registration sockets
    node.start(sockets=2)
    plugin = node.plugins()[SRIOV_DRIVER]
    assert node.kubelet.prepare(plugin, [ref(claim)]) == before  # the kubelet re-prepares after restarts
    assert node.kubelet.unprepare(plugin, [ref(claim)]).claims[claim["metadata"]["uid"]].error == ""
    assert _cdi_specs(node) == []


@pytest.mark.parametrize("fault", ["prepare.after-intent", "prepare.after-cdi", "unprepare.after-intent"])
def test_kill_9_mid_operation_converges_after_restart(node, fault):
    plugin = node.plugins()[SRIOV_DRIVER]
    claim = node.api.add_claim(allocated_claim("c1", VF[:1]))
    if fault.startswith("unprepare"):
        assert node.kubelet.prepare(plugin, [ref(claim)]).claims[claim["metadata"]["uid"]].error == ""
    node.stop()
    node.start(sockets=2, env={"SRIOVDRA_TEST_FAULTS": fault})
    plugin = node.plugins()[SRIOV_DRIVER]
    call = node.kubelet.unprepare if fault.startswith("unprepare") else node.kubelet.prepare
    with pytest.raises(grpc.RpcError):
        call(plugin, [ref(claim)])
    assert node.proc.wait(timeout=10) == -signal.SIGKILL
    node.proc = None
    node.start(sockets=2)
    plugin = node.plugins()[SRIOV_DRIVER]
    if fault.startswith("prepare"):
        assert _cdi_specs(node) == []  # the interrupted prepare was rolled back at start
        assert node.kubelet.prepare(plugin, [ref(claim)]).claims[claim["metadata"]["uid"]].error == ""
        assert len(_cdi_specs(node)) == 1
    else:
        assert _cdi_specs(node) == []  # the interrupted unprepare was finished at start
    assert node.kubelet.unprepare(plugin, [ref(claim)]).claims[claim["metadata"]["uid"]].error == ""
    assert _cdi_specs(node) == []


def test_raw_method_paths_are_the_kubelets(node):
    """Called by path, as the kubelet's generated client does, not through our stubs' names."""
    from sriovdra.plugin.proto import dra_v1_pb2

    plugin = node.plugins()[SRIOV_DRIVER]
    with grpc.insecure_channel(f"unix://{plugin.endpoint}") as ch:
        call = ch.unary_unary("/k8s.io.kubelet.pkg.apis.dra.v1.DRAPlugin/NodeUnprepareResources",
                              request_serializer=dra_v1_pb2.NodeUnprepareResourcesRequest.SerializeToString,
                              response_deserializer=dra_v1_pb2.NodeUnprepareResourcesResponse.FromString)
        resp = call(dra_v1_pb2.NodeUnprepareResourcesRequest(claims=[dra_v1_pb2.Claim(namespace="a", name="b",
                                                                                      uid="u")]), timeout=5)
    assert list(resp.claims) == ["u"] and resp.claims["u"].error == ""


def test_corrupt_checkpoint_is_set_aside_and_serving_continues(make_node):
    n = make_node(HOST)
    os.makedirs(n.state_dir)
    path = os.path.join(n.state_dir, f"{SRIOV_DRIVER}.checkpoint.json")
    with open(path, "w") as f:
        f.write('{"version": 1, "claims": {"x": ')  # truncated
    n.start(sockets=2)
    try:
        plugin = n.plugins()[SRIOV_DRIVER]
        claim = n.api.add_claim(allocated_claim("c1", VF[:1]))
        assert n.kubelet.prepare(plugin, [ref(claim)]).claims[claim["metadata"]["uid"]].error == ""
        aside = [f for f in os.listdir(n.state_dir) if ".corrupt-" in f]
        assert len(aside) == 1
        assert "checkpoint unusable, set aside as" in n.log()
    finally:
        n.stop()


def test_large_host_is_split_into_slices_of_at_most_128(make_node):
    import yaml

    from tests.conftest import REPO

    n = make_node(yaml.safe_load(open(REPO / "demo" / "hosts" / "large.yaml")))
    n.start(sockets=2)
    try:
        slices = wait(lambda: (s := n.api.slices(SRIOV_DRIVER)) and len(s) == 6 and s, timeout=30, what="6 slices")
        assert sorted(len(s["spec"]["devices"]) for s in slices) == [128] * 6
        assert {s["spec"]["pool"]["resourceSliceCount"] for s in slices} == {6}
        assert sorted(s["metadata"]["name"][:5] for s in slices) == [f"0000{i}" for i in range(6)]
        ib = wait(lambda: (s := n.api.slices(IB_DRIVER)) and len(s) == 3 and s, timeout=30, what="3 IB slices")
        assert sum(len(s["spec"]["devices"]) for s in ib) == 258
        assert n.api.store.rejected == []
    finally:
        n.stop()


def test_rolling_update_pair_shares_state(make_node):
    n = make_node(HOST)
    n.start("--drivers", SRIOV_DRIVER, "--rolling-update-pod-uid", "pod-a", sockets=1)
    first = n.proc
    n.proc = None
    n.start("--drivers", SRIOV_DRIVER, "--rolling-update-pod-uid", "pod-b", sockets=2)
    try:
        sockets = n.kubelet.sockets()
        assert [os.path.basename(s) for s in sockets] == [f"{SRIOV_DRIVER}-pod-a-reg.sock",
                                                          f"{SRIOV_DRIVER}-pod-b-reg.sock"]
        a, b = (n.kubelet.register(s) for s in sockets)
        assert a.endpoint.endswith("/dra-pod-a.sock") and b.endpoint.endswith("/dra-pod-b.sock")
        claim = n.api.add_claim(allocated_claim("c1", VF[:1]))
        other = n.api.add_claim(allocated_claim("c2", VF[:1]))
        assert n.kubelet.prepare(a, [ref(claim)]).claims[claim["metadata"]["uid"]].error == ""
        # the other instance sees the device as taken, and can unprepare what the first prepared
        assert "already prepared" in n.kubelet.prepare(b, [ref(other)]).claims[other["metadata"]["uid"]].error
        assert n.kubelet.unprepare(b, [ref(claim)]).claims[claim["metadata"]["uid"]].error == ""
        assert n.kubelet.prepare(a, [ref(other)]).claims[other["metadata"]["uid"]].error == ""
        assert os.path.exists(os.path.join(n.kubelet_root, "plugins", SRIOV_DRIVER, "serialize.lock"))
    finally:
        n.stop()
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=15) == 0


def test_vanished_vf_leaves_the_slice_without_a_restart(node):
    wait(lambda: len(node.api.slices(SRIOV_DRIVER)) == 1, what="slice")
    os.unlink(os.path.join(node.sysfs, "bus/pci/devices/0000:3b:00.5"))
    os.unlink(os.path.join(node.sysfs, "bus/pci/devices/0000:3b:00.0/virtfn3"))
    names = lambda: [d["name"] for d in node.api.slices(SRIOV_DRIVER)[0]["spec"]["devices"]]  # noqa: E731
    wait(lambda: names() == VF[:3], timeout=10, what="VF gone from the slice")
    assert node.proc.poll() is None


# --- review findings -----------------------------------------------------------------------------


def test_lost_cdi_spec_is_written_again_on_repeat_prepare_and_at_start(node):
    """/var/run/cdi is tmpfs: after a reboot the checkpoint remains and the kubelet re-prepares."""
    plugin = node.plugins()[SRIOV_DRIVER]
    claim = node.api.add_claim(allocated_claim("c1", VF[:1]))
    uid = claim["metadata"]["uid"]
    first = node.kubelet.prepare(plugin, [ref(claim)])
    path = os.path.join(node.cdi_dir, f"{SRIOV_DRIVER}-vf_{uid}.json")
    content = open(path).read()
    os.unlink(path)
    assert node.kubelet.prepare(plugin, [ref(claim)]) == first
    assert open(path).read() == content
    node.stop()
    os.unlink(path)
    node.start(sockets=2)  # the sockets listen early (--drivers): the restore follows the checkpoint load
    wait(lambda: os.path.exists(path), what=f"{path} written again at start")
    assert open(path).read() == content  # restored at start, before any prepare


def test_repeat_prepare_checks_the_claim_again(node):
    plugin = node.plugins()[SRIOV_DRIVER]
    claim = node.api.add_claim(allocated_claim("c1", VF[:1]))
    assert node.kubelet.prepare(plugin, [ref(claim)]).claims[claim["metadata"]["uid"]].error == ""
    node.api.delete_claim("default", "c1")
    node.api.add_claim(allocated_claim("c1", VF[:1]))  # same name, new UID
    error = node.kubelet.prepare(plugin, [ref(claim)]).claims[claim["metadata"]["uid"]].error
    assert "was replaced" in error


def test_one_malformed_claim_does_not_fail_the_batch(node):
    plugin = node.plugins()[SRIOV_DRIVER]
    good = node.api.add_claim(allocated_claim("good", VF[:1]))
    bad = allocated_claim("bad", VF[1:2])
    bad["status"]["allocation"]["devices"]["results"] = 7
    bad = node.api.add_claim(bad)
    resp = node.kubelet.prepare(plugin, [ref(bad), ref(good)])
    assert "status.allocation.devices.results is not a list" in resp.claims[bad["metadata"]["uid"]].error
    assert resp.claims[good["metadata"]["uid"]].error == ""
    wait(lambda: node.api.claim("default", "good")["status"].get("devices"), what="status of the good claim")


def test_status_writes_never_block_prepare(node):
    plugin = node.plugins()[SRIOV_DRIVER]
    node.api.inject("PUT", "/resourceclaims/c1/status", status=0, delay=3.0)
    claim = node.api.add_claim(allocated_claim("c1", VF[:1]))
    assert node.kubelet.prepare(plugin, [ref(claim)]).claims[claim["metadata"]["uid"]].error == ""
    assert not node.api.claim("default", "c1")["status"].get("devices")  # still being written
    wait(lambda: node.api.claim("default", "c1")["status"].get("devices"), what="the delayed status")


def test_base_request_names_and_share_id(node):
    plugin = node.plugins()[SRIOV_DRIVER]
    claim = allocated_claim("c1", VF[:1])
    share = "9f1c2d3e-aaaa-4bbb-8ccc-1234567890ab"
    claim["status"]["allocation"]["devices"]["results"][0].update(request="vf/fast", shareID=share)
    claim = node.api.add_claim(claim)
    uid = claim["metadata"]["uid"]
    [dev] = node.kubelet.prepare(plugin, [ref(claim)], version="v1").claims[uid].devices
    assert list(dev.request_names) == ["vf"] and dev.share_id == share
    [old] = node.kubelet.prepare(plugin, [ref(claim)], version="v1beta1").claims[uid].devices
    assert list(old.request_names) == ["vf"] and "share_id" not in old.DESCRIPTOR.fields_by_name


def test_ib_env_indexes_stay_unique_within_a_pod_across_calls(node):
    plugin = node.plugins()[IB_DRIVER]
    a = node.api.add_claim(allocated_claim("a", ["ib-0000-5e-00-1-p1"], driver=IB_DRIVER, request="ib",
                                           pod_uid="pod-p"))
    b = node.api.add_claim(allocated_claim("b", ["ib-0000-5e-00-2-p1"], driver=IB_DRIVER, request="ib",
                                           pod_uid="pod-p"))
    node.kubelet.prepare(plugin, [ref(a)])
    node.kubelet.prepare(plugin, [ref(b)])  # a retry, in a later call, for the same pod
    env = json.load(open(os.path.join(node.cdi_dir, f"{IB_DRIVER}-port_{b['metadata']['uid']}.json")))
    assert "IB_DEVICE_1=ib-0000-5e-00-2-p1" in env["devices"][0]["containerEdits"]["env"]


def test_health_heartbeat_and_stream_cap(node):
    plugin = node.plugins()[SRIOV_DRIVER]
    msgs = node.kubelet.health(plugin, "v1", messages=2)  # the second comes without any change
    assert len(msgs) == 2 and msgs[1].devices[0].last_updated_time >= msgs[0].devices[0].last_updated_time
    channels, streams = [], []
    from sriovdra.plugin.proto import health_v1_pb2, health_v1_pb2_grpc

    for _ in range(4):
        ch = grpc.insecure_channel(f"unix://{plugin.endpoint}")
        s = health_v1_pb2_grpc.DRAResourceHealthStub(ch).NodeWatchResources(
            health_v1_pb2.NodeWatchResourcesRequest())
        next(s)
        channels.append(ch)
        streams.append(s)
    with pytest.raises(grpc.RpcError) as e:
        node.kubelet.health(plugin, "v1")
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    claim = node.api.add_claim(allocated_claim("c1", VF[:1]))
    assert node.kubelet.prepare(plugin, [ref(claim)]).claims[claim["metadata"]["uid"]].error == ""
    for s in streams:
        s.cancel()
    for ch in channels:
        ch.close()
    assert len(node.kubelet.health(plugin, "v1", messages=1)) == 1  # the slots come back


def test_unknown_claims_with_odd_uids_unprepare_cleanly(node):
    plugin = node.plugins()[SRIOV_DRIVER]
    keep = node.api.add_claim(allocated_claim("a_b", VF[:1], uid="a_b"))
    node.kubelet.prepare(plugin, [ref(keep)])
    odd = [("default", "x", u) for u in (".", "..", "a/b", "../../etc/passwd", "x" * 300)]
    resp = node.kubelet.unprepare(plugin, odd)
    assert all(resp.claims[u].error == "" for _, _, u in odd)
    assert os.path.exists(os.path.join(node.cdi_dir, f"{SRIOV_DRIVER}-vf_a_b.json"))  # "a/b" is another claim
