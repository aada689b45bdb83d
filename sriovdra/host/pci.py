"""PCI driver rebinding: hand a function to another kernel driver (vfio-pci) and give it back.

The kernel's procedure, through sysfs: name the wanted driver in driver_override, unbind from
the current driver, bind, clear driver_override, check the driver link. The override goes first
so that a reprobe racing with us (udev, drivers_autoprobe) can only pick the wanted driver; it
is also what lets vfio-pci, which has no ID table, match at all. Any failure after the first
change rolls the function back to the driver it had.

A fake host tree (FAKE_HOST_MARKER on its sysfs root) has no kernel behind its files: the same writes go
through sriovdra.fakehost.FakeKernel, which plays the kernel's part (sriovdra.host.writer picks).
"""

from __future__ import annotations

import os
import re

from sriovdra.host.discovery import BDF, PCI_DEVICES
from sriovdra.host.paths import HostPaths
from sriovdra.host.writer import Writer, sysfs_writer

PCI_DRIVERS = "bus/pci/drivers"
_DRIVER_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


class PciBindError(Exception):
    """A rebind step failed; the message names the function, the step and what was undone."""


def current_driver(paths: HostPaths, bdf: str) -> str | None:
    """The driver the function is bound to, None when unbound."""
    link = os.path.join(_device_dir(paths, bdf), "driver")
    try:
        return os.path.basename(os.readlink(link))
    except FileNotFoundError:
        return None
    except OSError as e:
        raise PciBindError(f"{bdf}: read {link}: {e.strerror}") from None


def bind(paths: HostPaths, bdf: str, driver: str) -> str | None:
    """Bind the function to driver; returns the driver it had (None: unbound). A no-op when already bound."""
    original = current_driver(paths, bdf)
    if original == driver:
        return original
    what = f"{bdf}: bind to {driver}"
    _require_driver(paths, driver, what)  # before any change: nothing to roll back
    write = sysfs_writer(paths)
    try:
        _switch(paths, write, bdf, original, driver)
    except PciBindError as e:
        raise PciBindError(f"{what}: {e}; {_roll_back(paths, bdf, original)}") from None
    return original


def restore(paths: HostPaths, bdf: str, original: str | None) -> None:
    """Put the function back on original (None: leave it unbound). Idempotent."""
    now = current_driver(paths, bdf)
    dev = _device_dir(paths, bdf)
    write = sysfs_writer(paths)
    what = f"{bdf}: restore to {original or 'no driver'}"
    try:
        if now == original:
            if _override(dev) is not None:  # left behind by an interrupted bind
                _write(write, os.path.join(dev, "driver_override"), "\n")
            return
        if original is None:
            _write(write, os.path.join(dev, "driver", "unbind"), bdf)
            _write(write, os.path.join(dev, "driver_override"), "\n")
            _verify(paths, bdf, None)
            return
        _require_driver(paths, original, what)
        _switch(paths, write, bdf, now, original)
    except PciBindError as e:
        raise PciBindError(f"{what}: {e}") from None


def rebind(paths: HostPaths, bdf: str) -> str:
    """Unbind the function and bind it to the same driver again, so that the driver reads what was
    set for it meanwhile (a VF's GUIDs). Returns the driver; a failure rolls back to it. A
    driver_override someone had set is put back afterwards (the steps use their own)."""
    driver = current_driver(paths, bdf)
    what = f"{bdf}: rebind to {driver}"
    if driver is None:
        raise PciBindError(f"{bdf}: rebind: not bound to any driver")
    _require_driver(paths, driver, what)
    dev = _device_dir(paths, bdf)
    prior = _override(dev)
    write = sysfs_writer(paths)
    try:
        _switch(paths, write, bdf, driver, driver)
    except PciBindError as e:
        raise PciBindError(f"{what}: {e}; {_roll_back(paths, bdf, driver)}{_put_back(write, dev, prior)}") from None
    if prior is not None:
        _write(write, os.path.join(dev, "driver_override"), prior)
    return driver


