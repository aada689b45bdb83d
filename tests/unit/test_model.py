"""The device model's rules: classification, link type, naming, attributes, API limits."""

import pytest

from sriovdra import model
from sriovdra.model import (
    HOST_BAREMETAL,
    HOST_VM,
    IB_DRIVER,
    ROLE_PF,
    ROLE_VF,
    SRIOV_DRIVER,
    DraDevice,
    HostInfo,
    IbPort,
    Inventory,
    NetDev,
    PciFunction,
    RdmaDevice,
    classify_function,
)


def _classify(**kw):
    args = dict(has_physfn=False, sriov_totalvfs=None, vendor="15b3", device="101d",
                host_kind=HOST_BAREMETAL, has_infiniband=False)
    args.update(kw)
    return classify_function(**args)


class TestClassify:
    def test_physfn_makes_a_vf_with_a_known_parent(self):
        assert _classify(has_physfn=True, device="101e") == (ROLE_VF, False)

    def test_sriov_capable_function_is_a_pf(self):
        assert _classify(sriov_totalvfs=16) == (ROLE_PF, False)

    def test_known_vf_id_without_physfn_is_a_passthrough_vf(self):
        # What a VM sees: a ConnectX VF with no physfn link and no SR-IOV capability.
        assert _classify(device="101e", host_kind=HOST_VM) == (ROLE_VF, True)
        assert _classify(vendor="8086", device="1889") == (ROLE_VF, True)

    def test_infiniband_hca_in_a_vm_is_a_vf_even_with_an_unknown_id(self):
        assert _classify(device="beef", host_kind=HOST_VM, has_infiniband=True) == (ROLE_VF, True)

    def test_unknown_nic_on_baremetal_is_a_plain_pf(self):
        assert _classify(device="beef", has_infiniband=True) == (ROLE_PF, False)

    def test_whole_hca_passed_into_a_vm_stays_a_pf(self):
        assert _classify(device="1021", host_kind=HOST_VM, has_infiniband=True) == (ROLE_PF, False)

    def test_bluefield_vf_id(self):
        assert _classify(device="a2d3") == (ROLE_VF, True)

    def test_virtio_nic_in_a_vm_is_not_a_vf(self):
        assert _classify(vendor="1af4", device="1041", host_kind=HOST_VM) == (ROLE_PF, False)

    def test_physfn_wins_over_sriov_capability(self):
        assert _classify(has_physfn=True, sriov_totalvfs=4)[0] == ROLE_VF


class TestLinkType:
    def test_rdma_port_link_layer_decides_first(self):
        fn = PciFunction("0000:01:00.0", class_code="020000",
                         rdma_devices=[RdmaDevice("mlx5_0", ports=[IbPort(1, link_layer="InfiniBand")])],
                         netdevs=[NetDev("eth0", link_type=model.LINK_ETHERNET)])
        assert model.link_type(fn) == model.LINK_INFINIBAND

    def test_netdev_type_then_parent_then_pci_class(self):
        assert model.link_type(PciFunction("a", netdevs=[NetDev("ib0", link_type="infiniband")])) == "infiniband"
        parent = PciFunction("p", class_code="020700")
        assert model.link_type(PciFunction("v"), parent) == "infiniband"
        assert model.link_type(PciFunction("v", class_code="020000")) == "ethernet"
        assert model.link_type(PciFunction("v")) == "unknown"

    def test_representors_do_not_decide(self):
        rep = NetDev("rep", link_type="infiniband", phys_port_name="pf0vf1")
        assert model.link_type(PciFunction("a", class_code="020000", netdevs=[rep])) == "ethernet"


class TestNaming:
    def test_names_are_dns_labels_derived_from_the_pci_address(self):
        assert model.vf_device_name("0000:3B:00.2") == "vf-0000-3b-00-2"
        assert model.ib_device_name("0000:3b:00.0", 2) == "ib-0000-3b-00-0-p2"

    def test_uplink_skips_representors(self):
        fn = PciFunction("a", netdevs=[NetDev("rep0", phys_port_name="pf0vf0"), NetDev("up", phys_port_name="p0")])
        assert fn.uplink.name == "up"


