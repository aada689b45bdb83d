"""Provisioning: the strict config, the plan (first match wins, refusals, GUIDs), the kernel sequence per PF
(idempotence, through 0, rollback, autoprobe, waiting) and the whole run against fake hosts."""

from __future__ import annotations

import errno
import json
import os

import pytest

from sriovdra import fakehost
from sriovdra.checkpoint import PREPARED, CheckpointStore, ClaimRecord, PreparedDevice
from sriovdra.claim import ClaimRef
from sriovdra.host import sriov
from sriovdra.host.discovery import discover
from sriovdra.model import IB_DRIVER, SRIOV_DRIVER
from sriovdra.provisioner import Options, ThrottledProgress, provision, read_holders
from sriovdra.provisioning import (
    CREATED,
    DRY_RUN,
    FAILED,
    REFUSED,
    REMOVED,
    RESIZED,
    UNCHANGED,
    ProvisionError,
    flags_config,
    parse_config,
    parse_config_text,
    plan,
    serve_config,
)
from tests.conftest import eth_pf, ib_pf

ETH, IB = "0000:3b:00.0", "0000:5e:00.0"
HOST = {"host": {"modules": ["vfio_pci"]},
        "pfs": [eth_pf(vfs={"total": 8, "count": 2, "offset": 2}),
                ib_pf(vfs={"total": 8, "count": 0, "guids": "zero"}),
                eth_pf("0000:af:00.0", vendor="8086", device="159b", driver="ice", netdev="ens5f0", rdma=False,
                       vfs={"total": 64, "count": 0, "driver": "iavf", "offset": 16})],
        "functions": [{"pci": "0000:01:00.0", "vendor": "8086", "device": "1521", "driver": "igb", "netdev": "eno1"}]}


# --- the config --------------------------------------------------------------------------------------


def test_a_full_config():
    cfg = parse_config_text("""
timeout: 30
autoprobe: true
pfs:
  - pf: ens1f0
    numVFs: 8
  - pf: 3B:00.1
    numVFs: max
  - match: {vendors: ["15b3"], linkTypes: [infiniband]}
    numVFs: 4
    autoprobe: false
    guids: {start: "02:00:00:00:00:00:01:00", end: "0200:0000:0000:01ff"}
  - match: {roles: [PF]}
    numVFs: 0
    guids: none
""", "p.yaml")
    assert (cfg.timeout, cfg.autoprobe, len(cfg.rules)) == (30.0, True, 4)
    a, b, c, d = cfg.rules
    assert (a.pf, a.num_vfs, b.pf, b.num_vfs) == ("ens1f0", 8, "0000:3b:00.1", None)
    assert c.match.vendors == ("15b3",) and c.autoprobe is False and c.guids.start == 0x0200_0000_0000_0100
    assert c.guids.end == 0x0200_0000_0000_01FF and d.guids.mode == "none"


