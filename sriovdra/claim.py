"""ResourceClaims as the driver needs them: the allocation results and opaque configs of one
driver, parsed from the resource.k8s.io/v1 JSON, and the config that applies to each request.

Pure functions over dicts: the Kubernetes adapter fetches the JSON, the driver core uses these.
"""

from __future__ import annotations

from dataclasses import dataclass

from sriovdra.config import DECODERS, EMPTY, ConfigError, IbConfig, VfConfig


class ClaimError(ValueError):
    """The claim cannot be prepared; str() is the user-facing reason."""


@dataclass(frozen=True)
class ClaimRef:
    namespace: str
    name: str
    uid: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"

    def to_dict(self) -> dict:
        return {"namespace": self.namespace, "name": self.name, "uid": self.uid}


@dataclass(frozen=True)
class Result:
    """One allocated device (status.allocation.devices.results[])."""

    request: str  # "<req>" or "<req>/<subrequest>"
    driver: str
    pool: str
    device: str
    admin_access: bool = False
    share_id: str | None = None

    @property
    def base_request(self) -> str:
        return self.request.split("/", 1)[0]


@dataclass(frozen=True)
class OpaqueConfig:
    source: str  # FromClass or FromClaim
    requests: tuple[str, ...]  # empty: all requests
    driver: str
    parameters: object
    index: int  # position in status.allocation.devices.config[], for messages

    def applies_to(self, request: str) -> bool:
        if not self.requests:
            return True
        base = request.split("/", 1)[0]
        return request in self.requests or base in self.requests


@dataclass(frozen=True)
class Allocation:
    claim: ClaimRef
    results: tuple[Result, ...]  # this driver's results only
    configs: tuple[OpaqueConfig, ...]  # this driver's opaque configs, class configs first
    reserved_for: tuple[dict, ...]


def _get(obj: dict, *path: str):
    for key in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def _list(value, where: str) -> list:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ClaimError(f"{where} is not a list: {type(value).__name__}")
    return value


def parse_allocation(claim_json: dict, ref: ClaimRef, driver: str) -> Allocation:
    """Check the fetched claim is the one the kubelet meant and is allocated; keep our parts."""
    if not isinstance(claim_json, dict):
        raise ClaimError(f"claim {ref}: the API server returned {type(claim_json).__name__}, not an object")
    uid = _get(claim_json, "metadata", "uid")
    if uid != ref.uid:
        raise ClaimError(f"claim {ref} has UID {uid}, the kubelet asked for {ref.uid} (the claim was replaced)")
    allocation = _get(claim_json, "status", "allocation")
    if not isinstance(allocation, dict):
        raise ClaimError(f"claim {ref} is not allocated")
    where = f"claim {ref}: status.allocation.devices"
    results = []
    for i, r in enumerate(_list(_get(allocation, "devices", "results"), f"{where}.results")):
        if not isinstance(r, dict) or r.get("driver") != driver:
            continue
        missing = [k for k in ("request", "pool", "device") if not isinstance(r.get(k), str) or not r.get(k)]
        if missing:
            raise ClaimError(f"{where}.results[{i}] has no {', '.join(missing)}")
        share_id = r.get("shareID")
        if share_id is not None and not isinstance(share_id, str):
            raise ClaimError(f"{where}.results[{i}].shareID is not a string: {share_id!r}")
        results.append(Result(request=r["request"], driver=driver, pool=r["pool"], device=r["device"],
                              admin_access=r.get("adminAccess") is True, share_id=share_id))
    configs = []
    for i, c in enumerate(_list(_get(allocation, "devices", "config"), f"{where}.config")):
        opaque = c.get("opaque") if isinstance(c, dict) else None
        if not isinstance(opaque, dict) or opaque.get("driver") != driver:
            continue
        requests = _list(c.get("requests"), f"{where}.config[{i}].requests")
        if not all(isinstance(x, str) for x in requests):
            raise ClaimError(f"{where}.config[{i}].requests must be request names, got {requests!r}")
        configs.append(OpaqueConfig(source=str(c.get("source", "FromClaim")), requests=tuple(requests),
                                    driver=driver, parameters=opaque.get("parameters"), index=i))
    # Class configs first, then claim configs; within a source, the order of the list.
    configs.sort(key=lambda c: (c.source != "FromClass", c.index))
    reserved = tuple(x for x in _list(_get(claim_json, "status", "reservedFor"), f"claim {ref}: status.reservedFor")
                     if isinstance(x, dict))
    return Allocation(claim=ref, results=tuple(results), configs=tuple(configs), reserved_for=reserved)


def config_for(allocation: Allocation, request: str) -> VfConfig | IbConfig:
    """The layered config of one request: every matching config decoded strictly, later wins."""
    driver = allocation.results[0].driver if allocation.results else None
    merged = EMPTY[driver]
    for c in allocation.configs:
        if not c.applies_to(request):
            continue
        try:
            decoded = DECODERS[c.driver](c.parameters)
        except ConfigError as e:
            raise ClaimError(f"claim {allocation.claim}: status.allocation.devices.config[{c.index}] "
                             f"({c.source}) for request {request!r}: {e}") from None
        merged = merged.overlay(decoded)
    return merged
