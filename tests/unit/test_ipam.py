"""CNI IPAM plugin calls: the real host-local plugin, and small fake plugins for the protocol's corners."""

from __future__ import annotations

import json
import os
import threading
import time

import pytest

from sriovdra.host.ipam import IpamError, IpamResult, ipam_add, ipam_del

CNI_BIN = "/usr/lib/cni"
needs_host_local = pytest.mark.skipif(
    not os.access(f"{CNI_BIN}/host-local", os.X_OK),
    reason="needs the host-local CNI plugin at /usr/lib/cni/host-local (Debian: containernetworking-plugins)",
)


def host_local(tmp_path, subnet: str = "10.77.0.0/29", **extra) -> dict:
    return {"type": "host-local", "dataDir": str(tmp_path / "ipam"),
            "ranges": [[{"subnet": subnet, "gateway": "10.77.0.1"}]], "routes": [{"dst": "0.0.0.0/0"}], **extra}


def add(ipam: dict, container_id: str, **kw) -> IpamResult:
    return ipam_add([CNI_BIN], ipam, container_id=container_id, netns="/proc/self/ns/net", ifname="net1", **kw)


def delete(ipam: dict, container_id: str, **kw) -> None:
    ipam_del([CNI_BIN], ipam, container_id=container_id, netns=None, ifname="net1", **kw)


def allocated(tmp_path, network: str = "sriovdra") -> set[str]:
    return {f for f in os.listdir(tmp_path / "ipam" / network) if f[0].isdigit()}


# ----- host-local -----


@needs_host_local
def test_add_gives_the_next_free_address(tmp_path):
    ipam = host_local(tmp_path)
    first = add(ipam, "c1")
    assert first == IpamResult(ips=("10.77.0.2/29",), routes=(("0.0.0.0/0", None),), gateway="10.77.0.1")
    assert first.raw["cniVersion"] == "1.0.0"
    assert add(ipam, "c2").ips == ("10.77.0.3/29",)
    assert allocated(tmp_path) == {"10.77.0.2", "10.77.0.3"}


@needs_host_local
def test_del_frees_and_a_later_add_reuses_the_address(tmp_path):
    ipam = host_local(tmp_path, subnet="10.77.0.0/30")  # one address: .1 is the gateway
    assert add(ipam, "c1").ips == ("10.77.0.2/30",)
    delete(ipam, "c1")
    assert allocated(tmp_path) == set()
    assert add(ipam, "c2").ips == ("10.77.0.2/30",)


@needs_host_local
def test_exhaustion_is_a_clear_error(tmp_path):
    ipam = host_local(tmp_path, subnet="10.77.0.0/30")
    add(ipam, "c1")
    with pytest.raises(IpamError) as exc:
        add(ipam, "c2")
    assert (exc.value.plugin, exc.value.command) == ("host-local", "ADD")
    assert "no IP addresses available in range set" in exc.value.message
    assert str(exc.value).startswith("IPAM plugin host-local ADD: failed to allocate")


@needs_host_local
def test_del_is_idempotent(tmp_path):
    ipam = host_local(tmp_path)
    add(ipam, "c1")
    delete(ipam, "c1")
    delete(ipam, "c1")
    delete(ipam, "never-added")
    assert allocated(tmp_path) == set()


@needs_host_local
def test_network_name_separates_allocations(tmp_path):
    ipam = host_local(tmp_path)
    assert add(ipam, "c1", network="net-a").ips == ("10.77.0.2/29",)
    assert add(ipam, "c1", network="net-b").ips == ("10.77.0.2/29",)
    assert allocated(tmp_path, "net-a") == allocated(tmp_path, "net-b") == {"10.77.0.2"}


@needs_host_local
def test_bad_config_gives_the_plugins_message(tmp_path):
    ipam = {"type": "host-local", "dataDir": str(tmp_path / "ipam")}
    with pytest.raises(IpamError, match="IPAM plugin host-local ADD: no IP ranges specified"):
        add(ipam, "c1")


@needs_host_local
def test_cni_args_reach_the_plugin(tmp_path):
    """host-local honours IP=<address> in CNI_ARGS (with an "ignore unknown" marker for the rest)."""
    ipam = host_local(tmp_path)
    got = add(ipam, "c1", args={"IgnoreUnknown": "1", "IP": "10.77.0.5"})
    assert got.ips == ("10.77.0.5/29",)


# ----- protocol corners, with fake plugins -----


def fake_plugin(tmp_path, name: str, body: str) -> str:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    path = bin_dir / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return str(bin_dir)


def test_missing_plugin_names_the_dirs_searched(tmp_path):
    with pytest.raises(IpamError) as exc:
        ipam_add([str(tmp_path / "a"), str(tmp_path / "b")], {"type": "sdb-nope"}, container_id="c", netns="/x",
                 ifname="net1")
    assert str(exc.value) == f"IPAM plugin sdb-nope ADD: no executable 'sdb-nope' in {tmp_path}/a, {tmp_path}/b"


@pytest.mark.parametrize("kind", [None, "", "../host-local", "/usr/lib/cni/host-local", 3])
def test_type_must_be_a_plain_name(tmp_path, kind):
    with pytest.raises(IpamError, match="ipam type must be a plugin name"):
        ipam_add([CNI_BIN], {"type": kind}, container_id="c", netns="/x", ifname="net1")


