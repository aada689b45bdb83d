#!/usr/bin/env python3
"""The performance budget (issue 7): every figure beside a baseline measured in the same run, and the target.

Runs hack/bench.py's CLI figures and hack/bench_serve.py's serve figures on one large demo host
(1024 VFs), plus the baselines only this report needs (interpreter + import floors), and prints a
markdown table: figure | sriovdra | baseline | target | met?. Targets: the Go SR-IOV DRA driver's
figures on this kind of machine, --help within 2x of a bare interpreter, discover within 3x of
reading its files with cat.
    .venv/bin/python hack/bench_budget.py [--runs N] [--claims N] [--quick] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from dataclasses import asdict, dataclass

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402
import bench_serve  # noqa: E402
from bench_common import large_host, pct, python_floor, scratch_dir  # noqa: E402

# The Go SR-IOV DRA driver against a local API stand-in on this kind of machine (issue 7).
GO_REGISTRATION_S = 0.10
GO_RSS_IDLE_MB = 59.0
GO_PREPARE_P50_MS = 5.0
GO_PREPARE_P99_MS = 10.0
GO_REPEAT_MS = 1.9
GO_UNPREPARE_MS = 1.6
HELP_FACTOR = 2.0
DISCOVER_FACTOR = 3.0


@dataclass
class Row:
    figure: str
    value: float
    unit: str
    baseline: str  # what the baseline is, with its value
    target: str  # "" when the issue sets none
    met: bool | None  # None: no target


def _ms(seconds: list[float]) -> float:
    return statistics.median(seconds) * 1000


def cli_rows(cli: dict[str, list[float]], nfiles: int) -> list[Row]:
    bare, helped = _ms(cli[bench.PASS]), _ms(cli[bench.HELP])
    cat, discover = _ms(cli[bench.CAT]), _ms(cli[bench.DISCOVER_JSON])
    return [
        Row("`sriovdra --help` (median)", helped, "ms", f"`python3 -c pass` {bare:.1f} ms",
            f"<= {HELP_FACTOR:g}x baseline", helped <= HELP_FACTOR * bare),
        Row("`sriovdra discover -o json`, large host (median)", discover, "ms", f"`python3 -c pass` {bare:.1f} ms",
            "", None),
        Row("`sriovdra discover` (table), large host (median)", _ms(cli[bench.DISCOVER_TABLE]), "ms",
            f"`python3 -c pass` {bare:.1f} ms", "", None),
        Row("`sriovdra discover -o json` vs its sysfs reads", discover, "ms",
            f"`cat` of the {nfiles} files it reads {cat:.1f} ms", f"<= {DISCOVER_FACTOR:g}x baseline",
            discover <= DISCOVER_FACTOR * cat),
        Row("discover() in process, large host (median)", _ms(cli[bench.IN_PROCESS]), "ms",
            f"raw open/read of the same files {_ms(cli[bench.RAW_READ]):.1f} ms", "", None),
    ]


def serve_rows(fig: dict, floors: dict[str, tuple[float, float]], late: dict | None) -> list[Row]:
    grpc_s = floors["grpc"][0]
    kube_s, kube_mb = floors["grpc,kubernetes.client"]
    api50, api99 = pct(fig["api_get_ms"], 50), pct(fig["api_get_ms"], 99)
    api = f"API stand-in GET p50 {api50:.2f} / p99 {api99:.2f} ms"
    rows = [
        Row("registration socket after exec (`--drivers`, as the chart runs it)", fig["socket_s"], "s",
            f"interpreter + `import grpc` {grpc_s:.2f} s", f"<= {GO_REGISTRATION_S:g} s (Go)",
            fig["socket_s"] <= GO_REGISTRATION_S)]
    if late is not None:
        rows.append(Row("registration socket after exec, without `--drivers`", late["socket_s"], "s",
                        f"interpreter + `import grpc` {grpc_s:.2f} s", f"<= {GO_REGISTRATION_S:g} s (Go)",
                        late["socket_s"] <= GO_REGISTRATION_S))
    rows.append(Row(f"all {bench_serve.SLICES} ResourceSlices published after exec", fig["slices_s"], "s",
                    f"interpreter + `import grpc, kubernetes.client` {kube_s:.2f} s", "", None))
    for size in bench_serve.SIZES:
        new, unprepare = fig[f"prepare_new_{size}"], pct(fig[f"unprepare_{size}"], 50)
        rows += [
            Row(f"prepare, new claim, {size} device(s), p50", pct(new, 50), "ms", api,
                f"<= {GO_PREPARE_P50_MS:g} ms (Go)", pct(new, 50) <= GO_PREPARE_P50_MS),
            Row(f"prepare, new claim, {size} device(s), p99", pct(new, 99), "ms", api,
                f"<= {GO_PREPARE_P99_MS:g} ms (Go)", pct(new, 99) <= GO_PREPARE_P99_MS),
            Row(f"prepare, repeat, {size} device(s), p50", pct(fig[f"prepare_repeat_{size}"], 50), "ms", api,
                f"<= {GO_REPEAT_MS:g} ms (Go)", pct(fig[f"prepare_repeat_{size}"], 50) <= GO_REPEAT_MS),
            Row(f"unprepare, {size} device(s), p50", unprepare, "ms", "(no API call)",
                f"<= {GO_UNPREPARE_MS:g} ms (Go)", unprepare <= GO_UNPREPARE_MS),
        ]
    floor = f"interpreter + `import grpc, kubernetes.client` {kube_mb:.1f} MB"
    rows += [
        Row("RSS of serve, idle", fig["rss_idle"], "MB", floor, f"<= {GO_RSS_IDLE_MB:g} MB (Go)",
            fig["rss_idle"] <= GO_RSS_IDLE_MB),
        Row("RSS of serve, after the sequential claims", fig["rss_after"], "MB", floor, "", None),
        Row(f"RSS of serve, peak with {bench_serve.LOAD_THREADS} threads preparing", fig["rss_peak"], "MB", floor,
            "", None),
    ]
    return rows


def markdown(rows: list[Row], header: str) -> str:
    lines = [header, "", "| figure | sriovdra | baseline (same run) | target | met? |", "|---|---|---|---|---|"]
    for r in rows:
        met = "-" if r.met is None else ("yes" if r.met else "**no**")
        digits = 3 if r.unit == "s" else 2 if r.unit == "ms" and r.value < 10 else 1
        lines.append(f"| {r.figure} | {r.value:.{digits}f} {r.unit} | {r.baseline} | {r.target or '-'} | {met} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=15, help="runs per CLI figure (median reported)")
    ap.add_argument("--claims", type=int, default=60, help="claims per size for the prepare figures")
    ap.add_argument("--quick", action="store_true", help="3 runs, 5 claims: a smoke run, figures are rough")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    runs, claims = (3, 5) if args.quick else (args.runs, args.claims)
    with scratch_dir() as base:
        host = large_host(base)
        cli, nfiles = bench.cli_figures(base, runs, host=host)
        floors = {m: python_floor(m) for m in ("grpc", "grpc,kubernetes.client")}
        dirs = [os.path.join(base, d) for d in ("serve", "late")]
        for d in dirs:
            os.makedirs(d)
        fig = bench_serve.serve_figures(dirs[0], claims, drivers=True, host=host)
        late = bench_serve.serve_figures(dirs[1], 0, drivers=False, host=host)
    rows = cli_rows(cli, nfiles) + serve_rows(fig, floors, late)
    if args.json:
        print(json.dumps([asdict(r) for r in rows], indent=2))
    else:
        print(markdown(rows, f"Performance budget: 1024-VF fake host, {os.cpu_count()} cores, {runs} runs per CLI "
                             f"figure, {claims} claims per size"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
