"""The driver's ResourceSlice publisher and claim-status writer against real apiserver machinery:
etcd storage and resourceVersions, generateName, field selectors, delete preconditions, watch,
the status subresource, 409 conflicts and CRD validation (see conftest.py for what runs).

These use the driver's own code paths (sriovdra.kube); the assertions read back through the
plain REST JSON of the generated client.
"""

from __future__ import annotations

import copy
import threading
import time
from datetime import datetime

import pytest

from sriovdra.claim import ClaimRef
from sriovdra.kube.api import ApiError, call, get_path
from sriovdra.kube.slices import SlicePublisher
from sriovdra.kube.status import MAX_ATTEMPTS, ClaimStatusWriter, ready_entry
from sriovdra.model import IB_DRIVER, SRIOV_DRIVER, DraDevice
from tests.support.waiting import wait

pytestmark = pytest.mark.apiserver

NAMESPACE = "sriovdra-test"


def devices(n: int, driver: str = SRIOV_DRIVER, **attrs) -> list[DraDevice]:
    return [DraDevice(driver, f"vf-{i:04d}", {"vfID": i, **attrs}, f"0000:3b:{i // 8:02x}.{i % 8}")
            for i in range(n)]


@pytest.fixture
def api(real_apiserver):
    from kubernetes.client import ResourceV1Api

    return ResourceV1Api(real_apiserver[1])


def slices(api, selector: str) -> list[dict]:
    return sorted(call(api.list_resource_slice, field_selector=selector)["items"], key=lambda s: s["metadata"]["name"])


def pool(api, node: str, driver: str = SRIOV_DRIVER) -> list[tuple]:
    """(index prefix, pool generation, resourceSliceCount, devices) of each slice of the pool."""
    return [(s["metadata"]["name"][:5], s["spec"]["pool"]["generation"], s["spec"]["pool"]["resourceSliceCount"],
             len(s["spec"].get("devices", [])))
            for s in slices(api, f"spec.nodeName={node},spec.driver={driver}")]


# ResourceSlices


def test_node_is_absent_and_answers_404(real_apiserver):
    """No core API here: the publisher's Node GET gets a 404 (so its slices get no owner)."""
    with pytest.raises(ApiError) as err:
        get_path(real_apiserver[1], "/api/v1/nodes/node-a")
    assert err.value.status == 404


