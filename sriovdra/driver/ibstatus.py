"""What the claim status says about an InfiniBand device's IbConfig: what was applied, by whom, and
what only the subnet manager can do.

Pure: it reads a PreparedDevice (its effective config, the P_Key table lookup made at prepare, the
attachment made at pod start) and returns the status `data.ib` object and extra conditions.

  pkey          the partition lookup -> condition IBPartitionReady (True / False / Unknown); the index
                goes to the env; with --netdev-attach nri an IPoIB P_Key child is what enters the pod
  trafficClass  QP-level (the GRH of each packet a QP sends): only the application can set it, from
                the env (NCCL_IB_TC, UCX_IB_TRAFFIC_CLASS, IB_DEVICE_<i>_TRAFFIC_CLASS)
  mtu           the IB path MTU, also set per QP by the application from the env; with
                --netdev-attach nri the IPoIB netdev gets mtu - 4 -> condition IPoIBMTUReady: Unknown
                (AwaitingBroadcastJoin) until the netdev has carrier, since the kernel lowers the MTU
                to the partition's broadcast-group MTU (set by the SM) only once it has joined that
                group; then True, or False when it was capped

In exclusive RDMA netns mode the IPoIB netdev settings (P_Key child, MTU) are not applied
(sriovdra.driver.network explains why): data.ib.netdev.notApplied and IPoIBMTUReady False say so.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sriovdra.checkpoint import Attachment, PreparedDevice
from sriovdra.host.ipoib import netdev_mtu
from sriovdra.partition import PartitionCheck

PARTITION_CONDITION = "IBPartitionReady"
MTU_CONDITION = "IPoIBMTUReady"
BY_APPLICATION = "application"  # the driver passes the value on in the env; the workload's library applies it


@dataclass
class IbReport:
    data: dict = field(default_factory=dict)
    conditions: list[tuple[str, str, str, str]] = field(default_factory=list)  # (type, status, reason, message)


def ib_report(d: PreparedDevice, attached: Attachment | None) -> IbReport:
    """The status of IbConfig for one prepared device; `attached` once its netdev is in a pod."""
    report = IbReport()
    cfg = d.config
    if d.partition:
        check = PartitionCheck.from_dict(d.partition)
        status, reason, message = check.condition()
        report.data["partition"] = {"pkey": f"{check.pkey:#06x}", "port": check.port, "portGUID": check.port_guid,
                                    "outcome": check.outcome, "index": check.index, "membership": check.membership}
        report.conditions.append((PARTITION_CONDITION, status, reason, message))
    if cfg.get("trafficClass") is not None:
        report.data["trafficClass"] = {"value": cfg["trafficClass"], "appliedBy": BY_APPLICATION}
    if cfg.get("mtu") is not None:
        report.data["mtu"] = {"value": cfg["mtu"], "appliedBy": BY_APPLICATION}
    if attached is not None and attached.if_name and (attached.original or attached.ipoib_child):
        report.data["netdev"] = {"interfaceName": attached.if_name, "mtu": attached.mtu,
                                 "pkeyChild": attached.ipoib_child is not None}
        skipped = [k for k in ("pkey", "mtu") if cfg.get(k) is not None] if attached.rdma and d.netdev else []
        if skipped:
            report.data["netdev"]["notApplied"] = (
                f"IbConfig {' and '.join(skipped)} not applied to the IPoIB netdev: in exclusive RDMA netns mode "
                f"moving RDMA device {attached.rdma} makes the kernel recreate its IPoIB netdevs in the host "
                f"netns (a P_Key child or MTU set on them would be lost); the env still carries them for verbs")
        if cfg.get("mtu") is not None:
            report.data["mtu"]["netdevMtu"] = attached.mtu
            report.conditions.append(
                (MTU_CONDITION, "False", "ExclusiveRdmaNetns", report.data["netdev"]["notApplied"]) if skipped
                else _mtu_condition(cfg["mtu"], attached))
    return report


def _mtu_condition(ib_mtu: int, att: Attachment) -> tuple[str, str, str, str]:
    wanted = netdev_mtu(ib_mtu)
    if att.carrier is not True:
        return (MTU_CONDITION, "Unknown", "AwaitingBroadcastJoin",
                f"{att.if_name} has MTU {att.mtu} but no carrier yet: IPoIB joins the partition's broadcast group "
                f"once the port is up and the SM answers, and the kernel then lowers the MTU to the group's if "
                f"that is smaller than {wanted}; the driver re-reads it and updates this condition")
    if att.mtu is not None and att.mtu >= wanted:
        return (MTU_CONDITION, "True", "Applied", f"{att.if_name} has MTU {att.mtu} (IB MTU {ib_mtu} - 4)")
    return (MTU_CONDITION, "False", "LimitedByBroadcastGroup",
            f"{att.if_name} has MTU {att.mtu}, not the {wanted} IbConfig.mtu {ib_mtu} asks for: in datagram mode "
            f"the kernel caps it at the IPoIB broadcast group MTU of the partition, which the subnet manager sets "
            f"(OpenSM partitions.conf flag mtu=5 for 4096; its default is 4 = 2048); verbs traffic is not affected")
