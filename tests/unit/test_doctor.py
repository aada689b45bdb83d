"""Doctor verdicts on the demo hosts, on crafted hosts, and on this machine."""

import os

import pytest

from sriovdra.doctor import FAIL, PASS, SKIP, WARN, DoctorOptions, failed, run_checks
from sriovdra.host.paths import HostPaths
from tests.conftest import eth_pf, ib_pf

CHECK_NAMES = ["sysfs", "sriov", "infiniband", "vf-drivers", "rdma-netns", "kernel-modules", "dev-nodes",
               "iommu", "kubelet-dirs", "cdi-dirs"]
GOOD_HOST = {"modules": ["mlx5_core", "mlx5_ib", "ib_uverbs", "rdma_ucm", "vfio_pci"], "rdmaNetnsMode": "exclusive",
             "containerd": {"configVersion": 3, "cdi": True, "nri": True}}


def _verdicts(paths, opts=None):
    return {c.name: c for c in run_checks(paths, opts or DoctorOptions())}


@pytest.mark.parametrize("name, expected", [
    ("ethernet-baremetal", {"infiniband": SKIP}),
    ("infiniband-baremetal", {"infiniband": WARN}),  # one VF port is Down
    # shared RDMA netns, no IOMMU and no vfio_pci inside the VM
    ("infiniband-vm", {"rdma-netns": WARN, "iommu": WARN, "kernel-modules": WARN}),
    ("large", {"infiniband": PASS}),
])
def test_demo_hosts(demo_hosts, name, expected):
    verdicts = _verdicts(HostPaths.resolve(demo_hosts[name].root))
    assert list(verdicts)[:len(CHECK_NAMES)] == CHECK_NAMES
    for check, c in verdicts.items():
        want = expected.get(check, PASS)
        assert c.status == want, f"{check}: {c.status} {c.message}"
        assert (c.fix is not None) == (c.status in (WARN, FAIL)), check


def test_pf_without_vfs_warns_with_the_fix(build_host):
    _, paths = build_host({"host": GOOD_HOST, "pfs": [eth_pf(), eth_pf("0000:3b:00.1", netdev="ens1f1",
                                                                        vfs={"total": 8, "count": 0})]})
    c = _verdicts(paths)["sriov"]
    assert c.status == WARN and "1 of 2 SR-IOV PFs have no VFs" in c.message
    assert "0000:3b:00.1/sriov_numvfs" in c.fix


def test_no_sriov_and_no_infiniband_fails(build_host):
    _, paths = build_host({"host": GOOD_HOST, "functions": [{"pci": "0000:01:00.0", "vendor": "8086",
                                                             "device": "1521", "driver": "igb"}]})
    checks = run_checks(paths)
    assert {c.name: c.status for c in checks}["sriov"] == FAIL and failed(checks)


def test_missing_mlx5_ib_fails_even_though_no_rdma_device_is_visible(build_host):
    # Without mlx5_ib there are no RDMA devices at all: the check must key on the hardware.
    _, paths = build_host({"host": dict(GOOD_HOST, modules=["mlx5_core", "ib_uverbs"]),
                           "pfs": [ib_pf(rdma=False, vfs={"count": 1, "rdma": False})]})
    c = _verdicts(paths)["kernel-modules"]
    assert c.status == FAIL and "mlx5_ib" in c.message


def test_zero_guids_and_down_ports_are_both_reported(build_host):
    _, paths = build_host({"host": GOOD_HOST, "pfs": [ib_pf(vfs={"count": 1, "guids": "zero", "portState": "Down"})]})
    c = _verdicts(paths)["infiniband"]
    assert c.status == WARN and "all-zero GUID" in c.message and "not Active" in c.message
    assert c.fix.startswith("set VF GUIDs")