def test_publish_300_devices_then_shrink_to_100(real_apiserver, api):
    client = real_apiserver[1]
    node = "node-shrink"
    # neighbours the sync must leave alone: the same driver on another node, another driver here
    SlicePublisher(client, SRIOV_DRIVER, "node-neighbour").sync(devices(5))
    SlicePublisher(client, IB_DRIVER, node).sync(devices(3, driver=IB_DRIVER))
    neighbours = {s["metadata"]["uid"]: s["metadata"]["resourceVersion"]
                  for s in slices(api, "spec.nodeName=node-neighbour") + slices(api, f"spec.driver={IB_DRIVER}")}
    assert len(neighbours) == 2

    pub = SlicePublisher(client, SRIOV_DRIVER, node)
    pub.sync(devices(300))
    assert pool(api, node) == [("00000", 0, 3, 128), ("00001", 0, 3, 128), ("00002", 0, 3, 44)]
    first = slices(api, f"spec.nodeName={node},spec.driver={SRIOV_DRIVER}")
    for i, s in enumerate(first):
        # generateName: the server appended a random suffix to the driver's prefix
        prefix = f"{i:05x}-{SRIOV_DRIVER}-{node}-"
        assert s["metadata"]["name"].startswith(prefix) and len(s["metadata"]["name"]) > len(prefix)
        assert s["spec"]["pool"]["name"] == node
        assert "ownerReferences" not in s["metadata"]  # the Node GET was a 404
        assert s["metadata"]["generation"] == 1
        assert {f["manager"] for f in s["metadata"]["managedFields"]} == {"sriovdra"}
    assert [d["name"] for d in first[2]["spec"]["devices"]][:2] == ["vf-0256", "vf-0257"]
    assert first[0]["spec"]["devices"][7]["attributes"] == {"vfID": {"int": 7}}

    # nothing changed: no write at all (every resourceVersion stays)
    pub.sync(devices(300))
    assert [s["metadata"]["resourceVersion"] for s in slices(api, f"spec.nodeName={node},spec.driver={SRIOV_DRIVER}")] \
        == [s["metadata"]["resourceVersion"] for s in first]

    # the pool shrinks to one slice: the two obsolete slices are deleted (with uid+resourceVersion
    # preconditions), the kept one is updated in place with the bumped pool generation
    pub.sync(devices(100))
    assert pool(api, node) == [("00000", 1, 1, 100)]
    (kept,) = slices(api, f"spec.nodeName={node},spec.driver={SRIOV_DRIVER}")
    assert kept["metadata"]["uid"] == first[0]["metadata"]["uid"]
    assert kept["metadata"]["generation"] == 2  # the server bumps metadata.generation on a spec change
    for gone in first[1:]:
        with pytest.raises(ApiError) as err:
            call(api.read_resource_slice, gone["metadata"]["name"])
        assert err.value.status == 404
    # selecting by one field only sees the same
    assert [s["metadata"]["uid"] for s in slices(api, f"spec.nodeName={node}")
            if s["spec"]["driver"] == SRIOV_DRIVER] == [kept["metadata"]["uid"]]

    # the neighbours were not touched
    after = {s["metadata"]["uid"]: s["metadata"]["resourceVersion"]
             for s in slices(api, "spec.nodeName=node-neighbour") + slices(api, f"spec.driver={IB_DRIVER}")}
    assert after == neighbours

    # an empty pool is one empty slice, not no slice
    # (a single slice changing is no generation bump)
    pub.sync([])
    assert pool(api, node) == [("00000", 1, 1, 0)]


def test_unsupported_field_selector_is_rejected_like_kube_apiserver(api):
    with pytest.raises(ApiError) as err:
        call(api.list_resource_slice, field_selector="spec.pool.name=node-a")
    assert err.value.status == 400


def test_stale_slice_delete_precondition_conflicts_then_sync_recovers(real_apiserver, api):
    """Someone changes a slice between the publisher's list and its delete: the delete's
    resourceVersion precondition fails with 409 on the real server, the next sync repairs."""
    client = real_apiserver[1]
    node = "node-precondition"
    pub = SlicePublisher(client, SRIOV_DRIVER, node, max_devices=4)
    pub.sync(devices(10))
    assert pool(api, node) == [("00000", 0, 3, 4), ("00001", 0, 3, 4), ("00002", 0, 3, 2)]
    listed = pub.list_slices()
    obsolete = max(listed, key=lambda s: s["metadata"]["name"])
    call(api.patch_resource_slice, obsolete["metadata"]["name"], {"metadata": {"labels": {"touched": "yes"}}},
         _content_type="application/merge-patch+json")
    pub.list_slices = lambda: listed  # the publisher acts on what it listed before the change
    with pytest.raises(ApiError) as err:
        pub.sync(devices(5))
    assert err.value.status == 409
    del pub.list_slices
    pub.sync(devices(5))
    assert pool(api, node) == [("00000", 1, 2, 4), ("00001", 1, 2, 1)]


