"""P_Key tables: discovery reads them, IbConfig.pkey is resolved against them as the kernel does."""

import os

import pytest

from sriovdra import fakehost, partition
from sriovdra.host.discovery import discover, pkey_reader, with_pkey_tables
from tests.conftest import ib_pf

GUID = "0x0c42a10300010002"


@pytest.mark.parametrize("pkey, table, outcome, index, entry", [
    (0x8001, {0: 0xFFFF, 3: 0x8001}, partition.MEMBER, 3, 0x8001),  # the seed's 0x8001: full, granted full
    (0x0001, {0: 0xFFFF, 3: 0x8001}, partition.MEMBER, 3, 0x8001),  # limited asked, full granted: more, fine
    (0x0001, {0: 0xFFFF, 5: 0x0001}, partition.MEMBER, 5, 0x0001),
    (0x8001, {0: 0xFFFF, 5: 0x0001}, partition.LIMITED, 5, 0x0001),  # full asked, the SM gave limited
    (0x8001, {2: 0x0001, 7: 0x8001}, partition.MEMBER, 7, 0x8001),  # both: full preferred (ib_find_pkey)
    (0x0001, {2: 0x0001, 7: 0x8001}, partition.MEMBER, 7, 0x8001),
    (0x8002, {0: 0xFFFF, 3: 0x8001}, partition.NOT_MEMBER, None, None),
    (0x8002, {}, partition.NOT_MEMBER, None, None),
    (0x8002, None, partition.UNKNOWN, None, None),
])
def test_resolution_by_partition_base(pkey, table, outcome, index, entry):
    got = partition.resolve(pkey, table, "mlx5_1/1", GUID)
    assert (got.outcome, got.index, got.entry) == (outcome, index, entry)
    assert partition.PartitionCheck.from_dict(got.to_dict()) == got


def test_conditions_say_what_to_ask_the_subnet_manager():
    status, reason, msg = partition.resolve(0x8001, {0: 0xFFFF}, "mlx5_1/1", GUID).condition()
    assert (status, reason) == ("False", "NotAMember")
    for part in ("partition 0x0001", "port mlx5_1/1", GUID, "subnet manager", "partitions.conf",
                 f"part0001=0x0001,ipoib : {GUID}=full ;", "UFM"):
        assert part in msg, (part, msg)
    status, reason, msg = partition.resolve(0x8001, {4: 0x0001}, "mlx5_1/1", GUID).condition()
    assert (status, reason) == ("False", "LimitedMembership")
    assert "only a limited member" in msg and "index 4" in msg and f"{GUID}=full" in msg
    status, reason, msg = partition.resolve(0x8001, {4: 0x8001}, "mlx5_1/1", GUID).condition()
    assert (status, reason) == ("True", "Member") and "full member of partition 0x0001" in msg and "index 4" in msg
    status, reason, msg = partition.resolve(0x0001, {4: 0x8001}, "mlx5_1/1", GUID).condition()
    assert status == "True" and "limited membership was asked for" in msg
    status, reason, _ = partition.resolve(0x8001, None, "mlx5_1/1", GUID).condition()
    assert (status, reason) == ("Unknown", "PKeyTableUnknown")


def test_discovery_reads_the_table_and_check_device_uses_it(build_host):
    _, paths = build_host({"pfs": [ib_pf(ports=[{"pkeys": [0xFFFF, 0, "0x8001", 0x0002]}],
                                         vfs={"total": 2, "count": 1, "offset": 1})]})
    inv = discover(paths)
    pf = next(d for d in inv.dra_devices() if d.pci_address == "0000:5e:00.0")
    port = partition.ib_port(inv, pf)
    assert port.pkeys is None  # the rescan never reads P_Key tables (mlx5: a firmware query per entry)
    reads: list[tuple] = []

    def read(pci, rdma, number):
        reads.append((pci, rdma, number))
        return read_table(pci, rdma, number)

    read_table = pkey_reader(paths, lambda p: pytest.fail(str(p)))
    got = partition.check_device(inv, pf, 0x8001, read)
    assert reads == [(pf.pci_address, pf.rdma_device, 1)]  # only the allocated port's table
    assert (got.outcome, got.index, got.port, got.port_guid) == ("Member", 2, f"{pf.rdma_device}/1", GUID)
    assert partition.check_device(inv, pf, 0x8002, read).outcome == "LimitedMembership"
    assert partition.check_device(inv, pf, None, read) is None
    vf = next(d for d in inv.dra_devices() if d.pci_address != pf.pci_address)
    assert partition.check_device(inv, vf, 0x8001, read).index == 2  # a VF's port copies its PF's table here
    with_pkey_tables(inv, paths)  # discover -o json|yaml
    assert port.pkeys == {0: 0xFFFF, 2: 0x8001, 3: 0x0002}  # the unused entry 1 (0x0000) is left out
    assert port.to_dict()["pkeys"][1] == {"index": 2, "pkey": "0x8001"}
    assert not inv.problems


def test_an_unreadable_table_is_unknown_not_empty(build_host):
    host, paths = build_host({"pfs": [ib_pf(vfs={"count": 0})]})
    inv = discover(paths)
    dev = inv.dra_devices()[0]
    pkeys = os.path.join(paths.sysfs, "class/infiniband", dev.rdma_device, "ports/1/pkeys")
    with open(os.path.join(pkeys, "1"), "w") as f:
        f.write("garbage\n")
    inv = with_pkey_tables(discover(paths), paths)
    assert partition.ib_port(inv, dev).pkeys is None
    assert any(p.path.endswith("pkeys/1") for p in inv.problems)
    problems = []
    inv = discover(paths)
    assert partition.check_device(inv, dev, 0x8001, pkey_reader(paths, problems.append)).outcome == "PKeyTableUnknown"
    assert any(p.path.endswith("pkeys/1") for p in problems)
    os.rename(pkeys, pkeys + ".gone")  # no table at all: unknown too, and no complaint (an old kernel)
    inv = with_pkey_tables(discover(paths), paths)
    assert partition.ib_port(inv, dev).pkeys is None and not inv.problems


def test_hidden_rdma_device_means_unknown(build_host):
    _, paths = build_host({"pfs": [ib_pf(vfs={"count": 1, "overrides": {0: {"driver": "vfio-pci"}}})],
                           "host": {"iommu": True}})
    inv = discover(paths)
    vf = next(d for d in inv.dra_devices() if d.rdma_device is None)
    assert partition.check_device(inv, vf, 0x8001, pkey_reader(paths, print)).outcome == "PKeyTableUnknown"


@pytest.mark.parametrize("pkeys", [["zz"], [0x10000], [True], "0xffff"])
def test_fake_host_pkeys_are_validated(tmp_path, pkeys):
    with pytest.raises(fakehost.FakeHostError, match=r"pfs\[0\]\.ports\[0\]"):
        fakehost.build({"pfs": [ib_pf(ports=[{"pkeys": pkeys}])]}, str(tmp_path / "h"))


def test_default_fake_table_is_the_default_partition(build_host):
    _, paths = build_host({"pfs": [ib_pf(vfs={"count": 0})]})
    inv = with_pkey_tables(discover(paths), paths)
    assert partition.ib_port(inv, inv.dra_devices()[0]).pkeys == {0: 0xFFFF}
