"""Device policy: decoding (every field, every error path), include/exclude, attributes, reserved
names, API limits, what Driver.published makes of it, and the policy file's reload rules."""

from __future__ import annotations

import logging
import os
import textwrap

import pytest

from sriovdra import model
from sriovdra.model import BUILTIN_ATTRIBUTES, IB_DRIVER, MAX_ATTRIBUTES, SRIOV_DRIVER
from sriovdra.policy import (
    API_VERSION,
    NO_POLICY,
    DevicePolicy,
    PolicyError,
    load_policy,
    parse_policy,
)
from sriovdra.policyfile import PolicyFile, PolicyFileError, read_policy
from tests.conftest import DEMO_HOSTS

HEAD = {"apiVersion": API_VERSION, "kind": "DevicePolicy"}


def policy(*rules: dict) -> DevicePolicy:
    return parse_policy({**HEAD, "rules": list(rules)})


def published(pol: DevicePolicy, inv, driver=None) -> list[str]:
    return sorted(d.device.name for d in pol.decide(inv, driver) if d.published)


@pytest.fixture(scope="module")
def mixed(demo_inventories):
    """ens1f0np0 (3b:00.0, NUMA 0) with Ethernet VFs 3b:00.2-5; ibp134s0 (86:00.0, NUMA 1) with IB VFs."""
    return demo_inventories["mixed"]


VFS = ["vf-0000-3b-00-2", "vf-0000-3b-00-3", "vf-0000-3b-00-4", "vf-0000-3b-00-5"]
IB = ["ib-0000-86-00-0-p1", "ib-0000-86-00-1-p1", "ib-0000-86-00-2-p1"]


# --- the built-in attribute names -----------------------------------------------------------


def test_builtin_attributes_are_exactly_what_the_drivers_publish(demo_inventories):
    """Complete (every name a demo device carries is listed) and tight (every listed name is
    published by some demo device: a stale entry would refuse a name for nothing)."""
    seen: dict[str, set[str]] = {SRIOV_DRIVER: set(), IB_DRIVER: set()}
    for name in DEMO_HOSTS:
        for dev in demo_inventories[name].dra_devices():
            missing = set(dev.attributes) - BUILTIN_ATTRIBUTES[dev.driver]
            assert not missing, f"{name} {dev.name}: {sorted(missing)} not in model.BUILTIN_ATTRIBUTES"
            seen[dev.driver] |= set(dev.attributes)
    assert {d: frozenset(names) for d, names in seen.items()} == BUILTIN_ATTRIBUTES


# --- include / exclude ----------------------------------------------------------------------


def test_no_policy_publishes_every_device_unchanged(mixed):
    for pol in (NO_POLICY, parse_policy(HEAD), policy()):
        decisions = pol.decide(mixed)
        assert [d.device for d in decisions] == mixed.dra_devices()
        assert all(d.published and d.reason is None and d.attributes == {} for d in decisions)


def test_exclude_removes_matching_devices_and_names_the_rule(mixed):
    pol = policy({"match": {"pfNames": ["ens1f0np0"], "pciAddresses": ["3b:00.2", "3b:00.3"]}, "action": "exclude"})
    assert published(pol, mixed) == IB + VFS[2:]
    gone = {d.device.name: d for d in pol.decide(mixed) if not d.published}
    assert set(gone) == set(VFS[:2])
    assert gone[VFS[0]].rule == 0
    assert gone[VFS[0]].reason == ("excluded by rules[0] (exclude pfNames=ens1f0np0 "
                                   "pciAddresses=0000:3b:00.2,0000:3b:00.3)")


def test_include_makes_publishing_opt_in(mixed):
    pol = policy({"match": {"linkTypes": ["infiniband"], "roles": ["VF"]}, "action": "include"},
                 {"match": {"pciAddresses": ["0000:3b:00.4"]}, "action": "include"})
    assert pol.opt_in
    assert published(pol, mixed) == IB[1:] + [VFS[2]]
    left_out = next(d for d in pol.decide(mixed) if d.device.name == IB[0])
    assert left_out.rule is None and "no include rule (rules[0], rules[1]) matches it" in left_out.reason


