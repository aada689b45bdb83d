"""The crash harness's pieces: a serve that can be armed with a fault point, and the convergence checks.

A CrashNode is one fake host, one API stand-in, one kubelet-like client and (optionally) a fake NRI
runtime, shared by the cases of a module: each case restarts serve armed with its point, drives the
operation that reaches it, sees the SIGKILL, restarts serve unarmed and checks the node."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from dataclasses import dataclass, field

import grpc

from sriovdra import faults
from sriovdra.checkpoint import PREPARED, checkpoint_path, read_only
from sriovdra.host import pci
from sriovdra.host.discovery import discover
from sriovdra.host.paths import HostPaths
from sriovdra.kube.slices import parse_index
from sriovdra.model import SRIOV_DRIVER
from tests.support.claims import ref
from tests.support.node import Node
from tests.support.waiting import wait


@dataclass
class Link:
    name: str
    mtu: int
    mac: str


def root_link(name: str, netns: str | None = None) -> Link | None:
    """A link by name in the root netns (or in the netns file given), None when it is not there."""
    cmd = ["ip", "-j", "link", "show", "dev", name]
    if netns:
        cmd = ["nsenter", f"--net={netns}", *cmd]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode:
        return None
    [link] = json.loads(p.stdout)
    return Link(link["ifname"], link["mtu"], link["address"])


def pod_links(netns: str) -> list[str]:
    p = subprocess.run(["nsenter", f"--net={netns}", "ip", "-j", "link", "show"], capture_output=True, text=True,
                       check=True)
    return sorted(x["ifname"] for x in json.loads(p.stdout))


@dataclass
class CrashNode:
    node: Node
    args: tuple[str, ...] = ()  # serve flags of every start
    sockets: int = 1
    notes: list[str] = field(default_factory=list)

    @property
    def paths(self) -> HostPaths:
        return HostPaths.resolve(self.node.host_root)

    def _mark(self, text: str) -> None:
        with open(self.node.log_path, "a") as f:
            f.write(f"===== harness: {text}\n")

    def start(self, *extra: str, fault: str | None = None) -> None:
        """(Re)start serve, armed with `fault` if given. An armed serve may die before it registers
        (provisioning and slice points are reached at start): that is checked by killed()."""
        self.stop()
        self._mark(f"start {' '.join(extra)} armed with {fault}" if fault else f"start {' '.join(extra)}")
        env = {faults.ENV: fault} if fault else None
        try:
            self.node.start(*self.args, *extra, sockets=self.sockets, env=env)
        except AssertionError:
            if not fault:
                raise
            return
        if not fault:  # registered: the checkpoint is loaded and interrupted operations are finished
            self.node.plugins()

    def stop(self) -> None:
        if self.node.proc is not None:
            assert self.node.stop() == 0, f"serve did not stop cleanly:\n{self.node.log()[-3000:]}"

    def killed(self, point: str) -> None:
        """serve died by SIGKILL (at the armed point)."""
        proc = self.node.proc
        assert proc is not None
        try:
            code = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"serve armed with {point} did not reach it") from None
        assert code == -signal.SIGKILL, f"serve armed with {point} exited with {code}:\n{self.node.log()[-3000:]}"
        self.node.proc = None

    def plugin(self):
        return self.node.plugins()[SRIOV_DRIVER]

    # --- the kubelet's calls ------------------------------------------------------------------

    def prepare(self, claim: dict):
        """NodePrepareResources, retried like the kubelet while NRI (re)connects; the claim's entry."""
        def once():
            entry = self.node.kubelet.prepare(self.plugin(), [ref(claim)]).claims[claim["metadata"]["uid"]]
            return None if "not connected" in entry.error else entry
        return wait(once, timeout=30, what=f"prepare of {claim['metadata']['name']}")

    def prepare_dies(self, claim: dict, point: str) -> None:
        self._dies(self.node.kubelet.prepare, claim, point)

    def unprepare(self, claim: dict) -> str:
        return self.node.kubelet.unprepare(self.plugin(), [ref(claim)]).claims[claim["metadata"]["uid"]].error

    def unprepare_dies(self, claim: dict, point: str) -> None:
        self._dies(self.node.kubelet.unprepare, claim, point)

    def _dies(self, call, claim: dict, point: str) -> None:
        """The call reaches `point`: serve is SIGKILLed there (the call fails, or its answer is lost)."""
        try:
            call(self.plugin(), [ref(claim)], timeout=30)
        except grpc.RpcError:
            pass
        self.killed(point)

    # --- what is on the node ------------------------------------------------------------------

    def records(self) -> dict:
        """The SR-IOV checkpoint's records; fails on a checkpoint that does not verify."""
        path = checkpoint_path(self.node.state_dir, SRIOV_DRIVER)
        if not os.path.exists(path):
            return {}
        loaded = read_only(path)
        assert loaded.problem is None, f"checkpoint invalid: {loaded.problem}"
        return loaded.records

    def cdi_files(self) -> list[str]:
        try:
            return sorted(os.listdir(self.node.cdi_dir))
        except FileNotFoundError:
            return []

    def checkpoint_show(self) -> None:
        """`sriovdra checkpoint show` exits 0: every checkpoint in the state dir verifies."""
        p = subprocess.run([*self.node.serve_args()[:3], "checkpoint", "show", "--state-dir", self.node.state_dir],
                           capture_output=True, text=True)
        assert p.returncode == 0, f"sriovdra checkpoint show: exit {p.returncode}: {p.stdout}{p.stderr}"

    def converged(self, prepared: dict[str, list[str]], drivers: dict[str, str | None]) -> None:
        """The node as it must be: exactly the claims `prepared` (uid -> devices), all PREPARED, each with its
        CDI spec and nothing else in the CDI dir; every VF on the driver `drivers` says (PCI -> driver)."""
        recs = self.records()
        assert {uid: sorted(d.device for d in r.devices) for uid, r in recs.items()} == \
               {uid: sorted(devs) for uid, devs in prepared.items()}, f"checkpoint holds {sorted(recs)}"
        assert all(r.state == PREPARED for r in recs.values()), {u: r.state for u, r in recs.items()}
        specs = sorted(name for r in recs.values() for name in r.specs)
        assert self.cdi_files() == specs, f"CDI dir: {self.cdi_files()}, checkpoint specs: {specs}"
        for address, driver in drivers.items():
            assert pci.current_driver(self.paths, address) == driver, f"{address} bound to the wrong driver"
            assert not _override(self.paths, address), f"{address}: driver_override left behind"

    def one_slice_set(self, devices: set[str] | None = None, driver: str = SRIOV_DRIVER) -> None:
        """Exactly one complete set of ResourceSlices for the pool (waits for the publisher to get there)."""
        if devices is None:
            devices = {d.name for d in discover(self.paths).dra_devices() if d.driver == driver}
        problems: list[str] = []

        def ok():
            problems[:] = slice_problems(self.node.api.slices(driver), devices)
            return not problems
        try:
            wait(ok, timeout=20, what="one set of slices")
        except AssertionError:
            raise AssertionError(f"slices did not converge: {'; '.join(problems)}") from None


