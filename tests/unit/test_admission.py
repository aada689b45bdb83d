"""sriovdra.admission: AdmissionReviews of claims and templates in, the API server's answer out."""

import json

import pytest

from sriovdra.admission import ReviewError, decide, parse_review, review
from sriovdra.claim import ClaimError, ClaimRef, config_for, parse_allocation
from sriovdra.config import ConfigError, decode_vf_config
from tests.support.claims import allocated_claim, vf_config
from tests.webhook.reviews import (
    IB_DRIVER,
    KINDS,
    SRIOV_DRIVER,
    VERSIONS,
    VF_CLASS,
    claim_object,
    device_class_object,
    ib,
    ib_config,
    opaque,
    seed,
    vf,
)
from tests.webhook.reviews import review as make_review

KINDS_VERSIONS = [(k, v) for k in KINDS for v in VERSIONS]


def _answer(obj, **kw) -> dict:
    return review(json.dumps(make_review(obj, **kw)).encode())[2]["response"]


def _spec_path(kind: str) -> str:
    return "spec" if kind == "ResourceClaim" else "spec.spec"


def test_the_objects_used_here_are_valid_kubernetes_1_37():
    import kubernetes_validate

    for kind, version in KINDS_VERSIONS:
        obj = claim_object(kind, version, [ib(), vf(mtu=9000), opaque("gpu.example.com", {"any": "thing"})])
        kubernetes_validate.validate(obj, "1.37", strict=True)
    for version in VERSIONS:
        kubernetes_validate.validate(device_class_object(version, [ib(), opaque("gpu.example.com", {})]), "1.37",
                                     strict=True)


def test_the_seeds_manifests_are_accepted_verbatim():
    template = seed("sriov-vf-template.yaml")  # the SR-IOV seed's ResourceClaimTemplate
    assert _answer(template, uid="u") == {"uid": "u", "allowed": True}
    claim = claim_object("ResourceClaim", "v1", seed("ib-config.yaml")["config"])  # the IB seed's config block
    assert _answer(claim)["allowed"] is True


@pytest.mark.parametrize("kind, version", KINDS_VERSIONS)
def test_ib_seed_config_accepted_and_pkey_0_refused_in_every_version_and_kind(kind, version):
    ok = claim_object(kind, version, [ib(pkey=32769, mtu=4096, trafficClass=128)])
    assert _answer(ok, uid="uid-ok") == {"uid": "uid-ok", "allowed": True}
    bad = _answer(claim_object(kind, version, [ib(pkey=0)]), uid="uid-bad")
    assert bad["uid"] == "uid-bad" and bad["allowed"] is False
    status = bad["status"]
    assert (status["status"], status["reason"], status["code"]) == ("Failure", "Invalid", 422)
    assert status["message"] == (
        f"1 configs failed to validate: object at {_spec_path(kind)}.devices.config[0].opaque.parameters is invalid: "
        "ib.sigs.k8s.io: IbConfig.pkey: pkey must be in range 0x0001-0xFFFF, got 0x0000")
    assert status["details"] == {
        "name": "c1", "group": "resource.k8s.io", "kind": kind,
        "causes": [{"reason": "FieldValueInvalid", "field": f"{_spec_path(kind)}.devices.config[0].opaque.parameters",
                    "message": "ib.sigs.k8s.io: IbConfig.pkey: pkey must be in range 0x0001-0xFFFF, got 0x0000"}]}


@pytest.mark.parametrize("mtu", [0, 128, 3000, 9000])
def test_ib_mtus_the_reference_e2e_rejects(mtu):
    message = _answer(claim_object("ResourceClaim", "v1", [ib(mtu=mtu)]))["status"]["message"]
    assert f"invalid IB MTU value: {mtu}, must be one of 256, 512, 1024, 2048, 4096" in message


@pytest.mark.parametrize("parameters, message", [
    (ib_config(partition=3), "IbConfig: unknown field(s) partition"),
    ({**ib_config(), "kind": "VfConfig"}, "expected apiVersion ib.resource.sigs.k8s.io/v1alpha1 and kind IbConfig, "
                                          "got apiVersion 'ib.resource.sigs.k8s.io/v1alpha1' and kind 'VfConfig'"),
    ({"apiVersion": "ib.resource.sigs.k8s.io/v1alpha1", "kind": "GpuConfig"}, "kind 'GpuConfig'"),
    ("pkey=1", "parameters: expected an object, got a string"),
    (None, "parameters: expected an object"),
])
def test_unknown_fields_wrong_kinds_and_non_objects_are_refused(parameters, message):
    answer = _answer(claim_object("ResourceClaim", "v1beta2", [opaque(IB_DRIVER, parameters)]))
    assert answer["allowed"] is False and message in answer["status"]["message"]


