"""serve against an API server that fails: 500/503/429 answers, 409 conflicts, slow answers, lost
answers, dropped watches and restarts (state kept, state lost). Slices converge to exactly the
expected pool, claim status writes back off and land, prepare goes on unless the claim itself
cannot be read (then the claim's own error says so, and the kubelet's retry succeeds)."""

from __future__ import annotations

import threading
import time

import pytest

from sriovdra.host.discovery import discover
from sriovdra.host.paths import HostPaths
from sriovdra.kube.status import RETRY_BACKOFF
from sriovdra.model import SRIOV_DRIVER
from tests.conftest import eth_pf
from tests.load.harness import summary
from tests.support.claims import allocated_claim, ref
from tests.support.node import NODE
from tests.support.waiting import wait

VFS = 130  # two slices in the pool (128 devices a slice)
HOST = {"host": {"modules": ["mlx5_core", "vfio_pci"]},
        "pfs": [eth_pf(vfs={"total": VFS, "count": VFS, "offset": 2})]}
SLICES = r"/resourceslices"
STATUS = r"/resourceclaims/{}/status$"


@pytest.fixture
def node(make_node):
    n = make_node(HOST)
    n.api.validate = False  # ~60 ms a write in this process; tests/plugin checks the writes are valid
    # rescans republish (and so re-sync) the slices: rarely here, so that only the API faults drive the sync
    n.start("--drivers", SRIOV_DRIVER, "--rescan-interval", "60")
    yield n
    n.stop()


def expected_devices(node) -> list[str]:
    inv = discover(HostPaths.resolve(node.host_root))
    return sorted(d.name for d in inv.dra_devices() if d.driver == SRIOV_DRIVER)


def pool_problems(node, expected: list[str]) -> list[str]:
    """Why the node's pool is not exactly the expected one ([] when it is)."""
    slices = sorted(node.api.slices(SRIOV_DRIVER), key=lambda s: s["metadata"]["name"])
    problems = []
    count = {s["spec"]["pool"]["resourceSliceCount"] for s in slices}
    generations = {s["spec"]["pool"]["generation"] for s in slices}
    indexes = [s["metadata"]["name"][:5] for s in slices]
    devices = [d["name"] for s in slices for d in s["spec"]["devices"]]
    node_uid = node.api.store.nodes.get(NODE, {}).get("metadata", {}).get("uid")
    if count != {len(slices)} or len(generations) != 1 or len(set(indexes)) != len(indexes):
        problems.append(f"slices {indexes}: counts {count}, generations {generations}")
    if sorted(devices) != expected:
        problems.append(f"{len(devices)} devices published ({len(set(devices))} distinct), "
                        f"expected {len(expected)}")
    owners = {str(s["metadata"].get("ownerReferences")) for s in slices}
    if node_uid and not all(node_uid in o for o in owners):
        problems.append(f"owner references {owners}, the Node's uid is {node_uid}")
    return problems


def converged(node, expected: list[str], what: str, timeout: float = 20.0) -> None:
    wait(lambda: not pool_problems(node, expected), timeout=timeout,
         what=f"{what}: {pool_problems(node, expected)}")


def listed_since_the_watch_opened(node) -> bool:
    """The publisher listed its slices after it last opened its watch: it has seen the synthetic
    ADDED events of the opening (and, fixed or not, re-synced), so nothing else is pending."""
    requests = node.api.requests_to("GET", SLICES + "$")
    opens = [r.time for r in requests if r.query.get("watch") == "true"]
    lists = [r.time for r in requests if r.query.get("watch") != "true"]
    return bool(opens and lists) and lists[-1] > opens[-1]


def ok(node, plugin, claim) -> None:
    reply = node.kubelet.prepare(plugin, [ref(claim)]).claims[claim["metadata"]["uid"]]
    assert reply.error == ""


def timed_prepares(node, plugin, claims: list[dict]) -> list[float]:
    out = []
    for claim in claims:
        t0 = time.perf_counter()
        ok(node, plugin, claim)
        out.append((time.perf_counter() - t0) * 1000)
    return out


