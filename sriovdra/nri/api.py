"""What the driver sees of NRI: the pods and containers handlers receive, the adjustment they may
return, and the Handlers protocol they implement. Plain data; the protobuf mapping is in convert.py."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class Pod:
    id: str  # sandbox id
    uid: str
    name: str
    namespace: str
    # Network namespace path; None for host-network pods, or when the runtime omits it
    # (containerd 1.7 on StopPodSandbox: remember it from RunPodSandbox).
    netns: str | None
    ips: tuple[str, ...] = ()
    annotations: dict[str, str] = field(default_factory=dict, hash=False)  # not hashed: a dict cannot be


@dataclass(frozen=True)
class Container:
    id: str
    pod_id: str
    name: str


@dataclass(frozen=True)
class LinuxDevice:
    path: str
    type: str  # "c" or "b"
    major: int
    minor: int
    file_mode: int | None = None
    uid: int | None = None
    gid: int | None = None


@dataclass
class ContainerAdjustment:
    env: dict[str, str] = field(default_factory=dict)
    devices: list[LinuxDevice] = field(default_factory=list)
    cdi_devices: list[str] = field(default_factory=list)  # fully qualified: vendor.com/class=name


class Handlers(Protocol):
    """Called on the plugin's connection thread, one call at a time. The runtime waits for each call
    (about 2 s at most, then it drops the plugin and lets the pod proceed), so keep them short."""

    def synchronize(self, pods: list[Pod]) -> None:
        """All pods the runtime has, after every (re)connect."""

    def run_pod_sandbox(self, pod: Pod) -> None:
        """Raising fails the pod; the runtime reports str(exception)."""

    def stop_pod_sandbox(self, pod: Pod) -> None: ...

    def remove_pod_sandbox(self, pod: Pod) -> None: ...

    def create_container(self, pod: Pod, container: Container) -> ContainerAdjustment | None: ...
