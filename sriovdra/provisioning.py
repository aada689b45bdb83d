"""Provisioning: which PFs get how many VFs (the config) and what that means on this node (the plan).

Pure data and rules, no I/O: sriovdra.provisioner reads the node and carries the plan out.

    timeout: 60            # seconds to wait for the VFs (default 60)
    autoprobe: true        # sriov_drivers_autoprobe for new VFs (default: leave as it is)
    pfs:                   # in order; the first entry that names or matches a PF wins
      - pf: ens1f0         # the PF's netdev or PCI address
        numVFs: 8          # or max: sriov_totalvfs
      - match: {vendors: ["15b3"], linkTypes: [infiniband]}   # sriovdra.selector, of the PF
        numVFs: 4
        autoprobe: false
        guids: derived     # IB only: derived (default) | none | {start: GUID, end: GUID}

An entry that names or matches no SR-IOV PF is reported, not an error. Asking more VFs than
sriov_totalvfs is an error (numVFs: max takes all); serve --num-vfs N clamps instead (min(N, total)).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sriovdra.claim import ClaimRef
from sriovdra.guid import DERIVED, NONE, RANGE, GuidError, GuidPolicy, GuidRequest, assign, parse_guid, parse_policy
from sriovdra.model import IB_DRIVER, LINK_ETHERNET, LINK_INFINIBAND, ROLE_PF, SRIOV_DRIVER, Inventory, PciFunction
from sriovdra.selector import Facts, Selector, SelectorError, normalize_pci, parse_selector

DEFAULT_TIMEOUT = 60.0
MAX = "max"

# What happens to a PF (report `action`)
UNCHANGED, CREATED, RESIZED, REMOVED = "unchanged", "created", "resized", "removed"
REFUSED, FAILED, DRY_RUN = "refused", "failed", "dry-run"
VFIO = "vfio-pci"

_TOP_KEYS = {"timeout", "autoprobe", "pfs"}
_ENTRY_KEYS = {"pf", "match", "numVFs", "autoprobe", "guids"}


class ProvisionError(ValueError):
    """The config or the flags are malformed; str() names the field, e.g. 'pfs[1].numVFs: ...'."""


@dataclass(frozen=True)
class PfRule:
    where: str  # "pfs[1]" or "--pf ens1f0": for messages
    pf: str | None = None  # netdev name or normalized PCI address
    match: Selector | None = None
    num_vfs: int | None = None  # None: max (sriov_totalvfs)
    clamp: bool = False  # min(num_vfs, total) instead of an error (serve --num-vfs)
    autoprobe: bool | None = None
    guids: GuidPolicy | None = None  # None: the config's default
    required: bool = False  # a --pf: naming nothing is bad input, not a note

    def describe(self) -> str:
        if self.pf is not None:
            return f"{self.where} (pf: {self.pf})"
        return f"{self.where} (match: {(self.match or Selector()).to_dict()})"


@dataclass(frozen=True)
class ProvisionConfig:
    rules: tuple[PfRule, ...]
    timeout: float = DEFAULT_TIMEOUT
    autoprobe: bool | None = None  # None: leave sriov_drivers_autoprobe as it is
    guids: GuidPolicy = GuidPolicy(DERIVED)  # for entries without `guids`


# --- the config ------------------------------------------------------------------------------


def parse_config(obj: Any, source: str = "config") -> ProvisionConfig:
    """Strictly decode a config mapping; unknown keys and wrong types name the field."""
    if not isinstance(obj, dict):
        raise ProvisionError(f"{source}: expected a mapping with pfs, got {type(obj).__name__}")
    _no_unknown(obj, _TOP_KEYS, source)
    timeout = _timeout(obj.get("timeout", DEFAULT_TIMEOUT), "timeout")
    autoprobe = _bool(obj.get("autoprobe"), "autoprobe")
    entries = obj.get("pfs")
    if not isinstance(entries, list) or not entries:
        raise ProvisionError(f"pfs: expected a non-empty list of entries, got {entries!r}")
    return ProvisionConfig(rules=tuple(_rule(e, f"pfs[{i}]") for i, e in enumerate(entries)), timeout=timeout,
                           autoprobe=autoprobe)


def parse_config_text(text: str, source: str) -> ProvisionConfig:
    import yaml

    try:
        obj = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ProvisionError(f"{source}: not valid YAML: {e}") from None
    try:
        return parse_config(obj, source)
    except ProvisionError as e:
        raise ProvisionError(f"{source}: {e}") from None


def flags_config(pfs: list[str], num_vfs: str, *, timeout: float | None = None, autoprobe: bool | None = None,
                 guids: str | None = None) -> ProvisionConfig:
    """`--pf A --pf B --num-vfs N` as a config."""
    if not pfs:
        raise ProvisionError("--pf: give at least one PF (netdev or PCI address), or --config")
    count = _num_vfs(num_vfs if num_vfs == MAX else _int_text(num_vfs, "--num-vfs"), "--num-vfs")
    rules = tuple(PfRule(where=f"--pf {p}", pf=_pf_name(p, "--pf"), num_vfs=count, required=True) for p in pfs)
    return ProvisionConfig(rules=rules, timeout=_timeout(DEFAULT_TIMEOUT if timeout is None else timeout, "--timeout"),
                           autoprobe=autoprobe, guids=_policy(guids or DERIVED, "--guids"))


def with_overrides(config: ProvisionConfig, *, timeout: float | None = None, autoprobe: bool | None = None,
                   guids: str | None = None) -> ProvisionConfig:
    """Flags over a config file: --timeout, --no-autoprobe and --guids (for entries without guids)."""
    return ProvisionConfig(rules=config.rules,
                           timeout=config.timeout if timeout is None else _timeout(timeout, "--timeout"),
                           autoprobe=config.autoprobe if autoprobe is None else autoprobe,
                           guids=config.guids if guids is None else _policy(guids, "--guids"))


def serve_config(num_vfs: int, drivers: tuple[str, ...] = ()) -> ProvisionConfig | None:
    """serve --num-vfs N: every SR-IOV PF of the served drivers gets min(N, total) VFs; 0 = no provisioning
    (VM mode). IB PFs belong to ib.sigs.k8s.io, Ethernet PFs to sriovnetwork.openshift.io."""
    if num_vfs < 0:
        raise ProvisionError(f"--num-vfs: expected 0 or more, got {num_vfs}")
    if num_vfs == 0:
        return None
    links = {IB_DRIVER: LINK_INFINIBAND, SRIOV_DRIVER: LINK_ETHERNET}
    served = [links[d] for d in (drivers or (SRIOV_DRIVER, IB_DRIVER))]
    rule = PfRule(where=f"--num-vfs {num_vfs}", match=Selector(link_types=tuple(served)), num_vfs=num_vfs, clamp=True)
    return ProvisionConfig(rules=(rule,))


def _rule(obj: Any, where: str) -> PfRule:
    if not isinstance(obj, dict):
        raise ProvisionError(f"{where}: expected a mapping with pf or match, and numVFs, got {obj!r}")
    _no_unknown(obj, _ENTRY_KEYS, where)
    if ("pf" in obj) == ("match" in obj):
        raise ProvisionError(f"{where}: give exactly one of pf (a netdev or PCI address) and match (a selector)")
    if "numVFs" not in obj:
        raise ProvisionError(f"{where}.numVFs: required (a number, or max)")
    pf = _pf_name(obj["pf"], f"{where}.pf") if "pf" in obj else None
    match = None
    if "match" in obj:
        try:
            match = parse_selector(obj["match"], f"{where}.match")
        except SelectorError as e:
            raise ProvisionError(str(e)) from None
        if set(match.roles) - {ROLE_PF}:
            raise ProvisionError(f"{where}.match.roles: entries select PFs; use [PF] or leave roles out")
    guids = _policy(obj["guids"], f"{where}.guids") if obj.get("guids") is not None else None
    return PfRule(where=where, pf=pf, match=match, num_vfs=_num_vfs(obj["numVFs"], f"{where}.numVFs"),
                  autoprobe=_bool(obj.get("autoprobe"), f"{where}.autoprobe"), guids=guids)


def _no_unknown(obj: dict, known: set[str], where: str) -> None:
    unknown = sorted(str(k) for k in set(obj) - known)
    if unknown:
        raise ProvisionError(f"{where}: unknown field(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")


def _num_vfs(value: Any, where: str) -> int | None:
    if value == MAX:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 0xFFFF:
        raise ProvisionError(f"{where}: expected a number of VFs (0-65535) or max, got {value!r}")
    return value


def _int_text(text: str, where: str) -> int:
    try:
        return int(text)
    except (TypeError, ValueError):
        raise ProvisionError(f"{where}: expected a number of VFs or max, got {text!r}") from None


def _timeout(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ProvisionError(f"{where}: expected seconds > 0, got {value!r}")
    return float(value)


def _bool(value: Any, where: str) -> bool | None:
    if value is not None and not isinstance(value, bool):
        raise ProvisionError(f"{where}: expected true or false, got {value!r}")
    return value


def _pf_name(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip() or "/" in value:
        raise ProvisionError(f"{where}: expected a netdev name or a PCI address, got {value!r}")
    return normalize_pci(value) or value.strip()


def _policy(value: Any, where: str) -> GuidPolicy:
    try:
        return parse_policy(value, where)
    except GuidError as e:
        raise ProvisionError(str(e)) from None


# --- the plan ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Holder:
    """A claim in serve's checkpoint that holds a device of some function."""

    driver: str
    claim: ClaimRef
    state: str
    device: str
    pci_address: str

    def __str__(self) -> str:
        return f"{self.device} ({self.pci_address}) by claim {self.claim} uid {self.claim.uid} [{self.state}]"


