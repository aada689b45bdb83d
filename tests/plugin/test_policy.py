"""The device policy end to end: `serve --device-policy` republishes when the file changes (also as a
ConfigMap volume the kubelet updates), keeps the last good policy, keeps prepared devices, refuses
excluded ones; `discover --device-policy` shows what would be published and why not."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from sriovdra.model import IB_DRIVER, SRIOV_DRIVER
from tests.conftest import eth_pf, ib_pf
from tests.support.claims import allocated_claim, ref
from tests.support.waiting import wait
from tests.unit.test_policy import kubelet_atomic_write, policy_yaml

HOST = {"host": {"modules": ["mlx5_core", "mlx5_ib", "ib_uverbs", "rdma_ucm"]},
        "pfs": [eth_pf(vfs={"total": 8, "count": 4, "offset": 2}), ib_pf()]}
VF = ["vf-0000-3b-00-2", "vf-0000-3b-00-3", "vf-0000-3b-00-4", "vf-0000-3b-00-5"]
IB = ["ib-0000-5e-00-0-p1", "ib-0000-5e-00-1-p1", "ib-0000-5e-00-2-p1"]
RELOAD = 15.0  # seconds to wait for a reload: serve polls the file every 2 s (a ceiling, not a measurement)
# no inventory rescan during the test: slices that change come from the policy reload's own republish
NO_RESCAN = ("--rescan-interval", "3600")


def replace(path, text: str) -> None:
    """Write a new policy in one step (rename), so that serve never reads a half-written file."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def published(node, driver: str) -> dict[str, dict]:
    """The devices in the driver's slices: name -> attributes."""
    return {d["name"]: d.get("attributes", {}) for s in node.api.slices(driver) for d in s["spec"]["devices"]}


def _serve_env() -> dict:
    return {k: v for k, v in os.environ.items() if not k.startswith(("SRIOVDRA_", "KUBECONFIG", "NODE_NAME"))}


def test_policy_edits_reach_the_slices_without_a_restart(make_node, tmp_path):
    path = tmp_path / "policy.yaml"
    replace(path, policy_yaml("{match: {numaNodes: [0]}, attributes: {example.com/rack: r1, example.com/tier: 1}}"))
    node = make_node(HOST)
    node.start("--device-policy", str(path), *NO_RESCAN, sockets=2)
    proc = node.proc

    def rack(driver):
        return {name: a.get("example.com/rack") for name, a in published(node, driver).items()}

    # attributes appear (NUMA 0: the Ethernet VFs; the IB functions are on NUMA 1)
    wait(lambda: rack(SRIOV_DRIVER) == dict.fromkeys(VF, {"string": "r1"}), what="the policy's attributes")
    assert published(node, SRIOV_DRIVER)[VF[0]]["example.com/tier"] == {"int": 1}
    assert wait(lambda: rack(IB_DRIVER), what="IB slice") == dict.fromkeys(IB)
    # an include rule: fewer devices, the attributes of the old policy go with it
    replace(path, policy_yaml("{match: {linkTypes: [infiniband], roles: [VF]}, action: include}"))
    wait(lambda: published(node, SRIOV_DRIVER) == {} and sorted(published(node, IB_DRIVER)) == IB[1:],
         timeout=RELOAD, what="only the IB VFs published")
    [health] = node.kubelet.health(node.plugins()[IB_DRIVER], "v1")
    assert sorted(d.device.device_name for d in health.devices) == IB[1:]  # the health stream follows the policy
    before = {d: published(node, d) for d in (SRIOV_DRIVER, IB_DRIVER)}
    # an invalid edit: logged naming the field, the last good policy stays
    replace(path, policy_yaml('{match: {numaNodes: ["0"]}, action: include}'))
    wait(lambda: "rules[0].match.numaNodes[0]: expected an integer NUMA node" in node.log(), timeout=RELOAD,
         what="the error in the log")
    assert "keeping the last good policy (1 rule(s): 0 exclude, 1 include, 0 with attributes)" in node.log()
    assert {d: published(node, d) for d in (SRIOV_DRIVER, IB_DRIVER)} == before
    # the fix is picked up
    replace(path, policy_yaml('{match: {pciAddresses: ["3b:00.2"]}, action: exclude}'))
    wait(lambda: sorted(published(node, SRIOV_DRIVER)) == VF[1:] and sorted(published(node, IB_DRIVER)) == IB,
         timeout=RELOAD, what="the fixed policy")
    # removed: the last good policy stays (a vanished ConfigMap must not publish what was excluded)
    os.unlink(path)
    wait(lambda: "policy.yaml: no such file; keeping the last good policy" in node.log(), timeout=RELOAD,
         what="the removal in the log")
    assert sorted(published(node, SRIOV_DRIVER)) == VF[1:]
    assert node.proc is proc and proc.poll() is None  # never restarted
    assert node.api.store.rejected == []


