"""The real-runtime tier: containerd (Debian sid 2.1.x, unpacked by hack/runtime/setup.sh and
cached in ${SRIOVDRA_CACHE:-~/.cache/sriovdra}/runtime) driven through CRI by the harness, which
plays the kubelet: it prepares claims through `sriovdra serve`'s DRA gRPC service and hands the
returned CDI device IDs to CreateContainer. NRI is enabled on a private socket
(`containerd.nri_socket`) for the driver's network attach.

Fixtures, from broad to narrow:
  runtime_stack   session: setup.sh ran (cold ~15-30 s, warm ~0 s); a failed setup is a test
                  ERROR with the log tail. Skips only without root, without veth support in the
                  kernel, or when setup is needed and apt-get/dpkg are missing.
  containerd      package: one private containerd (tests.support.containerd.Containerd); its
                  teardown removes every pod, kills tasks leaked past CRI, stops it by PID and
                  fails the tier when anything of it is left (mounts, shims, cgroups, routes).
  pods            function: PodHelper; every pod it ran is torn down after the test, then
                  nothing may be left in containerd (tasks, netns files, routes, IPAM leases).
  vf_host         function: a fake host (demo/hosts schema) with one Ethernet PF whose VF
                  netdevs are REAL veth ends in the root netns (peers sdr<tag>p<i>).
  serve           function: serve(host, *extra_args) runs `sriovdra serve` on a fake host with
                  --cdi-dir = containerd's CDI spec dir (tests.support.node.Node).
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from sriovdra import fakehost
from tests.support.cachedbuild import ensure_built
from tests.support.containerd import Containerd, cache_dir
from tests.support.cri import Pod
from tests.support.node import Node, NodeFactory

REPO = Path(__file__).resolve().parents[2]
SETUP = REPO / "hack" / "runtime" / "setup.sh"

_timings: dict[str, float] = {}
_pod_up: list[float] = []
_pod_down: list[float] = []


def pytest_collection_modifyitems(items):
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(pytest.mark.runtime)


def pytest_terminal_summary(terminalreporter):
    parts = [f"{k} {v:.2f}s" for k, v in _timings.items()]
    for label, values in (("pod up", _pod_up), ("pod down", _pod_down)):
        if values:
            parts.append(f"{label} median {statistics.median(values):.3f}s max {max(values):.3f}s (n={len(values)})")
    if parts:
        terminalreporter.write_line("real runtime: " + ", ".join(parts))


# --- capability gate + setup ---------------------------------------------------------------

def _veth_works() -> str | None:
    """None when the kernel lets us create a veth pair, else the error."""
    name = f"sdrchk{os.getpid() % 100000}"
    p = subprocess.run(["ip", "link", "add", name, "type", "veth", "peer", "name", name + "p"],
                       capture_output=True, text=True)
    if p.returncode:
        return p.stderr.strip() or f"ip exited with {p.returncode}"
    subprocess.run(["ip", "link", "del", name], capture_output=True)
    return None


def _ensure_setup(config) -> None:
    """Run setup.sh unless --check says the cache is complete; stream its output (a cold run
    takes ~15-30 s) and fail with its tail when it fails."""
    if os.geteuid() != 0:
        pytest.skip("the real-runtime tier needs root (containerd, runc, network namespaces, veth)")
    if shutil.which("ip") is None:
        pytest.skip("the real-runtime tier needs iproute2 (ip)")
    err = _veth_works()
    if err:
        pytest.skip(f"the real-runtime tier needs veth interfaces; `ip link add ... type veth` failed: {err}")
    ensure_built(config, SETUP, "the containerd stack is not cached", check_root=False,
                 env={**os.environ, "PYTHON": sys.executable}, timings=_timings,
                 labels=("setup (warm)", "setup (cold)", "setup (failed)"))


@pytest.fixture(scope="session")
def runtime_stack(request) -> str:
    """The cache dir holding the unpacked containerd, images and CRI stubs."""
    _ensure_setup(request.config)
    if not os.access("/usr/sbin/runc", os.X_OK):
        pytest.fail("/usr/sbin/runc missing (hack/test.sh installs runc; apt-get install runc)", pytrace=False)
    return cache_dir()


# --- containerd ----------------------------------------------------------------------------

@pytest.fixture(scope="package")
def containerd(runtime_stack):
    """One private containerd for the tier (CDI dir <base>/cdi, NRI socket <base>/nri.sock)."""
    base = tempfile.mkdtemp(prefix="sdrctd-", dir="/tmp")  # short: unix socket paths <108 bytes
    ctd = Containerd(base, cdi_dir=os.path.join(base, "cdi"), cache=runtime_stack)
    try:
        ctd.write_config()
        t = ctd.start()
    except Exception as e:  # noqa: BLE001 - any start failure is the tier's failure
        ctd.cleanup(remove_base=False)
        pytest.fail(f"starting containerd {ctd.version} failed: {e}\n(log: {ctd.log_path}, config: "
                    f"{ctd.config_path})", pytrace=False)
    _timings[f"containerd {ctd.version} start"] = ctd.timings["start"]
    _timings["start+image import"] = t
    try:
        yield ctd
    finally:
        notes, leftovers = ctd.cleanup()
        for note in notes:
            sys.stderr.write(f"\ncontainerd cleanup: {note}\n")
        if leftovers:
            pytest.fail("containerd left behind (base kept: " + ctd.base + "):\n  " + "\n  ".join(leftovers),
                        pytrace=False)


@pytest.fixture(scope="package")
def containerd17(runtime_stack):
    """The optional second target: containerd 1.7 from trixie (config schema v2, CDI <= 0.8.0,
    NRI 0.6). Set up only with SRIOVDRA_RUNTIME_17=1 (setup.sh --with-1.7); skipped otherwise."""
    root = os.path.join(runtime_stack, "root-1.7")
    if not os.path.exists(os.path.join(root, "usr", "bin", "containerd")):
        pytest.skip("containerd 1.7 is opt-in: SRIOVDRA_RUNTIME_17=1 (hack/runtime/setup.sh --with-1.7)")
    base = tempfile.mkdtemp(prefix="sdrctd-", dir="/tmp")
    ctd = Containerd(base, cdi_dir=os.path.join(base, "cdi"), cache=runtime_stack, root=root)
    try:
        ctd.write_config()
        ctd.start()
    except Exception as e:  # noqa: BLE001
        ctd.cleanup(remove_base=False)
        pytest.fail(f"starting containerd {ctd.version} failed: {e}\n(log: {ctd.log_path})", pytrace=False)
    _timings[f"containerd {ctd.version} start"] = ctd.timings["start"]
    try:
        yield ctd
    finally:
        notes, leftovers = ctd.cleanup()
        if leftovers:
            pytest.fail("containerd 1.7 left behind:\n  " + "\n  ".join(leftovers), pytrace=False)


@dataclass
class PodHelper:
    """Runs pods through CRI and tears every one of them down at the end of the test."""

    ctd: Containerd
    pods: list[Pod] = field(default_factory=list)

    @property
    def cri(self):
        return self.ctd.cri

    def run(self, name: str | None = None, *, host_network: bool = False, namespace: str = "default",
            annotations: dict | None = None, uid: str | None = None) -> Pod:
        name = name or f"pod-{len(self.pods)}"
        t0 = time.monotonic()
        pod = self.cri.run_pod(name, uid or str(uuid.uuid4()), namespace, host_network, annotations)
        _pod_up.append(time.monotonic() - t0)
        self.pods.append(pod)
        return pod

    def run_container(self, pod: Pod, command: list[str] | None = None, name: str = "c", **kw) -> str:
        """A started container (default: sleeping, so that exec works)."""
        return self.cri.run_container(pod, name, command or ["sleep", "3600"], **kw)

    def exec(self, cid: str, *cmd: str) -> tuple[int, str, str]:
        return self.cri.exec(cid, list(cmd))

    def sh(self, cid: str, script: str) -> str:
        """Run a shell script in the container; its stdout (fails the test on a non-zero exit)."""
        rc, out, err = self.cri.exec(cid, ["sh", "-c", script])
        assert rc == 0, f"`{script}` exited {rc}: {err}"
        return out

    def down(self, pod: Pod) -> None:
        t0 = time.monotonic()
        self.cri.teardown(pod)
        _pod_down.append(time.monotonic() - t0)
        self.pods.remove(pod)

    def close(self) -> None:
        self.ctd.note_ids()
        errors = []
        for pod in list(self.pods):
            try:
                self.down(pod)
            except Exception as e:  # noqa: BLE001 - try every pod, report all
                errors.append(f"{pod.name}: {e}")
        if self.ctd.pid:
            notes = self.ctd.remove_pods()  # pods run outside the helper, tasks leaked past CRI
            if notes:
                sys.stderr.write("\n" + "\n".join(notes) + "\n")
        leftovers = self.ctd.leftovers()
        assert not errors and not leftovers, f"pod teardown: errors {errors}, left behind {leftovers}"


@pytest.fixture
def pods17(containerd17):
    """PodHelper on the containerd 1.7 target."""
    helper = PodHelper(containerd17)
    try:
        yield helper
    finally:
        helper.close()


@pytest.fixture
def pods(containerd):
    """PodHelper on the tier's containerd: pods run through it are removed after the test, then the
    test fails if containerd still has anything of them (tasks, netns files, routes, IPAM leases)."""
    helper = PodHelper(containerd)
    try:
        yield helper
    finally:
        helper.close()


# --- fake host with real veth VF netdevs ----------------------------------------------------

@dataclass
class VfHost:
    host: fakehost.FakeHost
    spec_path: str
    pf_pci: str
    vfs: list[dict]  # per VF: pci, netdev (real veth end, root netns), peer, device (DRA device name), mac

    def netdevs(self) -> list[str]:
        return [v["netdev"] for v in self.vfs]


def _links(prefix: str) -> list[str]:
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    return [ln.split(": ")[1].split("@")[0] for ln in out.splitlines()
            if ln.split(": ")[1].split("@")[0].startswith(prefix)]


def _ip(*args: str) -> None:
    p = subprocess.run(["ip", *args], capture_output=True, text=True)
    if p.returncode:
        raise RuntimeError(f"ip {' '.join(args)}: {p.stderr.strip()}")


@pytest.fixture
def make_vf_host(tmp_path, runtime_stack):
    """make_vf_host(count=2, rdma=False) -> VfHost: one Ethernet PF 0000:3b:00.0 with `count` VFs
    (0000:3b:00.2...) whose netdevs sdr<tag>v<i> are veth ends in the root netns, with the MAC the
    fake sysfs reports. <tag> is unique per test process, so concurrent runs on one machine do not
    collide; every link with the tag is deleted at teardown (VF ends moved into a pod die with it)."""
    tag = f"sdr{os.getpid() % 1000:03d}"
    made: list[str] = []

    def _make(count: int = 2, rdma: bool = False) -> VfHost:
        prefix = f"{tag}{chr(ord('a') + len(made))}"  # sdr123a: first host of the test, ...
        made.append(prefix)
        for stale in _links(prefix):  # a killed earlier run with the same pid
            _ip("link", "del", stale)
        spec = {"description": "runtime tier: VF netdevs are real veths",
                "host": {"modules": ["mlx5_core"], "kubelet": True, "cdi": True},
                "pfs": [{"pci": "0000:3b:00.0", "netdev": f"{prefix}f0", "numa": 0, "rdma": rdma,
                         "pcieRoot": "pci0000:3a",
                         "vfs": {"total": 8, "count": count, "offset": 2, "netdevPrefix": f"{prefix}v"}}]}
        spec_path = str(tmp_path / f"{prefix}.yaml")
        with open(spec_path, "w") as f:
            yaml.safe_dump(spec, f)
        host = fakehost.build(spec_path, str(tmp_path / f"host-{prefix}"))
        vfs = []
        for i in range(count):
            pci = f"0000:3b:00.{2 + i}"
            netdev, peer = f"{prefix}v{i}", f"{prefix}p{i}"
            net_dir = os.path.join(host.sysfs, "bus", "pci", "devices", pci, "net")
            assert os.listdir(net_dir) == [netdev], f"fake host VF {pci} netdev: {os.listdir(net_dir)}"
            with open(os.path.join(net_dir, netdev, "address")) as f:
                mac = f.read().strip()
            _ip("link", "add", netdev, "address", mac, "type", "veth", "peer", "name", peer)
            _ip("link", "set", peer, "up")
            vfs.append({"pci": pci, "netdev": netdev, "peer": peer, "mac": mac,
                        "device": "vf-" + pci.replace(":", "-").replace(".", "-")})
        return VfHost(host, spec_path, "0000:3b:00.0", vfs)

    try:
        yield _make
    finally:
        for prefix in made:
            for link in _links(prefix):
                subprocess.run(["ip", "link", "del", link], capture_output=True)
        left = [ln for p in made for ln in _links(p)]
        assert not left, f"veths left behind: {left}"


@pytest.fixture
def vf_host(make_vf_host) -> VfHost:
    """A fake host with 2 VFs whose netdevs are real veths (see make_vf_host)."""
    return make_vf_host(2)


# --- serve ---------------------------------------------------------------------------------

@pytest.fixture
def serve(tmp_path, containerd):
    """serve(vf_host, *extra_args, sockets=1, runtime=None) -> a started Node: `sriovdra serve` on
    the fake host with --cdi-dir = the CDI spec dir of `runtime` (default: the tier's containerd);
    extra_args go to serve's command line as they are (e.g. the NRI flags with
    containerd.nri_socket). Stopped at teardown; the CDI files it left are removed so the next
    test starts from an empty spec dir."""
    factory = NodeFactory(tmp_path)
    started: list[Node] = []
    cdi_dirs: set[str] = set()

    def _serve(host: VfHost | fakehost.FakeHost, *extra_args: str, sockets: int = 1, env: dict | None = None,
               runtime: Containerd | None = None) -> Node:
        h = host.host if isinstance(host, VfHost) else host
        cdi_dir = (runtime or containerd).cdi_dir
        cdi_dirs.add(cdi_dir)
        node = factory.make(h.root, h.sysfs, h.dev, cdi_dir=cdi_dir)
        node.start(*extra_args, sockets=sockets, env=env)
        started.append(node)
        return node

    try:
        yield _serve
    finally:
        for node in started:
            if node.proc is not None:
                node.stop()
        factory.close()
        for d in cdi_dirs:
            for name in os.listdir(d):
                os.unlink(os.path.join(d, name))