@pytest.mark.parametrize("order", [("include", "exclude"), ("exclude", "include")])
def test_exclude_wins_over_include_in_any_order(mixed, order):
    rules = {"include": {"match": {"vendors": ["15b3"]}, "action": "include"},
             "exclude": {"match": {"numaNodes": [1]}, "action": "exclude"}}
    pol = policy(*(rules[o] for o in order))
    assert published(pol, mixed) == VFS


def test_the_drivers_field_selects_by_publishing_driver(mixed):
    pol = policy({"match": {"drivers": [IB_DRIVER]}, "action": "exclude"})
    assert published(pol, mixed) == VFS
    assert published(pol, mixed, driver=IB_DRIVER) == []
    assert [d.device.driver for d in pol.decide(mixed, SRIOV_DRIVER)] == [SRIOV_DRIVER] * 4


def test_an_empty_match_is_every_device(mixed):
    assert published(policy({"action": "exclude"}), mixed) == []
    assert published(policy({"match": {}, "action": "include"}), mixed) == sorted(IB + VFS)


# --- attributes -----------------------------------------------------------------------------


def test_attributes_of_every_matching_rule_later_rules_win(mixed):
    pol = policy({"match": {"numaNodes": [0]}, "attributes": {"example.com/rack": "r12", "example.com/tier": 1,
                                                              "example.com/fast": True}},
                 {"match": {"pciAddresses": ["3b:00.3"]}, "attributes": {"example.com/tier": 2}},
                 {"match": {"linkTypes": ["infiniband"]}, "action": "include", "attributes": {"example.com/ib": True}},
                 {"match": {"linkTypes": ["ethernet"]}, "action": "include"})
    by_name = {d.device.name: d for d in pol.decide(mixed)}
    assert by_name[VFS[0]].attributes == {"example.com/rack": "r12", "example.com/tier": 1, "example.com/fast": True}
    assert by_name[VFS[1]].attributes == {"example.com/rack": "r12", "example.com/tier": 2, "example.com/fast": True}
    assert by_name[IB[0]].attributes == {"example.com/ib": True}
    vf = by_name[VFS[1]].device
    builtin = {d.name: d for d in mixed.dra_devices()}[VFS[1]]
    assert vf.attributes == {**builtin.attributes, "example.com/rack": "r12", "example.com/tier": 2,
                             "example.com/fast": True}
    assert vf.slice_attributes()["example.com/tier"] == {"int": 2}
    assert vf.slice_attributes()["example.com/fast"] == {"bool": True}
    assert vf.slice_attributes()["example.com/rack"] == {"string": "r12"}
    assert model.limit_problems(vf) == []
    assert "example.com/rack" not in builtin.attributes  # the inventory itself is not changed


def test_the_documented_example_decodes():
    pol = load_policy(textwrap.dedent("""\
        apiVersion: sriovnetwork.openshift.io/v1alpha1
        kind: DevicePolicy
        rules:
          - match: {pfNames: [eno1]}
            action: exclude
          - match: {vendors: ["15b3"], linkTypes: [infiniband]}
            action: include
          - match: {numaNodes: [0]}
            attributes:
              example.com/rack: r12
              example.com/tier: 1
              example.com/fast: true
        """))
    assert [(r.index, r.action) for r in pol.rules] == [(0, "exclude"), (1, "include"), (2, None)]
    assert pol.rules[1].match.vendors == ("15b3",) and pol.rules[1].match.link_types == ("infiniband",)
    assert dict(pol.rules[2].attributes) == {"example.com/rack": "r12", "example.com/tier": 1,
                                             "example.com/fast": True}
    assert pol.summary() == "3 rule(s): 1 exclude, 1 include, 1 with attributes"


@pytest.mark.parametrize("name", ["vendor", "vfID", "portState", "type", "resource.kubernetes.io/pciBusID",
                                  "dra.net/numaNode", "k8s.cni.cncf.io/deviceID",
                                  "sriovnetwork.openshift.io/PFName", "ib.sigs.k8s.io/nodeGUID"])
