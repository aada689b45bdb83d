"""`sriovdra serve`: discovery, the driver core, the kubelet plugin servers and the Kubernetes
adapters, wired together and kept running.

One kubelet plugin per DRA driver that the node has devices for (or that --drivers enables).
The inventory is rescanned periodically: new VFs, vanished devices and port-state changes reach
the ResourceSlices and the health streams without a restart.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass

from sriovdra.driver.core import Driver, DriverSettings
from sriovdra.host.discovery import discover
from sriovdra.host.paths import HostPaths
from sriovdra.kube.claims import ApiClaimSource
from sriovdra.kube.slices import SlicePublisher
from sriovdra.kube.status import ClaimStatusWriter, ready_entry
from sriovdra.model import DRIVERS, Inventory, device_health
from sriovdra.plugin.server import HealthBoard, PluginServer, plugin_sockets

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServeOptions:
    node_name: str
    paths: HostPaths
    drivers: tuple[str, ...] = ()  # empty: every driver the node has devices for
    kubelet_root_dir: str = "/var/lib/kubelet"
    cdi_dir: str = "/var/run/cdi"
    state_dir: str = "/var/lib/sriovdra"
    kubeconfig: str | None = None
    pod_uid: str | None = None  # rolling-update socket layout
    rescan_seconds: float = 15.0
    health_resend_seconds: float = 10.0


class _Plugin:
    """Everything one DRA driver runs."""

    def __init__(self, svc: Service, driver_name: str) -> None:
        o = svc.opts
        sockets = plugin_sockets(o.kubelet_root_dir, driver_name, o.pod_uid)
        self.status = ClaimStatusWriter(svc.api_client, driver_name)
        self.driver = Driver(
            DriverSettings(driver=driver_name, pool=o.node_name, cdi_dir=o.cdi_dir,
                           checkpoint_path=os.path.join(o.state_dir, f"{driver_name}.checkpoint.json"),
                           dev_file=o.paths.dev_file,
                           serialize_lock=sockets.serialize_lock),
            inventory=lambda: svc.inventory, claims=svc.claims, on_prepared=self._prepared)
        self.board = HealthBoard(o.node_name)
        self.server = PluginServer(self.driver, sockets, self.board, health_resend=o.health_resend_seconds)
        self.slices = SlicePublisher(svc.api_client, driver_name, o.node_name)

    def _prepared(self, rec, fresh: bool = True) -> None:
        """Write the claim's status: always for a fresh prepare, once per process for repeats."""
        self.status.enqueue(rec.claim, [ready_entry(self.driver.s.driver, d.pool, d.device, {"config": d.config},
                                                    d.share_id) for d in rec.devices], once=not fresh)

    def start(self, inv: Inventory) -> list[str]:
        problems = self.driver.start()
        self.update(inv)
        self.status.start()
        for rec in self.driver.prepared():  # a status write may have died with the last process
            self._prepared(rec, fresh=False)
        self.slices.start()
        self.server.start()
        return problems

    def update(self, inv: Inventory) -> None:
        self.slices.set_devices(self.driver.published(inv))
        self.board.update(device_health(inv, self.driver.s.driver))

    def stop(self) -> None:
        self.server.stop()
        self.slices.stop()
        self.status.stop()


class Service:
    def __init__(self, opts: ServeOptions, api_client=None) -> None:
        from sriovdra.kube.api import new_api_client

        self.opts = opts
        self.api_client = api_client or new_api_client(opts.kubeconfig)
        self.claims = ApiClaimSource(self.api_client)
        self.inventory: Inventory = discover(opts.paths)
        self.plugins: dict[str, _Plugin] = {}
        self.problems: list[str] = []
        self._stop = threading.Event()
        self._rescan = threading.Thread(target=self._rescan_loop, name="rescan", daemon=True)

    def wanted(self, inv: Inventory) -> list[str]:
        if self.opts.drivers:
            return list(self.opts.drivers)
        present = {d.driver for d in inv.dra_devices()}
        return [d for d in DRIVERS if d in present]

    def start(self) -> None:
        os.makedirs(self.opts.state_dir, mode=0o700, exist_ok=True)
        self._start_plugins(self.inventory)
        if not self.plugins:
            log.warning("no SR-IOV VF or InfiniBand port on this node: waiting for devices (or pass --drivers)")
        self._rescan.start()

    def _start_plugins(self, inv: Inventory) -> None:
        for name in self.wanted(inv):
            if name in self.plugins:
                continue
            plugin = _Plugin(self, name)
            for problem in plugin.start(inv):
                log.error("%s: %s", name, problem)
                self.problems.append(f"{name}: {problem}")
            self.plugins[name] = plugin
            log.info("kubelet plugin %s listening on %s", name, plugin.server.sockets.dra)

    def refresh(self) -> None:
        inv = discover(self.opts.paths)
        self.inventory = inv
        self._start_plugins(inv)
        for plugin in self.plugins.values():
            plugin.update(inv)

    def _rescan_loop(self) -> None:
        while not self._stop.wait(self.opts.rescan_seconds):
            try:
                self.refresh()
            except Exception as e:  # noqa: BLE001 - keep serving with the last inventory
                log.error("rescan failed, keeping the previous inventory: %s", e)

    def stop(self) -> None:
        """Registration sockets first (the kubelet stops calling), then every thread, joined."""
        self._stop.set()
        for plugin in self.plugins.values():
            plugin.stop()
        if self._rescan.is_alive():
            self._rescan.join(10)