def probe(paths: HostPaths, bdf: str) -> str | None:
    """Bind an unbound function the way the kernel would on its own: to the driver its driver_override
    names, else (drivers_probe) to the driver matching its IDs. The override stays as it is.
    Returns the driver it ends up with (None: nothing took it, e.g. a VF with autoprobe off)."""
    if current_driver(paths, bdf) is not None:
        return current_driver(paths, bdf)
    dev = _device_dir(paths, bdf)
    override = _override(dev)
    write = sysfs_writer(paths)
    if override is not None:
        _require_driver(paths, override, f"{bdf}: bind to {override} (its driver_override)")
        _write(write, os.path.join(paths.sysfs, PCI_DRIVERS, override, "bind"), bdf)
    else:
        _write(write, os.path.join(paths.sysfs, "bus/pci/drivers_probe"), bdf)
    return current_driver(paths, bdf)


def override(paths: HostPaths, bdf: str) -> str | None:
    """The function's driver_override, None when not set."""
    return _override(_device_dir(paths, bdf))


# --- steps ---------------------------------------------------------------------------------


def _switch(paths: HostPaths, write: Writer, bdf: str, current: str | None, driver: str) -> None:
    """The kernel procedure from current (bound or not) to driver; raises naming the step."""
    dev = _device_dir(paths, bdf)
    _write(write, os.path.join(dev, "driver_override"), driver)
    if current is not None:
        _write(write, os.path.join(dev, "driver", "unbind"), bdf)
    try:
        _write(write, os.path.join(paths.sysfs, PCI_DRIVERS, driver, "bind"), bdf)
    except PciBindError:
        if current_driver(paths, bdf) != driver:  # a racing reprobe may have bound it already
            raise
    _write(write, os.path.join(dev, "driver_override"), "\n")  # a lone newline clears it
    _verify(paths, bdf, driver)


def _roll_back(paths: HostPaths, bdf: str, original: str | None) -> str:
    """Undo a failed bind; says how that went, for the error message."""
    try:
        restore(paths, bdf, original)
    except PciBindError as e:
        return f"rolling back failed too: {e}"
    return f"rolled back to {original or 'no driver'}"


def _put_back(write: Writer, dev: str, prior: str | None) -> str:
    if prior is None:
        return ""
    try:
        _write(write, os.path.join(dev, "driver_override"), prior)
    except PciBindError as e:
        return f"; putting driver_override {prior} back failed: {e}"
    return f"; driver_override {prior} put back"


def _verify(paths: HostPaths, bdf: str, driver: str | None) -> None:
    now = current_driver(paths, bdf)
    if now != driver:
        raise PciBindError(f"verify: bound to {now or 'no driver'} instead of {driver or 'no driver'}")


def _require_driver(paths: HostPaths, driver: str, what: str) -> None:
    if not _DRIVER_NAME.match(driver):
        raise PciBindError(f"{what}: {driver!r} is not a driver name")
    path = os.path.join(paths.sysfs, PCI_DRIVERS, driver)
    if not os.path.isdir(path):
        raise PciBindError(f"{what}: {path} does not exist (is the {driver} module loaded?)")


def _device_dir(paths: HostPaths, bdf: str) -> str:
    if not BDF.match(bdf):
        raise PciBindError(f"{bdf!r}: not a PCI address like 0000:3b:00.2")
    path = os.path.join(paths.sysfs, PCI_DEVICES, bdf)
    if not os.path.isdir(path):
        raise PciBindError(f"{bdf}: no such PCI device ({path} does not exist)")
    return path


def _override(dev: str) -> str | None:
    try:
        with open(os.path.join(dev, "driver_override")) as f:
            value = f.read().strip()
    except OSError:
        return None
    return None if value in ("", "(null)") else value


def _write(write: Writer, path: str, value: str) -> None:
    try:
        write(path, value)
    except OSError as e:
        shown = value.strip() or "a newline"
        raise PciBindError(f"write {shown} to {path}: {e.strerror or e}") from None
