"""Device policy: which discovered devices are published, and extra attributes for them.

Pure decoding and application, no I/O (sriovdra.policyfile reads and watches the file):

    apiVersion: sriovnetwork.openshift.io/v1alpha1
    kind: DevicePolicy
    rules:                                  # in order
    - match: {pfNames: [eno1]}              # a sriovdra.selector selector; absent or {}: every device
      action: exclude                       # include | exclude | absent (attributes only)
    - match: {vendors: ["15b3"], linkTypes: [infiniband]}
      action: include
    - match: {numaNodes: [0]}
      attributes: {example.com/rack: r12, example.com/tier: 1, example.com/fast: true}

* No rules (or no policy at all): every discovered device is published.
* Exclude always wins: a device matched by any exclude rule is not published.
* Once any rule includes, publishing is opt-in: only devices matched by an include rule are published.
* The attributes of every rule matching a published device are added, later rules win per name.

Attribute names need a domain of the user's own (not the drivers' domains, whose names are the
drivers' built-in attributes, present or future); names the drivers publish
(model.BUILTIN_ATTRIBUTES) are refused. Values are strings (at most 64 bytes), int64 integers or
booleans. The per-device limit of 32 attributes depends on the device, so it is checked when the
policy is applied (DevicePolicy.check).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from sriovdra.model import (
    BUILTIN_ATTRIBUTES,
    DRIVERS,
    INT64_MAX,
    INT64_MIN,
    MAX_ATTRIBUTES,
    MAX_STRING_BYTES,
    SRIOV_DRIVER,
    STANDARD_DOMAIN,
    AttributeValue,
    DraDevice,
    Inventory,
    attribute_name_problems,
)
from sriovdra.selector import Facts, Selector, SelectorError, parse_selector

API_VERSION = f"{SRIOV_DRIVER}/v1alpha1"
KIND = "DevicePolicy"
INCLUDE, EXCLUDE = "include", "exclude"
RESERVED_ATTRIBUTES = frozenset().union(*BUILTIN_ATTRIBUTES.values())

_TOP_FIELDS = ("apiVersion", "kind", "rules")
_RULE_FIELDS = ("match", "action", "attributes")


class PolicyError(ValueError):
    """A device policy is invalid; str() names the field, e.g. 'rules[2].attributes["example.com/x"]: ...'."""


@dataclass(frozen=True)
class Rule:
    index: int
    match: Selector = field(default_factory=Selector)
    action: str | None = None  # INCLUDE, EXCLUDE or None (attributes only)
    attributes: tuple[tuple[str, AttributeValue], ...] = ()

    @property
    def path(self) -> str:
        return f"rules[{self.index}]"

    def describe(self) -> str:
        """rules[0] (exclude pfNames=eno1): how log lines and discover name a rule."""
        match = " ".join(f"{k}={','.join(map(str, v))}" for k, v in self.match.to_dict().items()) or "every device"
        return f"{self.path} ({self.action or 'attributes'} {match})"


@dataclass(frozen=True)
class Decision:
    """What the policy does to one discovered device."""

    device: DraDevice  # as published: the discovered attributes plus the policy's
    published: bool
    reason: str | None = None  # why it is not published
    rule: int | None = None  # index of the exclude rule that removed it
    attributes: dict[str, AttributeValue] = field(default_factory=dict)  # the policy's, for this device
    # the policy's attributes would break the API's per-device limit: published without them
    problem: str | None = None


@dataclass(frozen=True)
class DevicePolicy:
    rules: tuple[Rule, ...] = ()

    @property
    def opt_in(self) -> bool:
        return any(r.action == INCLUDE for r in self.rules)

    def summary(self) -> str:
        counts = {what: sum(1 for r in self.rules if test(r)) for what, test in (
            ("exclude", lambda r: r.action == EXCLUDE), ("include", lambda r: r.action == INCLUDE),
            ("with attributes", lambda r: bool(r.attributes)))}
        return f"{len(self.rules)} rule(s): " + ", ".join(f"{n} {what}" for what, n in counts.items())

    def decide(self, inv: Inventory, driver: str | None = None) -> list[Decision]:
        """A decision for every discovered device (of `driver`, when given), in inventory order."""
        facts: dict[str, Facts] = {}
        out = []
        for dev in inv.dra_devices():
            if driver is not None and dev.driver != driver:
                continue
            if dev.pci_address not in facts:
                facts[dev.pci_address] = Facts.of(inv, inv.function(dev.pci_address))
            out.append(self._decide(dev, facts[dev.pci_address]))
        return out

    def decide_device(self, inv: Inventory, dev: DraDevice) -> Decision:
        """The decision for one device (prepare: deciding the whole node per claim costs ~10 ms on 1024 VFs)."""
        return self._decide(dev, Facts.of(inv, inv.function(dev.pci_address)))

    def check(self, inv: Inventory) -> None:
        """Raise PolicyError when applying the policy to this inventory breaks an API limit."""
        problems = [d.problem for d in self.decide(inv) if d.problem]
        if problems:
            more = f" (and {len(problems) - 1} more device(s))" if len(problems) > 1 else ""
            raise PolicyError(problems[0] + more)

    def _decide(self, dev: DraDevice, facts: Facts) -> Decision:
        matching = [r for r in self.rules if r.match.matches(facts, dev.driver)]
        excluded = next((r for r in matching if r.action == EXCLUDE), None)
        if excluded is not None:
            return Decision(dev, False, f"excluded by {excluded.describe()}", excluded.index)
        if self.opt_in and not any(r.action == INCLUDE for r in matching):
            includes = ", ".join(r.path for r in self.rules if r.action == INCLUDE)
            return Decision(dev, False, f"not included: publishing is opt-in and no include rule ({includes}) "
                                        f"matches it")
        attrs: dict[str, AttributeValue] = {}
        problem = None
        for rule in matching:
            attrs.update(rule.attributes)
            total = len(dev.attributes) + len(attrs)
            if problem is None and total > MAX_ATTRIBUTES:
                problem = (f"{rule.path}.attributes: device {dev.name} ({dev.driver}) would carry {total} "
                           f"attributes ({len(dev.attributes)} built-in), the API allows {MAX_ATTRIBUTES}")
        if problem is not None:
            return Decision(dev, True, attributes=attrs, problem=problem)
        published = replace(dev, attributes={**dev.attributes, **attrs}) if attrs else dev
        return Decision(published, True, attributes=attrs)


NO_POLICY = DevicePolicy()


# --- decoding ---------------------------------------------------------------------------


def load_policy(text: str | bytes) -> DevicePolicy:
    """Decode a policy document (YAML or JSON)."""
    import yaml

    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise PolicyError(f"not valid YAML: {e}") from e
    return parse_policy(doc)


def parse_policy(doc: Any) -> DevicePolicy:
    """Strictly decode a parsed policy document: unknown fields and bad values name the field."""
    if not isinstance(doc, dict):
        raise PolicyError(f"expected a {KIND} document (a mapping with apiVersion, kind, rules), "
                          f"got {_kind_of(doc)}")
    _no_unknown(doc, _TOP_FIELDS, "")
    for key, wanted in (("apiVersion", API_VERSION), ("kind", KIND)):
        if doc.get(key) != wanted:
            raise PolicyError(f"{key}: expected {wanted}, got {doc.get(key)!r}")
    rules = doc.get("rules")
    if rules is None:
        return NO_POLICY
    if not isinstance(rules, list):
        raise PolicyError(f"rules: expected a list of rules, got {_kind_of(rules)}")
    return DevicePolicy(tuple(_rule(i, obj) for i, obj in enumerate(rules)))


def _rule(index: int, obj: Any) -> Rule:
    path = f"rules[{index}]"
    if not isinstance(obj, dict):
        raise PolicyError(f"{path}: expected a mapping with match, action, attributes, got {_kind_of(obj)}")
    _no_unknown(obj, _RULE_FIELDS, path)
    try:
        match = parse_selector(obj.get("match"), f"{path}.match")
    except SelectorError as e:
        raise PolicyError(str(e)) from e
    action = obj.get("action")
    if action is not None and action not in (INCLUDE, EXCLUDE):
        raise PolicyError(f"{path}.action: expected {INCLUDE} or {EXCLUDE}, got {action!r}")
    attributes = _attributes(obj.get("attributes"), f"{path}.attributes")
    if action == EXCLUDE and attributes:
        raise PolicyError(f"{path}: an exclude rule's attributes are never published (its devices are not); "
                          f"put them in a rule of their own")
    if action is None and not attributes:
        raise PolicyError(f"{path}: the rule does nothing: set action ({INCLUDE} or {EXCLUDE}) or attributes")
    return Rule(index, match, action, attributes)


def _attributes(obj: Any, path: str) -> tuple[tuple[str, AttributeValue], ...]:
    if obj is None:
        return ()
    if not isinstance(obj, dict):
        raise PolicyError(f"{path}: expected a mapping of attribute names to values, got {_kind_of(obj)}")
    return tuple((_attribute_name(name, path), _attribute_value(value, f'{path}["{name}"]'))
                 for name, value in obj.items())


def _attribute_name(name: Any, path: str) -> str:
    if not isinstance(name, str):
        raise PolicyError(f"{path}: attribute names are strings, got {_kind_of(name)} {name!r}")
    where = f'{path}["{name}"]'
    domain, _, ident = name.rpartition("/")
    if name in RESERVED_ATTRIBUTES or (domain in DRIVERS and ident in RESERVED_ATTRIBUTES):
        raise PolicyError(f"{where}: {name!r} is a built-in attribute the driver publishes itself; "
                          f"a policy cannot set or override it")
    if not domain:
        raise PolicyError(f"{where}: needs a domain of your own, e.g. example.com/{name} (a name without one "
                          f"belongs to the driver's domain)")
    if domain in DRIVERS:
        raise PolicyError(f"{where}: the domain {domain} holds the driver's built-in attributes; "
                          f"use a domain of your own")
    if domain == STANDARD_DOMAIN:  # Kubernetes defines the names there (pciBusID, pcieRoot, ...)
        raise PolicyError(f"{where}: the domain {STANDARD_DOMAIN} is reserved for Kubernetes' standard "
                          f"attributes; use a domain of your own")
    problems = attribute_name_problems(name)
    if problems:
        raise PolicyError(f"{where}: {'; '.join(problems)}")
    return name


def _attribute_value(value: Any, where: str) -> AttributeValue:
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        if not INT64_MIN <= value <= INT64_MAX:
            raise PolicyError(f"{where}: {value} does not fit a 64-bit integer")
        return value
    if isinstance(value, str):
        if len(value.encode()) > MAX_STRING_BYTES:
            raise PolicyError(f"{where}: the value is {len(value.encode())} bytes long, "
                              f"the API allows {MAX_STRING_BYTES}")
        return value
    if isinstance(value, dict) and "version" in value:
        raise PolicyError(f"{where}: version attributes are not supported; publish the version as a string")
    raise PolicyError(f"{where}: expected a string, an integer or a boolean, got {_kind_of(value)} {value!r}")


def _no_unknown(obj: dict, known: tuple[str, ...], path: str) -> None:
    unknown = sorted(str(k) for k in obj if k not in known)
    if unknown:
        where = ", ".join(f"{path}.{k}" if path else k for k in unknown)
        raise PolicyError(f"{where}: unknown field (known: {', '.join(known)})")


def _kind_of(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list",
            dict: "a mapping", type(None): "nothing"}.get(type(value), type(value).__name__)