@pytest.mark.parametrize("obj, message", [
    ([], r"^config: expected a mapping with pfs"),
    ({"pfs": []}, r"^pfs: expected a non-empty list"),
    ({"pfs": [{"pf": "x", "numVFs": 1}], "timout": 3}, r"^config: unknown field\(s\) timout \(known: autoprobe"),
    ({"timeout": 0, "pfs": [{"pf": "x", "numVFs": 1}]}, r"^timeout: expected seconds > 0"),
    ({"autoprobe": "yes", "pfs": [{"pf": "x", "numVFs": 1}]}, r"^autoprobe: expected true or false"),
    ({"pfs": [{"pf": "x", "numVFs": 1}, {"pf": "y", "numVFs": "8"}]}, r"^pfs\[1\].numVFs: expected a number"),
    ({"pfs": [{"pf": "x", "numVFs": -1}]}, r"^pfs\[0\].numVFs: expected a number of VFs \(0-65535\) or max"),
    ({"pfs": [{"pf": "x", "numVFs": True}]}, r"^pfs\[0\].numVFs"),
    ({"pfs": [{"pf": "x"}]}, r"^pfs\[0\].numVFs: required"),
    ({"pfs": [{"numVFs": 1}]}, r"^pfs\[0\]: give exactly one of pf"),
    ({"pfs": [{"pf": "x", "match": {}, "numVFs": 1}]}, r"^pfs\[0\]: give exactly one of pf"),
    ({"pfs": [{"pf": "x", "numVFs": 1, "vfs": 2}]}, r"^pfs\[0\]: unknown field\(s\) vfs"),
    ({"pfs": [{"pf": "../x", "numVFs": 1}]}, r"^pfs\[0\].pf: expected a netdev name or a PCI address"),
    ({"pfs": [{"match": {"vendor": ["15b3"]}, "numVFs": 1}]}, r"^pfs\[0\].match: unknown field\(s\) vendor"),
    ({"pfs": [{"match": {"vendors": ["15b"]}, "numVFs": 1}]}, r"^pfs\[0\].match.vendors\[0\]: expected a 4-digit"),
    ({"pfs": [{"match": {"roles": ["VF"]}, "numVFs": 1}]}, r"^pfs\[0\].match.roles: entries select PFs"),
    ({"pfs": [{"pf": "x", "numVFs": 1, "guids": "random"}]}, r"^pfs\[0\].guids: expected derived, none or"),
    ({"pfs": [{"pf": "x", "numVFs": 1, "guids": {"start": "1"}}]}, r"^pfs\[0\].guids.start: expected a GUID"),
    ({"pfs": [{"pf": "x", "numVFs": 1, "autoprobe": 1}]}, r"^pfs\[0\].autoprobe: expected true or false"),
])
def test_bad_configs_name_the_field(obj, message):
    with pytest.raises(ProvisionError, match=message):
        parse_config(obj)


def test_yaml_errors_name_the_file():
    with pytest.raises(ProvisionError, match=r"^p.yaml: not valid YAML"):
        parse_config_text("pfs: [\n", "p.yaml")
    with pytest.raises(ProvisionError, match=r"^p.yaml: pfs\[0\].numVFs: required"):
        parse_config_text("pfs: [{pf: x}]", "p.yaml")


def test_flags_and_serve_configs():
    cfg = flags_config(["ens1f0", "3b:00.1"], "max", timeout=5, autoprobe=False, guids="none")
    assert [(r.pf, r.num_vfs) for r in cfg.rules] == [("ens1f0", None), ("0000:3b:00.1", None)]
    assert (cfg.timeout, cfg.autoprobe, cfg.guids.mode) == (5.0, False, "none")
    with pytest.raises(ProvisionError, match=r"^--num-vfs: expected a number of VFs or max, got 'lots'"):
        flags_config(["x"], "lots")
    with pytest.raises(ProvisionError, match=r"^--pf: give at least one PF"):
        flags_config([], "4")
    assert serve_config(0) is None
    [rule] = serve_config(4, (IB_DRIVER,)).rules
    assert (rule.num_vfs, rule.clamp, rule.match.link_types) == (4, True, ("infiniband",))
    assert serve_config(4).rules[0].match.link_types == ("ethernet", "infiniband")


# --- the plan ---------------------------------------------------------------------------------------


@pytest.fixture
def host(build_host):
    return build_host(HOST)[1]


def _plan(paths, obj, holders=(), problems=None, force=False):
    return plan(discover(paths), parse_config(obj), list(holders), problems or {}, force=force)


def test_first_matching_entry_wins_and_unmatched_entries_are_reported(host):
    p = _plan(host, {"pfs": [{"pf": "ens1f0", "numVFs": 2}, {"match": {"vendors": ["15b3"]}, "numVFs": 4},
                             {"pf": "nosuch", "numVFs": 1}, {"pf": "eno1", "numVFs": 1},
                             {"match": {"numaNodes": [7]}, "numVFs": 1}]})
    assert [(x.address, x.before, x.wanted, x.action) for x in p.pfs] == [(ETH, 2, 2, UNCHANGED), (IB, 0, 4, CREATED)]
    assert p.unmatched == ["pfs[2] (pf: nosuch): no such PF on this node",
                           "pfs[3] (pf: eno1): 0000:01:00.0 is not an SR-IOV PF (no sriov_totalvfs)",
                           "pfs[4] (match: {'numaNodes': [7]}): matches no SR-IOV PF on this node"]
    assert p.errors == []


