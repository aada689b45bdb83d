"""Selectors over a discovered fake host: every field, AND across fields, OR inside one."""

from __future__ import annotations

import pytest

from sriovdra.host.discovery import discover
from sriovdra.selector import Facts, SelectorError, normalize_pci, parse_selector


@pytest.fixture(scope="module")
def inv(tmp_path_factory):
    from sriovdra import fakehost
    from sriovdra.host.paths import HostPaths

    host = fakehost.build("demo/hosts/infiniband-baremetal.yaml", str(tmp_path_factory.mktemp("h") / "h"))
    return discover(HostPaths.resolve(host.root, None, None))


def selected(inv, obj, driver=None):
    sel = parse_selector(obj, "match")
    return sorted(fn.address for fn in inv.functions if sel.matches(Facts.of(inv, fn), driver))


def test_empty_selector_matches_everything(inv):
    assert parse_selector(None, "m").empty and len(selected(inv, {})) == len(inv.functions)


def test_fields_and_together_values_or_together(inv):
    assert selected(inv, {"pfNames": ["ibp59s0"], "roles": ["VF"]}) == [
        "0000:3b:00.1", "0000:3b:00.2", "0000:3b:00.3", "0000:3b:00.4"]
    assert selected(inv, {"pfNames": ["ibp59s0", "ibp134s0"], "roles": "PF"}) == ["0000:3b:00.0", "0000:86:00.0"]
    assert selected(inv, {"numaNodes": [1], "linkTypes": ["ib"], "deviceIDs": ["0x101E"]}) == [
        "0000:86:00.1", "0000:86:00.2", "0000:86:00.3", "0000:86:00.4"]
    assert selected(inv, {"vendors": ["8086"]}) == ["0000:01:00.0"]
    assert selected(inv, {"pciAddresses": ["86:00.2"]}) == ["0000:86:00.2"]
    assert selected(inv, {"pfPciAddresses": ["0000:86:00.0"], "linkTypes": ["ethernet"]}) == []


def test_driver_field_matches_the_publishing_driver(inv):
    assert selected(inv, {"drivers": ["ib.sigs.k8s.io"]}, driver="ib.sigs.k8s.io") == selected(inv, {})
    assert selected(inv, {"drivers": ["sriovnetwork.openshift.io"]}, driver="ib.sigs.k8s.io") == []


@pytest.mark.parametrize("obj, message", [
    ({"vendor": ["15b3"]}, "match: unknown field(s) vendor"),
    ({"vendors": ["mellanox"]}, "match.vendors[0]: expected a 4-digit hex PCI ID"),
    ({"numaNodes": ["0"]}, "match.numaNodes[0]: expected an integer"),
    ({"pciAddresses": ["3b:00"]}, "match.pciAddresses[0]: expected a PCI address"),
    ({"linkTypes": ["roce"]}, "match.linkTypes[0]: expected ethernet or infiniband"),
    ({"roles": ["SF"]}, "match.roles[0]: expected PF or VF"),
    ({"drivers": ["example.com"]}, "match.drivers[0]: expected one of"),
    (["vendors"], "match: expected a mapping"),
])
def test_malformed_selectors_name_the_field(obj, message):
    with pytest.raises(SelectorError) as err:
        parse_selector(obj, "match")
    assert message in str(err.value)


def test_normalize_pci():
    assert normalize_pci("3B:00.2") == "0000:3b:00.2" and normalize_pci("0001:3b:00.7") == "0001:3b:00.7"
    assert normalize_pci("0000:3b:00.8") is None