@pytest.mark.parametrize("fields, message", [
    ({"vlan": 5000}, "VfConfig.vlan: must be in range 0-4094, got 5000"),
    ({"ifName": "eth0"}, "VfConfig.ifName: 'eth0' is the pod's primary interface"),
    ({"ifName": "lo"}, "VfConfig.ifName: 'lo' is the pod's loopback"),
    ({"mac": "01:00:5e:00:00:01"}, "is not a unicast address"),
    ({"mtu": 9000, "colour": "red"}, "VfConfig: unknown field(s) colour"),
])
def test_vf_config_errors_name_the_sriov_driver(fields, message):
    obj = claim_object("ResourceClaimTemplate", "v1", [vf(**fields)], device_class=VF_CLASS)
    status = _answer(obj)["status"]
    assert status["message"].startswith("1 configs failed to validate: object at "
                                        "spec.spec.devices.config[0].opaque.parameters is invalid: "
                                        "sriovnetwork.openshift.io: ")
    assert message in status["message"]


def test_a_valid_vf_config_is_accepted():
    obj = claim_object("ResourceClaim", "v1", [vf(ifName="net1", mtu=9000, vlan=100, ips=["192.0.2.5/24"])],
                       device_class=VF_CLASS)
    assert _answer(obj)["allowed"] is True


def test_other_drivers_configs_are_not_ours_to_judge():
    obj = claim_object("ResourceClaim", "v1", [opaque("gpu.example.com", {"kind": "Whatever", "pkey": 0}),
                                              opaque("gpu.example.com", "not even an object"),
                                              {"requests": ["dev"]},  # no opaque part: nothing to decode
                                              ib()])
    assert _answer(obj)["allowed"] is True


def test_every_failing_config_is_counted_one_line_each_in_order():
    obj = claim_object("ResourceClaim", "v1beta1", [ib(pkey=0), ib(), opaque("x.example.com", {}), vf(vlan=4095),
                                                   ib(mtu=128)])
    status = _answer(obj)["status"]
    lines = status["message"].split("\n")
    assert lines[0].startswith("3 configs failed to validate: object at spec.devices.config[0].opaque.parameters "
                               "is invalid: ib.sigs.k8s.io: IbConfig.pkey:") and lines[0].endswith(";")
    assert lines[1].startswith("object at spec.devices.config[3].opaque.parameters is invalid: "
                               "sriovnetwork.openshift.io: VfConfig.vlan: must be in range 0-4094, got 4095;")
    assert lines[2].startswith("object at spec.devices.config[4].opaque.parameters is invalid: ib.sigs.k8s.io: "
                               "IbConfig.mtu: invalid IB MTU value: 128")
    assert [c["field"] for c in status["details"]["causes"]] == [
        f"spec.devices.config[{i}].opaque.parameters" for i in (0, 3, 4)]


@pytest.mark.parametrize("overrides", [
    {"kind": "Pod", "group": ""},
    {"kind": "ResourceClaim", "group": "example.com"},
    {"kind": "ResourceSlice"},
    {"operation": "DELETE"},
    {"operation": "CONNECT"},
])
def test_objects_and_operations_that_are_not_ours_are_allowed(overrides):
    obj = claim_object("ResourceClaim", "v1", [ib(pkey=0)])  # would be refused if it were reviewed
    assert _answer(obj, **overrides)["allowed"] is True


@pytest.mark.parametrize("version", VERSIONS)
def test_device_class_configs_are_validated_as_prepare_decodes_them(version):
    """prepare decodes a class's configs for every claim of the class: a bad one must not get in."""
    ok = device_class_object(version, [ib(pkey=32769, mtu=4096), opaque("gpu.example.com", {"pkey": 0})])
    assert _answer(ok, uid="dc") == {"uid": "dc", "allowed": True}
    bad = _answer(device_class_object(version, [vf(), ib(mtu=128)], name=VF_CLASS))
    assert bad["allowed"] is False
    assert bad["status"]["message"] == (
        "1 configs failed to validate: object at spec.config[1].opaque.parameters is invalid: ib.sigs.k8s.io: "
        "IbConfig.mtu: invalid IB MTU value: 128, must be one of 256, 512, 1024, 2048, 4096")
    assert bad["status"]["details"]["kind"] == "DeviceClass"
    assert [c["field"] for c in bad["status"]["details"]["causes"]] == ["spec.config[1].opaque.parameters"]


def test_device_class_shape_errors_and_unchanged_updates():
    obj = device_class_object("v1", [])
    obj["spec"]["config"] = {"opaque": ib()["opaque"]}
    assert _answer(obj)["status"]["message"] == "spec.config: expected a list, got an object"
    old = device_class_object("v1", [ib(pkey=0)])
    relabeled = json.loads(json.dumps(old))
    relabeled["metadata"]["labels"] = {"team": "a"}
    assert _answer(relabeled, old=old, operation="UPDATE")["allowed"] is True
    assert _answer(device_class_object("v1", [ib(pkey=0, mtu=512)]), old=old, operation="UPDATE")["allowed"] is False


def test_delete_without_object_is_allowed():
    old = claim_object("ResourceClaim", "v1", [ib(pkey=0)])
    assert _answer(None, old=old, operation="DELETE", uid="d") == {"uid": "d", "allowed": True}


