"""Prepared devices into pods and back: what happens at the runtime's pod-sandbox events.

Prepare runs before the pod's network namespace exists, so the netdev moves when the runtime
creates the sandbox (NRI RunPodSandbox) and comes home when it stops it. The NRI adapter calls
these methods; this module knows no protocol, only the drivers' records and the host layer.

It loads pyroute2: the daemon imports it only when serving pods (--netdev-attach nri).

Every step is checkpointed before it touches the host: an Attachment in state ATTACHING is written
first and ATTACHED after the last step, so a crash at any point leaves enough in the checkpoint
to undo what was done (at Synchronize after a restart, or at unprepare).

InfiniBand (IbConfig): mtu is the IB MTU, so the IPoIB netdev gets mtu - 4 (the IPoIB header);
pkey puts an IPoIB P_Key child into the pod instead of the port's own netdev, which stays on the
host (brought up first if it was down, and put back down at detach). The child is recorded
(Attachment.ipoib_child) before it is created and deleted at detach. The MTU a netdev ends up with
is only known once it has carrier: IPoIB joins the partition's broadcast group then, and the kernel
lowers the MTU to the group's; until then the MTU is re-read (a short poll after attach, and at
every Synchronize) and the claim status rewritten.

In exclusive RDMA netns mode (`rdma system set netns exclusive`) the IPoIB netdev settings are not applied:
moving an RDMA device makes the kernel unregister its IPoIB netdevs (children included) and create
them anew in the root netns, so a child or an MTU set before the move would be lost, and one set
after it on a netdev the kernel recreated would not be the device we recorded. The claim status
says so (sriovdra.driver.ibstatus); the env still carries pkey and mtu for verbs.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Protocol

from sriovdra import faults
from sriovdra.checkpoint import ATTACHED, ATTACHING, PREPARED, Attachment, ClaimRecord, PreparedDevice
from sriovdra.driver.core import DeviceError, Driver, moves_netdev
from sriovdra.driver.ifnames import pick_names
from sriovdra.host import ipoib
from sriovdra.host.ipam import DEFAULT_CNI_BIN_DIRS, IpamError, IpamResult, ipam_add, ipam_del
from sriovdra.host.netlink import AttachRequest, LinkSnapshot, Netlink, NetlinkError
from sriovdra.host.netns import open_netns_fd
from sriovdra.host.rdma import RdmaError, RdmaNetlink
from sriovdra.model import IB_DRIVER, Inventory
from sriovdra.partition import BASE_MASK

log = logging.getLogger(__name__)

# VfConfig fields applied on the PF (IFLA_VFINFO_LIST), with the keyword the host layer takes
_VF_SETTINGS = {"vlan": "vlan", "vlanQoS": "qos", "vlanProto": "proto", "spoofChk": "spoofchk", "trust": "trust",
                "linkState": "link_state", "minTxRate": "min_rate", "maxTxRate": "max_rate"}


class PodSandbox(Protocol):
    """What the runtime tells about a pod (sriovdra.nri.plugin.Pod has these)."""

    id: str
    uid: str
    name: str
    namespace: str
    netns: str | None


@dataclass(frozen=True)
class NetworkSettings:
    cni_bin_dirs: tuple[str, ...] = DEFAULT_CNI_BIN_DIRS
    rdma_exclusive: bool = False  # RDMA devices follow their netdev into the pod
    root_netns: str = "/proc/self/ns/net"  # where devices come home to (/proc/1/ns may be unreadable)
    # How long after an attach the pod-side IPoIB MTU is re-read until carrier (broadcast join) shows;
    # 0: only at Synchronize. The SM answers the join within seconds when the port is active.
    ipoib_settle_seconds: float = 60.0
    ipoib_settle_interval: float = 2.0


@dataclass
class _Slot:
    driver: Driver
    rec: ClaimRecord
    dev: PreparedDevice


class AttachError(DeviceError):
    pass


class PodNetwork:
    def __init__(self, settings: NetworkSettings, inventory: Callable[[], Inventory],
                 on_attached: Callable[[Driver, ClaimRecord], None] | None = None) -> None:
        self.s = settings
        self.inventory = inventory
        self.on_attached = on_attached
        self.drivers: list[Driver] = []
        self.netlink = Netlink(settings.root_netns)
        self.link_problem: Callable[[], str | None] = lambda: None  # set by whoever connects to the runtime
        self._lock = threading.RLock()
        self._closed = threading.Event()  # ends the IPoIB settle polls

    def close(self) -> None:
        self._closed.set()
        self.netlink.close()

    # --- hooks for the claim lifecycle (sriovdra.driver.core.NetworkHooks) -------------------

    def unavailable(self) -> str | None:
        return self.link_problem()

    def detach_claim(self, driver: Driver, rec: ClaimRecord) -> None:
        """Unprepare of a claim still in a pod (its StopPodSandbox was missed): bring it home."""
        for dev in rec.attached():
            self._detach(_Slot(driver, rec, dev), None)

    # --- runtime events ----------------------------------------------------------------------

    def run_pod_sandbox(self, pod: PodSandbox) -> None:
        """Move every prepared netdev of the pod in; all or nothing. Raises AttachError naming the
        claim and device (the runtime then fails the pod and the kubelet retries)."""
        with self._all_drivers():
            slots = self._pod_slots(pod.uid)
            if not slots:
                return
            if pod.netns is None:
                log.info("pod %s/%s uses the host network: its devices stay in the host netns",
                         pod.namespace, pod.name)
                return
            self._attach_pod(pod, slots)

    def stop_pod_sandbox(self, pod: PodSandbox) -> None:
        """Bring the pod's devices home. Never fails the teardown: what cannot be brought home now
        stays recorded and is retried at RemovePodSandbox, Synchronize and unprepare."""
        with self._all_drivers():
            for slot in self._attached_to(pod.uid):
                try:
                    self._detach(slot, pod.netns)
                except DeviceError as e:
                    log.error("pod %s/%s: %s (will retry)", pod.namespace, pod.name, e)

    remove_pod_sandbox = stop_pod_sandbox

    def create_container(self, pod: PodSandbox, container: object = None) -> None:
        """A pod whose RunPodSandbox we missed (plugin reconnecting) gets its devices before its
        first container starts. No container adjustments: the devices' CDI edits come from the kubelet."""
        with self._all_drivers():
            slots = self._pod_slots(pod.uid)
            if pod.netns and any(s.dev.attachment is None for s in slots):
                log.info("pod %s/%s: devices not attached yet (RunPodSandbox missed), attaching now",
                         pod.namespace, pod.name)
                self._attach_pod(pod, slots)

    def synchronize(self, pods: list[PodSandbox]) -> None:
        """After (re)connecting: devices of pods that are gone come home, half-done attachments
        are redone, and running pods that should have our devices but do not get them now."""
        live = {p.uid: p for p in pods}
        with self._all_drivers():
            for slot in self._attached_to(None):
                att = slot.dev.attachment
                gone = att.pod not in live
                if gone or att.state != ATTACHED:
                    log.info("device %s: %s pod %s", slot.dev.device,
                             "bringing it home from vanished" if gone else "redoing the interrupted attach to",
                             att.pod_name)
                    try:
                        self._detach(slot, None if gone else live[att.pod].netns)
                    except DeviceError as e:
                        log.error("%s (will retry)", e)
            for pod in pods:
                slots = self._pod_slots(pod.uid)
                if pod.netns and any(s.dev.attachment is None for s in slots):
                    try:
                        self._attach_pod(pod, slots)
                    except DeviceError as e:
                        log.error("running pod %s/%s stays without its devices: %s", pod.namespace, pod.name, e)
            self._refresh_ipoib(None)

    def refresh_ipoib(self, pod_uid: str | None = None) -> bool:
        """Re-read the pod-side IPoIB MTU of attachments still waiting for the broadcast-group join
        (no carrier yet) and rewrite the status of claims that changed; True while some still wait."""
        with self._all_drivers():
            return self._refresh_ipoib(pod_uid)

    # --- the work ------------------------------------------------------------------------------

    @contextmanager
    def _all_drivers(self) -> Iterator[None]:
        with self._lock, ExitStack() as stack:
            for d in sorted(self.drivers, key=lambda d: d.s.driver):
                stack.enter_context(d.serialized())
            yield

    def _pod_slots(self, pod_uid: str) -> list[_Slot]:
        """The pod's prepared devices that go into its netns, in a stable order."""
        out = []
        for driver in self.drivers:
            for rec in driver.records.values():
                if rec.state != PREPARED or pod_uid not in rec.pods:
                    continue
                for dev in rec.devices:
                    if self._moves(dev):
                        out.append(_Slot(driver, rec, dev))
        return sorted(out, key=lambda s: (s.rec.claim.namespace, s.rec.claim.name, s.dev.request, s.dev.device))

    def _moves(self, dev: PreparedDevice) -> bool:
        rdma_only = self.s.rdma_exclusive and dev.rdma_device and not dev.netdev  # an IB port without IPoIB
        return moves_netdev(dev) or bool(rdma_only and not dev.admin_access)

    def _attached_to(self, pod_uid: str | None) -> list[_Slot]:
        return [_Slot(d, r, dev) for d in self.drivers for r in d.records.values() for dev in r.devices
                if dev.attachment and (pod_uid is None or dev.attachment.pod == pod_uid)]

    def _attach_pod(self, pod: PodSandbox, slots: list[_Slot]) -> None:
        for s in slots:
            att = s.dev.attachment
            if att and att.pod != pod.uid:
                raise AttachError(f"pod {pod.namespace}/{pod.name}: claim {s.rec.claim} device {s.dev.device} is "
                                  f"in pod {att.pod_name}; a network device can be in one pod at a time")
        for s in slots:  # an earlier attach whose rollback did not finish: finish it first
            if s.dev.attachment is not None and s.dev.attachment.state != ATTACHED:
                try:
                    self._detach(s, None)
                except DeviceError as e:
                    raise AttachError(f"pod {pod.namespace}/{pod.name}: {e}") from None
        todo = [s for s in slots if s.dev.attachment is None]
        taken = {s.dev.attachment.if_name for s in slots if s.dev.attachment}
        names = pick_names([s.dev.if_name or s.dev.config.get("ifName") for s in todo], taken)
        done: list[_Slot] = []
        try:
            for slot, name in zip(todo, names, strict=True):
                self._attach(slot, pod, name)
                done.append(slot)
        except DeviceError:
            for slot in reversed(done):
                try:
                    self._detach(slot, pod.netns)
                except DeviceError as e:
                    log.error("rollback: %s", e)
            raise
        if self.on_attached:
            for driver, rec in {s.rec.claim.uid: (s.driver, s.rec) for s in todo}.values():
                self.on_attached(driver, rec)
        if self.s.ipoib_settle_seconds > 0 and any(self._awaits_join(s) for s in todo):
            threading.Thread(target=self._settle, args=(pod.uid,), name=f"ipoib-settle-{pod.uid}",
                             daemon=True).start()

    def _attach(self, slot: _Slot, pod: PodSandbox, name: str) -> None:
        dev, cfg = slot.dev, slot.dev.config
        where = f"pod {pod.namespace}/{pod.name}: claim {slot.rec.claim} device {dev.device}"
        att = Attachment(pod=pod.uid, sandbox=pod.id, netns=pod.netns, pod_name=f"{pod.namespace}/{pod.name}",
                         if_name=name)
        try:
            apply = self._netdev_settings_apply(slot)
            pkey = self._child_pkey(slot) if apply else None
            if dev.netdev and pkey is None:  # with a P_Key child the parent stays where it is
                att.original = self.netlink.snapshot(dev.netdev).to_dict()
            dev.attachment = att
            slot.driver.save()  # intent: from here a crash is undone from the checkpoint
            faults.point("attach.after-intent")
            self._vf_settings(slot, att)
            ips, routes = list(cfg.get("ips") or []), [(r["dst"], r.get("gw")) for r in cfg.get("routes") or []]
            if cfg.get("ipam"):
                got = self._ipam_add(slot, pod, att, cfg["ipam"])
                ips += got.ips
                routes += [(dst, gw or got.gateway) for dst, gw in got.routes]  # CNI: no gw = the IP's gateway
            if dev.netdev:
                a = self.netlink.attach(pod.netns, AttachRequest(
                    host_name=dev.netdev if pkey is None else self._ipoib_child(slot, att, pkey), pod_name=name,
                    mtu=_netdev_mtu(slot) if apply else None, mac=cfg.get("mac"), ips=tuple(ips),
                    routes=tuple(routes)))
                faults.point("attach.after-move")
                att.ifindex, att.mac, att.mtu, att.ips = a.ifindex, a.mac, a.mtu, list(a.ips)
                if apply and slot.driver.s.driver == IB_DRIVER and cfg.get("mtu") is not None:
                    att.carrier = a.carrier  # without it the kernel may still lower the MTU (see ibstatus)
            if self.s.rdma_exclusive and dev.rdma_device:
                self._rdma_move(dev.rdma_device, pod.netns, into=True)
                att.rdma = dev.rdma_device
            att.state = ATTACHED
            slot.driver.save()
        except (NetlinkError, DeviceError, OSError) as e:
            if dev.attachment is not None:
                try:
                    self._detach(slot, pod.netns)
                except DeviceError as undo:
                    log.error("%s: rollback incomplete: %s", where, undo)
                    raise AttachError(f"{where}: {e}; rollback incomplete: {undo}") from None
            raise AttachError(f"{where}: {e}") from None
        what = dev.netdev or dev.rdma_device
        log.info("%s: %s is %s in the pod", where, what if pkey is None else f"P_Key {pkey:#06x} child of {what}", name)

    def _detach(self, slot: _Slot, netns: str | None) -> None:
        """Undo an attachment, last step first. Each step runs on its own and is forgotten once done;
        the record is dropped only when every step is done. Otherwise what remains stays recorded (in
        state ATTACHING: no longer reported as in the pod) for Synchronize, the next attach of the
        pod, or unprepare to finish, and DeviceError names each failed step."""
        att = slot.dev.attachment
        netns = netns or att.netns
        if netns and not os.path.exists(netns):
            netns = None  # the pod's netns is gone: physical devices are back in the root netns
        where = f"claim {slot.rec.claim} device {slot.dev.device} (pod {att.pod_name})"
        failed: list[str] = []

        def step(what: str, undo: Callable[[], None], field: str) -> None:
            try:
                undo()
            except (NetlinkError, DeviceError, OSError) as e:
                failed.append(f"{what}: {e}")
                return
            setattr(att, field, None)  # done: a retry skips it

        if att.rdma:
            step(f"RDMA device {att.rdma} home", lambda: self._rdma_home(att.rdma, netns), "rdma")
        if att.original:
            step(f"netdev {att.original['name']} home", lambda: self._netdev_home(att, netns, where), "original")
            faults.point("detach.after-move-home")
        if att.ipoib_child:
            step(f"P_Key {att.ipoib_child['pkey']:#06x} child of {att.ipoib_child['parent']}",
                 lambda: self._delete_child(att, netns, where), "ipoib_child")
        if att.ipam:
            step("IPAM release", lambda: self._ipam_del(slot, att), "ipam")
        if att.vf_original is not None:
            step(f"VF settings on {att.pf} vf {att.vf}",
                 lambda: self.netlink.set_vf(att.pf, att.vf, **att.vf_original), "vf_original")
        if failed:
            att.state = ATTACHING
            slot.driver.save()
            raise DeviceError(f"{where}: cannot bring it home: {'; '.join(failed)} (still recorded, retried at the "
                              f"next Synchronize, pod start or unprepare)")
        slot.dev.attachment = None
        slot.driver.save()

    def _netdev_home(self, att: Attachment, netns: str | None, where: str) -> None:
        outcome = self.netlink.detach(netns, att.if_name, LinkSnapshot.from_dict(att.original), att.ifindex)
        if outcome == "missing":
            log.warning("%s: netdev %s is gone (destroyed with the pod's netns?)", where, att.original["name"])

    def _netdev_settings_apply(self, slot: _Slot) -> bool:
        """False for an IPoIB netdev in exclusive RDMA netns mode: moving its RDMA device makes the kernel
        recreate its IPoIB netdevs in the root netns (module docstring), so IbConfig's netdev settings
        (P_Key child, MTU) are not applied there; the claim status says so."""
        dev = slot.dev
        return not (slot.driver.s.driver == IB_DRIVER and self.s.rdma_exclusive and dev.rdma_device and dev.netdev)

    def _child_pkey(self, slot: _Slot) -> int | None:
        """The P_Key of the IPoIB child to create for IbConfig.pkey; None when the port's own IPoIB
        netdev goes into the pod: no pkey, no netdev, or the netdev already is in that partition."""
        pkey = slot.dev.config.get("pkey") if slot.driver.s.driver == IB_DRIVER else None
        if pkey is None or not slot.dev.netdev:
            return None
        own = self.netlink.ipoib_pkey(slot.dev.netdev)
        return None if own is not None and own & BASE_MASK == pkey & BASE_MASK else pkey

    def _ipoib_child(self, slot: _Slot, att: Attachment, pkey: int) -> str:
        """Create the P_Key child that goes into the pod instead of its parent; its host-side name.
        Recorded before it exists, under a name only we use: a crash from here on deletes it. A parent
        that is down is brought up first (a child cannot open while its parent is down) and recorded
        as such ("parent_up": False) so that detach puts it back down."""
        parent = slot.dev.netdev
        child = {"parent": parent, "pkey": pkey, "name": self.netlink.temp_name(), "ifindex": None,
                 "parent_up": self.netlink.is_up(parent)}
        att.ipoib_child = child
        slot.driver.save()
        if not child["parent_up"]:
            self.netlink.set_up(parent, True)
        child["ifindex"] = self.netlink.add_ipoib_child(parent, child["name"], pkey)
        slot.driver.save()
        return child["name"]

    def _delete_child(self, att: Attachment, netns: str | None, where: str) -> None:
        """Delete the P_Key child wherever it got to: in the pod, or still on the host when the attach
        stopped before the move (a virtual link is destroyed with its netns: then nothing is left).
        Then the parent goes back down if we brought it up, unless another child of ours still needs it."""
        child = att.ipoib_child
        created = {child["ifindex"]} if child.get("ifindex") is not None else set()
        in_pod = created | ({att.ifindex} if att.ifindex is not None else set())
        if self.netlink.delete_link(netns, child["name"], {att.if_name}, in_pod, created) == "missing":
            log.info("%s: P_Key %#06x child of %s is gone (never created, or destroyed with the pod's netns)",
                     where, child["pkey"], child["parent"])
        if child.get("parent_up") is not False:
            return
        children = [s.dev.attachment.ipoib_child for s in self._attached_to(None) if s.dev.attachment is not att]
        others = [c for c in children if c and c["parent"] == child["parent"]]
        if others:  # the last child out puts the parent down
            for other in others:
                other["parent_up"] = False
            return
        self.netlink.set_up(child["parent"], False)

    # --- IPoIB MTU after the broadcast-group join --------------------------------------------

    def _awaits_join(self, slot: _Slot) -> bool:
        """An attached IPoIB netdev with IbConfig.mtu whose MTU is not final yet (no carrier seen)."""
        att = slot.dev.attachment
        return (att is not None and att.state == ATTACHED and slot.driver.s.driver == IB_DRIVER
                and slot.dev.config.get("mtu") is not None and att.carrier is not True
                and att.ifindex is not None and bool(att.netns) and self._netdev_settings_apply(slot))

    def _refresh_ipoib(self, pod_uid: str | None) -> bool:
        pending, changed = False, {}
        for slot in self._attached_to(pod_uid):
            if not self._awaits_join(slot):
                continue
            att = slot.dev.attachment
            try:
                now = self.netlink.mtu_and_carrier(att.netns, att.ifindex, att.if_name)
            except NetlinkError as e:
                log.warning("claim %s device %s: cannot re-read the IPoIB MTU: %s", slot.rec.claim, slot.dev.device, e)
                pending = True
                continue
            if now is None:
                continue  # gone with its pod: StopPodSandbox or Synchronize brings it home
            if now != (att.mtu, att.carrier):
                att.mtu, att.carrier = now
                slot.driver.save()
                changed[slot.rec.claim.uid] = (slot.driver, slot.rec)
            pending = pending or att.carrier is not True
        if self.on_attached:
            for driver, rec in changed.values():
                self.on_attached(driver, rec)
        return pending

    def _settle(self, pod_uid: str) -> None:
        """Poll a pod's IPoIB netdevs until carrier shows (bounded): the status then says the real MTU."""
        deadline = time.monotonic() + self.s.ipoib_settle_seconds
        while not self._closed.wait(self.s.ipoib_settle_interval):
            try:
                if not self.refresh_ipoib(pod_uid) or time.monotonic() >= deadline:
                    return
            except Exception:  # a background poll must not die silently
                log.exception("pod %s: re-reading the IPoIB MTU failed", pod_uid)
                return

    def _vf_settings(self, slot: _Slot, att: Attachment) -> None:
        wanted = {kw: slot.dev.config[key] for key, kw in _VF_SETTINGS.items() if key in slot.dev.config}
        if not wanted:
            return
        inv = self.inventory()
        fn = inv.function(slot.dev.pci_address)
        parent = inv.parent(fn) if fn else None
        uplink = parent.uplink if parent else None
        if fn is None or fn.vf_index is None or uplink is None:
            raise AttachError(f"{', '.join(sorted(wanted))} are set through the PF, and VF {slot.dev.pci_address} "
                              f"has no PF netdev on this node (passthrough VF?)")
        att.pf, att.vf = uplink.name, fn.vf_index
        keep = set(wanted) | ({"vlan", "qos", "proto"} if {"vlan", "qos", "proto"} & set(wanted) else set())
        att.vf_original = {k: v for k, v in self.netlink.vf_settings(att.pf, att.vf).items() if k in keep}
        slot.driver.save()
        self.netlink.set_vf(att.pf, att.vf, **wanted)

    def _ipam_add(self, slot: _Slot, pod: PodSandbox, att: Attachment, ipam: dict) -> IpamResult:
        att.ipam = ipam
        slot.driver.save()  # before the plugin runs: a crash must still release the address
        try:
            return ipam_add(list(self.s.cni_bin_dirs), ipam, container_id=pod.id, netns=pod.netns,
                            ifname=att.if_name, args=_cni_args(pod))
        except IpamError as e:
            raise AttachError(f"IPAM: {e}") from None

    def _ipam_del(self, slot: _Slot, att: Attachment) -> None:
        try:
            ipam_del(list(self.s.cni_bin_dirs), att.ipam, container_id=att.sandbox, netns=att.netns,
                     ifname=att.if_name)
        except IpamError as e:
            raise DeviceError(str(e)) from None  # names the plugin and DEL

    def _rdma_move(self, rdma: str, netns: str, into: bool) -> None:
        try:
            fd = open_netns_fd(netns if into else self.s.root_netns)
            try:
                source = RdmaNetlink() if into else RdmaNetlink.in_netns(netns)
                with source as nl:
                    nl.move(rdma, fd)
            finally:
                os.close(fd)
        except RdmaError as e:
            raise DeviceError(str(e)) from None

    def _rdma_home(self, rdma: str, netns: str | None) -> None:
        if netns is None:
            return  # the kernel returns RDMA devices to the root netns when their netns dies
        self._rdma_move(rdma, netns, into=False)


def _netdev_mtu(slot: _Slot) -> int | None:
    """VfConfig.mtu is the netdev's; IbConfig.mtu is the IB MTU, which IPoIB carries minus its header."""
    mtu = slot.dev.config.get("mtu")
    return ipoib.netdev_mtu(mtu) if mtu is not None and slot.driver.s.driver == IB_DRIVER else mtu


def _cni_args(pod: PodSandbox) -> dict[str, str]:
    return {"IgnoreUnknown": "true", "K8S_POD_NAMESPACE": pod.namespace, "K8S_POD_NAME": pod.name,
            "K8S_POD_INFRA_CONTAINER_ID": pod.id, "K8S_POD_UID": pod.uid}
