#!/usr/bin/env python3
"""Run etcd + dra-test-apiserver (built by build.sh) on 127.0.0.1, with the resource.k8s.io/v1
imitation CRDs (gen_crds.py) registered and Established, and a kubeconfig to reach them.

Every port is picked free at start (nothing fixed), so parallel runs do not clash; both
processes listen on 127.0.0.1 only and are stopped by PID. Used by tests/apiserver/conftest.py
(import) and by up.sh/down.sh (command line):

    realapi.py up RUNDIR [--bin DIR]   start, print the kubeconfig path, leave both running
    realapi.py down RUNDIR             stop what `up RUNDIR` started

Needs the kubernetes client (PyPI kubernetes>=37,<38), kubernetes-validate and pyyaml, i.e.
the project's .venv with the [test] extras.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
CACHE = os.environ.get("SRIOVDRA_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "sriovdra")
DEFAULT_BIN = os.path.join(CACHE, "apiserver", "bin")
PORT_ATTEMPTS = 3
_PR_SET_PDEATHSIG = 1


class PortInUse(RuntimeError):
    pass


def free_ports(n: int) -> list[int]:
    """n distinct ports that are free on 127.0.0.1 right now (all held open together while picking)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _die_with_parent() -> None:
    """preexec_fn: the child gets SIGTERM when the process that started it dies (e.g. a killed
    pytest), so a crashed test run leaves nothing running."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def _tail(path: str, lines: int = 25) -> str:
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return ""


class RealApiServer:
    """etcd + dra-test-apiserver in rundir (etcd-data/, certs/, *.log, *.pid, kubeconfig)."""

    def __init__(self, rundir: str, bindir: str = DEFAULT_BIN) -> None:
        self.rundir = os.path.abspath(rundir)
        self.bindir = bindir
        self.kubeconfig = os.path.join(self.rundir, "kubeconfig")
        self.ca_file = os.path.join(self.rundir, "certs", "apiserver.crt")
        self.etcd: subprocess.Popen | None = None
        self.apiserver: subprocess.Popen | None = None
        self.etcd_port = self.peer_port = self.api_port = 0
        self.timings: dict[str, float] = {}

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.api_port}"

    # start / stop

    def start(self, timeout: float = 60.0, die_with_parent: bool = True) -> RealApiServer:
        for binary in ("etcd", "dra-test-apiserver"):
            if not os.access(os.path.join(self.bindir, binary), os.X_OK):
                raise FileNotFoundError(f"{self.bindir}/{binary} missing: run hack/apiserver/build.sh")
        os.makedirs(self.rundir, exist_ok=True)
        t0 = time.monotonic()
        for attempt in range(1, PORT_ATTEMPTS + 1):
            try:
                self._start_processes(timeout, die_with_parent)
                break
            except PortInUse:
                self.stop()
                if attempt == PORT_ATTEMPTS:
                    raise
        self.timings["readyz"] = time.monotonic() - t0
        self._write_kubeconfig()
        self.apply_crds(timeout=timeout)
        self.timings["crds"] = time.monotonic() - t0
        return self

    def _start_processes(self, timeout: float, die_with_parent: bool) -> None:
        import shutil

        for d in ("etcd-data", "certs"):
            shutil.rmtree(os.path.join(self.rundir, d), ignore_errors=True)
        self.etcd_port, self.peer_port, self.api_port = free_ports(3)
        client_url = f"http://127.0.0.1:{self.etcd_port}"
        peer_url = f"http://127.0.0.1:{self.peer_port}"
        popen = dict(stdin=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True,
                     preexec_fn=_die_with_parent if die_with_parent else None)
        self.etcd = self._spawn("etcd", [
            os.path.join(self.bindir, "etcd"), "--name", "t", "--data-dir", os.path.join(self.rundir, "etcd-data"),
            "--listen-client-urls", client_url, "--advertise-client-urls", client_url,
            "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
            "--initial-cluster", f"t={peer_url}", "--unsafe-no-fsync", "--log-level=warn"], popen)
        self.apiserver = self._spawn("apiserver", [
            os.path.join(self.bindir, "dra-test-apiserver"), f"--etcd-servers={client_url}",
            "--bind-address=127.0.0.1", f"--secure-port={self.api_port}",
            f"--cert-dir={os.path.join(self.rundir, 'certs')}"], popen)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, proc in (("etcd", self.etcd), ("apiserver", self.apiserver)):
                if proc.poll() is not None:
                    log = _tail(os.path.join(self.rundir, f"{name}.log"))
                    if "address already in use" in log:
                        raise PortInUse(f"{name}: {log}")
                    raise RuntimeError(f"{name} exited with {proc.returncode} during start-up; "
                                       f"{self.rundir}/{name}.log ends with:\n{log}")
            if self._ready():
                return
            time.sleep(0.05)
        log = _tail(os.path.join(self.rundir, "apiserver.log"))
        raise TimeoutError(f"apiserver not ready on {self.url} after {timeout:.0f}s; "
                           f"{self.rundir}/apiserver.log ends with:\n{log}")

    def _spawn(self, name: str, argv: list[str], popen: dict) -> subprocess.Popen:
        with open(os.path.join(self.rundir, f"{name}.log"), "wb") as log:
            proc = subprocess.Popen(argv, stdout=log, **popen)
        with open(os.path.join(self.rundir, f"{name}.pid"), "w") as f:
            f.write(f"{proc.pid}\n")
        return proc

    def _ready(self) -> bool:
        if not os.path.isfile(self.ca_file):
            return False
        try:
            ctx = ssl.create_default_context(cafile=self.ca_file)
            with urllib.request.urlopen(f"{self.url}/readyz", context=ctx, timeout=2) as resp:
                return resp.status == 200
        except (urllib.error.URLError, OSError, ssl.SSLError, ValueError):
            return False

    def stop(self, timeout: float = 10.0) -> None:
        """Stop both processes (apiserver first), SIGTERM then SIGKILL; waits for them to exit."""
        for proc in (self.apiserver, self.etcd):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self.apiserver = self.etcd = None
        for name in ("apiserver", "etcd"):
            try:
                os.unlink(os.path.join(self.rundir, f"{name}.pid"))
            except FileNotFoundError:
                pass

    def __enter__(self) -> RealApiServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # kubeconfig and CRDs

    def _write_kubeconfig(self) -> None:
        # anonymous (AlwaysAllow); a token so that kubectl does not prompt for credentials
        kc = {"apiVersion": "v1", "kind": "Config", "current-context": "local",
              "clusters": [{"name": "local", "cluster": {"server": self.url, "certificate-authority": self.ca_file}}],
              "users": [{"name": "anon", "user": {"token": "unused"}}],
              "contexts": [{"name": "local", "context": {"cluster": "local", "user": "anon"}}]}
        with open(self.kubeconfig, "w") as f:
            json.dump(kc, f, indent=1)  # JSON is YAML

    def api_client(self):
        from kubernetes import config

        return config.new_client_from_config(config_file=self.kubeconfig)

    def apply_crds(self, timeout: float = 60.0) -> None:
        """Create the CRDs and wait until each is Established and its resource is served."""
        from kubernetes import client

        sys.path.insert(0, HERE)
        try:
            import gen_crds
        finally:
            sys.path.remove(HERE)
        api_client = self.api_client()
        try:
            ext = client.ApiextensionsV1Api(api_client)
            names = []
            for crd in gen_crds.generate():
                try:
                    ext.create_custom_resource_definition(crd)
                except client.ApiException as e:
                    if e.status != 409:
                        raise RuntimeError(f"creating CRD {crd['metadata']['name']}: {e.status} {e.body}") from None
                names.append((crd["metadata"]["name"], crd["spec"]))
            deadline = time.monotonic() + timeout
            for name, spec in names:
                while True:
                    crd = ext.read_custom_resource_definition(name)
                    conds = {c.type: c.status for c in (crd.status.conditions or [])}
                    if conds.get("Established") == "True":
                        break
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"CRD {name} not Established after {timeout:.0f}s: {conds}")
                    time.sleep(0.05)
                ns = "/namespaces/default" if spec["scope"] == "Namespaced" else ""
                path = f"/apis/{spec['group']}/v1{ns}/{spec['names']['plural']}?limit=1"
                while True:  # Established: the handler exists; make sure a list answers
                    params = api_client.param_serialize("GET", path, header_params={"Accept": "application/json"},
                                                        auth_settings=["BearerToken"])
                    resp = api_client.call_api(*params)
                    resp.read()
                    if resp.status == 200:
                        break
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"GET {path}: HTTP {resp.status} after {timeout:.0f}s")
                    time.sleep(0.05)
        finally:
            api_client.close()


# command line (up.sh / down.sh)

def _alive(pid: int) -> bool:
    """Running (not gone, not a zombie waiting for init to reap it)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


