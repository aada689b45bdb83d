#!/usr/bin/env python3
"""Benchmark `sriovdra serve` on the large demo host (1024 VFs) against the local API stand-in.

Reports: registration socket and slices-published times after exec, prepare latency p50/p99
for claims of 1 and 8 devices (new claims), repeated prepare and unprepare latency, and the
RSS of serve idle and after the load. Run with the venv's python:
    .venv/bin/python hack/bench_serve.py [--claims N] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from sriovdra import fakehost  # noqa: E402
from sriovdra.model import SRIOV_DRIVER  # noqa: E402
from tests.support.apiserver import ApiServer  # noqa: E402
from tests.support.claims import allocated_claim, ref  # noqa: E402
from tests.support.kubelet import Kubelet  # noqa: E402


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--claims", type=int, default=60, help="claims per size (default 60)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    base = tempfile.mkdtemp(prefix="sriovdra-bench-", dir="/dev/shm" if os.access("/dev/shm", os.W_OK) else None)
    kroot = tempfile.mkdtemp(prefix="kb", dir="/tmp")
    proc = None
    try:
        host = fakehost.build(os.path.join(REPO, "demo/hosts/large.yaml"), os.path.join(base, "large"))
        with ApiServer(validate=False) as api:  # schema validation would be the stand-in's cost, not serve's
            api.add_node("node1")
            kubeconfig = api.kubeconfig(os.path.join(base, "kubeconfig"))
            t0 = time.monotonic()
            proc = subprocess.Popen([sys.executable, "-m", "sriovdra", "serve", "--node-name", "node1",
                                     "--kubeconfig", kubeconfig, "--kubelet-root-dir", kroot,
                                     "--cdi-dir", os.path.join(base, "cdi"), "--state-dir", os.path.join(base, "st"),
                                     "--host-root", host.root, "--log-level", "warning",
                                     "--netdev-attach", "none"])  # prepare only: no runtime to attach to
            kubelet = Kubelet(kroot)
            kubelet.wait_for_sockets(2, timeout=60, proc=proc)
            t_socket = time.monotonic() - t0
            while len(api.slices()) < 9:  # 6 SR-IOV + 3 InfiniBand slices
                time.sleep(0.005)
            t_slices = time.monotonic() - t0
            plugin = {p.name: p for p in (kubelet.register(s) for s in kubelet.sockets())}[SRIOV_DRIVER]
            time.sleep(2)
            idle = rss_mb(proc.pid)
            vfs = sorted(d["name"] for s in api.slices(SRIOV_DRIVER) for d in s["spec"]["devices"])
            results: dict[str, list[float]] = {}
            used = 0
            for size in (1, 8):
                new, again, unprep = [], [], []
                for i in range(args.claims):
                    devices = vfs[used:used + size]
                    used = (used + size) % (len(vfs) - 8)
                    claim = api.add_claim(allocated_claim(f"b{size}-{i}", devices))
                    for bucket, call in ((new, kubelet.prepare), (again, kubelet.prepare), (unprep, kubelet.unprepare)):
                        t = time.perf_counter()
                        resp = call(plugin, [ref(claim)])
                        bucket.append((time.perf_counter() - t) * 1000)
                        assert all(not e.error for e in resp.claims.values()), resp
                results[f"prepare new, {size} device(s)"] = new
                results[f"prepare repeat, {size} device(s)"] = again
                results[f"unprepare, {size} device(s)"] = unprep
            loaded = rss_mb(proc.pid)
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
        shutil.rmtree(base, ignore_errors=True)
        shutil.rmtree(kroot, ignore_errors=True)
    report = {
        "registration socket after exec (s)": round(t_socket, 3),
        "all 9 slices published after exec (s)": round(t_slices, 3),
        "RSS idle (MB)": round(idle, 1),
        "RSS after load (MB)": round(loaded, 1),
        **{f"{k} p50/p99 (ms)": [round(pct(v, 50), 2), round(pct(v, 99), 2)] for k, v in results.items()},
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        width = max(map(len, report))
        print(f"serve on the 1024-VF host, {args.claims} claims per size, {os.cpu_count()} cores")
        for k, v in report.items():
            print(f"{k:{width}}  {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
