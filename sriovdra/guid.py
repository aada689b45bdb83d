"""InfiniBand VF GUIDs: the scheme that gives every VF a deterministic, unique node/port GUID.

Pure arithmetic, no I/O. An IB VF comes up with an all-zero node and port GUID until someone
sets them through its PF (RDMA CM, perftest and the subnet manager need real ones). Two ways:

derived (default), a scheme of sriovdra's own:
    byte 0     0x02                 locally administered, unicast (IEEE EUI-64 U/L bit set)
    bytes 1-2  VF index + 1         big-endian, 1..65535 (never 0)
    bytes 3-7  the PF's node GUID   its low 40 bits
  Unique because: VFs of one PF differ in bytes 1-2; VFs of different PFs differ in bytes 3-7 as
  long as their PFs' GUIDs differ in their low 40 bits (vendor GUIDs are a 24-bit OUI + 40 bits
  the vendor never reuses; a clash on one node is detected and reported); and no VF GUID can equal
  a vendor-assigned (universally administered) GUID, whose U/L bit is clear. Node GUID = port GUID,
  as the sriov-network-operator sets them (its GUIDs themselves are random or from a static file).

range {start, end?}:
    Every SR-IOV PF that the entries using the range name or match on the node owns a block of
    sriov_totalvfs GUIDs, in PCI address order: VF j of a PF gets start + (sum of sriov_totalvfs of
    the PFs before it) + j. The blocks do not depend on which PFs a run changes or on VF counts;
    `end` makes an exhausted range an error. Blocks of different ranges (and derived GUIDs) that
    overlap are refused, whole blocks compared, not just the VFs there are now.

GUIDs are shown as sysfs shows them (0c42:a103:0065:8f2a); parse_guid also takes the 8-byte
form `ip link ... vf N node_guid 02:00:00:00:00:00:01:00` uses.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

GUID_MAX = (1 << 64) - 1
LOCALLY_ADMINISTERED = 0x02
_LOW40 = (1 << 40) - 1
_SYSFS_FORM = re.compile(r"^[0-9a-fA-F]{4}(:[0-9a-fA-F]{4}){3}$")
_BYTE_FORM = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){7}$")

DERIVED, NONE, RANGE = "derived", "none", "range"


class GuidError(ValueError):
    """A GUID or GUID policy is malformed, or GUIDs cannot be assigned; str() names the field or PF."""


def parse_guid(text: Any, where: str) -> int:
    """0c42:a103:0065:8f2a or 02:00:00:00:00:00:01:00 -> int."""
    if not isinstance(text, str) or not (_SYSFS_FORM.match(text) or _BYTE_FORM.match(text)):
        raise GuidError(f"{where}: expected a GUID like 02:00:00:00:00:00:01:00 or 0200:0000:0000:0100, got {text!r}")
    return int(text.replace(":", ""), 16)


def format_guid(value: int) -> str:
    """As sysfs node_guid shows it: 0200:01a1:0300:658f."""
    raw = f"{value:016x}"
    return ":".join(raw[i:i + 4] for i in range(0, 16, 4))


def byte_form(value: int) -> str:
    """As `ip link set ... vf N node_guid` takes it: 02:00:01:a1:03:00:65:8f."""
    raw = f"{value:016x}"
    return ":".join(raw[i:i + 2] for i in range(0, 16, 2))


def guid_of_gid(gid: str | None) -> int | None:
    """The port GUID inside GID 0 (fe80:0000:0000:0000:<guid>): its low 64 bits."""
    if not gid:
        return None
    parts = gid.split(":")
    if len(parts) != 8 or not all(re.fullmatch(r"[0-9a-fA-F]{1,4}", p) for p in parts):
        return None
    return int("".join(p.zfill(4) for p in parts[4:]), 16)


def derived_guid(pf_guid: int, vf_index: int) -> int:
    """0x02 | VF index + 1 (16 bits) | the PF GUID's low 40 bits."""
    if not 0 <= vf_index < 0xFFFF:
        raise GuidError(f"VF index {vf_index} does not fit the derived scheme (0..65534)")
    return LOCALLY_ADMINISTERED << 56 | (vf_index + 1) << 40 | pf_guid & _LOW40


@dataclass(frozen=True)
class GuidPolicy:
    mode: str = DERIVED  # derived | none | range
    start: int | None = None
    end: int | None = None

    def to_json(self) -> Any:
        if self.mode != RANGE:
            return self.mode
        out = {"start": format_guid(self.start or 0)}
        if self.end is not None:
            out["end"] = format_guid(self.end)
        return out


def parse_policy(value: Any, where: str) -> GuidPolicy:
    """derived | none | {start: GUID, end: GUID}."""
    if value in (DERIVED, NONE):
        return GuidPolicy(value)
    if not isinstance(value, dict):
        raise GuidError(f"{where}: expected derived, none or {{start: GUID, end: GUID}}, got {value!r}")
    unknown = sorted(str(k) for k in set(value) - {"start", "end"})
    if unknown:
        raise GuidError(f"{where}: unknown field(s) {', '.join(unknown)} (known: start, end)")
    if "start" not in value:
        raise GuidError(f"{where}.start: required")
    start = parse_guid(value["start"], f"{where}.start")
    if start == 0:
        raise GuidError(f"{where}.start: the zero GUID is what an unconfigured VF has; start above it")
    end = parse_guid(value["end"], f"{where}.end") if value.get("end") is not None else None
    if end is not None and end < start:
        raise GuidError(f"{where}.end: {format_guid(end)} is below start {format_guid(start)}")
    return GuidPolicy(RANGE, start, end)


