"""`sriovdra checkpoint show`: the driver's persisted claim state, checksum verified."""

from __future__ import annotations

import time
from typing import Annotated

import typer

from sriovdra.cli.options import DIR, Output, OutputFormat
from sriovdra.cli.output import EXIT_FAILED, die, emit, tabulate


def show_command(
    state_dir: Annotated[str, typer.Option(envvar="SRIOVDRA_STATE_DIR", click_type=DIR, help="serve's --state-dir.")]
    = "/var/lib/sriovdra",
    output: Output = OutputFormat.table,
) -> None:
    """Print the prepared claims serve has recorded (exit 1 if a checkpoint is corrupt)."""
    from sriovdra.checkpoint import read_state_dir
    from sriovdra.model import DRIVERS

    state = read_state_dir(state_dir, DRIVERS)
    found, problems = state.files, state.problems
    claims = [{"driver": driver, **rec.to_dict()} for driver, rec in
              sorted(state.records, key=lambda r: (DRIVERS.index(r[0]), r[1].claim.namespace, r[1].claim.name))]
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
