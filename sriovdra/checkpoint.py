"""The driver's persisted state: what it did to the host, claim by claim.

One JSON file per DRA driver in the state dir, written atomically (temp file, fsync, rename,
fsync of the dir) after every change, so that `serve` can be killed at any instant:

    {"version": 1, "checksum": "sha256:<hex>", "claims": {"<claim uid>": ClaimRecord, ...}}

The checksum covers the canonical JSON of "claims". A file that does not parse, fails its
checksum or has another version is moved aside (<file>.corrupt-<unix time>), reported, and the
driver starts from an empty state: unprepare of a claim it no longer knows still removes the
claim's CDI spec, whose name derives from the claim UID.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field, fields

from sriovdra.atomicfile import write_atomic
from sriovdra.claim import ClaimRef

VERSION = 1

# Claim states, in order. A record is written in PREPARING before the host is touched and in
# UNPREPARING before anything is undone; recovery rolls such records back or forward.
PREPARING, PREPARED, UNPREPARING = "preparing", "prepared", "unpreparing"


class CheckpointError(Exception):
    pass


# Compatibility with the releases before and after this one, which may run beside it (a rolling update's
# twin re-reads the file at every operation). Older readers build records with cls(**d) and fail on a key
# they do not know: keys added since are written only when set (_OPTIONAL). Newer writers may add keys
# this release does not know: reading keeps the fields it knows and drops the rest (_known).
def _known(cls, d: dict) -> dict:
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in d.items() if k in names}


def _without_unset(d: dict, optional: tuple[str, ...]) -> dict:
    return {k: v for k, v in d.items() if k not in optional or v is not None}


# Attachment states: a record is written in ATTACHING before the netdev is touched; a crash
# leaves it there, and the next Synchronize/unprepare undoes whatever part was done.
ATTACHING, ATTACHED = "attaching", "attached"


@dataclass
class Attachment:
    """A prepared device's netdev moved into a pod (NRI RunPodSandbox), and how to undo it."""

    pod: str  # pod UID
    sandbox: str  # runtime sandbox ID (the CNI container ID for IPAM)
    netns: str | None  # the pod's netns path (containerd 1.7 omits it at StopPodSandbox)
    pod_name: str  # namespace/name, for messages
    state: str = ATTACHING
    if_name: str = ""  # name inside the pod
    original: dict | None = None  # host-side LinkSnapshot (name, ifindex, mtu, mac, up)
    ifindex: int | None = None  # inside the pod
    mac: str | None = None
    mtu: int | None = None
    ips: list[str] = field(default_factory=list)
    ipam: dict | None = None  # the IPAM config an address was allocated with (released at detach)
    rdma: str | None = None  # RDMA device moved along (exclusive RDMA netns mode)
    vf_original: dict | None = None  # PF-side VF settings before we changed them
    pf: str | None = None  # PF netdev and VF index the VF settings were applied through
    vf: int | None = None
    # An IPoIB P_Key child created for IbConfig.pkey, moved in instead of the parent and deleted at
    # detach: {"parent", "pkey", "name" (unique host-side name), "ifindex" (None until created)}.
    # Recorded before it is created, so a crash at any point deletes it.
    ipoib_child: dict | None = None
    # Carrier of the pod-side IPoIB netdev when its MTU was last read (IbConfig.mtu only): without it
    # the broadcast-group join is pending and the kernel may still lower the MTU.
    carrier: bool | None = None

    _OPTIONAL = ("ipoib_child", "carrier")  # added after version 1's first release: written only when set

    def to_dict(self) -> dict:
        return _without_unset(dict(self.__dict__), self._OPTIONAL)

    @classmethod
    def from_dict(cls, d: dict) -> Attachment:
        return cls(**_known(cls, d))


@dataclass
class PreparedDevice:
    request: str  # base request name (what the kubelet matches container claims against)
    pool: str
    device: str
    pci_address: str
    cdi_ids: list[str]
    config: dict  # the effective VfConfig / IbConfig, as JSON
    port: int | None = None
    rdma_device: str | None = None
    netdev: str | None = None
    admin_access: bool = False
    share_id: str | None = None
    original_driver: str | None = None  # kernel driver to restore after a vfio-pci rebind
    attributes: dict = field(default_factory=dict)  # as published at prepare time (slice stays stable)
    env_index: int | None = None  # IB_DEVICE_<i> of an InfiniBand port, unique within its pods
    if_name: str | None = None  # pod-side name chosen at prepare (--netdev-attach cdi)
    attachment: Attachment | None = None
    partition: dict | None = None  # IbConfig.pkey looked up in the port's P_Key table (partition.PartitionCheck)

    _OPTIONAL = ("partition",)  # added after version 1's first release: written only when set

    def to_dict(self) -> dict:
        out = dict(self.__dict__)
        out["attachment"] = self.attachment.to_dict() if self.attachment else None
        return _without_unset(out, self._OPTIONAL)

    @classmethod
    def from_dict(cls, d: dict) -> PreparedDevice:
        d = _known(cls, d)
        att = d.pop("attachment", None)
        return cls(**d, attachment=Attachment.from_dict(att) if att else None)


