"""Many kubelet-like client threads preparing and unpreparing claims against serve, checking as they go.

Claims are allocated with deliberate overlaps (as a scheduler working from stale slices would):
the driver must refuse a device another prepared claim holds, and a refused claim is retried
later. What is checked, for every claim and at every step:

- no device held by two claims at once, seen from the replies (claim B's successful reply arriving
  while claim A holds the device between its reply and its unprepare) and from the checkpoint
  files, which a watcher thread reads over and over;
- a prepared claim is in the checkpoint (state prepared, its devices) from its reply until its
  unprepare, and gone after the unprepare reply;
- the claim's CDI spec names exactly the devices and CDI IDs of the reply, with each VF's PCI
  address in its environment, and is gone after unprepare.
"""

from __future__ import annotations

import json
import os
import queue
import threading
import time
from dataclasses import dataclass, field

from sriovdra.cdi import CDI_KINDS, spec_file_name
from sriovdra.checkpoint import checkpoint_path
from sriovdra.model import SRIOV_DRIVER
from tests.support.claims import allocated_claim, ref


def pci_of(device: str) -> str:
    """vf-0000-3b-00-2 -> 0000:3b:00.2 (the device names serve publishes for VFs)."""
    domain, bus, slot, fn = device.removeprefix("vf-").split("-")
    return f"{domain}:{bus}:{slot}.{fn}"


def overlapping(devices: list[str], count: int) -> list[list[str]]:
    """`count` allocations over the devices: claim i gets device i mod n, every fifth claim a second
    one further on, so that claims i, i+n, ... and the pairs contend for the same devices."""
    n = len(devices)
    out = []
    for i in range(count):
        picked = [devices[i % n]]
        if i % 5 == 0:
            second = devices[(i * 13 + 7) % n]
            if second not in picked:
                picked.append(second)
        out.append(picked)
    return out


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))] if ordered else float("nan")


def summary(name: str, values_ms: list[float]) -> str:
    return (f"{name}: n={len(values_ms)} p50 {percentile(values_ms, 50):.1f} ms, "
            f"p99 {percentile(values_ms, 99):.1f} ms, max {max(values_ms, default=float('nan')):.1f} ms")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def read_checkpoint(path: str) -> dict:
    try:
        with open(path) as f:
            return json.load(f)["claims"]
    except FileNotFoundError:
        return {}


@dataclass
class CheckpointWatch:
    """Reads the checkpoint file over and over until stopped; records every device that two records
    held in one snapshot (an atomic rename means every read sees one whole file)."""

    path: str
    snapshots: int = 0
    doubles: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="checkpoint-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            holders: dict[str, str] = {}
            for uid, rec in read_checkpoint(self.path).items():
                for d in rec["devices"]:
                    if d.get("admin_access") or d.get("share_id"):
                        continue
                    if d["device"] in holders:
                        self.doubles.append(f"{d['device']} in {holders[d['device']]} and {uid}")
                    holders[d["device"]] = uid
            self.snapshots += 1


@dataclass
class Results:
    prepare_ms: list[float] = field(default_factory=list)  # successful prepares
    refused_ms: list[float] = field(default_factory=list)  # refused: the device was held
    unprepare_ms: list[float] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    prepared: dict[str, int] = field(default_factory=dict)  # claim uid -> successful prepares
    per_socket: dict[str, int] = field(default_factory=dict)


