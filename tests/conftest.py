"""Shared fixtures: the demo fake hosts, built once per test session, and a builder for specs."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from sriovdra import fakehost
from sriovdra.host.discovery import discover
from sriovdra.host.paths import HostPaths

REPO = Path(__file__).resolve().parent.parent
DEMO_HOSTS = sorted(p.stem for p in (REPO / "demo" / "hosts").glob("*.yaml"))


_SHM = "/dev/shm"


def pytest_configure(config):
    """Fake hosts are many small files (the large one 60k): on tmpfs a build takes 2 s, on a busy
    ext4 up to 20 s. Unless --basetemp is given, keep pytest's temp dirs on tmpfs."""
    if config.option.basetemp is None and os.access(_SHM, os.W_OK):
        config.option.basetemp = tempfile.mkdtemp(prefix="sriovdra-pytest-", dir=_SHM)
        config._sriovdra_basetemp = config.option.basetemp


def pytest_unconfigure(config):
    base = getattr(config, "_sriovdra_basetemp", None)
    if base:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def demo_hosts(tmp_path_factory) -> dict[str, fakehost.FakeHost]:
    base = tmp_path_factory.mktemp("demo-hosts")
    return {name: fakehost.build(str(REPO / "demo" / "hosts" / f"{name}.yaml"), str(base / name))
            for name in DEMO_HOSTS}


@pytest.fixture(scope="session")
def demo_inventories(demo_hosts):
    return {name: discover(HostPaths.resolve(host.root)) for name, host in demo_hosts.items()}


@pytest.fixture
def build_host(tmp_path):
    """Build a spec (dict) into a fresh directory; returns (FakeHost, HostPaths)."""
    counter = iter(range(1000))

    def _build(spec: dict) -> tuple[fakehost.FakeHost, HostPaths]:
        host = fakehost.build(spec, os.path.join(tmp_path, f"host{next(counter)}"))
        return host, HostPaths.resolve(host.root)

    return _build


def eth_pf(pci: str = "0000:3b:00.0", **kw) -> dict:
    """A ConnectX Ethernet PF spec with 2 VFs unless overridden."""
    spec = {"pci": pci, "netdev": "ens1f0", "numa": 0, "rdma": True, "pcieRoot": "pci0000:3a",
            "vfs": {"total": 8, "count": 2, "device": "101e", "offset": 2}}
    spec.update(kw)
    return spec


def ib_pf(pci: str = "0000:5e:00.0", **kw) -> dict:
    spec = {"pci": pci, "link": "infiniband", "device": "101b", "netdev": "ibp94s0", "numa": 1,
            "guid": "0c42:a103:0001:0002", "vfs": {"total": 8, "count": 2, "offset": 1}}
    spec.update(kw)
    return spec
