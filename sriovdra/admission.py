"""Admission review of our opaque configs in ResourceClaims, ResourceClaimTemplates and DeviceClasses.

Pure (no I/O): an admission.k8s.io AdmissionReview in, the AdmissionReview answer out. Every
opaque config addressed to one of our drivers is decoded by the very decoder `prepare` uses
(sriovdra.config.DECODERS), so the webhook refuses exactly what a node would refuse later, at
`kubectl apply` time instead of at pod start. Configs of other drivers are not ours to judge.
A DeviceClass's configs are validated too: prepare decodes them for every claim of the class,
so a bad one would fail all of those claims.

A denial looks like the reference InfiniBand driver's (its e2e greps these strings):
    2 configs failed to validate: object at spec.devices.config[0].opaque.parameters is invalid:
    ib.sigs.k8s.io: IbConfig.pkey: pkey must be in range 0x0001-0xFFFF, got 0x0000;
    object at spec.devices.config[2].opaque.parameters is invalid: ...
one line per failing config, naming its index and driver; status reason Invalid, code 422.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sriovdra.config import DECODERS, ConfigError

GROUP = "resource.k8s.io"
VERSIONS = ("v1", "v1beta1", "v1beta2")  # all three keep configs at the same paths (CONFIG_PATHS)
REVIEW_API_VERSIONS = ("admission.k8s.io/v1", "admission.k8s.io/v1beta1")  # same shape; answer in kind
# Where each kind keeps its list of device configs: a claim in its spec.devices, a template in
# the claim spec it wraps (spec.spec), a DeviceClass directly in its spec.
CONFIG_PATHS = {"ResourceClaim": ("spec", "devices", "config"),
                "ResourceClaimTemplate": ("spec", "spec", "devices", "config"),
                "DeviceClass": ("spec", "config")}
VALIDATED_OPERATIONS = ("CREATE", "UPDATE")

Decoder = Callable[[Any], object]


class ReviewError(ValueError):
    """The request is not an AdmissionReview we can answer (the server says HTTP 400)."""


class ShapeError(ValueError):
    """The reviewed object has no config list where its kind keeps one (it is denied)."""


@dataclass(frozen=True)
class AdmissionRequest:
    """The parts of AdmissionReview.request the decision needs."""

    review_api_version: str  # echoed in the answer: the API server requires the same version back
    uid: str
    group: str
    version: str
    kind: str
    operation: str
    namespace: str = ""
    name: str = ""
    object: Any = None
    old_object: Any = None

    @property
    def gvk(self) -> str:
        return f"{self.group or 'core'}/{self.version} {self.kind}"

    @property
    def object_name(self) -> str:
        name = self.name or _dig(self.object, ("metadata", "name")) or "(unnamed)"
        return f"{self.namespace}/{name}" if self.namespace else name


@dataclass(frozen=True)
class ConfigFailure:
    """One opaque config our decoder refused (path: 'spec.devices.config[1]')."""

    path: str
    driver: str
    error: str

    @property
    def field(self) -> str:
        return f"{self.path}.opaque.parameters"

    def __str__(self) -> str:
        return f"object at {self.field} is invalid: {self.driver}: {self.error}"


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    failures: tuple[ConfigFailure, ...] = ()
    problem: str = ""  # the object has no config list where expected (a shape error, not a config's)
    warnings: tuple[str, ...] = field(default=())

    @property
    def message(self) -> str:
        if self.problem:
            return self.problem
        if not self.failures:
            return ""
        return f"{len(self.failures)} configs failed to validate: " + ";\n".join(map(str, self.failures))


def _str(obj: Mapping, key: str, where: str, *, required: bool = True) -> str:
    value = obj.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value):
        raise ReviewError(f"{where}.{key}: expected a non-empty string, got {value!r}")
    return value


def parse_review(body: bytes | str | Mapping) -> AdmissionRequest:
    """The request of an AdmissionReview (JSON bytes or already decoded); ReviewError names what is wrong."""
    if isinstance(body, bytes | str):
        try:
            body = json.loads(body)
        except (ValueError, UnicodeDecodeError) as e:
            raise ReviewError(f"body is not JSON: {e}") from None
    if not isinstance(body, Mapping):
        raise ReviewError(f"expected an AdmissionReview object, got {type(body).__name__}")
    api_version, kind = body.get("apiVersion"), body.get("kind")
    if api_version not in REVIEW_API_VERSIONS or kind != "AdmissionReview":
        raise ReviewError(f"expected apiVersion {' or '.join(REVIEW_API_VERSIONS)} and kind AdmissionReview, "
                          f"got apiVersion {api_version!r} and kind {kind!r}")
    req = body.get("request")
    if not isinstance(req, Mapping):
        raise ReviewError(f"request: expected an object, got {type(req).__name__}")
    gvk = req.get("kind")
    if not isinstance(gvk, Mapping):
        raise ReviewError(f"request.kind: expected an object with group, version and kind, got {gvk!r}")
    return AdmissionRequest(
        review_api_version=api_version,
        uid=_str(req, "uid", "request"),
        group=_str(gvk, "group", "request.kind", required=False),  # "" is the core group
        version=_str(gvk, "version", "request.kind"),
        kind=_str(gvk, "kind", "request.kind"),
        operation=_str(req, "operation", "request"),
        namespace=_str(req, "namespace", "request", required=False),
        name=_str(req, "name", "request", required=False),
        object=req.get("object"),
        old_object=req.get("oldObject"),
    )


def _dig(obj: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(key)
    return obj


def _type_name(value: Any) -> str:
    return {list: "a list", dict: "an object", str: "a string", bool: "a boolean", int: "an integer",
            float: "a number"}.get(type(value), type(value).__name__)


def config_failures(obj: Any, config_path: tuple[str, ...],
                    decoders: Mapping[str, Decoder] = DECODERS) -> tuple[ConfigFailure, ...]:
    """Decode every opaque config of our drivers in the list at config_path; the ones refused.

    Raises ShapeError when the object has no config list there (config not a list, ...)."""
    where = ".".join(config_path)
    configs = _dig(obj, config_path)
    if configs is None:
        return ()
    if not isinstance(configs, list):
        raise ShapeError(f"{where}: expected a list, got {_type_name(configs)}")
    failures = []
    for i, config in enumerate(configs):
        if not isinstance(config, Mapping):
            raise ShapeError(f"{where}[{i}]: expected an object, got {_type_name(config)}")
        opaque = config.get("opaque")
        # Only opaque configs exist today; anything else (or another driver's) is not ours to judge.
        driver = opaque.get("driver") if isinstance(opaque, Mapping) else None
        decode = decoders.get(driver) if isinstance(driver, str) else None
        if decode is None:
            continue
        try:
            decode(opaque.get("parameters"))
        except ConfigError as e:
            failures.append(ConfigFailure(path=f"{where}[{i}]", driver=driver, error=str(e)))
    return tuple(failures)


def decide(req: AdmissionRequest, decoders: Mapping[str, Decoder] = DECODERS) -> Verdict:
    """Allow anything that is not a CREATE/UPDATE of a claim, template or class; validate those."""
    config_path = CONFIG_PATHS.get(req.kind)
    if req.group != GROUP or config_path is None or req.operation not in VALIDATED_OPERATIONS:
        return Verdict(allowed=True)
    if req.version not in VERSIONS:
        # Allowed (an unknown shape must not block the cluster), but said so: a webhook
        # configuration listing this version validates nothing.
        return Verdict(allowed=True, warnings=(f"{GROUP}/{req.version} {req.kind} is not validated by the "
                                               f"sriovdra webhook (it knows {', '.join(VERSIONS)})",))
    if not isinstance(req.object, Mapping):
        raise ReviewError(f"request.object: expected the {req.kind} being {req.operation.lower()}d, "
                          f"got {_type_name(req.object)}")
    try:
        failures = config_failures(req.object, config_path, decoders)
    except ShapeError as e:
        return Verdict(allowed=False, problem=str(e))
    if failures and _configs_unchanged(req, config_path):
        # The configs predate this webhook (or a stricter version of it) and this update does not
        # touch them: refusing would block finalizer removal and metadata edits, i.e. deletion.
        return Verdict(allowed=True, warnings=tuple(f"unchanged but invalid: {f}" for f in failures))
    return Verdict(allowed=not failures, failures=failures)


def _configs_unchanged(req: AdmissionRequest, config_path: tuple[str, ...]) -> bool:
    return req.operation == "UPDATE" and isinstance(req.old_object, Mapping) and \
        _dig(req.old_object, config_path) == _dig(req.object, config_path)


def _status(req: AdmissionRequest, verdict: Verdict) -> dict:
    """A metav1.Status as the API server's own validation builds it for an invalid object."""
    causes = [{"reason": "FieldValueInvalid", "field": f.field, "message": f"{f.driver}: {f.error}"}
              for f in verdict.failures]
    return {"metadata": {}, "status": "Failure", "message": verdict.message, "reason": "Invalid", "code": 422,
            "details": {"name": req.name or _dig(req.object, ("metadata", "name")) or "", "group": req.group,
                        "kind": req.kind, **({"causes": causes} if causes else {})}}


def answer(req: AdmissionRequest, verdict: Verdict) -> dict:
    """The AdmissionReview the API server expects back: same apiVersion, uid echoed."""
    response: dict[str, Any] = {"uid": req.uid, "allowed": verdict.allowed}
    if not verdict.allowed:
        response["status"] = _status(req, verdict)
    if verdict.warnings:
        response["warnings"] = list(verdict.warnings)
    return {"apiVersion": req.review_api_version, "kind": "AdmissionReview", "response": response}


def review(body: bytes | str | Mapping, decoders: Mapping[str, Decoder] = DECODERS) -> tuple[AdmissionRequest,
                                                                                            Verdict, dict]:
    """parse_review + decide + answer: (request, verdict, AdmissionReview answer). Raises ReviewError."""
    req = parse_review(body)
    verdict = decide(req, decoders)
    return req, verdict, answer(req, verdict)
