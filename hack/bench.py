#!/usr/bin/env python3
"""Benchmarks for the CLI: start-up time and discover on the large demo host (1024 VFs).

Each figure is reported beside a baseline measured in the same run:
  * bare interpreter start (python -c pass) for the CLI start-up figures;
  * reading the very same sysfs files discover reads (raw os.open/os.read, and `cat`) for discover.
Run with the venv's python:  .venv/bin/python hack/bench.py [--runs N] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from sriovdra import fakehost  # noqa: E402
from sriovdra.host import sysfs as sysfs_mod  # noqa: E402
from sriovdra.host.discovery import discover  # noqa: E402
from sriovdra.host.paths import HostPaths  # noqa: E402


def _time_cmd(argv: list[str], runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        out.append(time.perf_counter() - t)
    return out


def _time_fn(fn, runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def _files_discover_reads(paths: HostPaths) -> list[str]:
    seen: list[str] = []
    original = sysfs_mod.Sysfs.read

    def recording(self, rel, *, expected=True):
        seen.append(self.path(rel))
        return original(self, rel, expected=expected)

    sysfs_mod.Sysfs.read = recording
    try:
        discover(paths).dra_devices()
    finally:
        sysfs_mod.Sysfs.read = original
    return [p for p in seen if os.path.exists(p)]


def _raw_read(files: list[str]) -> None:
    for p in files:
        fd = os.open(p, os.O_RDONLY)
        os.read(fd, 65536)
        os.close(fd)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = ap.parse_args()
    base = tempfile.mkdtemp(prefix="sriovdra-bench-", dir="/dev/shm" if os.access("/dev/shm", os.W_OK) else None)
    try:
        host = fakehost.build(os.path.join(REPO, "demo/hosts/large.yaml"), os.path.join(base, "large"))
        paths = HostPaths.resolve(host.root)
        cli = [sys.executable, "-m", "sriovdra"]
        script = shutil.which("sriovdra", path=os.path.dirname(sys.executable))
        files = _files_discover_reads(paths)
        n = args.runs
        rows = {
            "python -c pass (baseline)": _time_cmd([sys.executable, "-c", "pass"], n),
            "sriovdra --help": _time_cmd([script or "sriovdra", "--help"], n),
            "sriovdra discover --help": _time_cmd([*cli, "discover", "--help"], n),
            "sriovdra discover -o json, large host": _time_cmd(
                [*cli, "discover", "--sysfs-root", host.sysfs, "-o", "json"], n),
            "sriovdra discover (table), large host": _time_cmd(
                [*cli, "discover", "--sysfs-root", host.sysfs], n),
            f"raw read of the {len(files)} files discover reads (baseline)": _time_fn(lambda: _raw_read(files), n),
            "cat of the same files (baseline)": _time_cmd(["sh", "-c", f"cat {' '.join(files[:1])} >/dev/null"]
                                                          if not files else ["xargs", "-a", _list_file(base, files),
                                                                             "cat"], n),
            "discover() in-process, large host": _time_fn(lambda: discover(paths).dra_devices(), n),
        }
    finally:
        shutil.rmtree(base, ignore_errors=True)
    result = {k: {"median_ms": round(statistics.median(v) * 1000, 1), "min_ms": round(min(v) * 1000, 1)}
              for k, v in rows.items()}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        width = max(map(len, result))
        print(f"{'':{width}}  median      min   ({n} runs; machine: {os.cpu_count()} cores)")
        for k, v in result.items():
            print(f"{k:{width}}  {v['median_ms']:7.1f} ms {v['min_ms']:7.1f} ms")
    return 0


def _list_file(base: str, files: list[str]) -> str:
    path = os.path.join(base, "files.txt")
    with open(path, "w") as f:
        f.write("\n".join(files) + "\n")
    return path


if __name__ == "__main__":
    sys.exit(main())
