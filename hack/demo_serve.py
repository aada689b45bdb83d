#!/usr/bin/env python3
"""The serve part of the demo: `sriovdra serve` on a fake host, an API server stand-in playing the
cluster and a kubelet-like client playing the kubelet, preparing the seeds' claims.
    .venv/bin/python hack/demo_serve.py HOST_ROOT
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import yaml  # noqa: E402

from sriovdra.model import IB_DRIVER, SRIOV_DRIVER  # noqa: E402
from tests.support.apiserver import ApiServer  # noqa: E402
from tests.support.claims import IB_CLASS, allocate, ref  # noqa: E402
from tests.support.kubelet import Kubelet  # noqa: E402

SEEDS = os.path.join(REPO, "tests", "data", "seeds")


def step(title: str) -> None:
    print(f"\n== {title}", flush=True)


def main(host_root: str) -> int:
    work = tempfile.mkdtemp(prefix="sriovdra-demo-")
    kroot = tempfile.mkdtemp(prefix="kd", dir="/tmp")
    proc = None
    try:
        with ApiServer() as api:
            api.add_node("node1")
            kubeconfig = api.kubeconfig(os.path.join(work, "kubeconfig"))
            cdi_dir, state_dir = os.path.join(work, "cdi"), os.path.join(work, "state")
            cmd = ["sriovdra", "serve", "--node-name", "node1", "--kubeconfig", kubeconfig, "--kubelet-root-dir",
                   kroot, "--cdi-dir", cdi_dir, "--state-dir", state_dir, "--host-root", host_root,
                   # no container runtime in the demo: nothing to move netdevs into (tests/runtime does that)
                   "--netdev-attach", "none"]
            step("sriovdra serve --node-name node1 ... (API server stand-in on " + api.url + ")")
            log = open(os.path.join(work, "serve.log"), "w")
            proc = subprocess.Popen(cmd, stdout=log, stderr=log)
            kubelet = Kubelet(kroot)
            sockets = kubelet.wait_for_sockets(1, timeout=60, proc=proc)
            time.sleep(0.5)
            plugins = {p.name: p for p in (kubelet.register(s) for s in kubelet.sockets())}
            for p in plugins.values():
                print(f"registered {p.name}: {p.endpoint} ({', '.join(p.versions)})")
            deadline = time.time() + 20
            while time.time() < deadline and len({s["spec"]["driver"] for s in api.slices()}) < len(plugins):
                time.sleep(0.05)
            step("ResourceSlices published")
            for s in sorted(api.slices(), key=lambda s: s["metadata"]["name"]):
                names = [d["name"] for d in s["spec"]["devices"]]
                print(f"{s['metadata']['name']}: pool {s['spec']['pool']['name']} gen {s['spec']['pool']['generation']}"
                      f", {len(names)} devices: {', '.join(names[:4])}{' ...' if len(names) > 4 else ''}")
            # the demo allocates VFs (the IB seed's examples ask for VFs)
            free = {d: [x["name"] for s in api.slices(d) for x in s["spec"]["devices"]
                        if x["attributes"].get("type", {"string": "VF"})["string"] == "VF"] for d in plugins}
            claims = []
            if SRIOV_DRIVER in plugins:
                template = yaml.safe_load(open(os.path.join(SEEDS, "sriov-vf-template.yaml")))
                claims.append((SRIOV_DRIVER, api.add_claim(allocate(template["spec"]["spec"], "sriov-vf", free))))
            if IB_DRIVER in plugins:
                spec = {"devices": {"requests": [{"name": "ib", "exactly": {"deviceClassName": IB_CLASS}}],
                                    **yaml.safe_load(open(os.path.join(SEEDS, "ib-config.yaml")))}}
                claims.append((IB_DRIVER, api.add_claim(allocate(spec, "ib-vf", free))))
            for driver, claim in claims:
                step(f"NodePrepareResources {claim['metadata']['name']} ({driver}, the seed's manifest)")
                resp = kubelet.prepare(plugins[driver], [ref(claim)])
                for uid, entry in resp.claims.items():
                    for d in entry.devices:
                        print(f"claim {uid}: device {d.device_name} -> CDI {', '.join(d.cdi_device_ids)}")
                    if entry.error:
                        print(f"claim {uid}: ERROR {entry.error}")
            step(f"CDI specs in {cdi_dir}")
            for name in sorted(os.listdir(cdi_dir)):
                spec = json.load(open(os.path.join(cdi_dir, name)))
                print(f"{name} (cdiVersion {spec['cdiVersion']}):")
                for d in spec["devices"]:
                    for e in d["containerEdits"].get("env", []):
                        print(f"  env {e}")
                    for n in d["containerEdits"].get("deviceNodes", []):
                        print(f"  device {n['path']}")
            time.sleep(0.5)
            step("claim status written by the driver")
            for _, claim in claims:
                for e in api.claim("default", claim["metadata"]["name"])["status"].get("devices", []):
                    conditions = " ".join(f"{c['type']}={c['status']}" + (f" ({c['reason']})" if c['status'] != "True"
                                                                          else "") for c in e["conditions"])
                    print(f"{claim['metadata']['name']}: {e['device']} {conditions} data={json.dumps(e['data'])}")
            step(f"sriovdra checkpoint show --state-dir {state_dir}")
            sys.stdout.flush()
            subprocess.run(["sriovdra", "checkpoint", "show", "--state-dir", state_dir])
            step("NodeUnprepareResources, then SIGTERM")
            for driver, claim in claims:
                kubelet.unprepare(plugins[driver], [ref(claim)])
            proc.send_signal(signal.SIGTERM)
            print(f"serve exited with {proc.wait(timeout=30)}; CDI specs left: {os.listdir(cdi_dir)}; "
                  f"registration sockets left: {[s for s in kubelet.sockets() if s in sockets]}")
            proc = None
    finally:
        if proc is not None:
            proc.kill()
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(kroot, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
