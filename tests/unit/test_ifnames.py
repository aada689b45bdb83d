"""Pod-side interface names: explicit names kept, net1, net2... otherwise, never two alike."""

from sriovdra.driver.ifnames import pick_names


def test_auto_names_skip_taken_and_reserved():
    assert pick_names([None, None]) == ["net1", "net2"]
    assert pick_names([None, None], {"net1", "net3"}) == ["net2", "net4"]


def test_explicit_names_kept_and_clashes_numbered():
    assert pick_names(["dpdk0", None, "dpdk0"]) == ["dpdk0", "net1", "dpdk0-2"]
    assert pick_names(["net1", None]) == ["net1", "net2"]  # an explicit net1 is not handed out twice
    assert pick_names(["eth0"]) == ["eth0-2"]  # the pod's CNI interface keeps its name


def test_suffix_keeps_names_within_ifnamsiz():
    long = "a" * 15
    names = pick_names([long, long, long])
    assert names == [long, "a" * 13 + "-2", "a" * 13 + "-3"]
    assert all(len(n) <= 15 for n in names)
