"""InfiniBand partitions: is a port a member of the partition an IbConfig.pkey asks for?

Pure rules, no I/O. Partition membership is decided by the subnet manager (OpenSM, UFM), never by
the host: it writes each port's P_Key table, which the kernel shows in
/sys/class/infiniband/<dev>/ports/<n>/pkeys/<index> (read on demand: sriovdra.host.discovery
read_pkey_table, never by the periodic rescan).

A P_Key is 16 bits: the low 15 are the partition number ("base"), bit 15 is the membership bit
(set = full member, clear = limited member; a limited member can reach full members only). The
resolution below is the kernel's own (ib_find_pkey): match the base, prefer a full-member entry,
else take the first limited one. The index found is what verbs applications need (a QP is bound
to a P_Key *index*: NCCL_IB_PKEY, perftest --pkey_index).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sriovdra.guid import guid_of_gid
from sriovdra.model import DraDevice, IbPort, Inventory

FULL_MEMBER = 0x8000
BASE_MASK = 0x7FFF

# Outcomes, used as the claim status condition's reason.
MEMBER = "Member"  # the port is in the partition with the membership asked for (or more)
LIMITED = "LimitedMembership"  # full membership asked for, the SM made the port a limited member
NOT_MEMBER = "NotAMember"  # the partition is not in the port's table: the SM has not added the port
UNKNOWN = "PKeyTableUnknown"  # the table could not be read (RDMA device hidden, sysfs error)

# OpenSM partitions.conf syntax (OpenSM "Partition configuration"; UFM writes the same file). The
# ipoib flag makes the SM create the partition's IPoIB broadcast group (needed by a P_Key child netdev).
_SM_HINT = ("ask the subnet manager administrator to add port GUID {guid} as a {kind} member of partition "
            "{base:#06x} (OpenSM /etc/opensm/partitions.conf: `part{base:04x}={base:#06x},ipoib : {guid}={kind} ;` "
            "and a resweep; UFM: add the GUID to PKey {base:#06x} as a {kind} member)")


def pkey_problem(pkey: int) -> str | None:
    """Why `pkey` is no usable P_Key, None when it is: 16 bits and a partition other than 0 (0x0000
    and 0x8000 are invalid: the kernel refuses them for an IPoIB child with EINVAL)."""
    if not 0x0001 <= pkey <= 0xFFFF:
        return f"pkey must be in range 0x0001-0xFFFF, got 0x{pkey & 0xFFFFFFFF:04X}"
    if pkey & BASE_MASK == 0:
        return f"0x{pkey:04X} has base 0x0000, which is reserved (invalid partition)"
    return None


@dataclass(frozen=True)
class PartitionCheck:
    """What one port's P_Key table says about the requested P_Key."""

    pkey: int  # as requested (IbConfig.pkey)
    port: str  # "<rdma device>/<port>", for messages
    port_guid: str | None
    outcome: str  # MEMBER, LIMITED, NOT_MEMBER or UNKNOWN
    index: int | None = None  # the table entry found
    entry: int | None = None  # the P_Key at that index (its bit 15 is the membership the SM gave)

    @property
    def base(self) -> int:
        return self.pkey & BASE_MASK

    @property
    def wants_full(self) -> bool:
        return bool(self.pkey & FULL_MEMBER)

    @property
    def membership(self) -> str | None:
        """The membership the SM gave: full, limited, or None when not a member / unknown."""
        if self.entry is None:
            return None
        return "full" if self.entry & FULL_MEMBER else "limited"

    def condition(self) -> tuple[str, str, str]:
        """(status, reason, message) of the claim status condition IBPartitionReady."""
        where = f"port {self.port}" + (f" (port GUID {self.port_guid})" if self.port_guid else "")
        guid = self.port_guid or "<port GUID>"
        kind = "full" if self.wants_full else "limited"
        hint = _SM_HINT.format(guid=guid, kind=kind, base=self.base)
        if self.outcome == MEMBER:
            note = "" if self.membership == kind else "; limited membership was asked for, the SM decides"
            return ("True", MEMBER, f"{where} is a {self.membership} member of partition {self.base:#06x} "
                                    f"(P_Key {self.entry:#06x} at index {self.index}){note}")
        if self.outcome == LIMITED:
            return ("False", LIMITED, f"{where} is only a limited member of partition {self.base:#06x} (P_Key "
                                      f"{self.entry:#06x} at index {self.index}), IbConfig.pkey {self.pkey:#06x} asks "
                                      f"for full membership: it can reach full members only; {hint}")
        if self.outcome == NOT_MEMBER:
            return ("False", NOT_MEMBER, f"partition {self.base:#06x} is not in the P_Key table of {where}: the "
                                         f"subnet manager has not made this port a member, so traffic with P_Key "
                                         f"{self.pkey:#06x} is dropped (a host cannot join a partition by itself); "
                                         f"{hint}")
        return ("Unknown", UNKNOWN, f"the P_Key table of {where} could not be read (RDMA device not visible?): "
                                    f"membership of partition {self.base:#06x} is unknown")

    def to_dict(self) -> dict:
        return {"pkey": self.pkey, "port": self.port, "portGUID": self.port_guid, "outcome": self.outcome,
                "index": self.index, "entry": self.entry}

    @classmethod
    def from_dict(cls, d: dict) -> PartitionCheck:
        return cls(pkey=int(d["pkey"]), port=d["port"], port_guid=d.get("portGUID"), outcome=d["outcome"],
                   index=d.get("index"), entry=d.get("entry"))