@dataclass
class PfPlan:
    address: str
    netdev: str | None
    link_type: str
    total: int
    before: int
    wanted: int
    rule: str  # which entry chose this PF
    autoprobe: bool | None
    guids: GuidPolicy | None  # IB PFs that get GUIDs
    guid_plan: dict[int, int] = field(default_factory=dict)  # VF index -> GUID
    guid_problem: str | None = None  # why the VFs get no GUIDs: the count still changes, the PF ends failed
    holders: list[Holder] = field(default_factory=list)
    vfio: list[str] = field(default_factory=list)  # VFs bound to vfio-pci (writing 0 blocks while one is open)
    driver: str = SRIOV_DRIVER  # the DRA driver that publishes the PF's VFs (whose checkpoint matters)
    action: str = UNCHANGED
    problems: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.address} ({self.netdev})" if self.netdev else self.address

    @property
    def count_changes(self) -> bool:
        return self.before != self.wanted


@dataclass
class Plan:
    pfs: list[PfPlan]
    unmatched: list[str]  # entries that named or matched no SR-IOV PF: reported, not fatal
    errors: list[str]  # bad input: nothing may be done


def plan(inv: Inventory, config: ProvisionConfig, holders: list[Holder], checkpoint_problems: dict[str, list[str]],
         *, force: bool = False) -> Plan:
    """What the config means on this node: per PF its wanted count, action, GUIDs and refusals.
    checkpoint_problems: per DRA driver, what of its checkpoint could not be read."""
    chosen, missed = _choose(inv, config)
    errors = [message for rule, message in missed if rule.required]
    unmatched = [message for rule, message in missed if not rule.required]
    pf_of = {vf: fn.address for fn in inv.pfs for vf in fn.vf_addresses.values()}
    pf_of.update((fn.address, fn.pf_address) for fn in inv.vfs if fn.pf_address)
    pfs = []
    for fn, rule in chosen:
        p = _pf_plan(inv, config, fn, rule, [h for h in holders if pf_of.get(h.pci_address) == fn.address])
        if p.wanted > p.total:
            errors.append(f"{rule.where}: {p.name}: {p.wanted} VFs asked, sriov_totalvfs is {p.total} "
                          f"(numVFs: max takes all it has)")
        p.vfio = sorted(a for a in fn.vf_addresses.values() if (vf := inv.function(a)) and vf.driver == VFIO)
        if p.count_changes and not force:
            p.problems += refusals(p, p.holders, checkpoint_problems.get(p.driver, []), p.vfio)
            if p.problems:
                p.action = REFUSED
        pfs.append(p)
    _plan_guids(inv, pfs, _range_occupants(inv, config))
    return Plan(pfs=pfs, unmatched=unmatched, errors=errors)


