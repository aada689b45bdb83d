"""`sriovdra doctor`: pre-install checks of this node, each with a one-line fix."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from sriovdra.cli.options import (
    DEFAULT_CNI_BIN_DIR,
    DIR,
    FILE,
    CniBinDir,
    DevRoot,
    HostRoot,
    Output,
    OutputFormat,
    SysfsRoot,
    cni_bin_dirs,
    host_paths,
)
from sriovdra.cli.output import EXIT_FAILED, emit, tabulate
from sriovdra.doctor import DEFAULT_CDI_DIRS, DEFAULT_KUBELET_ROOT, Check, DoctorOptions, failed, run_checks
from sriovdra.host.runtime_config import CONTAINERD_CONFIG


def doctor_command(
    ctx: typer.Context,
    output: Output = OutputFormat.table,
    kubelet_root_dir: Annotated[str, typer.Option(
        envvar="SRIOVDRA_KUBELET_ROOT_DIR", click_type=DIR, help="The kubelet's --root-dir.")] = DEFAULT_KUBELET_ROOT,
    cdi_dir: Annotated[Optional[list[str]], typer.Option(
        help="CDI spec dir to check (repeatable); the last one is where serve writes.")] = None,
    containerd_config: Annotated[str, typer.Option(
        click_type=FILE, help="containerd configuration file.")] = CONTAINERD_CONFIG,
    cni_bin_dir: CniBinDir = DEFAULT_CNI_BIN_DIR,
    host_root: HostRoot = None,
    sysfs_root: SysfsRoot = None,
    dev_root: DevRoot = None,
) -> None:
    """Check this node's prerequisites (exit code 1 on any FAIL).

    Each check prints PASS, WARN, FAIL or SKIP with a one-line fix.
    """
    paths = host_paths(ctx, host_root, sysfs_root, dev_root)
    opts = DoctorOptions(kubelet_root_dir=kubelet_root_dir, cdi_dirs=tuple(cdi_dir or DEFAULT_CDI_DIRS),
                         containerd_config=containerd_config,
                         cni_bin_dirs=cni_bin_dirs(cni_bin_dir))
    checks = run_checks(paths, opts)
    emit({"failed": failed(checks), "checks": [c.to_dict() for c in checks]}, output, lambda: render_table(checks))
    if failed(checks):
        raise typer.Exit(EXIT_FAILED)


def render_table(checks: list[Check]) -> str:
    rows = [[c.status, c.name, c.message, c.fix or ""] for c in checks]
    counts = {s: sum(c.status == s for c in checks) for s in ("PASS", "WARN", "FAIL", "SKIP")}
    summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    return tabulate(rows, ["STATUS", "CHECK", "RESULT", "FIX"], maxcolwidths=[None, None, 60, 50]) + \
        f"\n\n{summary}"
