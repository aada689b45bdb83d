"""200 claims prepared and unprepared at once from many client threads, against one serve and against
a rolling-update pair sharing its state (claims spread over both sockets). See harness.py for what
is checked at every step; the latencies go to the session summary (no wall-clock limits)."""

from __future__ import annotations

import os
import signal

from sriovdra.model import SRIOV_DRIVER
from tests.conftest import eth_pf
from tests.load.harness import LoadRun, cpu_seconds, summary
from tests.support.waiting import wait

VFS = 64  # fewer VFs than claims: claims queue for devices, as pods do on a full node
CLAIMS = 200
THREADS = 24
SEQUENTIAL = 20  # one client first: the latency without queueing, beside the concurrent figures
HOST = {"host": {"modules": ["mlx5_core", "vfio_pci"]},
        "pfs": [eth_pf(vfs={"total": VFS, "count": VFS, "offset": 2})]}


def loaded_node(make_node):
    node = make_node(HOST)
    # the stand-in runs in this process: its schema validation (~60 ms a status write) would take the
    # GIL from the client threads and be measured as serve's latency (tests/plugin validates the writes)
    node.api.validate = False
    return node


def published_devices(node) -> list[str]:
    slices = wait(lambda: node.api.slices(SRIOV_DRIVER), timeout=20, what="the VFs' slice")
    names = sorted(d["name"] for s in slices for d in s["spec"]["devices"])
    assert len(names) == VFS
    return names


def check(run: LoadRun, node, claims: int) -> None:
    r = run.results
    assert r.problems == []
    assert run.watch.doubles == [] and run.watch.snapshots > 0
    assert sorted(r.prepared.values()) == [1] * claims  # every claim prepared exactly once
    assert len(r.unprepare_ms) == claims
    assert [f for f in os.listdir(node.cdi_dir) if f.endswith(".json")] == []
    # every claim's status was written (asynchronously, by the instance that prepared it)
    wait(lambda: all(node.api.claim("default", c["metadata"]["name"])["status"].get("devices")
                     for c in run.claims), timeout=60, what="every claim's status")


def measure(node, plugins: list, report, title: str) -> LoadRun:
    """A sequential warm-up run, then the concurrent one; both checked, their figures reported."""
    devices = published_devices(node)
    alone = LoadRun(node, plugins, SEQUENTIAL, devices, prefix="alone")
    alone.run(1)
    check(alone, node, SEQUENTIAL)
    pids = [p.pid for p in node.processes]
    cpu = sum(cpu_seconds(pid) for pid in pids)
    run = LoadRun(node, plugins, CLAIMS, devices)
    run.run(THREADS)
    cpu = sum(cpu_seconds(pid) for pid in pids) - cpu
    check(run, node, CLAIMS)
    r = run.results
    report(f"load, {title}: {CLAIMS} claims over {VFS} VFs from {THREADS} threads; {len(r.refused_ms)} prepares "
           f"refused (device held) and retried; {run.watch.snapshots} checkpoint reads; serve CPU "
           f"{cpu * 1000 / CLAIMS:.1f} ms per claim (prepare + unprepare + status write)")
    for name, values in (("prepare, 1 client", alone.results.prepare_ms),
                         ("unprepare, 1 client", alone.results.unprepare_ms),
                         (f"prepare, {THREADS} clients", r.prepare_ms),
                         (f"refused prepare, {THREADS} clients", r.refused_ms),
                         (f"unprepare, {THREADS} clients", r.unprepare_ms)):
        report("  " + summary(name, values))
    return run


def test_200_claims_concurrently_against_one_serve(make_node, report):
    node = loaded_node(make_node)
    node.start("--drivers", SRIOV_DRIVER)
    try:
        node.processes = [node.proc]
        measure(node, [node.plugins()[SRIOV_DRIVER]], report, "one serve")
    finally:
        node.stop()


def test_200_claims_concurrently_across_a_rolling_update_pair(make_node, report):
    node = loaded_node(make_node)
    node.start("--drivers", SRIOV_DRIVER, "--rolling-update-pod-uid", "pod-a", sockets=1)
    first, node.proc = node.proc, None
    try:
        node.start("--drivers", SRIOV_DRIVER, "--rolling-update-pod-uid", "pod-b", sockets=2)
        plugins = [node.kubelet.register(s) for s in node.kubelet.sockets()]
        assert len({p.endpoint for p in plugins}) == 2
        node.processes = [first, node.proc]
        run = measure(node, plugins, report, "rolling-update pair")
        assert sorted(run.results.per_socket.values()) == [CLAIMS // 2, CLAIMS // 2]
    finally:
        node.stop()
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=15) == 0
