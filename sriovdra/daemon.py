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
import time
from dataclasses import dataclass

from sriovdra.checkpoint import ATTACHED, ClaimRecord, PreparedDevice, checkpoint_path
from sriovdra.driver.core import Driver, DriverSettings
from sriovdra.driver.ibstatus import ib_report
from sriovdra.host.discovery import discover
from sriovdra.host.ipam import DEFAULT_CNI_BIN_DIRS
from sriovdra.host.paths import HostPaths
from sriovdra.host.runtime_config import NRI_SOCKET
from sriovdra.kube.claims import ApiClaimSource
from sriovdra.kube.slices import SlicePublisher
from sriovdra.kube.status import ClaimStatusWriter, ready_entry
from sriovdra.model import DRIVERS, IB_DRIVER, Inventory, device_health
from sriovdra.policy import NO_POLICY, DevicePolicy
from sriovdra.plugin.server import HealthBoard, PluginServer, plugin_sockets
from sriovdra.probes import Check
from sriovdra.provisioning import ProvisionConfig

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
    netdev_attach: str = "nri"  # see sriovdra.driver.core.DriverSettings
    nri_socket: str = NRI_SOCKET
    nri_plugin_name: str = "sriovdra"
    nri_plugin_index: str = "50"
    cni_bin_dirs: tuple[str, ...] = DEFAULT_CNI_BIN_DIRS
    nri_wait_seconds: float = 2.0  # at start, before claim calls reach the driver (and before registering
    # with the kubelet, unless the sockets listen early: sriovdra.plugin.server, "Early registration")
    device_policy: str | None = None  # policy file (sriovdra.policy), re-read when it changes
    provision: ProvisionConfig | None = None  # --num-vfs / --provision-config: VFs made at start
    policy_poll_seconds: float = 2.0
    probe_address: tuple[str, int] | None = None  # HTTP /livez and /readyz (sriovdra.probes)


# A rescan that has not finished for this long is stuck (liveness fails, the kubelet restarts us).
STUCK_RESCANS = 4
MIN_STUCK_SECONDS = 60.0
GRPC_PROBE_TIMEOUT = 3.0


class _Plugin:
    """Everything one DRA driver runs."""

    def __init__(self, svc: Service, driver_name: str) -> None:
        o = svc.opts
        sockets = plugin_sockets(o.kubelet_root_dir, driver_name, o.pod_uid)
        self.status = ClaimStatusWriter(svc.api_client, driver_name)
        self.driver = Driver(
            DriverSettings(driver=driver_name, pool=o.node_name, cdi_dir=o.cdi_dir,
                           checkpoint_path=checkpoint_path(o.state_dir, driver_name),
                           paths=o.paths, serialize_lock=sockets.serialize_lock, netdev_attach=o.netdev_attach),
            inventory=lambda: svc.inventory, claims=svc.claims, on_prepared=self._prepared, network=svc.network,
            lock=svc.lock, policy=svc.policy)
        if svc.network:
            svc.network.drivers.append(self.driver)
        early = svc.early.pop(driver_name, None)  # listening already, its gate closed (early registration)
        self._listening = early is not None
        self.board = early.board if early else HealthBoard(o.node_name)
        self.server = early or PluginServer(self.driver, sockets, self.board, health_resend=o.health_resend_seconds)
        self.slices = SlicePublisher(svc.api_client, driver_name, o.node_name)

    def _prepared(self, rec: ClaimRecord, fresh: bool = True) -> None:
        """Write the claim's status: always for a fresh prepare or attach, once per process for repeats."""
        self.status.enqueue(rec.claim, [_status_entry(self.driver.s.driver, d) for d in rec.devices], once=not fresh)

    def load(self) -> list[str]:
        """The checkpoint, with interrupted operations finished (before NRI reports pods)."""
        return self.driver.start()

    def serve(self, inv: Inventory) -> None:
        self.update(inv)
        self.status.start()
        for rec in self.driver.prepared():  # a status write may have died with the last process
            self._prepared(rec, fresh=False)
        self.slices.start()
        if self._listening:
            self.server.gate.open(self.driver)  # claim calls waiting since the early start go on now
        else:
            self.server.start()

    def update(self, inv: Inventory) -> None:
        published = self.driver.published(inv)
        self.slices.set_devices(published)
        names = {d.name for d in published}  # the health of a device the policy withholds is nobody's business
        self.board.update([h for h in device_health(inv, self.driver.s.driver) if h.device in names])

    def stop(self) -> None:
        self.server.stop()
        self.slices.stop()
        self.status.stop()


