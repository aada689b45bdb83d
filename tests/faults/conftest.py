"""Crash consistency and storage faults (marker `faults`): serve is SIGKILLed at every named fault point
(sriovdra.faults.POINTS), restarted, the kubelet's and the runtime's replays are played, and the node
must converge. The outcome of every case goes into a report table (fault point x outcome), printed at
the end of the session and written to $SRIOVDRA_FAULT_REPORT (default: <basetemp>/faults.md)."""

from __future__ import annotations

import os

import pytest

from sriovdra import faults

_ROWS = pytest.StashKey[list]()


def pytest_configure(config):
    config.stash[_ROWS] = []


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if item.get_closest_marker("faults") is None or not item.nodeid.startswith("tests/faults/"):
        return
    if report.when == "call" or (report.when == "setup" and not report.passed):
        case = dict(item.user_properties).get("fault_case") or item.name
        what = dict(item.user_properties).get("fault_outcome", "")
        if report.skipped:
            result = "SKIP"
            what = what or _first_line(report.longrepr)
        elif report.failed:
            result = "FAIL"
            what = f"{what}; " if what else ""
            what += _first_line(report.longrepr)
        else:
            result = "pass"
        item.config.stash[_ROWS].append((case, what, result))


def _first_line(longrepr) -> str:
    if isinstance(longrepr, tuple):  # a skip: (file, line, reason)
        return str(longrepr[2])
    text = str(getattr(longrepr, "reprcrash", None) and longrepr.reprcrash.message or longrepr)
    return text.strip().splitlines()[0][:200] if text.strip() else ""


def report_table(rows: list[tuple[str, str, str]]) -> str:
    """Markdown: every fault point (a point without a case shows as "not run"), then the storage cases."""
    order = [name for name, _ in faults.POINTS]
    seen = {case for case, _, _ in rows}
    rows = rows + [(name, "not run", "-") for name in order if name not in seen]
    lines = ["| case | outcome | result |", "|---|---|---|"]
    for case, what, result in sorted(rows, key=lambda r: (order.index(r[0]) if r[0] in order else len(order), r[0])):
        lines.append(f"| {case} | {what.replace('|', '/')} | {result} |")
    return "\n".join(lines) + "\n"


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    rows = config.stash.get(_ROWS, [])
    if not rows:
        return
    table = report_table(rows)
    path = os.environ.get("SRIOVDRA_FAULT_REPORT") or os.path.join(str(config.option.basetemp or "."), "faults.md")
    try:
        with open(path, "w") as f:
            f.write("# Fault injection report\n\n" + table)
        where = f" (written to {path})"
    except OSError as e:
        where = f" (not written to {path}: {e.strerror})"
    terminalreporter.write_sep("=", f"fault report{where}")
    terminalreporter.write(table)
