"""The checkpoint file: versioned, checksummed, atomic; bad files are set aside, never fatal."""

import json
import os

from sriovdra.checkpoint import PREPARED, CheckpointStore, ClaimRecord, PreparedDevice, decode, encode
from sriovdra.claim import ClaimRef


def _records():
    dev = PreparedDevice("vf", "node1", "vf-0000-3b-00-2", "0000:3b:00.2", ["k/vf=x"], {"mtu": 9000},
                         attributes={"vfID": 0})
    return {"u1": ClaimRecord(ClaimRef("default", "c1", "u1"), PREPARED, [dev],
                              specs={"s.json": {"cdiVersion": "0.3.0"}},
                              pods=["p1"], updated=5.0)}


def test_round_trip(tmp_path):
    store = CheckpointStore(str(tmp_path / "state" / "cp.json"))
    store.save(_records())
    assert store.load().records == _records()
    assert oct(os.stat(store.path).st_mode & 0o777) == "0o600"
    assert decode(encode(_records())) == _records()


def test_corrupt_truncated_and_foreign_files_are_set_aside(tmp_path):
    path = tmp_path / "cp.json"
    good = json.dumps(encode(_records()))
    for content, problem in [(good[: len(good) // 2], "cp.json: "), ("[]", "not a JSON object"),
                             (good.replace('"mtu": 9000', '"mtu": 1500'), "checksum mismatch"),
                             (good.replace('"version": 1', '"version": 9'), "version 9, this driver reads version 1")]:
        path.write_text(content)
        loaded = CheckpointStore(str(path)).load()
        assert loaded.records == {} and problem in loaded.problem
        assert open(loaded.set_aside).read() == content  # kept for inspection
        assert not path.exists()
        os.unlink(loaded.set_aside)


def test_missing_file_is_an_empty_state(tmp_path):
    loaded = CheckpointStore(str(tmp_path / "none.json")).load()
    assert loaded.records == {} and loaded.problem is None


def test_rolling_update_twin_publishes_what_the_other_prepared(tmp_path, demo_inventories):
    """Both instances of a rolling-update pair must publish the same slices: published() reads
    the shared checkpoint, not only the records this process last loaded."""
    from sriovdra.driver.core import Driver, DriverSettings
    from sriovdra.host.paths import HostPaths

    inv = demo_inventories["ethernet-baremetal"]
    settings = DriverSettings("sriovnetwork.openshift.io", "node1", str(tmp_path / "cdi"), str(tmp_path / "cp.json"),
                              HostPaths(), serialize_lock=str(tmp_path / "serialize.lock"))
    twin = Driver(settings, lambda: inv, claims=None)
    snapshot = dict(inv.dra_devices()[0].attributes, rdmaCapable=True, frozen=1)
    dev = PreparedDevice("vf", "node1", inv.dra_devices()[0].name, "0000:3b:00.2", ["k/vf=x"], {},
                         attributes=snapshot)
    CheckpointStore(settings.checkpoint_path).save({"u1": ClaimRecord(ClaimRef("d", "c", "u1"), PREPARED, [dev])})
    published = {d.name: d for d in twin.published(inv)}
    assert published[dev.device].attributes["frozen"] == 1


# The previous release's record fields: its from_dict was cls(**d), which fails on any other key.
_OLD_DEVICE = ("request", "pool", "device", "pci_address", "cdi_ids", "config", "port", "rdma_device", "netdev",
               "admin_access", "share_id", "original_driver", "attributes", "env_index", "if_name", "attachment")
_OLD_ATTACHMENT = ("pod", "sandbox", "netns", "pod_name", "state", "if_name", "original", "ifindex", "mac", "mtu",
                   "ips", "ipam", "rdma", "vf_original", "pf", "vf")


def _old_decode(doc: dict) -> list:
    """The previous release's decoder, as far as records go: cls(**d) with its field set."""
    from dataclasses import make_dataclass

    old_dev = make_dataclass("OldDevice", [(n, object, None) for n in _OLD_DEVICE])
    old_att = make_dataclass("OldAttachment", [(n, object, None) for n in _OLD_ATTACHMENT])
    out = []
    for rec in doc["claims"].values():
        for d in rec["devices"]:
            d = dict(d)
            att = d.pop("attachment", None)
            out.append(old_dev(**d, attachment=old_att(**att) if att else None))
    return out


def test_a_checkpoint_written_now_reads_with_the_previous_releases_decoder():
    from sriovdra.checkpoint import Attachment

    records = _records()
    records["u1"].devices[0].attachment = Attachment(pod="p1", sandbox="s", netns="/run/netns/x", pod_name="d/p")
    doc = json.loads(json.dumps(encode(records)))
    [dev] = _old_decode(doc)  # no TypeError: no key the old release does not know
    assert dev.device == "vf-0000-3b-00-2" and dev.attachment.pod == "p1"
    assert decode(doc) == records  # and this release reads back what it wrote (unset keys default to None)


def test_keys_of_a_newer_release_are_ignored_on_load():
    doc = encode(_records())
    claims = json.loads(json.dumps(doc["claims"]))
    claims["u1"]["future"] = 1
    claims["u1"]["devices"][0]["future"] = {"x": 1}
    claims["u1"]["devices"][0]["attachment"] = {"pod": "p1", "sandbox": "s", "netns": None, "pod_name": "d/p",
                                                "future": True}
    from sriovdra.checkpoint import _checksum

    loaded = decode({"version": 1, "checksum": _checksum(claims), "claims": claims})
    assert loaded["u1"].devices[0].attachment.pod == "p1"
    assert loaded["u1"].devices[0].device == "vf-0000-3b-00-2"


def test_a_twin_never_sets_the_shared_file_aside_nor_loses_its_records(tmp_path, demo_inventories):
    """serialized() re-reads the file the twin may have written; a file it cannot read stays where it is
    (it may be the newer twin's), and this process keeps its records instead of saving nothing."""
    from sriovdra.driver.core import Driver, DriverSettings
    from sriovdra.host.paths import HostPaths

    inv = demo_inventories["ethernet-baremetal"]
    settings = DriverSettings("sriovnetwork.openshift.io", "node1", str(tmp_path / "cdi"), str(tmp_path / "cp.json"),
                              HostPaths(), serialize_lock=str(tmp_path / "serialize.lock"))
    twin = Driver(settings, lambda: inv, claims=None)
    twin.records = _records()
    content = json.dumps(dict(encode(_records()), version=2))  # a format this release does not read
    (tmp_path / "cp.json").write_text(content)
    with twin.serialized():
        assert twin.records == _records()
    assert (tmp_path / "cp.json").read_text() == content
    assert [p.name for p in tmp_path.iterdir() if ".corrupt-" in p.name] == []


def test_the_file_is_encode_on_one_line():
    from sriovdra.checkpoint import encode_bytes

    raw = encode_bytes(_records())
    assert json.loads(raw) == encode(_records())
    assert decode(json.loads(raw)) == _records()
    assert raw.endswith(b"\n") and b"\n" not in raw[:-1]