def slice_problems(slices: list[dict], devices: set[str]) -> list[str]:
    """What keeps these slices from being exactly one complete, current set of the pool."""
    if not slices:
        return ["no slices"]
    out = []
    gens = {s["spec"]["pool"]["generation"] for s in slices}
    counts = {s["spec"]["pool"]["resourceSliceCount"] for s in slices}
    if len(gens) != 1:
        out.append(f"generations {sorted(gens)}")
    if counts != {len(slices)}:
        out.append(f"{len(slices)} slices, resourceSliceCount {sorted(counts)}")
    indexes = sorted(-1 if (i := parse_index(s["metadata"]["name"])) is None else i for s in slices)
    if indexes != list(range(len(slices))):
        out.append(f"slice indexes {indexes}")
    names = [d["name"] for s in slices for d in s["spec"]["devices"]]
    if len(names) != len(set(names)):
        out.append(f"{len(names) - len(set(names))} device(s) published twice")
    if set(names) != devices:
        out.append(f"devices: {len(set(names) - devices)} extra, {len(devices - set(names))} missing")
    return out


def _override(paths: HostPaths, address: str) -> str:
    try:
        with open(os.path.join(paths.sysfs, "bus", "pci", "devices", address, "driver_override")) as f:
            text = f.read().strip()
    except FileNotFoundError:
        return ""
    return "" if text == "(null)" else text
