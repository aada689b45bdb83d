"""What the benchmarks under hack/ share: timing, percentiles, RSS, a scratch dir, the large demo host."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)
LARGE_HOST = os.path.join(REPO, "demo/hosts/large.yaml")  # 1024 VFs


def time_cmd(argv: list[str], runs: int) -> list[float]:
    """Wall seconds of each of `runs` runs of argv (output discarded)."""
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        out.append(time.perf_counter() - t)
    return out


def time_fn(fn: Callable[[], object], runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def pct(values: list[float], p: float) -> float:
    """The p-th percentile, nearest rank."""
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def proc_mb(pid: int, field: str = "VmRSS") -> float:
    """A /proc/<pid>/status size field in MB (VmRSS now, VmHWM the peak)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    return 0.0


def python_floor(modules: str) -> tuple[float, float]:
    """(seconds, RSS MB) of a bare interpreter that imports `modules` (comma-separated) and exits."""
    code = (f"import {modules}\n" if modules else "") + \
        "print([l.split()[1] for l in open('/proc/self/status') if l.startswith('VmRSS:')][0])"
    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return time.perf_counter() - t, int(out) / 1024


@contextlib.contextmanager
def scratch_dir() -> Iterator[str]:
    """A temp dir on tmpfs when there is one (fake hosts are tens of thousands of files)."""
    base = tempfile.mkdtemp(prefix="sriovdra-bench-", dir="/dev/shm" if os.access("/dev/shm", os.W_OK) else None)
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


def large_host(base: str):
    """demo/hosts/large.yaml built with fakehost under base (a sriovdra.fakehost.FakeHost)."""
    from sriovdra import fakehost

    return fakehost.build(LARGE_HOST, os.path.join(base, "large"))
