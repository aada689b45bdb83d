#!/usr/bin/env python3
"""Benchmarks for the CLI: start-up time and discover on the large demo host (1024 VFs).

Each figure is reported beside a baseline measured in the same run:
  * bare interpreter start (python -c pass) for the CLI start-up figures;
  * reading the very same sysfs files discover reads (raw os.open/os.read, and `cat`) for discover.
Run with the venv's python:  .venv/bin/python hack/bench.py [--runs N] [--json]
(hack/bench_budget.py puts these beside the serve figures and the targets.)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_common import large_host, scratch_dir, time_cmd, time_fn  # noqa: E402

PASS = "python -c pass (baseline)"
HELP = "sriovdra --help"
DISCOVER_HELP = "sriovdra discover --help"
DISCOVER_JSON = "sriovdra discover -o json, large host"
DISCOVER_TABLE = "sriovdra discover (table), large host"
RAW_READ = "raw read of the files discover reads (baseline)"
CAT = "cat of the same files (baseline)"
IN_PROCESS = "discover() in-process, large host"


def files_discover_reads(paths) -> list[str]:
    """Every sysfs file discover reads, in order, found by recording Sysfs.read (all its reads go there)."""
    from sriovdra.host import sysfs as sysfs_mod
    from sriovdra.host.discovery import discover

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


def cli_figures(base: str, runs: int, host=None) -> tuple[dict[str, list[float]], int]:
    """Seconds per run of each figure (and how many files discover reads), on the large host (built
    under base unless given)."""
    from sriovdra.host.discovery import discover
    from sriovdra.host.paths import HostPaths

    host = host or large_host(base)
    paths = HostPaths.resolve(host.root)
    cli = [sys.executable, "-m", "sriovdra"]
    script = shutil.which("sriovdra", path=os.path.dirname(sys.executable)) or "sriovdra"
    files = files_discover_reads(paths)
    listing = os.path.join(base, "files.txt")
    with open(listing, "w") as f:
        f.write("\n".join(files) + "\n")
    return {
        PASS: time_cmd([sys.executable, "-c", "pass"], runs),
        HELP: time_cmd([script, "--help"], runs),
        DISCOVER_HELP: time_cmd([*cli, "discover", "--help"], runs),
        DISCOVER_JSON: time_cmd([*cli, "discover", "--sysfs-root", host.sysfs, "-o", "json"], runs),
        DISCOVER_TABLE: time_cmd([*cli, "discover", "--sysfs-root", host.sysfs], runs),
        RAW_READ: time_fn(lambda: _raw_read(files), runs),
        CAT: time_cmd(["xargs", "-a", listing, "cat"], runs),  # xargs: as few cat processes as ARG_MAX allows
        IN_PROCESS: time_fn(lambda: discover(paths).dra_devices(), runs),
    }, len(files)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = ap.parse_args()
    with scratch_dir() as base:
        rows, nfiles = cli_figures(base, args.runs)
    result = {k.replace("the files", f"the {nfiles} files"): {"median_ms": round(statistics.median(v) * 1000, 1),
                                                            "min_ms": round(min(v) * 1000, 1)}
              for k, v in rows.items()}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        width = max(map(len, result))
        print(f"{'':{width}}  median      min   ({args.runs} runs; machine: {os.cpu_count()} cores)")
        for k, v in result.items():
            print(f"{k:{width}}  {v['median_ms']:7.1f} ms {v['min_ms']:7.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
