"""sriovdra.kube.status.merge_devices: our entries replace ours, and a condition's lastTransitionTime
moves only when its status does (the Kubernetes condition convention), not on every write."""

import copy

from sriovdra.kube.status import merge_devices, ready_entry
from sriovdra.model import IB_DRIVER

EARLIER = "2020-01-01T00:00:00Z"


def _entry(device="ib-0", share_id=None, partition=("True", "Member", "in partition 0x8001"), driver=IB_DRIVER):
    extra = [("IBPartitionReady", *partition)] if partition else []
    return ready_entry(driver, "node1", device, {"x": 1}, share_id=share_id, extra_conditions=extra)


def _written_earlier(entry: dict) -> dict:
    entry = copy.deepcopy(entry)
    for cond in entry["conditions"]:
        cond["lastTransitionTime"] = EARLIER
    return entry


def _times(entry: dict) -> dict:
    return {c["type"]: c["lastTransitionTime"] for c in entry["conditions"]}


def test_rewriting_the_same_status_keeps_the_transition_times():
    current = [_written_earlier(_entry())]
    (merged,) = merge_devices(current, [_entry()], IB_DRIVER)
    assert _times(merged) == {"Ready": EARLIER, "IBPartitionReady": EARLIER}


def test_a_changed_status_or_a_new_condition_gets_a_new_time_the_others_keep_theirs():
    current = [_written_earlier(_entry(partition=("False", "NotAMember", "not a member")))]
    ours = _entry(partition=("True", "Member", "in partition 0x8001"))
    (merged,) = merge_devices(current, [ours], IB_DRIVER)
    assert _times(merged) == {"Ready": EARLIER, "IBPartitionReady": _times(ours)["IBPartitionReady"]}
    assert _times(ours)["IBPartitionReady"] != EARLIER

    current = [_written_earlier(_entry(partition=None))]
    (merged,) = merge_devices(current, [_entry()], IB_DRIVER)
    assert merged["conditions"][1]["lastTransitionTime"] != EARLIER  # IBPartitionReady is new
    assert _times(merged)["Ready"] == EARLIER


def test_only_the_same_device_and_share_donates_its_times_and_other_entries_stay():
    other_driver = _written_earlier(_entry(driver="gpu.example.com"))
    other_share = _written_earlier(_entry(share_id="s1"))
    other_device = _written_earlier(_entry(device="ib-1"))
    ours = _entry(share_id="s2")
    snapshot = copy.deepcopy(ours)
    merged = merge_devices([other_driver, other_share, other_device], [ours], IB_DRIVER)
    assert merged[:3] == [other_driver, other_share, other_device]
    assert merged[3] == ours and EARLIER not in _times(merged[3]).values()
    assert ours == snapshot  # the queued entries are not modified (a 409 retries with them)


def test_the_replaced_entry_keeps_the_new_data_and_messages():
    current = [_written_earlier(_entry(partition=("True", "Member", "old message")))]
    ours = _entry(partition=("True", "Member", "new message"))
    ours["data"] = {"x": 2}
    (merged,) = merge_devices(current, [ours], IB_DRIVER)
    assert merged["data"] == {"x": 2} and merged["conditions"][1]["message"] == "new message"
    assert _times(merged)["IBPartitionReady"] == EARLIER
