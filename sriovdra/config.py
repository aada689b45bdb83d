"""Opaque device configuration: VfConfig (SR-IOV driver) and IbConfig (InfiniBand driver).

Decoding is strict: an unknown field, a wrong type or an out-of-range value is a ConfigError
that names the field. Every field is optional; None means "not set", so that configs can be
layered (DeviceClass configs first, then claim configs, later ones win field by field).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any

from sriovdra.model import IB_DRIVER, SRIOV_DRIVER
from sriovdra.partition import pkey_problem

VF_API_VERSION = f"{SRIOV_DRIVER}/v1alpha1"
IB_API_VERSION = "ib.resource.sigs.k8s.io/v1alpha1"
IB_MTUS = (256, 512, 1024, 2048, 4096)

_IFNAME = re.compile(r"^[^/\s:]{1,15}$")
# Names every pod already has: a VF renamed to one of them would clash (the CNI's eth0) or be
# impossible (lo), so such a config is refused up front rather than renamed behind the user's back.
RESERVED_IFNAMES = {"eth0": "the pod's primary interface (set up by its CNI)", "lo": "the pod's loopback"}
_KERNEL_DRIVER = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_MAC = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")


class ConfigError(ValueError):
    """An opaque config is invalid; str() names the kind and field, e.g. 'VfConfig.mtu: ...'."""


SHOWN = 60  # characters of a refused value quoted in a message: a 1 MB string must not become a 1 MB error


def show(value: Any) -> str:
    """repr() of a refused value for a message, cut to SHOWN characters (claim status and events carry it)."""
    text = repr(value)
    return text if len(text) <= SHOWN else f"{text[:SHOWN]}... ({len(text)} characters)"


def _type_name(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", str: "a string", list: "a list", dict: "an object"}.get(
        type(value), type(value).__name__)


class _Fields:
    """Typed field readers that raise ConfigError('<Kind>.<field>: ...')."""

    def __init__(self, kind: str, params: dict) -> None:
        self.kind, self.params = kind, params

    def error(self, name: str, message: str) -> ConfigError:
        return ConfigError(f"{self.kind}.{name}: {message}")

    def get(self, name: str, kind: type) -> Any:
        value = self.params.get(name)
        if value is None:
            return None
        if isinstance(value, bool) and kind is not bool or not isinstance(value, kind):
            raise self.error(name, f"expected {_type_name(kind())}, got {_type_name(value)} {show(value)}")
        return value

    def int_range(self, name: str, lo: int, hi: int, fmt: str = "{}") -> int | None:
        value = self.get(name, int)
        if value is not None and not lo <= value <= hi:
            raise self.error(name, f"must be in range {fmt.format(lo)}-{fmt.format(hi)}, got {fmt.format(value)}")
        return value

    def pattern(self, name: str, regex: re.Pattern, what: str) -> str | None:
        value = self.get(name, str)
        if value is not None and not regex.match(value):
            raise self.error(name, f"{show(value)} is not {what}")
        return value


def _check_header(params: Any, api_version: str, kind: str) -> dict:
    if not isinstance(params, dict):
        raise ConfigError(f"parameters: expected an object, got {_type_name(params)}")
    got_api, got_kind = params.get("apiVersion"), params.get("kind")
    if got_api != api_version or got_kind != kind:
        raise ConfigError(f"parameters: expected apiVersion {api_version} and kind {kind}, "
                          f"got apiVersion {show(got_api)} and kind {show(got_kind)}")
    return params


def _check_unknown(params: dict, cls: type, kind: str) -> None:
    known = {f.metadata["json"] for f in dataclasses.fields(cls)} | {"apiVersion", "kind"}
    unknown = sorted(str(k) for k in set(params) - known)
    if unknown:
        names = ", ".join(k if len(k) <= SHOWN else show(k) for k in unknown[:10])
        more = f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
        raise ConfigError(f"{kind}: unknown field(s) {names}{more} (known: {', '.join(sorted(known))})")


def _json(name: str, **kw) -> Any:
    return field(default=None, metadata={"json": name}, **kw)


class _Layered:
    """Field-wise overlay: set fields of `other` win, unset ones keep ours."""

    def overlay(self, other):
        merged = {f.name: getattr(other, f.name) if getattr(other, f.name) is not None else getattr(self, f.name)
                  for f in dataclasses.fields(self)}
        return type(self)(**merged)

    def to_dict(self) -> dict:
        """The config as JSON (only set fields), for checkpoints and claim status."""
        return {f.metadata["json"]: getattr(self, f.name) for f in dataclasses.fields(self)
                if getattr(self, f.name) is not None}


@dataclass(frozen=True)
class Route:
    dst: str
    gw: str | None = None

    def to_dict(self) -> dict:
        return {"dst": self.dst, **({"gw": self.gw} if self.gw else {})}


@dataclass(frozen=True)
class VfConfig(_Layered):
    """SR-IOV VF settings (apiVersion sriovnetwork.openshift.io/v1alpha1, kind VfConfig)."""

    driver: str | None = _json("driver")  # "", "default", "vfio-pci" or a kernel driver name
    if_name: str | None = _json("ifName")
    net_attach_def_name: str | None = _json("netAttachDefName")
    net_attach_def_namespace: str | None = _json("netAttachDefNamespace")
    add_vhost_mount: bool | None = _json("addVhostMount")
    mtu: int | None = _json("mtu")
    mac: str | None = _json("mac")
    vlan: int | None = _json("vlan")
    vlan_qos: int | None = _json("vlanQoS")
    vlan_proto: str | None = _json("vlanProto")
    spoof_chk: bool | None = _json("spoofChk")
    trust: bool | None = _json("trust")
    link_state: str | None = _json("linkState")
    min_tx_rate: int | None = _json("minTxRate")
    max_tx_rate: int | None = _json("maxTxRate")
    ips: tuple[str, ...] | None = _json("ips")
    routes: tuple[Route, ...] | None = _json("routes")
    ipam: dict | None = _json("ipam")  # a CNI IPAM plugin configuration, e.g. {"type": "host-local", ...}

    @property
    def vfio(self) -> bool:
        return self.driver == "vfio-pci"

    def to_dict(self) -> dict:
        out = super().to_dict()
        if self.ips is not None:
            out["ips"] = list(self.ips)
        if self.routes is not None:
            out["routes"] = [r.to_dict() for r in self.routes]
        return out


@dataclass(frozen=True)
class IbConfig(_Layered):
    """InfiniBand port settings, exactly as the InfiniBand seed documents them.

    What each does (README "What IbConfig does"): pkey is looked up in the port's P_Key table at
    prepare (sriovdra.partition; membership is the subnet manager's, reported in the claim status),
    goes to the env, and with NRI attach becomes an IPoIB P_Key child in the pod; trafficClass is a
    QP attribute only the application sets (env only); mtu is the IB MTU: env, and the pod's IPoIB
    netdev MTU minus the 4-byte IPoIB header.
    """

    pkey: int | None = _json("pkey")  # 0x0001-0xFFFF; bit 15 set = full membership (0x8001: full member of 0x0001)
    traffic_class: int | None = _json("trafficClass")  # 0-255, GRH traffic class
    mtu: int | None = _json("mtu")  # 256, 512, 1024, 2048, 4096: the IB MTU, not the netdev's

    @classmethod
    def from_dict(cls, d: dict) -> IbConfig:
        """From to_dict() (a checkpoint): validated when it was prepared."""
        return cls(pkey=d.get("pkey"), traffic_class=d.get("trafficClass"), mtu=d.get("mtu"))


def decode_vf_config(params: Any) -> VfConfig:
    params = _check_header(params, VF_API_VERSION, "VfConfig")
    _check_unknown(params, VfConfig, "VfConfig")
    f = _Fields("VfConfig", params)
    driver = f.get("driver", str)
    if driver not in (None, "", "default") and not _KERNEL_DRIVER.match(driver):
        raise f.error("driver", f"{show(driver)} is not a kernel driver name (use vfio-pci, default or e.g. mlx5_core)")
    if_name = f.pattern("ifName", _IFNAME, "a Linux interface name (1-15 characters, no '/', ':' or spaces)")
    if if_name in (".", ".."):
        raise f.error("ifName", f"{show(if_name)} is not a Linux interface name")
    if if_name in RESERVED_IFNAMES:
        raise f.error("ifName", f"{if_name!r} is {RESERVED_IFNAMES[if_name]}; pick another name, e.g. net1")
    mac = f.pattern("mac", _MAC, "a MAC address like 02:00:00:00:00:01")
    if mac is not None:
        first = int(mac[:2], 16)
        if first & 1 or mac.replace(":", "") == "000000000000":
            raise f.error("mac", f"{mac} is not a unicast address")
    vlan_proto = f.get("vlanProto", str)
    if vlan_proto not in (None, "802.1Q", "802.1ad"):
        raise f.error("vlanProto", f"expected 802.1Q or 802.1ad, got {show(vlan_proto)}")
    link_state = f.get("linkState", str)
    if link_state not in (None, "auto", "enable", "disable"):
        raise f.error("linkState", f"expected auto, enable or disable, got {show(link_state)}")
    min_rate, max_rate = f.int_range("minTxRate", 0, 10**7), f.int_range("maxTxRate", 0, 10**7)
    if min_rate and max_rate and min_rate > max_rate:
        raise f.error("minTxRate", f"{min_rate} is above maxTxRate {max_rate}")
    ipam = f.get("ipam", dict)
    if ipam is not None and not isinstance(ipam.get("type"), str):
        raise f.error("ipam", "a CNI IPAM configuration needs a string 'type' (e.g. host-local)")
    if ipam is not None and f.params.get("ips"):
        raise f.error("ipam", "use either ips (static addresses) or ipam, not both")
    return VfConfig(
        driver=driver,
        if_name=if_name,
        net_attach_def_name=f.pattern("netAttachDefName", _DNS_SUBDOMAIN, "a Kubernetes object name"),
        net_attach_def_namespace=f.pattern("netAttachDefNamespace", _DNS_LABEL, "a namespace name"),
        add_vhost_mount=f.get("addVhostMount", bool),
        mtu=f.int_range("mtu", 68, 65535),
        mac=mac.lower() if mac else None,
        vlan=f.int_range("vlan", 0, 4094),
        vlan_qos=f.int_range("vlanQoS", 0, 7),
        vlan_proto=vlan_proto,
        spoof_chk=f.get("spoofChk", bool),
        trust=f.get("trust", bool),
        link_state=link_state,
        min_tx_rate=min_rate,
        max_tx_rate=max_rate,
        ips=_ips(f),
        routes=_routes(f),
        ipam=ipam,
    )


def _ips(f: _Fields) -> tuple[str, ...] | None:
    values = f.get("ips", list)
    if values is None:
        return None
    out = []
    for i, v in enumerate(values):
        if not isinstance(v, str):
            raise f.error(f"ips[{i}]", f"expected a string, got {_type_name(v)}")
        try:
            iface = ipaddress.ip_interface(v)
        except ValueError:
            raise f.error(f"ips[{i}]", f"{show(v)} is not an address in CIDR form like 192.0.2.5/24") from None
        if "/" not in v:
            raise f.error(f"ips[{i}]", f"{show(v)} has no prefix length (CIDR form like 192.0.2.5/24)")
        out.append(str(iface))
    if len(set(out)) != len(out):
        raise f.error("ips", "addresses must be unique")
    return tuple(out)


def _routes(f: _Fields) -> tuple[Route, ...] | None:
    values = f.get("routes", list)
    if values is None:
        return None
    out = []
    for i, r in enumerate(values):
        where = f"routes[{i}]"
        if not isinstance(r, dict):
            raise f.error(where, f"expected an object with dst and optional gw, got {_type_name(r)}")
        unknown = sorted(str(k) for k in set(r) - {"dst", "gw"})
        if unknown:
            raise f.error(where, f"unknown field(s) {', '.join(show(k)[1:-1] for k in unknown)}")
        dst, gw = r.get("dst"), r.get("gw")
        # ipaddress takes ints too (5 -> 0.0.0.5): a route is text in CIDR form, nothing else
        try:
            if not isinstance(dst, str):
                raise ValueError
            dst = str(ipaddress.ip_network(dst, strict=False))
        except ValueError:
            raise f.error(f"{where}.dst", f"{show(dst)} is not a network like 10.0.0.0/8") from None
        if gw is not None:
            try:
                if not isinstance(gw, str):
                    raise ValueError
                gw = str(ipaddress.ip_address(gw))
            except ValueError:
                raise f.error(f"{where}.gw", f"{show(gw)} is not an IP address") from None
        out.append(Route(dst=dst, gw=gw))
    return tuple(out)


def decode_ib_config(params: Any) -> IbConfig:
    """Every field is checked and every bad one reported, as the InfiniBand seed's validation does
    ("IbConfig.pkey: ...; IbConfig.mtu: ...")."""
    params = _check_header(params, IB_API_VERSION, "IbConfig")
    _check_unknown(params, IbConfig, "IbConfig")
    f = _Fields("IbConfig", params)
    values: dict[str, Any] = {}
    errors: list[str] = []

    def check(name: str, read) -> None:
        try:
            values[name] = read()
        except ConfigError as e:
            errors.append(str(e))

    def pkey() -> int | None:
        value = f.get("pkey", int)
        problem = pkey_problem(value) if value is not None else None
        if problem:
            raise f.error("pkey", problem)
        return value

    def mtu() -> int | None:
        value = f.get("mtu", int)
        if value is not None and value not in IB_MTUS:
            raise f.error("mtu", f"invalid IB MTU value: {value}, must be one of {', '.join(map(str, IB_MTUS))}")
        return value

    check("pkey", pkey)
    check("traffic_class", lambda: f.int_range("trafficClass", 0, 255))
    check("mtu", mtu)
    if errors:
        raise ConfigError("; ".join(errors))
    return IbConfig(**values)


DECODERS = {SRIOV_DRIVER: decode_vf_config, IB_DRIVER: decode_ib_config}
EMPTY = {SRIOV_DRIVER: VfConfig(), IB_DRIVER: IbConfig()}
