"""hack/bench_budget.py runs end to end in --quick mode and reports every figure (no timing asserts:
the figures depend on the machine; the budget is read by people, see README "Performance")."""

from __future__ import annotations

import json
import os
import subprocess
import sys

HACK = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "hack")
FIGURES = [
    "`sriovdra --help` (median)",
    "`sriovdra discover -o json`, large host (median)",
    "`sriovdra discover` (table), large host (median)",
    "`sriovdra discover -o json` vs its sysfs reads",
    "discover() in process, large host (median)",
    "registration socket after exec (`--drivers`, as the chart runs it)",
    "registration socket after exec, without `--drivers`",
    "all 9 ResourceSlices published after exec",
    *[f"{what}, {size} device(s), {p}" for size in (1, 8)
      for what, p in (("prepare, new claim", "p50"), ("prepare, new claim", "p99"), ("prepare, repeat", "p50"),
                      ("unprepare", "p50"))],
    "RSS of serve, idle",
    "RSS of serve, after the sequential claims",
    "RSS of serve, peak with 4 threads preparing",
]


def test_quick_run_reports_every_figure_beside_a_baseline_and_renders_the_table():
    proc = subprocess.run([sys.executable, os.path.join(HACK, "bench_budget.py"), "--quick", "--json"],
                          capture_output=True, text=True, timeout=600)  # a hang guard, not a speed limit
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert sorted(r["figure"] for r in rows) == sorted(FIGURES)
    for r in rows:
        assert r["value"] > 0 and r["baseline"], r
        assert (r["met"] is None) == (r["target"] == ""), r  # a verdict exactly where the issue sets a target
    assert any("cat` of the" in r["baseline"] for r in rows)

    sys.path.insert(0, HACK)
    try:
        import bench_budget
    finally:
        sys.path.remove(HACK)
    table = bench_budget.markdown([bench_budget.Row(**r) for r in rows], "title").splitlines()
    assert table[2] == "| figure | sriovdra | baseline (same run) | target | met? |"
    assert [line.split(" | ")[0].lstrip("| ") for line in table[4:]] == [r["figure"] for r in rows]
