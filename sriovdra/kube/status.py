"""Writing status.devices of prepared claims, asynchronously (prepare never waits on it).

Each update re-reads the claim, keeps every entry that is not ours (other drivers share the
list), replaces ours, and writes through the status subresource with the read resourceVersion;
a 409 conflict re-reads and retries at once (MAX_ATTEMPTS conflicts in a row give up: someone
keeps writing), NotFound/Forbidden/Invalid drop the update (the claim is gone or we may not
write it). Server errors, throttling and an unreachable server are retried with capped
exponential backoff for up to RETRY_SECONDS, so that a restart of the API server loses nothing.

One pending write per claim: a newer status replaces a pending one, and a claim waiting for its
retry does not hold up the others.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

from sriovdra.claim import ClaimRef
from sriovdra.kube.api import FIELD_MANAGER, ApiError, call
from sriovdra.kube.backoff import Backoff

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 8  # 409 conflicts in a row before a write is given up
RETRY_SECONDS = 600.0  # how long server errors are retried (the next start of serve writes again)
RETRY_BACKOFF = (0.1, 30.0)  # first retry, cap (seconds)


def ready_entry(driver: str, pool: str, device: str, data: dict, share_id: str | None = None,
                network: dict | None = None, message: str = "prepared by sriovdra",
                extra_conditions: list[tuple[str, str, str, str]] = ()) -> dict:
    """An AllocatedDeviceStatus with a Ready condition, plus (type, status, reason, message) conditions."""
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    conditions = [("Ready", "True", "Prepared", message), *extra_conditions]
    entry = {"driver": driver, "pool": pool, "device": device, "data": data,
             "conditions": [{"type": t, "status": st, "reason": r, "message": m, "lastTransitionTime": now}
                            for t, st, r, m in conditions]}
    if share_id is not None:
        entry["shareID"] = share_id
    if network:
        entry["networkData"] = network
    return entry


def _device_key(entry: dict) -> tuple:
    return entry.get("driver"), entry.get("pool"), entry.get("device"), entry.get("shareID")


def merge_devices(current: list[dict], ours: list[dict], driver: str) -> list[dict]:
    """Other drivers' entries untouched, ours replaced (keyed by driver, pool, device, shareID).

    A condition whose type and status are unchanged keeps the current entry's lastTransitionTime:
    by the Kubernetes condition convention it says when the status last changed, not when it was
    last written (a repeated prepare or a kubelet restart rewrites the same status)."""
    before = {_device_key(e): e for e in current if isinstance(e, dict)}
    ours = [_keep_transition_times(e, before.get(_device_key(e))) for e in ours]
    replaced = {_device_key(e) for e in ours}
    return [e for e in current if _device_key(e) not in replaced] + ours


def _keep_transition_times(entry: dict, previous: dict | None) -> dict:
    """`entry` (not modified) with the transition times of `previous`'s conditions that did not change."""
    if not previous:
        return entry
    old = {c.get("type"): c for c in previous.get("conditions") or [] if isinstance(c, dict)}
    conditions = []
    for cond in entry.get("conditions") or []:
        was = old.get(cond.get("type"))
        if was and was.get("status") == cond.get("status") and was.get("lastTransitionTime"):
            cond = {**cond, "lastTransitionTime": was["lastTransitionTime"]}
        conditions.append(cond)
    return {**entry, "conditions": conditions}


@dataclass
class _Write:
    """A claim's pending status write and its retry schedule."""

    claim: ClaimRef
    entries: list[dict]
    due: float  # time.monotonic() at which to (re)try
    backoff: Backoff = field(default_factory=lambda: Backoff(*RETRY_BACKOFF))
    conflicts: int = 0
    failing_since: float | None = None


