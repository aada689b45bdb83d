"""`sriovdra serve` in a subprocess, against a fake host, the API stand-in and a kubelet-like client."""

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
                "--log-level", "debug", *extra]

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


@pytest.fixture
def make_node(tmp_path, build_host):
    """make_node(spec) -> a Node whose serve is not started yet (call node.start())."""
    nodes: list[Node] = []
    servers: list[ApiServer] = []
    short = tempfile.mkdtemp(prefix="k", dir="/tmp")  # unix socket paths must stay under 108 bytes

    def _make(spec: dict) -> Node:
        host, _ = build_host(spec)
        api = ApiServer().__enter__()
        servers.append(api)
        api.add_node(NODE)
        kubelet_root = os.path.join(short, str(len(nodes)))
        node = Node(api=api, kubelet=Kubelet(kubelet_root), host_root=host.root, sysfs=host.sysfs, dev=host.dev,
                    kubelet_root=kubelet_root, cdi_dir=str(tmp_path / f"cdi{len(nodes)}"),
                    state_dir=str(tmp_path / f"state{len(nodes)}"),
                    kubeconfig=api.kubeconfig(str(tmp_path / f"kubeconfig{len(nodes)}")),
                    log_path=str(tmp_path / f"serve{len(nodes)}.log"))
        nodes.append(node)
        return node

    yield _make
    for node in nodes:
        if node.proc is not None:
            node.proc.kill()
            node.proc.wait()
    for api in servers:
        api.__exit__(None, None, None)
    shutil.rmtree(short, ignore_errors=True)
