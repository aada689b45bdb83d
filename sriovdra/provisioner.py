"""Carrying a provisioning plan out on the node: serve's claims, the kernel sequence, VF GUIDs, the report.

provision() discovers the node, reads which VFs serve's checkpoints hold, plans (sriovdra.provisioning),
and then, unless the plan has input errors or this is a dry run, works on every PF that needs a
change in its own thread: the VF count (sriovdra.host.sriov), then the GUIDs of InfiniBand VFs
(sriovdra.host.vfguid). A PF that fails or times out is reported and stops no other PF. The report
is read back from the node afterwards, so it shows what is there, not what was meant.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from sriovdra.checkpoint import CheckpointError, read_only
from sriovdra.guid import format_guid, guid_of_gid
from sriovdra.host import sriov, vfguid
from sriovdra.host.discovery import discover
from sriovdra.host.paths import HostPaths
from sriovdra.model import DRIVERS, Inventory
from sriovdra.provisioning import (
    DRY_RUN,
    FAILED,
    REFUSED,
    UNCHANGED,
    Holder,
    PfPlan,
    Plan,
    ProvisionConfig,
    plan,
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


def read_holders(state_dir: str) -> tuple[list[Holder], list[str]]:
    """Every device serve's checkpoints hold (any claim state), and what could not be read."""
    holders, problems = [], []
    for driver in DRIVERS:
        path = os.path.join(state_dir, f"{driver}.checkpoint.json")
        if not os.path.exists(path):
            continue
        try:
            loaded = read_only(path)
        except CheckpointError as e:
            problems.append(str(e))
            continue
        if loaded.problem:
            problems.append(f"{loaded.problem} (`sriovdra checkpoint show` tells more)")
        for rec in loaded.records.values():
            holders += [Holder(driver, rec.claim, rec.state, d.device, d.pci_address) for d in rec.devices]
    return holders, problems


def provision(paths: HostPaths, config: ProvisionConfig, opts: Options = Options()) -> Report:
    inv = discover(paths)
    holders, checkpoint_problems = read_holders(opts.state_dir)
    the_plan = plan(inv, config, holders, checkpoint_problems, force=opts.force)
    report = Report(dry_run=opts.dry_run, pfs=[], unmatched=the_plan.unmatched, errors=the_plan.errors,
                    checkpoint_problems=checkpoint_problems, host_kind=inv.host.kind)
    if the_plan.errors:
        report.pfs = [PfReport(p, UNCHANGED if p.action != REFUSED else REFUSED, after=p.before,
                               problems=list(p.problems)) for p in the_plan.pfs]
        return report
    if opts.dry_run:
        report.pfs = [_dry_run(p) for p in the_plan.pfs]
    else:
        report.pfs = _run(paths, config, the_plan, opts)
    _read_back(discover(paths), report)
    return report


def _dry_run(p: PfPlan) -> PfReport:
    changes = p.count_changes or bool(p.guid_plan)
    action = p.action if p.action in (REFUSED, FAILED) or not changes else DRY_RUN
    return PfReport(p, action, problems=list(p.problems))


def _run(paths: HostPaths, config: ProvisionConfig, the_plan: Plan, opts: Options) -> list[PfReport]:
    report = ThrottledProgress(opts.progress) if opts.progress else None
    work = [p for p in the_plan.pfs if p.action not in (REFUSED, FAILED) and (p.count_changes or p.guid_plan)]
    busy = {p.address for p in work}
    done = {p.address: PfReport(p, p.action, problems=list(p.problems)) for p in the_plan.pfs if p.address not in busy}
    if work:
        with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL, len(work)), thread_name_prefix="provision") as pool:
            for result in pool.map(lambda p: _run_pf(paths, config.timeout, p, opts.force, report), work):
                done[result.plan.address] = result
    return [done[p.address] for p in the_plan.pfs]


def _run_pf(paths: HostPaths, timeout: float, p: PfPlan, force: bool, report) -> PfReport:
    """One PF, start to end: its count, then its VF GUIDs; any failure ends up in the report."""
    out = PfReport(p, p.action)
    deadline = time.monotonic() + timeout
    try:
        expect = sriov.expectation(paths, p.address, p.autoprobe)
        if p.count_changes:
            sriov.set_num_vfs(paths, p.address, p.wanted, autoprobe=p.autoprobe)
            if p.wanted:
                sriov.wait_ready(paths, p.address, p.wanted, expect, timeout, netdev=p.netdev, report=report)
        if p.guid_plan:
            held = frozenset() if force else frozenset(h.pci_address for h in p.holders)
            out.guids = vfguid.assign(paths, p.address, p.netdev, p.guid_plan, held=held)
            out.problems += [g.message for g in out.guids if g.action == vfguid.FAILED]
            if any(g.action == vfguid.REBOUND for g in out.guids):  # the rebound VFs probe again
                sriov.wait_ready(paths, p.address, p.wanted, sriov.Expect(False, expect.netdev, expect.rdma),
                                 max(deadline - time.monotonic(), 0.0), netdev=p.netdev, report=report)
    except sriov.SriovError as e:
        out.problems.append(str(e))
    except Exception as e:  # noqa: BLE001 - an unforeseen error on one PF must not stop the others
        out.problems.append(f"{p.name}: {type(e).__name__}: {e}")
    if out.problems:
        out.action = FAILED
    return out


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
