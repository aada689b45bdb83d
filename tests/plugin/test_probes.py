"""serve's /livez and /readyz (--probe-address), as the kubelet's httpGet probes see them."""

from __future__ import annotations

import os
import socket
import subprocess

import grpc
import pytest

from sriovdra.model import IB_DRIVER, SRIOV_DRIVER
from sriovdra.plugin.proto import pluginregistration_pb2, pluginregistration_pb2_grpc
from tests.conftest import eth_pf, ib_pf
from tests.support.httpget import free_port, http_get
from tests.support.waiting import wait

HOST = {"pfs": [eth_pf(vfs={"total": 4, "count": 2}), ib_pf()]}


def probe(port: int, path: str) -> tuple[int, str]:
    return http_get("127.0.0.1", port, path)


@pytest.fixture
def node(make_node):
    n = make_node(HOST)
    n.port = free_port()
    n.start("--probe-address", f"127.0.0.1:{n.port}", sockets=2)
    yield n
    n.stop()


def test_ready_only_once_the_kubelet_registered_every_plugin(node):
    assert probe(node.port, "/livez")[0] == 200
    code, body = probe(node.port, "/readyz")
    assert code == 503
    assert f"[-]registration:{SRIOV_DRIVER} failed: the kubelet has not registered" in body
    assert f"[-]registration:{IB_DRIVER} failed" in body
    node.plugins()  # the kubelet's GetInfo + NotifyRegistrationStatus for both
    wait(lambda: probe(node.port, "/readyz")[0] == 200, what="readyz 200 after registration")
    code, body = probe(node.port, "/readyz?verbose")
    assert code == 200
    for check in (f"registration:{SRIOV_DRIVER}", f"registration:{IB_DRIVER}", f"slices:{SRIOV_DRIVER}",
                  f"slices:{IB_DRIVER}", "start"):
        assert f"[+]{check} ok" in body
    code, body = probe(node.port, "/livez?verbose")
    assert code == 200 and f"[+]grpc:{IB_DRIVER} ok" in body and "[+]rescan ok" in body


def test_a_rejected_registration_is_not_ready_and_says_why(node):
    node.plugins()
    wait(lambda: probe(node.port, "/readyz")[0] == 200, what="readyz 200")
    (reg,) = [s for s in node.kubelet.sockets() if SRIOV_DRIVER in s]
    with grpc.insecure_channel(f"unix://{reg}") as ch:
        pluginregistration_pb2_grpc.RegistrationStub(ch).NotifyRegistrationStatus(
            pluginregistration_pb2.RegistrationStatus(plugin_registered=False, error="version not supported"),
            timeout=5)
    code, body = probe(node.port, "/readyz")
    assert code == 503
    assert f"[-]registration:{SRIOV_DRIVER} failed: version not supported" in body


def test_liveness_fails_when_a_plugin_stops_answering_on_its_socket(node):
    node.plugins()
    (reg,) = [s for s in node.kubelet.sockets() if IB_DRIVER in s]
    os.unlink(reg)  # the kubelet has lost the plugin; only a restart registers it again
    code, body = probe(node.port, "/livez")
    assert code == 503
    assert f"[-]grpc:{IB_DRIVER} failed: registration socket {reg} is gone" in body


def test_a_taken_probe_port_stops_serve_with_the_address(make_node):
    n = make_node(HOST)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with open(n.log_path, "ab") as log:
            rc = subprocess.run(n.serve_args("--probe-address", f"127.0.0.1:{port}"), stdout=log, stderr=log,
                                timeout=60).returncode
    assert rc == 2  # bad input, as every serve flag
    assert f"cannot serve the probes on 127.0.0.1:{port}: Address already in use" in n.log()


def test_a_malformed_probe_address_is_refused(make_node):
    n = make_node(HOST)
    res = subprocess.run(n.serve_args("--probe-address", "51515"), capture_output=True, text=True, timeout=60)
    assert res.returncode != 0
    assert "--probe-address: expected HOST:PORT" in res.stderr
