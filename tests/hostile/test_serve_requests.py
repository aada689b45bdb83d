"""Hostile NodePrepareResources / NodeUnprepareResources against a real `serve`: empty and huge
fields, unknown claim UIDs, namespaces and names with '/', '..' and NUL, many claims in one call,
known claims with hostile UIDs and configs. serve never crashes (the process lives on and a valid
call afterwards succeeds), every claim gets its own answer and every error names its claim, and no
file appears outside the CDI and state dirs (CDI spec names derived from claim data are encoded)."""

from __future__ import annotations

import os
import re
import uuid

import grpc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sriovdra import fakehost
from sriovdra.model import SRIOV_DRIVER
from tests.conftest import eth_pf
from tests.hostile.conftest import examples
from tests.hostile.strategies import AWKWARD, json_values
from tests.support.claims import allocated_claim, ref, vf_config
from tests.support.node import NodeFactory

VF = ["vf-0000-3b-00-2", "vf-0000-3b-00-3"]
SPEC_NAME = re.compile(r"^[A-Za-z0-9._%-]+\.json$")  # what a spec file name derived from a UID may look like
# Messages too big for one gRPC message are refused by the channel (RESOURCE_EXHAUSTED) before serve sees them.
TRANSPORT_REFUSALS = (grpc.StatusCode.RESOURCE_EXHAUSTED,)


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hostile-serve")
    host = fakehost.build({"host": {"modules": ["mlx5_core", "vfio_pci"]}, "pfs": [eth_pf()]}, str(tmp / "host"))
    factory = NodeFactory(tmp)
    n = factory.make(host.root, host.sysfs, host.dev)
    n.start(sockets=1)
    n.plugin = n.plugins()[SRIOV_DRIVER]
    n.roots = [str(tmp), factory.short]
    yield n
    n.stop()
    factory.close()


def _files(node) -> set[str]:
    """Every path under the node's dirs, outside the CDI and state dirs (where serve may write)."""
    mine = (node.cdi_dir + os.sep, node.state_dir + os.sep)
    out = set()
    for root in node.roots:
        for d, dirs, files in os.walk(root):
            for n in dirs + files:
                p = os.path.join(d, n)
                if not p.startswith(mine):
                    out.add(p)
    return out


hostile_field = st.one_of(st.sampled_from(AWKWARD), st.text(max_size=30),
                          st.builds(lambda c, n: c * n, st.sampled_from("a/.\x00é"), st.integers(300, 70_000)))
unknown_claim = st.tuples(hostile_field, hostile_field, st.one_of(hostile_field, st.uuids().map(str)))


def _call(node, method: str, claims: list[tuple[str, str, str]]):
    try:
        return getattr(node.kubelet, method)(node.plugin, claims, timeout=60)
    except grpc.RpcError as e:
        assert e.code() in TRANSPORT_REFUSALS, f"{method}: {e.code()} {e.details()[:300]}"
        return None


def _check_answers(resp, claims, method: str) -> None:
    if resp is None:
        return
    assert set(resp.claims) == {uid for _, _, uid in claims}, f"{method}: not one answer per claim"
    for ns, name, uid in claims:
        error = resp.claims[uid].error
        if error:
            assert f"claim {ns}/{name}" in error, f"{method}: error does not name the claim: {error[:300]}"


def _valid_call_works(node) -> None:
    claim = node.api.add_claim(allocated_claim(f"ok-{uuid.uuid4().hex[:8]}", VF[:1]))
    resp = node.kubelet.prepare(node.plugin, [ref(claim)])
    assert resp.claims[claim["metadata"]["uid"]].error == ""
    resp = node.kubelet.unprepare(node.plugin, [ref(claim)])
    assert resp.claims[claim["metadata"]["uid"]].error == ""
    node.api.delete_claim(*ref(claim)[:2])


@settings(max_examples=examples(40))
@given(unknown=st.lists(unknown_claim, max_size=40, unique_by=lambda c: c[2]),
       known=st.lists(st.tuples(st.one_of(st.uuids().map(str), hostile_field), json_values,
                                st.sampled_from([[VF[0]], [VF[1]], VF, ["vf-nope"], []])), max_size=3,
                      unique_by=lambda c: c[0]))
def test_hostile_prepare_and_unprepare_calls(node, unknown, known):
    before = _files(node)
    claims = []
    for i, (uid, params, devices) in enumerate(known):  # in the API, with hostile UIDs and configs
        if uid in {u for _, _, u in unknown}:
            continue
        claim = node.api.add_claim(allocated_claim(f"k{i}", devices, uid=uid,
                                                   configs=[params if i % 2 else vf_config(mtu=params)]))
        claims.append(ref(claim))
    claims += unknown
    try:
        _check_answers(_call(node, "prepare", claims), claims, "prepare")
        assert node.proc.poll() is None, "serve died:\n" + node.log()[-3000:]
        _check_answers(_call(node, "unprepare", claims), claims, "unprepare")
        assert node.proc.poll() is None, "serve died:\n" + node.log()[-3000:]
    finally:
        for ns, name, _ in claims[:len(claims) - len(unknown)]:
            node.api.delete_claim(ns, name)
    assert _files(node) == before, f"files outside the CDI and state dirs: {sorted(_files(node) - before)[:5]}"
    specs = os.listdir(node.cdi_dir) if os.path.isdir(node.cdi_dir) else []
    assert all(SPEC_NAME.match(n) for n in specs), specs
    assert specs == [], f"CDI specs left after unprepare: {specs}"
    _valid_call_works(node)


def test_empty_call_and_empty_fields(node):
    for method in ("prepare", "unprepare"):
        assert len(_call(node, method, []).claims) == 0
        resp = _call(node, method, [("", "", "")])
        _check_answers(resp, [("", "", "")], method)
    assert node.proc.poll() is None
    _valid_call_works(node)


def test_many_claims_in_one_call(node):
    claims = [("default", f"missing-{i}", str(uuid.uuid4())) for i in range(300)]
    good = node.api.add_claim(allocated_claim("many-ok", VF[:1]))
    claims.append(ref(good))
    resp = _call(node, "prepare", claims)
    _check_answers(resp, claims, "prepare")
    assert resp.claims[good["metadata"]["uid"]].error == ""  # one good claim among 300 bad ones
    assert "cannot read it from the API server" in resp.claims[claims[0][2]].error
    _check_answers(_call(node, "unprepare", claims), claims, "unprepare")
    assert os.listdir(node.cdi_dir) == []
    node.api.delete_claim("default", "many-ok")
