#!/usr/bin/env python3
"""Benchmark `sriovdra webhook`: AdmissionReviews per second and p50/p99 latency over TLS.

Starts the webhook as a subprocess on 127.0.0.1 (EC P-256 certificates made with the openssl
CLI) and posts reviews of a ResourceClaim from one client: on one kept-alive connection, and on a
new connection (full TLS handshake) per request; for a claim that is allowed (the InfiniBand
seed's IbConfig) and one that is denied (pkey 0). Also times admission.review alone (no
network). The client is Python too, so the numbers include its cost. Run with the venv's python:
    .venv/bin/python hack/bench_webhook.py [--requests N] [--json]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from sriovdra import admission  # noqa: E402
from tests.webhook.certs import make_ca, make_server  # noqa: E402
from tests.webhook.reviews import body, claim_object, ib  # noqa: E402


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def summary(latencies: list[float], wall: float) -> dict:
    return {"requests": len(latencies), "per_second": round(len(latencies) / wall, 1),
            "p50_ms": round(pct(latencies, 50) * 1000, 3), "p99_ms": round(pct(latencies, 99) * 1000, 3)}


def post(conn: http.client.HTTPSConnection, payload: bytes) -> None:
    conn.request("POST", "/validate-resource-claim-parameters", body=payload,
                 headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    data = resp.read()
    if resp.status != 200:
        raise RuntimeError(f"HTTP {resp.status}: {data[:200]!r}")


def run(port: int, ctx: ssl.SSLContext, payload: bytes, n: int, keep_alive: bool) -> dict:
    def connect():
        return http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=30)

    conn = connect() if keep_alive else None
    post(conn or connect(), payload)  # warm-up (and the kept-alive connection's handshake)
    latencies = []
    t0 = time.perf_counter()
    for _ in range(n):
        t = time.perf_counter()
        c = conn or connect()
        post(c, payload)
        if not keep_alive:
            c.close()
        latencies.append(time.perf_counter() - t)
    wall = time.perf_counter() - t0
    if conn:
        conn.close()
    return summary(latencies, wall)


def in_process(payload: bytes, n: int) -> dict:
    latencies = []
    t0 = time.perf_counter()
    for _ in range(n):
        t = time.perf_counter()
        admission.review(payload)
        latencies.append(time.perf_counter() - t)
    return summary(latencies, time.perf_counter() - t0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=2000, help="requests per case (default 2000)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if shutil.which("openssl") is None:
        sys.exit("the openssl CLI is needed for the certificates (apt-get install openssl)")
    base = tempfile.mkdtemp(prefix="sriovdra-bench-webhook-", dir="/dev/shm" if os.access("/dev/shm", os.W_OK)
                            else None)
    proc = None
    try:
        ca = make_ca(base, "ca")
        server = make_server(ca, base, "server")
        log_path = os.path.join(base, "webhook.log")
        with open(log_path, "wb") as log:
            # --log-level info, the default: every denial is logged, as in production.
            proc = subprocess.Popen([sys.executable, "-m", "sriovdra", "webhook", "--tls-cert-file", server.cert,
                                     "--tls-private-key-file", server.key, "--port", "0",
                                     "--bind-address", "127.0.0.1"], stdout=log, stderr=log)
        port = 0
        deadline = time.monotonic() + 30
        while not port:
            if proc.poll() is not None or time.monotonic() > deadline:
                sys.exit(f"the webhook did not start: {open(log_path).read()}")
            m = re.search(r"listening on https://127\.0\.0\.1:(\d+)", open(log_path).read())
            port = int(m.group(1)) if m else 0
            time.sleep(0.02)
        ctx = ssl.create_default_context(cafile=ca.cert)
        payloads = {"allowed": body(claim_object("ResourceClaim", "v1", [ib(pkey=32769, mtu=4096, trafficClass=128)])),
                    "denied": body(claim_object("ResourceClaim", "v1", [ib(pkey=0)]))}
        results = {}
        for verdict, payload in payloads.items():
            results[f"{verdict}, in-process admission.review"] = in_process(payload, args.requests)
            results[f"{verdict}, TLS keep-alive"] = run(port, ctx, payload, args.requests, keep_alive=True)
            results[f"{verdict}, TLS new connection each"] = run(port, ctx, payload, max(args.requests // 4, 50),
                                                                 keep_alive=False)
        results["_payload_bytes"] = {k: len(v) for k, v in payloads.items()}
    finally:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
        shutil.rmtree(base, ignore_errors=True)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"{'case':48} {'requests':>8} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8}")
    for case, r in results.items():
        if not case.startswith("_"):
            print(f"{case:48} {r['requests']:>8} {r['per_second']:>9} {r['p50_ms']:>8} {r['p99_ms']:>8}")
    print(f"payload bytes: {results['_payload_bytes']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
