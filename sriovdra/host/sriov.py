"""A PF's VF count through sysfs, set the way the kernel wants it, and the wait for the VFs.

The sequence, per PF (sriovdra.provisioner runs PFs independently: one failing stops no other):
  1. read sriov_totalvfs / sriov_numvfs; asking more than total is an error, nothing is written;
  2. the same count again writes nothing (idempotent);
  3. sriov_drivers_autoprobe is set first when asked for (only when VFs will be created);
  4. a non-zero count is set to 0 first: the kernel refuses N while VFs exist (EBUSY);
  5. N is written. A failed write after 0 was written puts the previous count back; a changed
     autoprobe is restored (before that, so the old VFs probe as they did);
     The kernel may enable fewer VFs than asked and still return success: sriov_numvfs is read
     back and a short count is an error naming both numbers (and rolled back like a failed write).
     Writing 0 blocks in the kernel (pci_disable_sriov waits for every VF to be released) while a
     VF is held open through vfio: sriovdra.provisioner refuses that unless --force;
  6. wait_ready polls until the N VFs have their PCI devices and, with autoprobe on, a driver; a
     netdev on VFs whose driver is known to make one (NETDEV_VF_DRIVERS) and an RDMA device on VFs
     whose driver is known to make one (RDMA_VF_DRIVERS), up to a timeout. Other drivers' netdevs
     and RDMA devices are reported as they appear, never waited for (an ice PF has irdma, its
     iavf VFs have no RDMA device).
Errors name the PF, the value, the errno and what usually causes it.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from sriovdra import faults
from sriovdra.host.discovery import PCI_DEVICES
from sriovdra.host.paths import HostPaths
from sriovdra.host.writer import Writer, errno_name, sysfs_writer

# Drivers that take a VF away from the network stack: no netdev, no RDMA device to wait for.
NON_NETWORK_DRIVERS = frozenset({"vfio-pci", "pci-stub", "uio_pci_generic", "igb_uio"})
# VF drivers known to create a netdev for each VF they bind, and those known to create an RDMA device.
NETDEV_VF_DRIVERS = frozenset({"mlx5_core", "mlx4_core", "iavf", "i40evf", "ixgbevf", "igbvf", "bnxt_en", "qede",
                               "qlcnic", "enic", "sfc", "octeontx2-nicvf", "virtio-pci", "virtio_net"})
RDMA_VF_DRIVERS = frozenset({"mlx5_core", "mlx4_core"})

_HINTS = {
    errno.ENOMEM: "SR-IOV is not enabled in the firmware or BIOS, or they give it too few resources: enable "
                  "SR-IOV (and ARI) in the BIOS; on ConnectX: mlxconfig -d <pci> set SRIOV_EN=1 NUM_OF_VFS=<n>, "
                  "then reboot",
    errno.EIO: "the device or its firmware refused: check dmesg; on ConnectX, SRIOV_EN / NUM_OF_VFS (mlxconfig) "
               "must allow this many VFs",
    errno.EBUSY: "VFs are enabled already (the count must go through 0) or the device is busy",
    errno.ERANGE: "more than sriov_totalvfs",
    errno.ENOENT: "no driver with SR-IOV support is bound to the PF",
    errno.EINVAL: "not a valid VF count for this device",
    errno.EPERM: "needs root and a writable /sys (a privileged container)",
    errno.EACCES: "needs root and a writable /sys (a privileged container)",
    errno.EROFS: "/sys is mounted read-only (run privileged, or mount /sys read-write)",
}


class SriovError(Exception):
    """A step on one PF failed; the message names the PF, the step and the errno."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.errno = code


@dataclass(frozen=True)
class SriovState:
    total: int
    numvfs: int
    autoprobe: bool | None  # None: the kernel has no sriov_drivers_autoprobe (before 4.12)


@dataclass(frozen=True)
class Expect:
    """What to wait for: a driver on every VF (autoprobe on); netdevs and RDMA devices on the VFs
    whose driver is known to make them (NETDEV_VF_DRIVERS, RDMA_VF_DRIVERS)."""

    driver: bool
    netdev: bool
    rdma: bool


