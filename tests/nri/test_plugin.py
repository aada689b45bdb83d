"""The NRI plugin against a fake runtime that speaks the real protocol over a unix socket
(tests/support/nri_runtime.py): registration, sync, pod events, adjustments, errors, reconnects."""

from __future__ import annotations

import logging
import time

import pytest

from sriovdra.nri.plugin import Container, ContainerAdjustment, LinuxDevice, NriPlugin, Pod
from sriovdra.nri.proto import nri_pb2
from tests.support.nri_runtime import FakeRuntime, PluginError, container, pod_sandbox

FAST = {"backoff_min": 0.02, "backoff_max": 0.1}


class Recorder:
    """Handlers that record calls; behaviour per test through the attributes."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []
        self.syncs: list[list[Pod]] = []
        self.refuse: str | None = None  # run_pod_sandbox raises RuntimeError(refuse)
        self.stop_error: Exception | None = None
        self.delay = 0.0  # run_pod_sandbox sleeps this long (once)
        self.adjustment: ContainerAdjustment | None = None

    def synchronize(self, pods: list[Pod]) -> None:
        self.syncs.append(pods)

    def run_pod_sandbox(self, pod: Pod) -> None:
        self.calls.append(("run", pod))
        delay, self.delay = self.delay, 0.0
        time.sleep(delay)
        if self.refuse:
            raise RuntimeError(self.refuse)

    def stop_pod_sandbox(self, pod: Pod) -> None:
        self.calls.append(("stop", pod))
        if self.stop_error:
            raise self.stop_error

    def remove_pod_sandbox(self, pod: Pod) -> None:
        self.calls.append(("remove", pod))

    def create_container(self, pod: Pod, container: Container) -> ContainerAdjustment | None:
        self.calls.append(("create", (pod, container)))
        return self.adjustment


@pytest.fixture
def sock(tmp_path):
    return str(tmp_path / "nri.sock")


@pytest.fixture
def runtime(sock):
    rt = FakeRuntime(sock, request_timeout=2.0).start()
    yield rt
    rt.stop()


@pytest.fixture
def handlers():
    return Recorder()


@pytest.fixture
def make_plugin(sock, handlers):
    plugins = []

    def _make(**kw) -> NriPlugin:
        plugin = NriPlugin(sock, handlers, **{**FAST, **kw})
        plugins.append(plugin)
        plugin.start()
        return plugin

    yield _make
    for plugin in plugins:
        plugin.stop()


def test_registers_with_name_and_index_and_subscribes_to_pod_events(runtime, make_plugin):
    plugin = make_plugin(name="sriovdra", index="42")
    conn = runtime.wait_plugin()
    assert (conn.name, conn.index) == ("sriovdra", "42")
    # RUN, STOP, REMOVE_POD_SANDBOX and CREATE_CONTAINER: bits 0..3
    assert conn.events == 0b1111
    assert not conn.subscribed(nri_pb2.START_CONTAINER)
    assert plugin.connected.wait(2)
    assert plugin.runtime == "containerd/2.1.9"
    assert plugin.connects == 1


@pytest.mark.parametrize("configure_first", [True, False])
def test_setup_works_whichever_arrives_first_configure_or_registration_reply(sock, handlers, make_plugin,
                                                                             configure_first):
    rt = FakeRuntime(sock, configure_before_register_reply=configure_first).start()
    try:
        plugin = make_plugin()
        rt.wait_plugin()
        assert plugin.connected.wait(2)
        assert plugin.connects == 1
        assert handlers.syncs == [[]]
    finally:
        rt.stop()


@pytest.mark.parametrize("chunk", [0, 2])
def test_synchronize_delivers_all_pods_once_with_netns_paths(runtime, make_plugin, handlers, chunk):
    runtime.sync_chunk = chunk  # 2: five pods arrive as 2 + 2 + 1 with more=True
    pods = [pod_sandbox(f"p{i}") for i in range(4)] + [pod_sandbox("hostnet", host_network=True)]
    for p in pods:
        runtime.pods[p.id] = p
    plugin = make_plugin()
    runtime.wait_plugin()
    assert plugin.connected.is_set()
    assert len(handlers.syncs) == 1
    got = {p.name: p for p in handlers.syncs[0]}
    assert [p.name for p in handlers.syncs[0]] == ["p0", "p1", "p2", "p3", "hostnet"]
    assert got["p1"].netns == f"/run/containerd/io.containerd.grpc.v1.cri/netns/cni-{pods[1].id}"
    assert got["hostnet"].netns is None
    assert got["p1"].id == pods[1].id and got["p1"].uid == "uid-p1"


def test_pod_events_reach_the_handlers_as_pods(runtime, make_plugin, handlers):
    make_plugin()
    runtime.wait_plugin()
    p = pod_sandbox("web", namespace="prod", ips=("10.234.0.9", "fd00::9"), annotations={"a": "b"},
                    netns="/run/netns/cni-1")
    runtime.run_pod_sandbox(p)
    runtime.stop_pod_sandbox(p)
    runtime.remove_pod_sandbox(p)
    expected = Pod(id=p.id, uid="uid-web", name="web", namespace="prod", netns="/run/netns/cni-1",
                   ips=("10.234.0.9", "fd00::9"), annotations={"a": "b"})
    assert handlers.calls == [("run", expected), ("stop", expected), ("remove", expected)]


def test_host_network_pod_has_no_netns(runtime, make_plugin, handlers):
    make_plugin()
    runtime.wait_plugin()
    runtime.run_pod_sandbox(pod_sandbox("host", host_network=True))
    (_, pod), = handlers.calls
    assert pod.netns is None
    assert pod.ips == ()


def test_run_pod_sandbox_error_fails_the_pod_with_the_handlers_message(runtime, make_plugin, handlers):
    plugin = make_plugin()
    runtime.wait_plugin()
    handlers.refuse = "no free VF on pf0 for claim default/c1"
    p = pod_sandbox("p1")
    with pytest.raises(PluginError) as exc:
        runtime.run_pod_sandbox(p)
    assert str(exc.value) == ("NRI RunPodSandbox failed: rpc error: code = Unknown desc = "
                              "no free VF on pf0 for claim default/c1")
    assert p.id not in runtime.pods
    # the connection survives a refusal
    handlers.refuse = None
    runtime.run_pod_sandbox(pod_sandbox("p2"))
    assert [c[1].name for c in handlers.calls] == ["p1", "p2"]
    assert plugin.connects == 1 and plugin.connected.is_set()


def test_unexpected_error_in_stop_handler_is_answered_and_logged(runtime, make_plugin, handlers, caplog):
    make_plugin()
    runtime.wait_plugin()
    handlers.stop_error = KeyError("pf0")
    p = pod_sandbox("p1")
    with caplog.at_level(logging.WARNING, logger="sriovdra.nri"):
        with pytest.raises(PluginError) as exc:
            runtime.stop_pod_sandbox(p)
    assert (exc.value.code, exc.value.message) == (2, "'pf0'")
    failed = [r for r in caplog.records if "STOP_POD_SANDBOX default/p1 failed" in r.getMessage()]
    assert failed and failed[0].exc_info is not None  # with the traceback: this is a bug, not a refusal
    runtime.remove_pod_sandbox(p)  # still connected
    assert handlers.calls[-1] == ("remove", handlers.calls[-2][1])


def test_create_container_adjustment_is_encoded(runtime, make_plugin, handlers):
    make_plugin()
    runtime.wait_plugin()
    handlers.adjustment = ContainerAdjustment(
        env={"SRIOVDRA_VF": "0000:3b:02.1", "B": "2"},
        devices=[LinuxDevice("/dev/infiniband/uverbs3", "c", 231, 195, file_mode=0o666),
                 LinuxDevice("/dev/vfio/42", "c", 243, 1, uid=0, gid=1000)],
        cdi_devices=["sriovdra.example.com/vf=pf0-vf1"])
    p = pod_sandbox("p1")
    ctr = container(p, "app")
    adj = runtime.create_container(p, ctr)
    assert [(kv.key, kv.value) for kv in adj.env] == [("SRIOVDRA_VF", "0000:3b:02.1"), ("B", "2")]
    uverbs, vfio = adj.linux.devices
    assert (uverbs.path, uverbs.type, uverbs.major, uverbs.minor) == ("/dev/infiniband/uverbs3", "c", 231, 195)
    assert uverbs.file_mode.value == 0o666
    assert not uverbs.HasField("uid") and not uverbs.HasField("gid")  # unset, not 0
    assert vfio.HasField("uid") and vfio.uid.value == 0 and vfio.gid.value == 1000
    assert not vfio.HasField("file_mode")
    assert [d.name for d in adj.CDI_devices] == ["sriovdra.example.com/vf=pf0-vf1"]
    (_, (pod, ctr_seen)), = handlers.calls
    assert ctr_seen == Container(id=ctr.id, pod_id=p.id, name="app")
    assert pod.name == "p1"


def test_create_container_without_adjustment(runtime, make_plugin):
    make_plugin()
    runtime.wait_plugin()
    p = pod_sandbox("p1")
    assert runtime.create_container(p, container(p, "app")) == nri_pb2.ContainerAdjustment()


def test_other_plugin_methods_get_valid_answers_and_unknown_ones_an_error(runtime, make_plugin):
    plugin = make_plugin()
    runtime.wait_plugin()
    p = pod_sandbox("p1")
    ctr = container(p, "app")
    assert runtime.call("UpdateContainer", nri_pb2.UpdateContainerRequest(pod=p, container=ctr),
                        nri_pb2.UpdateContainerResponse) == nri_pb2.UpdateContainerResponse()
    assert runtime.call("StopContainer", nri_pb2.StopContainerRequest(pod=p, container=ctr),
                        nri_pb2.StopContainerResponse) == nri_pb2.StopContainerResponse()
    assert runtime.call("StateChange", nri_pb2.StateChangeEvent(event=nri_pb2.START_CONTAINER, pod=p),
                        nri_pb2.Empty) == nri_pb2.Empty()
    with pytest.raises(PluginError) as exc:
        runtime.call("UpdatePodSandbox", nri_pb2.Empty(), nri_pb2.Empty)  # NRI 0.9+, not 0.8
    assert exc.value.code == 12 and "UpdatePodSandbox" in exc.value.message
    assert runtime.call("Shutdown", nri_pb2.Empty(), nri_pb2.Empty) == nri_pb2.Empty()
    assert plugin.connects == 1 and plugin.connected.is_set()


def test_reconnects_after_the_runtime_restarts_and_resynchronizes(runtime, make_plugin, handlers):
    plugin = make_plugin()
    runtime.wait_plugin()
    p = pod_sandbox("p1")
    runtime.run_pod_sandbox(p)
    runtime.restart()
    conn = runtime.wait_plugin()
    assert plugin.connected.wait(2)
    assert plugin.connects == 2
    assert [[pod.id for pod in sync] for sync in handlers.syncs] == [[], [p.id]]
    runtime.stop_pod_sandbox(p)  # events flow on the new connection
    assert handlers.calls[-1][0] == "stop"
    assert not conn.closed.is_set()


def test_connected_is_cleared_while_the_runtime_is_down(runtime, make_plugin):
    plugin = make_plugin()
    runtime.wait_plugin()
    assert plugin.connected.wait(2)
    runtime.stop()
    deadline = time.monotonic() + 2
    while plugin.connected.is_set() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not plugin.connected.is_set()


def test_missing_socket_is_logged_once_and_the_plugin_connects_when_it_appears(sock, make_plugin, caplog):
    with caplog.at_level(logging.WARNING, logger="sriovdra.nri"):
        plugin = make_plugin()
        time.sleep(0.5)  # several attempts at 20-100 ms
        rt = FakeRuntime(sock).start()
        try:
            assert plugin.connected.wait(3)
            assert plugin.connects == 1
        finally:
            rt.stop()
    missing = [r for r in caplog.records if "not available" in r.getMessage()]
    assert len(missing) == 1
    assert sock in missing[0].getMessage()


def test_stop_returns_promptly_while_disconnected(sock, handlers):
    plugin = NriPlugin(sock, handlers, backoff_min=5.0, backoff_max=10.0)
    plugin.start()
    time.sleep(0.1)  # now in a 5 s backoff wait
    start = time.monotonic()
    plugin.stop(timeout=5)
    assert time.monotonic() - start < 1
    assert not plugin._thread.is_alive()


def test_stop_closes_a_live_connection(runtime, make_plugin):
    plugin = make_plugin()
    conn = runtime.wait_plugin()
    start = time.monotonic()
    plugin.stop(timeout=5)
    assert time.monotonic() - start < 1
    assert conn.closed.wait(2)
    assert not plugin.connected.is_set()


def test_slow_handler_is_disconnected_and_the_plugin_reconnects(sock, make_plugin, handlers, caplog):
    rt = FakeRuntime(sock, request_timeout=0.5).start()
    try:
        with caplog.at_level(logging.WARNING, logger="sriovdra.nri"):
            plugin = make_plugin()
            rt.wait_plugin()
            handlers.delay = 1.0
            handlers.refuse = None
            rt.run_pod_sandbox(pod_sandbox("slow"))  # fail-open: the pod proceeds
            assert any("context deadline exceeded" in line for line in rt.log)
            rt.wait_plugin(count=2)
            assert plugin.connected.wait(2)
            assert plugin.connects == 2
            assert len(handlers.syncs) == 2
        slow = [r.getMessage() for r in caplog.records if "took" in r.getMessage()]
        assert slow and "RUN_POD_SANDBOX default/slow took " in slow[0] and "slower than 0.5s" in slow[0]
    finally:
        rt.stop()


def test_handler_exceptions_never_kill_the_connection_thread(runtime, make_plugin, handlers):
    plugin = make_plugin()
    runtime.wait_plugin()
    handlers.refuse = "nope"
    for i in range(3):
        with pytest.raises(PluginError):
            runtime.run_pod_sandbox(pod_sandbox(f"p{i}"))
    assert plugin._thread.is_alive() and plugin.connects == 1


def test_refused_registration_is_logged_and_retried(sock, make_plugin, caplog):
    rt = FakeRuntime(sock, refuse_registration="plugin 50-sriovdra already registered").start()
    try:
        with caplog.at_level(logging.WARNING, logger="sriovdra.nri"):
            plugin = make_plugin()
            deadline = time.monotonic() + 3
            while len([line for line in rt.log if "registration refused" in line]) < 2 and time.monotonic() < deadline:
                time.sleep(0.02)
    finally:
        rt.stop()
    assert len(rt.log) >= 2, rt.log  # it tried again
    assert plugin.connects == 0 and not plugin.connected.is_set()
    assert any("runtime refused registration as 50-sriovdra: plugin 50-sriovdra already registered (code 2)"
               in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("index", ["5", "123", "ab", "5a", "", "٣٣"])
def test_index_must_be_two_ascii_digits(sock, handlers, index):
    with pytest.raises(ValueError, match="exactly two digits"):
        NriPlugin(sock, handlers, index=index)


def test_start_twice_is_an_error(sock, handlers):
    plugin = NriPlugin(sock, handlers, **FAST)
    plugin.start()
    try:
        with pytest.raises(RuntimeError, match="already started"):
            plugin.start()
    finally:
        plugin.stop()
