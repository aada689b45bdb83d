"""Selectors: which PCI functions a rule is about (provisioning config, device policy).

Pure data, no I/O. A selector is a set of fields; an empty field matches anything, the fields
that are set must all match (AND), and the values inside one field are alternatives (OR):

    vendors: ["15b3"]            PCI vendor ID of the function (a VF's is its PF's vendor)
    deviceIDs: ["101e"]          PCI device ID of the function itself (a VF's own ID)
    pfNames: ["ens1f0"]          netdev of the PF (of the function itself, for a PF)
    pciAddresses: ["0000:3b:00.2"]
    pfPciAddresses: ["0000:3b:00.0"]
    linkTypes: [infiniband]      ethernet | infiniband (eth and ib are accepted)
    numaNodes: [0]
    roles: [VF]                  PF | VF
    drivers: [ib.sigs.k8s.io]    the DRA driver that publishes the device
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from typing import Any

from sriovdra.model import DRIVERS, LINK_ETHERNET, LINK_INFINIBAND, ROLE_PF, ROLE_VF, Inventory, PciFunction

_HEX_ID = re.compile(r"^(0x)?[0-9a-fA-F]{4}$")
_PCI = re.compile(r"^(?:([0-9a-fA-F]{4}):)?([0-9a-fA-F]{2}):([0-9a-fA-F]{2})\.([0-7])$")
_LINKS = {"ethernet": LINK_ETHERNET, "eth": LINK_ETHERNET, "infiniband": LINK_INFINIBAND, "ib": LINK_INFINIBAND}


class SelectorError(ValueError):
    """A selector is malformed; str() names the field, e.g. 'rules[2].match.vendors[0]: ...'."""


def normalize_pci(value: str) -> str | None:
    """3b:00.2 or 0000:3B:00.2 -> 0000:3b:00.2; None when it is not a PCI address."""
    m = _PCI.match(value.strip())
    if not m:
        return None
    dom, bus, dev, fn = m.groups()
    return f"{(dom or '0000').lower()}:{bus.lower()}:{dev.lower()}.{fn}"


@dataclass(frozen=True)
class Facts:
    """What selectors look at, for one function (computed from the inventory)."""

    vendor: str | None
    device_id: str | None
    pf_name: str | None
    pci_address: str
    pf_pci_address: str | None
    link_type: str
    numa_node: int
    role: str

    @classmethod
    def of(cls, inv: Inventory, fn: PciFunction) -> Facts:
        parent = inv.parent(fn)
        pf = fn if fn.role == ROLE_PF else parent
        uplink = pf.uplink if pf else None
        numa = fn.numa_node if fn.numa_node >= 0 or parent is None else parent.numa_node
        return cls(vendor=fn.vendor or (parent.vendor if parent else None), device_id=fn.device,
                   pf_name=uplink.name if uplink else None, pci_address=fn.address,
                   pf_pci_address=pf.address if pf else None, link_type=inv.link_type(fn), numa_node=numa,
                   role=fn.role)


def _json(name: str) -> Any:
    return field(default=(), metadata={"json": name})


@dataclass(frozen=True)
class Selector:
    vendors: tuple[str, ...] = _json("vendors")
    device_ids: tuple[str, ...] = _json("deviceIDs")
    pf_names: tuple[str, ...] = _json("pfNames")
    pci_addresses: tuple[str, ...] = _json("pciAddresses")
    pf_pci_addresses: tuple[str, ...] = _json("pfPciAddresses")
    link_types: tuple[str, ...] = _json("linkTypes")
    numa_nodes: tuple[int, ...] = _json("numaNodes")
    roles: tuple[str, ...] = _json("roles")
    drivers: tuple[str, ...] = _json("drivers")

    @property
    def empty(self) -> bool:
        return not any(getattr(self, f.name) for f in fields(self))

    def matches(self, facts: Facts, driver: str | None = None) -> bool:
        checks = ((self.vendors, facts.vendor), (self.device_ids, facts.device_id), (self.pf_names, facts.pf_name),
                  (self.pci_addresses, facts.pci_address), (self.pf_pci_addresses, facts.pf_pci_address),
                  (self.link_types, facts.link_type), (self.numa_nodes, facts.numa_node), (self.roles, facts.role),
                  (self.drivers, driver))
        return all(not wanted or value in wanted for wanted, value in checks)

    def to_dict(self) -> dict:
        return {f.metadata["json"]: list(getattr(self, f.name)) for f in fields(self) if getattr(self, f.name)}


def parse_selector(obj: Any, where: str) -> Selector:
    """Strictly decode a selector mapping; unknown fields and bad values name the field."""
    if obj is None:
        return Selector()
    if not isinstance(obj, dict):
        raise SelectorError(f"{where}: expected a mapping of selector fields, got {type(obj).__name__}")
    known = {f.metadata["json"]: f.name for f in fields(Selector)}
    unknown = sorted(str(k) for k in set(obj) - set(known))
    if unknown:
        raise SelectorError(f"{where}: unknown field(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    values: dict[str, tuple] = {}
    for key, attr in known.items():
        raw = obj.get(key)
        if raw is None:
            continue
        items = raw if isinstance(raw, list) else [raw]
        values[attr] = tuple(_value(key, item, f"{where}.{key}[{i}]") for i, item in enumerate(items))
    return Selector(**values)


def _value(key: str, item: Any, where: str) -> Any:
    if key == "numaNodes":
        if isinstance(item, bool) or not isinstance(item, int):
            raise SelectorError(f"{where}: expected an integer NUMA node, got {item!r}")
        return item
    if not isinstance(item, str):
        raise SelectorError(f"{where}: expected a string, got {item!r}")
    if key in ("vendors", "deviceIDs"):
        if not _HEX_ID.match(item):
            raise SelectorError(f"{where}: expected a 4-digit hex PCI ID like 15b3, got {item!r}")
        return item.lower().removeprefix("0x")
    if key in ("pciAddresses", "pfPciAddresses"):
        pci = normalize_pci(item)
        if pci is None:
            raise SelectorError(f"{where}: expected a PCI address like 0000:3b:00.0, got {item!r}")
        return pci
    if key == "linkTypes":
        if item.lower() not in _LINKS:
            raise SelectorError(f"{where}: expected ethernet or infiniband, got {item!r}")
        return _LINKS[item.lower()]
    if key == "roles":
        if item.upper() not in (ROLE_PF, ROLE_VF):
            raise SelectorError(f"{where}: expected PF or VF, got {item!r}")
        return item.upper()
    if key == "drivers" and item not in DRIVERS:
        raise SelectorError(f"{where}: expected one of {', '.join(DRIVERS)}, got {item!r}")
    return item
