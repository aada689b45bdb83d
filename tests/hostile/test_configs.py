"""Opaque configs (VfConfig, IbConfig) from arbitrary JSON: never an unhandled exception, and every
rejection names the field it is about ('VfConfig.mtu: ...'), as prepare and the webhook report it."""

from __future__ import annotations

import dataclasses
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from sriovdra.admission import review
from sriovdra.claim import ClaimError, ClaimRef, config_for, parse_allocation
from sriovdra.config import (
    IB_API_VERSION,
    VF_API_VERSION,
    ConfigError,
    IbConfig,
    VfConfig,
    decode_ib_config,
    decode_vf_config,
)
from sriovdra.model import IB_DRIVER, SRIOV_DRIVER
from tests.hostile.conftest import examples
from tests.hostile.strategies import awkward_text, json_values
from tests.support.claims import allocated_claim

KINDS = {
    "VfConfig": (VF_API_VERSION, VfConfig, decode_vf_config, SRIOV_DRIVER),
    "IbConfig": (IB_API_VERSION, IbConfig, decode_ib_config, IB_DRIVER),
}
FIELDS = {kind: sorted(f.metadata["json"] for f in dataclasses.fields(cls)) for kind, (_, cls, _, _) in KINDS.items()}
MAX_MESSAGE = 2000  # a rejection quotes what it refused, but never a huge value whole


def _header(kind: str) -> dict:
    return {"apiVersion": KINDS[kind][0], "kind": kind}


_JSON_TYPES = {"int": int, "str": str, "bool": bool, "tuple": list, "dict": dict}


def _check_accepted(kind: str, params: dict, cfg) -> None:
    """What is accepted had the declared JSON type (no 5 taken as an address, no true as 1), goes
    into checkpoints and claim status as JSON, and decodes again to the same config."""
    for f in dataclasses.fields(KINDS[kind][1]):
        raw = params.get(f.metadata["json"])
        if raw is not None:
            want = _JSON_TYPES[str(f.type).split(" ")[0].split("[")[0]]
            assert type(raw) is want, f"{kind}.{f.metadata['json']}: {raw!r} accepted as {f.type}"
    for route in params.get("routes") or []:
        assert isinstance(route["dst"], str) and isinstance(route.get("gw", ""), str), route
    json.dumps(cfg.to_dict())
    assert KINDS[kind][2]({**_header(kind), **cfg.to_dict()}) == cfg


def _named_fields(kind: str, message: str) -> set[str]:
    """The top-level fields a ConfigError message blames ('VfConfig.ips[0]: ...' blames ips)."""
    named = set()
    for part in message.split("; "):
        if part.startswith(f"{kind}."):
            named.add(part[len(kind) + 1:].split(":", 1)[0].split("[", 1)[0].split(".", 1)[0])
    return named


field_values = st.one_of(json_values, st.sampled_from([
    # near misses of valid values: right type, wrong content
    "vfio-pci", "net1", "eth0", "lo", "02:00:00:00:00:01", "01:00:00:00:00:01", "802.1Q", "auto",
    ["192.0.2.5/24"], ["192.0.2.5"], [{"dst": "10.0.0.0/8", "gw": "192.0.2.1"}], [{"dst": 5}],
    [{"dst": "0/0", "gw": 1}],
    {"type": "host-local"}, {"type": 1}, 1500, 67, 0x8001, 0x8000, 4096, 3000, 256, -1, True]))


@settings(max_examples=examples(300))
@given(kind=st.sampled_from(sorted(KINDS)), field=st.one_of(st.sampled_from(sorted(set(sum(FIELDS.values(), [])))),
                                                             awkward_text), value=field_values)