def test_update_leaving_invalid_configs_unchanged_is_allowed_with_a_warning():
    """A claim made before the webhook existed must stay deletable (finalizer removal is an UPDATE)."""
    old = claim_object("ResourceClaim", "v1", [ib(pkey=0)])
    new = json.loads(json.dumps(old))
    new["metadata"]["finalizers"] = []
    answer = _answer(new, old=old, operation="UPDATE")
    assert answer["allowed"] is True
    assert answer["warnings"] == ["unchanged but invalid: object at spec.devices.config[0].opaque.parameters is "
                                  "invalid: ib.sigs.k8s.io: IbConfig.pkey: pkey must be in range 0x0001-0xFFFF, "
                                  "got 0x0000"]
    changed = claim_object("ResourceClaim", "v1", [ib(pkey=0, mtu=512)])
    assert _answer(changed, old=old, operation="UPDATE")["allowed"] is False


def test_an_unknown_version_of_our_kinds_is_allowed_with_a_warning():
    obj = claim_object("ResourceClaim", "v1alpha3", [ib(pkey=0)])
    answer = _answer(obj)
    assert answer["allowed"] is True
    assert answer["warnings"] == ["resource.k8s.io/v1alpha3 ResourceClaim is not validated by the sriovdra webhook "
                                  "(it knows v1, v1beta1, v1beta2)"]


@pytest.mark.parametrize("config, problem", [
    ("x", "spec.devices.config: expected a list, got a string"),
    ([ib(), 7], "spec.devices.config[1]: expected an object, got an integer"),
])
def test_an_object_without_a_claim_spec_shape_is_refused_naming_the_field(config, problem):
    obj = claim_object("ResourceClaim", "v1", [])
    obj["spec"]["devices"]["config"] = config
    status = _answer(obj)["status"]
    assert status["message"] == problem and status["reason"] == "Invalid" and "causes" not in status["details"]


def test_the_answer_echoes_the_reviews_api_version():
    body = make_review(claim_object("ResourceClaim", "v1", [ib()]), uid="u1")
    body["apiVersion"] = "admission.k8s.io/v1beta1"
    assert review(body)[2] == {"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview",
                               "response": {"uid": "u1", "allowed": True}}


def _without(path: list[str]) -> dict:
    body = make_review(claim_object("ResourceClaim", "v1", [ib()]))
    obj = body
    for key in path[:-1]:
        obj = obj[key]
    del obj[path[-1]]
    return body


@pytest.mark.parametrize("body, message", [
    (b"{not json", "body is not JSON"),
    (b"\xff\xfe", "body is not JSON"),
    (b"[]", "expected an AdmissionReview object, got list"),
    (json.dumps({"apiVersion": "v1", "kind": "AdmissionReview"}).encode(),
     "expected apiVersion admission.k8s.io/v1 or admission.k8s.io/v1beta1 and kind AdmissionReview, got "
     "apiVersion 'v1'"),
    (json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}).encode(),
     "request: expected an object, got NoneType"),
    (_without(["request", "uid"]), "request.uid: expected a non-empty string, got None"),
    (_without(["request", "kind"]), "request.kind: expected an object with group, version and kind, got None"),
    (_without(["request", "kind", "version"]), "request.kind.version: expected a non-empty string"),
    (_without(["request", "operation"]), "request.operation: expected a non-empty string"),
    (_without(["request", "object"]), "request.object: expected the ResourceClaim being created, got NoneType"),
])
def test_malformed_reviews_raise_review_error_naming_the_field(body, message):
    with pytest.raises(ReviewError) as e:
        review(body)
    assert message in str(e.value)


def test_parse_then_decide_is_what_review_does():
    body = make_review(claim_object("ResourceClaim", "v1", [ib(mtu=3000)]), uid="u9")
    req = parse_review(json.dumps(body))
    assert (req.uid, req.group, req.version, req.kind, req.operation, req.object_name) == (
        "u9", "resource.k8s.io", "v1", "ResourceClaim", "CREATE", "default/c1")
    verdict = decide(req)
    assert not verdict.allowed and [f.path for f in verdict.failures] == ["spec.devices.config[0]"]


@pytest.mark.parametrize("name, why", [("eth0", "the pod's primary interface"), ("lo", "the pod's loopback")])
def test_decode_refuses_the_pods_own_interface_names_so_prepare_does_too(name, why):
    with pytest.raises(ConfigError, match=f"VfConfig.ifName: '{name}' is {why}"):
        decode_vf_config(vf_config(ifName=name))
    assert decode_vf_config(vf_config(ifName="eth1")).if_name == "eth1"
    claim = allocated_claim("c", ["vf-a"], configs=[vf_config(ifName=name)])
    md = claim["metadata"]
    alloc = parse_allocation(claim, ClaimRef(md["namespace"], md["name"], md["uid"]), SRIOV_DRIVER)
    with pytest.raises(ClaimError, match=rf"config\[0\] \(FromClaim\) for request 'vf': VfConfig.ifName: '{name}'"):
        config_for(alloc, "vf")
