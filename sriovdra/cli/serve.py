"""`sriovdra serve`: the kubelet plugin (run by the DaemonSet)."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from enum import Enum
from typing import Annotated, Optional

import typer

from sriovdra.cli.options import (
    ANY_PATH,
    DEFAULT_CNI_BIN_DIR,
    DIR,
    FILE,
    CniBinDir,
    DevRoot,
    HostRoot,
    SysfsRoot,
    cni_bin_dirs,
    host_paths,
)
from sriovdra.cli.logs import LogFormat, LogLevel, setup_logging
from sriovdra.cli.discover import DevicePolicyPath
from sriovdra.cli.output import die
from sriovdra.model import DRIVERS


class NetdevAttach(str, Enum):
    nri = "nri"
    cdi = "cdi"
    none = "none"


def _drivers(value: str | None) -> tuple[str, ...]:
    names = tuple(x.strip() for x in (value or "").split(",") if x.strip())
    unknown = [n for n in names if n not in DRIVERS]
    if unknown:
        die(f"--drivers: unknown driver(s) {', '.join(unknown)}; known: {', '.join(DRIVERS)}")
    return names


def _provision_config(num_vfs: int, config_file: str | None, drivers: tuple[str, ...]):
    """--num-vfs N or --provision-config FILE as a provisioning config (None: provision nothing)."""
    from sriovdra.provisioning import ProvisionError, parse_config_text, serve_config

    try:
        if config_file is None:
            return serve_config(num_vfs, drivers)
        if num_vfs:
            die("--num-vfs and --provision-config: give one of them")
        with open(config_file) as f:
            return parse_config_text(f.read(), config_file)
    except OSError as e:
        die(f"--provision-config {config_file}: {e.strerror}")
    except ProvisionError as e:
        die(f"{'--provision-config ' if config_file else ''}{e}")


def _probe_address(value: str | None) -> tuple[str, int] | None:
    if not value:
        return None
    from sriovdra.probes import ProbeAddressError, parse_address

    try:
        return parse_address(value)
    except ProbeAddressError as e:
        die(f"--probe-address: {e}")


# glibc gives every thread that mallocs its own arena (up to 8 per core), each holding freed memory:
# serve runs a few dozen threads (gRPC pools, watches, status writers) that allocate little. Two
# arenas keep the resident size down at no measurable cost to claim latency (hack/bench_budget.py).
M_ARENA_MAX = -8  # glibc malloc.h
MALLOC_ARENAS = 2


def limit_malloc_arenas() -> None:
    """mallopt(M_ARENA_MAX) unless MALLOC_ARENA_MAX is set (it wins); a no-op off glibc."""
    if os.environ.get("MALLOC_ARENA_MAX"):
        return
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").mallopt(M_ARENA_MAX, MALLOC_ARENAS)
    except (OSError, AttributeError):  # musl or another libc: its own allocator policy stands
        pass


def _plugin_index(value: str) -> str:
    if len(value) != 2 or not value.isdigit():
        die(f"--nri-plugin-index: expected two digits like 50, got {value!r}")
    return value


def serve_command(
    ctx: typer.Context,
    node_name: Annotated[str, typer.Option(envvar="NODE_NAME", help="This node's name (the pool name).")],
    drivers: Annotated[Optional[str], typer.Option(
        envvar="SRIOVDRA_DRIVERS", help=f"Comma-separated drivers to serve (default: those the node has "
                                        f"devices for): {', '.join(DRIVERS)}.")] = None,
    kubelet_root_dir: Annotated[str, typer.Option(
        envvar="SRIOVDRA_KUBELET_ROOT_DIR", click_type=DIR, help="The kubelet's --root-dir; sockets live under it.")]
    = "/var/lib/kubelet",
    cdi_dir: Annotated[str, typer.Option(envvar="SRIOVDRA_CDI_DIR", click_type=DIR,
                                         help="Where CDI specs are written.")]
    = "/var/run/cdi",
    state_dir: Annotated[str, typer.Option(envvar="SRIOVDRA_STATE_DIR", click_type=DIR,
                                           help="Where checkpoints are kept.")]
    = "/var/lib/sriovdra",
    kubeconfig: Annotated[Optional[str], typer.Option(
        envvar="KUBECONFIG", click_type=FILE,
        help="kubeconfig file (default: the in-cluster service account).")] = None,
    rolling_update_pod_uid: Annotated[Optional[str], typer.Option(
        envvar="SRIOVDRA_POD_UID", help="Per-pod socket names for rolling updates (kubelet >= 1.33).")] = None,
    rescan_interval: Annotated[float, typer.Option(
        envvar="SRIOVDRA_RESCAN_INTERVAL", min=1.0, help="Seconds between inventory rescans.")] = 15.0,
    health_interval: Annotated[float, typer.Option(
        envvar="SRIOVDRA_HEALTH_INTERVAL", min=0.1, max=25.0,
        help="Seconds between health re-sends (the kubelet times a device out after 30).")] = 10.0,
    netdev_attach: Annotated[NetdevAttach, typer.Option(
        envvar="SRIOVDRA_NETDEV_ATTACH",
        help="How netdevs reach pods: nri (moved at pod start by our NRI plugin: MTU, MAC, IPs, routes), "
             "cdi (CDI netDevices, cdiVersion 1.1.0: the runtime moves and renames), none.")] = NetdevAttach.nri,
    nri_socket: Annotated[str, typer.Option(envvar="SRIOVDRA_NRI_SOCKET", click_type=ANY_PATH,
                                            help="The runtime's NRI socket.")]
    = "/var/run/nri/nri.sock",
    nri_plugin_index: Annotated[str, typer.Option(
        envvar="SRIOVDRA_NRI_PLUGIN_INDEX", help="Two digits: where the plugin runs among NRI plugins.")] = "50",
    cni_bin_dir: CniBinDir = DEFAULT_CNI_BIN_DIR,
    device_policy: DevicePolicyPath = None,
    num_vfs: Annotated[int, typer.Option(
        envvar="SRIOVDRA_NUM_VFS", min=0, help="At start, give every SR-IOV PF of the served drivers min(N, "
                                               "sriov_totalvfs) VFs; 0 (VM mode): provision nothing.")] = 0,
    provision_config: Annotated[Optional[str], typer.Option(
        envvar="SRIOVDRA_PROVISION_CONFIG", metavar="FILE", click_type=FILE,
        help="At start, provision as this `sriovdra provision --config` file says.")] = None,
    probe_address: Annotated[Optional[str], typer.Option(
        envvar="SRIOVDRA_PROBE_ADDRESS", metavar="HOST:PORT",
        help="Serve HTTP /livez and /readyz (add ?verbose) for the kubelet's probes here; off by default.")] = None,
    log_level: Annotated[LogLevel, typer.Option(envvar="SRIOVDRA_LOG_LEVEL")] = LogLevel.info,
    log_format: Annotated[LogFormat, typer.Option(envvar="SRIOVDRA_LOG_FORMAT")] = LogFormat.text,
    host_root: HostRoot = None,
    sysfs_root: SysfsRoot = None,
    dev_root: DevRoot = None,
) -> None:
    """Run the DRA kubelet plugin: register, publish slices, prepare claims."""
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")  # before grpc loads: quiet fork notices
    limit_malloc_arenas()  # before any thread starts
    setup_logging(log_level, log_format)
    names = _drivers(drivers)
    provision = _provision_config(num_vfs, provision_config, names)
    probes = _probe_address(probe_address)
    index = _plugin_index(nri_plugin_index)
    paths = host_paths(ctx, host_root, sysfs_root, dev_root)
    bins = cni_bin_dirs(cni_bin_dir)  # every check that may die before anything listens
    from sriovdra.plugin.server import SocketPathError, listen_early

    # With --drivers known up front (the chart passes it), the kubelet can register us while the rest
    # loads; claim calls wait for the checkpoint (sriovdra.plugin.server, "Early registration").
    try:
        early = listen_early(kubelet_root_dir, names, node_name, rolling_update_pod_uid, health_interval)
    except (SocketPathError, OSError) as e:
        die(str(e))
    # kubernetes/__init__ imports kubernetes.dynamic, which imports kubernetes_validate when it is installed
    # (the test extra; never in the image): serve validates nothing client-side, and it costs 3 MB and 60 ms.
    sys.modules.setdefault("kubernetes_validate", None)
    from sriovdra.daemon import ServeOptions, Service
    from sriovdra.host.discovery import DiscoveryError
    from sriovdra.kube.api import ApiError
    from sriovdra.policyfile import PolicyFileError
    from sriovdra.probes import ProbeAddressError

    opts = ServeOptions(node_name=node_name, paths=paths, drivers=names, kubelet_root_dir=kubelet_root_dir,
                        cdi_dir=cdi_dir, state_dir=state_dir, kubeconfig=kubeconfig, pod_uid=rolling_update_pod_uid,
                        rescan_seconds=rescan_interval, health_resend_seconds=health_interval,
                        netdev_attach=netdev_attach.value, nri_socket=nri_socket, nri_plugin_index=index,
                        cni_bin_dirs=bins, device_policy=device_policy, provision=provision, probe_address=probes)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        service = Service(opts, early=early)
        service.start()
    except BaseException as e:
        for server in early.values():  # the kubelet must not keep dialing a plugin that is not coming
            server.stop(0)
        if isinstance(e, (DiscoveryError, SocketPathError, ApiError, PolicyFileError, ProbeAddressError, OSError)):
            die(str(e))
        if type(e).__name__ == "ConfigException":  # kubernetes.config.ConfigException and friends
            die(f"no Kubernetes credentials: {e} (pass --kubeconfig outside a cluster)")
        raise
    logging.getLogger("sriovdra").info("serving %s on node %s", ", ".join(service.plugins) or "nothing yet",
                                       node_name)
    stop.wait()
    service.stop()
    # Exit without interpreter finalization: a library thread we do not own (urllib3, grpc) still
    # in I/O at that point aborts the process; everything of ours is stopped and flushed by now.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