def test_publisher_threads_watch_and_repair_deleted_slices(real_apiserver, api):
    """start(): the sync loop publishes, the watch (a real watch with a field selector) sees the
    kubelet-style delete-collection and the pool is published again at once."""
    client = real_apiserver[1]
    node = "node-watch"
    pub = SlicePublisher(client, SRIOV_DRIVER, node, resync=3600)
    pub.start()
    try:
        pub.set_devices(devices(130))
        assert pub.wait_synced(20), pub.last_error
        assert pool(api, node) == [("00000", 0, 2, 128), ("00001", 0, 2, 2)]
        before = {s["metadata"]["uid"] for s in slices(api, f"spec.nodeName={node}")}
        wait(lambda: pub._watch_resp is not None, what="the publisher's watch")
        time.sleep(0.3)  # let the watch request reach the server before the delete
        call(api.delete_collection_resource_slice, field_selector=f"spec.nodeName={node},spec.driver={SRIOV_DRIVER}")
        republished = wait(lambda: [s for s in slices(api, f"spec.nodeName={node}")
                                        if s["metadata"]["uid"] not in before] if len(pool(api, node)) == 2 else [],
                           what="the slices published again")
        assert len(republished) == 2, pool(api, node)
        assert pool(api, node) == [("00000", 0, 2, 128), ("00001", 0, 2, 2)]
    finally:
        pub.stop()
    assert not any(t.is_alive() for t in pub._threads)


# ResourceClaim status


def make_claim(api, name: str, results: list[dict], other_entries: list[dict] | None = None) -> ClaimRef:
    """Create a claim, then allocate it as the scheduler would (merge patch of status.allocation +
    reservedFor), and let other drivers write their status.devices entries."""
    requests = sorted({r["request"] for r in results})
    body = {"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {"devices": {"requests": [{"name": r, "exactly": {"deviceClassName": f"{r}.example.com"}}
                                              for r in requests]}}}
    created = call(api.create_namespaced_resource_claim, NAMESPACE, body)
    assert created["spec"]["devices"]["requests"][0]["exactly"]["allocationMode"] == "ExactCount"  # defaulted
    status = {"allocation": {"devices": {"results": results},
                             "nodeSelector": {"nodeSelectorTerms": [{"matchFields": [
                                 {"key": "metadata.name", "operator": "In", "values": ["node-a"]}]}]}},
              "reservedFor": [{"resource": "pods", "name": f"{name}-pod", "uid": f"{name}-pod-uid"}]}
    call(api.patch_namespaced_resource_claim_status, name, NAMESPACE, {"status": status},
         _content_type="application/merge-patch+json")
    if other_entries:
        call(api.patch_namespaced_resource_claim_status, name, NAMESPACE, {"status": {"devices": other_entries}},
             _content_type="application/merge-patch+json")
    return ClaimRef(NAMESPACE, name, created["metadata"]["uid"])


def result(request: str, driver: str, device: str) -> dict:
    return {"request": request, "driver": driver, "pool": "node-a", "device": device}


IB_ENTRY = ready_entry(IB_DRIVER, "node-a", "ib-0", {"guid": "0c42:a103:0001:0002"},
                       message="prepared by the ib driver")
RESULTS = [result("ib", IB_DRIVER, "ib-0"), result("vf", SRIOV_DRIVER, "vf-0001")]


def read_status(api, name: str) -> dict:
    return call(api.read_namespaced_resource_claim_status, name, NAMESPACE)["status"]


def same_time(entries: list[dict]) -> list[dict]:
    """status.devices with each condition's lastTransitionTime as a datetime: the kubernetes 37
    client's typed replace turns "...Z" into "...+00:00"; kube-apiserver (metav1.Time) sends "Z"
    back, a CRD stores the string as written."""
    entries = copy.deepcopy(entries)
    for e in entries:
        for c in e.get("conditions", []):
            c["lastTransitionTime"] = datetime.fromisoformat(c["lastTransitionTime"])
    return entries


def write(client, ref: ClaimRef, entries: list[dict], setup=None) -> ClaimStatusWriter:
    writer = ClaimStatusWriter(client, SRIOV_DRIVER)
    if setup:
        setup(writer)
    writer.start()
    writer.enqueue(ref, entries)
    wait(writer.idle, timeout=30, what="the status writer to finish")
    writer.stop()
    return writer


