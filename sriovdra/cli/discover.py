"""`sriovdra discover`: the node's SR-IOV / InfiniBand inventory and its DRA devices."""

from __future__ import annotations

import typer

from sriovdra.cli.options import DevRoot, HostRoot, Output, OutputFormat, SysfsRoot, host_paths
from sriovdra.cli.output import die, emit, tabulate, warn
from sriovdra.host.discovery import DiscoveryError, discover
from sriovdra.host.paths import HostPaths
from sriovdra.model import IB_DRIVER, Inventory

SCHEMA_VERSION = 1


def discover_command(
    ctx: typer.Context,
    output: Output = OutputFormat.table,
    host_root: HostRoot = None,
    sysfs_root: SysfsRoot = None,
    dev_root: DevRoot = None,
) -> None:
    """Print the node's VFs and InfiniBand ports and their DRA devices."""
    paths = host_paths(ctx, host_root, sysfs_root, dev_root)
    inv = inventory_or_die(paths)
    data = {"schemaVersion": SCHEMA_VERSION, "sysfsRoot": paths.sysfs, **inv.to_dict()}
    emit(data, output, lambda: render_table(inv))
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


def render_table(inv: Inventory) -> str:
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
        ])
    parts = [host, ""]
    parts.append("Physical functions")
    parts.append(tabulate(pf_rows, ["PCI", "NETDEV", "DRIVER", "ID", "NUMA", "PCIE ROOT", "VFS", "ESWITCH",
                                    "LINK", "RDMA"]) if pf_rows else "(none)")
    parts += ["", f"DRA devices ({len(dev_rows)})"]
    parts.append(tabulate(dev_rows, ["NAME", "DRIVER", "TYPE", "PCI", "PARENT", "NETDEV", "RDMA", "NUMA", "STATE",
                                     "KERNEL DRIVER"]) if dev_rows else "(none)")
    return "\n".join(parts)