def test_actions_max_and_too_many(host):
    p = _plan(host, {"pfs": [{"pf": ETH, "numVFs": 0}, {"pf": "ens5f0", "numVFs": "max"},
                             {"match": {"drivers": [IB_DRIVER]}, "numVFs": 9}]})
    assert [(x.wanted, x.action) for x in p.pfs] == [(0, REMOVED), (9, CREATED), (64, CREATED)]  # by address
    assert p.errors == [f"pfs[2]: {IB} (ibp94s0): 9 VFs asked, sriov_totalvfs is 8 (numVFs: max takes all it has)"]
    resize = _plan(host, {"pfs": [{"pf": ETH, "numVFs": 4}]})
    assert resize.pfs[0].action == RESIZED
    clamped = plan(discover(host), serve_config(100), [], {})
    assert [(x.address, x.wanted) for x in clamped.pfs] == [(ETH, 8), (IB, 8), ("0000:af:00.0", 64)]
    assert clamped.errors == []


def _holder(address: str, device: str):
    from sriovdra.provisioning import Holder

    return Holder(SRIOV_DRIVER, ClaimRef("default", "c1", "uid-1"), PREPARED, device, address)


def test_a_pf_whose_vfs_a_claim_holds_is_refused_unless_forced(host):
    held = [_holder("0000:3b:00.3", "vf-0000-3b-00-3")]
    obj = {"pfs": [{"pf": ETH, "numVFs": 4}, {"pf": IB, "numVFs": 2}]}
    p = _plan(host, obj, held)
    assert [x.action for x in p.pfs] == [REFUSED, CREATED]
    assert p.pfs[0].problems == [
        f"changing {ETH} (ens1f0) from 2 to 4 VFs removes all of its VFs, and claims hold some: vf-0000-3b-00-3 "
        "(0000:3b:00.3) by claim default/c1 uid uid-1 [prepared] (`sriovdra provision --force` changes it anyway)"]
    assert [x.action for x in _plan(host, obj, held, force=True).pfs] == [RESIZED, CREATED]
    assert _plan(host, {"pfs": [{"pf": ETH, "numVFs": 2}]}, held).pfs[0].action == UNCHANGED  # no change: no harm
    # an unreadable checkpoint matters only for a PF that has VFs, and only that of the driver publishing them
    corrupt = _plan(host, obj, problems={SRIOV_DRIVER: ["x.json: checksum mismatch"]})
    assert [x.action for x in corrupt.pfs] == [REFUSED, CREATED]
    assert "cannot be read to tell whether claims hold them: x.json: checksum mismatch" in corrupt.pfs[0].problems[0]
    other = _plan(host, obj, problems={IB_DRIVER: ["y.json: checksum mismatch"]})
    assert [x.action for x in other.pfs] == [RESIZED, CREATED]


def test_guid_plan_for_ib_pfs_only(host):
    p = _plan(host, {"pfs": [{"match": {}, "numVFs": 2}]})
    by = {x.address: x for x in p.pfs}
    assert by[ETH].guids is None and by[ETH].guid_plan == {}
    assert by[IB].guid_plan == {0: 0x0200_0103_0001_0002, 1: 0x0200_0203_0001_0002}  # PF 0c42:a103:0001:0002
    none = _plan(host, {"pfs": [{"pf": IB, "numVFs": 2, "guids": "none"}]})
    assert none.pfs[0].guids is None and none.pfs[0].guid_plan == {}


