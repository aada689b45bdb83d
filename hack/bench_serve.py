#!/usr/bin/env python3
"""Benchmark `sriovdra serve` on the large demo host (1024 VFs) against the local API stand-in.

Reports: registration socket and slices-published times after exec, prepare latency p50/p99
for claims of 1 and 8 devices (new claims), repeated prepare and unprepare latency, the RSS
of serve idle, after the sequential calls and at its peak under concurrent calls, and the
stand-in's own GET round trip (the floor of a prepare, which reads the claim). Run with the
venv's python:
    .venv/bin/python hack/bench_serve.py [--claims N] [--no-drivers] [--json]
(hack/bench_budget.py puts these beside the baselines and the targets.)
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_common import large_host, pct, proc_mb, scratch_dir  # noqa: E402

SIZES = (1, 8)
SLICES = 9  # 6 SR-IOV + 3 InfiniBand slices on the large host
LOAD_THREADS = 4


def _api_round_trips(url: str, path: str, n: int) -> list[float]:
    """ms per GET of path over one kept-alive connection with TCP_NODELAY, as the driver's client does."""
    import socket

    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port)
    conn.connect()
    conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    out = []
    for _ in range(n):
        t = time.perf_counter()
        conn.request("GET", path, headers={"Accept": "application/json"})
        conn.getresponse().read()
        out.append((time.perf_counter() - t) * 1000)
    conn.close()
    return out


def serve_figures(base: str, claims: int, drivers: bool = True, host=None) -> dict:
    """Start serve on the large host (built under base unless given) and measure it. drivers: pass
    --drivers as the chart does (the plugin sockets listen before the inventory loads). claims=0:
    the start-up figures only."""
    from sriovdra.model import DRIVERS, SRIOV_DRIVER
    from tests.support.apiserver import ApiServer
    from tests.support.claims import allocated_claim, ref
    from tests.support.kubelet import Kubelet

    host = host or large_host(base)
    kroot = os.path.join(base, "kb")
    proc = None
    out: dict = {}
    with ApiServer(validate=False) as api:  # schema validation would be the stand-in's cost, not serve's
        api.add_node("node1")
        kubeconfig = api.kubeconfig(os.path.join(base, "kubeconfig"))
        argv = [sys.executable, "-m", "sriovdra", "serve", "--node-name", "node1", "--kubeconfig", kubeconfig,
                "--kubelet-root-dir", kroot, "--cdi-dir", os.path.join(base, "cdi"),
                "--state-dir", os.path.join(base, "st"), "--host-root", host.root, "--log-level", "warning",
                "--netdev-attach", "none"]  # prepare only: no runtime to attach to
        if drivers:
            argv += ["--drivers", ",".join(DRIVERS)]
        try:
            t0 = time.monotonic()
            proc = subprocess.Popen(argv)
            kubelet = Kubelet(kroot)
            kubelet.wait_for_sockets(len(DRIVERS), timeout=60, proc=proc)
            out["socket_s"] = time.monotonic() - t0
            while len(api.slices()) < SLICES:
                if proc.poll() is not None:
                    raise RuntimeError(f"serve exited with {proc.returncode} before publishing its slices")
                time.sleep(0.005)
            out["slices_s"] = time.monotonic() - t0
            if not claims:
                return out
            plugin = {p.name: p for p in (kubelet.register(s) for s in kubelet.sockets())}[SRIOV_DRIVER]
            time.sleep(2)  # let start-up garbage settle
            out["rss_idle"] = proc_mb(proc.pid)
            vfs = sorted(d["name"] for s in api.slices(SRIOV_DRIVER) for d in s["spec"]["devices"])
            used = 0
            first = None
            for size in SIZES:
                new, again, unprep = [], [], []
                for i in range(claims):
                    devices = vfs[used:used + size]
                    used = (used + size) % (len(vfs) - max(SIZES))
                    claim = api.add_claim(allocated_claim(f"b{size}-{i}", devices))
                    first = first or claim
                    for bucket, call in ((new, kubelet.prepare), (again, kubelet.prepare), (unprep, kubelet.unprepare)):
                        t = time.perf_counter()
                        resp = call(plugin, [ref(claim)])
                        bucket.append((time.perf_counter() - t) * 1000)
                        assert all(not e.error for e in resp.claims.values()), resp
                        if bucket is new:  # measure the repeat as the kubelet sends it: not mid status write
                            _status_written(api, claim)
                out[f"prepare_new_{size}"] = new
                out[f"prepare_repeat_{size}"] = again
                out[f"unprepare_{size}"] = unprep
            out["rss_after"] = proc_mb(proc.pid)
            out["rss_peak"] = _concurrent_load(api, kubelet, plugin, vfs, claims, proc.pid)
            md = first["metadata"]
            out["api_get_ms"] = _api_round_trips(
                api.url, f"/apis/resource.k8s.io/v1/namespaces/{md['namespace']}/resourceclaims/{md['name']}",
                max(claims, 20))
        finally:
            if proc is not None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=30)
    return out


