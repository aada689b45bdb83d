"""What the scheduler does with a claim, for the demo manifests: CEL selectors (DeviceClass first,
then the request's), ExactCount requests, matchAttribute constraints and adminAccess, over the
devices of published ResourceSlices.

No CEL library is installed, so `parse` understands exactly the forms the demos use, joined by
`&&`, and refuses anything else (a demo using more must extend this, not be misjudged by it):

    device.driver == "<driver>"
    device.attributes["<domain>"].<name> == "<string>" | <int> | true | false
    "<name>" in device.attributes["<domain>"]

As in CEL, looking up a missing attribute is an error (the scheduler then aborts the allocation),
and `&&` is commutative over errors: a false term wins over an erroring one.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

_STRING = r'"(?:[^"\\]|\\.)*"'
_DRIVER = re.compile(rf"^device\.driver\s*==\s*({_STRING})$")
_EQUALS = re.compile(rf'^device\.attributes\["([^"]+)"\]\.([A-Za-z_][A-Za-z0-9_]*)'
                     rf'\s*==\s*({_STRING}|-?\d+|true|false)$')
_HAS = re.compile(r'^"([A-Za-z_][A-Za-z0-9_]*)"\s+in\s+device\.attributes\["([^"]+)"\]$')


class Unsupported(ValueError):
    """An expression outside the subset: the test must not guess what it means."""


class CelError(Exception):
    """A CEL runtime error (no such key, no matching overload): aborts the allocation."""


class AllocationError(Exception):
    """No devices satisfy the claim."""


@dataclass(frozen=True)
class Term:
    kind: str  # "driver", "equals", "has"
    domain: str = ""
    name: str = ""
    value: object = None


def _literal(text: str) -> object:
    if text.startswith('"'):
        return text[1:-1].encode().decode("unicode_escape")
    if text in ("true", "false"):
        return text == "true"
    return int(text)


def parse(expression: str) -> list[Term]:
    if "||" in expression:
        raise Unsupported(f"'||' is outside the subset: {expression!r}")
    terms = []
    for part in expression.split("&&"):
        part = " ".join(part.split())
        if m := _DRIVER.match(part):
            terms.append(Term("driver", value=_literal(m[1])))
        elif m := _EQUALS.match(part):
            terms.append(Term("equals", m[1], m[2], _literal(m[3])))
        elif m := _HAS.match(part):
            terms.append(Term("has", m[2], m[1]))
        else:
            raise Unsupported(f"{part!r} is outside the subset (in {expression!r})")
    return terms


@dataclass(frozen=True)
class Device:
    """A published device as CEL sees it: attributes grouped by domain (short names are the driver's)."""

    driver: str
    pool: str
    name: str
    attributes: dict[str, dict[str, object]]

    def attribute(self, qualified: str) -> object | None:
        domain, _, name = qualified.rpartition("/")
        return self.attributes.get(domain or self.driver, {}).get(name)


def devices_of(slices: list[dict]) -> list[Device]:
    out = []
    for s in sorted(slices, key=lambda s: s["metadata"]["name"]):
        driver, pool = s["spec"]["driver"], s["spec"]["pool"]["name"]
        for d in s["spec"].get("devices", []):
            grouped: dict[str, dict[str, object]] = {}
            for key, value in d.get("attributes", {}).items():
                domain, _, name = key.rpartition("/")
                ((_, v),) = value.items()
                grouped.setdefault(domain or driver, {})[name] = v
            out.append(Device(driver, pool, d["name"], grouped))
    return sorted(out, key=lambda d: (d.driver, d.name))


def _term(term: Term, device: Device) -> bool:
    if term.kind == "driver":
        return device.driver == term.value
    attrs = device.attributes.get(term.domain)
    if attrs is None:
        raise CelError(f"no such key: {term.domain!r} (device {device.name})")
    if term.kind == "has":
        return term.name in attrs
    if term.name not in attrs:
        raise CelError(f"no such key: {term.name!r} in {term.domain!r} (device {device.name})")
    value = attrs[term.name]
    if type(value) is not type(term.value):
        raise CelError(f"no matching overload: {term.domain}/{term.name} is {type(value).__name__}")
    return value == term.value


def matches(expression: str, device: Device) -> bool:
    error = None
    for term in parse(expression):
        try:
            if not _term(term, device):
                return False
        except CelError as e:
            error = error or e
    if error:
        raise error
    return True


def _selectors(obj: dict) -> list[str]:
    return [s["cel"]["expression"] for s in obj.get("selectors", [])]


def eligible(request: dict, device_class: dict, devices: list[Device]) -> list[Device]:
    """Devices the request's class and selectors accept; a CEL error aborts, as in the scheduler."""
    exprs = _selectors(device_class["spec"]) + _selectors(request["exactly"])
    return [d for d in devices if all(matches(e, d) for e in exprs)]


def allocate(claim: dict, classes: dict[str, dict], devices: list[Device], taken: set[tuple[str, str, str]],
             node: str = "node1", pod: str = "pod", pod_uid: str | None = None) -> dict:
    """The claim with status.allocation as the scheduler writes it; `taken` gains the devices
    allocated without adminAccess. Backtracks over the candidates so constraints are honoured."""
    spec = claim["spec"]["devices"]
    slots: list[tuple[dict, list[Device]]] = []
    for req in spec["requests"]:
        exactly = req["exactly"]
        if exactly.get("allocationMode", "ExactCount") != "ExactCount":
            raise Unsupported(f"request {req['name']}: allocationMode {exactly['allocationMode']}")
        admin = exactly.get("adminAccess", False)
        pool = [d for d in eligible(req, classes[exactly["deviceClassName"]], devices)
                if admin or (d.driver, d.pool, d.name) not in taken]
        slots += [(req, pool)] * exactly.get("count", 1)
    constraints = spec.get("constraints", [])

    def consistent(chosen: list[tuple[dict, Device]]) -> bool:
        for c in constraints:
            values = [d.attribute(c["matchAttribute"]) for req, d in chosen
                      if not c.get("requests") or req["name"] in c["requests"]]
            if any(v is None for v in values) or len(set(values)) > 1:
                return False
        return True

    def search(i: int, chosen: list[tuple[dict, Device]]) -> list[tuple[dict, Device]] | None:
        if i == len(slots):
            return chosen
        req, pool = slots[i]
        used = {id(d) for _, d in chosen}
        for d in pool:
            if id(d) not in used and consistent(chosen + [(req, d)]):
                if (found := search(i + 1, chosen + [(req, d)])) is not None:
                    return found
        return None

    chosen = search(0, [])
    if chosen is None:
        raise AllocationError(f"claim {claim['metadata']['name']}: no devices satisfy its requests and constraints")
    results, config = [], []
    for req in spec["requests"]:
        for c in classes[req["exactly"]["deviceClassName"]]["spec"].get("config", []):
            config.append({"source": "FromClass", "requests": [req["name"]], "opaque": c["opaque"]})
    config += [{"source": "FromClaim", "requests": c.get("requests", []), "opaque": c["opaque"]}
               for c in spec.get("config", [])]
    for req, d in chosen:
        result = {"request": req["name"], "driver": d.driver, "pool": d.pool, "device": d.name}
        if req["exactly"].get("adminAccess"):
            result["adminAccess"] = True
        else:
            taken.add((d.driver, d.pool, d.name))
        results.append(result)
    md = {**claim["metadata"], "uid": claim["metadata"].get("uid") or str(uuid.uuid4())}
    return {**claim, "metadata": md, "status": {
        "allocation": {"devices": {"results": results, "config": config},
                       "nodeSelector": {"nodeSelectorTerms": [{"matchFields": [
                           {"key": "metadata.name", "operator": "In", "values": [node]}]}]}},
        "reservedFor": [{"resource": "pods", "name": pod, "uid": pod_uid or str(uuid.uuid4())}]}}