def test_a_pf_without_a_guid_gets_its_vfs_and_fails_on_the_guids(build_host, tmp_path):
    _, paths = build_host({"pfs": [ib_pf(guid="0000:0000:0000:0000", vfs={"total": 8, "count": 0})]})
    p = plan(discover(paths), parse_config({"pfs": [{"pf": IB, "numVFs": 2}]}), [], {})
    assert p.pfs[0].action == CREATED and p.pfs[0].guid_plan == {}
    assert p.pfs[0].guid_problem.startswith("VF GUIDs: no readable non-zero node GUID")
    dry = provision(paths, parse_config({"pfs": [{"pf": IB, "numVFs": 2}]}), Options(state_dir=str(tmp_path),
                                                                                   dry_run=True))
    assert dry.pfs[0].action == FAILED and dry.failed
    report = provision(paths, parse_config({"pfs": [{"pf": IB, "numVFs": 2}]}), Options(state_dir=str(tmp_path)))
    assert (report.pfs[0].action, report.pfs[0].after) == (FAILED, 2)  # the count changed, the GUID step did not run
    assert report.pfs[0].problems[0].startswith("VF GUIDs: no readable non-zero node GUID")
    assert [v["guidAction"] for v in report.pfs[0].vfs] == [None, None]
    ranged_cfg = {"pfs": [{"pf": IB, "numVFs": 2, "guids": {"start": "0200:0000:0000:0010"}}]}
    ranged = provision(paths, parse_config(ranged_cfg), Options(state_dir=str(tmp_path)))
    assert ranged.pfs[0].action == UNCHANGED  # the count is there: only the GUIDs
    assert [v["nodeGUID"] for v in ranged.pfs[0].vfs] == ["0200:0000:0000:0010", "0200:0000:0000:0011"]


# --- the kernel sequence ----------------------------------------------------------------------------


def _writes(monkeypatch) -> list[tuple[str, str]]:
    """Every sysfs write, in order (still carried out by the fake kernel)."""
    seen = []
    original = fakehost.FakeKernel.write

    def spy(self, path, value):
        seen.append((os.path.basename(path), value))
        return original(self, path, value)

    monkeypatch.setattr(fakehost.FakeKernel, "write", spy)
    return seen


def test_the_sequence_goes_through_zero_and_writes_nothing_when_done(host, monkeypatch):
    writes = _writes(monkeypatch)
    sriov.set_num_vfs(host, ETH, 4, autoprobe=True)
    assert writes == [("sriov_numvfs", "0"), ("sriov_numvfs", "4")]  # autoprobe already on: not written
    writes.clear()
    sriov.set_num_vfs(host, ETH, 4)
    assert writes == []
    sriov.set_num_vfs(host, ETH, 0)
    assert writes == [("sriov_numvfs", "0")]


def test_too_many_is_an_error_before_any_write(host, monkeypatch):
    writes = _writes(monkeypatch)
    with pytest.raises(sriov.SriovError, match=f"^{ETH}: 9 VFs asked, sriov_totalvfs is 8$"):
        sriov.set_num_vfs(host, ETH, 9)
    assert writes == []


def test_a_failed_write_after_zero_rolls_back_the_count_and_autoprobe(build_host, monkeypatch):
    _, paths = build_host({"pfs": [eth_pf(vfs={"total": 8, "count": 2, "enableError": {"errno": "ENOMEM",
                                                                                       "above": 2}})]})
    writes = _writes(monkeypatch)
    with pytest.raises(sriov.SriovError) as e:
        sriov.set_num_vfs(paths, ETH, 4, autoprobe=False)
    assert str(e.value) == (
        f"{ETH}: write 4 to sriov_numvfs: Cannot allocate memory (ENOMEM): SR-IOV is not enabled in the firmware "
        "or BIOS, or they give it too few resources: enable SR-IOV (and ARI) in the BIOS; on ConnectX: mlxconfig -d "
        "<pci> set SRIOV_EN=1 NUM_OF_VFS=<n>, then reboot; sriov_drivers_autoprobe back to 1, rolled back to 2 VFs")
    assert e.value.errno == errno.ENOMEM
    assert writes == [("sriov_drivers_autoprobe", "0"), ("sriov_numvfs", "0"), ("sriov_numvfs", "4"),
                      ("sriov_drivers_autoprobe", "1"), ("sriov_numvfs", "2")]
    vfs = discover(paths).vfs
    assert [(v.driver, bool(v.netdevs)) for v in vfs] == [("mlx5_core", True)] * 2  # probed as before


