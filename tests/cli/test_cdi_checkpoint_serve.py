"""`sriovdra cdi generate`, `sriovdra checkpoint show` and `sriovdra serve` argument errors."""

import json
import os

import pytest

from sriovdra.checkpoint import PREPARED, CheckpointStore, ClaimRecord, PreparedDevice
from sriovdra.claim import ClaimRef
from tests.cli.test_cli import run
from tests.support.claims import SEED_IB_CONFIG


def test_cdi_generate_prints_a_valid_spec_for_the_chosen_devices(demo_hosts, tmp_path):
    host = demo_hosts["infiniband-baremetal"]
    cfg = tmp_path / "ib.yaml"
    cfg.write_text(json.dumps(SEED_IB_CONFIG))
    out = run("cdi", "generate", "--host-root", host.root, "-d", "ib-0000-3b-00-1-p1", "-d", "ib-0000-3b-00-2-p1",
              "--claim-uid", "uid-1", "--config", str(cfg), check=0).stdout
    spec = json.loads(out)
    assert spec["kind"] == "ib.sigs.k8s.io/port" and spec["cdiVersion"] == "0.5.0"
    assert [d["name"] for d in spec["devices"]] == ["ib-0000-3b-00-1-p1-uid-1", "ib-0000-3b-00-2-p1-uid-1"]
    env = spec["devices"][1]["containerEdits"]["env"]
    assert "IB_DEVICE_1=ib-0000-3b-00-2-p1" in env and "IB_DEVICE_1_PKEY=0x8001" in env


def test_cdi_generate_writes_into_a_dir(demo_hosts, tmp_path):
    out = run("cdi", "generate", "--sysfs-root", demo_hosts["ethernet-baremetal"].sysfs, "--claim-uid", "u2",
              "--dir", str(tmp_path / "cdi"), check=0).stdout.strip()
    assert out == str(tmp_path / "cdi" / "sriovnetwork.openshift.io-vf_u2.json")
    spec = json.load(open(out))
    assert len(spec["devices"]) == 16 and spec["cdiVersion"] == "0.3.0"  # /dev is the real one: no hostPath


@pytest.mark.parametrize("args, message", [
    (["-d", "vf-0000-99-00-0"], "--device: no such device vf-0000-99-00-0"),
    (["--driver", "x.io"], "--driver: unknown driver x.io"),
    (["-d", "vf-0000-3b-00-2", "--driver", "ib.sigs.k8s.io"], "belong(s) to another driver"),
    (["--config", "/nonexistent.yaml"], "--config /nonexistent.yaml: No such file or directory"),
])
def test_cdi_generate_errors(demo_hosts, args, message):
    proc = run("cdi", "generate", "--sysfs-root", demo_hosts["ethernet-baremetal"].sysfs, *args, check=2)
    assert message in proc.stderr


def test_cdi_generate_rejects_bad_config_naming_the_field(demo_hosts, tmp_path):
    cfg = tmp_path / "vf.json"
    cfg.write_text(json.dumps({"apiVersion": "sriovnetwork.openshift.io/v1alpha1", "kind": "VfConfig", "vlan": 5000}))
    proc = run("cdi", "generate", "--sysfs-root", demo_hosts["ethernet-baremetal"].sysfs, "--config", str(cfg),
               check=2)
    assert "VfConfig.vlan: must be in range 0-4094, got 5000" in proc.stderr


def _record(uid="uid-1"):
    return ClaimRecord(ClaimRef("default", "c1", uid), PREPARED,
                       [PreparedDevice("vf", "node1", "vf-0000-3b-00-2", "0000:3b:00.2", ["x/vf=y"], {"mtu": 9000})],
                       specs={"x.json": None}, updated=1.0)


def test_checkpoint_show(tmp_path):
    CheckpointStore(str(tmp_path / "sriovnetwork.openshift.io.checkpoint.json")).save({"uid-1": _record()})
    table = run("checkpoint", "show", "--state-dir", str(tmp_path), check=0).stdout
    assert "default/c1" in table and "vf-0000-3b-00-2" in table and "prepared" in table
    data = json.loads(run("checkpoint", "show", "--state-dir", str(tmp_path), "-o", "json", check=0).stdout)
    assert data["claims"][0]["claim"] == {"namespace": "default", "name": "c1", "uid": "uid-1"}
    assert data["claims"][0]["driver"] == "sriovnetwork.openshift.io" and data["problems"] == []


def test_checkpoint_show_reports_corruption_without_touching_the_file(tmp_path):
    path = tmp_path / "ib.sigs.k8s.io.checkpoint.json"
    CheckpointStore(str(path)).save({"uid-1": _record()})
    doc = json.loads(path.read_text())
    doc["claims"]["uid-1"]["state"] = "preparing"  # edited by hand: the checksum no longer matches
    path.write_text(json.dumps(doc))
    proc = run("checkpoint", "show", "--state-dir", str(tmp_path), check=1)
    assert "checksum mismatch" in proc.stdout
    assert json.loads(path.read_text()) == doc  # show never moves or rewrites it


def test_checkpoint_show_without_checkpoints(tmp_path):
    assert "no checkpoint in" in run("checkpoint", "show", "--state-dir", str(tmp_path), check=2).stderr


def test_serve_argument_errors(demo_hosts, tmp_path):
    base = ["serve", "--node-name", "n1", "--sysfs-root", demo_hosts["ethernet-baremetal"].sysfs]
    assert "unknown driver(s) nope.io" in run(*base, "--drivers", "nope.io", check=2).stderr
    assert "Missing option '--node-name'" in run("serve", check=2).stderr
    assert "--nri-plugin-index: expected two digits like 50, got '5'" in run(*base, "--nri-plugin-index", "5",
                                                                              check=2).stderr
    assert "'bogus' is not one of 'nri', 'cdi', 'none'" in run(*base, "--netdev-attach", "bogus", check=2).stderr
    kubeconfig = tmp_path / "missing.yaml"
    proc = run(*base, "--kubeconfig", str(kubeconfig), "--state-dir", str(tmp_path / "s"),
               "--kubelet-root-dir", str(tmp_path / "k"), check=2)
    assert proc.stderr == f"error: --kubeconfig {kubeconfig}: no such file\n"
    assert not os.path.exists(tmp_path / "k" / "plugins_registry")
