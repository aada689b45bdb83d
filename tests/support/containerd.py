"""A private containerd (Debian sid's, unpacked by hack/runtime/setup.sh) for the runtime tier.

Everything it owns lives under one base dir: config, root, state (pod netns files included:
netns_mounts_under_state_dir), gRPC/ttrpc/NRI sockets, runc's state (its Root option), CNI
config + host-local IPAM data, pod logs. What it cannot keep private, and cleanup() therefore
checks (shared/notes/real-runtime.md §3.5, §6.4):

* /run/containerd/s (shim sockets; hard-coded in containerd) and /run/containerd/fifo;
* cgroup v1 dirs /sys/fs/cgroup/<controller>/k8s.io[/<container id>];
* ptp's host-side veth + /32 route per pod (removed by CNI DEL at StopPodSandbox);
* the shim processes (containerd-shim-runc-v2 -address <our socket>), which outlive containerd.

Machine quirks baked in: restrict_oom_score_adj (root without CAP_SYS_RESOURCE), bookworm's
/usr/sbin/runc (crun refuses the hybrid cgroup layout; sid's runc needs a newer glibc), ptp +
host-local CNI (the kernel has veth but no dummy). The CNI subnet is 10.234.<n>.0/24 with the
lowest n no other instance on this machine holds (a lock file per subnet; a route check).
"""

from __future__ import annotations

import fcntl
import glob
import os
import shutil
import signal
import subprocess
import time

import grpc

from tests.support import cri as cri_mod

RUNC = "/usr/sbin/runc"
K8S_NS = "k8s.io"


def cache_dir() -> str:
    return os.path.join(os.environ.get("SRIOVDRA_CACHE") or os.path.expanduser("~/.cache/sriovdra"), "runtime")