class Service:
    def __init__(self, opts: ServeOptions, api_client=None, early: dict[str, PluginServer] | None = None) -> None:
        """early: plugin servers already listening (sriovdra.plugin.server.listen_early), by driver;
        each driver's gate opens once its checkpoint is loaded, as a server started here would."""
        from sriovdra.kube.api import new_api_client

        self.opts = opts
        self.early = dict(early or {})
        self.api_client = api_client or new_api_client(opts.kubeconfig)
        self.claims = ApiClaimSource(self.api_client)
        self.inventory: Inventory = discover(opts.paths)
        self.policy_file = self._policy_file() if opts.device_policy else None  # PolicyFileError: unusable
        self._publishing = threading.Lock()  # rescans and policy reloads republish one at a time
        self.lock = threading.RLock()  # one host operation at a time, across drivers and NRI events
        self.network = self._pod_network() if opts.netdev_attach == "nri" else None
        self.nri = None
        self.plugins: dict[str, _Plugin] = {}
        self.problems: list[str] = []
        self._stop = threading.Event()
        self._rescan = threading.Thread(target=self._rescan_loop, name="rescan", daemon=True)
        self.started = threading.Event()
        self._heartbeat = time.monotonic()  # the rescan loop's last turn
        self.probes = None

    def wanted(self, inv: Inventory) -> list[str]:
        if self.opts.drivers:
            return list(self.opts.drivers)
        present = {d.driver for d in inv.dra_devices()}
        return [d for d in DRIVERS if d in present]

    def _pod_network(self):
        from sriovdra.driver.network import NetworkSettings, PodNetwork
        from sriovdra.host.sysfs import Sysfs
        from sriovdra.host.system import rdma_netns_mode

        settings = NetworkSettings(cni_bin_dirs=self.opts.cni_bin_dirs,
                                   rdma_exclusive=rdma_netns_mode(Sysfs(self.opts.paths.sysfs)) == "exclusive")
        return PodNetwork(settings, lambda: self.inventory,
                          on_attached=lambda driver, rec: self.plugins[driver.s.driver]._prepared(rec))

    def _start_nri(self) -> None:
        from sriovdra.nri.plugin import NriPlugin

        o = self.opts
        self.nri = NriPlugin(o.nri_socket, self.network, name=o.nri_plugin_name, index=o.nri_plugin_index)
        self.network.link_problem = self._nri_problem
        self.nri.start()
        if not self.nri.connected.wait(o.nri_wait_seconds):
            log.warning("%s (claims with netdevs fail until it connects)", self._nri_problem())

    def _nri_problem(self) -> str | None:
        if self.nri.connected.is_set():
            return None
        return (f"sriovdra is not connected to the container runtime's NRI socket {self.opts.nri_socket} "
                f"(is NRI enabled in containerd/CRI-O? run `sriovdra doctor`)")

    def start(self) -> None:
        if self.opts.probe_address:  # first: provisioning can take minutes, and the pod is alive meanwhile
            from sriovdra.probes import ProbeServer

            self.probes = ProbeServer(self.opts.probe_address, self.live_checks, self.ready_checks)
            self.probes.start()
        os.makedirs(self.opts.state_dir, mode=0o700, exist_ok=True)
        if self.opts.provision:
            self._provision(self.opts.provision)  # before any plugin loads: it publishes the VFs made
        fresh = [self._load_plugin(name) for name in self.wanted(self.inventory)]
        if self.network:
            self._start_nri()  # Synchronize sees every loaded checkpoint; the kubelet is not told yet
        for plugin in fresh:
            self._serve_plugin(plugin)
        if not self.plugins:
            log.warning("no SR-IOV VF or InfiniBand port on this node: waiting for devices (or pass --drivers)")
        self._heartbeat = time.monotonic()
        self._rescan.start()
        if self.policy_file:
            self.policy_file.start()
        self.started.set()

    def _provision(self, config: ProvisionConfig) -> None:
        """Make the configured VFs, never by force: PFs whose VFs claims hold, and PFs that fail, are
        logged and left; serving goes on with whatever the node has."""
        from sriovdra.model import HOST_VM
        from sriovdra.provisioner import Options, provision

        if self.inventory.host.kind == HOST_VM:
            log.info("provisioning: skipped, this is a VM (VFs are passed through by the hypervisor)")
            return
        opts = Options(state_dir=self.opts.state_dir, progress=lambda line: log.info("provisioning: %s", line))
        try:
            report = provision(self.opts.paths, config, opts)
        except Exception as e:  # noqa: BLE001 - provisioning is best effort; the node's VFs are served as they are
            log.error("provisioning failed: %s", e)
            return
        for line in report.errors + report.unmatched:
            log.error("provisioning: %s", line)
        for pf in report.pfs:
            level = logging.ERROR if pf.problems else logging.INFO
            log.log(level, "provisioning: %s: %s VFs -> %s (%s)%s", pf.plan.name, pf.plan.before, pf.after,
                    pf.action, "".join(f"; {m}" for m in pf.problems))
        self.inventory = discover(self.opts.paths)

    def _policy_file(self):
        from sriovdra.policyfile import PolicyFile

        return PolicyFile(self.opts.device_policy, check=lambda p: p.check(self.inventory),
                          on_change=self.republish, interval=self.opts.policy_poll_seconds)

    def policy(self) -> DevicePolicy:
        return self.policy_file.current if self.policy_file else NO_POLICY

    def republish(self) -> None:
        """Slices and health again from the current inventory (the device policy changed)."""
        with self._publishing:
            for plugin in list(self.plugins.values()):
                plugin.update(self.inventory)

    def _load_plugin(self, name: str) -> _Plugin:
        plugin = _Plugin(self, name)
        for problem in plugin.load():
            log.error("%s: %s", name, problem)
            self.problems.append(f"{name}: {problem}")
        self.plugins[name] = plugin
        return plugin

    def _serve_plugin(self, plugin: _Plugin) -> None:
        plugin.serve(self.inventory)
        log.info("kubelet plugin %s listening on %s", plugin.driver.s.driver, plugin.server.sockets.dra)

    def _start_plugins(self, inv: Inventory) -> None:
        """Drivers whose devices appeared since the start."""
        for name in self.wanted(inv):
            if name not in self.plugins:
                self._serve_plugin(self._load_plugin(name))

    def refresh(self) -> None:
        inv = discover(self.opts.paths)
        with self._publishing:
            self.inventory = inv
            self._start_plugins(inv)
            for plugin in self.plugins.values():
                plugin.update(inv)
                for rec in plugin.driver.recheck_partitions(inv):  # the subnet manager acted since prepare
                    plugin._prepared(rec)

    def _rescan_loop(self) -> None:
        while not self._stop.wait(self.opts.rescan_seconds):
            try:
                self.refresh()
            except Exception as e:  # noqa: BLE001 - keep serving with the last inventory
                log.error("rescan failed, keeping the previous inventory: %s", e)
            self._heartbeat = time.monotonic()

    def live_checks(self) -> list[Check]:
        """Failing means only a restart helps: the rescan loop is stuck (it takes the locks every claim
        operation takes, so a deadlock shows here) or a gRPC server no longer answers."""
        if not self.started.is_set():
            return [Check("start", True, "starting (provisioning, loading checkpoints)")]
        age = time.monotonic() - self._heartbeat
        limit = max(STUCK_RESCANS * self.opts.rescan_seconds, MIN_STUCK_SECONDS)
        checks = [Check("rescan", self._rescan.is_alive() and age < limit,
                        f"last rescan finished {age:.0f}s ago" + ("" if self._rescan.is_alive() else ", loop ended"))]
        for name, plugin in list(self.plugins.items()):
            problem = plugin.server.answers(GRPC_PROBE_TIMEOUT)
            checks.append(Check(f"grpc:{name}", problem is None, problem or ""))
        return checks

    def ready_checks(self) -> list[Check]:
        """Ready once the kubelet registered every plugin and every plugin published its slices; in NRI
        mode also while the runtime's NRI connection is up (claims with netdevs fail without it)."""
        checks = [Check("start", self.started.is_set(), "" if self.started.is_set() else "still starting")]
        for name, plugin in list(self.plugins.items()):
            server, slices = plugin.server, plugin.slices
            checks.append(Check(f"registration:{name}", server.registered.is_set(), server.registration_error or (
                "" if server.registered.is_set() else
                f"the kubelet has not registered {server.sockets.registration} yet (is the kubelet's "
                f"plugins_registry dir mounted there?)")))
            checks.append(Check(f"slices:{name}", slices.published.is_set(),
                                "" if slices.published.is_set() else
                                f"ResourceSlices not published yet: {slices.last_error or 'first sync pending'}"))
        if self.nri is not None:
            problem = self._nri_problem()
            checks.append(Check("nri", problem is None, problem or ""))
        if self.started.is_set() and not self.plugins:
            checks.append(Check("devices", True, "no SR-IOV VF or InfiniBand port on this node yet"))
        return checks

    def stop(self) -> None:
        """Registration sockets first (the kubelet stops calling), then every thread, joined."""
        self._stop.set()
        if self.probes:
            self.probes.stop()
        if self.policy_file:
            self.policy_file.stop()
        for plugin in self.plugins.values():
            plugin.stop()
        for server in self.early.values():  # listening early for a driver that never loaded
            server.stop()
        if self.nri:
            self.nri.stop()  # after the kubelet plugins: no prepare waits on it any more
        if self.network:
            self.network.close()  # after NRI: no pod event uses its netlink sockets any more
        if self._rescan.is_alive():
            self._rescan.join(10)


def _status_entry(driver: str, d: PreparedDevice) -> dict:
    """status.devices[] of one device; with networkData and the network conditions once it is in a pod.
    InfiniBand devices also get data.ib and the IbConfig conditions (sriovdra.driver.ibstatus), which
    may be False or Unknown: what needs the subnet manager is said there, never silently dropped."""
    att = d.attachment if d.attachment is not None and d.attachment.state == ATTACHED else None
    data: dict = {"config": d.config}
    conditions: list[tuple[str, str, str, str]] = []
    network = None
    if att is not None:
        network = {"interfaceName": att.if_name, "ips": list(att.ips)}
        if att.mac:
            network["hardwareAddress"] = att.mac
        conditions.append(("NetworkReady", "True", "NetworkReady", f"{att.if_name} is up in pod {att.pod_name}"))
        if att.rdma:
            conditions.append(("RDMALinkReady", "True", "RDMALinkReady",
                               f"RDMA device {att.rdma} is in the pod's namespace"))
    ib = ib_report(d, att) if driver == IB_DRIVER else None
    if ib is not None:
        if ib.data:
            data["ib"] = ib.data
        conditions += ib.conditions
    return ready_entry(driver, d.pool, d.device, data, d.share_id, network=network, extra_conditions=conditions)