class LoadRun:
    """Run with `run(threads)`; then look at .results and .watch."""

    def __init__(self, node, plugins: list, claims: int, devices: list[str], prefix: str = "load") -> None:
        self.node, self.plugins = node, plugins
        self.claims = [node.api.add_claim(allocated_claim(f"{prefix}-{i:03d}", picked))
                       for i, picked in enumerate(overlapping(devices, claims))]
        self.kind = CDI_KINDS[SRIOV_DRIVER]
        self.checkpoint = checkpoint_path(node.state_dir, SRIOV_DRIVER)
        self.watch = CheckpointWatch(self.checkpoint)
        self.results = Results()
        self._holding: dict[str, str] = {}  # device -> uid, between a claim's prepare reply and its unprepare
        self._lock = threading.Lock()
        self._todo: queue.Queue = queue.Queue()

    def run(self, threads: int) -> None:
        for i, claim in enumerate(self.claims):
            self._todo.put((i, claim))
        self.watch.start()
        workers = [threading.Thread(target=self._worker, name=f"kubelet-{t}") for t in range(threads)]
        try:
            for w in workers:
                w.start()
            for w in workers:
                w.join()
        finally:
            self.watch.stop()

    def _problem(self, message: str) -> None:
        with self._lock:
            self.results.problems.append(message)

    def _worker(self) -> None:
        while True:
            try:
                i, claim = self._todo.get_nowait()
            except queue.Empty:
                return
            try:
                if not self._one(i, claim):
                    self._todo.put((i, claim))  # refused: the device is held; try again after the others
            except Exception as e:  # noqa: BLE001 - reported by the test, the other threads go on
                self._problem(f"{claim['metadata']['name']}: {type(e).__name__}: {e}")

    def _one(self, i: int, claim: dict) -> bool:
        """Prepare through one socket, check, unprepare through the next (the other instance of a
        pair). False when the prepare was refused because a device is held."""
        uid, name = claim["metadata"]["uid"], claim["metadata"]["name"]
        devices = [r["device"] for r in claim["status"]["allocation"]["devices"]["results"]]
        plugin = self.plugins[i % len(self.plugins)]
        t0 = time.perf_counter()
        reply = self.node.kubelet.prepare(plugin, [ref(claim)]).claims[uid]
        elapsed = (time.perf_counter() - t0) * 1000
        if reply.error:
            with self._lock:
                self.results.refused_ms.append(elapsed)
            if "already prepared for claim" not in reply.error:
                self._problem(f"{name}: unexpected prepare error: {reply.error}")
                return True
            return False
        with self._lock:
            self.results.prepare_ms.append(elapsed)
            self.results.prepared[uid] = self.results.prepared.get(uid, 0) + 1
            self.results.per_socket[plugin.endpoint] = self.results.per_socket.get(plugin.endpoint, 0) + 1
            for d in devices:
                if d in self._holding:
                    self.results.problems.append(f"{d} given to {name} while {self._holding[d]} holds it")
                self._holding[d] = name
        self._check_prepared(name, uid, devices, reply)
        self._check_in_checkpoint(name, uid, devices)  # still there right before the unprepare
        with self._lock:
            for d in devices:
                self._holding.pop(d, None)
        other = self.plugins[(i + 1) % len(self.plugins)]
        t0 = time.perf_counter()
        unprep = self.node.kubelet.unprepare(other, [ref(claim)]).claims[uid]
        elapsed = (time.perf_counter() - t0) * 1000
        with self._lock:
            self.results.unprepare_ms.append(elapsed)
        if unprep.error:
            self._problem(f"{name}: unprepare failed: {unprep.error}")
        if uid in read_checkpoint(self.checkpoint):
            self._problem(f"{name}: still in the checkpoint after its unprepare reply")
        if os.path.exists(os.path.join(self.node.cdi_dir, spec_file_name(self.kind, uid))):
            self._problem(f"{name}: CDI spec left after its unprepare reply")
        return True

    def _check_in_checkpoint(self, name: str, uid: str, devices: list[str]) -> None:
        rec = read_checkpoint(self.checkpoint).get(uid)
        if rec is None:
            self._problem(f"{name}: prepared, but not in the checkpoint")
        elif rec["state"] != "prepared" or sorted(d["device"] for d in rec["devices"]) != sorted(devices):
            self._problem(f"{name}: checkpoint record {rec['state']} {[d['device'] for d in rec['devices']]}, "
                          f"expected prepared {devices}")

    def _check_prepared(self, name: str, uid: str, devices: list[str], reply) -> None:
        got = sorted((d.device_name, tuple(d.cdi_device_ids)) for d in reply.devices)
        want = sorted((d, (f"{self.kind}={d}-{uid}",)) for d in devices)
        if got != want:
            self._problem(f"{name}: reply devices {got}, expected {want}")
        self._check_in_checkpoint(name, uid, devices)
        try:
            with open(os.path.join(self.node.cdi_dir, spec_file_name(self.kind, uid))) as f:
                spec = json.load(f)
        except FileNotFoundError:
            return self._problem(f"{name}: prepared, but no CDI spec")
        names = sorted(d["name"] for d in spec["devices"])
        if spec["kind"] != self.kind or names != sorted(f"{d}-{uid}" for d in devices):
            self._problem(f"{name}: CDI spec {spec['kind']} {names} does not match the reply")
        for dev in spec["devices"]:
            device = dev["name"][:-len(uid) - 1]
            env = dev["containerEdits"].get("env", [])
            if not any(e.endswith(f"={pci_of(device)}") for e in env):
                self._problem(f"{name}: CDI device {dev['name']} does not carry {pci_of(device)}: {env}")