def test_builtin_attributes_cannot_be_set(name):
    with pytest.raises(PolicyError) as err:
        policy({"action": "include"}, {"match": {"numaNodes": [0]}, "attributes": {"example.com/ok": 1, name: "x"}})
    assert str(err.value).startswith(f'rules[1].attributes["{name}"]: {name!r} is a built-in attribute')


@pytest.mark.parametrize("name, message", [
    ("rack", 'needs a domain of your own, e.g. example.com/rack'),
    ("sriovnetwork.openshift.io/rack", "the domain sriovnetwork.openshift.io holds the driver's built-in"),
    ("ib.sigs.k8s.io/rack", "the domain ib.sigs.k8s.io holds the driver's built-in"),
    ("resource.kubernetes.io/rack", "the domain resource.kubernetes.io is reserved for Kubernetes' standard"),
    ("Example.com/rack", "domain must be a DNS subdomain"),
    ("example.com/1rack", "name must be a C identifier"),
    ("example.com/" + "r" * 33, "name must be a C identifier of at most 32 characters"),
    ("a" * 64 + ".com/rack", "domain must be a DNS subdomain of at most 63 characters"),
])
def test_attribute_names_follow_the_api_rules(name, message):
    with pytest.raises(PolicyError) as err:
        policy({"attributes": {name: "x"}})
    assert str(err.value).startswith(f'rules[0].attributes["{name}"]: ') and message in str(err.value)


@pytest.mark.parametrize("value, message", [
    ("x" * 65, "the value is 65 bytes long, the API allows 64"),
    ("€" * 22, "the value is 66 bytes long"),  # bytes, not characters
    (2**63, "does not fit a 64-bit integer"),
    (-(2**63) - 1, "does not fit a 64-bit integer"),
    (1.5, "expected a string, an integer or a boolean, got a number 1.5"),
    (None, "got nothing None"),
    (["a"], "got a list"),
    ({"version": "1.2.3"}, "version attributes are not supported; publish the version as a string"),
    ({"string": "x"}, "got a mapping"),
])
def test_attribute_values_follow_the_api_rules(value, message):
    with pytest.raises(PolicyError) as err:
        policy({"attributes": {"example.com/x": value}})
    assert str(err.value).startswith('rules[0].attributes["example.com/x"]: ') and message in str(err.value)


@pytest.mark.parametrize("value", ["x" * 64, "€" * 21, "", 2**63 - 1, -(2**63), 0, False])
def test_attribute_values_at_the_limits_are_accepted(value):
    assert dict(policy({"attributes": {"example.com/x": value}}).rules[0].attributes) == {"example.com/x": value}


def test_the_32_attribute_limit_is_checked_per_device_when_applied(mixed):
    builtin = {d.name: len(d.attributes) for d in mixed.dra_devices()}
    vf_room = MAX_ATTRIBUTES - builtin[VFS[0]]  # VFs carry fewer built-in attributes than IB VFs
    fits = policy({"attributes": {f"example.com/a{i}": i for i in range(vf_room)}})
    fits_vfs = policy({"match": {"linkTypes": ["ethernet"]}, "attributes": {f"example.com/a{i}": i
                                                                           for i in range(vf_room)}})
    fits_vfs.check(mixed)  # exactly 32 on every VF
    assert all(len(d.device.attributes) == MAX_ATTRIBUTES for d in fits_vfs.decide(mixed, SRIOV_DRIVER))
    with pytest.raises(PolicyError) as err:
        fits.check(mixed)  # the same attributes on IB ports (more built-ins) are too many
    assert str(err.value) == (f"rules[0].attributes: device {IB[0]} ({IB_DRIVER}) would carry "
                              f"{builtin[IB[0]] + vf_room} attributes ({builtin[IB[0]]} built-in), the API allows 32 "
                              f"(and 2 more device(s))")
    # the rule that crossed the line is named, and applying degrades only the devices concerned
    split = policy({"attributes": {"example.com/a": 1}},
                   {"match": {"linkTypes": ["infiniband"]}, "attributes": {f"example.com/b{i}": i
                                                                           for i in range(vf_room)}})
    decisions = {d.device.name: d for d in split.decide(mixed)}
    over = decisions[IB[1]]
    assert over.published and over.problem.startswith(f"rules[1].attributes: device {IB[1]}")
    assert over.device.attributes == {d.name: d for d in mixed.dra_devices()}[IB[1]].attributes
    assert decisions[VFS[0]].problem is None and decisions[VFS[0]].attributes == {"example.com/a": 1}