def test_waiting_names_what_is_missing_on_timeout(build_host):
    _, paths = build_host({"pfs": [eth_pf(vfs={"total": 8, "count": 0, "probe": "never"})]})
    sriov.set_num_vfs(paths, ETH, 2)
    expect = sriov.expectation(paths, ETH, None)
    assert expect == sriov.Expect(driver=True, netdev=True, rdma=True)
    with pytest.raises(sriov.SriovError) as e:
        sriov.wait_ready(paths, ETH, 2, expect, 0.05, netdev="ens1f0")
    assert str(e.value) == (f"{ETH} ens1f0: 2/2 PCI, 0/2 bound: VFs not ready after 0.05s "
                            "(VF 0 0000:3b:00.1: no driver; VF 1 0000:3b:00.2: no driver)")
    off = sriov.expectation(paths, ETH, False)
    assert str(sriov.wait_ready(paths, ETH, 2, off, 0.05)) == f"{ETH}: 2/2 PCI"


def test_waiting_follows_a_slow_probe(build_host):
    _, paths = build_host({"pfs": [ib_pf(vfs={"total": 8, "count": 0, "probe": 0.2})]})
    sriov.set_num_vfs(paths, IB, 3)
    lines = []
    done = sriov.wait_ready(paths, IB, 3, sriov.expectation(paths, IB, None), 30, report=lambda p: lines.append(str(p)))
    assert done.done and str(done) == f"{IB}: 3/3 PCI, 3/3 bound, 3/3 netdev, 3/3 RDMA"
    assert f"{IB}: 3/3 PCI, 3/3 bound, 0/3 netdev, 0/3 RDMA" in lines


def test_throttled_progress_prints_changes_and_the_end():
    lines = []
    throttle = ThrottledProgress(lines.append, interval=3600)
    p = sriov.Progress(pf=ETH, netdev=None, wanted=2, pci=1, bound=None, netdevs=None, rdma=None)
    throttle(p)
    throttle(p)
    throttle(sriov.Progress(pf=ETH, netdev=None, wanted=2, pci=1, bound=0, netdevs=None, rdma=None))  # too soon
    throttle(sriov.Progress(pf=ETH, netdev=None, wanted=2, pci=2, bound=None, netdevs=None, rdma=None))  # done
    assert lines == [f"{ETH}: 1/2 PCI", f"{ETH}: 2/2 PCI"]


# --- the whole run -----------------------------------------------------------------------------------


def _claim_on(state_dir: str, address: str, device: str) -> None:
    rec = ClaimRecord(claim=ClaimRef("default", "c1", "uid-1"), state=PREPARED,
                      devices=[PreparedDevice(request="vf", pool="node1", device=device, pci_address=address,
                                              cdi_ids=[], config={})])
    CheckpointStore(os.path.join(state_dir, f"{SRIOV_DRIVER}.checkpoint.json")).save({"uid-1": rec})


def test_one_failing_pf_stops_no_other(build_host, tmp_path):
    spec = {"pfs": [eth_pf(vfs={"total": 8, "count": 0, "enableError": {"errno": "EIO"}}),
                    ib_pf(vfs={"total": 8, "count": 0, "guids": "zero"}),
                    eth_pf("0000:af:00.0", netdev="ens5f0", vfs={"total": 8, "count": 0, "probe": "never"})]}
    _, paths = build_host(spec)
    report = provision(paths, parse_config({"timeout": 0.2, "pfs": [{"match": {}, "numVFs": 2}]}),
                       Options(state_dir=str(tmp_path)))
    by = {p.plan.address: p for p in report.pfs}
    assert (by[ETH].action, by[ETH].after) == (FAILED, 0)
    assert by[ETH].problems == [f"{ETH}: write 2 to sriov_numvfs: Input/output error (EIO): the device or its firmware "
                                "refused: check dmesg; on ConnectX, SRIOV_EN / NUM_OF_VFS (mlxconfig) must allow this "
                                "many VFs; nothing was changed"]
    assert (by[IB].action, by[IB].after) == (CREATED, 2)
    assert [v["guidAction"] for v in by[IB].vfs] == ["set+rebound"] * 2
    assert [v["nodeGUID"] for v in by[IB].vfs] == ["0200:0103:0001:0002", "0200:0203:0001:0002"]
    assert by["0000:af:00.0"].action == FAILED and "VFs not ready after 0.2s" in by["0000:af:00.0"].problems[0]
    assert report.failed and not report.refused


