"""`sriovdra cdi generate`: the CDI spec serve would write for a claim with the given devices."""

from __future__ import annotations

import json
import os
from typing import Annotated, Optional

import typer

from sriovdra.cli.options import DIR, DevRoot, FILE, HostRoot, Output, OutputFormat, SysfsRoot, host_paths
from sriovdra.cli.output import die, emit, warn


def generate_command(
    ctx: typer.Context,
    device: Annotated[Optional[list[str]], typer.Option(
        "--device", "-d", help="DRA device name (repeatable; default: every device of the driver).")] = None,
    driver: Annotated[Optional[str], typer.Option(help="Driver whose devices to use (default: the first "
                                                       "device's, else sriovnetwork.openshift.io).")] = None,
    claim_uid: Annotated[str, typer.Option(help="Claim UID the spec is for.")] = "00000000-0000-0000-0000-000000000000",
    config: Annotated[Optional[str], typer.Option(
        click_type=FILE,
        help="Opaque config parameters (VfConfig or IbConfig) as a JSON/YAML file, applied to every device.")] = None,
    admin_access: Annotated[bool, typer.Option(help="As for an admin-access claim.")] = False,
    directory: Annotated[Optional[str], typer.Option("--dir", click_type=DIR,
                                                         help="Write the spec file into this dir.")] = None,
    output: Output = OutputFormat.json,
    host_root: HostRoot = None,
    sysfs_root: SysfsRoot = None,
    dev_root: DevRoot = None,
) -> None:
    """Print (or write with --dir) the CDI spec serve would write."""
    from sriovdra import cdi
    from sriovdra.cli.discover import inventory_or_die
    from sriovdra.config import DECODERS, EMPTY, ConfigError
    from sriovdra.model import DRIVERS, SRIOV_DRIVER
    from sriovdra.host.discovery import pkey_reader
    from sriovdra.partition import check_device

    paths = host_paths(ctx, host_root, sysfs_root, dev_root)
    inv = inventory_or_die(paths)
    by_name = {d.name: d for d in inv.dra_devices()}
    unknown = [n for n in device or [] if n not in by_name]
    if unknown:
        die(f"--device: no such device {', '.join(unknown)} (see `sriovdra discover`)")
    if driver is not None and driver not in DRIVERS:
        die(f"--driver: unknown driver {driver}; known: {', '.join(DRIVERS)}")
    driver = driver or (by_name[device[0]].driver if device else SRIOV_DRIVER)
    chosen = [by_name[n] for n in device] if device else [d for d in inv.dra_devices() if d.driver == driver]
    wrong = [d.name for d in chosen if d.driver != driver]
    if wrong:
        die(f"--device: {', '.join(wrong)} belong(s) to another driver than {driver}")
    if not chosen:
        die(f"no {driver} devices on this node")
    settings = EMPTY[driver]
    if config:
        try:
            settings = DECODERS[driver](_load(config))
        except ConfigError as e:
            die(f"--config {config}: {e}")
    # as serve does at prepare: IbConfig.pkey looked up in each port's P_Key table (for _PKEY_INDEX)
    read = pkey_reader(paths, lambda problem: warn(f"P_Key table: {problem}"))
    items = [cdi.SpecItem(d, settings, admin_access, i, check_device(inv, d, getattr(settings, "pkey", None), read))
             for i, d in enumerate(chosen)]
    try:
        spec = cdi.claim_spec(driver, claim_uid, items, inv, paths.dev_file)
        name = cdi.spec_file_name(spec.kind, claim_uid)
        if directory:
            cdi.write_spec(directory, name, spec)
            typer.echo(os.path.join(directory, name))
            return
        data = spec.to_json()
    except cdi.CdiError as e:
        die(str(e))
    emit(data, output, lambda: json.dumps(data, indent=2))


def _load(path: str) -> object:
    import yaml

    try:
        with open(path) as f:
            return yaml.safe_load(f)
    except OSError as e:
        die(f"--config {path}: {e.strerror}")
    except yaml.YAMLError as e:
        die(f"--config {path}: not valid JSON/YAML: {e}")
