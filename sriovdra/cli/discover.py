"""`sriovdra discover`: the node's SR-IOV / InfiniBand inventory and its DRA devices."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from sriovdra.cli.options import DevRoot, FILE, HostRoot, Output, OutputFormat, SysfsRoot, host_paths
from sriovdra.cli.output import die, emit, tabulate, warn
from sriovdra.host.discovery import DiscoveryError, discover, with_pkey_tables
from sriovdra.host.paths import HostPaths
from sriovdra.model import IB_DRIVER, Inventory, attribute_json
from sriovdra.policy import Decision

SCHEMA_VERSION = 1

DevicePolicyPath = Annotated[Optional[str], typer.Option(
    "--device-policy", envvar="SRIOVDRA_DEVICE_POLICY", metavar="FILE", click_type=FILE,
    help="Device policy file: which devices are published, extra attributes (see README, Device policy).")]


def discover_command(
    ctx: typer.Context,
    output: Output = OutputFormat.table,
    device_policy: DevicePolicyPath = None,
    host_root: HostRoot = None,
    sysfs_root: SysfsRoot = None,
    dev_root: DevRoot = None,
) -> None:
    """Print the node's VFs and InfiniBand ports and their DRA devices.

    With --device-policy: which of them are published, why not, and the policy's attributes."""
    paths = host_paths(ctx, host_root, sysfs_root, dev_root)
    inv = inventory_or_die(paths)
    if output != OutputFormat.table:  # the table shows no P_Key tables: read them (firmware queries) only here
        with_pkey_tables(inv, paths)
    data = {"schemaVersion": SCHEMA_VERSION, "sysfsRoot": paths.sysfs, **inv.to_dict()}
    decisions = None
    if device_policy is not None:
        decisions = decisions_or_die(device_policy, inv)
        data["devicePolicy"] = device_policy
        data["devices"] = [_with_policy(d, decisions[d["name"]]) for d in data["devices"]]
    emit(data, output, lambda: render_table(inv, decisions))
    if output == OutputFormat.table and inv.problems:
        warn(f"{len(inv.problems)} sysfs file(s) could not be read; those fields are left out:")
        for p in inv.problems:
            warn(f"  {p}")


def inventory_or_die(paths: HostPaths) -> Inventory:
    """Discover, or exit 2 with the reason (a missing sysfs root is the only fatal case)."""
    try:
        return discover(paths)
    except DiscoveryError as e:
        die(str(e))


def decisions_or_die(path: str, inv: Inventory) -> dict[str, Decision]:
    """What the policy in `path` does to each device, or exit 2 with what `serve` would refuse."""
    from sriovdra.policyfile import PolicyFileError, read_policy

    try:
        policy = read_policy(path, check=lambda p: p.check(inv))
    except PolicyFileError as e:
        die(str(e))
    return {d.device.name: d for d in policy.decide(inv)}


def _with_policy(device: dict, decision: Decision) -> dict:
    """A device's JSON with what the policy does to it: `attributes` become what the slice carries."""
    policy = {"published": decision.published, "reason": decision.reason, "rule": decision.rule,
              "attributes": {k: attribute_json(v) for k, v in decision.attributes.items()}}
    return {**device, "attributes": decision.device.slice_attributes(), "policy": policy}


def _policy_cells(decision: Decision) -> list[str]:
    published = "yes" if decision.published else f"no: rules[{decision.rule}]" if decision.rule is not None \
        else "no: not included"
    extra = ",".join(f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in decision.attributes.items())
    return [published, extra or "-"]


def render_table(inv: Inventory, decisions: dict[str, Decision] | None = None) -> str:
    host = f"Host: {inv.host.kind}" + (f" ({inv.host.hypervisor})" if inv.host.hypervisor else "")
    pf_rows = []
    for fn in inv.pfs:
        uplink = fn.uplink
        sriov = f"{fn.sriov_numvfs or 0}/{fn.sriov_totalvfs}" if fn.sriov_capable else "-"
        pf_rows.append([
            fn.address, uplink.name if uplink else "-", fn.driver or "-", f"{fn.vendor}:{fn.device}",
            fn.numa_node, fn.pcie_root or "-", sriov, fn.eswitch_mode or "-", inv.link_type(fn),
            ",".join(r.name for r in fn.rdma_devices) or "-",
        ])
    dev_rows = []
    for d in inv.dra_devices():
        fn = inv.function(d.pci_address)
        parent = inv.parent(fn) if fn else None
        a = d.attributes
        state = a.get("portState") if d.driver == IB_DRIVER else (
            fn.uplink.operstate if fn and fn.uplink else "-")
        dev_rows.append([
            d.name, d.driver, fn.role if fn else "-", d.pci_address,
            (parent.uplink.name if parent and parent.uplink else parent.address if parent else "-"),
            d.netdev or "-", d.rdma_device or "-", a.get("numaNode", "-"), state or "-",
            (fn.driver if fn else None) or "-",
            *(_policy_cells(decisions[d.name]) if decisions is not None else []),
        ])
    parts = [host, ""]
    parts.append("Physical functions")
    parts.append(tabulate(pf_rows, ["PCI", "NETDEV", "DRIVER", "ID", "NUMA", "PCIE ROOT", "VFS", "ESWITCH",
                                    "LINK", "RDMA"]) if pf_rows else "(none)")
    headers = ["NAME", "DRIVER", "TYPE", "PCI", "PARENT", "NETDEV", "RDMA", "NUMA", "STATE", "KERNEL DRIVER"]
    title = f"DRA devices ({len(dev_rows)})"
    if decisions is not None:
        headers += ["PUBLISHED", "POLICY ATTRIBUTES"]
        title = f"DRA devices ({sum(d.published for d in decisions.values())} of {len(dev_rows)} published)"
    parts += ["", title]
    parts.append(tabulate(dev_rows, headers) if dev_rows else "(none)")
    if decisions is not None:
        parts += _policy_notes(decisions)
    return "\n".join(parts)


def _policy_notes(decisions: dict[str, Decision]) -> list[str]:
    """Each reason once, under the table: the rule in full, or why opt-in left a device out."""
    reasons = sorted({(d.rule is None, d.rule or 0, d.reason) for d in decisions.values() if d.reason})
    return ["", "Not published:", *(f"  {reason}" for *_, reason in reasons)] if reasons else []