@dataclass(frozen=True)
class Progress:
    pf: str
    netdev: str | None
    wanted: int
    pci: int
    bound: int | None  # None: no driver expected (autoprobe off)
    netdevs: tuple[int, int] | None  # (have, expected); None when none are expected
    rdma: tuple[int, int] | None
    missing: tuple[str, ...] = ()  # what the first few unready VFs lack

    @property
    def done(self) -> bool:
        return (self.pci == self.wanted and self.bound in (None, self.wanted)
                and all(c is None or c[0] >= c[1] for c in (self.netdevs, self.rdma)))

    def __str__(self) -> str:
        parts = [f"{self.pci}/{self.wanted} PCI"]
        if self.bound is not None:
            parts.append(f"{self.bound}/{self.wanted} bound")
        if self.netdevs is not None:
            parts.append(f"{self.netdevs[0]}/{self.netdevs[1]} netdev")
        if self.rdma is not None:
            parts.append(f"{self.rdma[0]}/{self.rdma[1]} RDMA")
        name = f"{self.pf} {self.netdev}" if self.netdev else self.pf
        return f"{name}: {', '.join(parts)}"


def pf_dir(paths: HostPaths, pf: str) -> str:
    return os.path.join(paths.sysfs, PCI_DEVICES, pf)


def read_state(paths: HostPaths, pf: str) -> SriovState:
    base = pf_dir(paths, pf)
    total, numvfs = _read_int(base, "sriov_totalvfs", pf), _read_int(base, "sriov_numvfs", pf)
    if total is None or numvfs is None:
        raise SriovError(f"{pf}: not an SR-IOV PF ({base}/sriov_totalvfs does not exist)", errno.ENOENT)
    autoprobe = _read_int(base, "sriov_drivers_autoprobe", pf)
    return SriovState(total=total, numvfs=numvfs, autoprobe=None if autoprobe is None else autoprobe != 0)


def expectation(paths: HostPaths, pf: str, autoprobe: bool | None) -> Expect:
    """What to wait for on the PF's VFs: with autoprobe off nothing binds new VFs, so only their PCI
    devices (and the netdevs of VFs someone binds anyway)."""
    probe = read_state(paths, pf).autoprobe if autoprobe is None else autoprobe
    return Expect(driver=probe is not False, netdev=True, rdma=True)


def vf_addresses(paths: HostPaths, pf: str) -> dict[int, str]:
    """VF index -> PCI address, from the PF's virtfnN links as they are now."""
    base = pf_dir(paths, pf)
    return {int(e[6:]): os.path.basename(os.path.realpath(os.path.join(base, e)))
            for e in _entries(base, "") if e.startswith("virtfn") and e[6:].isdigit()}


def set_num_vfs(paths: HostPaths, pf: str, wanted: int, *, autoprobe: bool | None = None) -> None:
    """Steps 1-5: the PF ends with `wanted` VFs, or as it was with an SriovError."""
    state = read_state(paths, pf)
    if wanted > state.total:
        raise SriovError(f"{pf}: {wanted} VFs asked, sriov_totalvfs is {state.total}", errno.ERANGE)
    if wanted == state.numvfs:
        return
    write = sysfs_writer(paths)
    base = pf_dir(paths, pf)
    old_probe = None
    if wanted and autoprobe is not None and state.autoprobe is not None and autoprobe != state.autoprobe:
        _write(write, base, "sriov_drivers_autoprobe", "1" if autoprobe else "0", pf)
        old_probe = state.autoprobe
    zeroed = False
    try:
        if state.numvfs:
            _write(write, base, "sriov_numvfs", "0", pf)
            zeroed = True
            faults.point("provision.after-zero")
        if wanted:
            _write(write, base, "sriov_numvfs", str(wanted), pf)
            faults.point("provision.after-numvfs")
            _check_count(base, pf, wanted, write)
    except SriovError as e:
        raise SriovError(f"{e}; {_undo(write, base, pf, old_probe, state.numvfs if zeroed else None)}", e.errno) \
            from None


def progress(paths: HostPaths, pf: str, count: int, expect: Expect, netdev: str | None = None) -> Progress:
    """Where VFs 0..count-1 of the PF are now."""
    base = pf_dir(paths, pf)
    pci = bound = nd_have = nd_want = rd_have = rd_want = 0
    missing = []
    for i in range(count):
        vf = os.path.join(base, f"virtfn{i}")
        if not os.path.isdir(vf):
            missing.append(f"VF {i}: no PCI device")
            continue
        pci += 1
        driver = _link_name(os.path.join(vf, "driver"))
        bound += driver is not None
        if expect.driver and driver is None:
            missing.append(f"VF {i} {os.path.basename(os.path.realpath(vf))}: no driver")
        if driver is None or driver in NON_NETWORK_DRIVERS:
            continue  # nothing gives it a netdev (yet)
        has_nd, has_rd = bool(_netdevs(vf)), bool(_entries(vf, "infiniband"))
        # wanted where the driver is known to make one; counted anyway when one appeared
        want_nd = expect.netdev and (driver in NETDEV_VF_DRIVERS or has_nd)
        want_rd = expect.rdma and (driver in RDMA_VF_DRIVERS or has_rd)
        nd_want, nd_have = nd_want + want_nd, nd_have + (want_nd and has_nd)
        rd_want, rd_have = rd_want + want_rd, rd_have + (want_rd and has_rd)
        lacks = [what for what, want, has in (("netdev", want_nd, has_nd), ("RDMA device", want_rd, has_rd))
                 if want and not has]
        if lacks:
            missing.append(f"VF {i} {os.path.basename(os.path.realpath(vf))}: no {' or '.join(lacks)}")
    return Progress(pf=pf, netdev=netdev, wanted=count, pci=pci, bound=bound if expect.driver else None,
                    netdevs=(nd_have, nd_want) if nd_want else None,
                    rdma=(rd_have, rd_want) if rd_want else None, missing=tuple(missing[:4]))


