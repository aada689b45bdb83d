#!/usr/bin/env python3
"""Benchmark: `sriovdra provision` from 0 to 64 VFs on a fake host, median of a few runs.

Three figures, each on a fresh copy of the same host (one Ethernet PF, one InfiniBand PF with
zero VF GUIDs, 64 VFs each at most):
  * ethernet 0->64: the kernel sequence and the wait for 64 VFs (PCI, driver, netdev, RDMA);
  * infiniband 0->64: the same plus 64 GUIDs set and 64 VFs rebound;
  * rerun: the same config again, nothing to do (discover, plan, read back);
  * the fake kernel alone making 64 VFs (one sriov_numvfs write): the floor under the first two.
The fake kernel writes files, so these measure sriovdra's own overhead, not a NIC's probe time.
Run with the venv's python:  .venv/bin/python hack/bench_provision.py [--runs N] [--vfs N] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from sriovdra import fakehost  # noqa: E402
from sriovdra.host.paths import HostPaths  # noqa: E402
from sriovdra.host.writer import sysfs_writer  # noqa: E402
from sriovdra.provisioner import Options, provision  # noqa: E402
from sriovdra.provisioning import parse_config  # noqa: E402

ETH, IB = "0000:3b:00.0", "0000:5e:00.0"


def _spec(vfs: int) -> dict:
    return {"host": {"modules": ["mlx5_core", "mlx5_ib", "ib_uverbs"]},
            "pfs": [{"pci": ETH, "netdev": "ens1f0np0", "rdma": True, "vfs": {"total": vfs, "count": 0, "offset": 2}},
                    {"pci": IB, "link": "infiniband", "device": "1021", "netdev": "ibp94s0",
                     "guid": "0c42:a103:0065:8f2a", "vfs": {"total": vfs, "count": 0, "guids": "zero"}}]}


def _timed(base: str, vfs: int, runs: int, step) -> list[float]:
    out = []
    for i in range(runs):
        root = os.path.join(base, f"h{i}")
        host = fakehost.build(_spec(vfs), root)
        paths = HostPaths.resolve(host.root)
        out.append(step(paths))
        shutil.rmtree(root)
    return out


def _provision(pf: str, vfs: int, twice: bool = False):
    config = parse_config({"pfs": [{"pf": pf, "numVFs": vfs}]})

    def step(paths: HostPaths) -> float:
        opts = Options(state_dir=os.path.join(paths.root, "state"))  # no checkpoints; the host lock lives there
        if twice:
            provision(paths, config, opts)
        t = time.perf_counter()
        report = provision(paths, config, opts)
        elapsed = time.perf_counter() - t
        assert report.pfs[0].after == vfs and not report.failed, report.to_dict()
        return elapsed

    return step


def _kernel_only(vfs: int):
    def step(paths: HostPaths) -> float:
        t = time.perf_counter()
        sysfs_writer(paths)(os.path.join(paths.sysfs, "bus/pci/devices", ETH, "sriov_numvfs"), str(vfs))
        return time.perf_counter() - t

    return step


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--vfs", type=int, default=64)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    base = tempfile.mkdtemp(prefix="sriovdra-bench-", dir="/dev/shm" if os.access("/dev/shm", os.W_OK) else None)
    try:
        figures = {
            f"ethernet 0->{args.vfs}": _timed(base, args.vfs, args.runs, _provision(ETH, args.vfs)),
            f"infiniband 0->{args.vfs} (+GUIDs, rebinds)": _timed(base, args.vfs, args.runs, _provision(IB, args.vfs)),
            f"rerun at {args.vfs} (nothing to do)": _timed(base, args.vfs, args.runs,
                                                           _provision(IB, args.vfs, twice=True)),
            f"fake kernel alone: one sriov_numvfs={args.vfs} write": _timed(base, args.vfs, args.runs,
                                                                           _kernel_only(args.vfs)),
        }
    finally:
        shutil.rmtree(base, ignore_errors=True)
    result = {name: {"median_ms": round(statistics.median(v) * 1000, 1), "runs": len(v)} for name, v in figures.items()}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for name, r in result.items():
            print(f"{name:<50} {r['median_ms']:>8.1f} ms  (median of {r['runs']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