def test_claims_refuse_a_change_and_a_rerun_changes_nothing(build_host, tmp_path):
    _, paths = build_host(HOST)
    _claim_on(str(tmp_path), "0000:3b:00.2", "vf-0000-3b-00-2")
    assert read_holders(str(tmp_path))[0][0].device == "vf-0000-3b-00-2"
    cfg = parse_config({"pfs": [{"pf": ETH, "numVFs": 4}, {"pf": IB, "numVFs": 2}]})
    first = provision(paths, cfg, Options(state_dir=str(tmp_path)))
    assert [(p.action, p.after) for p in first.pfs] == [(REFUSED, 2), (CREATED, 2)]
    tree = json.dumps(discover(paths).to_dict())
    again = provision(paths, cfg, Options(state_dir=str(tmp_path)))
    assert [p.action for p in again.pfs] == [REFUSED, UNCHANGED]
    assert [v["guidAction"] for v in again.pfs[1].vfs] == ["unchanged", "unchanged"]
    assert json.dumps(discover(paths).to_dict()) == tree
    forced = provision(paths, cfg, Options(state_dir=str(tmp_path), force=True))
    assert [(p.action, p.after) for p in forced.pfs] == [(RESIZED, 4), (UNCHANGED, 2)]


def test_a_corrupt_checkpoint_refuses_changes_to_pfs_with_vfs_it_publishes(build_host, tmp_path):
    _, paths = build_host(HOST)
    with open(tmp_path / f"{SRIOV_DRIVER}.checkpoint.json", "w") as f:
        f.write("{not json")
    cfg = parse_config({"pfs": [{"pf": ETH, "numVFs": 4}, {"pf": IB, "numVFs": 2}, {"pf": "ens5f0", "numVFs": 2}]})
    report = provision(paths, cfg, Options(state_dir=str(tmp_path)))
    # ETH has VFs its checkpoint would tell about: refused; IB and ens5f0 have none: nothing a claim could hold
    assert [(p.action, p.after) for p in report.pfs] == [(REFUSED, 2), (CREATED, 2), (CREATED, 2)]
    assert report.checkpoint_problems[0].startswith(str(tmp_path))
    assert os.path.exists(tmp_path / f"{SRIOV_DRIVER}.checkpoint.json")  # read only: left where it is
    os.rename(tmp_path / f"{SRIOV_DRIVER}.checkpoint.json", tmp_path / f"{IB_DRIVER}.checkpoint.json")
    other = provision(paths, parse_config({"pfs": [{"pf": ETH, "numVFs": 4}]}), Options(state_dir=str(tmp_path)))
    assert (other.pfs[0].action, other.pfs[0].after) == (RESIZED, 4)  # another driver's checkpoint: no matter


def test_dry_run_changes_nothing(build_host, tmp_path):
    host, paths = build_host(HOST)
    tree = json.dumps(discover(paths).to_dict())
    report = provision(paths, parse_config({"pfs": [{"match": {}, "numVFs": 3}]}), Options(state_dir=str(tmp_path),
                                                                                         dry_run=True))
    assert [p.action for p in report.pfs] == [DRY_RUN] * 3
    assert json.dumps(discover(paths).to_dict()) == tree
    assert report.to_dict()["pfs"][1]["guids"] == "derived"


def test_input_errors_change_nothing(build_host, tmp_path):
    _, paths = build_host(HOST)
    tree = json.dumps(discover(paths).to_dict())
    report = provision(paths, parse_config({"pfs": [{"pf": IB, "numVFs": 2}, {"pf": ETH, "numVFs": 9}]}),
                       Options(state_dir=str(tmp_path)))
    assert report.errors and [p.action for p in report.pfs] == [UNCHANGED, UNCHANGED]
    assert json.dumps(discover(paths).to_dict()) == tree