def test_unbound_vfs_zero_guids_and_missing_modules(build_host):
    _, paths = build_host({"host": dict(GOOD_HOST, modules=["mlx5_core"]),
                           "pfs": [ib_pf(vfs={"count": 2, "guids": "zero", "overrides": {1: {"driver": ""}}})]})
    v = _verdicts(paths)
    assert v["vf-drivers"].status == WARN and "0000:5e:00.2" in v["vf-drivers"].message
    assert v["infiniband"].status == WARN and "all-zero GUID" in v["infiniband"].message
    assert v["kernel-modules"].status == FAIL and "ib_uverbs" in v["kernel-modules"].message
    assert v["kernel-modules"].fix == "modprobe ib_uverbs mlx5_ib"


def test_runtime_with_cdi_disabled_fails(build_host):
    _, paths = build_host({"host": dict(GOOD_HOST, containerd={"configVersion": 3, "cdi": False, "nri": True}),
                           "pfs": [eth_pf()]})
    c = _verdicts(paths)["runtime-containerd"]
    assert c.status == FAIL and "CDI disabled" in c.message and "enable_cdi = true" in c.fix


def test_nri_without_socket_warns(build_host):
    _, paths = build_host({"host": dict(GOOD_HOST, containerd={"configVersion": 3, "nri": True, "nriSocket": False}),
                           "pfs": [eth_pf()]})
    c = _verdicts(paths)["runtime-containerd"]
    assert c.status == WARN and "NRI socket /var/run/nri/nri.sock not present" in c.message


def test_missing_kubelet_and_unwritable_cdi_dir(build_host):
    host, paths = build_host({"host": dict(GOOD_HOST, kubelet=False), "pfs": [eth_pf()]})
    with open(os.path.join(host.root, "blocker"), "w") as f:
        f.write("a file where a dir should be")
    v = _verdicts(paths, DoctorOptions(cdi_dirs=("/blocker/cdi",)))
    assert v["kubelet-dirs"].status == FAIL and "--kubelet-root-dir" in v["kubelet-dirs"].fix
    assert v["cdi-dirs"].status == FAIL and "/blocker/cdi" in v["cdi-dirs"].message


def test_runtime_that_does_not_read_our_cdi_dir_fails(build_host):
    _, paths = build_host({"host": GOOD_HOST, "pfs": [eth_pf()]})
    c = _verdicts(paths, DoctorOptions(cdi_dirs=("/etc/cdi", "/run/cdi-elsewhere")))["cdi-dirs"]
    assert c.status == FAIL and "does not read CDI specs from /run/cdi-elsewhere" in c.message


def test_missing_sysfs_fails_but_the_other_checks_still_run(tmp_path):
    checks = run_checks(HostPaths.resolve(str(tmp_path)))
    assert checks[0].name == "sysfs" and checks[0].status == FAIL
    assert {"iommu", "kubelet-dirs", "cdi-dirs"} <= {c.name for c in checks}


def test_this_machine():
    """The sysfs check counts exactly the network functions of this machine, read independently."""
    network = 0
    for bdf in os.listdir("/sys/bus/pci/devices"):
        with open(f"/sys/bus/pci/devices/{bdf}/class") as f:
            network += f.read().startswith("0x02")
    checks = {c.name: c for c in run_checks(HostPaths())}
    assert checks["sysfs"].message.startswith(f"{network} network PCI functions read from /sys")
    for c in checks.values():
        assert c.status in (PASS, WARN, FAIL, SKIP) and c.message
        assert (c.fix is not None) == (c.status in (WARN, FAIL))


def test_missing_device_nodes_warn(build_host):
    host, paths = build_host({"host": dict(GOOD_HOST, modules=GOOD_HOST["modules"] + ["vfio_pci"]),
                              "pfs": [eth_pf(vfs={"count": 2, "overrides": {1: {"driver": "vfio-pci"}}})]})
    assert _verdicts(paths)["dev-nodes"].status == PASS
    os.unlink(os.path.join(host.dev, "infiniband/uverbs1"))
    os.unlink(os.path.join(host.dev, "vfio/vfio"))
    c = _verdicts(paths)["dev-nodes"]
    assert c.status == WARN
    assert "2 of 9 device nodes missing" in c.message  # 2 RDMA devices x 3, rdma_cm, vfio + its group
    assert "/dev/infiniband/uverbs1" in c.message and "/dev/vfio/vfio" in c.message