def test_slices_converge_through_errors_conflicts_slow_and_lost_answers(node):
    expected = expected_devices(node)
    converged(node, expected, "first publication")
    before = len(node.api.requests_to("POST", SLICES))
    # the kubelet deletes the node's slices at its start; the re-creation meets every kind of failure
    # (503 and 429 carry Retry-After, which the client's urllib3 honours by itself for idempotent calls)
    node.api.inject("POST", SLICES, status=500)
    node.api.inject("POST", SLICES, status=503)
    node.api.inject("POST", SLICES, status=0, drop="after")  # created, but the answer is lost
    node.api.inject("GET", SLICES + "$", status=0, delay=0.5, times=2)  # slow lists
    node.api.inject("PUT", SLICES, status=409)  # the generation bump meets a conflict
    node.api.inject("PUT", SLICES, status=0, drop="before")  # and a connection that breaks
    node.api.delete_all_slices()
    converged(node, expected, "after the kubelet deleted the slices")
    assert [f.times for f in node.api.store.faults] == [0] * 6  # every fault was met
    # the slice whose answer was lost was found by the next list, not created twice
    assert [r.status for r in node.api.requests_to("POST", SLICES)[before:]] == [500, 503, 0, 201]
    assert len(node.api.slices(SRIOV_DRIVER)) == 2
    assert node.proc.poll() is None


def test_slices_deleted_while_the_watch_is_down_come_back_at_once(node):
    """The watch is dropped and the slices deleted before it is back: no event ever tells, the
    re-opened watch must re-sync (else only the 30 s resync would)."""
    expected = expected_devices(node)
    converged(node, expected, "first publication")
    for _ in range(3):
        wait(lambda: node.api.watching() == 1 and listed_since_the_watch_opened(node),
             what="the slice watch, and the sync its opening caused")
        opened = node.api.store.watches
        assert node.api.drop_watches() == 1
        node.api.delete_all_slices()  # after the drop on the stream: never sent
        wait(lambda n=opened: node.api.store.watches > n, what="the slice watch re-opened")
        converged(node, expected, "slices after a dropped watch", timeout=15)


@pytest.mark.parametrize("keep_state", [True, False], ids=["state-kept", "state-lost"])
def test_api_server_restart(node, keep_state, report):
    """A status write cut by the restart is retried and lands; slices are exactly the pool again
    (no duplicate when the state was kept, all re-created with the new Node's UID when it was lost);
    a claim the server no longer knows fails on its own and succeeds once it is back."""
    expected = expected_devices(node)
    converged(node, expected, "first publication")
    plugin = node.plugins()[SRIOV_DRIVER]
    names = sorted(s["metadata"]["name"] for s in node.api.slices(SRIOV_DRIVER))
    creates = len(node.api.requests_to("POST", SLICES))
    claim = node.api.add_claim(allocated_claim("c1", expected[:1]))
    gate = threading.Event()
    node.api.inject("PUT", STATUS.format("c1"), status=0, hold=gate)
    ok(node, plugin, claim)
    wait(lambda: node.api.requests_to("PUT", STATUS.format("c1")), what="the status write to arrive")
    node.api.restart(keep_state=keep_state)
    gate.set()  # the held request's connection is gone: the writer sees a broken connection
    old_uid = None
    if not keep_state:
        old_uid = claim["metadata"]["uid"]
        node.api.add_node(NODE)  # the kubelet registers its Node again
        # the claim is gone: its prepare fails, naming it; the kubelet's retry after it is back succeeds
        reply = node.kubelet.prepare(plugin, [ref(claim)]).claims[old_uid]
        assert "default/c1" in reply.error and "cannot read it from the API server" in reply.error
        assert "404" in reply.error
        claim = node.api.add_claim(claim)
        ok(node, plugin, claim)
    converged(node, expected, "slices after the restart")
    status = wait(lambda: node.api.claim("default", "c1")["status"].get("devices"), timeout=20,
                  what="the status write cut by the restart")
    assert [d["device"] for d in status] == expected[:1]
    if keep_state:  # the same objects, nothing created twice
        assert sorted(s["metadata"]["name"] for s in node.api.slices(SRIOV_DRIVER)) == names
        assert len(node.api.requests_to("POST", SLICES)) == creates
    else:
        assert claim["metadata"]["uid"] == old_uid
    report(f"api restart ({'state kept' if keep_state else 'state lost'}): slices and status converged; "
           f"{len(node.api.requests_to('PUT', STATUS.format('c1')))} status PUTs after the restart")