def _choose(inv: Inventory, config: ProvisionConfig) -> tuple[list[tuple[PciFunction, PfRule]],
                                                               list[tuple[PfRule, str]]]:
    """Each SR-IOV PF with the first entry that names or matches it, by PCI address; and the entries
    that name or match none, with why."""
    sriov = sorted((fn for fn in inv.pfs if fn.sriov_capable), key=lambda f: f.address)
    chosen: dict[str, tuple[PciFunction, PfRule]] = {}
    missed = []
    for rule in config.rules:
        if rule.pf is not None:
            fn = next((f for f in inv.pfs if rule.pf in (f.address, f.uplink.name if f.uplink else None)), None)
            if fn is None:
                missed.append((rule, f"{rule.describe()}: no such PF on this node"))
            elif not fn.sriov_capable:
                missed.append((rule, f"{rule.describe()}: {fn.address} is not an SR-IOV PF (no sriov_totalvfs)"))
            else:
                chosen.setdefault(fn.address, (fn, rule))
            continue
        hits = [fn for fn in sriov if (rule.match or Selector()).matches(Facts.of(inv, fn), _driver(inv, fn))]
        if not hits:
            missed.append((rule, f"{rule.describe()}: matches no SR-IOV PF on this node"))
        for fn in hits:
            chosen.setdefault(fn.address, (fn, rule))
    return sorted(chosen.values(), key=lambda c: c[0].address), missed


