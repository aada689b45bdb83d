"""Publishing a driver's devices as resource.k8s.io/v1 ResourceSlices.

One pool per driver named after the node, split into slices of at most 128 devices. The sync
follows the Go resourceslice controller (dra-protocol.md section 6.3): slices are matched to
their index by the name prefix, the pool generation is bumped whenever more than one slice
changes or slices come and go, obsolete slices are deleted first, then changed ones updated,
then missing ones created. A watch on the node's slices re-syncs at once when someone (the
kubelet at its start) deletes them; a periodic resync covers a broken watch.

Every (re)opened watch also re-syncs and re-reads the Node: what changed while no watch was open
(the API server restarted, maybe with its state lost and the Node made anew) sends no event.
Failed syncs and failed watches are retried with capped exponential backoff (sriovdra.kube.backoff).
"""

from __future__ import annotations

import logging
import threading
import time

from sriovdra import faults
from sriovdra.kube.api import FIELD_MANAGER, ApiError, call, get_path, watch_events
from sriovdra.kube.backoff import Backoff
from sriovdra.model import DraDevice

log = logging.getLogger(__name__)

MAX_DEVICES_PER_SLICE = 128
RESYNC_SECONDS = 30.0
WATCH_SECONDS = 300
SYNC_BACKOFF = (0.5, 30.0)  # first retry, cap (seconds)
WATCH_BACKOFF = (1.0, 16.0)


def split(devices: list[DraDevice], size: int = MAX_DEVICES_PER_SLICE) -> list[list[dict]]:
    """The desired slices' device lists, in name order; a pool always has at least one slice."""
    items = [{"name": d.name, "attributes": d.slice_attributes()} for d in sorted(devices, key=lambda d: d.name)]
    return [items[i:i + size] for i in range(0, len(items), size)] or [[]]


def slice_prefix(index: int, count: int) -> str:
    """The index prefix of a slice name: lowercase hex, zero-padded to max(5, hex digits of count-1)."""
    return f"{index:0{max(5, len(f'{max(count - 1, 0):x}'))}x}"


def parse_index(name: str) -> int | None:
    head = name.split("-", 1)[0]
    try:
        return int(head, 16) if head and len(head) >= 5 else None
    except ValueError:
        return None


