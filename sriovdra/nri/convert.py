"""Mapping between NRI protobuf messages and the driver-facing objects of sriovdra.nri.api."""

from __future__ import annotations

from sriovdra.nri.api import Container, ContainerAdjustment, LinuxDevice, Pod
from sriovdra.nri.proto import nri_pb2


def netns_path(pod: nri_pb2.PodSandbox) -> str | None:
    for ns in pod.linux.namespaces:
        if ns.type == "network":
            return ns.path or None  # an empty path would mean "new namespace": not one we can enter
    return None


def pod(msg: nri_pb2.PodSandbox) -> Pod:
    return Pod(id=msg.id, uid=msg.uid, name=msg.name, namespace=msg.namespace, netns=netns_path(msg),
               ips=tuple(msg.ips), annotations=dict(msg.annotations))


def container(msg: nri_pb2.Container) -> Container:
    return Container(id=msg.id, pod_id=msg.pod_sandbox_id, name=msg.name)


def linux_device(dev: LinuxDevice) -> nri_pb2.LinuxDevice:
    msg = nri_pb2.LinuxDevice(path=dev.path, type=dev.type, major=dev.major, minor=dev.minor)
    # Optional* wrappers: an unset field means "runtime default", unlike an explicit 0
    if dev.file_mode is not None:
        msg.file_mode.value = dev.file_mode
    if dev.uid is not None:
        msg.uid.value = dev.uid
    if dev.gid is not None:
        msg.gid.value = dev.gid
    return msg


def adjustment(adj: ContainerAdjustment | None) -> nri_pb2.ContainerAdjustment:
    msg = nri_pb2.ContainerAdjustment()
    if adj is None:
        return msg
    msg.env.extend(nri_pb2.KeyValue(key=k, value=v) for k, v in adj.env.items())
    msg.linux.devices.extend(linux_device(d) for d in adj.devices)
    msg.CDI_devices.extend(nri_pb2.CDIDevice(name=n) for n in adj.cdi_devices)
    return msg
