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


# --- InfiniBand: IbConfig in the env ------------------------------------------------------------


def _ib_inventory(build_host, pkeys=(0xFFFF, 0x8001)):
    from sriovdra.host.discovery import discover
    from tests.conftest import ib_pf

    _, paths = build_host({"pfs": [ib_pf(ports=[{"pkeys": list(pkeys)}], vfs={"total": 4, "count": 2, "offset": 1})]})
    return discover(paths), paths


def _ib_spec(inv, paths, configs):
    from sriovdra.model import IB_DRIVER
    from sriovdra.host.discovery import pkey_reader
    from sriovdra.partition import check_device

    devices = [d for d in inv.dra_devices() if d.driver == IB_DRIVER][:len(configs)]
    read = pkey_reader(paths, lambda problem: None)
    items = [cdi.SpecItem(d, c, False, i, check_device(inv, d, c.pkey, read))
             for i, (d, c) in enumerate(zip(devices, configs, strict=True))]
    return cdi.claim_spec(IB_DRIVER, "uid-9", items, inv, paths.dev_file).to_json()


def test_ib_env_keeps_the_seed_names_and_adds_the_pkey_index(build_host):
    from sriovdra.config import IbConfig

    inv, paths = _ib_inventory(build_host)
    data = _ib_spec(inv, paths, [IbConfig(pkey=0x8001, traffic_class=128, mtu=4096)])
    env = data["devices"][0]["containerEdits"]["env"]
    assert {"IB_DEVICE_0_PKEY=0x8001", "IB_DEVICE_0_TRAFFIC_CLASS=128", "IB_DEVICE_0_MTU=4096",
            "IB_DEVICE_0_PKEY_INDEX=1"} <= set(env)
    # the libraries' variables, once for the claim: NCCL takes the index, UCX the partition number
    assert data["containerEdits"]["env"] == ["NCCL_IB_PKEY=1", "UCX_IB_PKEY=0x0001", "NCCL_IB_TC=128",
                                             "UCX_IB_TRAFFIC_CLASS=128", "UCX_IB_PATH_MTU=4096"]
    assert cdi.validate(data) == []


def test_ib_env_without_the_partition_has_no_index(build_host):
    from sriovdra.config import IbConfig

    inv, paths = _ib_inventory(build_host, pkeys=(0xFFFF,))
    data = _ib_spec(inv, paths, [IbConfig(pkey=0x8001)])
    env = data["devices"][0]["containerEdits"]["env"]
    assert "IB_DEVICE_0_PKEY=0x8001" in env and not any("PKEY_INDEX" in e for e in env)
    assert data["containerEdits"]["env"] == ["UCX_IB_PKEY=0x0001"]  # UCX looks the partition up itself


@pytest.mark.parametrize("configs, expected", [
    # every IB device agrees: set
    ([dict(pkey=0x8001, traffic_class=3), dict(pkey=0x8001, traffic_class=3)],
     ["NCCL_IB_PKEY=1", "UCX_IB_PKEY=0x0001", "NCCL_IB_TC=3", "UCX_IB_TRAFFIC_CLASS=3"]),
    # one device without a pkey stays on the default partition: no process-wide pkey
    ([dict(pkey=0x8001, traffic_class=3), dict(traffic_class=3)], ["NCCL_IB_TC=3", "UCX_IB_TRAFFIC_CLASS=3"]),
    ([dict(mtu=2048), dict(mtu=4096)], []),
    ([dict(mtu=256)], []),  # UCX_IB_PATH_MTU has no 256
    ([dict()], []),
])
def test_library_env_only_when_every_ib_device_agrees(build_host, configs, expected):
    from sriovdra.config import IbConfig

    inv, paths = _ib_inventory(build_host)
    data = _ib_spec(inv, paths, [IbConfig(**c) for c in configs])
    assert data.get("containerEdits", {}).get("env", []) == expected


def test_spec_level_env_is_validated():
    bad = {"cdiVersion": "0.3.0", "kind": "a.io/b", "containerEdits": {"env": ["NOVALUE"]},
           "devices": [{"name": "d", "containerEdits": {"env": ["A=1"]}}]}
    assert cdi.validate(bad) == ["spec containerEdits: env 'NOVALUE' is not KEY=VALUE"]


def test_nccl_pkey_index_needs_the_same_index_on_every_port(build_host):
    from sriovdra.config import IbConfig
    from sriovdra.partition import resolve

    inv, _ = _ib_inventory(build_host)
    a, b = inv.dra_devices()[:2]
    cfg = IbConfig(pkey=0x8001)
    items = [cdi.SpecItem(a, cfg, partition=resolve(0x8001, {0: 0xFFFF, 1: 0x8001}, "mlx5_0/1")),
             cdi.SpecItem(b, cfg, index=1, partition=resolve(0x8001, {0: 0xFFFF, 4: 0x8001}, "mlx5_1/1"))]
    assert cdi.library_env(items) == ["UCX_IB_PKEY=0x0001"]  # one NCCL_IB_PKEY cannot be right for both