def _driver(inv: Inventory, fn: PciFunction) -> str:
    """The DRA driver a PF's VFs go to (the selector field `drivers`)."""
    return IB_DRIVER if inv.link_type(fn) == LINK_INFINIBAND else SRIOV_DRIVER


def _pf_plan(inv: Inventory, config: ProvisionConfig, fn: PciFunction, rule: PfRule, holders: list[Holder]) -> PfPlan:
    total, before = fn.sriov_totalvfs or 0, fn.sriov_numvfs or 0
    wanted = total if rule.num_vfs is None else min(rule.num_vfs, total) if rule.clamp else rule.num_vfs
    link = inv.link_type(fn)
    policy = (rule.guids or config.guids) if link == LINK_INFINIBAND else None
    action = UNCHANGED if before == wanted else REMOVED if wanted == 0 else CREATED if before == 0 else RESIZED
    return PfPlan(address=fn.address, netdev=fn.uplink.name if fn.uplink else None, link_type=link, total=total,
                  before=before, wanted=wanted, rule=rule.describe(),
                  autoprobe=rule.autoprobe if rule.autoprobe is not None else config.autoprobe,
                  guids=policy if policy is not None and policy.mode != NONE else None, holders=holders,
                  driver=_driver(inv, fn), action=action)


def refusals(p: PfPlan, holders: list[Holder], checkpoint_problems: list[str], vfio: list[str]) -> list[str]:
    """Why the PF's count must not change without --force (empty: it may). A count change removes all
    its VFs; an unreadable checkpoint matters only when it has VFs, and only that of the driver
    publishing them; writing 0 blocks in the kernel while a VF is open through vfio."""
    what = f"changing {p.name} from {p.before} to {p.wanted} VFs removes all of its VFs"
    force = "(`sriovdra provision --force` changes it anyway)"
    if not p.before:
        return []
    out = []
    if holders:
        out.append(f"{what}, and claims hold some: {'; '.join(map(str, holders))} {force}")
    elif checkpoint_problems:
        out.append(f"{what}, and serve's checkpoint cannot be read to tell whether claims hold them: "
                   f"{'; '.join(checkpoint_problems)} {force}")
    if vfio:
        out.append(f"{p.name}: VFs {', '.join(vfio)} are bound to vfio-pci: writing 0 to sriov_numvfs blocks in the "
                   f"kernel until every VM or process holding one open lets go; stop them or unbind the VFs {force}")
    return out


def _range_occupants(inv: Inventory, config: ProvisionConfig) -> dict[tuple, list[tuple[str, int]]]:
    """Per GUID range, every IB SR-IOV PF on the node that an entry with that range names or matches
    (first match or not): their blocks are fixed by the node, not by what a run selects."""
    out: dict[tuple, dict[str, int]] = {}
    ib = [fn for fn in inv.pfs if fn.sriov_capable and inv.link_type(fn) == LINK_INFINIBAND]
    for rule in config.rules:
        policy = rule.guids or config.guids
        if policy.mode != RANGE:
            continue
        for fn in ib:
            named = rule.pf is not None and rule.pf in (fn.address, fn.uplink.name if fn.uplink else None)
            if named or (rule.pf is None and (rule.match or Selector()).matches(Facts.of(inv, fn), _driver(inv, fn))):
                out.setdefault((policy.start, policy.end), {})[fn.address] = fn.sriov_totalvfs or 0
    return {key: sorted(pfs.items()) for key, pfs in out.items()}


def _plan_guids(inv: Inventory, pfs: list[PfPlan], occupants: dict[tuple, list[tuple[str, int]]]) -> None:
    """GUIDs for the VFs each IB PF will have; refused PFs keep their block in a range but get none.
    A PF whose GUIDs cannot be planned still gets its count; it ends failed with the reason."""
    requests = [GuidRequest(pf=p.address, policy=p.guids, pf_guid=_node_guid(inv.function(p.address)),
                            total=p.total, count=0 if p.action == REFUSED else min(p.wanted, p.total))
                for p in pfs if p.guids is not None]
    result = assign(requests, occupants)
    for p in pfs:
        if p.address in result.errors and p.action != REFUSED:
            p.guid_problem = f"VF GUIDs: {result.errors[p.address]}"
        p.guid_plan = result.guids.get(p.address, {})


def _node_guid(fn: PciFunction | None) -> int | None:
    for rd in fn.rdma_devices if fn else []:
        try:
            return parse_guid(rd.node_guid, rd.name) or None
        except GuidError:
            return None
    return None
