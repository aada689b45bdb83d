"""Carrying a provisioning plan out on the node: serve's claims, the kernel sequence, VF GUIDs, the report.

provision() discovers the node, reads which VFs serve's checkpoints hold, plans (sriovdra.provisioning),
and then, unless the plan has input errors or this is a dry run, works on every PF that needs a
change in its own thread: the VF count (sriovdra.host.sriov), then the GUIDs of InfiniBand VFs
(sriovdra.host.vfguid). A PF that fails or times out is reported and stops no other PF. The report
is read back from the node afterwards, so it shows what is there, not what was meant.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

from sriovdra.checkpoint import read_state_dir
from sriovdra.guid import format_guid, guid_of_gid
from sriovdra.host import pci, sriov, vfguid
from sriovdra.host.hostlock import HostLock
from sriovdra.host.discovery import discover
from sriovdra.host.paths import HostPaths
from sriovdra.model import DRIVERS, Inventory
from sriovdra.provisioning import (
    DRY_RUN,
    FAILED,
    REFUSED,
    UNCHANGED,
    VFIO,
    Holder,
    PfPlan,
    Plan,
    ProvisionConfig,
    plan,
    refusals,
)

SCHEMA_VERSION = 1
DEFAULT_STATE_DIR = "/var/lib/sriovdra"
MAX_PARALLEL = 8


@dataclass(frozen=True)
class Options:
    state_dir: str = DEFAULT_STATE_DIR
    force: bool = False  # change PFs whose VFs claims hold (or whose checkpoint is unreadable)
    dry_run: bool = False
    progress: Callable[[str], None] | None = None  # one line per PF when its counts change (throttled)


@dataclass
class PfReport:
    plan: PfPlan
    action: str
    after: int | None = None
    vfs: list[dict] = field(default_factory=list)
    guids: list[vfguid.VfGuidResult] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        p = self.plan
        return {"pciAddress": p.address, "netdev": p.netdev, "linkType": p.link_type, "total": p.total,
                "before": p.before, "wanted": p.wanted, "after": self.after, "action": self.action, "rule": p.rule,
                "autoprobe": p.autoprobe, "guids": p.guids.to_json() if p.guids else None, "vfs": self.vfs,
                "heldBy": [str(h) for h in p.holders], "problems": self.problems}


@dataclass
class Report:
    dry_run: bool
    pfs: list[PfReport]
    unmatched: list[str]  # config entries that named or matched no SR-IOV PF
    errors: list[str]  # bad input: nothing was done
    checkpoint_problems: list[str]
    host_kind: str

    @property
    def failed(self) -> bool:
        return any(p.action == FAILED for p in self.pfs)

    @property
    def refused(self) -> bool:
        return any(p.action == REFUSED for p in self.pfs)

    def to_dict(self) -> dict:
        return {"schemaVersion": SCHEMA_VERSION, "dryRun": self.dry_run, "host": self.host_kind,
                "pfs": [p.to_dict() for p in self.pfs], "unmatched": self.unmatched, "errors": self.errors,
                "checkpointProblems": self.checkpoint_problems}


def read_holders(state_dir: str) -> tuple[list[Holder], dict[str, list[str]]]:
    """Every device serve's checkpoints hold (any claim state), and per DRA driver what could not be read."""
    holders, problems = [], {}
    for driver in DRIVERS:
        state = read_state_dir(state_dir, (driver,))
        holders += [Holder(d, rec.claim, rec.state, dev.device, dev.pci_address)
                    for d, rec in state.records for dev in rec.devices]
        if state.problems:
            problems[driver] = [f"{p} (`sriovdra checkpoint show` tells more)" for p in state.problems]
    return holders, problems


def provision(paths: HostPaths, config: ProvisionConfig, opts: Options = Options()) -> Report:
    inv = discover(paths)
    holders, checkpoint_problems = read_holders(opts.state_dir)
    the_plan = plan(inv, config, holders, checkpoint_problems, force=opts.force)
    report = Report(dry_run=opts.dry_run, pfs=[], unmatched=the_plan.unmatched, errors=the_plan.errors,
                    checkpoint_problems=[p for ps in checkpoint_problems.values() for p in ps],
                    host_kind=inv.host.kind)
    if the_plan.errors:
        report.pfs = [PfReport(p, UNCHANGED if p.action != REFUSED else REFUSED, after=p.before,
                               problems=list(p.problems)) for p in the_plan.pfs]
        return report
    if opts.dry_run:
        report.pfs = [_dry_run(paths, p, opts.force) for p in the_plan.pfs]
    else:
        report.pfs = _run(paths, config, the_plan, opts)
    _read_back(discover(paths), report)
    return report


def _dry_run(paths: HostPaths, p: PfPlan, force: bool) -> PfReport:
    out = PfReport(p, p.action, problems=list(p.problems))
    if p.action in (REFUSED, FAILED):
        return out
    if p.guid_problem:
        out.problems.append(p.guid_problem)
        out.action = FAILED
    elif p.count_changes or _guids_drift(paths, p, force):
        out.action = DRY_RUN
    return out


def _guids_drift(paths: HostPaths, p: PfPlan, force: bool) -> bool:
    """Whether any VF the GUID step would touch lacks its planned GUIDs now (read only)."""
    held = set() if force else {h.pci_address for h in p.holders}
    for index, guid in p.guid_plan.items():
        address = vfguid.vf_address(paths, p.address, index)
        if address is None or (address not in held and vfguid.current_guids(paths, p.address, index) != (guid, guid)):
            return True
    return False


