"""The seeds' usage manifests, verbatim, through allocation-shaped claims and prepare."""

import json
import os
import re

import pytest
import yaml

from sriovdra.model import IB_DRIVER, SRIOV_DRIVER
from tests.conftest import REPO, eth_pf, ib_pf
from tests.support.claims import IB_CLASS, allocate, ref

DATA = REPO / "tests" / "data" / "seeds"
SEEDS = REPO.parent / "shared" / "seeds"


def _blocks(path):
    return re.findall(r"```yaml\n(.*?)```", path.read_text(), re.S)


@pytest.mark.skipif(not SEEDS.is_dir(), reason="shared/seeds is not beside this checkout")
def test_the_copies_are_the_seeds_blocks():
    sriov = _blocks(SEEDS / "000_fff0242ca3114b5c.txt")
    ib = _blocks(SEEDS / "003_f8d52b18ab654d28.txt")
    assert (DATA / "sriov-vf-template.yaml").read_text() == sriov[0]
    assert (DATA / "sriov-workload-pod.yaml").read_text() == sriov[1]
    assert (DATA / "ib-config.yaml").read_text() == ib[0]


def test_seed_objects_are_valid_kubernetes_1_37():
    import kubernetes_validate

    for name in ("sriov-vf-template.yaml", "sriov-workload-pod.yaml"):
        kubernetes_validate.validate(yaml.safe_load((DATA / name).read_text()), "1.37", strict=True)


def test_seed_manifests_prepare(make_node):
    node = make_node({"host": {"modules": ["mlx5_core", "mlx5_ib", "ib_uverbs"]}, "pfs": [eth_pf(), ib_pf()]})
    node.start(sockets=2)
    try:
        plugins = node.plugins()
        free = {SRIOV_DRIVER: ["vf-0000-3b-00-2", "vf-0000-3b-00-3"], IB_DRIVER: ["ib-0000-5e-00-1-p1"]}
        # The SR-IOV seed: its ResourceClaimTemplate, as the claim the pod's resourceClaims entry creates.
        template = yaml.safe_load((DATA / "sriov-vf-template.yaml").read_text())
        vf = node.api.add_claim(allocate(template["spec"]["spec"], "sriov-workload-vf", free))
        # The InfiniBand seed: its IbConfig block on a claim for one IB VF.
        spec = {"devices": {"requests": [{"name": "ib", "exactly": {"deviceClassName": IB_CLASS}}],
                            **yaml.safe_load((DATA / "ib-config.yaml").read_text())}}
        spec["devices"]["config"][0]["requests"] = ["ib"]
        ib = node.api.add_claim(allocate(spec, "ib-vf", free))
        for claim in (vf, ib):
            import kubernetes_validate

            kubernetes_validate.validate(claim, "1.37", strict=True)
        for driver, claim in ((SRIOV_DRIVER, vf), (IB_DRIVER, ib)):
            entry = node.kubelet.prepare(plugins[driver], [ref(claim)]).claims[claim["metadata"]["uid"]]
            assert entry.error == "" and len(entry.devices) == 1
        ib_spec = json.load(open(os.path.join(node.cdi_dir, f"{IB_DRIVER}-port_{ib['metadata']['uid']}.json")))
        env = ib_spec["devices"][0]["containerEdits"]["env"]
        assert {"IB_DEVICE_0_PKEY=0x8001", "IB_DEVICE_0_TRAFFIC_CLASS=128", "IB_DEVICE_0_MTU=4096"} <= set(env)
    finally:
        node.stop()
