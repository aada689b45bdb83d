"""The ResourceSlice sync against the API stand-in, through the real kubernetes client."""

import pytest

from sriovdra.kube.api import ApiError, new_api_client
from sriovdra.kube.slices import SlicePublisher, parse_index, slice_prefix
from sriovdra.model import SRIOV_DRIVER, DraDevice
from tests.support.apiserver import ApiServer


def devices(n, **attrs):
    return [DraDevice(SRIOV_DRIVER, f"vf-{i:04d}", {"vfID": i, **attrs}, f"0000:3b:{i // 8:02x}.{i % 8}")
            for i in range(n)]


@pytest.fixture
def api(tmp_path):
    with ApiServer() as server:
        server.add_node("node1")
        yield server, new_api_client(server.kubeconfig(str(tmp_path / "kc")))


def state(server):
    slices = sorted(server.slices(SRIOV_DRIVER), key=lambda s: s["metadata"]["name"])
    return [(s["metadata"]["name"][:5], s["spec"]["pool"]["generation"], s["spec"]["pool"]["resourceSliceCount"],
             len(s["spec"]["devices"])) for s in slices]


def test_split_generations_and_obsolete_slices(api):
    server, client = api
    pub = SlicePublisher(client, SRIOV_DRIVER, "node1", max_devices=4)
    pub.sync(devices(10))
    assert state(server) == [("00000", 0, 3, 4), ("00001", 0, 3, 4), ("00002", 0, 3, 2)]
    names = {s["metadata"]["name"] for s in server.slices()}
    # one slice changes: updated in place, same generation, same objects
    changed = devices(10)
    changed[0] = DraDevice(SRIOV_DRIVER, "vf-0000", {"vfID": 0, "extra": True}, "x")
    pub.sync(changed)
    assert state(server) == [("00000", 0, 3, 4), ("00001", 0, 3, 4), ("00002", 0, 3, 2)]
    assert {s["metadata"]["name"] for s in server.slices()} == names
    # two slices change: the generation is bumped in every slice of the pool
    pub.sync(devices(10, mark=1))
    assert [g for _, g, _, _ in state(server)] == [1, 1, 1]
    # the pool shrinks: the obsolete slice goes first, the rest carry the new count and generation
    pub.sync(devices(5, mark=1))
    assert state(server) == [("00000", 2, 2, 4), ("00001", 2, 2, 1)]
    # no devices: one empty slice ("empty pool" is not "no pool")
    pub.sync([])
    assert state(server) == [("00000", 3, 1, 0)]
    assert server.store.rejected == []


def test_stale_and_foreign_slices_are_replaced(api):
    server, client = api
    pub = SlicePublisher(client, SRIOV_DRIVER, "node1")
    pub.sync(devices(3))
    # a slice left by an old version of the driver, with another naming scheme
    old = dict(server.slices()[0], metadata={"name": "node1-sriov-old", "uid": "u-old", "resourceVersion": "1"})
    with server.store.lock:
        server.store.slices["node1-sriov-old"] = old
    pub.sync(devices(3))
    assert [s["metadata"]["name"] for s in server.slices()][0].startswith("00000-")
    assert len(server.slices()) == 1 and state(server)[0][1] == 1


def test_owner_reference_and_missing_node(api):
    server, client = api
    SlicePublisher(client, SRIOV_DRIVER, "node1").sync(devices(1))
    [s] = server.slices()
    assert s["metadata"]["ownerReferences"][0]["uid"] == server.store.nodes["node1"]["metadata"]["uid"]
    ghost_pub = SlicePublisher(client, SRIOV_DRIVER, "ghost")
    ghost_pub.sync(devices(1))
    ghost = [s for s in server.slices() if s["spec"]["nodeName"] == "ghost"]
    assert "ownerReferences" not in ghost[0]["metadata"]
    node = server.add_node("ghost")  # readable later: the next sync adds the owner
    ghost_pub.sync(devices(1))
    ghost = [s for s in server.slices() if s["spec"]["nodeName"] == "ghost"]
    assert ghost[0]["metadata"]["ownerReferences"][0]["uid"] == node["metadata"]["uid"]


def test_conflicts_and_server_errors_surface_and_the_next_sync_converges(api):
    server, client = api
    pub = SlicePublisher(client, SRIOV_DRIVER, "node1")
    pub.sync(devices(2))
    server.inject("PUT", "/resourceslices/", status=409)
    with pytest.raises(ApiError) as e:
        pub.sync(devices(2, mark=1))
    assert e.value.status == 409
    server.inject("GET", "/resourceslices$", status=500)
    with pytest.raises(ApiError):
        pub.sync(devices(2, mark=1))
    pub.sync(devices(2, mark=1))
    assert all(d["attributes"]["mark"] == {"int": 1} for d in server.slices()[0]["spec"]["devices"])


def test_index_names():
    assert slice_prefix(0, 1) == "00000" and slice_prefix(10, 11) == "0000a"
    assert slice_prefix(3, 0x100000 + 1) == "000003"
    assert parse_index("0000a-x-y-abcde") == 10 and parse_index("node1-x") is None and parse_index("zz") is None
