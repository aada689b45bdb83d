"""CDI specs: minimum versions, the runtimes' validation rules, names, atomic writes."""

import json
import os

import pytest

from sriovdra import cdi


def _spec(**edits):
    return {"kind": "sriovnetwork.openshift.io/vf",
            "devices": [{"name": "vf-0000-3b-00-2-uid", "containerEdits": edits or {"env": ["A=1"]}}]}


@pytest.mark.parametrize("spec, version", [
    (_spec(), "0.3.0"),
    (_spec(mounts=[{"hostPath": "/a", "containerPath": "/b", "type": "bind"}]), "0.4.0"),
    (_spec(deviceNodes=[{"path": "/dev/x", "hostPath": "/tmp/dev/x"}]), "0.5.0"),
    ({**_spec(), "devices": [{"name": "0abc", "containerEdits": {"env": ["A=1"]}}]}, "0.5.0"),
    ({**_spec(), "annotations": {"a": "b"}}, "0.6.0"),
    ({**_spec(), "kind": "vendor.io/class.with.dots"}, "0.6.0"),
    (_spec(additionalGids=[5]), "0.7.0"),
    (_spec(netDevices=[{"hostInterfaceName": "eth1", "name": "net1"}]), "1.1.0"),
])
def test_minimum_version(spec, version):
    assert cdi.minimum_version(spec) == version


def test_validate_catches_what_runtimes_reject():
    bad = {"cdiVersion": "0.3.0", "kind": "noslash", "devices": [
        {"name": "-bad", "containerEdits": {"env": ["NOEQUALS"], "deviceNodes": [{"path": "dev/x", "hostPath": "/x"}]}},
        {"name": "empty", "containerEdits": {}}]}
    problems = "\n".join(cdi.validate(bad))
    for expected in ("kind 'noslash' is not <vendor>/<class>", "below the 0.5.0 the content needs",
                     "device name '-bad' is invalid", "env 'NOEQUALS' is not KEY=VALUE", "is not absolute",
                     "device 'empty' has empty containerEdits"):
        assert expected in problems
    assert cdi.validate({"cdiVersion": "9.9.9", **_spec()}) == ["cdiVersion '9.9.9' is unknown"]


def test_spec_file_names_are_one_to_one_and_never_paths():
    uid = "0b4e5f2c-8f1a-4c3e-9d2b-5a6f7e8d9c0b"
    assert cdi.spec_file_name("ib.sigs.k8s.io/port", uid) == f"ib.sigs.k8s.io-port_{uid}.json"
    hostile = ["a/b", "a_b", "a%2Fb", "..", ".", "../../etc/passwd", "a\x00b", ""]
    names = [cdi.spec_file_name("a.io/b", u) for u in hostile]
    assert len(set(names)) == len(hostile)  # a/b and a_b no longer share a file
    assert all("/" not in n and "\x00" not in n for n in names)
    with pytest.raises(cdi.CdiError, match="too long"):
        cdi.spec_file_name("a.io/b", "x" * 300)


def test_write_is_atomic_and_refuses_invalid_specs(tmp_path):
    spec = cdi.Spec("sriovnetwork.openshift.io/vf", [cdi.CdiDevice("vf-1-u", cdi.Edits(env=["A=1"]))])
    data = cdi.write_spec(str(tmp_path), "x.json", spec)
    path = tmp_path / "x.json"
    assert json.load(open(path)) == data and data["cdiVersion"] == "0.3.0"
    assert oct(os.stat(path).st_mode & 0o777) == "0o644"
    assert os.listdir(tmp_path) == ["x.json"]  # no temp files left
    with pytest.raises(cdi.CdiError, match="empty containerEdits"):
        cdi.write_spec(str(tmp_path), "y.json", cdi.Spec("a.io/b", [cdi.CdiDevice("d", cdi.Edits())]))
    assert os.listdir(tmp_path) == ["x.json"]
    assert cdi.remove_spec(str(tmp_path), "x.json") and not cdi.remove_spec(str(tmp_path), "x.json")


def test_netdev_spec_is_its_own_1_1_0_file():
    """--netdev-attach cdi: the netDevices edits live in a separate kind, so a runtime that cannot
    read cdiVersion 1.1.0 drops only that file, never the env/device-node spec."""
    spec = cdi.netdev_spec("sriovnetwork.openshift.io", "uid-1",
                           [("vf-0000-3b-00-2", "ens1f0v0", "net1"), ("vf-0000-3b-00-3", "ens1f0v1", "net2")])
    data = spec.to_json()
    assert data["kind"] == "sriovnetwork.openshift.io/netdev" and data["cdiVersion"] == "1.1.0"
    assert data["devices"][0] == {"name": "vf-0000-3b-00-2-uid-1", "containerEdits": {
        "netDevices": [{"hostInterfaceName": "ens1f0v0", "name": "net1"}]}}
    assert cdi.validate(data) == []
    assert cdi.spec_file_name(cdi.NETDEV_KINDS["sriovnetwork.openshift.io"], "uid-1") \
        != cdi.spec_file_name(cdi.CDI_KINDS["sriovnetwork.openshift.io"], "uid-1")


def test_netdev_names_must_be_unique_within_an_edit_set():
    data = {"cdiVersion": "1.1.0", "kind": "a.io/netdev", "devices": [{"name": "d", "containerEdits": {
        "netDevices": [{"hostInterfaceName": "e1", "name": "net1"}, {"hostInterfaceName": "e2", "name": "net1"}]}}]}
    assert cdi.validate(data) == ["device 'd': netDevices name must be set and unique"]
