"""The CDI specs serve writes, consumed by a real container runtime (podman 4.3 from Debian with runc).

podman reads CDI specs only from /etc/cdi and /var/run/cdi; the test bind-mounts serve's CDI dir
over /etc/cdi inside a private mount namespace (unshare), so the host's dirs are never touched.
podman 4.3's CDI library accepts cdiVersion up to 0.5.0 and rejects unknown fields: a spec it
cannot parse makes the device unresolvable, so a passing run proves the spec is valid for it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile

import pytest

from sriovdra.model import IB_DRIVER, SRIOV_DRIVER
from tests.conftest import eth_pf, ib_pf
from tests.support.claims import SEED_IB_CONFIG, allocated_claim, ref, vf_config

IMAGE = "localhost/sriovdra-busybox:test"
TOOLS = ("podman", "runc", "unshare", "busybox")
pytestmark = [
    pytest.mark.runtime,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (podman as root, bind mounts, char device nodes)"),
    pytest.mark.skipif(any(shutil.which(t) is None for t in TOOLS),
                       reason=f"needs {', '.join(TOOLS)} (hack/test.sh installs podman, runc and busybox-static)"),
]
CONTAINERS_CONF = """[containers]
default_ulimits = ["nofile=20000:20000", "nproc=4096:4096"]
netns = "none"
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
"""


@pytest.fixture(scope="module")
def podman(tmp_path_factory):
    """A busybox image imported from the busybox-static binary (no registry), and podman settings
    that work without CAP_SYS_RESOURCE and on hybrid cgroups (runc, not crun)."""
    base = tmp_path_factory.mktemp("podman")
    conf = base / "containers.conf"
    conf.write_text(CONTAINERS_CONF)
    env = {**os.environ, "CONTAINERS_CONF": str(conf)}
    if subprocess.run(["podman", "image", "exists", IMAGE], env=env).returncode != 0:
        rootfs = base / "rootfs"
        (rootfs / "bin").mkdir(parents=True)
        for d in ("dev", "proc", "sys", "etc", "tmp"):
            (rootfs / d).mkdir()
        shutil.copy(shutil.which("busybox"), rootfs / "bin" / "busybox")
        for applet in ("sh", "env", "ls", "stat", "cat"):
            os.symlink("busybox", rootfs / "bin" / applet)
        with tarfile.open(base / "rootfs.tar", "w") as tar:
            tar.add(rootfs, arcname=".")
        subprocess.run(["podman", "import", str(base / "rootfs.tar"), IMAGE], env=env, check=True,
                       capture_output=True)
    return env


def run_with_cdi(env: dict, cdi_dir: str, cdi_ids: list[str], command: str) -> subprocess.CompletedProcess:
    devices = " ".join(f"--device {i}" for i in cdi_ids)
    script = f"mount --bind {cdi_dir} /etc/cdi && exec podman run --rm {devices} {IMAGE} sh -c '{command}'"
    created = not os.path.exists("/etc/cdi")
    if created:  # the mount point; removed again below if we made it
        os.mkdir("/etc/cdi")
    try:
        return subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script], env=env,
                              capture_output=True, text=True, timeout=120)
    finally:
        if created:
            os.rmdir("/etc/cdi")


def test_prepared_claims_run_in_podman(make_node, podman):
    node = make_node({"host": {"modules": ["mlx5_core", "mlx5_ib", "ib_uverbs", "rdma_ucm"], "devNodes": "null-char"},
                      "pfs": [eth_pf(), ib_pf()]})
    node.start(sockets=2)
    try:
        plugins = node.plugins()
        vf = node.api.add_claim(allocated_claim("vf", ["vf-0000-3b-00-2"], configs=[vf_config(ifName="net1")]))
        ib = node.api.add_claim(allocated_claim("ib", ["ib-0000-5e-00-1-p1"], driver=IB_DRIVER, request="ib",
                                                configs=[SEED_IB_CONFIG]))
        ids = []
        for plugin, claim in ((plugins[SRIOV_DRIVER], vf), (plugins[IB_DRIVER], ib)):
            [dev] = node.kubelet.prepare(plugin, [ref(claim)]).claims[claim["metadata"]["uid"]].devices
            ids += list(dev.cdi_device_ids)
        proc = run_with_cdi(podman, node.cdi_dir, ids,
                            "env | sort; stat -c \"%n %F\" /dev/infiniband/*")
        assert proc.returncode == 0, proc.stderr
        out = proc.stdout
        assert "SRIOVNETWORK_VF_DEVICE_0000_3b_00_2=0000:3b:00.2" in out
        assert "SRIOVNETWORK_0000_3b_00_2_NETDEV=net1" in out
        assert "IB_DEVICE_0_PKEY=0x8001" in out and "IB_DEVICE_0_MTU=4096" in out
        uverbs = [line for line in out.splitlines() if line.startswith("/dev/infiniband/uverbs")]
        assert len(uverbs) == 2 and all(line.endswith("character special file") for line in uverbs)
    finally:
        node.stop()
