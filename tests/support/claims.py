"""Allocated ResourceClaims as the scheduler leaves them (resource.k8s.io/v1 JSON)."""

from __future__ import annotations

import uuid

from sriovdra.claim import ClaimRef
from sriovdra.model import IB_DRIVER, SRIOV_DRIVER

VF_CLASS = "virtualfunction.sriovnetwork.openshift.io"  # the SR-IOV seed's DeviceClass
IB_CLASS = "ib.sigs.k8s.io"
SEED_IB_CONFIG = {"apiVersion": "ib.resource.sigs.k8s.io/v1alpha1", "kind": "IbConfig",
                  "pkey": 32769, "trafficClass": 128, "mtu": 4096}  # verbatim from the InfiniBand seed


class ClaimBook:
    """The claims the API server would return, in memory: a driver ClaimSource for tiers that run the
    driver core in process (the plugin tier runs the real client against the API stand-in)."""

    def __init__(self, *claims: dict) -> None:
        self.by_name: dict[tuple[str, str], dict] = {}
        for claim in claims:
            self.add(claim)

    def add(self, claim: dict) -> ClaimRef:
        md = claim["metadata"]
        self.by_name[(md["namespace"], md["name"])] = claim
        return ClaimRef(md["namespace"], md["name"], md["uid"])

    def get_claim(self, namespace: str, name: str) -> dict:
        return self.by_name[(namespace, name)]


def vf_config(**fields) -> dict:
    return {"apiVersion": f"{SRIOV_DRIVER}/v1alpha1", "kind": "VfConfig", **fields}


def allocated_claim(name: str, devices: list[str], *, driver: str = SRIOV_DRIVER, pool: str = "node1",
                    namespace: str = "default", request: str = "vf", configs: list[dict] | None = None,
                    class_configs: list[dict] | None = None, admin_access: bool = False,
                    pod_uid: str | None = None, uid: str | None = None) -> dict:
    """A claim from a template like the seed's ({request} of the seed's DeviceClass) after allocation.

    configs / class_configs are opaque parameters for this driver (FromClaim / FromClass)."""
    device_class = VF_CLASS if driver == SRIOV_DRIVER else IB_CLASS
    exactly = {"deviceClassName": device_class, "allocationMode": "ExactCount", "count": len(devices)}
    if admin_access:
        exactly["adminAccess"] = True
    config = [{"source": "FromClass", "requests": [], "opaque": {"driver": driver, "parameters": p}}
              for p in class_configs or []]
    config += [{"source": "FromClaim", "requests": [request], "opaque": {"driver": driver, "parameters": p}}
               for p in configs or []]
    results = []
    for d in devices:
        r = {"request": request, "driver": driver, "pool": pool, "device": d}
        if admin_access:
            r["adminAccess"] = True
        results.append(r)
    claim = {
        "apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim",
        "metadata": {"name": name, "namespace": namespace, "uid": uid or str(uuid.uuid4())},
        "spec": {"devices": {"requests": [{"name": request, "exactly": exactly}],
                             "config": [{"requests": [request], "opaque": c["opaque"]}
                                        for c in config if c["source"] == "FromClaim"]}},
        "status": {"allocation": {"devices": {"results": results, "config": config},
                                  "nodeSelector": {"nodeSelectorTerms": [{"matchFields": [
                                      {"key": "metadata.name", "operator": "In", "values": [pool]}]}]}},
                   "reservedFor": [{"resource": "pods", "name": f"pod-{name}", "uid": pod_uid or str(uuid.uuid4())}]},
    }
    return claim


def ref(claim: dict) -> tuple[str, str, str]:
    md = claim["metadata"]
    return md["namespace"], md["name"], md["uid"]


__all__ = ["IB_DRIVER", "SEED_IB_CONFIG", "SRIOV_DRIVER", "allocated_claim", "ref", "vf_config"]


CLASS_DRIVERS = {VF_CLASS: SRIOV_DRIVER, IB_CLASS: IB_DRIVER}


def allocate(claim_spec: dict, name: str, free: dict[str, list[str]], *, pool: str = "node1",
             namespace: str = "default") -> dict:
    """What the scheduler makes of a claim spec: each request gets `count` free devices of its
    DeviceClass's driver; the claim's opaque configs are copied into the allocation."""
    results = []
    for req in claim_spec["devices"]["requests"]:
        exactly = req["exactly"]
        driver = CLASS_DRIVERS[exactly["deviceClassName"]]
        for _ in range(exactly.get("count", 1)):
            results.append({"request": req["name"], "driver": driver, "pool": pool, "device": free[driver].pop(0)})
    config = [{"source": "FromClaim", "requests": c.get("requests", []), "opaque": c["opaque"]}
              for c in claim_spec["devices"].get("config", [])]
    return {"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim",
            "metadata": {"name": name, "namespace": namespace, "uid": str(uuid.uuid4())},
            "spec": claim_spec,
            "status": {"allocation": {"devices": {"results": results, "config": config}},
                       "reservedFor": [{"resource": "pods", "name": f"pod-{name}", "uid": str(uuid.uuid4())}]}}