def test_autoprobe_off_from_the_config(build_host, tmp_path):
    _, paths = build_host(HOST)
    report = provision(paths, parse_config({"autoprobe": False, "pfs": [{"pf": "ens5f0", "numVFs": 2}]}),
                       Options(state_dir=str(tmp_path)))
    assert report.pfs[0].action == CREATED
    assert [(v["driver"], v["netdev"]) for v in report.pfs[0].vfs] == [(None, None)] * 2
    with open(os.path.join(paths.sysfs, "bus/pci/devices/0000:af:00.0/sriov_drivers_autoprobe")) as f:
        assert f.read().strip() == "0"


# --- review fixes ------------------------------------------------------------------------------------


def test_a_claim_made_while_provision_waits_for_the_host_lock_refuses_the_change(build_host, tmp_path, monkeypatch):
    import fcntl
    import threading

    from sriovdra import provisioner
    from sriovdra.host.hostlock import host_lock_path

    _, paths = build_host(HOST)
    cfg = parse_config({"pfs": [{"pf": ETH, "numVFs": 4}]})
    planned = threading.Event()
    real_plan = provisioner.plan
    monkeypatch.setattr(provisioner, "plan", lambda *a, **kw: (real_plan(*a, **kw), planned.set())[0])
    with open(host_lock_path(str(tmp_path)), "a") as serve:  # serve in the middle of a prepare
        fcntl.flock(serve, fcntl.LOCK_EX)
        result = {}
        opts = Options(state_dir=str(tmp_path))
        worker = threading.Thread(target=lambda: result.update(r=provision(paths, cfg, opts)))
        worker.start()
        planned.wait()  # planned with nothing held; the write waits for the lock we hold
        _claim_on(str(tmp_path), "0000:3b:00.2", "vf-0000-3b-00-2")
        fcntl.flock(serve, fcntl.LOCK_UN)
        worker.join()
    report = result["r"]
    assert (report.pfs[0].action, report.pfs[0].after) == (REFUSED, 2)
    assert "claims hold some: vf-0000-3b-00-2 (0000:3b:00.2) by claim default/c1" in report.pfs[0].problems[0]


def test_serves_claim_operations_hold_the_host_lock(tmp_path):
    import fcntl

    from sriovdra.driver.core import Driver, DriverSettings
    from sriovdra.host.hostlock import host_lock_path
    from sriovdra.host.paths import HostPaths

    settings = DriverSettings(driver=SRIOV_DRIVER, pool="n", cdi_dir=str(tmp_path / "cdi"),
                              checkpoint_path=str(tmp_path / f"{SRIOV_DRIVER}.checkpoint.json"),
                              paths=HostPaths.resolve(str(tmp_path)))
    driver = Driver(settings, inventory=lambda: None, claims=None)

    def free() -> bool:
        with open(host_lock_path(str(tmp_path)), "a") as other:
            try:
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            fcntl.flock(other, fcntl.LOCK_UN)
            return True

    with driver.serialized():
        with driver.serialized():  # re-entrant
            assert not free()
        assert not free()
    assert free()


def test_a_vfio_bound_vf_refuses_a_count_change_unless_forced(build_host, tmp_path):
    _, paths = build_host({"host": {"modules": ["vfio_pci"]},
                           "pfs": [eth_pf(vfs={"total": 8, "count": 2, "offset": 2,
                                               "overrides": {1: {"driver": "vfio-pci"}}})]})
    cfg = parse_config({"pfs": [{"pf": ETH, "numVFs": 0}]})
    report = provision(paths, cfg, Options(state_dir=str(tmp_path)))
    assert (report.pfs[0].action, report.pfs[0].after) == (REFUSED, 2) and report.refused
    assert "VFs 0000:3b:00.3 are bound to vfio-pci: writing 0 to sriov_numvfs blocks" in report.pfs[0].problems[0]
    forced = provision(paths, cfg, Options(state_dir=str(tmp_path), force=True))
    assert (forced.pfs[0].action, forced.pfs[0].after) == (REMOVED, 0)