def _status_written(api, claim: dict, timeout: float = 10.0) -> None:
    md = claim["metadata"]
    deadline = time.monotonic() + timeout
    while not api.claim(md["namespace"], md["name"]).get("status", {}).get("devices"):
        if time.monotonic() > deadline:
            raise AssertionError(f"no status written for claim {md['name']}")
        time.sleep(0.002)


def _concurrent_load(api, kubelet, plugin, vfs: list[str], claims: int, pid: int) -> float:
    """Prepare and unprepare from LOAD_THREADS threads at once (disjoint devices); the peak RSS (VmHWM)."""
    from tests.support.claims import allocated_claim, ref

    per = max(2, claims // 2)
    errors: list[str] = []

    def worker(t: int) -> None:
        for i in range(per):
            devices = vfs[(t * per + i) * 2 % (len(vfs) - 2):][:2]
            claim = api.add_claim(allocated_claim(f"load{t}-{i}", devices))
            for call in (kubelet.prepare, kubelet.unprepare):
                resp = call(plugin, [ref(claim)])
                errors.extend(e.error for e in resp.claims.values() if e.error)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(LOAD_THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    return proc_mb(pid, "VmHWM")


def report(fig: dict) -> dict:
    return {
        "registration socket after exec (s)": round(fig["socket_s"], 3),
        f"all {SLICES} slices published after exec (s)": round(fig["slices_s"], 3),
        "RSS idle (MB)": round(fig["rss_idle"], 1),
        "RSS after load (MB)": round(fig["rss_after"], 1),
        f"RSS peak, {LOAD_THREADS} threads preparing (MB)": round(fig["rss_peak"], 1),
        **{f"{k} p50/p99 (ms)": [round(pct(fig[key], 50), 2), round(pct(fig[key], 99), 2)]
           for size in SIZES for k, key in ((f"prepare new, {size} device(s)", f"prepare_new_{size}"),
                                            (f"prepare repeat, {size} device(s)", f"prepare_repeat_{size}"),
                                            (f"unprepare, {size} device(s)", f"unprepare_{size}"))},
        "API stand-in GET round trip p50/p99 (ms)": [round(pct(fig["api_get_ms"], 50), 2),
                                                     round(pct(fig["api_get_ms"], 99), 2)],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--claims", type=int, default=60, help="claims per size (default 60)")
    ap.add_argument("--no-drivers", action="store_true", help="start serve without --drivers (no early registration)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    with scratch_dir() as base:
        rows = report(serve_figures(base, args.claims, drivers=not args.no_drivers))
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        width = max(map(len, rows))
        print(f"serve on the 1024-VF host, {args.claims} claims per size, {os.cpu_count()} cores")
        for k, v in rows.items():
            print(f"{k:{width}}  {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
