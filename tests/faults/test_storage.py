"""Storage faults under the claim lifecycle (sriovdra.driver.core.Driver on a fake host, in process):
bad checkpoints, a full disk under the checkpoint and under the CDI dir, a read-only CDI dir. Each must
give a clear error naming the file, lose nothing (earlier claims stay checkpointed and unpreparable),
keep serving the other claims, and prepare the same claim once the disk is back."""

from __future__ import annotations

import errno
import json
import os
import subprocess

import pytest

from sriovdra.checkpoint import PREPARED, checkpoint_path, read_only
from sriovdra.claim import ClaimRef
from sriovdra.driver.core import Driver, DriverSettings
from sriovdra.host import pci
from sriovdra.host.discovery import discover
from sriovdra.model import SRIOV_DRIVER
from tests.conftest import eth_pf
from tests.support.claims import ClaimBook, allocated_claim, vf_config

pytestmark = pytest.mark.faults

VFS = [f"0000:3b:00.{2 + i}" for i in range(4)]
DEVICES = [f"vf-0000-3b-00-{2 + i}" for i in range(4)]
TINY = "64k"


class Node:
    """One driver on a fake host with the CDI and state dirs given; driver() makes a new one (a restart)."""

    def __init__(self, build_host, cdi_dir: str, state_dir: str) -> None:
        _, self.paths = build_host({"host": {"iommu": True, "modules": ["mlx5_core", "vfio_pci"]},
                                    "pfs": [eth_pf(rdma=False, vfs={"total": 8, "count": 4, "offset": 2})]})
        self.inv = discover(self.paths)
        self.claims = ClaimBook()
        self.cdi_dir, self.state_dir = cdi_dir, state_dir
        self.checkpoint = checkpoint_path(state_dir, SRIOV_DRIVER)
        self.original = {a: pci.current_driver(self.paths, a) for a in VFS}
        self.d = self.driver()
        assert self.d.start() == []

    def driver(self) -> Driver:
        return Driver(DriverSettings(SRIOV_DRIVER, "node1", self.cdi_dir, self.checkpoint, self.paths,
                                     netdev_attach="none"), lambda: self.inv, self.claims)

    def claim(self, name: str, vf: int, vfio: bool = False) -> ClaimRef:
        return self.claims.add(allocated_claim(name, [DEVICES[vf]], configs=[vf_config(driver="vfio-pci")]
                                               if vfio else None))

    def prepare(self, ref: ClaimRef) -> str | None:
        return self.d.prepare([ref])[ref.uid].error

    def unprepare(self, ref: ClaimRef) -> str | None:
        return self.d.unprepare([ref])[ref.uid]

    def on_disk(self) -> dict[str, str]:
        """uid -> state, from the checkpoint file (which must verify)."""
        loaded = read_only(self.checkpoint)
        assert loaded.problem is None, loaded.problem
        return {uid: r.state for uid, r in loaded.records.items()}

    def spec(self, ref: ClaimRef) -> str:
        return os.path.join(self.cdi_dir, f"{SRIOV_DRIVER}-vf_{ref.uid}.json")

    def temp_files(self) -> list[str]:
        return [f for d in (self.cdi_dir, self.state_dir) if os.path.isdir(d) for f in os.listdir(d)
                if f.endswith(".tmp")]


class Tmpfs:
    """A tiny tmpfs mounted on a dir: filled to ENOSPC, or remounted read-only."""

    def __init__(self, path: str, size: str = TINY) -> None:
        self.path = path
        os.makedirs(path, exist_ok=True)
        p = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", path],
                           capture_output=True, text=True)
        if p.returncode:
            pytest.skip(f"cannot mount a tmpfs (needs root and CAP_SYS_ADMIN): {p.stderr.strip()}")
        self.filler = os.path.join(path, "filler")

    def fill(self) -> None:
        """Until ENOSPC: pages first, then whatever bytes are left."""
        with open(self.filler, "ab", buffering=0) as f:
            for chunk in (b"\0" * 4096, b"\0"):
                try:
                    while f.write(chunk):
                        pass
                except OSError as e:
                    assert e.errno == errno.ENOSPC, e

    def free(self) -> None:
        os.unlink(self.filler)

    def read_only(self, ro: bool) -> None:
        subprocess.run(["mount", "-o", f"remount,{'ro' if ro else 'rw'}", self.path], check=True)

    def umount(self) -> None:
        subprocess.run(["umount", "-l", self.path], capture_output=True)


