"""`sriovdra checkpoint show`: the driver's persisted claim state, checksum verified."""

from __future__ import annotations

import os
import time
from typing import Annotated

import typer

from sriovdra.cli.options import Output, OutputFormat
from sriovdra.cli.output import EXIT_FAILED, die, emit, tabulate


def show_command(
    state_dir: Annotated[str, typer.Option(envvar="SRIOVDRA_STATE_DIR", help="serve's --state-dir.")]
    = "/var/lib/sriovdra",
    output: Output = OutputFormat.table,
) -> None:
    """Print the prepared claims serve has recorded (exit 1 if a checkpoint is corrupt)."""
    from sriovdra.checkpoint import CheckpointError, read_only
    from sriovdra.model import DRIVERS

    found, problems, claims = [], [], []
    for driver in DRIVERS:
        path = os.path.join(state_dir, f"{driver}.checkpoint.json")
        if not os.path.exists(path):
            continue
        found.append(path)
        try:
            loaded = read_only(path)
        except CheckpointError as e:
            problems.append(str(e))
            continue
        if loaded.problem:
            problems.append(loaded.problem)
        for rec in sorted(loaded.records.values(), key=lambda r: (r.claim.namespace, r.claim.name)):
            claims.append({"driver": driver, **rec.to_dict()})
    if not found:
        die(f"no checkpoint in {state_dir} (has serve prepared anything on this node? is --state-dir right?)")
    emit({"stateDir": state_dir, "files": found, "problems": problems, "claims": claims}, output,
         lambda: _table(claims, problems))
    if problems:
        raise typer.Exit(EXIT_FAILED)


def _table(claims: list[dict], problems: list[str]) -> str:
    rows = [[c["driver"], f"{c['claim']['namespace']}/{c['claim']['name']}", c["claim"]["uid"], c["state"],
             ", ".join(d["device"] for d in c["devices"]) or "-", _attached(c["devices"]),
             "\n".join(c["specs"]) or "-",
             time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(c["updated"]))] for c in claims]
    text = tabulate(rows, ["DRIVER", "CLAIM", "UID", "STATE", "DEVICES", "IN POD", "CDI SPECS", "UPDATED"]) if rows \
        else "(no prepared claims)"
    return text + "".join(f"\nerror: {p}" for p in problems)


def _attached(devices: list[dict]) -> str:
    """Where each attached netdev is: 'ns/pod:net1 (attached)'."""
    out = [f"{a['pod_name']}:{a['if_name'] or '?'} ({a['state']})" for d in devices if (a := d.get("attachment"))]
    return "\n".join(out) or "-"
