"""AdmissionReview requests as the API server sends them, for claims and templates of each
resource.k8s.io version (v1beta1 requests name the class directly, v1/v1beta2 under `exactly`)."""

from __future__ import annotations

import copy
import json
import uuid

import yaml

from sriovdra.model import IB_DRIVER, SRIOV_DRIVER
from tests.conftest import REPO
from tests.support.claims import IB_CLASS, SEED_IB_CONFIG, VF_CLASS, vf_config

SEEDS = REPO / "tests" / "data" / "seeds"
VERSIONS = ("v1", "v1beta1", "v1beta2")
KINDS = ("ResourceClaim", "ResourceClaimTemplate")
RESOURCES = {"ResourceClaim": "resourceclaims", "ResourceClaimTemplate": "resourceclaimtemplates",
             "DeviceClass": "deviceclasses"}


def seed(name: str) -> dict:
    return yaml.safe_load((SEEDS / name).read_text())


def ib_config(**fields) -> dict:
    return {**SEED_IB_CONFIG, **fields}


def opaque(driver: str, parameters, requests: list[str] | None = None) -> dict:
    entry = {"opaque": {"driver": driver, "parameters": parameters}}
    if requests:
        entry["requests"] = requests
    return entry


def ib(parameters=None, **fields) -> dict:
    return opaque(IB_DRIVER, parameters if parameters is not None else ib_config(**fields))


def vf(**fields) -> dict:
    return opaque(SRIOV_DRIVER, vf_config(**fields))


def claim_spec(version: str, configs: list[dict], device_class: str = IB_CLASS) -> dict:
    request = {"name": "dev", "deviceClassName": device_class} if version == "v1beta1" else \
        {"name": "dev", "exactly": {"deviceClassName": device_class}}
    spec = {"devices": {"requests": [request]}}
    if configs:
        spec["devices"]["config"] = configs
    return spec


def claim_object(kind: str, version: str, configs: list[dict], name: str = "c1",
                 device_class: str = IB_CLASS) -> dict:
    spec = claim_spec(version, configs, device_class)
    obj = {"apiVersion": f"resource.k8s.io/{version}", "kind": kind,
           "metadata": {"name": name, "namespace": "default"},
           "spec": spec if kind == "ResourceClaim" else {"spec": spec}}
    return obj


def device_class_object(version: str, configs: list[dict], name: str = IB_CLASS,
                        driver: str = IB_DRIVER) -> dict:
    """A DeviceClass (cluster-scoped) selecting `driver`'s devices; its configs at spec.config."""
    spec: dict = {"selectors": [{"cel": {"expression": f'device.driver == "{driver}"'}}]}
    if configs:
        spec["config"] = configs
    return {"apiVersion": f"resource.k8s.io/{version}", "kind": "DeviceClass", "metadata": {"name": name},
            "spec": spec}


def review(obj: dict | None, *, operation: str = "CREATE", old: dict | None = None, kind: str | None = None,
           group: str | None = None, version: str | None = None, uid: str | None = None) -> dict:
    """The AdmissionReview the API server sends for `obj` (its apiVersion/kind give request.kind)."""
    api_version = (obj or old or {}).get("apiVersion", "resource.k8s.io/v1")
    g, _, v = api_version.rpartition("/")
    kind = kind or (obj or old or {}).get("kind", "ResourceClaim")
    md = (obj or old or {}).get("metadata", {})
    request = {"uid": uid or str(uuid.uuid4()),
               "kind": {"group": g if group is None else group, "version": version or v, "kind": kind},
               "resource": {"group": g, "version": version or v, "resource": RESOURCES.get(kind, kind.lower() + "s")},
               "requestKind": {"group": g, "version": version or v, "kind": kind},
               "name": md.get("name", ""), "namespace": md.get("namespace", ""), "operation": operation,
               "userInfo": {"username": "alice", "groups": ["system:authenticated"]},
               "object": copy.deepcopy(obj), "oldObject": copy.deepcopy(old), "dryRun": False,
               "options": {"apiVersion": "meta.k8s.io/v1", "kind": f"{operation.title()}Options"}}
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}


def body(obj: dict | None, **kw) -> bytes:
    return json.dumps(review(obj, **kw)).encode()


__all__ = ["IB_CLASS", "IB_DRIVER", "SRIOV_DRIVER", "VF_CLASS", "body", "claim_object", "device_class_object", "ib",
           "ib_config",
           "opaque", "review", "seed", "vf"]
