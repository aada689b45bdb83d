"""IbConfig at prepare and in the claim status: the P_Key lookup is checkpointed, the status says what
was applied and what only the subnet manager can do."""

import json
import os

from sriovdra.checkpoint import ATTACHED, CheckpointStore, PreparedDevice, decode, encode
from sriovdra.claim import ClaimRef
from sriovdra.daemon import _status_entry
from sriovdra.driver.core import Driver, DriverSettings
from sriovdra.host.discovery import discover
from sriovdra.model import IB_DRIVER, SRIOV_DRIVER
from sriovdra.partition import resolve
from tests.conftest import ib_pf
from tests.support.claims import SEED_IB_CONFIG, allocated_claim

GUID = "0x0c42a10300010002"


def _ib_device(pkey_table=None, config=None, **kw) -> PreparedDevice:
    config = {"pkey": 0x8001, "trafficClass": 128, "mtu": 4096} if config is None else config
    check = resolve(config["pkey"], pkey_table, "mlx5_1/1", GUID) if "pkey" in config else None
    return PreparedDevice("ib", "node1", "ib-0000-5e-00-1-p1", "0000:5e:00.1", ["x"], config,
                          partition=check.to_dict() if check else None, **kw)


def _conditions(entry) -> dict:
    return {c["type"]: c for c in entry["conditions"]}


def test_a_partition_the_sm_has_not_configured_is_a_false_condition_not_a_failure():
    entry = _status_entry(IB_DRIVER, _ib_device({0: 0xFFFF}))
    cond = _conditions(entry)
    assert cond["Ready"]["status"] == "True"  # prepared: env and devices are there
    part = cond["IBPartitionReady"]
    assert (part["status"], part["reason"]) == ("False", "NotAMember")
    assert "partition 0x0001" in part["message"] and GUID in part["message"] and "partitions.conf" in part["message"]
    assert part["lastTransitionTime"] == cond["Ready"]["lastTransitionTime"]
    ib = entry["data"]["ib"]
    assert ib["partition"] == {"pkey": "0x8001", "port": "mlx5_1/1", "portGUID": GUID, "outcome": "NotAMember",
                               "index": None, "membership": None}
    assert ib["trafficClass"] == {"value": 128, "appliedBy": "application"}
    assert ib["mtu"] == {"value": 4096, "appliedBy": "application"} and "netdev" not in ib
    assert entry["data"]["config"]["pkey"] == 0x8001


def test_member_and_limited_member():
    cond = _conditions(_status_entry(IB_DRIVER, _ib_device({0: 0xFFFF, 2: 0x8001})))
    assert (cond["IBPartitionReady"]["status"], cond["IBPartitionReady"]["reason"]) == ("True", "Member")
    cond = _conditions(_status_entry(IB_DRIVER, _ib_device({0: 0xFFFF, 2: 0x0001})))
    assert (cond["IBPartitionReady"]["status"], cond["IBPartitionReady"]["reason"]) == ("False", "LimitedMembership")


def test_no_pkey_no_partition_condition_and_vfs_get_no_ib_data():
    entry = _status_entry(IB_DRIVER, _ib_device(config={"mtu": 2048}))
    assert "IBPartitionReady" not in _conditions(entry) and "partition" not in entry["data"]["ib"]
    vf = PreparedDevice("vf", "node1", "vf-0000-3b-00-2", "0000:3b:00.2", ["x"], {"mtu": 9000})
    assert "ib" not in _status_entry(SRIOV_DRIVER, vf)["data"]


def _attached(dev: PreparedDevice, mtu: int, child: bool, carrier: bool | None = True,
              rdma: str | None = None) -> PreparedDevice:
    from sriovdra.checkpoint import Attachment

    dev.attachment = Attachment(pod="p", sandbox="s", netns="/x", pod_name="default/p", state=ATTACHED,
                                if_name="net1", ifindex=9, mtu=mtu, original=None if child else {"name": "ib0"},
                                ipoib_child={"parent": "ib0", "pkey": 0x8001, "name": "sdrv1", "ifindex": 9}
                                if child else None, carrier=carrier, rdma=rdma)
    return dev


