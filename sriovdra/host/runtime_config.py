"""What the node's container runtime configuration says about CDI and NRI.

containerd: config version 3 (containerd 2.x) enables CDI and NRI unless switched off;
version 2 is read by containerd 1.7 (CDI and NRI off by default) and by 2.x (on by default),
so an unset key there is reported as unknown. CRI-O always has CDI; NRI is enable_nri.
"""

from __future__ import annotations

import glob
import os
import tomllib
from dataclasses import dataclass, field

from sriovdra.host.paths import HostPaths

CONTAINERD_CONFIG = "/etc/containerd/config.toml"
CRIO_CONFIG = "/etc/crio/crio.conf"
CRIO_CONFIG_DIR = "/etc/crio/crio.conf.d"
NRI_SOCKET = "/var/run/nri/nri.sock"

_CRI_V3 = "io.containerd.cri.v1.runtime"
_CRI_V2 = "io.containerd.grpc.v1.cri"
_NRI = "io.containerd.nri.v1.nri"


@dataclass
class RuntimeConfig:
    runtime: str  # containerd | cri-o
    config_path: str
    cdi_enabled: bool | None  # None: not set and the default depends on the version
    nri_enabled: bool | None
    cdi_spec_dirs: list[str] = field(default_factory=list)
    nri_socket: str = NRI_SOCKET
    error: str | None = None  # the file exists but could not be parsed


def _plugin(doc: dict, name: str) -> dict:
    plugins = doc.get("plugins", {})
    value = plugins.get(name, {}) if isinstance(plugins, dict) else {}
    return value if isinstance(value, dict) else {}


def read_containerd(paths: HostPaths, config: str = CONTAINERD_CONFIG) -> RuntimeConfig | None:
    path = paths.host_file(config)
    if not os.path.exists(path):
        return None
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as e:
        return RuntimeConfig("containerd", config, None, None, error=str(e))
    version = doc.get("version", 1)
    if not isinstance(version, int) or isinstance(version, bool):
        return RuntimeConfig("containerd", config, None, None, error=f"version must be an integer, got {version!r}")
    if version >= 3:
        cri, cdi_default, nri_default = _plugin(doc, _CRI_V3), True, True
    else:
        cri, cdi_default, nri_default = _plugin(doc, _CRI_V2), None, None
    nri = _plugin(doc, _NRI)
    cdi = cri.get("enable_cdi", cdi_default)
    nri_enabled = (not nri["disable"]) if isinstance(nri.get("disable"), bool) else nri_default
    dirs = cri.get("cdi_spec_dirs", ["/etc/cdi", "/var/run/cdi"])
    socket_path = nri.get("socket_path", NRI_SOCKET)
    error = None if version >= 2 else f"config version {version} is too old for CDI and NRI"
    if not _strings(dirs):
        error = f"cdi_spec_dirs must be a list of paths, got {dirs!r}"
    if not isinstance(socket_path, str):
        error, socket_path = f"NRI socket_path must be a string, got {socket_path!r}", NRI_SOCKET
    return RuntimeConfig(
        runtime="containerd",
        config_path=config,
        cdi_enabled=cdi if isinstance(cdi, bool) else None,
        nri_enabled=nri_enabled,
        cdi_spec_dirs=list(dirs) if _strings(dirs) else [],
        nri_socket=socket_path,
        error=error,
    )


def _strings(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(x, str) for x in value)


def read_crio(paths: HostPaths) -> RuntimeConfig | None:
    files = [CRIO_CONFIG] + sorted(
        "/" + os.path.relpath(p, paths.root) for p in glob.glob(paths.host_file(CRIO_CONFIG_DIR) + "/*.conf"))
    found = [f for f in files if os.path.exists(paths.host_file(f))]
    if not found:
        return None
    nri: bool | None = None
    dirs = ["/etc/cdi", "/var/run/cdi"]
    for name in found:  # drop-ins override the main file, in name order
        try:
            with open(paths.host_file(name), "rb") as f:
                doc = tomllib.load(f)
        except (OSError, tomllib.TOMLDecodeError) as e:
            return RuntimeConfig("cri-o", name, True, None, error=str(e))
        crio = doc.get("crio", {})
        if not isinstance(crio, dict):
            return RuntimeConfig("cri-o", name, True, None, error=f"[crio] must be a table, got {crio!r}")
        section = crio.get("nri")
        if isinstance(section, dict) and isinstance(section.get("enable_nri"), bool):
            nri = section["enable_nri"]
        section = crio.get("runtime")
        if isinstance(section, dict) and "cdi_spec_dirs" in section:
            if not _strings(section["cdi_spec_dirs"]):
                return RuntimeConfig("cri-o", name, True, nri,
                                     error=f"cdi_spec_dirs must be a list of paths, got {section['cdi_spec_dirs']!r}")
            dirs = list(section["cdi_spec_dirs"])
    return RuntimeConfig("cri-o", found[-1], True, nri, cdi_spec_dirs=dirs)


def read_runtimes(paths: HostPaths, containerd_config: str = CONTAINERD_CONFIG) -> list[RuntimeConfig]:
    return [c for c in (read_containerd(paths, containerd_config), read_crio(paths)) if c is not None]