def wait_ready(paths: HostPaths, pf: str, count: int, expect: Expect, timeout: float, *, netdev: str | None = None,
               report: Callable[[Progress], None] | None = None) -> Progress:
    """Poll until the VFs are ready (step 6); SriovError naming what is missing after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    interval = 0.01
    while True:
        now = progress(paths, pf, count, expect, netdev)
        if report:
            report(now)
        if now.done:
            return now
        if time.monotonic() >= deadline:
            raise SriovError(f"{now}: VFs not ready after {timeout:g}s ({'; '.join(now.missing)})", errno.ETIMEDOUT)
        time.sleep(interval)
        interval = min(interval * 2, 0.25)


# --- steps ---------------------------------------------------------------------------------


def _write(write: Writer, base: str, name: str, value: str, pf: str) -> None:
    try:
        write(os.path.join(base, name), value)
    except OSError as e:
        code = e.errno or 0
        hint = _HINTS.get(code)
        raise SriovError(f"{pf}: write {value} to {name}: {e.strerror or e} ({errno_name(code)})"
                         + (f": {hint}" if hint else ""), code) from None


def _check_count(base: str, pf: str, wanted: int, write: Writer) -> None:
    """The kernel (a PF driver's sriov_configure) may enable fewer VFs than asked and report success."""
    got = _read_int(base, "sriov_numvfs", pf)
    if got != wanted:
        try:  # remove the short set: the caller's rollback puts the old count back from 0
            if got:
                write(os.path.join(base, "sriov_numvfs"), "0")
        except OSError:
            pass
        raise SriovError(f"{pf}: wrote {wanted} to sriov_numvfs, the kernel enabled {got}: the PF driver or its "
                         "firmware allows fewer VFs (check dmesg; on ConnectX, NUM_OF_VFS in mlxconfig)", errno.EIO)


def _undo(write: Writer, base: str, pf: str, probe: bool | None, count: int | None) -> str:
    """Autoprobe back first (the old VFs probe as they did), then the old count; each step is tried
    on its own, and the message says how each went."""
    done = []
    if probe is not None:
        try:
            _write(write, base, "sriov_drivers_autoprobe", "1" if probe else "0", pf)
            done.append(f"sriov_drivers_autoprobe back to {int(probe)}")
        except SriovError as e:
            done.append(f"putting sriov_drivers_autoprobe back to {int(probe)} failed too: {e}")
    if count:
        try:
            _write(write, base, "sriov_numvfs", str(count), pf)
            done.append(f"rolled back to {count} VFs")
        except SriovError as e:
            done.append(f"rolling back to {count} VFs failed too: {e}")
    return ", ".join(done) or "nothing was changed"


def _read_int(base: str, name: str, pf: str) -> int | None:
    try:
        with open(os.path.join(base, name)) as f:
            text = f.read().strip()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise SriovError(f"{pf}: read {name}: {e.strerror}", e.errno) from None
    try:
        return int(text)
    except ValueError:
        raise SriovError(f"{pf}: {name} is not a number: {text[:40]!r}") from None


def _entries(base: str, name: str) -> list[str]:
    try:
        return os.listdir(os.path.join(base, name))
    except OSError:
        return []


def _netdevs(vf: str) -> list[str]:
    """net/ under the VF, or under its virtio child."""
    found = _entries(vf, "net")
    for child in _entries(vf, ""):
        if child.startswith("virtio"):
            found += _entries(os.path.join(vf, child), "net")
    return found


def _link_name(path: str) -> str | None:
    try:
        return os.path.basename(os.readlink(path))
    except OSError:
        return None