class SlicePublisher:
    def __init__(self, api_client, driver: str, node: str, resync: float = RESYNC_SECONDS,
                 max_devices: int = MAX_DEVICES_PER_SLICE) -> None:
        from kubernetes.client import ResourceV1Api

        self.api_client = api_client
        self.api = ResourceV1Api(api_client)
        self.driver, self.node = driver, node
        self.resync, self.max_devices = resync, max_devices
        self.selector = f"spec.nodeName={node},spec.driver={driver}"
        self._devices: list[DraDevice] | None = None
        self._node_uid: str | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self.synced = threading.Event()  # set after every successful sync
        self.published = threading.Event()  # set after the first successful sync
        self.last_error: str | None = None
        self._threads: list[threading.Thread] = []
        self._watch_resp = None

    # public API

    def set_devices(self, devices: list[DraDevice]) -> None:
        self._devices = list(devices)
        self.synced.clear()
        self._wake.set()

    def start(self) -> None:
        for target, name in ((self._sync_loop, "slices-sync"), (self._watch_loop, "slices-watch")):
            t = threading.Thread(target=target, name=f"{name}-{self.driver}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        resp = self._watch_resp
        if resp is not None:
            try:  # ends the blocked read of the watch stream
                resp.shutdown() if hasattr(resp, "shutdown") else resp.close()
            except (RuntimeError, OSError):
                pass  # the watch already ended and released its connection
        for t in self._threads:
            t.join(timeout)

    # loops

    def _sync_loop(self) -> None:
        backoff = Backoff(*SYNC_BACKOFF)
        while not self._stop.is_set():
            self._wake.wait(self.resync)
            self._wake.clear()
            if self._stop.is_set() or self._devices is None:
                continue
            try:
                self.sync(self._devices)
                backoff.reset()
                self.last_error = None
                self.synced.set()
                self.published.set()
            except ApiError as e:
                self.last_error = str(e)
                delay = backoff.next()
                log.warning("publishing %s slices failed (retry in %.1fs): %s", self.driver, delay, e)
                self._stop.wait(delay)
                self._wake.set()

    def _watch_opened(self, resp) -> None:
        self._watch_resp = resp
        self._node_uid = None  # a restarted API server may have lost the Node and made it anew (new UID)
        self._wake.set()  # events missed while no watch was open: compare and repair

    def _watch_loop(self) -> None:
        backoff = Backoff(*WATCH_BACKOFF)
        while not self._stop.is_set():
            self._watch_resp = None
            try:
                for event in watch_events(self.api.list_resource_slice, WATCH_SECONDS, field_selector=self.selector,
                                          on_open=self._watch_opened):
                    if self._stop.is_set():
                        return
                    if event.get("type") in ("DELETED", "MODIFIED", "ADDED", "ERROR"):
                        self._wake.set()  # compare and repair
            except (ApiError, ValueError, OSError) as e:
                log.debug("slice watch ended: %s", e)
            except Exception as e:  # noqa: BLE001 - a broken watch must not kill the publisher
                if not self._stop.is_set():  # closing it on stop is how it ends
                    log.warning("slice watch broke, re-watching: %s", e)
            if self._watch_resp is not None:  # it opened: the server is there, back off from the start
                backoff.reset()
            self._stop.wait(backoff.next())

    # one sync

    def _owner(self) -> list[dict]:
        if self._node_uid is None:
            try:
                self._node_uid = get_path(self.api_client, f"/api/v1/nodes/{self.node}")["metadata"]["uid"]
            except (ApiError, KeyError, TypeError) as e:
                log.warning("node %s not readable, slices get no owner reference (retrying later): %s", self.node, e)
                return []
        return [{"apiVersion": "v1", "kind": "Node", "name": self.node, "uid": self._node_uid, "controller": True}]

    def _slice(self, name_or_prefix: str, devices: list[dict], generation: int, count: int, owner: list[dict],
               existing: dict | None = None) -> dict:
        metadata = dict(existing["metadata"]) if existing else {"generateName": name_or_prefix}
        if owner:
            metadata["ownerReferences"] = owner
        return {"apiVersion": "resource.k8s.io/v1", "kind": "ResourceSlice", "metadata": metadata,
                "spec": {"driver": self.driver, "nodeName": self.node, "devices": devices,
                         "pool": {"name": self.node, "generation": generation, "resourceSliceCount": count}}}

    def list_slices(self) -> list[dict]:
        return call(self.api.list_resource_slice, field_selector=self.selector).get("items", [])

    def sync(self, devices: list[DraDevice]) -> None:
        desired = split(devices, self.max_devices)
        owner = self._owner()
        existing = [s for s in self.list_slices() if s.get("spec", {}).get("pool", {}).get("name") == self.node]
        top = max((s["spec"]["pool"].get("generation", 0) for s in existing), default=0)
        matched: dict[int, dict] = {}
        obsolete: list[dict] = []
        for s in existing:
            index = parse_index(s["metadata"]["name"])
            if s["spec"]["pool"].get("generation", 0) == top and index is not None and index < len(desired) \
                    and index not in matched:
                matched[index] = s
            else:
                obsolete.append(s)
        # A slice written while the Node was unreadable gets its owner once the Node is known.
        changed = [i for i, s in matched.items() if s["spec"].get("devices", []) != desired[i]
                   or s["spec"]["pool"].get("resourceSliceCount") != len(desired)
                   or (owner and s["metadata"].get("ownerReferences") != owner)]
        missing = [i for i in range(len(desired)) if i not in matched]
        bump = bool(existing) and (bool(obsolete) or bool(missing) or len(changed) > 1)
        generation = top + 1 if bump else top
        for s in obsolete:
            self._delete(s)
            faults.point("slices.after-delete")
        for i, s in matched.items():
            if bump or i in changed:
                body = self._slice("", desired[i], generation, len(desired), owner, existing=s)
                call(self.api.replace_resource_slice, s["metadata"]["name"], body, field_manager=FIELD_MANAGER)
                faults.point("slices.after-update")
        for i in missing:
            prefix = f"{slice_prefix(i, len(desired))}-{self.driver}-{self.node}-"
            call(self.api.create_resource_slice, self._slice(prefix, desired[i], generation, len(desired), owner),
                 field_manager=FIELD_MANAGER)
            faults.point("slices.after-create")
        if obsolete or missing or changed or bump:
            log.info("%s: pool %s generation %d, %d slice(s), %d device(s)", self.driver, self.node, generation,
                     len(desired), len(devices))

    def _delete(self, s: dict) -> None:
        md = s["metadata"]
        body = {"apiVersion": "v1", "kind": "DeleteOptions",
                "preconditions": {"uid": md.get("uid"), "resourceVersion": md.get("resourceVersion")}}
        try:
            call(self.api.delete_resource_slice, md["name"], body=body)
        except ApiError as e:
            if e.status != 404:
                raise

    def wait_synced(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.synced.wait(0.05):
                return True
        return False