def test_one_field_is_accepted_or_refused_by_name(kind, field, value):
    _, cls, decode, _ = KINDS[kind]
    if field in ("apiVersion", "kind"):
        return
    params = {**_header(kind), field: value}
    try:
        cfg = decode(params)
    except ConfigError as e:
        message = str(e)
        assert len(message) < MAX_MESSAGE, message[:200]
        if field in FIELDS[kind]:
            assert _named_fields(kind, message) == {field}, message
        else:
            assert message.startswith(f"{kind}: unknown field(s) ") and repr(field)[1:-1][:20] in message \
                or field[:20] in message, message[:300]
        return
    _check_accepted(kind, params, cfg)


@settings(max_examples=examples(300))
@given(kind=st.sampled_from(sorted(KINDS)), data=st.data())
def test_many_fields_the_blamed_one_is_bad_on_its_own(kind, data):
    _, cls, decode, _ = KINDS[kind]
    fields = data.draw(st.dictionaries(st.sampled_from(FIELDS[kind]), field_values, max_size=6))
    try:
        cfg = decode({**_header(kind), **fields})
    except ConfigError as e:
        blamed = _named_fields(kind, str(e))
        assert blamed and blamed <= set(fields), str(e)[:300]
        for name in blamed - {"ipam", "minTxRate"}:  # those two are about a pair of fields
            try:
                decode({**_header(kind), name: fields[name]})
            except ConfigError:
                continue
            raise AssertionError(f"{e} blames {name}, but {name}={fields[name]!r} alone decodes") from None
        return
    _check_accepted(kind, fields, cfg)


@settings(max_examples=examples(200))
@given(params=json_values, kind=st.sampled_from(sorted(KINDS)))
def test_any_json_value_as_parameters(params, kind):
    try:
        KINDS[kind][2](params)
    except ConfigError as e:
        assert str(e).startswith(("parameters:", f"{kind}")), str(e)[:200]
        assert len(str(e)) < MAX_MESSAGE


@settings(max_examples=examples(150))
@given(kind=st.sampled_from(sorted(KINDS)), configs=st.lists(json_values, max_size=3),
       requests=st.one_of(st.none(), json_values))
def test_claims_with_hostile_configs_fail_by_index_or_decode(kind, configs, requests):
    """Through the claim parser, as prepare sees them: a ClaimError naming config[i], never a crash."""
    driver = KINDS[kind][3]
    claim = allocated_claim("c", ["dev-0"], driver=driver, configs=configs)
    for c in claim["status"]["allocation"]["devices"]["config"]:
        c["requests"] = requests
    ref = ClaimRef("default", "c", claim["metadata"]["uid"])
    try:
        alloc = parse_allocation(claim, ref, driver)
        cfg = config_for(alloc, "vf")
    except ClaimError as e:
        assert "status.allocation.devices.config[" in str(e), str(e)[:300]
        return
    assert isinstance(cfg, KINDS[kind][1])


@settings(max_examples=examples(150))
@given(kind=st.sampled_from(sorted(KINDS)), params=st.one_of(json_values, st.dictionaries(
    st.sampled_from(FIELDS["VfConfig"] + FIELDS["IbConfig"]), field_values, max_size=3)))
def test_the_webhook_names_config_index_and_field(kind, params):
    """The admission review of a claim: allowed, or denied with config[i] and the field named."""
    if isinstance(params, dict) and set(params) <= set(FIELDS[kind]):
        params = {**_header(kind), **params}
    driver = KINDS[kind][3]
    body = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": "u1", "kind": {"group": "resource.k8s.io", "version": "v1", "kind": "ResourceClaim"},
        "operation": "CREATE", "namespace": "ns", "name": "c",
        "object": {"spec": {"devices": {"config": [
            {"opaque": {"driver": "other.example.com", "parameters": params}},
            {"opaque": {"driver": driver, "parameters": params}}]}}}}}
    _, verdict, answer = review(json.dumps(body).encode())
    json.dumps(answer)
    if not verdict.allowed:
        assert [f.path for f in verdict.failures] == ["spec.devices.config[1]"], verdict.message[:300]
        assert verdict.failures[0].error.startswith(("parameters:", kind)), verdict.message[:300]