def test_status_devices_written_with_ready_condition_keeping_other_drivers(real_apiserver, api):
    client = real_apiserver[1]
    ref = make_claim(api, "claim-ready", RESULTS, [IB_ENTRY])
    allocated = read_status(api, ref.name)
    network = {"interfaceName": "net1", "ips": ["10.9.8.7/24", "2001:db8::7/64"],
               "hardwareAddress": "aa:bb:cc:dd:ee:01"}
    ours = ready_entry(SRIOV_DRIVER, "node-a", "vf-0001", {"pciAddress": "0000:3b:00.3", "netdev": "net1"},
                       network=network)
    writer = write(client, ref, [ours])
    assert (writer.written, writer.dropped) == (1, 0)
    status = read_status(api, ref.name)
    assert status["allocation"] == allocated["allocation"]
    assert status["reservedFor"] == allocated["reservedFor"]
    assert same_time(status["devices"]) == same_time([IB_ENTRY, ours])  # theirs kept as it was, ours appended
    (cond,) = status["devices"][1]["conditions"]
    assert (cond["type"], cond["status"], cond["reason"]) == ("Ready", "True", "Prepared")
    assert status["devices"][1]["networkData"] == network

    # a second write replaces our entry (same driver/pool/device key), theirs stays
    again = ready_entry(SRIOV_DRIVER, "node-a", "vf-0001", {"pciAddress": "0000:3b:00.3"}, message="re-prepared")
    again["conditions"][0]["lastTransitionTime"] = "2030-01-01T00:00:00Z"  # surely not the first write's time
    writer = write(client, ref, [again])
    assert (writer.written, writer.dropped) == (1, 0)
    # Ready stayed True: its lastTransitionTime is the first write's (the condition convention)
    kept = copy.deepcopy(again)
    kept["conditions"][0]["lastTransitionTime"] = ours["conditions"][0]["lastTransitionTime"]
    assert same_time(read_status(api, ref.name)["devices"]) == same_time([IB_ENTRY, kept])
    managers = {f["manager"] for f in call(api.read_namespaced_resource_claim, ref.name, NAMESPACE)
                ["metadata"]["managedFields"] if f.get("subresource") == "status"}
    assert "sriovdra" in managers


def test_status_write_dropped_when_gone_replaced_or_invalid(real_apiserver, api):
    client = real_apiserver[1]
    entry = ready_entry(SRIOV_DRIVER, "node-a", "vf-0001", {})
    # the claim does not exist (404)
    writer = write(client, ClaimRef(NAMESPACE, "claim-never-created", "uid-x"), [entry])
    assert (writer.written, writer.dropped) == (0, 1)
    # the claim was deleted and created again under the same name: another uid, not ours
    ref = make_claim(api, "claim-replaced", RESULTS)
    call(api.delete_namespaced_resource_claim, ref.name, NAMESPACE)
    make_claim(api, "claim-replaced", RESULTS)
    writer = write(client, ref, [entry])
    assert (writer.written, writer.dropped) == (0, 1)
    assert "devices" not in read_status(api, ref.name)
    # an entry for a device the claim was not allocated: the server answers 422, not retried
    ref = make_claim(api, "claim-invalid", RESULTS)
    writer = write(client, ref, [ready_entry(SRIOV_DRIVER, "node-a", "vf-0099", {})])
    assert (writer.written, writer.dropped) == (0, 1)
    assert "devices" not in read_status(api, ref.name)


def conflicting_reads(api, ref: ClaimRef, times: int):
    """Install a spy on a writer: right after each of its first `times` reads another client
    changes the claim's status (the other driver updates its entry), so the writer's replace
    carries a stale resourceVersion; records every replace's outcome."""
    from kubernetes.client.exceptions import ApiException

    outcomes: list[int] = []
    other = {"n": 0}

    def setup(writer):
        read, replace = writer.api.read_namespaced_resource_claim, writer.api.replace_namespaced_resource_claim_status

        def read_then_race(*args, **kwargs):
            resp = read(*args, **kwargs)
            if other["n"] < times:
                other["n"] += 1
                theirs = dict(IB_ENTRY, data={"guid": "0c42:a103:0001:0002", "update": other["n"]})
                call(api.patch_namespaced_resource_claim_status, ref.name, ref.namespace,
                     {"status": {"devices": [theirs]}}, _content_type="application/merge-patch+json")
            return resp

        def replace_spy(*args, **kwargs):
            try:
                resp = replace(*args, **kwargs)
            except ApiException as e:
                outcomes.append(e.status)
                raise
            outcomes.append(resp.status)
            return resp

        writer.api.read_namespaced_resource_claim = read_then_race
        writer.api.replace_namespaced_resource_claim_status = replace_spy

    return setup, outcomes


