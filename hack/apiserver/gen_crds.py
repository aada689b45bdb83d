#!/usr/bin/env python3
"""Turn kubernetes-validate's offline JSON schemas (Kubernetes 1.37) for the
resource.k8s.io/v1 kinds into CustomResourceDefinitions that imitate the
built-in API on a standalone apiextensions-apiserver.

Usage: gen_crds.py [--k8s-version 1.37.0] [--keep-descriptions] [--no-validations] > crds.yaml
(or import it and call generate(); realapi.py does). Needs PyPI kubernetes-validate and pyyaml.
Where these CRDs differ from the built-in API: shared/notes/real-apiserver.md section 6.
"""
import argparse
import json
import os
import sys

import kubernetes_validate
import yaml

META = "io.k8s.apimachinery.pkg.apis.meta.v1."
SPECIAL = {
    META + "ObjectMeta": {"type": "object"},
    META + "Time": {"type": "string", "format": "date-time"},
    META + "MicroTime": {"type": "string", "format": "date-time"},
    # kube-apiserver accepts a JSON number or string and always returns a canonical string;
    # a CRD cannot canonicalize, and a stored number breaks typed clients that expect a
    # string (kubernetes>=37 pydantic models), so only strings are accepted here.
    "io.k8s.apimachinery.pkg.api.resource.Quantity": {
        "type": "string",
        "pattern": r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
                   r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$",
    },
    "io.k8s.apimachinery.pkg.runtime.RawExtension": {
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": True,
    },
}
DROP = {
    "x-kubernetes-group-version-kind",
    "x-kubernetes-patch-strategy",
    "x-kubernetes-patch-merge-key",
    "$schema",
    "$id",
}

# kinds to imitate: kind -> (plural, singular, scope, status subresource, selectable fields)
KINDS = {
    # kube-apiserver supports exactly these two field selectors (plus metadata.name)
    # for ResourceSlice: k8s.io/api/resource/v1 ResourceSliceSelectorNodeName/Driver.
    "ResourceSlice": ("resourceslices", "resourceslice", "Cluster", False,
                      ["spec.nodeName", "spec.driver"]),
    "ResourceClaim": ("resourceclaims", "resourceclaim", "Namespaced", True, []),
    "ResourceClaimTemplate": ("resourceclaimtemplates", "resourceclaimtemplate",
                              "Namespaced", False, []),
    "DeviceClass": ("deviceclasses", "deviceclass", "Cluster", False, []),
}