@dataclass
class ClaimRecord:
    claim: ClaimRef
    state: str
    devices: list[PreparedDevice] = field(default_factory=list)
    # CDI spec files of the claim (name in the CDI dir -> content as written, None until written):
    # kept to write them again when /var/run/cdi (tmpfs) was lost
    specs: dict[str, dict | None] = field(default_factory=dict)
    pods: list[str] = field(default_factory=list)  # reservedFor UIDs at prepare time
    updated: float = 0.0

    def to_dict(self) -> dict:
        return {"claim": self.claim.to_dict(), "state": self.state, "devices": [d.to_dict() for d in self.devices],
                "specs": dict(self.specs), "pods": list(self.pods), "updated": self.updated}

    @classmethod
    def from_dict(cls, d: dict) -> ClaimRecord:
        specs = d.get("specs")
        if specs is None and d.get("cdiSpec"):  # the first layout: one spec, two keys
            specs = {d["cdiSpec"]: d.get("spec")}
        return cls(claim=ClaimRef(**_known(ClaimRef, d["claim"])), state=d["state"],
                   devices=[PreparedDevice.from_dict(x) for x in d.get("devices", [])],
                   specs=dict(specs or {}), pods=list(d.get("pods", [])), updated=d.get("updated", 0.0))

    def attached(self) -> list[PreparedDevice]:
        return [d for d in self.devices if d.attachment is not None]


def _checksum(claims: dict) -> str:
    canonical = json.dumps(claims, sort_keys=True, separators=(",", ":")).encode()
    return "sha256:" + hashlib.sha256(canonical).hexdigest()


def encode(records: dict[str, ClaimRecord]) -> dict:
    claims = {uid: r.to_dict() for uid, r in sorted(records.items())}
    return {"version": VERSION, "checksum": _checksum(claims), "claims": claims}


def encode_bytes(records: dict[str, ClaimRecord]) -> bytes:
    """The file's bytes: encode() on one line. Every prepare and unprepare rewrites every claim, so this
    stays on json's C encoder (indent= would switch to the pure-Python one: ~85 ms per save with 60
    claims held); `sriovdra checkpoint show` is the human view. Keys keep their order (the CDI specs
    kept here are written back as they were)."""
    return (json.dumps(encode(records), separators=(",", ":")) + "\n").encode()


def decode(data: object) -> dict[str, ClaimRecord]:
    """Parse and verify a checkpoint document; CheckpointError says what is wrong."""
    if not isinstance(data, dict):
        raise CheckpointError("not a JSON object")
    if data.get("version") != VERSION:
        raise CheckpointError(f"version {data.get('version')!r}, this driver reads version {VERSION}")
    claims = data.get("claims")
    if not isinstance(claims, dict):
        raise CheckpointError("no 'claims' object")
    if data.get("checksum") != _checksum(claims):
        raise CheckpointError("checksum mismatch (the file was changed or truncated)")
    try:
        return {uid: ClaimRecord.from_dict(r) for uid, r in claims.items()}
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"malformed claim record: {e}") from None


@dataclass
class LoadResult:
    records: dict[str, ClaimRecord]
    problem: str | None = None  # what was wrong with the file, if it was set aside
    set_aside: str | None = None  # where the bad file went


class CheckpointStore:
    def __init__(self, path: str) -> None:
        self.path = path

    def load(self) -> LoadResult:
        """The records; a bad file is moved aside (and reported) so that the next save starts clean."""
        if not os.path.exists(self.path):
            return LoadResult(records={})
        loaded = read_only(self.path)
        if loaded.problem:
            loaded.set_aside = f"{self.path}.corrupt-{time.time_ns()}"
            os.replace(self.path, loaded.set_aside)
        return loaded

    def reread(self) -> LoadResult:
        """The records on disk now, for a process that shares the file (a rolling-update twin): never
        moves the file (a missing one reads as empty; a bad one as a problem, the caller keeps what it
        has rather than overwriting the other process's state with nothing)."""
        if not os.path.exists(self.path):
            return LoadResult(records={})
        try:
            return read_only(self.path)
        except CheckpointError as e:  # unreadable (permissions, I/O): as a bad file
            return LoadResult(records={}, problem=str(e))

    def peek(self) -> dict[str, ClaimRecord]:
        """The records on disk now, read-only (a bad file reads as empty and stays where it is)."""
        try:
            return read_only(self.path).records
        except CheckpointError:
            return {}

    def save(self, records: dict[str, ClaimRecord]) -> None:
        write_atomic(self.path, encode_bytes(records), mode=0o600, dir_mode=0o700)


def checkpoint_path(state_dir: str, driver: str) -> str:
    """Where serve keeps one driver's checkpoint (--state-dir)."""
    return os.path.join(state_dir, f"{driver}.checkpoint.json")


@dataclass
class StateDir:
    """Every driver's checkpoint in a state dir, read-only: for tools that inspect what serve holds."""

    files: list[str]
    records: list[tuple[str, ClaimRecord]]  # (driver, record)
    problems: list[str]


def read_state_dir(state_dir: str, drivers: tuple[str, ...]) -> StateDir:
    out = StateDir(files=[], records=[], problems=[])
    for driver in drivers:
        path = checkpoint_path(state_dir, driver)
        if not os.path.exists(path):
            continue
        out.files.append(path)
        try:
            loaded = read_only(path)
        except CheckpointError as e:
            out.problems.append(str(e))
            continue
        if loaded.problem:
            out.problems.append(loaded.problem)
        out.records += [(driver, rec) for rec in loaded.records.values()]
    return out


def read_only(path: str) -> LoadResult:
    """Load without setting a bad file aside (for `sriovdra checkpoint show`)."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no checkpoint (serve has not prepared anything yet?)") from None
    except OSError as e:
        raise CheckpointError(f"{path}: {e.strerror}") from None
    try:
        return LoadResult(records=decode(json.loads(raw)))
    except (ValueError, CheckpointError) as e:
        return LoadResult(records={}, problem=f"{path}: {e}")
