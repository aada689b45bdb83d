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