@pytest.fixture
def tmpfs(tmp_path):
    mounted: list[Tmpfs] = []

    def _mount(name: str) -> Tmpfs:
        fs = Tmpfs(str(tmp_path / name))
        mounted.append(fs)
        return fs

    yield _mount
    for fs in mounted:
        fs.umount()


# --- bad checkpoints ------------------------------------------------------------------------

def _truncate(raw: bytes) -> bytes:
    return raw[: len(raw) // 2]


def _bad_checksum(raw: bytes) -> bytes:
    doc = json.loads(raw)
    next(iter(doc["claims"].values()))["claim"]["name"] = "edited"
    return json.dumps(doc).encode()


def _garbage(raw: bytes) -> bytes:
    return b"\x00\xff garbage {{{"


def _future_version(raw: bytes) -> bytes:
    doc = json.loads(raw)
    doc["version"] = 2
    return json.dumps(doc).encode()


BAD = {"truncated": (_truncate, "char"), "bad checksum": (_bad_checksum, "checksum mismatch"),
       "garbage JSON": (_garbage, "Expecting"), "future version": (_future_version, "version 2, this driver reads "
                                                                                     "version 1")}


@pytest.mark.parametrize("kind", list(BAD))
def test_a_bad_checkpoint_is_set_aside_named_and_serving_goes_on(build_host, tmp_path, kind, record_property):
    record_property("fault_case", f"checkpoint: {kind}")
    node = Node(build_host, str(tmp_path / "cdi"), str(tmp_path / "state"))
    a = node.claim("a", 0)
    assert node.prepare(a) is None
    with open(node.checkpoint, "rb") as f:
        raw = f.read()
    damage, says = BAD[kind]
    bad = damage(raw)
    with open(node.checkpoint, "wb") as f:
        f.write(bad)
    node.d = node.driver()  # a restart
    [problem] = node.d.start()
    assert node.checkpoint in problem and says in problem, problem
    [aside] = [f for f in os.listdir(node.state_dir) if ".corrupt-" in f]
    with open(os.path.join(node.state_dir, aside), "rb") as f:
        assert f.read() == bad  # kept for a human (or a newer release) to read
    b = node.claim("b", 1)
    assert node.prepare(b) is None  # serving goes on
    assert node.unprepare(a) is None  # the lost claim's spec is found by its UID
    assert not os.path.exists(node.spec(a))
    assert node.on_disk() == {b.uid: PREPARED}
    assert node.unprepare(b) is None and os.listdir(node.cdi_dir) == []
    record_property("fault_outcome", f"set aside as {aside.split('.json.')[-1]}, error names the file and says "
                                     f"{says!r}; other claims prepare; the lost claim's spec still unprepares")


# --- a full disk ----------------------------------------------------------------------------

def test_a_full_disk_under_the_checkpoint(build_host, tmp_path, tmpfs, record_property):
    record_property("fault_case", "disk full: checkpoint")
    fs = tmpfs("state")
    node = Node(build_host, str(tmp_path / "cdi"), fs.path)
    a, b = node.claim("a", 0), node.claim("b", 1, vfio=True)
    assert node.prepare(a) is None
    fs.fill()
    error = node.prepare(b)
    assert error and f"claim {b}" in error and "No space left on device" in error and node.checkpoint in error, error
    assert pci.current_driver(node.paths, VFS[1]) == node.original[VFS[1]]  # nothing of b's prepare stays
    assert not os.path.exists(node.spec(b)) and node.temp_files() == []
    assert node.prepare(a) is None  # the claim that was prepared is still served
    error = node.unprepare(a)
    assert error and node.checkpoint in error, error
    assert node.on_disk() == {a.uid: PREPARED} and os.path.exists(node.spec(a))  # nothing lost
    node.d = node.driver()  # a restart on the full disk starts, with what it had
    problems = node.d.start()
    assert all(node.checkpoint in p for p in problems), problems
    assert [r.state for r in node.d.records.values()] == [PREPARED]
    fs.free()
    assert node.prepare(b) is None and pci.current_driver(node.paths, VFS[1]) == "vfio-pci"
    assert node.unprepare(a) is None and node.unprepare(b) is None
    assert node.on_disk() == {} and os.listdir(node.cdi_dir) == [] and node.temp_files() == []
    assert pci.current_driver(node.paths, VFS[1]) == node.original[VFS[1]]
    record_property("fault_outcome", "prepare and unprepare fail naming the checkpoint (ENOSPC), no temp file "
                                     "left, the vfio-pci bind rolled back; the prepared claim stays served and "
                                     "checkpointed across a restart; with space back the same claim prepares")


def test_a_full_disk_under_the_cdi_dir(build_host, tmp_path, tmpfs, record_property):
    record_property("fault_case", "disk full: CDI dir")
    fs = tmpfs("cdi")
    node = Node(build_host, fs.path, str(tmp_path / "state"))
    a, b = node.claim("a", 0), node.claim("b", 1, vfio=True)
    assert node.prepare(a) is None
    fs.fill()
    error = node.prepare(b)
    assert error and f"claim {b}" in error and "No space left on device" in error and node.spec(b) in error, error
    assert pci.current_driver(node.paths, VFS[1]) == node.original[VFS[1]]  # the bind was rolled back
    assert not os.path.exists(node.spec(b)) and node.temp_files() == []
    assert node.on_disk() == {a.uid: PREPARED}
    assert node.prepare(a) is None
    fs.free()
    assert node.prepare(b) is None and os.path.exists(node.spec(b))
    assert node.unprepare(a) is None and node.unprepare(b) is None
    assert node.on_disk() == {} and os.listdir(node.cdi_dir) == [] and node.temp_files() == []
    assert pci.current_driver(node.paths, VFS[1]) == node.original[VFS[1]]
    record_property("fault_outcome", "prepare fails naming the spec file (ENOSPC), the vfio-pci bind rolled back, "
                                     "no temp file left, the earlier claim kept; with space back it prepares")


def test_a_read_only_cdi_dir(build_host, tmp_path, tmpfs, record_property):
    record_property("fault_case", "CDI dir read-only")
    fs = tmpfs("cdi")
    node = Node(build_host, fs.path, str(tmp_path / "state"))
    a, b = node.claim("a", 0), node.claim("b", 1, vfio=True)
    assert node.prepare(a) is None
    fs.read_only(True)
    try:
        error = node.prepare(b)
        assert error and f"claim {b}" in error and "Read-only file system" in error and node.spec(b) in error, error
        assert pci.current_driver(node.paths, VFS[1]) == node.original[VFS[1]]
        assert node.prepare(a) is None  # a repeat needs no write
        error = node.unprepare(a)
        assert error and "Read-only file system" in error and node.spec(a) in error, error
        assert a.uid in node.on_disk() and os.path.exists(node.spec(a))  # retried by the kubelet
    finally:
        fs.read_only(False)
    assert node.unprepare(a) is None and not os.path.exists(node.spec(a))
    assert node.prepare(b) is None and node.unprepare(b) is None
    assert node.on_disk() == {} and os.listdir(node.cdi_dir) == [] and node.temp_files() == []
    record_property("fault_outcome", "prepare and unprepare fail naming the spec file (EROFS), the bind rolled "
                                     "back, the earlier claim kept and retried; writable again: both succeed")
