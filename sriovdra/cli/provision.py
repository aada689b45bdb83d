"""`sriovdra provision`: set the number of VFs on PFs (and the GUIDs of InfiniBand VFs).

Exit codes: 0 done or nothing to do, 1 a PF failed (kernel error, timeout, GUID step),
2 bad input (flags, config, unknown --pf, more VFs than sriov_totalvfs: nothing is changed),
4 refused because claims hold VFs of a PF that would change (and nothing failed).
"""

from __future__ import annotations

import sys
import threading
from enum import Enum
from typing import Annotated, Optional

import typer

from sriovdra.cli.options import DIR, DevRoot, FILE, HostRoot, Output, OutputFormat, SysfsRoot, host_paths
from sriovdra.cli.output import EXIT_ERROR, EXIT_FAILED, EXIT_REFUSED, die, emit, tabulate, warn


class GuidMode(str, Enum):
    derived = "derived"
    none = "none"


def provision_command(
    ctx: typer.Context,
    pf: Annotated[Optional[list[str]], typer.Option(
        "--pf", metavar="NAME|PCI", help="PF by netdev or PCI address (repeatable); needs --num-vfs.")] = None,
    num_vfs: Annotated[Optional[str], typer.Option(
        "--num-vfs", metavar="N|max", help="VFs for every --pf (max: sriov_totalvfs).")] = None,
    config: Annotated[Optional[str], typer.Option(
        "--config", metavar="FILE", click_type=FILE,
        help="YAML provisioning config (instead of --pf/--num-vfs).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show the plan; change nothing.")] = False,
    force: Annotated[bool, typer.Option(
        "--force", help="Change PFs even when claims hold their VFs (or the checkpoint is unreadable).")] = False,
    timeout: Annotated[Optional[float], typer.Option(
        "--timeout", metavar="S", help="Seconds to wait for the VFs (default: config's, else 60).")] = None,
    no_autoprobe: Annotated[bool, typer.Option(
        "--no-autoprobe", help="New VFs stay unbound (sriov_drivers_autoprobe 0).")] = False,
    guids: Annotated[Optional[GuidMode], typer.Option(
        "--guids", help="InfiniBand VF GUIDs for entries without `guids` (default derived).")] = None,
    state_dir: Annotated[str, typer.Option(
        envvar="SRIOVDRA_STATE_DIR", metavar="DIR", click_type=DIR, help="serve's --state-dir: claims holding VFs.")]
    = "/var/lib/sriovdra",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress lines on stderr.")] = False,
    output: Output = OutputFormat.table,
    host_root: HostRoot = None,
    sysfs_root: SysfsRoot = None,
    dev_root: DevRoot = None,
) -> None:
    """Set the number of VFs on PFs (sriov_numvfs) and InfiniBand VF GUIDs."""
    from sriovdra import provisioning
    from sriovdra.host.discovery import DiscoveryError
    from sriovdra.provisioner import Options, provision

    paths = host_paths(ctx, host_root, sysfs_root, dev_root)
    autoprobe = False if no_autoprobe else None
    guid_mode = guids.value if guids else None
    try:
        if config is not None:
            if pf or num_vfs is not None:
                die("--config and --pf/--num-vfs: give one of them")
            cfg = provisioning.with_overrides(_read_config(config), timeout=timeout, autoprobe=autoprobe,
                                              guids=guid_mode)
        else:
            if num_vfs is None:
                die("--num-vfs: required with --pf (or give --config FILE)")
            cfg = provisioning.flags_config(pf or [], num_vfs, timeout=timeout, autoprobe=autoprobe, guids=guid_mode)
    except provisioning.ProvisionError as e:
        die(str(e))
    lock = threading.Lock()

    def progress(line: str) -> None:
        with lock:
            sys.stderr.write(f"{line}\n")
            sys.stderr.flush()

    try:
        report = provision(paths, cfg, Options(state_dir=state_dir, force=force, dry_run=dry_run,
                                               progress=None if quiet else progress))
    except DiscoveryError as e:
        die(str(e))
    emit(report.to_dict(), output, lambda: render_table(report))
    if output == OutputFormat.table:
        for line in report.unmatched:
            warn(line)
    if report.errors:
        for line in report.errors:
            sys.stderr.write(f"error: {line}\n")
        raise typer.Exit(EXIT_ERROR)
    if report.failed:
        raise typer.Exit(EXIT_FAILED)
    if report.refused:
        raise typer.Exit(EXIT_REFUSED)


def _read_config(path: str):
    from sriovdra.provisioning import ProvisionError, parse_config_text

    try:
        with open(path) as f:
            text = f.read()
    except OSError as e:
        raise ProvisionError(f"--config {path}: {e.strerror}") from None
    return parse_config_text(text, path)


def render_table(report) -> str:
    if report.errors:
        head = "Nothing was changed (bad input)."
    elif report.dry_run:
        head = "Dry run: nothing was changed."
    else:
        head = ""
    pf_rows = [[p.plan.address, p.plan.netdev or "-", p.plan.link_type, p.plan.before, p.plan.wanted,
                "-" if p.after is None else p.after, p.action] for p in report.pfs]
    parts = [head] if head else []
    if pf_rows:
        parts.append(tabulate(pf_rows, ["PF", "NETDEV", "LINK", "BEFORE", "WANTED", "AFTER", "ACTION"]))
    else:
        parts.append("(no SR-IOV PF selected)")
    vf_rows = []
    for p in report.pfs:
        for vf in p.vfs:
            guid = vf["nodeGUID"] if p.plan.link_type == "infiniband" else None
            if vf["plannedGUID"] and vf["plannedGUID"] != guid:
                guid = f"{guid or '-'} -> {vf['plannedGUID']}"
            vf_rows.append([p.plan.address, vf["vfID"], vf["pciAddress"], vf["driver"] or "-", vf["netdev"] or "-",
                            vf["rdmaDevice"] or "-", guid or "-", vf["guidAction"] or "-"])
    if vf_rows:
        parts.append(tabulate(vf_rows, ["PF", "VF", "PCI", "DRIVER", "NETDEV", "RDMA", "NODE/PORT GUID", "GUID STEP"]))
    problems = [f"{p.plan.name}: {msg}" if not msg.startswith(p.plan.address) else msg
                for p in report.pfs for msg in p.problems]
    problems += [f"checkpoint: {c}" for c in report.checkpoint_problems if not any(c in m for m in problems)]
    if problems:
        parts.append("Problems:\n" + "\n".join(f"  {m}" for m in problems))
    return "\n\n".join(parts)
