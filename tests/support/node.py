"""`sriovdra serve` in a subprocess against a fake host, the API stand-in and a kubelet-like
client: the pieces the plugin tier (tests/plugin) and the runtime tier (tests/runtime) share."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

import grpc
import pytest

from tests.support.apiserver import ApiServer
from tests.support.kubelet import Kubelet, Plugin

NODE = "node1"


@dataclass
class Node:
    api: ApiServer
    kubelet: Kubelet
    host_root: str
    sysfs: str
    dev: str
    kubelet_root: str
    cdi_dir: str
    state_dir: str
    kubeconfig: str
    proc: subprocess.Popen | None = None
    log_path: str = ""
    expected: int = 1  # plugins serve registers

    def serve_args(self, *extra: str) -> list[str]:
        return [sys.executable, "-m", "sriovdra", "serve", "--node-name", NODE, "--kubeconfig", self.kubeconfig,
                "--kubelet-root-dir", self.kubelet_root, "--cdi-dir", self.cdi_dir, "--state-dir", self.state_dir,
                "--sysfs-root", self.sysfs, "--dev-root", self.dev, "--rescan-interval", "1",
                "--health-interval", "0.5",
                "--log-level", "debug",
                # no runtime in this tier: nothing to attach to (the runtime tier passes nri, the last flag wins)
                "--netdev-attach", "none", *extra]

    def start(self, *extra: str, sockets: int = 1, env: dict | None = None) -> None:
        log = open(self.log_path, "ab")
        env = {**{k: v for k, v in os.environ.items() if not k.startswith(("SRIOVDRA_", "KUBECONFIG", "NODE_NAME"))},
               **(env or {})}
        self.proc = subprocess.Popen(self.serve_args(*extra), stdout=log, stderr=log, env=env)
        self.expected = sockets
        self.kubelet.wait_for_sockets(sockets, proc=self.proc)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc is None:
            return 0
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=15)
        finally:
            self.proc = None

    def plugins(self, timeout: float = 15.0) -> dict[str, Plugin]:
        """Register every plugin, retrying like the kubelet while sockets are stale (after a kill -9
        the old socket files stay until the restarted serve replaces them)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                plugins = {p.name: p for p in (self.kubelet.register(s) for s in self.kubelet.sockets())}
                if len(plugins) >= self.expected:
                    return plugins
                error = AssertionError(f"only {sorted(plugins)} registered, expected {self.expected}")
            except grpc.RpcError as e:  # stale sockets of a killed instance, or not listening yet
                error = e
            if time.monotonic() > deadline or (self.proc is not None and self.proc.poll() is not None):
                raise error
            time.sleep(0.05)

    def log(self) -> str:
        with open(self.log_path, errors="replace") as f:
            return f.read()


class NodeFactory:
    """Makes Nodes (serve not started) in a test's temp dir; close() kills every serve and stops
    every API stand-in it made. cdi_dir overrides where serve writes CDI specs (the runtime tier
    points it at containerd's cdi_spec_dirs)."""

    def __init__(self, tmp_path) -> None:
        self.tmp_path = tmp_path
        self.nodes: list[Node] = []
        self.servers: list[ApiServer] = []
        self.short = tempfile.mkdtemp(prefix="k", dir="/tmp")  # unix socket paths must stay under 108 bytes

    def make(self, host_root: str, sysfs: str, dev: str, cdi_dir: str | None = None) -> Node:
        api = ApiServer().__enter__()
        self.servers.append(api)
        api.add_node(NODE)
        i = len(self.nodes)
        kubelet_root = os.path.join(self.short, str(i))
        node = Node(api=api, kubelet=Kubelet(kubelet_root), host_root=host_root, sysfs=sysfs, dev=dev,
                    kubelet_root=kubelet_root, cdi_dir=cdi_dir or str(self.tmp_path / f"cdi{i}"),
                    state_dir=str(self.tmp_path / f"state{i}"),
                    kubeconfig=api.kubeconfig(str(self.tmp_path / f"kubeconfig{i}")),
                    log_path=str(self.tmp_path / f"serve{i}.log"))
        self.nodes.append(node)
        return node

    def close(self) -> None:
        for node in self.nodes:
            if node.proc is not None:
                node.proc.kill()
                node.proc.wait()
        for api in self.servers:
            api.__exit__(None, None, None)
        shutil.rmtree(self.short, ignore_errors=True)


@pytest.fixture
def make_node(tmp_path, build_host):
    """make_node(spec) -> a Node whose serve is not started yet; every serve it started is killed after."""
    factory = NodeFactory(tmp_path)

    def _make(spec: dict) -> Node:
        host, _ = build_host(spec)
        return factory.make(host.root, host.sysfs, host.dev)

    yield _make
    factory.close()