class ClaimStatusWriter:
    def __init__(self, api_client, driver: str) -> None:
        from kubernetes.client import ResourceV1Api

        self.api = ResourceV1Api(api_client)
        self.driver = driver
        self._pending: dict[str, _Write] = {}  # by claim UID
        self._cond = threading.Condition()
        self._busy = 0
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=f"claim-status-{driver}", daemon=True)
        self.written = 0
        self.dropped = 0
        self.retries = 0  # attempts that failed and were scheduled again
        self._done: set[str] = set()  # claim UIDs whose status this process has written

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Pending writes are abandoned: the next start of serve writes every prepared claim's status."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def enqueue(self, claim: ClaimRef, entries: list[dict], once: bool = False) -> None:
        """once: skip if this process already wrote this claim's status (a repeated prepare)."""
        if once and claim.uid in self._done:
            return
        with self._cond:
            pending = self._pending.get(claim.uid)
            if pending is None:
                self._pending[claim.uid] = _Write(claim, entries, due=time.monotonic())
            else:  # the newer status replaces it; a retry keeps its schedule
                pending.claim, pending.entries = claim, entries
            self._cond.notify()

    def idle(self) -> bool:
        with self._cond:
            return not self._pending and not self._busy

    def pending(self) -> int:
        with self._cond:
            return len(self._pending) + self._busy

    def _next(self) -> _Write | None:
        """The write that is due first, once it is due; None when stopping."""
        with self._cond:
            while not self._stopping:
                if not self._pending:
                    self._cond.wait()
                    continue
                w = min(self._pending.values(), key=lambda w: w.due)
                wait = w.due - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                del self._pending[w.claim.uid]
                self._busy += 1
                return w
        return None

    def _run(self) -> None:
        while (w := self._next()) is not None:
            retry = False
            try:
                retry = self._attempt(w)
            except Exception:  # noqa: BLE001 - a bug costs this write, not the writer
                log.exception("status of claim %s not written", w.claim)
                self.dropped += 1
            with self._cond:
                self._busy -= 1
                if retry:
                    newer = self._pending.get(w.claim.uid)
                    if newer is not None:  # enqueued meanwhile: its entries, this schedule
                        w.entries = newer.entries
                    self._pending[w.claim.uid] = w
                    self._cond.notify()

    def _attempt(self, w: _Write) -> bool:
        """One read-merge-write; True when it is to be retried (w.due says when)."""
        claim = w.claim
        try:
            current = call(self.api.read_namespaced_resource_claim, claim.name, claim.namespace)
            if current.get("metadata", {}).get("uid") != claim.uid:
                log.info("claim %s was replaced, its status is not ours to write", claim)
                self.dropped += 1
                return False
            status = current.setdefault("status", {})
            status["devices"] = merge_devices(status.get("devices") or [], w.entries, self.driver)
            call(self.api.replace_namespaced_resource_claim_status, claim.name, claim.namespace, current,
                 field_manager=FIELD_MANAGER)
        except ApiError as e:
            return self._failed(w, e)
        self.written += 1
        self._done.add(claim.uid)
        return False

    def _failed(self, w: _Write, e: ApiError) -> bool:
        now = time.monotonic()
        if e.status == 409:  # someone else wrote in between: read again, at once
            w.conflicts += 1
            if w.conflicts >= MAX_ATTEMPTS:
                log.warning("status of claim %s not written: %d conflicts in a row", w.claim, w.conflicts)
                self.dropped += 1
                return False
            w.due = now
            return True
        if e.permanent:
            log.warning("status of claim %s not written: %s", w.claim, e)
            self.dropped += 1
            return False
        w.conflicts = 0
        w.failing_since = w.failing_since or now
        if now - w.failing_since > RETRY_SECONDS:
            log.warning("status of claim %s not written, failing for %.0fs: %s", w.claim, now - w.failing_since, e)
            self.dropped += 1
            return False
        delay = w.backoff.next()
        self.retries += 1
        log.info("status of claim %s: attempt %d failed (retry in %.1fs): %s", w.claim, w.backoff.failures,
                 delay, e)
        w.due = now + delay
        return True