def test_conflict_on_stale_resource_version_rereads_and_keeps_the_concurrent_write(real_apiserver, api):
    client = real_apiserver[1]
    ref = make_claim(api, "claim-conflict", RESULTS, [IB_ENTRY])
    ours = ready_entry(SRIOV_DRIVER, "node-a", "vf-0001", {"pciAddress": "0000:3b:00.3"})
    setup, outcomes = conflicting_reads(api, ref, times=1)
    writer = write(client, ref, [ours], setup)
    assert outcomes == [409, 200]  # the real server refused the stale write; the re-read one went through
    assert (writer.written, writer.dropped) == (1, 0)
    theirs, mine = read_status(api, ref.name)["devices"]
    assert theirs["data"] == {"guid": "0c42:a103:0001:0002", "update": 1}  # the concurrent change survived
    assert same_time([mine]) == same_time([ours])


def test_conflict_every_time_gives_up_after_max_attempts(real_apiserver, api):
    client = real_apiserver[1]
    ref = make_claim(api, "claim-conflict-storm", RESULTS, [IB_ENTRY])
    setup, outcomes = conflicting_reads(api, ref, times=MAX_ATTEMPTS)
    writer = write(client, ref, [ready_entry(SRIOV_DRIVER, "node-a", "vf-0001", {})], setup)
    assert outcomes == [409] * MAX_ATTEMPTS
    assert (writer.written, writer.dropped) == (0, 1)
    assert [e["driver"] for e in read_status(api, ref.name)["devices"]] == [IB_DRIVER]


def test_stale_replace_is_an_api_error_409_with_the_servers_reason(real_apiserver, api):
    ref = make_claim(api, "claim-stale", RESULTS)
    claim = call(api.read_namespaced_resource_claim, ref.name, NAMESPACE)
    call(api.patch_namespaced_resource_claim_status, ref.name, NAMESPACE,
         {"status": {"devices": [IB_ENTRY]}}, _content_type="application/merge-patch+json")
    claim["status"]["devices"] = [ready_entry(SRIOV_DRIVER, "node-a", "vf-0001", {})]
    with pytest.raises(ApiError) as err:
        call(api.replace_namespaced_resource_claim_status, ref.name, NAMESPACE, claim)
    assert (err.value.status, err.value.reason) == (409, "Conflict")
    assert "the object has been modified" in str(err.value)
    assert not err.value.permanent


def test_concurrent_writers_for_two_drivers_both_land(real_apiserver, api):
    """Two drivers' writers race on one claim: every write lands, through 409s and re-reads."""
    client = real_apiserver[1]
    ref = make_claim(api, "claim-two-writers", RESULTS)
    sriov, ib = ClaimStatusWriter(client, SRIOV_DRIVER), ClaimStatusWriter(client, IB_DRIVER)
    mine = ready_entry(SRIOV_DRIVER, "node-a", "vf-0001", {})
    barrier = threading.Barrier(2)
    for w in (sriov, ib):
        w.start()
    try:
        def go(writer, entry):
            barrier.wait()
            writer.enqueue(ref, [entry])

        threads = [threading.Thread(target=go, args=a) for a in ((sriov, mine), (ib, IB_ENTRY))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wait(lambda: sriov.idle() and ib.idle(), timeout=30, what="both status writers to finish")
    finally:
        sriov.stop()
        ib.stop()
    assert (sriov.written, ib.written, sriov.dropped, ib.dropped) == (1, 1, 0, 0)
    assert sorted(e["driver"] for e in read_status(api, ref.name)["devices"]) == sorted([SRIOV_DRIVER, IB_DRIVER])