def _run(cmd: list[str], timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


class ContainerdError(RuntimeError):
    pass


class _Subnet:
    """Holds 10.234.<n>.0/24 for one instance: an flock on /run/lock (or /tmp) that dies with the
    process, plus a check that no route of the main table uses the subnet already."""

    def __init__(self) -> None:
        lock_dir = "/run/lock" if os.access("/run/lock", os.W_OK) else "/tmp"
        for n in range(256):
            subnet = f"10.234.{n}.0/24"
            if _run(["ip", "-4", "route", "show", "match", subnet, "table", "all"]).stdout.count(f"10.234.{n}."):
                continue
            fd = os.open(os.path.join(lock_dir, f"sriovdra-cni-10.234.{n}.lock"), os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            self.fd, self.n, self.cidr, self.prefix = fd, n, subnet, f"10.234.{n}."
            return
        raise ContainerdError("no free 10.234.<n>.0/24 subnet for CNI")

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class Containerd:
    """containerd from `root` (an unpacked Debian package tree), private to `base`.

    The config schema follows the version: v3 for 2.x, v2 for 1.7 (shared/notes/real-runtime.md §3.4).
    """

    def __init__(self, base: str, *, cdi_dir: str, root: str | None = None, cache: str | None = None,
                 request_timeout: str = "2s", registration_timeout: str = "5s") -> None:
        self.cache = cache or cache_dir()
        self.pkgroot = root or os.path.join(self.cache, "root")
        self.cni_bin = os.path.join(self.cache, "root", "usr", "lib", "cni")  # sid's plugins serve both targets
        self.base = os.path.abspath(base)
        self.cdi_dir = os.path.abspath(cdi_dir)
        self.request_timeout, self.registration_timeout = request_timeout, registration_timeout
        self.binary = os.path.join(self.pkgroot, "usr", "bin", "containerd")
        self.ctr_binary = os.path.join(self.pkgroot, "usr", "bin", "ctr")
        out = _run([self.binary, "--version"]).stdout.split()
        self.version = out[2] if len(out) >= 3 else "unknown"  # "containerd <module> 2.1.9+unknown <rev>"
        self.major = int(self.version.split(".")[0]) if self.version[:1].isdigit() else 0
        d = self.base
        self.socket = os.path.join(d, "containerd.sock")  # CRI (gRPC)
        self.nri_socket = os.path.join(d, "nri.sock")
        self.config_path = os.path.join(d, "config.toml")
        self.log_path = os.path.join(d, "containerd.log")
        self.state_dir = os.path.join(d, "state")
        self.root_dir = os.path.join(d, "root")
        self.runc_root = os.path.join(d, "runc")
        self.netns_dir = os.path.join(self.state_dir, "io.containerd.grpc.v1.cri", "netns")
        self.cni_conf_dir = os.path.join(d, "cni", "net.d")
        self.ipam_dir = os.path.join(d, "cni", "ipam")
        self.pod_log_dir = os.path.join(d, "pods")
        if len(self.socket) > 100 or len(self.nri_socket) > 100:
            raise ContainerdError(f"{d}: too long for unix socket paths (108 bytes)")
        self.proc: subprocess.Popen | None = None
        self.subnet: _Subnet | None = None
        self.timings: dict[str, float] = {}
        self._cri: cri_mod.CRI | None = None
        self.seen_ids: set[str] = set()  # every container/sandbox id observed: their cgroups are checked

    # --- config ---
    def write_config(self) -> None:
        for p in (self.cni_conf_dir, self.ipam_dir, self.pod_log_dir, self.cdi_dir,
                  os.path.join(self.base, "nri", "plugins"), os.path.join(self.base, "nri", "conf.d")):
            os.makedirs(p, exist_ok=True)
        if self.subnet is None:
            self.subnet = _Subnet()
        with open(os.path.join(self.cni_conf_dir, "10-sriovdra.conflist"), "w") as f:
            f.write('{"cniVersion": "1.0.0", "name": "sriovdra-%d", "plugins": [\n'
                    '  {"type": "ptp", "ipMasq": false, "mtu": 1500,\n'
                    '   "ipam": {"type": "host-local", "dataDir": "%s", "ranges": [[{"subnet": "%s"}]]}}]}\n'
                    % (self.subnet.n, self.ipam_dir, self.subnet.cidr))
        with open(self.config_path, "w") as f:
            f.write(self._config_v3() if self.major >= 2 else self._config_v2())

    def _common(self) -> dict:
        return dict(base=self.base, root=self.root_dir, state=self.state_dir, sock=self.socket, cdi=self.cdi_dir,
                    runc=RUNC, runc_root=self.runc_root, cni_bin=self.cni_bin, cni_conf=self.cni_conf_dir,
                    nri=self.nri_socket, req=self.request_timeout, reg=self.registration_timeout)

    def _config_v3(self) -> str:
        return """version = 3
root = '{root}'
state = '{state}'
[grpc]
  address = '{sock}'
[ttrpc]
  address = '{sock}.ttrpc'
[plugins]
  [plugins.'io.containerd.internal.v1.opt']
    path = '{base}/opt'
  [plugins.'io.containerd.cri.v1.images']
    snapshotter = 'overlayfs'
    [plugins.'io.containerd.cri.v1.images'.pinned_images]
      sandbox = 'registry.k8s.io/pause:3.10'
  [plugins.'io.containerd.cri.v1.runtime']
    enable_cdi = true
    cdi_spec_dirs = ['{cdi}']
    # pod netns files under state/ instead of /run/netns: nothing of ours in a shared dir
    netns_mounts_under_state_dir = true
    # root without CAP_SYS_RESOURCE: runc cannot set the sandbox's oom_score_adj -998
    restrict_oom_score_adj = true
    disable_apparmor = true
    [plugins.'io.containerd.cri.v1.runtime'.containerd]
      default_runtime_name = 'runc'
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
        runtime_type = 'io.containerd.runc.v2'
        [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
          BinaryName = '{runc}'
          Root = '{runc_root}'
          SystemdCgroup = false
    [plugins.'io.containerd.cri.v1.runtime'.cni]
      bin_dirs = ['{cni_bin}']
      conf_dir = '{cni_conf}'
  [plugins.'io.containerd.grpc.v1.cri']
    disable_tcp_service = true
    stream_server_address = '127.0.0.1'
    stream_server_port = '0'
  [plugins.'io.containerd.nri.v1.nri']
    disable = false
    disable_connections = false
    socket_path = '{nri}'
    plugin_path = '{base}/nri/plugins'
    plugin_config_path = '{base}/nri/conf.d'
    plugin_registration_timeout = '{reg}'
    plugin_request_timeout = '{req}'
""".format(**self._common())

    def _config_v2(self) -> str:
        return """version = 2
root = '{root}'
state = '{state}'
[grpc]
  address = '{sock}'
[ttrpc]
  address = '{sock}.ttrpc'
[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = '{base}/opt'
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = 'registry.k8s.io/pause:3.10'
    enable_cdi = true
    cdi_spec_dirs = ['{cdi}']
    netns_mounts_under_state_dir = true
    restrict_oom_score_adj = true
    disable_apparmor = true
    disable_tcp_service = true
    stream_server_address = '127.0.0.1'
    stream_server_port = '0'
    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = 'overlayfs'
      default_runtime_name = 'runc'
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = 'io.containerd.runc.v2'
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          BinaryName = '{runc}'
          Root = '{runc_root}'
          SystemdCgroup = false
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = '{cni_bin}'
      conf_dir = '{cni_conf}'
  [plugins."io.containerd.nri.v1.nri"]
    disable = false
    disable_connections = false
    socket_path = '{nri}'
    plugin_path = '{base}/nri/plugins'
    plugin_config_path = '{base}/nri/conf.d'
    plugin_registration_timeout = '{reg}'
    plugin_request_timeout = '{req}'
""".format(**self._common())

    # --- lifecycle ---
    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    @property
    def cri(self) -> cri_mod.CRI:
        if self._cri is None:
            self._cri = cri_mod.CRI(self.socket, os.path.join(self.cache, "gen"), self.pod_log_dir)
        return self._cri

    def env(self) -> dict:
        # containerd looks the shim (containerd-shim-runc-v2) up in PATH
        return {"PATH": f"{os.path.dirname(self.binary)}:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root",
                "LANG": "C.UTF-8"}

    def start(self, timeout: float = 30.0, import_images: bool = True) -> float:
        """Start containerd and wait until CRI answers (and the images are there); returns seconds."""
        if self.pid:
            raise ContainerdError(f"containerd already running (pid {self.pid})")
        if not os.path.exists(self.config_path):
            self.write_config()
        t0 = time.monotonic()
        log = open(self.log_path, "ab")
        try:
            # own session: a Ctrl-C at the pytest terminal must not kill it before cleanup runs
            self.proc = subprocess.Popen([self.binary, "--config", self.config_path], stdout=log, stderr=log,
                                         stdin=subprocess.DEVNULL, env=self.env(), start_new_session=True)
        finally:
            log.close()
        deadline = t0 + timeout
        while True:
            if self.proc.poll() is not None:
                raise ContainerdError(f"containerd exited with {self.proc.returncode}:\n{self.log_tail()}")
            if os.path.exists(self.socket):
                try:
                    self.cri.version(timeout=1)
                    break
                except grpc.RpcError:
                    pass
            if time.monotonic() > deadline:
                raise ContainerdError(f"CRI not answering after {timeout}s:\n{self.log_tail()}")
            time.sleep(0.02)
        self.timings["start"] = time.monotonic() - t0
        if import_images:
            self.import_images()
        self.timings["start+images"] = time.monotonic() - t0
        return self.timings["start+images"]

    def import_images(self) -> None:
        have = set(self.cri.image_names())
        for tar, ref in (("pause.tar", cri_mod.PAUSE_IMAGE), ("bbox.tar", cri_mod.APP_IMAGE)):
            if ref not in have:
                p = self.ctr("images", "import", os.path.join(self.cache, "img", tar))
                if p.returncode:
                    raise ContainerdError(f"ctr images import {tar}: {p.stderr.strip()}")

    def ctr(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
        return _run([self.ctr_binary, "-a", self.socket, "-n", K8S_NS, *args], timeout=timeout)

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM containerd by PID and wait (SIGKILL after timeout). Pods and their shims survive."""
        if self._cri is not None:
            self._cri.close()
            self._cri = None
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def restart(self) -> float:
        """A runtime restart, as after a containerd upgrade: running pods stay up; returns seconds."""
        self.stop()
        return self.start(import_images=False)

    def log_tail(self, lines: int = 30) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    # --- what exists now ---
    def task_ids(self) -> list[str]:
        """containerd's own task list: unlike CRI's ListPodSandbox it shows the sandboxes 2.1.9
        leaks when an NRI plugin fails RunPodSandbox (real-runtime.md §6.4)."""
        p = self.ctr("tasks", "ls", "-q")
        return p.stdout.split() if p.returncode == 0 else []

    def container_ids(self) -> list[str]:
        p = self.ctr("containers", "ls", "-q")
        return p.stdout.split() if p.returncode == 0 else []

    def note_ids(self) -> None:
        """Remember every container/sandbox id there is now (their cgroup dirs are checked later)."""
        self.seen_ids.update(self.container_ids())

    def shim_pids(self) -> list[int]:
        """containerd-shim-runc-v2 processes started by this instance (their cmdline names our socket)."""
        pids = []
        for d in glob.glob("/proc/[0-9]*/cmdline"):
            try:
                with open(d, "rb") as f:
                    argv = f.read().split(b"\0")
            except OSError:
                continue
            if argv and argv[0].endswith(b"containerd-shim-runc-v2") and self.socket.encode() in argv:
                pids.append(int(d.split("/")[2]))
        return pids

    def mounts(self) -> list[str]:
        with open("/proc/mounts") as f:
            return [line.split()[1] for line in f if line.split()[1].startswith(self.base + "/")
                    or line.split()[1] == self.base]

    def pod_routes(self) -> list[str]:
        """ptp leaves a /32 route per pod to its host-side veth until CNI DEL."""
        if self.subnet is None:
            return []
        out = _run(["ip", "-4", "-o", "route", "show", "table", "all"]).stdout
        return [ln for ln in out.splitlines() if ln.startswith(self.subnet.prefix)]

    def ipam_leases(self) -> list[str]:
        """host-local's reservations: one file per IP, removed by CNI DEL."""
        return [os.path.basename(p) for p in glob.glob(os.path.join(self.ipam_dir, "*", self.subnet.prefix + "*"))] \
            if self.subnet else []

    def leftovers(self) -> list[str]:
        """Everything of this instance that a clean teardown of all pods must not leave behind
        (while containerd runs or after it stopped)."""
        out = []
        if self.pid:
            pods = [p.id[:12] for p in self.cri.list_pods()]
            out += [f"CRI pod sandbox {p}" for p in pods]
            out += [f"containerd task {t[:12]} (ctr -n k8s.io tasks ls)" for t in self.task_ids()]
        netns = os.listdir(self.netns_dir) if os.path.isdir(self.netns_dir) else []
        out += [f"pod netns file {self.netns_dir}/{n}" for n in netns]
        out += [f"route {r}" for r in self.pod_routes()]
        out += [f"host-local lease {ip}" for ip in self.ipam_leases()]
        out += [f"cgroup {d}" for d in self._cgroups()]
        if not self.pid:
            out += [f"shim process {p}" for p in self.shim_pids()]
            out += [f"mount {m}" for m in self.mounts()]
        return out

    def _cgroups(self) -> list[str]:
        found = []
        for cid in self.seen_ids:
            found += glob.glob(f"/sys/fs/cgroup/*/{K8S_NS}/{cid}")
        return sorted(found)

    # --- cleanup ---
    def remove_pods(self) -> list[str]:
        """Remove every CRI pod, then whatever task containerd still runs (the §6.4 leak on 2.1.9):
        returns a note per leaked task it had to kill."""
        notes = []
        self.note_ids()
        self.cri.remove_all()
        for tid in self.task_ids():  # leaked pause tasks: kill, delete the task and its container
            notes.append(f"leaked task {tid[:12]} (not in ListPodSandbox) killed and deleted")
            self.ctr("tasks", "kill", "-s", "SIGKILL", tid)
            for _ in range(50):
                if self.ctr("tasks", "delete", tid).returncode == 0 or tid not in self.task_ids():
                    break
                time.sleep(0.1)
            self.ctr("containers", "delete", tid)
        return notes

    def cleanup(self, remove_base: bool = True) -> tuple[list[str], list[str]]:
        """The full teardown: every pod removed through CRI, leaked tasks killed, containerd stopped
        by PID, stray shims killed, shared dirs removed when empty, nothing of ours mounted.

        Returns (notes, leftovers): notes = what had to be cleaned the hard way (leaked tasks, stray
        shims); leftovers = what is still there despite it (a test failure)."""
        notes: list[str] = []
        if self.pid:
            try:
                notes += self.remove_pods()
            except (grpc.RpcError, subprocess.SubprocessError, OSError) as e:
                notes.append(f"removing pods failed: {e}")
            self.note_ids()
        self.stop()
        for pid in self.shim_pids():  # a shim outlives containerd only when its task was not deleted
            notes.append(f"shim process {pid} still running after containerd stopped: killed")
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for m in reversed(self.mounts()):  # netns bind mounts / rootfs overlays of killed tasks
            notes.append(f"{m} still mounted: unmounted")
            _run(["umount", "-l", m])
        for cg in self._cgroups():
            try:
                os.rmdir(cg)
            except OSError:
                pass
        # shared with every containerd on the machine: removed only when empty (runc/k8s.io is
        # runc's default root, used only by `ctr run` tasks, whose runtime options we do not set)
        for d in ("/run/containerd/s", "/run/containerd/fifo", f"/run/containerd/runc/{K8S_NS}",
                  "/run/containerd/runc", "/run/containerd"):
            try:
                os.rmdir(d)
            except OSError:
                pass
        for cg in glob.glob(f"/sys/fs/cgroup/*/{K8S_NS}"):
            try:
                os.rmdir(cg)  # EBUSY/ENOTEMPTY while another runtime on this machine has pods
            except OSError:
                pass
        leftovers = self.leftovers()
        if self.subnet is not None and not leftovers:
            self.subnet.release()
            self.subnet = None
        if remove_base and not leftovers:
            shutil.rmtree(self.base, ignore_errors=True)
        return notes, leftovers
