"""What the webhook refuses, a node refuses too: the same decoder runs at NodePrepareResources
(for claims created before the webhook, or with it switched off)."""

import os

import pytest

from sriovdra.model import SRIOV_DRIVER
from tests.conftest import eth_pf
from tests.support.node import make_node  # noqa: F401 - the fixture, reused
from tests.support.claims import allocated_claim, ref, vf_config

VF = ["vf-0000-3b-00-2", "vf-0000-3b-00-3"]


@pytest.fixture
def node(make_node):  # noqa: F811 - make_node is the fixture imported above
    n = make_node({"host": {"modules": ["mlx5_core"]}, "pfs": [eth_pf()]})
    n.start()
    yield n
    n.stop()


@pytest.mark.parametrize("if_name, why", [("eth0", "the pod's primary interface"), ("lo", "the pod's loopback")])
def test_prepare_refuses_the_pods_own_interface_names(node, if_name, why):
    plugin = node.plugins()[SRIOV_DRIVER]
    bad = node.api.add_claim(allocated_claim("bad", VF[:1], configs=[vf_config(ifName=if_name)]))
    good = node.api.add_claim(allocated_claim("good", VF[1:], configs=[vf_config(ifName="eth1")]))
    resp = node.kubelet.prepare(plugin, [ref(bad), ref(good)])
    assert resp.claims[good["metadata"]["uid"]].error == ""  # the other claim is served regardless
    error = resp.claims[bad["metadata"]["uid"]].error
    assert f"config[0] (FromClaim) for request 'vf': VfConfig.ifName: '{if_name}' is {why}" in error, error
    assert not os.path.exists(os.path.join(node.cdi_dir, f"{SRIOV_DRIVER}-vf_{bad['metadata']['uid']}.json"))
