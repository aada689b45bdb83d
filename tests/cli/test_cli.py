"""The sriovdra command as a user runs it: a subprocess per call, real exit codes and output."""

import json
import os
import subprocess
import sys

import pytest
import yaml

from sriovdra.cli import _HELP_FILE
from sriovdra.host.discovery import discover
from sriovdra.host.paths import HostPaths

COMMANDS = ["serve", "discover", "provision", "cdi", "checkpoint", "doctor", "webhook"]


def run(*args, env=None, check=None):
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("SRIOVDRA_")}
    full_env.update(env or {})
    proc = subprocess.run([sys.executable, "-m", "sriovdra", *args], capture_output=True, text=True, env=full_env)
    if check is not None:
        assert proc.returncode == check, proc.stderr
    return proc


def test_help_lists_every_subcommand():
    out = run("--help", check=0).stdout
    for name in COMMANDS:
        assert f"\n  {name} " in out


def test_prerendered_help_equals_typers_rendering():
    from sriovdra.cli.app import render_root_help

    with open(_HELP_FILE) as f:
        assert f.read() == render_root_help(), "regenerate with: python -m sriovdra.cli.app > sriovdra/cli/help.txt"


def test_help_without_the_fast_path_is_the_same():
    # `-h --help` is not the fast path's exact argv, so typer renders it.
    assert run("-h", "--help", check=0).stdout == run("--help", check=0).stdout


def test_version():
    assert run("--version", check=0).stdout.startswith("sriovdra ")


@pytest.mark.parametrize("name", ["ethernet-baremetal", "infiniband-baremetal", "infiniband-vm"])
def test_discover_json_is_the_inventory(demo_hosts, name):
    sysfs = demo_hosts[name].sysfs
    data = json.loads(run("discover", "--sysfs-root", sysfs, "-o", "json", check=0).stdout)
    expected = discover(HostPaths.resolve(None, sysfs))
    assert data["schemaVersion"] == 1 and data["sysfsRoot"] == sysfs
    assert data["host"] == expected.host.to_dict()
    assert [f["pciAddress"] for f in data["functions"]] == [f.address for f in expected.functions]
    assert data["devices"] == [d.to_dict() for d in expected.dra_devices()]
    assert data["problems"] == []


def test_discover_yaml_equals_json(demo_hosts):
    sysfs = demo_hosts["infiniband-baremetal"].sysfs
    as_json = json.loads(run("discover", "--sysfs-root", sysfs, "-o", "json", check=0).stdout)
    assert yaml.safe_load(run("discover", "--sysfs-root", sysfs, "-o", "yaml", check=0).stdout) == as_json


def test_discover_table(demo_hosts):
    out = run("discover", "--sysfs-root", demo_hosts["infiniband-vm"].sysfs, check=0).stdout
    assert out.startswith("Host: vm (qemu)")
    assert "DRA devices (2)" in out
    assert "ib-0000-00-08-0-p1  ib.sigs.k8s.io  VF" in out


def test_root_options_before_the_subcommand_and_env(demo_hosts):
    host = demo_hosts["ethernet-baremetal"]
    before = run("--sysfs-root", host.sysfs, "discover", "-o", "json", check=0).stdout
    via_env = run("discover", "-o", "json", env={"SRIOVDRA_SYSFS_ROOT": host.sysfs}, check=0).stdout
    via_host_root = run("--host-root", host.root, "discover", "-o", "json", check=0).stdout
    assert json.loads(before) == json.loads(via_env) == json.loads(via_host_root)
    assert len(json.loads(before)["devices"]) == 16


def test_discover_bad_root_is_a_clear_error(tmp_path):
    proc = run("discover", "--sysfs-root", str(tmp_path), check=2)
    assert proc.stderr == (f"error: {tmp_path}/bus/pci/devices does not exist: "
                           f"is --sysfs-root ({tmp_path}) a sysfs tree?\n")
    assert proc.stdout == ""


def test_discover_reports_what_it_could_not_read(build_host):
    from tests.conftest import eth_pf

    host, _ = build_host({"pfs": [eth_pf()]})
    os.unlink(os.path.join(host.sysfs, "bus/pci/devices/0000:3b:00.2/device"))
    proc = run("discover", "--sysfs-root", host.sysfs, check=0)
    assert "warning: 1 sysfs file(s) could not be read" in proc.stderr
    assert "0000:3b:00.2/device: missing" in proc.stderr
    data = json.loads(run("discover", "--sysfs-root", host.sysfs, "-o", "json", check=0).stdout)
    assert data["problems"] == [{"path": f"{host.sysfs}/bus/pci/devices/0000:3b:00.2/device", "message": "missing"}]


def test_doctor_exit_codes_and_json(demo_hosts, build_host):
    ok = run("doctor", "--host-root", demo_hosts["ethernet-baremetal"].root, "-o", "json", check=0)
    data = json.loads(ok.stdout)
    assert data["failed"] is False and {c["status"] for c in data["checks"]} <= {"PASS", "SKIP"}
    host, _ = build_host({"host": {"kubelet": False}})
    bad = run("doctor", "--host-root", host.root, check=1)
    assert "FAIL      kubelet-dirs" in bad.stdout and "FAIL" in bad.stdout.splitlines()[-1]


def test_doctor_runs_on_this_machine():
    proc = run("doctor", "-o", "json")
    assert proc.returncode in (0, 1), proc.stderr
    data = json.loads(proc.stdout)
    assert data["failed"] == (proc.returncode == 1)


def _imported_modules(*argv):
    code = ("import sys; sys.argv = ['sriovdra', *sys.argv[1:]]\n"
            "from sriovdra.cli import main\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "sys.stderr.write('\\nMODULES ' + ' '.join(sorted(sys.modules)))")
    proc = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True)
    return set(proc.stderr.rsplit("MODULES ", 1)[1].split())


def test_help_and_discover_do_not_import_heavy_modules(demo_hosts):
    heavy = {"kubernetes", "grpc", "pyroute2", "google.protobuf"}
    assert not heavy & _imported_modules("discover", "--sysfs-root", demo_hosts["infiniband-vm"].sysfs)
    help_modules = _imported_modules("--help")
    assert not heavy & help_modules
    assert "typer" not in help_modules and "click" not in help_modules