# Hand-written approximations of the Go validation/defaulting that kube-apiserver applies to
# the built-in types (k8s.io/kubernetes pkg/apis/resource/validation); none of this is in the
# OpenAPI schema. Keyed by definition name (merged where the definition is used) or
# "Definition.property". --no-validations leaves them out.
V1 = "io.k8s.api.resource.v1."
DNS1123_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
DEF_OVERLAY = {
    V1 + "ResourceSliceSpec": {"x-kubernetes-validations": [
        {"rule": "[has(self.nodeName) && self.nodeName != '', has(self.nodeSelector), "
                 "has(self.allNodes) && self.allNodes, "
                 "has(self.perDeviceNodeSelection) && self.perDeviceNodeSelection].filter(x, x).size() == 1",
         "message": "exactly one of `nodeName`, `nodeSelector`, `allNodes`, `perDeviceNodeSelection` is required"},
        {"rule": "self.driver == oldSelf.driver", "message": "driver: field is immutable"},
        {"rule": "has(self.nodeName) == has(oldSelf.nodeName) && "
                 "(!has(self.nodeName) || self.nodeName == oldSelf.nodeName)",
         "message": "nodeName: field is immutable"},
        {"rule": "self.pool.name == oldSelf.pool.name", "message": "pool.name: field is immutable"},
    ]},
    V1 + "Device": {"x-kubernetes-validations": [
        {"rule": "size(self.?attributes.orValue({})) + size(self.?capacity.orValue({})) <= 32",
         "message": "the total number of attributes and capacities must not exceed 32"},
    ]},
    V1 + "DeviceAttribute": {"x-kubernetes-validations": [
        {"rule": "[has(self.int), has(self.bool), has(self.string), has(self.version), "
                 "has(self.ints), has(self.bools), has(self.strings), has(self.versions)].filter(x, x).size() == 1",
         "message": "exactly one value must be specified"},
    ]},
    V1 + "ResourceClaimStatus": {"x-kubernetes-validations": [
        {"rule": "!has(oldSelf.allocation) || !has(self.allocation) || self.allocation == oldSelf.allocation",
         "message": "allocation: field is immutable"},
        {"rule": "!has(self.devices) || self.devices.all(d, has(self.allocation) && "
                 "self.allocation.devices.results.exists(r, "
                 "r.driver == d.driver && r.pool == d.pool && r.device == d.device))",
         "message": "devices: each entry must correspond to an allocated device in status.allocation"},
    ]},
}
PROP_OVERLAY = {
    V1 + "ResourceSliceSpec.driver": {"maxLength": 63, "pattern": DNS1123_SUBDOMAIN},
    V1 + "ResourceSliceSpec.nodeName": {"maxLength": 253},
    V1 + "ResourceSliceSpec.devices": {"maxItems": 128},
    V1 + "ResourceSliceSpec.sharedCounters": {"maxItems": 8},
    V1 + "ResourcePool.name": {"maxLength": 253},
    V1 + "Device.name": {"maxLength": 63},
    V1 + "Device.taints": {"maxItems": 16},
    V1 + "Device.attributes": {"maxProperties": 32},
    V1 + "Device.capacity": {"maxProperties": 32},
    V1 + "DeviceAttribute.string": {"maxLength": 64},
    V1 + "DeviceAttribute.version": {"maxLength": 64},
    V1 + "ResourceClaim.spec": {"x-kubernetes-validations": [
        {"rule": "self == oldSelf", "message": "field is immutable"}]},
    V1 + "ResourceClaimTemplate.spec": {"x-kubernetes-validations": [
        {"rule": "self == oldSelf", "message": "field is immutable"}]},
    V1 + "ExactDeviceRequest.allocationMode": {"default": "ExactCount"},
    V1 + "ExactDeviceRequest.count": {"default": 1},
    V1 + "DeviceSubRequest.allocationMode": {"default": "ExactCount"},
    V1 + "DeviceSubRequest.count": {"default": 1},
    V1 + "DeviceAllocationResult.results": {"maxItems": 32},
    V1 + "ResourceClaimStatus.devices": {"maxItems": 32},
    V1 + "ResourceClaimStatus.reservedFor": {"maxItems": 256},
    V1 + "AllocatedDeviceStatus.conditions": {"maxItems": 8},
    V1 + "AllocatedDeviceStatus.pool": {"maxLength": 253},
    V1 + "AllocatedDeviceStatus.driver": {"maxLength": 63},
    V1 + "AllocatedDeviceStatus.device": {"maxLength": 63},
    V1 + "NetworkDeviceData.interfaceName": {"maxLength": 256},
    V1 + "NetworkDeviceData.hardwareAddress": {"maxLength": 128},
    V1 + "NetworkDeviceData.ips": {"maxItems": 16, "items": {"maxLength": 64, "x-kubernetes-validations": [
        {"rule": "isCIDR(self)", "message": "must be a valid CIDR value, (e.g. 10.9.8.7/24 or 2001:db8::1/64)"}]}},
    V1 + "DeviceRequestAllocationResult.driver": {"maxLength": 63},
    V1 + "DeviceRequestAllocationResult.pool": {"maxLength": 253},
    V1 + "DeviceRequestAllocationResult.device": {"maxLength": 63},
}
OVERLAYS = True


def merge(dst, extra):
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(dst.get(k), dict):
            merge(dst[k], v)
        else:
            dst[k] = v
    return dst