def test_status_writes_back_off_and_do_not_hold_up_other_claims(node):
    plugin = node.plugins()[SRIOV_DRIVER]
    devices = expected_devices(node)
    c1 = node.api.add_claim(allocated_claim("c1", devices[:1]))
    c2 = node.api.add_claim(allocated_claim("c2", devices[1:2]))
    path = STATUS.format("c1")
    node.api.inject("PUT", path, status=409)  # a stale resourceVersion: re-read at once
    for status in (500, 504, 500, 500):  # (503 and 429 come with Retry-After: urllib3 retries those itself)
        node.api.inject("PUT", path, status=status)
    ok(node, plugin, c1)
    wait(lambda: len(node.api.requests_to("PUT", path)) >= 3, what="c1's first failed status writes")
    ok(node, plugin, c2)  # while c1 waits for its retries
    wait(lambda: node.api.claim("default", "c2")["status"].get("devices"), what="c2's status")
    wait(lambda: node.api.claim("default", "c1")["status"].get("devices"), timeout=30, what="c1's status")
    puts = node.api.requests_to("PUT", path)
    assert [p.status for p in puts] == [409, 500, 504, 500, 500, 200]
    c2_put = node.api.requests_to("PUT", STATUS.format("c2"))[-1]
    assert c2_put.time < puts[-1].time  # c2 did not wait for c1's backoff
    gaps = [b.time - a.time for a, b in zip(puts[1:-1], puts[2:], strict=True)]  # from the first server error
    first = RETRY_BACKOFF[0]
    assert all(gap >= first * 2 ** i * 0.99 for i, gap in enumerate(gaps)), gaps  # spaced increasingly


def test_prepare_goes_on_while_slices_and_status_fail_or_hang(node, report):
    plugin = node.plugins()[SRIOV_DRIVER]
    devices = expected_devices(node)
    converged(node, devices, "first publication")
    claims = [node.api.add_claim(allocated_claim(f"c{i}", [devices[i]])) for i in range(30)]
    baseline = timed_prepares(node, plugin, claims[:10])
    gate = threading.Event()
    try:
        node.api.inject("PUT", r"/status$", status=0, hold=gate, times=100)  # status writes hang
        node.api.inject("POST", SLICES, status=500, times=100)  # slices cannot be written
        node.api.inject("PUT", SLICES, status=500, times=100)
        node.api.delete_all_slices()
        faulty = timed_prepares(node, plugin, claims[10:20])
        # slow claim reads: slower, still prepared
        for c in claims[20:25]:
            node.api.inject("GET", f"/resourceclaims/{c['metadata']['name']}$", status=0, delay=0.2)
        slow = timed_prepares(node, plugin, claims[20:25])
        # a claim that cannot be read fails alone, naming itself; the batch's other claim is prepared
        bad, good = claims[25], claims[26]
        node.api.inject("GET", f"/resourceclaims/{bad['metadata']['name']}$", status=500)
        replies = node.kubelet.prepare(plugin, [ref(bad), ref(good)]).claims
        assert replies[good["metadata"]["uid"]].error == ""
        error = replies[bad["metadata"]["uid"]].error
        assert error.startswith("claim default/c25: cannot read it from the API server") and "500" in error
        ok(node, plugin, bad)  # the kubelet's retry
        # none of the status writes got through while the prepares were answered
        assert all(not node.api.claim("default", c["metadata"]["name"])["status"].get("devices")
                   for c in claims[10:27])
    finally:
        gate.set()
        for f in node.api.store.faults:
            f.times = 0
    converged(node, devices, "slices once the API server works again")
    wait(lambda: all(node.api.claim("default", c["metadata"]["name"])["status"].get("devices")
                     for c in claims[:27]), timeout=30, what="every status once writes go through")
    report("prepare under API faults (1 client): " + "; ".join(
        summary(name, values) for name, values in (("no faults", baseline), ("slices and status failing", faulty),
                                                   ("claim read +200 ms", slow))))
