"""Running a CNI IPAM plugin (host-local, whereabouts, static, ...) by the CNI protocol, spec 1.0.0.

The plugin is the binary named config["type"] in one of the bin dirs. It takes its parameters from
CNI_* environment variables and the network config on stdin, and answers on stdout with a result
(ADD) or, exiting non-zero, with an error object {code, msg, details}.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import time
from dataclasses import dataclass, field

DEFAULT_CNI_BIN_DIRS = ("/opt/cni/bin",)  # where CNI plugins live on a node (libcni's default)
_DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# A plugin binary being replaced on disk (an upgrade, a DaemonSet copying it in) cannot be executed
# for a moment: retry like libcni does, with a short backoff.
_ETXTBSY_RETRIES = (0.1, 0.2, 0.4, 0.8)
_STDERR_TAIL = 500  # characters of a plugin's stderr worth quoting


class IpamError(Exception):
    """An IPAM plugin call failed; says which plugin, which command and what the plugin said."""

    def __init__(self, plugin: str, command: str, message: str, code: int | None = None, details: str = "") -> None:
        super().__init__(plugin, command, message, code, details)
        self.plugin = plugin
        self.command = command
        self.message = message
        self.code = code
        self.details = details

    def __str__(self) -> str:
        text = f"IPAM plugin {self.plugin} {self.command}: {self.message}"
        if self.details:
            text += f" ({self.details})"
        if self.code is not None:
            text += f" [CNI error code {self.code}]"
        return text


@dataclass(frozen=True)
class IpamResult:
    ips: tuple[str, ...]  # CIDR addresses
    routes: tuple[tuple[str, str | None], ...]  # (dst, gw); gw None: "the gateway", as the CNI spec leaves it
    gateway: str | None = None  # the first address's gateway
    raw: dict = field(default_factory=dict, compare=False)  # the plugin's whole result


def ipam_add(bin_dirs: list[str], ipam: dict, *, container_id: str, netns: str, ifname: str,
             network: str = "sriovdra", cni_version: str = "1.0.0", args: dict[str, str] | None = None,
             timeout: float = 10.0) -> IpamResult:
    """Allocate addresses for (container_id, ifname) in `network`."""
    call = _Call("ADD", bin_dirs, ipam, container_id, netns, ifname, network, cni_version, args, timeout)
    return _parse_result(call.plugin, call.run())


def ipam_del(bin_dirs: list[str], ipam: dict, *, container_id: str, netns: str | None, ifname: str,
             network: str = "sriovdra", cni_version: str = "1.0.0", args: dict[str, str] | None = None,
             timeout: float = 10.0) -> None:
    """Release what ADD allocated. Plugins treat a DEL of nothing as success, so calling it twice is fine."""
    _Call("DEL", bin_dirs, ipam, container_id, netns, ifname, network, cni_version, args, timeout).run()


@dataclass(frozen=True)
class _Call:
    command: str
    bin_dirs: list[str]
    ipam: dict
    container_id: str
    netns: str | None
    ifname: str
    network: str
    cni_version: str
    args: dict[str, str] | None
    timeout: float

    @property
    def plugin(self) -> str:
        return str(self.ipam.get("type") or "?")

    def run(self) -> dict:
        binary = self._binary()
        stdin = json.dumps({"cniVersion": self.cni_version, "name": self.network, "ipam": self.ipam}).encode()
        proc = self._exec(binary, stdin, self._env())
        if proc.returncode != 0:
            raise self._plugin_error(proc)
        if not proc.stdout.strip():
            return {}  # DEL (and CHECK) print nothing on success
        try:
            out = json.loads(proc.stdout)
        except ValueError as e:
            raise IpamError(self.plugin, self.command, f"invalid JSON on stdout: {e}") from e
        if not isinstance(out, dict):
            raise IpamError(self.plugin, self.command, f"expected a JSON object, got {type(out).__name__}")
        return out

    def _binary(self) -> str:
        name = self.ipam.get("type")
        if not isinstance(name, str) or not name or "/" in name or name in (".", ".."):
            raise IpamError(self.plugin, self.command, f"ipam type must be a plugin name, got {name!r}")
        for directory in self.bin_dirs:
            path = os.path.join(directory, name)
            if os.path.isfile(path) and os.access(path, os.X_OK):
                return path
        raise IpamError(name, self.command, f"no executable {name!r} in {', '.join(self.bin_dirs) or '(no dirs)'}")

    def _env(self) -> dict[str, str]:
        # Only PATH and the protocol's variables: the daemon's environment (tokens, proxies) is not the plugin's.
        env = {
            "PATH": os.environ.get("PATH") or _DEFAULT_PATH,
            "CNI_COMMAND": self.command,
            "CNI_CONTAINERID": self.container_id,
            "CNI_IFNAME": self.ifname,
            "CNI_PATH": os.pathsep.join(self.bin_dirs),
        }
        if self.netns is not None:
            env["CNI_NETNS"] = self.netns
        if self.args:
            env["CNI_ARGS"] = self._cni_args()
        return env

    def _cni_args(self) -> str:
        for key, value in self.args.items():
            if not key or any(c in key for c in "=;") or ";" in str(value):
                raise IpamError(self.plugin, self.command, f"CNI_ARGS entry {key}={value!r}: no '=' or ';' allowed")
        return ";".join(f"{key}={value}" for key, value in self.args.items())

    def _exec(self, binary: str, stdin: bytes, env: dict[str, str]) -> subprocess.CompletedProcess:
        for delay in (*_ETXTBSY_RETRIES, None):
            try:
                # run() kills the plugin and reaps it when the timeout expires.
                return subprocess.run([binary], input=stdin, capture_output=True, env=env, timeout=self.timeout,
                                      cwd="/", close_fds=True)
            except subprocess.TimeoutExpired as e:
                raise IpamError(self.plugin, self.command, f"no answer within {self.timeout:g}s: killed") from e
            except OSError as e:
                if e.errno != errno.ETXTBSY or delay is None:
                    raise IpamError(self.plugin, self.command, f"cannot run {binary}: {e.strerror or e}") from e
                time.sleep(delay)
        raise AssertionError("unreachable")

    def _plugin_error(self, proc: subprocess.CompletedProcess) -> IpamError:
        try:
            err = json.loads(proc.stdout)
        except ValueError:
            err = None
        if isinstance(err, dict) and ("msg" in err or "code" in err):
            code = err.get("code")
            return IpamError(self.plugin, self.command, str(err.get("msg") or "no message"),
                             code if isinstance(code, int) else None, str(err.get("details") or ""))
        stderr = proc.stderr.decode(errors="replace").strip()[-_STDERR_TAIL:]
        stdout = proc.stdout.decode(errors="replace").strip()[-_STDERR_TAIL:]
        return IpamError(self.plugin, self.command, f"exit status {proc.returncode}: {stderr or stdout or 'no output'}")


def _parse_result(plugin: str, out: dict) -> IpamResult:
    try:
        ips = tuple(str(ip["address"]) for ip in out.get("ips") or ())
        routes = tuple((str(r["dst"]), r.get("gw") or None) for r in out.get("routes") or ())
        gateway = next((ip["gateway"] for ip in out.get("ips") or () if ip.get("gateway")), None)
    except (KeyError, TypeError, AttributeError) as e:
        raise IpamError(plugin, "ADD", f"malformed result: {e!r} in {json.dumps(out)[:_STDERR_TAIL]}") from e
    return IpamResult(ips=ips, routes=routes, gateway=gateway, raw=out)