def test_a_configmap_volume_updated_by_the_kubelet_is_followed(make_node, tmp_path):
    mount = str(tmp_path / "policy-volume")
    kubelet_atomic_write(mount, {"policy.yaml": policy_yaml('{match: {pciAddresses: ["3b:00.2"]}, action: exclude}')},
                         1)
    node = make_node(HOST)
    node.start(*NO_RESCAN, sockets=2, env={"SRIOVDRA_DEVICE_POLICY": os.path.join(mount, "policy.yaml")})
    wait(lambda: sorted(published(node, SRIOV_DRIVER)) == VF[1:], what="the first policy")
    kubelet_atomic_write(mount, {"policy.yaml": policy_yaml("{match: {linkTypes: [ethernet]}, attributes: "
                                                            "{example.com/fast: true}}")}, 2)
    wait(lambda: {n: a.get("example.com/fast") for n, a in published(node, SRIOV_DRIVER).items()}
         == dict.fromkeys(VF, {"bool": True}), timeout=RELOAD, what="the updated ConfigMap's policy")
    assert node.api.store.rejected == []


def test_prepared_devices_stay_published_and_excluded_devices_are_refused(make_node, tmp_path):
    path = tmp_path / "policy.yaml"
    replace(path, policy_yaml())
    node = make_node(HOST)
    node.start("--device-policy", str(path), sockets=2)
    plugin = node.plugins()[SRIOV_DRIVER]
    c1 = node.api.add_claim(allocated_claim("c1", VF[:1]))
    c2 = node.api.add_claim(allocated_claim("c2", VF[1:2]))  # allocated while VF[1] was published
    assert node.kubelet.prepare(plugin, [ref(c1)]).claims[c1["metadata"]["uid"]].error == ""
    replace(path, policy_yaml('{match: {pciAddresses: ["3b:00.2", "3b:00.3"]}, action: exclude}'))
    wait(lambda: sorted(published(node, SRIOV_DRIVER)) == [VF[0], *VF[2:]], timeout=RELOAD,
         what="VF[1] withdrawn, VF[0] kept while prepared")
    kept = f"device {VF[0]} is prepared for claim default/c1: it stays published until unprepared"
    assert kept in node.log()
    # a new prepare of an excluded device fails for that claim, naming the device and the rule
    error = node.kubelet.prepare(plugin, [ref(c2)]).claims[c2["metadata"]["uid"]].error
    assert error.startswith(f"claim default/c2 request 'vf' device '{VF[1]}': refused, the device policy does not "
                            f"publish this device (excluded by rules[0] (exclude pciAddresses=0000:3b:00.2,"
                            f"0000:3b:00.3))")
    assert not any(c2["metadata"]["uid"] in f for f in os.listdir(node.cdi_dir))
    # the prepared claim keeps working: a repeated prepare (kubelet restart) answers from the checkpoint
    assert node.kubelet.prepare(plugin, [ref(c1)]).claims[c1["metadata"]["uid"]].error == ""
    assert node.kubelet.unprepare(plugin, [ref(c1)]).claims[c1["metadata"]["uid"]].error == ""
    wait(lambda: sorted(published(node, SRIOV_DRIVER)) == VF[2:], what="VF[0] withdrawn once unprepared")
    assert node.log().count(kept) == 1  # said once, not at every rescan
    assert node.api.store.rejected == []


