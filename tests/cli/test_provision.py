"""`sriovdra provision` as a user runs it: a subprocess per call, its exit codes, output and progress."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

from sriovdra.checkpoint import PREPARED, CheckpointStore, ClaimRecord, PreparedDevice
from sriovdra.claim import ClaimRef
from sriovdra.host.discovery import discover
from sriovdra.model import IB_DRIVER, SRIOV_DRIVER
from tests.conftest import eth_pf, ib_pf

ETH, IB = "0000:3b:00.0", "0000:5e:00.0"
HOST = {"pfs": [eth_pf(vfs={"total": 8, "count": 2}), ib_pf(vfs={"total": 8, "count": 0, "guids": "zero"})]}


def run(*args, check=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SRIOVDRA_")}
    proc = subprocess.run([sys.executable, "-m", "sriovdra", "provision", *args], capture_output=True, text=True,
                          env=env)
    if check is not None:
        assert proc.returncode == check, proc.stdout + proc.stderr
    return proc


@pytest.fixture
def node(build_host, tmp_path):
    host, paths = build_host(HOST)
    state = tmp_path / "state"
    state.mkdir()

    def provision(*args, check=None):
        return run("--host-root", host.root, "--state-dir", str(state), *args, check=check)

    provision.paths, provision.state = paths, str(state)
    return provision


def _tree(paths) -> str:
    return json.dumps(discover(paths).to_dict())


def _claim(state_dir: str, address: str, device: str) -> None:
    rec = ClaimRecord(claim=ClaimRef("default", "c1", "uid-1"), state=PREPARED,
                      devices=[PreparedDevice(request="vf", pool="node1", device=device, pci_address=address,
                                              cdi_ids=[], config={})])
    CheckpointStore(os.path.join(state_dir, f"{SRIOV_DRIVER}.checkpoint.json")).save({"uid-1": rec})


def test_resize_prints_progress_and_json_and_a_rerun_is_a_no_op(node):
    proc = node("--pf", "ens1f0", "--num-vfs", "4", "-o", "json", check=0)
    [pf] = json.loads(proc.stdout)["pfs"]
    assert (pf["pciAddress"], pf["before"], pf["wanted"], pf["after"], pf["action"]) == (ETH, 2, 4, 4, "resized")
    assert [v["netdev"] for v in pf["vfs"]] == ["ens1f0v0", "ens1f0v1", "ens1f0v2", "ens1f0v3"]
    assert f"{ETH} ens1f0: 4/4 PCI, 4/4 bound, 4/4 netdev, 4/4 RDMA\n" in proc.stderr
    again = node("--pf", ETH, "--num-vfs", "4", "--quiet", "-o", "yaml", check=0)
    assert yaml.safe_load(again.stdout)["pfs"][0]["action"] == "unchanged"
    assert again.stderr == ""


def test_ib_vfs_end_with_derived_guids_in_discover(node, tmp_path):
    config = tmp_path / "p.yaml"
    config.write_text("pfs:\n  - match: {linkTypes: [infiniband]}\n    numVFs: 2\n")
    out = node("--config", str(config), check=0).stdout
    assert [line.split()[-2:] for line in out.splitlines() if "ibp94s0v" in line] == [
        ["0200:0103:0001:0002", "set+rebound"], ["0200:0203:0001:0002", "set+rebound"]]
    attrs = {d.name: d.attributes for d in discover(node.paths).dra_devices() if d.driver == IB_DRIVER}
    # PF GUID 0c42:a103:0001:0002: 0x02 | VF index + 1 | its low 40 bits
    assert attrs["ib-0000-5e-00-1-p1"]["nodeGUID"] == "0200:0103:0001:0002"
    assert attrs["ib-0000-5e-00-1-p1"]["portGUID"] == "fe80:0000:0000:0000:0200:0103:0001:0002"
    assert attrs["ib-0000-5e-00-2-p1"]["nodeGUID"] == "0200:0203:0001:0002"


def test_guids_none_leaves_them(node):
    node("--pf", IB, "--num-vfs", "1", "--guids", "none", check=0)
    assert discover(node.paths).function("0000:5e:00.1").rdma_devices[0].node_guid == "0000:0000:0000:0000"


@pytest.mark.parametrize("args, message", [
    (["--pf", "nosuch", "--num-vfs", "2"], "error: --pf nosuch (pf: nosuch): no such PF on this node\n"),
    (["--pf", "ens1f0", "--pf", "nosuch", "--num-vfs", "3"],  # the PF that exists is not changed either
     "error: --pf nosuch (pf: nosuch): no such PF on this node\n"),
    (["--pf", "ens1f0", "--pf", IB, "--num-vfs", "9"],
     f"error: --pf ens1f0: {ETH} (ens1f0): 9 VFs asked, sriov_totalvfs is 8 (numVFs: max takes all it has)\n"
     f"error: --pf {IB}: {IB} (ibp94s0): 9 VFs asked, sriov_totalvfs is 8 (numVFs: max takes all it has)\n"),
    (["--pf", "ens1f0"], "error: --num-vfs: required with --pf (or give --config FILE)\n"),
    (["--pf", "ens1f0", "--num-vfs", "some"], "error: --num-vfs: expected a number of VFs or max, got 'some'\n"),
    (["--num-vfs", "2"], "error: --pf: give at least one PF (netdev or PCI address), or --config\n"),
    (["--config", "/nonexistent.yaml"], "error: --config /nonexistent.yaml: No such file or directory\n"),
])
def test_bad_input_exits_2_and_changes_nothing(node, args, message):
    tree = _tree(node.paths)
    proc = node(*args, "--quiet", check=2)
    assert proc.stderr == message
    assert _tree(node.paths) == tree


def test_a_bad_config_names_the_field(node, tmp_path):
    config = tmp_path / "p.yaml"
    config.write_text("pfs:\n  - pf: ens1f0\n    numVFs: 2\n  - pf: ibp94s0\n    numVFs: many\n")
    proc = node("--config", str(config), check=2)
    assert proc.stderr == (f"error: {config}: pfs[1].numVFs: expected a number of VFs (0-65535) or max, "
                           "got 'many'\n")
    proc = node("--config", str(config), "--pf", "x", check=2)
    assert proc.stderr == "error: --config and --pf/--num-vfs: give one of them\n"


def test_an_unmatched_config_entry_is_a_warning(node, tmp_path):
    config = tmp_path / "p.yaml"
    config.write_text("pfs:\n  - pf: nosuch\n    numVFs: 2\n  - pf: ens1f0\n    numVFs: 3\n")
    proc = node("--config", str(config), "--quiet", check=0)
    assert proc.stderr == "warning: pfs[0] (pf: nosuch): no such PF on this node\n"
    assert discover(node.paths).function(ETH).sriov_numvfs == 3


def test_a_failing_pf_exits_1_and_the_others_are_done(build_host, tmp_path):
    host, paths = build_host({"pfs": [eth_pf(vfs={"total": 8, "count": 0, "enableError": {"errno": "ENOMEM"}}),
                                      ib_pf(vfs={"total": 8, "count": 0})]})
    proc = run("--host-root", host.root, "--state-dir", str(tmp_path), "--pf", ETH, "--pf", IB, "--num-vfs", "2",
               check=1)
    assert f"{ETH}  ens1f0    ethernet    0         2         0        failed" in proc.stdout
    assert f"{IB}  ibp94s0   infiniband  0         2         2        created" in proc.stdout
    assert f"Problems:\n  {ETH}: write 2 to sriov_numvfs: Cannot allocate memory (ENOMEM): SR-IOV is not " \
           "enabled in the firmware or BIOS" in proc.stdout


def test_a_timeout_exits_1_naming_what_is_missing(build_host, tmp_path):
    host, _ = build_host({"pfs": [eth_pf(vfs={"total": 8, "count": 0, "probe": "never"})]})
    proc = run("--host-root", host.root, "--state-dir", str(tmp_path), "--pf", ETH, "--num-vfs", "1",
               "--timeout", "0.1", "-o", "json", check=1)
    [pf] = json.loads(proc.stdout)["pfs"]
    assert pf["action"] == "failed" and pf["after"] == 1
    assert pf["problems"] == [f"{ETH} ens1f0: 1/1 PCI, 0/1 bound: VFs not ready after 0.1s "
                              "(VF 0 0000:3b:00.1: no driver)"]


def test_no_autoprobe_leaves_new_vfs_unbound(build_host, tmp_path):
    host, paths = build_host({"pfs": [eth_pf(vfs={"total": 8, "count": 0, "probe": "never"})]})
    run("--host-root", host.root, "--state-dir", str(tmp_path), "--pf", ETH, "--num-vfs", "2", "--no-autoprobe",
        "--timeout", "0.1", check=0)
    assert [v.driver for v in discover(paths).vfs] == [None, None]


def test_claims_refuse_with_4_force_overrides(node):
    _claim(node.state, "0000:3b:00.1", "vf-0000-3b-00-1")
    tree = _tree(node.paths)
    proc = node("--pf", "ens1f0", "--num-vfs", "4", check=4)
    assert f"{ETH}  ens1f0    ethernet  2         4         2        refused" in proc.stdout
    assert "claims hold some: vf-0000-3b-00-1 (0000:3b:00.1) by claim default/c1 uid uid-1 [prepared]" in proc.stdout
    assert _tree(node.paths) == tree
    node("--pf", "ens1f0", "--num-vfs", "2", check=0)  # no change: the claim does not matter
    assert node("--pf", "ens1f0", "--pf", IB, "--num-vfs", "4", "--force", "-o", "json", check=0)


def test_a_failure_wins_over_a_refusal(build_host, tmp_path):
    host, _ = build_host({"pfs": [eth_pf(vfs={"total": 8, "count": 2}),
                                  ib_pf(vfs={"total": 8, "count": 0, "enableError": {"errno": "EIO"}})]})
    _claim(str(tmp_path), "0000:3b:00.1", "vf-0000-3b-00-1")
    run("--host-root", host.root, "--state-dir", str(tmp_path), "--pf", ETH, "--pf", IB, "--num-vfs", "4", check=1)


def test_a_corrupt_checkpoint_refuses_only_pfs_with_vfs_it_publishes(node):
    with open(os.path.join(node.state, f"{IB_DRIVER}.checkpoint.json"), "w") as f:
        f.write("garbage")
    node("--pf", IB, "--num-vfs", "2", check=0)  # no VFs yet: none a claim could hold
    node("--pf", ETH, "--num-vfs", "4", check=0)  # its VFs are in the other driver's checkpoint
    proc = node("--pf", IB, "--num-vfs", "3", check=4)
    assert "serve's checkpoint cannot be read to tell whether claims hold them" in proc.stdout
    node("--pf", IB, "--num-vfs", "3", "--force", check=0)


def test_vfs_bound_to_vfio_refuse_with_4(build_host, tmp_path):
    host, _ = build_host({"host": {"modules": ["vfio_pci"]},
                          "pfs": [eth_pf(vfs={"total": 8, "count": 2, "overrides": {0: {"driver": "vfio-pci"}}})]})
    proc = run("--host-root", host.root, "--state-dir", str(tmp_path), "--pf", ETH, "--num-vfs", "0", check=4)
    assert "VFs 0000:3b:00.1 are bound to vfio-pci: writing 0 to sriov_numvfs blocks in the kernel" in proc.stdout
    run("--host-root", host.root, "--state-dir", str(tmp_path), "--pf", ETH, "--num-vfs", "0", "--force", check=0)


def test_dry_run_shows_the_plan_and_changes_nothing(node):
    tree = _tree(node.paths)
    proc = node("--pf", "ens1f0", "--pf", IB, "--num-vfs", "3", "--dry-run", check=0)
    assert proc.stdout.startswith("Dry run: nothing was changed.\n")
    assert f"{IB}  ibp94s0   infiniband  0         3         0        dry-run" in proc.stdout
    assert _tree(node.paths) == tree


def test_help_imports_nothing_heavy():
    code = ("import sys; sys.argv = ['sriovdra', 'provision', '--help']\n"
            "from sriovdra.cli import main\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "sys.stderr.write('\\nMODULES ' + ' '.join(sorted(sys.modules)))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "--num-vfs N|max" in proc.stdout
    modules = set(proc.stderr.rsplit("MODULES ", 1)[1].split())
    assert not modules & {"kubernetes", "grpc", "pyroute2", "google.protobuf", "yaml", "sriovdra.provisioner"}