def resolve(pkey: int, table: dict[int, int] | None, port: str, port_guid: str | None = None) -> PartitionCheck:
    """Find `pkey`'s partition in a port's P_Key table (None: the table is unknown)."""
    if table is None:
        return PartitionCheck(pkey, port, port_guid, UNKNOWN)
    matches = sorted((i, e) for i, e in table.items() if e & BASE_MASK == pkey & BASE_MASK)
    full = [(i, e) for i, e in matches if e & FULL_MEMBER]
    if not matches:
        return PartitionCheck(pkey, port, port_guid, NOT_MEMBER)
    index, entry = (full or matches)[0]
    outcome = LIMITED if pkey & FULL_MEMBER and not entry & FULL_MEMBER else MEMBER
    return PartitionCheck(pkey, port, port_guid, outcome, index, entry)


def ib_port(inv: Inventory, dev: DraDevice) -> IbPort | None:
    """The IB port behind an ib.sigs.k8s.io device, None when its RDMA device is not visible."""
    fn = inv.function(dev.pci_address)
    for rd in fn.rdma_devices if fn else []:
        if rd.name == dev.rdma_device:
            return next((p for p in rd.ports if p.number == dev.port), None)
    return None


# (PCI address, RDMA device, port number) -> the port's P_Key table, None when unreadable
PkeyReader = Callable[[str, str, int], "dict[int, int] | None"]


def check_device(inv: Inventory, dev: DraDevice, pkey: int | None, read_table: PkeyReader) -> PartitionCheck | None:
    """The partition check for a device and an IbConfig.pkey; None when no pkey is asked for. The
    port's table is read now, through `read_table` (only this port's: reads are firmware queries)."""
    if pkey is None:
        return None
    port = ib_port(inv, dev)
    name = f"{dev.rdma_device or dev.pci_address}/{dev.port}"
    if port is None:
        return resolve(pkey, None, name)
    table = port.pkeys if port.pkeys is not None else read_table(dev.pci_address, dev.rdma_device, port.number)
    return resolve(pkey, table, name, _guid_of(port.gid0) if port.gid0 else None)


def _guid_of(gid: str) -> str | None:
    """fe80:0000:0000:0000:0c42:a103:0065:8f2a -> 0x0c42a10300658f2a (the GUID form OpenSM and UFM take)."""
    guid = guid_of_gid(gid)
    return None if guid is None else f"0x{guid:016x}"