def test_only_drivers_known_to_make_rdma_devices_are_waited_for(build_host):
    # an ice PF has irdma; its iavf VFs get netdevs but no RDMA device
    _, paths = build_host({"pfs": [eth_pf(vendor="8086", device="159b", driver="ice", rdma=True,
                                          vfs={"total": 8, "count": 0, "driver": "iavf", "rdma": False})]})
    sriov.set_num_vfs(paths, ETH, 2)
    done = sriov.wait_ready(paths, ETH, 2, sriov.expectation(paths, ETH, None), 5)
    assert str(done) == f"{ETH}: 2/2 PCI, 2/2 bound, 2/2 netdev"


def test_a_short_enable_is_an_error_naming_both_numbers(build_host, monkeypatch):
    _, paths = build_host({"pfs": [eth_pf(vfs={"total": 8, "count": 2, "enableLimit": 3})]})
    with pytest.raises(sriov.SriovError) as e:
        sriov.set_num_vfs(paths, ETH, 6)
    assert str(e.value).startswith(f"{ETH}: wrote 6 to sriov_numvfs, the kernel enabled 3: ")
    assert str(e.value).endswith("; rolled back to 2 VFs")
    assert sriov.read_state(paths, ETH).numvfs == 2


def test_rollback_tries_every_step_on_its_own(build_host, monkeypatch):
    _, paths = build_host({"pfs": [eth_pf(vfs={"total": 8, "count": 2, "enableError": {"errno": "EIO", "above": 2}})]})
    original = fakehost.FakeKernel.write
    calls = []

    def failing(self, path, value):
        calls.append((os.path.basename(path), value))
        if os.path.basename(path) == "sriov_drivers_autoprobe" and value == "1":
            raise OSError(errno.EPERM, os.strerror(errno.EPERM))
        return original(self, path, value)

    monkeypatch.setattr(fakehost.FakeKernel, "write", failing)
    with pytest.raises(sriov.SriovError) as e:
        sriov.set_num_vfs(paths, ETH, 4, autoprobe=False)
    assert "; putting sriov_drivers_autoprobe back to 1 failed too: " in str(e.value)
    assert str(e.value).endswith(", rolled back to 2 VFs")
    assert calls[-1] == ("sriov_numvfs", "2") and sriov.read_state(paths, ETH).numvfs == 2


def test_dry_run_sees_guid_drift_exactly(build_host, tmp_path):
    _, paths = build_host({"pfs": [ib_pf(vfs={"total": 8, "count": 2, "guids": "zero"})]})
    cfg = parse_config({"pfs": [{"pf": IB, "numVFs": 2}]})
    dry = Options(state_dir=str(tmp_path), dry_run=True)
    assert provision(paths, cfg, dry).pfs[0].action == DRY_RUN  # zero GUIDs: the GUID step would set them
    assert provision(paths, cfg, Options(state_dir=str(tmp_path))).pfs[0].action == UNCHANGED
    assert provision(paths, cfg, dry).pfs[0].action == UNCHANGED  # they are there now: nothing to do


def test_a_range_block_is_fixed_by_the_node_not_by_first_match(build_host):
    _, paths = build_host({"pfs": [ib_pf(vfs={"total": 8, "count": 0}),
                                   ib_pf("0000:86:00.0", netdev="ibp134s0", guid="0c42:a103:0001:0003",
                                         vfs={"total": 8, "count": 0})]})
    start = "0200:0000:0000:0100"
    both = {"match": {"linkTypes": ["infiniband"]}, "numVFs": 2, "guids": {"start": start}}
    alone = _plan(paths, {"pfs": [{"pf": IB, "numVFs": 2, "guids": "none"}, both]})
    assert alone.pfs[1].guid_plan == {0: 0x0200_0000_0000_0108, 1: 0x0200_0000_0000_0109}  # after IB's 8
