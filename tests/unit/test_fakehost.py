"""The fake host builder: kernel-like layout, strict spec validation, safe replacement."""

import os
import stat

import pytest

from sriovdra import fakehost
from sriovdra.fakehost import FakeHostError
from tests.conftest import eth_pf, ib_pf


def test_layout_mirrors_the_kernel_symlinks(build_host):
    host, _ = build_host({"pfs": [eth_pf()]})
    sys_ = host.sysfs
    pf = os.path.join(sys_, "bus/pci/devices/0000:3b:00.0")
    assert os.path.islink(pf)
    assert os.path.realpath(pf) == os.path.join(sys_, "devices/pci0000:3a/0000:3a:00.0/0000:3b:00.0")
    vf = os.path.realpath(os.path.join(pf, "virtfn0"))
    assert os.path.basename(vf) == "0000:3b:00.2"
    assert os.path.realpath(os.path.join(vf, "physfn")) == os.path.realpath(pf)
    assert os.path.basename(os.readlink(os.path.join(pf, "driver"))) == "mlx5_core"
    assert os.path.exists(os.path.join(sys_, "bus/pci/drivers/mlx5_core/bind"))
    assert os.path.realpath(os.path.join(sys_, "class/net/ens1f0v0")) == os.path.join(vf, "net/ens1f0v0")
    assert os.path.realpath(os.path.join(sys_, "class/infiniband/mlx5_1/device")) == vf
    group = os.readlink(os.path.join(vf, "iommu_group"))
    assert os.path.realpath(os.path.join(sys_, "kernel/iommu_groups", os.path.basename(group), "devices",
                                         "0000:3b:00.2")) == vf
    with open(os.path.join(pf, "sriov_numvfs")) as f:
        assert f.read() == "2\n"


def test_nri_socket_is_a_real_socket(build_host):
    host, _ = build_host({"host": {"containerd": {"configVersion": 3, "cdi": True, "nri": True}}})
    assert stat.S_ISSOCK(os.stat(os.path.join(host.root, "var/run/nri/nri.sock")).st_mode)


def test_vfio_bound_vf_gets_a_vfio_group_node(build_host):
    host, _ = build_host({"host": {"modules": ["vfio_pci"]},
                          "pfs": [eth_pf(vfs={"count": 1, "total": 2, "overrides": {0: {"driver": "vfio-pci"}}})]})
    group = os.path.basename(os.readlink(os.path.join(host.sysfs, "bus/pci/devices/0000:3b:00.1/iommu_group")))
    assert os.path.exists(os.path.join(host.dev, "vfio", group))
    assert os.path.exists(os.path.join(host.dev, "vfio/vfio"))


def test_zero_guids_for_vfs(build_host):
    host, _ = build_host({"pfs": [ib_pf(vfs={"count": 1, "guids": "zero"})]})
    with open(os.path.join(host.sysfs, "bus/pci/devices/0000:5e:00.1/infiniband/mlx5_1/node_guid")) as f:
        assert f.read().strip() == "0000:0000:0000:0000"


@pytest.mark.parametrize("spec, message", [
    ({"pfs": [{"pci": "0000:3b:00.0", "colour": "red"}]}, r"pfs\[0\]: unknown field\(s\) colour"),
    ({"pfs": [{"pci": "3b:00.0"}]}, r"pfs\[0\].pci: expected a PCI address"),
    ({"pfs": [{}]}, r"pfs\[0\].pci: required"),
    ({"pfs": [eth_pf(vfs={"total": 4, "count": 8})]}, r"pfs\[0\].vfs.count: must be between 0 and total \(4\)"),
    ({"pfs": [eth_pf(link="fibre")]}, r"pfs\[0\].link: expected ethernet or infiniband"),
    ({"pfs": [ib_pf(ports=[{"state": "Sleepy"}])]}, r"pfs\[0\].ports\[0\].state: expected one of"),
    ({"pfs": [eth_pf(vfs={"count": 2, "overrides": {5: {}}})]}, r"pfs\[0\].vfs.overrides: key 5"),
    ({"pfs": [eth_pf(numa="zero")]}, r"pfs\[0\].numa: expected int"),
    ({"pfs": [ib_pf(vfs={"count": 2, "overrides": {1: {"portState": "Up"}}})]},
     r"pfs\[0\].vfs.overrides\[1\].portState: expected one of"),
    ({"pfs": [eth_pf(vfs={"count": 1, "overrides": {0: {"mtu": "big"}}})]}, r"pfs\[0\].vfs.overrides\[0\].mtu"),
    ({"functions": [{"pci": "0000:00:08.0", "vfs": {}}]}, r"functions\[0\]: unknown field\(s\) vfs"),
    ({"host": {"kind": "cloud"}}, r"host.kind: expected baremetal or vm"),
    ({"pfs": [ib_pf(guid="zz")]}, r"pfs\[0\].guid: expected a GUID"),
    ({"pfs": [eth_pf(vfs={"count": 2, "stride": 0})]}, r"pfs\[0\].vfs: offset and stride must be at least 1"),
    ({"pfs": [eth_pf("0000:ff:00.0", vfs={"count": 300, "total": 300})]}, r"run past bus ff"),
    ({"host": {"containerd": {"configVersion": 1}}}, r"host.containerd.configVersion: expected 2 or 3"),
    ({"extra": 1}, r"host description: unknown field\(s\) extra"),
])
def test_bad_specs_name_the_field(tmp_path, spec, message):
    with pytest.raises(FakeHostError, match=message):
        fakehost.build(spec, str(tmp_path / "h"))
    assert not (tmp_path / "h").exists()  # nothing half-built is left behind


def test_refuses_to_overwrite_anything_but_a_previous_fake_host(tmp_path):
    other = tmp_path / "precious"
    other.mkdir()
    (other / "data").write_text("keep me")
    with pytest.raises(FakeHostError, match="not empty"):
        fakehost.build({}, str(other), replace=True)
    assert (other / "data").read_text() == "keep me"
    fakehost.build({}, str(tmp_path / "fh"))
    with pytest.raises(FakeHostError, match="not empty"):
        fakehost.build({}, str(tmp_path / "fh"))
    fakehost.build({"pfs": [eth_pf()]}, str(tmp_path / "fh"), replace=True)
    assert (tmp_path / "fh/sys/bus/pci/devices/0000:3b:00.0").exists()


def test_yaml_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("pfs: [\n")
    with pytest.raises(FakeHostError, match=f"{bad}: not valid YAML"):
        fakehost.build(str(bad), str(tmp_path / "h"))


def test_module_cli_builds_and_reports(tmp_path, capsys):
    spec = tmp_path / "h.yaml"
    spec.write_text("pfs: [{pci: '0000:3b:00.0', netdev: ens1f0, vfs: {count: 1}}]\n")
    assert fakehost.main(["build", str(spec), str(tmp_path / "out")]) == 0
    assert f"--sysfs-root {tmp_path}/out/sys" in capsys.readouterr().out
    assert fakehost.main(["build", str(spec), str(tmp_path / "out")]) == 2
    assert "not empty" in capsys.readouterr().err
