"""Opaque configs: strict decoding with errors that name the field, layering, claim parsing."""

import pytest

from sriovdra.claim import ClaimError, ClaimRef, config_for, parse_allocation
from sriovdra.config import ConfigError, IbConfig, VfConfig, decode_ib_config, decode_vf_config
from tests.support.claims import SEED_IB_CONFIG, allocated_claim, vf_config

IB = {"apiVersion": "ib.resource.sigs.k8s.io/v1alpha1", "kind": "IbConfig"}


def test_the_ib_seed_config_decodes_verbatim():
    cfg = decode_ib_config(SEED_IB_CONFIG)
    assert cfg == IbConfig(pkey=0x8001, traffic_class=128, mtu=4096)


@pytest.mark.parametrize("fields, message", [
    ({"pkey": 0}, "IbConfig.pkey: pkey must be in range 0x0001-0xFFFF, got 0x0000"),
    ({"pkey": 0x10000}, "pkey must be in range 0x0001-0xFFFF, got 0x10000"),
    ({"pkey": 0x8000}, "base 0x0000, which is reserved"),
    ({"mtu": 9000}, "IbConfig.mtu: invalid IB MTU value: 9000, must be one of 256, 512, 1024, 2048, 4096"),
    ({"mtu": 3000}, "invalid IB MTU value: 3000"),
    ({"trafficClass": 256}, "IbConfig.trafficClass: must be in range 0-255, got 256"),
    ({"pkey": "0x8001"}, "IbConfig.pkey: expected an integer, got a string '0x8001'"),
    ({"mtu": True}, "IbConfig.mtu: expected an integer, got a boolean True"),
    ({"partition": 1}, "IbConfig: unknown field(s) partition"),
])
def test_ib_config_errors(fields, message):
    with pytest.raises(ConfigError) as e:
        decode_ib_config({**IB, **fields})
    assert message in str(e.value)


def test_header_must_match():
    with pytest.raises(ConfigError, match="expected apiVersion ib.resource.sigs.k8s.io/v1alpha1 and kind IbConfig, "
                                          "got apiVersion 'v1' and kind 'IbConfig'"):
        decode_ib_config({"apiVersion": "v1", "kind": "IbConfig"})
    with pytest.raises(ConfigError, match="parameters: expected an object, got a list"):
        decode_vf_config([1])


def test_vf_config_full():
    cfg = decode_vf_config(vf_config(driver="vfio-pci", ifName="net1", mtu=9000, mac="02:00:00:00:00:0A", vlan=100,
                                     vlanQoS=3, spoofChk=False, trust=True, ips=["192.0.2.5/24", "fd00::5/64"],
                                     routes=[{"dst": "10.0.0.0/8", "gw": "192.0.2.1"}], addVhostMount=True,
                                     netAttachDefName="net-a", netAttachDefNamespace="team"))
    assert cfg.vfio and cfg.mac == "02:00:00:00:00:0a" and cfg.ips == ("192.0.2.5/24", "fd00::5/64")
    assert cfg.to_dict()["routes"] == [{"dst": "10.0.0.0/8", "gw": "192.0.2.1"}]
    assert cfg.to_dict()["addVhostMount"] is True and cfg.to_dict()["netAttachDefNamespace"] == "team"


@pytest.mark.parametrize("fields, message", [
    ({"mtu": 10}, "VfConfig.mtu: must be in range 68-65535, got 10"),
    ({"mac": "01:00:5e:00:00:01"}, "VfConfig.mac: 01:00:5e:00:00:01 is not a unicast address"),
    ({"mac": "zz"}, "VfConfig.mac: 'zz' is not a MAC address"),
    ({"ifName": "a/b"}, "VfConfig.ifName: 'a/b' is not a Linux interface name"),
    ({"ifName": "x" * 16}, "is not a Linux interface name"),
    ({"vlan": 4095}, "VfConfig.vlan: must be in range 0-4094, got 4095"),
    ({"ips": ["10.0.0.1"]}, "VfConfig.ips[0]: '10.0.0.1' has no prefix length"),
    ({"ips": ["nope/24"]}, "VfConfig.ips[0]: 'nope/24' is not an address in CIDR form"),
    ({"routes": [{"dst": "10.0.0.0/8", "via": "x"}]}, "VfConfig.routes[0]: unknown field(s) via"),
    ({"ipam": {"subnet": "x"}}, "VfConfig.ipam: a CNI IPAM configuration needs a string 'type'"),
    ({"ipam": {"type": "host-local"}, "ips": ["10.0.0.1/24"]}, "use either ips (static addresses) or ipam"),
    ({"driver": "Bad Driver"}, "VfConfig.driver: 'Bad Driver' is not a kernel driver name"),
    ({"minTxRate": 200, "maxTxRate": 100}, "VfConfig.minTxRate: 200 is above maxTxRate 100"),
    ({"trust": "yes"}, "VfConfig.trust: expected a boolean, got a string 'yes'"),
])
def test_vf_config_errors(fields, message):
    with pytest.raises(ConfigError) as e:
        decode_vf_config(vf_config(**fields))
    assert message in str(e.value)