def _stop_pidfile(rundir: str, name: str, timeout: float = 10.0) -> None:
    pidfile = os.path.join(rundir, f"{name}.pid")
    try:
        pid = int(open(pidfile).read().strip())
    except (OSError, ValueError):
        return
    try:  # only a process that is still ours: its command line names this run dir
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            ours = os.path.abspath(rundir).encode() in f.read()
    except OSError:
        ours = False
    if ours:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
    os.unlink(pidfile)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("action", choices=["up", "down"])
    ap.add_argument("rundir")
    ap.add_argument("--bin", default=DEFAULT_BIN, help="where build.sh put the binaries (default %(default)s)")
    ap.add_argument("--timeout", type=float, default=60.0)
    args = ap.parse_args(argv)
    if args.action == "down":
        for name in ("apiserver", "etcd"):
            _stop_pidfile(args.rundir, name)
        return 0
    server = RealApiServer(args.rundir, args.bin)
    try:
        server.start(timeout=args.timeout, die_with_parent=False)
    except BaseException:
        server.stop()
        raise
    print(f"apiserver {server.url} (etcd 127.0.0.1:{server.etcd_port}): readyz after {server.timings['readyz']:.2f}s, "
          f"CRDs established after {server.timings['crds']:.2f}s", file=sys.stderr)
    print(f"stop with: {os.path.join(HERE, 'down.sh')} {server.rundir}", file=sys.stderr)
    print(server.kubeconfig)
    return 0


if __name__ == "__main__":
    sys.exit(main())
