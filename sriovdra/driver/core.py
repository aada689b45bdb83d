"""The core of one DRA driver on one node: prepare, unprepare and recovery of claims.

No protocol code here: the gRPC servers call prepare/unprepare with claim references, the
Kubernetes adapter supplies claim JSON through a ClaimSource, discovery supplies the inventory.
Every step is checkpointed before it touches the host (see sriovdra.checkpoint).
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

from sriovdra import cdi, faults, partition
from sriovdra.checkpoint import (
    PREPARED,
    PREPARING,
    UNPREPARING,
    CheckpointStore,
    ClaimRecord,
    PreparedDevice,
)
from sriovdra.claim import Allocation, ClaimError, ClaimRef, Result, config_for, parse_allocation
from sriovdra.config import IbConfig, VfConfig
from sriovdra.driver.ifnames import pick_names
from sriovdra.host import pci
from sriovdra.host.discovery import pkey_reader
from sriovdra.host.hostlock import HostLock
from sriovdra.host.paths import HostPaths
from sriovdra.model import IB_DRIVER, DraDevice, Inventory
from sriovdra.policy import NO_POLICY, Decision, DevicePolicy

log = logging.getLogger(__name__)


def _same_devices(rec: ClaimRecord, alloc: Allocation) -> bool:
    """Is the checkpointed claim still allocated the same way (not reallocated since)?"""
    return sorted((d.request, d.device) for d in rec.devices) == sorted((r.base_request, r.device)
                                                                         for r in alloc.results)


class ClaimFetchError(Exception):
    """The claim could not be read from the API server; str() says why."""


class DeviceError(Exception):
    """A host operation on a prepared device failed (netlink, IPAM, RDMA); str() names the
    claim, the device and the step."""


class ClaimSource(Protocol):
    def get_claim(self, namespace: str, name: str) -> dict: ...


@dataclass(frozen=True)
class DriverSettings:
    driver: str
    pool: str  # the node name
    cdi_dir: str
    checkpoint_path: str
    paths: HostPaths  # sysfs (driver rebinding) and /dev (CDI device nodes)
    serialize_lock: str | None = None  # flock path shared with a rolling-update twin
    # how netdevs reach pods: "nri" moves them at RunPodSandbox, "cdi" leaves it to the runtime through
    # CDI netDevices (cdiVersion 1.1.0), "none" does not move them (tests, vfio-only nodes)
    netdev_attach: str = "nri"


class NetworkHooks(Protocol):
    """What the pod-network side (sriovdra.driver.network) offers the claim lifecycle."""

    def unavailable(self) -> str | None:
        """Why netdevs cannot reach pods right now (e.g. NRI not connected), or None."""

    def detach_claim(self, driver: Driver, rec: ClaimRecord) -> None:
        """Bring every attached device of the claim home; DeviceError when one cannot be."""


@dataclass
class PrepareOutcome:
    devices: list[PreparedDevice]
    error: str | None = None


class Driver:
    def __init__(self, settings: DriverSettings, inventory: Callable[[], Inventory], claims: ClaimSource,
                 on_prepared: Callable[[ClaimRecord, bool], None] | None = None,
                 network: NetworkHooks | None = None, lock: threading.RLock | None = None,
                 policy: Callable[[], DevicePolicy] | None = None) -> None:
        self.s = settings
        self.network = network
        self.kind = cdi.CDI_KINDS[settings.driver]
        self.inventory = inventory
        self.claims = claims
        self.on_prepared = on_prepared
        self.store = CheckpointStore(settings.checkpoint_path)
        # shared with `sriovdra provision`: no claim starts on a VF while it changes the VFs
        self._host_lock = HostLock.of_state_dir(os.path.dirname(os.path.abspath(settings.checkpoint_path)))
        self.records: dict[str, ClaimRecord] = {}
        self._lock = lock or threading.RLock()  # shared by the drivers of one process (network attach spans them)
        self._depth = 0
        self.policy = policy or (lambda: NO_POLICY)  # the current device policy (it may be reloaded)
        self._policy_notes: set[tuple[int, str]] = set()  # (level, message) published() logged, to log once

    # --- lifecycle -----------------------------------------------------------------------

    def start(self) -> list[str]:
        """Load the checkpoint and finish what a crash interrupted; returns problems to report."""
        with self.serialized():
            return self._recover()

    def _load(self) -> list[str]:
        loaded = self.store.load()
        self.records = loaded.records
        if loaded.problem:
            return [f"checkpoint unusable, set aside as {loaded.set_aside}: {loaded.problem}"]
        return []

    def _recover(self) -> list[str]:
        problems = self._load()
        for uid, rec in list(self.records.items()):
            try:
                if rec.state in (PREPARING, UNPREPARING):
                    log.info("claim %s: %s was interrupted, %s", rec.claim, rec.state[:-3],
                             "rolling back" if rec.state == PREPARING else "finishing it")
                    self._undo(rec)
                    del self.records[uid]
                else:
                    self._ensure_spec(rec)
            except (OSError, cdi.CdiError, pci.PciBindError, DeviceError) as e:
                # kept as it is: the next unprepare (or restart) tries again
                problems.append(f"claim {rec.claim}: cannot finish the interrupted {rec.state[:-3]}: {e}")
        try:
            self.save()
        except OSError as e:  # a full or read-only state dir: serve what is loaded, the next change saves again
            problems.append(f"checkpoint cannot be written: {e}")
        return problems

    @contextmanager
    def serialized(self):
        """One operation at a time; with a rolling-update twin, also across processes (flock),
        re-reading the checkpoint the other process may have changed. Re-entrant: network attach
        holds it while unprepare-like steps run inside."""
        # The node-wide host lock (shared with `sriovdra provision`) comes first, before the twin's
        # lock, in every process and every nesting: one order, so no two holders wait on each other.
        with self._lock, self._host_lock.held():
            if self._depth or self.s.serialize_lock is None:
                self._depth += 1
                try:
                    yield
                finally:
                    self._depth -= 1
                return
            os.makedirs(os.path.dirname(self.s.serialize_lock), mode=0o750, exist_ok=True)
            with open(self.s.serialize_lock, "a") as f:
                fcntl.flock(f, fcntl.LOCK_EX)
                self._depth += 1
                try:
                    # never moves the file aside: the twin may write keys this release does not know
                    fresh = self.store.reread()
                    if fresh.problem:  # keep what we have rather than overwrite the twin's state with nothing
                        log.error("checkpoint: %s; keeping this process's records", fresh.problem)
                    else:
                        self.records = fresh.records
                    yield
                finally:
                    self._depth -= 1
                    fcntl.flock(f, fcntl.LOCK_UN)

    def save(self) -> None:
        self.store.save(self.records)

    # --- prepare -------------------------------------------------------------------------

    def prepare(self, refs: list[ClaimRef]) -> dict[str, PrepareOutcome]:
        """One outcome per claim UID. API reads happen before the lock, as in the Go helper.
        Each claim succeeds or fails on its own: nothing about one claim fails the others."""
        fetched: dict[str, dict | Exception] = {}
        for ref in refs:
            try:
                fetched[ref.uid] = self.claims.get_claim(ref.namespace, ref.name)
            except ClaimFetchError as e:
                fetched[ref.uid] = e
        out: dict[str, PrepareOutcome] = {}
        repeats: set[str] = set()
        with self.serialized():
            inv = None
            call_indexes: list[int] = []  # IB env indexes handed out in this call
            for ref in refs:
                got = fetched[ref.uid]
                if isinstance(got, Exception):
                    out[ref.uid] = PrepareOutcome([], f"claim {ref}: cannot read it from the API server: {got}")
                    continue
                try:
                    alloc = parse_allocation(got, ref, self.s.driver)
                    rec = self.records.get(ref.uid)
                    if rec is not None and rec.state == PREPARED and _same_devices(rec, alloc):
                        self._ensure_spec(rec)  # /var/run/cdi is tmpfs: gone after a reboot
                        out[ref.uid] = PrepareOutcome(rec.devices)  # the same devices and CDI IDs
                        repeats.add(ref.uid)
                        continue
                    if inv is None:
                        inv = self.inventory()
                    out[ref.uid] = PrepareOutcome(self._prepare_one(ref, alloc, inv, call_indexes))
                except (ClaimError, cdi.CdiError, pci.PciBindError, OSError) as e:
                    # the kubelet shows the message without the claim: it must say which one it is
                    message = str(e) if str(e).startswith(f"claim {ref}") else f"claim {ref}: {e}"
                    out[ref.uid] = PrepareOutcome([], message)
                except Exception as e:  # noqa: BLE001 - a bug must cost one claim, not the batch
                    log.exception("claim %s: prepare failed", ref)
                    out[ref.uid] = PrepareOutcome([], f"claim {ref}: internal error: {type(e).__name__}: {e}")
            done = [self.records[r.uid] for r in refs if out[r.uid].error is None and r.uid in self.records]
        if self.on_prepared:  # repeats too: a status write lost with a killed process is redone
            for rec in done:
                self.on_prepared(rec, rec.claim.uid not in repeats)
        return out

    def _ensure_spec(self, rec: ClaimRecord) -> None:
        for name, data in rec.specs.items():
            if data and not os.path.exists(os.path.join(self.s.cdi_dir, name)):
                log.info("claim %s: CDI spec %s is missing (reboot?), writing it again", rec.claim, name)
                cdi.write_json(self.s.cdi_dir, name, data)

    def _ib_index_base(self, alloc: Allocation, call_indexes: list[int]) -> int:
        """IB env indexes (IB_DEVICE_<i>) must not collide inside a pod: continue after the indexes
        of claims already prepared for the same pods, and of this call's earlier claims."""
        pods = {str(r.get("uid")) for r in alloc.reserved_for if r.get("uid")}
        taken = list(call_indexes)
        for rec in self.records.values():
            if rec.claim.uid != alloc.claim.uid and pods & set(rec.pods):
                taken += [d.env_index for d in rec.devices if d.env_index is not None]
        return max(taken, default=-1) + 1

    def _prepare_one(self, ref: ClaimRef, alloc: Allocation, inv: Inventory,
                     call_indexes: list[int]) -> list[PreparedDevice]:
        stale = self.records.pop(ref.uid, None)
        if stale is not None:  # an interrupted earlier attempt, or a claim allocated anew
            self._undo(stale)
        by_name = {d.name: d for d in inv.dra_devices() if d.driver == self.s.driver}
        policy = self.policy()
        base = self._ib_index_base(alloc, call_indexes) if self.s.driver == IB_DRIVER else None
        planned: list[tuple[PreparedDevice, DraDevice, VfConfig | IbConfig]] = []
        for i, result in enumerate(alloc.results):
            decision = policy.decide_device(inv, self._device_for(alloc, result, by_name))
            _check_policy(alloc, result, decision)
            dev = decision.device  # with the policy's attributes: what the slice shows while it is prepared
            config = config_for(alloc, result.request)
            p = self._plan(ref, result, dev, config, None if base is None else base + i)
            if isinstance(config, IbConfig):  # the P_Key table says now whether the partition is there
                check = partition.check_device(inv, dev, config.pkey, self._pkey_reader())
                p.partition = check.to_dict() if check else None
            planned.append((p, dev, config))
        self._check_attach(ref, [p for p, _, _ in planned])
        pods = [str(r.get("uid")) for r in alloc.reserved_for if r.get("uid")]
        if self.s.netdev_attach == "cdi":
            self._name_for_cdi(pods, [p for p, _, _ in planned])
        spec_name = cdi.spec_file_name(self.kind, ref.uid)
        rec = ClaimRecord(claim=ref, state=PREPARING, devices=[p for p, _, _ in planned], specs={spec_name: None},
                          pods=pods, updated=time.time())
        net_name = None
        if self.s.netdev_attach == "cdi" and any(p.if_name for p in rec.devices):
            net_name = cdi.spec_file_name(cdi.NETDEV_KINDS[self.s.driver], ref.uid)
            rec.specs[net_name] = None
        self.records[ref.uid] = rec
        try:
            self.save()  # intent first: a crash from here on is rolled back at restart
            faults.point("prepare.after-intent")
            for p, _, config in planned:
                if _rebinds(config):
                    pci.bind(self.s.paths, p.pci_address, config.driver)
                    faults.point("prepare.after-bind")
            if planned:
                self._write_claim_spec(rec, spec_name, planned, inv)
            if net_name:
                net = cdi.netdev_spec(self.s.driver, ref.uid, [(p.device, p.netdev, p.if_name) for p in rec.devices
                                                              if p.if_name])
                rec.specs[net_name] = cdi.write_spec(self.s.cdi_dir, net_name, net)
            faults.point("prepare.after-cdi")
            rec.state = PREPARED
            rec.updated = time.time()
            self.save()
        except BaseException:
            self._undo(rec)
            self.records.pop(ref.uid, None)
            try:
                self.save()
            except OSError as e:
                log.error("claim %s: rollback could not be checkpointed: %s", ref, e)
            raise
        faults.point("prepare.after-commit")
        call_indexes += [p.env_index for p in rec.devices if p.env_index is not None]
        return rec.devices

    def _pkey_reader(self):
        return pkey_reader(self.s.paths, lambda problem: log.warning("P_Key table: %s", problem))

    def _write_claim_spec(self, rec: ClaimRecord, spec_name: str,
                          planned: list[tuple[PreparedDevice, DraDevice, VfConfig | IbConfig]], inv: Inventory) -> None:
        items = [cdi.SpecItem(dev, config, p.admin_access, p.env_index or 0,
                              partition.PartitionCheck.from_dict(p.partition) if p.partition else None)
                 for p, dev, config in planned]
        spec = cdi.claim_spec(self.s.driver, rec.claim.uid, items, inv, self.s.paths.dev_file)
        rec.specs[spec_name] = cdi.write_spec(self.s.cdi_dir, spec_name, spec)

    def recheck_partitions(self, inv: Inventory) -> list[ClaimRecord]:
        """The subnet manager may put a port into a partition after prepare. For prepared devices whose
        partition was missing, limited or unreadable, read that port's P_Key table again (only those:
        the reads are firmware queries); when the outcome changed, checkpoint it and rewrite the claim's
        CDI spec (containers created from now on get the P_Key index). Returns the claims whose status
        must be written again."""
        if self.s.driver != IB_DRIVER:
            return []
        changed = []
        with self.serialized():
            for rec in self.prepared():
                try:
                    if self._recheck(rec, inv):
                        changed.append(rec)
                except (OSError, cdi.CdiError) as e:
                    log.error("claim %s: P_Key table recheck failed, keeping what prepare found: %s", rec.claim, e)
            if changed:
                self.save()
        return changed

    def _recheck(self, rec: ClaimRecord, inv: Inventory) -> bool:
        stale = [p for p in rec.devices if p.partition and p.partition.get("outcome") != partition.MEMBER]
        if not stale:
            return False
        by_name = {d.name: d for d in inv.dra_devices() if d.driver == self.s.driver}
        # the spec is rebuilt from the inventory: every device must be visible as it was at prepare (not
        # moved into a pod's RDMA namespace), or the rewrite would drop its char devices
        if any(p.device not in by_name or by_name[p.device].rdma_device != p.rdma_device for p in rec.devices):
            return False
        reader = self._pkey_reader()
        dirty = False
        for p in stale:
            before = partition.PartitionCheck.from_dict(p.partition)
            now = partition.check_device(inv, by_name[p.device], before.pkey, reader)
            if now is not None and now.to_dict() != p.partition:
                log.info("claim %s device %s: partition 0x%04x is now %s on %s (was %s)", rec.claim, p.device,
                         before.pkey, now.outcome, now.port, before.outcome)
                p.partition, dirty = now.to_dict(), True
        if dirty:
            planned = [(p, by_name[p.device], IbConfig.from_dict(p.config)) for p in rec.devices]
            self._write_claim_spec(rec, cdi.spec_file_name(self.kind, rec.claim.uid), planned, inv)
        return dirty

    def _check_attach(self, ref: ClaimRef, devices: list[PreparedDevice]) -> None:
        """Fail closed: a pod that asked for a NIC must not start without it. When netdevs cannot
        reach pods now (NRI not connected), refuse the prepare; the kubelet retries."""
        movable = [d for d in devices if moves_netdev(d)]
        if not movable:
            return
        # IbConfig is not refused: its mtu and pkey are first of all the verbs path MTU and partition,
        # which reach the workload through the CDI env; the claim status says the netdev is unchanged.
        if self.s.netdev_attach == "cdi" and self.s.driver != IB_DRIVER:
            for d in movable:
                set_fields = [k for k in ("ips", "ipam", "routes", "mtu", "mac") if k in d.config]
                if set_fields:
                    raise ClaimError(f"claim {ref} device {d.device}: {', '.join(set_fields)} need "
                                     f"--netdev-attach nri (with cdi the runtime only moves and renames the netdev)")
        problem = self.network.unavailable() if self.s.netdev_attach == "nri" and self.network else None
        if problem:
            raise ClaimError(f"claim {ref}: device(s) {', '.join(d.device for d in movable)} cannot be attached "
                             f"to the pod: {problem}")

    def _name_for_cdi(self, pods: list[str], devices: list[PreparedDevice]) -> None:
        """With CDI netDevices the pod-side name is fixed at prepare: pick it now, clear of the names
        this pod's other claims already got."""
        taken = {d.if_name for r in self.records.values() if set(r.pods) & set(pods) for d in r.devices if d.if_name}
        movable = [d for d in devices if moves_netdev(d)]
        for d, name in zip(movable, pick_names([d.config.get("ifName") for d in movable], taken), strict=True):
            d.if_name = name

    def _device_for(self, alloc: Allocation, result: Result, by_name: dict[str, DraDevice]) -> DraDevice:
        where = f"claim {alloc.claim} request {result.request!r} device {result.device!r}"
        if result.pool != self.s.pool:
            raise ClaimError(f"{where}: allocated from pool {result.pool!r}, this node's pool is {self.s.pool!r}")
        dev = by_name.get(result.device)
        if dev is None:
            raise ClaimError(f"{where}: no such {self.s.driver} device on node {self.s.pool} "
                             f"(run `sriovdra discover` on the node to list them)")
        if not result.admin_access and result.share_id is None:
            for other in self.records.values():
                if other.claim.uid == alloc.claim.uid:
                    continue
                for d in other.devices:
                    if d.device == dev.name and not d.admin_access and d.share_id is None:
                        raise ClaimError(f"{where}: already prepared for claim {other.claim} "
                                         f"(uid {other.claim.uid}); a device serves one claim at a time")
        return dev

    def _plan(self, ref: ClaimRef, result: Result, dev: DraDevice, config: VfConfig | IbConfig,
              env_index: int | None) -> PreparedDevice:
        name = cdi.device_name(dev.name, ref.uid)
        p = PreparedDevice(
            request=result.base_request, pool=result.pool, device=dev.name, pci_address=dev.pci_address,
            cdi_ids=[f"{self.kind}={name}"], config=config.to_dict(), port=dev.port,
            rdma_device=dev.rdma_device, netdev=dev.netdev, admin_access=result.admin_access,
            share_id=result.share_id, attributes=dict(dev.attributes), env_index=env_index,
            original_driver=pci.current_driver(self.s.paths, dev.pci_address) if _rebinds(config) else None)
        if self.s.netdev_attach == "cdi" and moves_netdev(p):
            p.cdi_ids.append(f"{cdi.NETDEV_KINDS[self.s.driver]}={name}")
        return p

    # --- unprepare -----------------------------------------------------------------------

    def unprepare(self, refs: list[ClaimRef]) -> dict[str, str | None]:
        """One error (or None) per claim UID; unknown claims succeed."""
        out: dict[str, str | None] = {}
        with self.serialized():
            for ref in refs:
                try:
                    self._unprepare_one(ref)
                    out[ref.uid] = None
                except (OSError, cdi.CdiError, pci.PciBindError, DeviceError) as e:
                    out[ref.uid] = f"claim {ref}: unprepare failed: {e}"
                except Exception as e:  # noqa: BLE001 - a bug must cost one claim, not the batch
                    log.exception("claim %s: unprepare failed", ref)
                    out[ref.uid] = f"claim {ref}: internal error: {type(e).__name__}: {e}"
        return out

    def _unprepare_one(self, ref: ClaimRef) -> None:
        rec = self.records.get(ref.uid)
        if rec is None:
            # Unknown (or lost with a corrupt checkpoint): the spec name derives from the UID, and
            # the encoding is one-to-one, so this can only be that claim's spec.
            try:
                name = cdi.spec_file_name(self.kind, ref.uid)
            except cdi.CdiError:
                return  # no file could ever have been written for such a UID
            cdi.remove_spec(self.s.cdi_dir, name)
            return
        before = rec.state, rec.updated
        rec.state = UNPREPARING
        rec.updated = time.time()
        try:
            self.save()
        except OSError:
            rec.state, rec.updated = before  # nothing was undone: the claim stays as the checkpoint has it
            raise
        faults.point("unprepare.after-intent")
        self._undo(rec)
        faults.point("unprepare.after-undo")
        del self.records[ref.uid]
        self.save()

    def _undo(self, rec: ClaimRecord) -> None:
        """Reverse everything prepare (and attach) did for this record, last step first (idempotent).
        Every step is tried even when an earlier one fails (a read-only CDI dir must not keep a VF on
        vfio-pci); then the first failure is raised (DeviceError, OSError, ...) and the record stays (retried)."""
        errors: list[Exception] = []

        def attempt(step: Callable[..., object], *args) -> None:
            try:
                step(*args)
            except (OSError, cdi.CdiError, pci.PciBindError, DeviceError) as e:
                errors.append(e)

        if rec.attached() and self.network:
            attempt(self.network.detach_claim, self, rec)
        for name in rec.specs:
            attempt(cdi.remove_spec, self.s.cdi_dir, name)
        for d in rec.devices:
            if rebinds(d.config.get("driver")):
                attempt(pci.restore, self.s.paths, d.pci_address, d.original_driver)
        for e in errors[1:]:
            log.error("claim %s: undo: %s", rec.claim, e)
        if errors:
            raise errors[0]

    # --- queries -------------------------------------------------------------------------

    def prepared(self) -> list[ClaimRecord]:
        with self._lock:
            return [r for r in self.records.values() if r.state == PREPARED]

    def published(self, inv: Inventory) -> list[DraDevice]:
        """What to publish: the inventory's devices as the device policy has them, with prepared
        devices as they were at prepare time (a VF moved into a pod loses its netdev and RDMA device
        from the node's view; its slice entry must not change or vanish while it is in use), also
        when the policy now excludes them, until they are unprepared. A rolling-update pair reads
        the shared checkpoint so that both publish the same slices."""
        decisions = {d.device.name: d for d in self.policy().decide(inv, self.s.driver)}
        devices = {name: d.device for name, d in decisions.items() if d.published}
        notes = {(logging.ERROR, f"{d.problem}; published without the device policy's attributes")
                 for d in decisions.values() if d.problem}
        if self.s.serialize_lock is None:
            records = self.prepared()
        else:
            records = [r for r in self.store.peek().values() if r.state == PREPARED]
        for rec in records:
            for p in rec.devices:
                decision = decisions.get(p.device)
                if p.attributes:
                    devices[p.device] = DraDevice(driver=self.s.driver, name=p.device, attributes=p.attributes,
                                                  pci_address=p.pci_address, port=p.port,
                                                  rdma_device=p.rdma_device, netdev=p.netdev)
                elif decision is not None:
                    devices[p.device] = decision.device
                if decision is not None and not decision.published:
                    notes.add((logging.INFO, f"device {p.device} is prepared for claim {rec.claim}: it stays "
                                             f"published until unprepared, although the device policy now "
                                             f"says: {decision.reason}"))
        self._note(notes)
        return sorted(devices.values(), key=lambda d: d.name)

    def _note(self, notes: set[tuple[int, str]]) -> None:
        """Log each note once while it holds (published() runs at every rescan)."""
        for level, message in sorted(notes - self._policy_notes):
            log.log(level, "%s", message)
        self._policy_notes = notes