def test_plugin_sees_only_path_and_cni_variables(tmp_path, monkeypatch):
    out = tmp_path / "seen"
    bin_dir = fake_plugin(tmp_path, "sdb-spy", f"env > {out}.env; cat > {out}.stdin\n"
                          'echo \'{"cniVersion":"1.0.0","ips":[{"address":"fd00::2/64","gateway":"fd00::1"}],'
                          '"routes":[{"dst":"::/0","gw":"fd00::1"}]}\'\n')
    monkeypatch.setenv("SDB_SECRET_TOKEN", "do-not-leak")
    got = ipam_add([bin_dir, CNI_BIN], {"type": "sdb-spy", "x": 1}, container_id="c1", netns="/run/netns/p",
                   ifname="net2", network="sriov-a", args={"K8S_POD_NAME": "web", "K8S_POD_NAMESPACE": "ns"})

    assert got == IpamResult(ips=("fd00::2/64",), routes=(("::/0", "fd00::1"),), gateway="fd00::1")
    env = dict(line.split("=", 1) for line in (tmp_path / "seen.env").read_text().splitlines() if "=" in line)
    env.pop("PWD", None)  # the shell adds these itself
    env.pop("SHLVL", None)
    env.pop("_", None)
    assert env == {
        "PATH": os.environ["PATH"],
        "CNI_COMMAND": "ADD",
        "CNI_CONTAINERID": "c1",
        "CNI_NETNS": "/run/netns/p",
        "CNI_IFNAME": "net2",
        "CNI_ARGS": "K8S_POD_NAME=web;K8S_POD_NAMESPACE=ns",
        "CNI_PATH": f"{bin_dir}:{CNI_BIN}",
    }
    assert json.loads((tmp_path / "seen.stdin").read_text()) == {
        "cniVersion": "1.0.0", "name": "sriov-a", "ipam": {"type": "sdb-spy", "x": 1}}


def test_del_without_netns_leaves_cni_netns_unset(tmp_path):
    out = tmp_path / "seen.env"
    bin_dir = fake_plugin(tmp_path, "sdb-spy", f"env > {out}\n")
    ipam_del([bin_dir], {"type": "sdb-spy"}, container_id="c1", netns=None, ifname="net1")
    text = out.read_text()
    assert "CNI_COMMAND=DEL" in text and "CNI_NETNS" not in text


def test_cni_error_object_becomes_the_message(tmp_path):
    bin_dir = fake_plugin(tmp_path, "sdb-err",
                          'echo \'{"cniVersion":"1.0.0","code":11,"msg":"try again later","details":"lock held"}\'\n'
                          "exit 1\n")
    with pytest.raises(IpamError) as exc:
        ipam_del([bin_dir], {"type": "sdb-err"}, container_id="c1", netns=None, ifname="net1")
    assert str(exc.value) == "IPAM plugin sdb-err DEL: try again later (lock held) [CNI error code 11]"
    assert (exc.value.code, exc.value.details) == (11, "lock held")


def test_a_crash_without_an_error_object_quotes_stderr(tmp_path):
    bin_dir = fake_plugin(tmp_path, "sdb-crash", "echo 'panic: boom' >&2\nexit 2\n")
    with pytest.raises(IpamError, match=r"IPAM plugin sdb-crash ADD: exit status 2: panic: boom$"):
        ipam_add([bin_dir], {"type": "sdb-crash"}, container_id="c1", netns="/x", ifname="net1")


def test_garbage_on_stdout_is_an_error(tmp_path):
    bin_dir = fake_plugin(tmp_path, "sdb-garbage", "echo 'not json'\n")
    with pytest.raises(IpamError, match="invalid JSON on stdout"):
        ipam_add([bin_dir], {"type": "sdb-garbage"}, container_id="c1", netns="/x", ifname="net1")
    bin_dir = fake_plugin(tmp_path, "sdb-odd", 'echo \'{"ips":[{"gateway":"10.0.0.1"}]}\'\n')
    with pytest.raises(IpamError, match="malformed result"):
        ipam_add([bin_dir], {"type": "sdb-odd"}, container_id="c1", netns="/x", ifname="net1")


def test_bad_cni_args_are_refused(tmp_path):
    bin_dir = fake_plugin(tmp_path, "sdb-ok", "exit 0\n")
    with pytest.raises(IpamError, match="CNI_ARGS entry"):
        ipam_del([bin_dir], {"type": "sdb-ok"}, container_id="c1", netns=None, ifname="net1", args={"A": "x;B=y"})


def test_timeout_kills_the_plugin(tmp_path):
    pidfile = tmp_path / "pid"
    bin_dir = fake_plugin(tmp_path, "sdb-slow", f"echo $$ > {pidfile}\nexec sleep 30\n")
    start = time.monotonic()
    with pytest.raises(IpamError, match=r"IPAM plugin sdb-slow ADD: no answer within 0.5s: killed"):
        ipam_add([bin_dir], {"type": "sdb-slow"}, container_id="c1", netns="/x", ifname="net1", timeout=0.5)
    assert time.monotonic() - start < 5
    pid = int(pidfile.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # killed and reaped


def test_text_file_busy_is_retried(tmp_path, mocker):
    """A plugin still open for writing (being copied in) cannot be executed yet: ETXTBSY, then success."""
    bin_dir = fake_plugin(tmp_path, "sdb-busy", 'echo \'{"ips":[{"address":"10.0.0.9/24"}]}\'\n')
    writer = os.open(os.path.join(bin_dir, "sdb-busy"), os.O_WRONLY | os.O_APPEND)
    sleeps = mocker.spy(time, "sleep")
    timer = threading.Timer(0.15, os.close, (writer,))
    timer.start()
    try:
        got = ipam_add([bin_dir], {"type": "sdb-busy"}, container_id="c1", netns="/x", ifname="net1")
    finally:
        timer.join()
    assert got.ips == ("10.0.0.9/24",)
    assert sleeps.call_count >= 1  # it was busy at first