class TestAttributes:
    def test_attribute_json_keeps_bool_apart_from_int(self):
        assert model.attribute_json(True) == {"bool": True}
        assert model.attribute_json(3) == {"int": 3}
        assert model.attribute_json("x") == {"string": "x"}

    def test_clip_respects_utf8_boundaries(self):
        value = "é" * 40  # 80 bytes
        clipped = model.clip(value)
        assert len(clipped.encode()) <= 64 and clipped == "é" * 32

    def test_vf_attributes_fall_back_to_parent_numa_and_leave_unknowns_out(self):
        pf = PciFunction("0000:3b:00.0", vendor="15b3", device="101d", numa_node=1,
                         netdevs=[NetDev("ens1f0")], sriov_totalvfs=8)
        vf = PciFunction("0000:3b:00.2", role=ROLE_VF, vendor=None, device="101e", vf_index=0,
                         pf_address=pf.address)
        attrs = model.vf_attributes(vf, pf, "ethernet")
        assert attrs["vendor"] == "15b3"
        assert attrs["numaNode"] == 1 and attrs["dra.net/numaNode"] == 1
        assert "EswitchMode" not in attrs  # the PF's mode is unknown: not guessed
        assert attrs["PFName"] == "ens1f0"
        assert "resource.kubernetes.io/pcieRoot" not in attrs  # unknown -> left out, not ""

    def test_out_of_range_ints_are_left_out(self):
        vf = PciFunction("0000:3b:00.2", role=ROLE_VF, vf_index=2**70)
        attrs = model.vf_attributes(vf, None, "ethernet")
        assert "vfID" not in attrs

    def test_passthrough_vf_has_no_parent_attributes(self):
        vf = PciFunction("0000:00:08.0", role=ROLE_VF, vendor="15b3", device="101e", passthrough=True)
        attrs = model.vf_attributes(vf, None, "ethernet")
        assert attrs["passthrough"] is True
        assert not {"pfDeviceID", "pfPciAddress", "PFName", "EswitchMode", "vfID"} & set(attrs)


class TestPorts:
    def test_each_port_of_a_multi_port_function_gets_its_own_netdev(self):
        fn = PciFunction("a", netdevs=[NetDev("ib0", dev_port=0), NetDev("ib1", dev_port=1)])
        assert fn.port_netdev(1).name == "ib0" and fn.port_netdev(2).name == "ib1"
        assert PciFunction("b", netdevs=[NetDev("ib0")]).port_netdev(1).name == "ib0"
        assert PciFunction("c", netdevs=[NetDev("x", dev_port=0), NetDev("y", dev_port=0)]).port_netdev(2) is None

    def test_ib_function_without_visible_rdma_device_is_still_published(self):
        pf = PciFunction("0000:5e:00.0", class_code="020700", sriov_totalvfs=4, rdma_devices=[
            RdmaDevice("mlx5_0", ports=[IbPort(1, link_layer="InfiniBand", state="Active")])])
        vf = PciFunction("0000:5e:00.1", role=ROLE_VF, class_code="020700", driver="vfio-pci", vf_index=0,
                         pf_address=pf.address, numa_node=1)
        dev = [d for d in Inventory(HostInfo(), [pf, vf]).dra_devices() if d.pci_address == vf.address][0]
        assert dev.name == "ib-0000-5e-00-1-p1" and dev.rdma_device is None
        assert dev.attributes["type"] == "VF" and dev.attributes["parentDevice"] == "mlx5_0"
        assert dev.attributes["portState"] == "Unknown" and "nodeGUID" not in dev.attributes


class TestDraDevices:
    def _inventory(self):
        eth_pf = PciFunction("0000:3b:00.0", class_code="020000", sriov_totalvfs=4,
                             vf_addresses={0: "0000:3b:00.2"}, netdevs=[NetDev("ens1f0", link_type="ethernet")])
        eth_vf = PciFunction("0000:3b:00.2", role=ROLE_VF, class_code="020000", vf_index=0,
                             pf_address=eth_pf.address)
        ib = RdmaDevice("mlx5_2", ports=[IbPort(1, link_layer="InfiniBand"), IbPort(2, link_layer="Ethernet")])
        ib_pf = PciFunction("0000:5e:00.0", class_code="020700", rdma_devices=[ib])
        return Inventory(HostInfo(), [eth_pf, eth_vf, ib_pf])

    def test_each_function_goes_to_exactly_one_driver(self):
        devices = self._inventory().dra_devices()
        assert [(d.driver, d.name) for d in devices] == [
            (IB_DRIVER, "ib-0000-5e-00-0-p1"),  # the Ethernet port of the VPI card is not an IB device
            (SRIOV_DRIVER, "vf-0000-3b-00-2"),  # Ethernet PFs themselves are not published
        ]


class TestLimits:
    def test_bad_names_and_values_are_reported(self):
        dev = DraDevice(driver=SRIOV_DRIVER, name="Bad_Name", pci_address="x", attributes={
            "1bad": "x", "bad.domain_/ok": 1, "long": "x" * 65, "big": 2**63,
            **{f"a{i}": i for i in range(30)}})
        problems = "\n".join(model.limit_problems(dev))
        assert "not a DNS label" in problems
        assert "'1bad': name must be a C identifier" in problems
        assert "'bad.domain_/ok': domain" in problems
        assert "'long' longer than 64 bytes" in problems
        assert "'big' does not fit int64" in problems
        assert "34 attributes, limit 32" in problems

    def test_good_device_has_no_problems(self):
        dev = DraDevice(driver=IB_DRIVER, name="ib-0000-3b-00-0-p1", pci_address="x",
                        attributes={"type": "PF", "resource.kubernetes.io/pciBusID": "0000:3b:00.0"})
        assert model.limit_problems(dev) == []


@pytest.mark.parametrize("name", ["numaNode", "resource.kubernetes.io/pcieRoot", "dra.net/numaNode"])
def test_standard_names_are_valid(name):
    assert model.attribute_name_problems(name) == []