def _check_policy(alloc: Allocation, result: Result, decision: Decision) -> None:
    """Refuse a device the device policy does not publish (any more: the claim was allocated before
    the policy changed). The policy is the admin's current intent and prepare is the last point
    where the node can enforce it; a refused claim is visible (the pod stays pending with this
    message, the kubelet retries), a withdrawn device in use is not. Claims already prepared are
    unaffected: a repeated prepare answers from the checkpoint before this check."""
    if not decision.published:
        raise ClaimError(f"claim {alloc.claim} request {result.request!r} device {result.device!r}: refused, "
                         f"the device policy does not publish this device ({decision.reason}); delete the "
                         f"pod and claim to allocate another device, or change the policy")


def rebinds(driver: str | None) -> bool:
    """Does VfConfig.driver move the VF to another kernel driver (vfio-pci for DPDK, ...)?
    "default" keeps the driver the VF has."""
    return driver not in (None, "", "default")


def moves_netdev(d: PreparedDevice) -> bool:
    """Does the device's netdev go into the pod? Not for vfio (no netdev), not for admin access
    (it observes a device, it does not take it)."""
    return bool(d.netdev) and not rebinds(d.config.get("driver")) and not d.admin_access


def _rebinds(config: VfConfig | IbConfig) -> bool:
    return isinstance(config, VfConfig) and rebinds(config.driver)
