"""A kubelet-like gRPC client built from the protos: plugin registration, NodePrepareResources /
NodeUnprepareResources (v1 and v1beta1) and the health stream, over the plugin's unix sockets."""

from __future__ import annotations

import os
import stat
import time
from dataclasses import dataclass

import grpc

from sriovdra.plugin.proto import (
    dra_v1_pb2,
    dra_v1_pb2_grpc,
    dra_v1beta1_pb2,
    dra_v1beta1_pb2_grpc,
    health_v1_pb2,
    health_v1_pb2_grpc,
    health_v1alpha1_pb2,
    health_v1alpha1_pb2_grpc,
    pluginregistration_pb2,
    pluginregistration_pb2_grpc,
)

DRA = {"v1": (dra_v1_pb2, dra_v1_pb2_grpc), "v1beta1": (dra_v1beta1_pb2, dra_v1beta1_pb2_grpc)}
HEALTH = {"v1": (health_v1_pb2, health_v1_pb2_grpc), "v1alpha1": (health_v1alpha1_pb2, health_v1alpha1_pb2_grpc)}
KUBELET_SERVICES = ("v1.DRAPlugin", "v1beta1.DRAPlugin")  # what a 1.34+ kubelet supports


@dataclass
class Plugin:
    name: str
    endpoint: str
    versions: list[str]
    registration_socket: str

    @property
    def dra_version(self) -> str:
        """The first advertised token this kubelet supports, as the 1.34+ kubelet picks it."""
        for token in self.versions:
            if token in KUBELET_SERVICES:
                return token.split(".")[0]
        raise AssertionError(f"no supported DRA service in {self.versions}")


def _channel(path: str) -> grpc.Channel:
    return grpc.insecure_channel(f"unix://{path}")


class _Reused:
    """The kubelet keeps one connection per plugin: calls reuse a channel per endpoint."""

    channels: dict[str, grpc.Channel] = {}

    def __init__(self, path: str) -> None:
        self.path = path

    def __enter__(self) -> grpc.Channel:
        ch = self.channels.get(self.path)
        if ch is None:
            ch = self.channels[self.path] = _channel(self.path)
        return ch

    def __exit__(self, *exc) -> None:
        if exc[0] is not None:  # a broken connection (plugin restarted): dial again next time
            self.channels.pop(self.path, None)


class Kubelet:
    def __init__(self, root: str) -> None:
        self.root = root
        self.registry = os.path.join(root, "plugins_registry")

    def sockets(self) -> list[str]:
        try:
            names = os.listdir(self.registry)
        except FileNotFoundError:
            return []
        return sorted(os.path.join(self.registry, n) for n in names if not n.startswith(".")
                      and stat.S_ISSOCK(os.stat(os.path.join(self.registry, n)).st_mode))

    def wait_for_sockets(self, count: int, timeout: float = 20.0, proc=None) -> list[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.sockets()
            if len(found) >= count:
                return found
            if proc is not None and proc.poll() is not None:
                raise AssertionError(f"serve exited with {proc.returncode}")
            time.sleep(0.02)
        raise AssertionError(f"{count} registration socket(s) not created in {timeout}s: {self.sockets()}")

    def register(self, socket_path: str) -> Plugin:
        """GetInfo, dial the endpoint, then NotifyRegistrationStatus (the kubelet's sequence)."""
        with _channel(socket_path) as ch:
            stub = pluginregistration_pb2_grpc.RegistrationStub(ch)
            info = stub.GetInfo(pluginregistration_pb2.InfoRequest(), timeout=1)
            assert info.type == "DRAPlugin", info
            assert os.path.isabs(info.endpoint) and stat.S_ISSOCK(os.stat(info.endpoint).st_mode)
            plugin = Plugin(info.name, info.endpoint, list(info.supported_versions), socket_path)
            with _channel(plugin.endpoint) as dra:  # the kubelet connects right away
                grpc.channel_ready_future(dra).result(timeout=5)
            stub.NotifyRegistrationStatus(pluginregistration_pb2.RegistrationStatus(plugin_registered=True),
                                          timeout=5)
        return plugin

    def _call(self, plugin: Plugin, method: str, claims: list[tuple[str, str, str]], version: str | None,
              timeout: float):
        pb2, grpc_mod = DRA[version or plugin.dra_version]
        request = getattr(pb2, f"{method}Request")(
            claims=[pb2.Claim(namespace=ns, name=name, uid=uid) for ns, name, uid in claims])
        with _Reused(plugin.endpoint) as ch:
            return getattr(grpc_mod.DRAPluginStub(ch), method)(request, timeout=timeout)

    def prepare(self, plugin: Plugin, claims: list[tuple[str, str, str]], version: str | None = None,
                timeout: float = 45):
        return self._call(plugin, "NodePrepareResources", claims, version, timeout)

    def unprepare(self, plugin: Plugin, claims: list[tuple[str, str, str]], version: str | None = None,
                  timeout: float = 45):
        return self._call(plugin, "NodeUnprepareResources", claims, version, timeout)

    def health(self, plugin: Plugin, version: str = "v1", messages: int = 1, timeout: float = 10) -> list:
        pb2, grpc_mod = HEALTH[version]
        out = []
        with _channel(plugin.endpoint) as ch:
            stream = grpc_mod.DRAResourceHealthStub(ch).NodeWatchResources(pb2.NodeWatchResourcesRequest(),
                                                                           timeout=timeout)
            for msg in stream:
                out.append(msg)
                if len(out) >= messages:
                    stream.cancel()
                    break
        return out