def test_netdev_mtu_is_unknown_until_the_broadcast_join_gives_carrier():
    """A new P_Key child has no carrier until it joined the partition's broadcast group; the kernel
    lowers its MTU only then: an MTU read before is not the answer."""
    for carrier in (False, None):  # None: not read (a record of an older release)
        cond = _conditions(_status_entry(IB_DRIVER, _attached(_ib_device({1: 0x8001}), 4092, True, carrier)))
        mtu = cond["IPoIBMTUReady"]
        assert (mtu["status"], mtu["reason"]) == ("Unknown", "AwaitingBroadcastJoin")
        assert "no carrier yet" in mtu["message"] and "re-reads" in mtu["message"]


def test_exclusive_rdma_netns_says_the_netdev_settings_are_not_applied():
    dev = _ib_device({1: 0x8001})
    dev.netdev = "ib0"
    entry = _status_entry(IB_DRIVER, _attached(dev, 2044, child=False, rdma="mlx5_3"))
    mtu = _conditions(entry)["IPoIBMTUReady"]
    assert (mtu["status"], mtu["reason"]) == ("False", "ExclusiveRdmaNetns")
    note = entry["data"]["ib"]["netdev"]["notApplied"]
    assert "pkey and mtu not applied" in note and "mlx5_3" in note and "exclusive RDMA netns" in note


def test_netdev_mtu_capped_by_the_broadcast_group_is_reported():
    entry = _status_entry(IB_DRIVER, _attached(_ib_device({1: 0x8001}), 2044, child=True))
    cond = _conditions(entry)
    assert cond["NetworkReady"]["status"] == "True"
    mtu = cond["IPoIBMTUReady"]
    assert (mtu["status"], mtu["reason"]) == ("False", "LimitedByBroadcastGroup")
    assert "MTU 2044, not the 4092" in mtu["message"] and "mtu=5" in mtu["message"]
    assert entry["data"]["ib"]["netdev"] == {"interfaceName": "net1", "mtu": 2044, "pkeyChild": True}
    assert entry["data"]["ib"]["mtu"]["netdevMtu"] == 2044
    ok = _conditions(_status_entry(IB_DRIVER, _attached(_ib_device({1: 0x8001}), 4092, child=False)))
    assert (ok["IPoIBMTUReady"]["status"], ok["IPoIBMTUReady"]["reason"]) == ("True", "Applied")


def test_old_checkpoints_load_and_new_fields_round_trip():
    old = {"request": "ib", "pool": "node1", "device": "ib-x", "pci_address": "0000:5e:00.1", "cdi_ids": ["x"],
           "config": {"pkey": 32769}, "attachment": {"pod": "p", "sandbox": "s", "netns": None, "pod_name": "d/p"}}
    dev = PreparedDevice.from_dict(old)
    assert dev.partition is None and dev.attachment.ipoib_child is None
    new = _attached(_ib_device({1: 0x8001}), 4092, child=True)
    assert PreparedDevice.from_dict(json.loads(json.dumps(new.to_dict()))) == new
    from sriovdra.checkpoint import ClaimRecord

    records = {"u": ClaimRecord(ClaimRef("d", "c", "u"), "prepared", [new])}
    assert decode(encode(records)) == records


class _Claims:
    def __init__(self, claim: dict) -> None:
        self.claim = claim

    def get_claim(self, namespace: str, name: str) -> dict:
        return self.claim


def _driver(tmp_path, build_host, attach: str, pkeys: list) -> tuple[Driver, list]:
    _, paths = build_host({"pfs": [ib_pf(ports=[{"pkeys": pkeys}], vfs={"total": 4, "count": 1, "offset": 1})]})
    inv = discover(paths)
    settings = DriverSettings(IB_DRIVER, "node1", str(tmp_path / "cdi"), str(tmp_path / "cp.json"), paths,
                              netdev_attach=attach)
    return Driver(settings, lambda: inv, claims=None), [d.name for d in inv.dra_devices()]