def _run(paths: HostPaths, config: ProvisionConfig, the_plan: Plan, opts: Options) -> list[PfReport]:
    report = ThrottledProgress(opts.progress) if opts.progress else None
    work = [p for p in the_plan.pfs
            if p.action not in (REFUSED, FAILED) and (p.count_changes or p.guid_plan or p.guid_problem)]
    busy = {p.address for p in work}
    done = {p.address: PfReport(p, p.action, problems=list(p.problems)) for p in the_plan.pfs if p.address not in busy}
    if work:
        with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL, len(work)), thread_name_prefix="provision") as pool:
            for result in pool.map(lambda p: _run_pf(paths, config.timeout, p, opts, report), work):
                done[result.plan.address] = result
    return [done[p.address] for p in the_plan.pfs]


class Refused(Exception):
    """A claim (or a vfio user) appeared on the PF's VFs between the plan and the change."""


def _run_pf(paths: HostPaths, timeout: float, p: PfPlan, opts: Options, report) -> PfReport:
    """One PF, start to end: its count, then its VF GUIDs; any failure ends up in the report.
    Each change happens under the node-wide host lock, after reading serve's checkpoints again."""
    out = PfReport(p, p.action)
    deadline = time.monotonic() + timeout
    lock = HostLock.of_state_dir(opts.state_dir)
    try:
        expect = sriov.expectation(paths, p.address, p.autoprobe)
        if p.count_changes:
            with lock.held():
                if not opts.force:
                    _recheck(paths, p, opts.state_dir)
                sriov.set_num_vfs(paths, p.address, p.wanted, autoprobe=p.autoprobe)
            if p.wanted:  # waited for outside the lock: serve may go on meanwhile
                sriov.wait_ready(paths, p.address, p.wanted, expect, timeout, netdev=p.netdev, report=report)
        if p.guid_problem:
            out.problems.append(p.guid_problem)
        if p.guid_plan:
            held = (lambda address: False) if opts.force else (lambda address: _held(opts.state_dir, address))
            out.guids = vfguid.assign(paths, p.address, p.netdev, p.guid_plan, held=held, lock=lock.held)
            out.problems += [g.message for g in out.guids if g.action == vfguid.FAILED]
            if any(g.action == vfguid.REBOUND for g in out.guids):  # the rebound VFs probe again
                sriov.wait_ready(paths, p.address, p.wanted, sriov.Expect(False, expect.netdev, expect.rdma),
                                 max(deadline - time.monotonic(), 0.0), netdev=p.netdev, report=report)
    except Refused as e:
        out.action = REFUSED
        out.problems.append(str(e))
        return out
    except sriov.SriovError as e:
        out.problems.append(str(e))
    except Exception as e:  # noqa: BLE001 - an unforeseen error on one PF must not stop the others
        out.problems.append(f"{p.name}: {type(e).__name__}: {e}")
    if out.problems:
        out.action = FAILED
    return out


def _recheck(paths: HostPaths, p: PfPlan, state_dir: str) -> None:
    """Under the host lock: the plan's refusals again, from the checkpoints and sysfs as they are now."""
    vfs = sriov.vf_addresses(paths, p.address)
    holders, problems = read_holders(state_dir)
    held = [h for h in holders if h.pci_address in vfs.values()]
    vfio = sorted(a for a in vfs.values() if pci.current_driver(paths, a) == VFIO)
    reasons = refusals(replace(p, before=len(vfs) or p.before), held, problems.get(p.driver, []), vfio)
    if reasons:
        raise Refused("; ".join(reasons))


def _held(state_dir: str, address: str) -> bool:
    """Under the host lock: does a claim in serve's checkpoints hold the VF now?"""
    return any(h.pci_address == address for h in read_holders(state_dir)[0])


def _read_back(inv: Inventory, report: Report) -> None:
    """Each PF's count and VFs as the node shows them now."""
    for pr in report.pfs:
        fn = inv.function(pr.plan.address)
        if fn is None:
            continue
        pr.after = fn.sriov_numvfs
        results = {g.index: g for g in pr.guids}
        for index, address in sorted(fn.vf_addresses.items()):
            vf = inv.function(address)
            rd = vf.rdma_devices[0] if vf and vf.rdma_devices else None
            port = guid_of_gid(rd.ports[0].gid0) if rd and rd.ports else None
            planned = pr.plan.guid_plan.get(index)
            pr.vfs.append({
                "vfID": index, "pciAddress": address, "driver": vf.driver if vf else None,
                "netdev": vf.uplink.name if vf and vf.uplink else None, "rdmaDevice": rd.name if rd else None,
                "nodeGUID": rd.node_guid if rd else None, "portGUID": format_guid(port) if port is not None else None,
                "plannedGUID": format_guid(planned) if planned is not None else None,
                "guidAction": results[index].action if index in results else None,
            })


class ThrottledProgress:
    """Progress lines: per PF, only when its counts change, at most every `interval` seconds, and
    always the line that says it is done."""

    def __init__(self, emit: Callable[[str], None], interval: float = 0.5) -> None:
        self._emit = emit
        self._interval = interval
        self._last: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()

    def __call__(self, progress: sriov.Progress) -> None:
        text, now = str(progress), time.monotonic()
        with self._lock:
            last_text, last_time = self._last.get(progress.pf, ("", float("-inf")))
            if text == last_text or (not progress.done and now - last_time < self._interval):
                return
            self._last[progress.pf] = (text, now)
        self._emit(text)