def convert(defs, node, keep_desc, stack=()):
    if isinstance(node, list):
        return [convert(defs, x, keep_desc, stack) for x in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        name = node["$ref"].split("/")[-1]
        if name in stack:
            raise SystemExit("recursive schema at %s" % name)
        if name in SPECIAL:
            out = dict(SPECIAL[name])
        else:
            out = convert(defs, defs[name], keep_desc, stack + (name,))
            if OVERLAYS and name in DEF_OVERLAY:
                merge(out, DEF_OVERLAY[name])
        if keep_desc and "description" in node and name not in (META + "ObjectMeta",):
            out["description"] = node["description"]
        return out
    if node.get("oneOf") == [{"type": ["string", "null"]}, {"type": ["number", "null"]}]:
        return dict(SPECIAL["io.k8s.apimachinery.pkg.api.resource.Quantity"])
    out = {}
    for k, v in node.items():
        if k in DROP:
            continue
        if k == "description" and not keep_desc:
            continue
        if k == "type":
            if isinstance(v, list):
                v = [t for t in v if t != "null"]
                v = v[0] if len(v) == 1 else v
            out[k] = v
        elif k == "properties":
            out[k] = {p: convert(defs, s, keep_desc, stack) for p, s in v.items()}
            if OVERLAYS and stack:
                for p in out[k]:
                    if "%s.%s" % (stack[-1], p) in PROP_OVERLAY:
                        merge(out[k][p], PROP_OVERLAY["%s.%s" % (stack[-1], p)])
        elif k == "additionalProperties":
            if isinstance(v, dict):
                out[k] = convert(defs, v, keep_desc, stack)
            # additionalProperties: false is not allowed in CRD schemas -> drop
        elif k in ("items", "anyOf", "allOf", "oneOf", "not"):
            out[k] = convert(defs, v, keep_desc, stack)
        else:
            out[k] = v
    # x-kubernetes-list-type=map needs every key required (or defaulted) in a CRD;
    # built-in types have optional keys (e.g. status.devices[].shareID), so such
    # lists fall back to atomic.
    if out.get("x-kubernetes-list-type") == "map":
        req = set(out.get("items", {}).get("required", []))
        keys = out.get("x-kubernetes-list-map-keys", [])
        if not set(keys) <= req:
            out["x-kubernetes-list-type"] = "atomic"
            out.pop("x-kubernetes-list-map-keys", None)
    return out


def top_schema(defs, kind, keep_desc):
    schema = convert(defs, {"$ref": "#/$defs/io.k8s.api.resource.v1." + kind}, keep_desc)
    schema["properties"]["apiVersion"] = {"type": "string"}
    schema["properties"]["kind"] = {"type": "string"}
    schema["properties"]["metadata"] = {"type": "object"}
    schema["type"] = "object"
    return schema


def generate(k8s_version: str = "1.37.0", keep_descriptions: bool = False, kinds=None,
             validations: bool = True) -> list:
    """The CustomResourceDefinitions (dicts) for the given kinds (default: all of KINDS)."""
    global OVERLAYS
    OVERLAYS = validations
    base = os.path.join(os.path.dirname(kubernetes_validate.__file__),
                        "kubernetes-json-schema", "v%s-local" % k8s_version)
    with open(os.path.join(base, "_definitions.json")) as f:
        defs = json.load(f)["$defs"]
    docs = []
    for kind in kinds or list(KINDS):
        plural, singular, scope, status, selectable = KINDS[kind]
        version = {
            "name": "v1",
            "served": True,
            "storage": True,
            "schema": {"openAPIV3Schema": top_schema(defs, kind, keep_descriptions)},
        }
        if status:
            version["subresources"] = {"status": {}}
        if selectable:
            version["selectableFields"] = [{"jsonPath": "." + p} for p in selectable]
        docs.append({
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {
                "name": "%s.resource.k8s.io" % plural,
                "annotations": {
                    # required for *.k8s.io groups
                    "api-approved.kubernetes.io": "https://github.com/kubernetes/enhancements/pull/3063",
                },
            },
            "spec": {
                "group": "resource.k8s.io",
                "scope": scope,
                "names": {"plural": plural, "singular": singular, "kind": kind,
                          "listKind": kind + "List"},
                "versions": [version],
            },
        })
    return docs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--k8s-version", default="1.37.0")
    ap.add_argument("--keep-descriptions", action="store_true")
    ap.add_argument("--kinds", default=",".join(KINDS))
    ap.add_argument("--no-validations", action="store_true",
                    help="leave out the hand-written CEL rules, limits and defaults")
    args = ap.parse_args()
    docs = generate(args.k8s_version, args.keep_descriptions, args.kinds.split(","), not args.no_validations)
    yaml.safe_dump_all(docs, sys.stdout, sort_keys=False)


if __name__ == "__main__":
    main()