def test_prepare_checkpoints_the_lookup_and_writes_the_index(tmp_path, build_host):
    driver, names = _driver(tmp_path, build_host, "none", [0xFFFF, 0, 0x8001])
    claim = allocated_claim("ib", names[:2], driver=IB_DRIVER, request="ib", configs=[SEED_IB_CONFIG])
    driver.claims = _Claims(claim)
    ref = ClaimRef("default", "ib", claim["metadata"]["uid"])
    assert driver.prepare([ref])[ref.uid].error is None
    rec = CheckpointStore(driver.s.checkpoint_path).peek()[ref.uid]
    assert [d.partition["index"] for d in rec.devices] == [2, 2]
    spec = next(iter(rec.specs.values()))
    assert "IB_DEVICE_0_PKEY_INDEX=2" in spec["devices"][0]["containerEdits"]["env"]
    assert "NCCL_IB_PKEY=2" in spec["containerEdits"]["env"]


def test_ibconfig_mtu_is_not_refused_with_cdi_attach(tmp_path, build_host):
    """With --netdev-attach cdi the runtime moves the IPoIB netdev as it is; the seed's IbConfig (mtu 4096)
    still reaches the workload through the env instead of failing the claim."""
    driver, names = _driver(tmp_path, build_host, "cdi", [0xFFFF])
    claim = allocated_claim("ib", names[:1], driver=IB_DRIVER, request="ib", configs=[SEED_IB_CONFIG])
    driver.claims = _Claims(claim)
    ref = ClaimRef("default", "ib", claim["metadata"]["uid"])
    out = driver.prepare([ref])[ref.uid]
    assert out.error is None and len(out.devices[0].cdi_ids) == 2  # the env spec and the netdev spec
    entry = _status_entry(IB_DRIVER, out.devices[0])
    assert _conditions(entry)["IBPartitionReady"]["reason"] == "NotAMember" and "netdev" not in entry["data"]["ib"]


def test_a_partition_the_sm_adds_after_prepare_reaches_checkpoint_spec_and_status(tmp_path, build_host):
    driver, names = _driver(tmp_path, build_host, "none", [0xFFFF])
    claim = allocated_claim("ib", names[:1], driver=IB_DRIVER, request="ib", configs=[SEED_IB_CONFIG])
    driver.claims = _Claims(claim)
    ref = ClaimRef("default", "ib", claim["metadata"]["uid"])
    dev = driver.prepare([ref])[ref.uid].devices[0]
    assert dev.partition["outcome"] == "NotAMember"
    inv = driver.inventory()
    assert driver.recheck_partitions(inv) == []  # nothing changed: no spec rewrite, no status write
    # the subnet manager adds the port to partition 0x0001 as a full member, at index 1
    fn = inv.function(dev.pci_address)
    pkeys = os.path.join(driver.s.paths.sysfs, "bus/pci/devices", fn.address, "infiniband", dev.rdma_device,
                         "ports/1/pkeys")
    with open(os.path.join(pkeys, "1"), "w") as f:
        f.write("0x8001\n")
    [rec] = driver.recheck_partitions(inv)
    assert rec.claim.uid == ref.uid and rec.devices[0].partition["index"] == 1
    stored = CheckpointStore(driver.s.checkpoint_path).peek()[ref.uid]
    assert stored.devices[0].partition["outcome"] == "Member"
    [(name, _)] = stored.specs.items()
    with open(os.path.join(driver.s.cdi_dir, name)) as f:
        spec = json.load(f)
    assert "IB_DEVICE_0_PKEY_INDEX=1" in spec["devices"][0]["containerEdits"]["env"]
    assert "NCCL_IB_PKEY=1" in spec["containerEdits"]["env"]
    assert _conditions(_status_entry(IB_DRIVER, stored.devices[0]))["IBPartitionReady"]["status"] == "True"
    assert driver.recheck_partitions(inv) == []  # settled