@dataclass(frozen=True)
class GuidRequest:
    """One IB PF that wants GUIDs for its VFs 0..count-1."""

    pf: str  # PCI address
    policy: GuidPolicy
    pf_guid: int | None  # the PF's node GUID (derived), None when unreadable
    total: int  # sriov_totalvfs: the PF's block in a range
    count: int


@dataclass
class Assignment:
    guids: dict[str, dict[int, int]]  # PF address -> VF index -> GUID
    errors: dict[str, str]  # PF address -> why it gets none


def assign(requests: Iterable[GuidRequest], occupants: dict[tuple, list[tuple[str, int]]] | None = None) -> Assignment:
    """GUIDs for every requested VF; a PF that cannot get unique ones gets an error instead.

    occupants: per range (start, end), every PF that owns a block of it, as (PCI address, sriov_totalvfs),
    also PFs not requested now, so that a PF's block does not depend on what a run selects."""
    requests = [r for r in requests if r.policy.mode != NONE]
    out = Assignment({}, {})
    _derived([r for r in requests if r.policy.mode == DERIVED], out)
    ranges: dict[tuple, list[GuidRequest]] = {}
    for r in requests:
        if r.policy.mode == RANGE:
            ranges.setdefault((r.policy.start, r.policy.end), []).append(r)
    blocks: dict[str, tuple[int, int]] = {}  # PF -> (first, last) GUID of its whole block
    for key, members in ranges.items():
        owners = {pf: total for pf, total in (occupants or {}).get(key, [])}
        owners.update((r.pf, r.total) for r in members)
        offsets, offset = {}, 0
        for pf in sorted(owners):
            offsets[pf] = offset
            offset += owners[pf]
        for r in members:
            first = (r.policy.start or 0) + offsets[r.pf]
            blocks[r.pf] = (first, first + max(r.total, 1) - 1)
            _range(r, first, out)
    _no_overlaps(requests, blocks, out)
    return out


def _derived(requests: list[GuidRequest], out: Assignment) -> None:
    by_low: dict[int, list[str]] = {}
    for r in requests:
        if r.count == 0:
            out.guids[r.pf] = {}  # no VFs: no GUID needed, so none to derive from either
    requests = [r for r in requests if r.count]
    for r in requests:
        if not r.pf_guid:
            out.errors[r.pf] = ("no readable non-zero node GUID to derive VF GUIDs from; "
                                "give the PF a range (guids: {start: 02:00:00:00:00:00:01:00}) or guids: none")
            continue
        by_low.setdefault(r.pf_guid & _LOW40, []).append(r.pf)
    for r in requests:
        if not r.pf_guid or r.pf in out.errors:
            continue
        clash = [pf for pf in by_low[r.pf_guid & _LOW40] if pf != r.pf]
        if clash:
            out.errors[r.pf] = (f"its node GUID has the same low 40 bits as {', '.join(clash)}'s: derived VF "
                                "GUIDs would collide; give these PFs a range instead")
            continue
        out.guids[r.pf] = {j: derived_guid(r.pf_guid, j) for j in range(r.count)}


def _range(r: GuidRequest, first: int, out: Assignment) -> None:
    start, end = r.policy.start or 0, r.policy.end
    if r.count == 0:
        out.guids[r.pf] = {}
        return
    last = first + r.count - 1
    limit = GUID_MAX if end is None else end
    if last > limit:
        out.errors[r.pf] = (f"GUID range {format_guid(start)}..{format_guid(limit)} is exhausted: "
                            f"its VFs would need up to {format_guid(last)}")
        return
    out.guids[r.pf] = {j: first + j for j in range(r.count)}


def _no_overlaps(requests: list[GuidRequest], blocks: dict[str, tuple[int, int]], out: Assignment) -> None:
    """Overlapping ranges (or a range over derived GUIDs) would hand one GUID to two VFs some day:
    each PF's whole block (sriov_totalvfs GUIDs) is compared, not only the VFs it has now."""
    derived = {r.pf: r for r in requests if r.policy.mode == DERIVED and r.pf_guid and r.pf not in out.errors}
    ranged = sorted(blocks.items())
    for i, (pf, (first, last)) in enumerate(ranged):
        clash = [other for other, (o_first, o_last) in ranged[:i]
                 if other not in out.errors and first <= o_last and o_first <= last]
        clash += [other for other, r in sorted(derived.items())
                  if any(first <= derived_guid(r.pf_guid, j) <= last for j in range(min(r.total, 0xFFFF)))]
        if clash:  # the later PF (by PCI address) of a range pair, and a range over derived GUIDs, get none
            out.errors[pf] = (f"its GUID block {format_guid(first)}..{format_guid(last)} overlaps the GUIDs of "
                              f"{', '.join(clash)} (overlapping GUID ranges)")
            out.guids.pop(pf, None)