def test_layering_is_field_by_field():
    merged = VfConfig(mtu=1500, if_name="cls0", trust=True).overlay(VfConfig(mtu=9000, trust=False))
    assert (merged.mtu, merged.if_name, merged.trust) == (9000, "cls0", False)


def _alloc(claim):
    md = claim["metadata"]
    return parse_allocation(claim, ClaimRef(md["namespace"], md["name"], md["uid"]), "sriovnetwork.openshift.io")


def test_class_configs_apply_before_claim_configs_whatever_their_order():
    claim = allocated_claim("c", ["vf-a"], configs=[vf_config(mtu=9000)], class_configs=[vf_config(mtu=1500, vlan=7)])
    cfgs = claim["status"]["allocation"]["devices"]["config"]
    cfgs.reverse()  # claim config listed first
    alloc = _alloc(claim)
    assert [c.source for c in alloc.configs] == ["FromClass", "FromClaim"]
    assert config_for(alloc, "vf") == VfConfig(mtu=9000, vlan=7)


def test_configs_for_other_requests_drivers_and_subrequests():
    claim = allocated_claim("c", ["vf-a"], configs=[vf_config(mtu=9000)])
    claim["status"]["allocation"]["devices"]["config"] += [
        {"source": "FromClaim", "requests": ["other"], "opaque": {"driver": "sriovnetwork.openshift.io",
                                                                  "parameters": vf_config(vlan=1)}},
        {"source": "FromClaim", "requests": [], "opaque": {"driver": "gpu.example.com", "parameters": {"x": 1}}}]
    claim["status"]["allocation"]["devices"]["results"] += [
        {"request": "gpu", "driver": "gpu.example.com", "pool": "node1", "device": "gpu0"}]
    alloc = _alloc(claim)
    assert len(alloc.results) == 1 and len(alloc.configs) == 2  # other drivers' parts are not ours
    assert config_for(alloc, "vf/fast") == VfConfig(mtu=9000)  # a subrequest gets its request's config


def test_claim_errors():
    claim = allocated_claim("c", ["vf-a"], configs=[vf_config(mtu="x")])
    with pytest.raises(ClaimError, match=r"claim default/c: status.allocation.devices.config\[0\] \(FromClaim\) "
                                         r"for request 'vf': VfConfig.mtu: expected an integer"):
        config_for(_alloc(claim), "vf")
    broken = allocated_claim("c", ["vf-a"])
    del broken["status"]["allocation"]["devices"]["results"][0]["pool"]
    with pytest.raises(ClaimError, match=r"results\[0\] has no pool"):
        _alloc(broken)


def test_ibconfig_reports_every_bad_field_at_once():
    from sriovdra.config import IB_API_VERSION, ConfigError, decode_ib_config

    with pytest.raises(ConfigError) as err:
        decode_ib_config({"apiVersion": IB_API_VERSION, "kind": "IbConfig", "pkey": 0, "mtu": 9000,
                          "trafficClass": 256})
    assert str(err.value) == ("IbConfig.pkey: pkey must be in range 0x0001-0xFFFF, got 0x0000; "
                              "IbConfig.trafficClass: must be in range 0-255, got 256; "
                              "IbConfig.mtu: invalid IB MTU value: 9000, must be one of 256, 512, 1024, 2048, 4096")