# --- decoding errors ------------------------------------------------------------------------


@pytest.mark.parametrize("doc, message", [
    (None, "expected a DevicePolicy document (a mapping with apiVersion, kind, rules), got nothing"),
    (["rules"], "expected a DevicePolicy document"),
    ({**HEAD, "spec": {}}, "spec: unknown field (known: apiVersion, kind, rules)"),
    ({"kind": "DevicePolicy"}, f"apiVersion: expected {API_VERSION}, got None"),
    ({**HEAD, "apiVersion": "v1"}, "apiVersion: expected"),
    ({**HEAD, "kind": "SriovResourcePolicy"}, "kind: expected DevicePolicy, got 'SriovResourcePolicy'"),
    ({**HEAD, "rules": {"match": {}}}, "rules: expected a list of rules, got a mapping"),
    ({**HEAD, "rules": ["exclude"]}, "rules[0]: expected a mapping with match, action, attributes, got a string"),
    ({**HEAD, "rules": [{"action": "include"}, {"matches": {}, "action": "include"}]},
     "rules[1].matches: unknown field (known: match, action, attributes)"),
    ({**HEAD, "rules": [{"match": {"vendors": ["nvidia"]}, "action": "include"}]},
     "rules[0].match.vendors[0]: expected a 4-digit hex PCI ID"),
    ({**HEAD, "rules": [{"match": {"pfName": ["eno1"]}, "action": "include"}]},
     "rules[0].match: unknown field(s) pfName"),
    ({**HEAD, "rules": [{"match": ["eno1"], "action": "include"}]}, "rules[0].match: expected a mapping"),
    ({**HEAD, "rules": [{"action": "drop"}]}, "rules[0].action: expected include or exclude, got 'drop'"),
    ({**HEAD, "rules": [{"action": "exclude", "attributes": {"example.com/x": 1}}]},
     "rules[0]: an exclude rule's attributes are never published"),
    ({**HEAD, "rules": [{"match": {"numaNodes": [0]}}]}, "rules[0]: the rule does nothing"),
    ({**HEAD, "rules": [{"match": {}, "attributes": {}}]}, "rules[0]: the rule does nothing"),
    ({**HEAD, "rules": [{"attributes": ["example.com/x"]}]}, "rules[0].attributes: expected a mapping"),
    ({**HEAD, "rules": [{"attributes": {1: "x"}}]}, "rules[0].attributes: attribute names are strings, got an integer"),
])
def test_malformed_policies_name_the_field(doc, message):
    with pytest.raises(PolicyError) as err:
        parse_policy(doc)
    assert str(err.value).startswith(message)


def test_yaml_errors_say_so():
    with pytest.raises(PolicyError, match="not valid YAML"):
        load_policy("rules: [\n")
    with pytest.raises(PolicyError, match="expected a DevicePolicy document"):
        load_policy("")


# --- Driver.published -------------------------------------------------------------------------


def _driver(tmp_path, inv, pol):
    from sriovdra.driver.core import Driver, DriverSettings
    from sriovdra.host.paths import HostPaths

    settings = DriverSettings(SRIOV_DRIVER, "node1", str(tmp_path / "cdi"), str(tmp_path / "cp.json"), HostPaths())
    return Driver(settings, lambda: inv, claims=None, policy=lambda: pol)


def _prepared(driver, device, attributes):
    from sriovdra.checkpoint import PREPARED, ClaimRecord, PreparedDevice
    from sriovdra.claim import ClaimRef

    dev = PreparedDevice("vf", "node1", device, "0000:3b:00.2", ["k/vf=x"], {}, attributes=attributes)
    driver.records["u1"] = ClaimRecord(ClaimRef("default", "c1", "u1"), PREPARED, [dev])


