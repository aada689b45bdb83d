"""Writing status.devices of prepared claims, asynchronously (prepare never waits on it).

Each update re-reads the claim, keeps every entry that is not ours (other drivers share the
list), replaces ours, and writes through the status subresource with the read resourceVersion;
a 409 conflict re-reads and retries, server errors back off, NotFound/Forbidden/Invalid drop
the update (the claim is gone or we may not write it).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from datetime import datetime, timezone

from sriovdra.claim import ClaimRef
from sriovdra.kube.api import FIELD_MANAGER, ApiError, call

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 8


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


class ClaimStatusWriter:
    def __init__(self, api_client, driver: str) -> None:
        from kubernetes.client import ResourceV1Api

        self.api = ResourceV1Api(api_client)
        self.driver = driver
        self._queue: queue.Queue[tuple[ClaimRef, list[dict]] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name=f"claim-status-{driver}", daemon=True)
        self.written = 0
        self.dropped = 0
        self._done: set[str] = set()  # claim UIDs whose status this process has written

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._queue.put(None)
        if self._thread.is_alive():
            self._thread.join(timeout)

    def enqueue(self, claim: ClaimRef, entries: list[dict], once: bool = False) -> None:
        """once: skip if this process already wrote this claim's status (a repeated prepare)."""
        if once and claim.uid in self._done:
            return
        self._queue.put((claim, entries))

    def idle(self) -> bool:
        return self._queue.unfinished_tasks == 0

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                self._write(*item)
            finally:
                self._queue.task_done()

    def _write(self, claim: ClaimRef, entries: list[dict]) -> None:
        delay = 0.1
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                current = call(self.api.read_namespaced_resource_claim, claim.name, claim.namespace)
                if current.get("metadata", {}).get("uid") != claim.uid:
                    log.info("claim %s was replaced, its status is not ours to write", claim)
                    self.dropped += 1
                    return
                status = current.setdefault("status", {})
                status["devices"] = merge_devices(status.get("devices") or [], entries, self.driver)
                call(self.api.replace_namespaced_resource_claim_status, claim.name, claim.namespace, current,
                     field_manager=FIELD_MANAGER)
                self.written += 1
                self._done.add(claim.uid)
                return
            except ApiError as e:
                if e.status == 409:
                    continue  # someone else wrote in between: read again
                if e.permanent:
                    log.warning("status of claim %s not written: %s", claim, e)
                    self.dropped += 1
                    return
                log.info("status of claim %s: attempt %d failed: %s", claim, attempt, e)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
        log.warning("status of claim %s not written after %d attempts", claim, MAX_ATTEMPTS)
        self.dropped += 1