@pytest.mark.parametrize("content, message", [
    (None, "no such file"),
    ("kind: DevicePolicy\n", "apiVersion: expected sriovnetwork.openshift.io/v1alpha1, got None"),
    (policy_yaml("{attributes: {vendor: x}}"), "rules[0].attributes[\"vendor\"]: 'vendor' is a built-in attribute"),
])
def test_an_unusable_policy_at_start_exits_2(make_node, tmp_path, content, message):
    path = tmp_path / "policy.yaml"
    if content is not None:
        replace(path, content)
    node = make_node(HOST)
    proc = subprocess.run(node.serve_args("--device-policy", str(path)), capture_output=True, text=True,
                          env=_serve_env(), timeout=120)  # a hang guard, not a speed limit
    assert proc.returncode == 2, proc.stderr
    assert f"error: device policy {path}: {message}" in proc.stderr
    assert node.kubelet.sockets() == []  # nothing was registered


# --- discover --device-policy ---------------------------------------------------------------------

POLICY = policy_yaml('{match: {pciAddresses: ["3b:00.5"]}, action: exclude}',
                     "{match: {linkTypes: [ethernet]}, action: include}",
                     "{match: {numaNodes: [0]}, attributes: {example.com/rack: r12, example.com/fast: true}}")


def discover(*args, env=None, check=0):
    proc = subprocess.run([sys.executable, "-m", "sriovdra", "discover", *args], capture_output=True, text=True,
                          env={**_serve_env(), **(env or {})})
    assert proc.returncode == check, proc.stderr
    return proc


def test_discover_shows_what_the_policy_publishes_and_why_not(demo_hosts, tmp_path):
    sysfs = demo_hosts["mixed"].sysfs
    path = tmp_path / "policy.yaml"
    replace(path, POLICY)
    data = json.loads(discover("--sysfs-root", sysfs, "--device-policy", str(path), "-o", "json").stdout)
    assert data["devicePolicy"] == str(path)
    policy = {d["name"]: d["policy"] for d in data["devices"]}
    assert policy["vf-0000-3b-00-2"] == {"published": True, "reason": None, "rule": None, "attributes": {
        "example.com/rack": {"string": "r12"}, "example.com/fast": {"bool": True}}}
    assert policy["vf-0000-3b-00-5"] == {"published": False, "rule": 0, "attributes": {},
                                         "reason": "excluded by rules[0] (exclude pciAddresses=0000:3b:00.5)"}
    ib = policy["ib-0000-86-00-0-p1"]
    assert not ib["published"] and ib["rule"] is None and ib["reason"].startswith("not included")
    vf = next(d for d in data["devices"] if d["name"] == "vf-0000-3b-00-2")
    assert vf["attributes"]["example.com/rack"] == {"string": "r12"} and vf["attributes"]["vfID"] == {"int": 0}
    # the same through the env serve reads; the table has the columns and the reasons
    via_env = discover("--sysfs-root", sysfs, "-o", "json", env={"SRIOVDRA_DEVICE_POLICY": str(path)}).stdout
    assert json.loads(via_env) == data
    table = discover("--sysfs-root", sysfs, "--device-policy", str(path)).stdout
    assert "DRA devices (3 of 7 published)" in table and "PUBLISHED" in table and "POLICY ATTRIBUTES" in table
    row = next(line for line in table.splitlines() if line.startswith("vf-0000-3b-00-2 "))
    assert row.split()[-2:] == ["yes", "example.com/rack=r12,example.com/fast=true"]
    row = next(line for line in table.splitlines() if line.startswith("vf-0000-3b-00-5 "))
    assert row.split()[-3:] == ["no:", "rules[0]", "-"]
    assert "Not published:\n  excluded by rules[0] (exclude pciAddresses=0000:3b:00.5)\n  not included:" in table
    # without a policy: the output is what it always was
    plain = json.loads(discover("--sysfs-root", sysfs, "-o", "json").stdout)
    assert "devicePolicy" not in plain and all("policy" not in d for d in plain["devices"])


def test_discover_with_an_unusable_policy_exits_2(demo_hosts, tmp_path):
    path = tmp_path / "policy.yaml"
    replace(path, policy_yaml("{match: {numaNodes: [0]}, attributes: {example.com/rack: [r1]}}"))
    proc = discover("--sysfs-root", demo_hosts["mixed"].sysfs, "--device-policy", str(path), check=2)
    assert f'error: device policy {path}: rules[0].attributes["example.com/rack"]: expected a string' in proc.stderr
    proc = discover("--sysfs-root", demo_hosts["mixed"].sysfs, "--device-policy", str(tmp_path / "no"), check=2)
    assert "no such file" in proc.stderr