def test_published_applies_the_policy_and_keeps_prepared_devices_it_excludes(tmp_path, mixed, caplog):
    pol = policy({"match": {"pciAddresses": ["3b:00.2", "3b:00.3"]}, "action": "exclude"},
                 {"attributes": {"example.com/rack": "r1"}})
    driver = _driver(tmp_path, mixed, pol)
    assert [d.name for d in driver.published(mixed)] == VFS[2:]
    assert all(d.attributes["example.com/rack"] == "r1" for d in driver.published(mixed))
    # a claim holds vf-0000-3b-00-2: it stays published, as it was at prepare time, until unprepared
    snapshot = {"vendor": "15b3", "example.com/rack": "r0"}
    _prepared(driver, VFS[0], snapshot)
    with caplog.at_level(logging.INFO, logger="sriovdra.driver.core"):
        for _ in range(3):
            got = {d.name: d for d in driver.published(mixed)}
            assert sorted(got) == [VFS[0], *VFS[2:]] and got[VFS[0]].attributes == snapshot
    notes = [r.getMessage() for r in caplog.records if "stays published" in r.getMessage()]
    assert notes == [f"device {VFS[0]} is prepared for claim default/c1: it stays published until unprepared, "
                     f"although the device policy now says: excluded by rules[0] (exclude pciAddresses="
                     f"0000:3b:00.2,0000:3b:00.3)"]  # once, not at every rescan
    # a record without an attribute snapshot (older checkpoint) is published from the inventory
    _prepared(driver, VFS[0], {})
    assert VFS[0] in {d.name for d in driver.published(mixed)}
    driver.records.clear()  # unprepared: it goes
    assert [d.name for d in driver.published(mixed)] == VFS[2:]


def test_published_degrades_devices_over_the_limit_and_says_so_once(tmp_path, mixed, caplog):
    many = policy({"attributes": {f"example.com/a{i}": i for i in range(MAX_ATTRIBUTES)}})
    driver = _driver(tmp_path, mixed, many)
    with caplog.at_level(logging.ERROR, logger="sriovdra.driver.core"):
        devices = driver.published(mixed)
        driver.published(mixed)
    assert [d.attributes for d in devices] == [d.attributes for d in mixed.dra_devices() if d.driver == SRIOV_DRIVER]
    errors = [r.getMessage() for r in caplog.records]
    assert len(errors) == 4 and all("published without the device policy's attributes" in e for e in errors)


# --- the policy file --------------------------------------------------------------------------


def kubelet_atomic_write(directory: str, files: dict[str, str], generation: int) -> None:
    """Update a ConfigMap volume as the kubelet's AtomicWriter does: the files go into a new
    timestamped directory, a `..data_tmp` symlink to it is renamed over `..data` (atomic), the
    user-visible names are symlinks `<name> -> ..data/<name>`, and the old directory is removed."""
    os.makedirs(directory, exist_ok=True)
    data = os.path.join(directory, "..data")
    old = os.readlink(data) if os.path.islink(data) else None
    ts = f"..2025_01_01_00_00_00.{generation:09d}"
    os.mkdir(os.path.join(directory, ts))
    for name, content in files.items():
        with open(os.path.join(directory, ts, name), "w") as f:
            f.write(content)
    os.symlink(ts, os.path.join(directory, "..data_tmp"))
    os.rename(os.path.join(directory, "..data_tmp"), data)
    for name in files:
        if not os.path.islink(os.path.join(directory, name)):
            os.symlink(os.path.join("..data", name), os.path.join(directory, name))
    if old:
        for name in os.listdir(os.path.join(directory, old)):
            os.unlink(os.path.join(directory, old, name))
        os.rmdir(os.path.join(directory, old))


def policy_yaml(*rules: str) -> str:
    """A policy file with these rules (YAML flow mappings)."""
    body = "".join(f"\n- {r}" for r in rules) or " []"
    return f"apiVersion: {API_VERSION}\nkind: DevicePolicy\nrules:{body}\n"


EXCLUDE_VF2 = '{match: {pciAddresses: ["3b:00.2"]}, action: exclude}'
INCLUDE_IB = "{match: {linkTypes: [infiniband]}, action: include}"


def write(path, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def test_policy_file_reload_rules(tmp_path, caplog):
    path = tmp_path / "policy.yaml"
    write(path, policy_yaml(EXCLUDE_VF2))
    changes = []
    pf = PolicyFile(str(path), on_change=lambda: changes.append(pf.current))
    first = pf.current
    assert first.rules[0].action == "exclude" and not pf.poll() and changes == []
    # same meaning, other bytes: nothing to republish
    write(path, policy_yaml(EXCLUDE_VF2) + "# a comment\n")
    assert not pf.poll() and changes == []
    # a valid change is adopted and announced
    write(path, policy_yaml(INCLUDE_IB))
    assert pf.poll() and changes == [pf.current] and pf.current.opt_in
    good = pf.current
    # an invalid edit: the last good policy stays, the error names the field, once
    write(path, policy_yaml('{match: {numaNodes: ["0"]}, action: include}'))
    with caplog.at_level(logging.ERROR, logger="sriovdra.policyfile"):
        assert not pf.poll() and not pf.poll()
    assert pf.current is good and len(changes) == 1
    [error] = [r.getMessage() for r in caplog.records]
    assert error.startswith(f"device policy {path}: rules[0].match.numaNodes[0]: expected an integer NUMA node")
    assert "keeping the last good policy (1 rule(s): 0 exclude, 1 include, 0 with attributes)" in error
    # the fix is picked up
    write(path, policy_yaml())
    assert pf.poll() and pf.current == NO_POLICY
    # removed: kept, said once; back: picked up
    caplog.clear()
    os.unlink(path)
    with caplog.at_level(logging.ERROR, logger="sriovdra.policyfile"):
        assert not pf.poll() and not pf.poll()
    assert [r.getMessage() for r in caplog.records] == [
        f"device policy {path}: no such file; keeping the last good policy (0 rule(s): 0 exclude, 0 include, "
        f"0 with attributes)"]
    assert pf.current == NO_POLICY
    write(path, policy_yaml(EXCLUDE_VF2))
    assert pf.poll() and pf.current == first


def test_policy_file_check_failures_keep_the_last_good_policy(tmp_path, mixed):
    path = tmp_path / "policy.yaml"
    write(path, policy_yaml())
    pf = PolicyFile(str(path), check=lambda p: p.check(mixed))
    too_many = ", ".join(f"example.com/a{i}: {i}" for i in range(MAX_ATTRIBUTES))
    write(path, policy_yaml("{attributes: {" + too_many + "}}"))
    assert not pf.poll() and pf.current == NO_POLICY
    with pytest.raises(PolicyFileError, match=r"rules\[0\].attributes: device .* would carry"):
        read_policy(str(path), check=lambda p: p.check(mixed))


def test_policy_file_unusable_at_start(tmp_path):
    with pytest.raises(PolicyFileError, match="no such file"):
        PolicyFile(str(tmp_path / "none.yaml"))
    write(tmp_path / "bad.yaml", "apiVersion: v1\n")
    with pytest.raises(PolicyFileError) as err:
        PolicyFile(str(tmp_path / "bad.yaml"))
    assert str(err.value).startswith(f"device policy {tmp_path / 'bad.yaml'}: apiVersion: expected")
    with pytest.raises(PolicyFileError, match="cannot read it"):
        PolicyFile(str(tmp_path))  # a directory
    write(tmp_path / "big.yaml", "#" * (1 << 20) + "\n")
    with pytest.raises(PolicyFileError, match="larger than 1048576 bytes"):
        PolicyFile(str(tmp_path / "big.yaml"))


def test_policy_file_follows_the_kubelet_atomic_writer(tmp_path):
    mount = str(tmp_path / "mount")
    kubelet_atomic_write(mount, {"policy.yaml": policy_yaml(EXCLUDE_VF2)}, 1)
    pf = PolicyFile(os.path.join(mount, "policy.yaml"))
    assert pf.current.rules[0].action == "exclude"
    kubelet_atomic_write(mount, {"policy.yaml": policy_yaml(INCLUDE_IB)}, 2)
    assert sorted(os.listdir(mount)) == ["..2025_01_01_00_00_00.000000002", "..data", "policy.yaml"]
    assert pf.poll() and pf.current.opt_in
