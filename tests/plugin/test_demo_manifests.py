"""demo/*.yaml: every object is valid Kubernetes 1.37, and every scenario runs as on a cluster:
its claims are allocated on a demo fake host from the ResourceSlices `serve` publishes (CEL
selectors, counts, constraints, admin access: tests/support/allocator.py), then prepared through
the real `serve` and kubelet client, and the CDI specs give the pods what demo/README.md says."""

from __future__ import annotations

import copy
import json
import os

import pytest
import yaml

from sriovdra import fakehost
from sriovdra.host.discovery import discover
from sriovdra.host.paths import HostPaths
from sriovdra.model import IB_DRIVER, SRIOV_DRIVER
from tests.conftest import REPO
from tests.support import allocator
from tests.support.claims import IB_CLASS, VF_CLASS, ref
from tests.support.helm import CHART
from tests.support.waiting import wait

DEMO = REPO / "demo"
ADMIN_LABEL = "resource.kubernetes.io/admin-access"
# Which demo fake host shows each scenario (demo/README.md says the same).
HOSTS = {
    "sriov-one-vf.yaml": "ethernet-baremetal",
    "sriov-two-pods.yaml": "ethernet-baremetal",
    "sriov-shared-claim.yaml": "mixed",
    "sriov-vfconfig.yaml": "ethernet-baremetal",
    "ib-test1.yaml": "infiniband-vm",
    "ib-test2.yaml": "infiniband-baremetal",
    "ib-test3.yaml": "infiniband-baremetal",
    "ib-test4.yaml": "infiniband-baremetal",
    "ib-test5.yaml": "infiniband-baremetal",
}
CDI_KIND = {SRIOV_DRIVER: "vf", IB_DRIVER: "port"}


@pytest.fixture(scope="module")
def chart_classes(helm_template) -> dict[str, dict]:
    """The DeviceClasses charts/sriovdra installs (default values: both drivers); the demos bring
    only extra ones."""
    classes = {c["metadata"]["name"]: c for c in helm_template(CHART).by_kind("DeviceClass")}
    assert set(classes) == {VF_CLASS, IB_CLASS}, "the demos use the chart's two classes by name"
    return classes


@pytest.fixture(scope="module")
def inventory(tmp_path_factory):
    """inventory(host) -> the discovered Inventory of a demo host, each built once (not `large`)."""
    cache = {}

    def _get(host: str):
        if host not in cache:
            built = fakehost.build(str(DEMO / "hosts" / f"{host}.yaml"), str(tmp_path_factory.mktemp(host)))
            cache[host] = discover(HostPaths.resolve(built.root))
        return cache[host]

    return _get


def _docs(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((DEMO / name).read_text()) if d]


def _of(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def _expressions(docs: list[dict]):
    for d in docs:
        spec = d.get("spec", {})
        if d["kind"] == "DeviceClass":
            yield from (s["cel"]["expression"] for s in spec.get("selectors", []))
        devices = {"ResourceClaimTemplate": spec.get("spec", {}).get("devices"),
                   "ResourceClaim": spec.get("devices")}.get(d["kind"])
        if devices:
            for req in devices["requests"]:
                yield from (s["cel"]["expression"] for s in req["exactly"].get("selectors", []))


def test_every_demo_file_is_a_scenario_with_a_host_and_described_in_the_readme():
    files = sorted(p.name for p in DEMO.glob("*.yaml"))
    assert files == sorted(HOSTS)
    readme = (DEMO / "README.md").read_text()
    for name, host in HOSTS.items():
        assert f"`{name}`" in readme and f"`{host}`" in readme, name


@pytest.mark.parametrize("name", sorted(HOSTS))
def test_objects_are_valid_kubernetes_1_37(name):
    import kubernetes_validate

    for doc in _docs(name):
        kubernetes_validate.validate(doc, "1.37", strict=True)


@pytest.mark.parametrize("name", sorted(HOSTS))
def test_selectors_are_in_the_subset_and_name_published_attributes(name, inventory):
    inv = inventory(HOSTS[name])
    published = {(d.driver, a) for d in inv.dra_devices() for a in d.attributes}
    for expr in _expressions(_docs(name)):
        for term in allocator.parse(expr):  # Unsupported for anything the evaluator cannot judge
            if term.kind != "driver":
                assert (term.domain, term.name) in published, f"{name}: {expr} names an unpublished attribute"
    for doc in _of(_docs(name), "ResourceClaimTemplate"):
        for c in doc["spec"]["spec"]["devices"].get("constraints", []):
            domain, _, attr = c["matchAttribute"].rpartition("/")
            assert domain, f"{name}: matchAttribute needs a fully qualified name"
            assert any((d.driver == domain and a == attr) or a == c["matchAttribute"]
                       for d in inv.dra_devices() for a in d.attributes)


def test_admin_access_only_in_a_labelled_namespace():
    """The API server refuses adminAccess requests in namespaces without the label."""
    for name in HOSTS:
        docs = _docs(name)
        labelled = {n["metadata"]["name"] for n in _of(docs, "Namespace")
                    if n["metadata"].get("labels", {}).get(ADMIN_LABEL) == "true"}
        for t in _of(docs, "ResourceClaimTemplate"):
            if any(r["exactly"].get("adminAccess") for r in t["spec"]["spec"]["devices"]["requests"]):
                assert t["metadata"]["namespace"] in labelled, name


# --- the evaluator itself: it must judge exactly what it claims to -------------------------


def _device(**attrs):
    return allocator.Device(IB_DRIVER, "node1", "d", {IB_DRIVER: attrs})


def test_cel_subset_semantics():
    active = ('"portState" in device.attributes["ib.sigs.k8s.io"] && '
              'device.attributes["ib.sigs.k8s.io"].portState == "Active"')
    assert allocator.matches(active, _device(portState="Active"))
    assert not allocator.matches(active, _device(portState="Down"))
    assert not allocator.matches(active, _device())  # the guard is false, the lookup's error absorbed
    with pytest.raises(allocator.CelError):  # unguarded: no such key aborts, as in the scheduler
        allocator.matches('device.attributes["ib.sigs.k8s.io"].portState == "Active"', _device())
    with pytest.raises(allocator.CelError):
        allocator.matches('device.attributes["ib.sigs.k8s.io"].numaNode == "0"', _device(numaNode=0))
    assert allocator.matches('device.attributes["ib.sigs.k8s.io"].numaNode == 0', _device(numaNode=0))
    assert not allocator.matches('device.driver == "sriovnetwork.openshift.io"', _device())
    for unsupported in ('device.attributes["x"].a == 1 || true', '!(device.driver == "x")',
                        'device.attributes["x"].a > 1', 'device.attributes["x"].a.startsWith("y")'):
        with pytest.raises(allocator.Unsupported):
            allocator.parse(unsupported)


def test_match_attribute_keeps_both_vfs_on_one_numa_node(inventory, chart_classes):
    """With three NUMA-0 VFs taken, ib-test4 must get two NUMA-1 VFs; without the constraint the
    first free ones (one per NUMA node) would do."""
    inv = inventory("infiniband-baremetal")
    devices = [allocator.Device(d.driver, "node1", d.name, _grouped(d)) for d in inv.dra_devices()]
    numa = {d.name: d.attribute("ib.sigs.k8s.io/numaNode") for d in devices}
    vfs0 = [d.name for d in devices if d.attribute("ib.sigs.k8s.io/type") == "VF" and numa[d.name] == 0]
    taken = {(IB_DRIVER, "node1", n) for n in vfs0[:3]}
    template = _of(_docs("ib-test4.yaml"), "ResourceClaimTemplate")[0]
    claim = {"metadata": {"name": "c", "namespace": "ib-test4"}, "spec": copy.deepcopy(template["spec"]["spec"])}
    got = allocator.allocate(claim, chart_classes, devices, set(taken))["status"]["allocation"]["devices"]["results"]
    assert {numa[r["device"]] for r in got} == {1}
    claim["spec"]["devices"].pop("constraints")
    got = allocator.allocate(claim, chart_classes, devices, set(taken))["status"]["allocation"]["devices"]["results"]
    assert {numa[r["device"]] for r in got} == {0, 1}


def _grouped(d) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for key, value in d.attributes.items():
        domain, _, name = key.rpartition("/")
        out.setdefault(domain or d.driver, {})[name] = value
    return out


# --- every scenario through allocation and the real prepare ----------------------------------


def _claims_of(docs: list[dict]):
    """(pod, claim object) per pod claim, as the resourceclaim controller makes them; a claim named
    by resourceClaimName is one object however many pods or containers use it."""
    templates = {t["metadata"]["name"]: t for t in _of(docs, "ResourceClaimTemplate")}
    static = {c["metadata"]["name"]: c for c in _of(docs, "ResourceClaim")}
    for pod in _of(docs, "Pod"):
        for pc in pod["spec"]["resourceClaims"]:
            ns = pod["metadata"]["namespace"]
            if "resourceClaimTemplateName" in pc:
                t = templates[pc["resourceClaimTemplateName"]]
                claim = {"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim",
                         "metadata": {"name": f"{pod['metadata']['name']}-{pc['name']}", "namespace": ns},
                         "spec": copy.deepcopy(t["spec"]["spec"])}
            else:
                claim = static[pc["resourceClaimName"]]
            yield pod, pc["name"], claim


def _cdi_env(node, driver: str, uid: str) -> tuple[dict, list[str]]:
    spec = json.load(open(os.path.join(node.cdi_dir, f"{driver}-{CDI_KIND[driver]}_{uid}.json")))
    env = [e for d in spec["devices"] for e in d["containerEdits"].get("env", [])]
    return spec, env + spec.get("containerEdits", {}).get("env", [])


@pytest.fixture
def run_scenario(make_node, chart_classes):
    """Allocates and prepares every claim of a demo file on its host; returns per claim name
    (allocated claim, CDI spec, env, published devices by name) and the node."""
    import kubernetes_validate

    def _run(name: str):
        docs = _docs(name)
        host = yaml.safe_load((DEMO / "hosts" / f"{HOSTS[name]}.yaml").read_text())
        node = make_node(host)
        classes = {**chart_classes, **{c["metadata"]["name"]: c for c in _of(docs, "DeviceClass")}}
        inv = discover(HostPaths.resolve(node.host_root))
        want = {(d.driver, d.name) for d in inv.dra_devices()}
        node.start(sockets=len({driver for driver, _ in want}))
        plugins = node.plugins()
        wait(lambda: want <= {(d.driver, d.name) for d in allocator.devices_of(node.api.slices())}, 30,
             "the ResourceSlices")
        devices = allocator.devices_of(node.api.slices())
        taken: set = set()
        out = {}
        for pod, _, claim in _claims_of(docs):
            key = claim["metadata"]["name"]
            if key in out:  # a shared claim: allocated and prepared once
                continue
            allocated = allocator.allocate(claim, classes, devices, taken, pod=pod["metadata"]["name"])
            kubernetes_validate.validate(allocated, "1.37", strict=True)
            allocated = node.api.add_claim(allocated)
            uid = allocated["metadata"]["uid"]
            for driver in {r["driver"] for r in allocated["status"]["allocation"]["devices"]["results"]}:
                entry = node.kubelet.prepare(plugins[driver], [ref(allocated)]).claims[uid]
                assert entry.error == "", f"{name} claim {key}: {entry.error}"
                spec, env = _cdi_env(node, driver, uid)
                out[key] = (allocated, spec, env)
        return node, out, {d.name: d for d in devices}

    return _run


def _results(claim: dict) -> list[dict]:
    return claim["status"]["allocation"]["devices"]["results"]


def _token(pci: str) -> str:
    return pci.replace(":", "_").replace(".", "_")


def test_sriov_one_vf(run_scenario):
    node, claims, devices = run_scenario("sriov-one-vf.yaml")
    (claim, _, env), = claims.values()
    (r,) = _results(claim)
    pci = devices[r["device"]].attribute("sriovnetwork.openshift.io/pciAddress")
    assert f"SRIOVNETWORK_VF_DEVICE_{_token(pci)}={pci}" in env


def test_sriov_two_pods_get_distinct_roce_vfs(run_scenario):
    node, claims, devices = run_scenario("sriov-two-pods.yaml")
    assert set(claims) == {"pod0-vf", "pod1-vf"}
    got = [_results(c)[0]["device"] for c, _, _ in claims.values()]
    assert len(set(got)) == 2
    for claim, _, env in claims.values():
        pci = devices[_results(claim)[0]["device"]].attribute("sriovnetwork.openshift.io/pciAddress")
        assert any(e.startswith(f"SRIOVNETWORK_{_token(pci)}_RDMA_DEVICE=") for e in env)
    # the selector is not vacuous on this host: the E810's iavf VFs have no RDMA device
    (expr,) = _expressions(_of(_docs("sriov-two-pods.yaml"), "ResourceClaimTemplate"))
    sriov = [d for d in devices.values() if d.driver == SRIOV_DRIVER]
    assert 0 < sum(allocator.matches(expr, d) for d in sriov) < len(sriov)


def test_sriov_shared_claim_is_one_claim_for_both_containers(run_scenario):
    docs = _docs("sriov-shared-claim.yaml")
    (pod,) = _of(docs, "Pod")
    assert {c["resources"]["claims"][0]["name"] for c in pod["spec"]["containers"]} == {"shared-vf"}
    assert len(pod["spec"]["containers"]) == 2
    node, claims, _ = run_scenario("sriov-shared-claim.yaml")
    (claim, spec, env), = claims.values()
    assert claim["metadata"]["name"] == "shared-vf" and len(_results(claim)) == 1
    assert len(spec["devices"]) == 1 and any(e.startswith("SRIOVNETWORK_VF_DEVICE_") for e in env)


def test_sriov_vfconfig_kernel_vf_and_vfio_vf(run_scenario):
    node, claims, devices = run_scenario("sriov-vfconfig.yaml")
    (claim, spec, env), = claims.values()
    by_request = {r["request"]: devices[r["device"]].attribute("sriovnetwork.openshift.io/pciAddress")
                  for r in _results(claim)}
    net, dpdk = _token(by_request["net"]), _token(by_request["dpdk"])
    assert {f"SRIOVNETWORK_{net}_NETDEV=net1", f"SRIOVNETWORK_{net}_MTU=9000",
            f"SRIOVNETWORK_{net}_VLAN=100"} <= set(env)
    assert not any(e.startswith(f"SRIOVNETWORK_{net}_VFIO_DEVICE") for e in env)
    # the class's driver: vfio-pci and the claim's addVhostMount, merged for the dpdk request
    assert any(e.startswith(f"SRIOVNETWORK_{dpdk}_VFIO_DEVICE=/dev/vfio/") for e in env)
    assert not any(e.startswith(f"SRIOVNETWORK_{dpdk}_MTU") for e in env)
    paths = {n["path"] for d in spec["devices"] for n in d["containerEdits"].get("deviceNodes", [])}
    assert {"/dev/vfio/vfio", "/dev/vhost-net", "/dev/net/tun"} <= paths
    driver = os.path.join(node.sysfs, "bus", "pci", "devices", by_request["dpdk"], "driver")
    assert os.path.basename(os.readlink(driver)) == "vfio-pci"


def test_ib_test1_two_pods_two_vfs(run_scenario):
    node, claims, devices = run_scenario("ib-test1.yaml")
    got = [_results(c)[0]["device"] for c, _, _ in claims.values()]
    assert len(got) == 2 and len(set(got)) == 2
    assert all(devices[d].attribute("ib.sigs.k8s.io/type") == "VF" for d in got)
    for claim, _, env in claims.values():
        assert f"IB_DEVICE_0={_results(claim)[0]['device']}" in env
        for key in ("IBDEV", "PORT", "NETDEV", "UVERBS", "UMAD", "RDMA_CM"):
            assert any(e.startswith(f"IB_DEVICE_0_{key}=") for e in env), key


def test_ib_test2_vf_with_ibconfig(run_scenario):
    node, claims, devices = run_scenario("ib-test2.yaml")
    (claim, _, env), = claims.values()
    assert devices[_results(claim)[0]["device"]].attribute("ib.sigs.k8s.io/type") == "VF"
    assert {"IB_DEVICE_0_PKEY=0x8001", "IB_DEVICE_0_TRAFFIC_CLASS=128", "IB_DEVICE_0_MTU=4096",
            "IB_DEVICE_0_PKEY_INDEX=1",  # the first HCA's table: [0xffff, 0x8001]
            "UCX_IB_PKEY=0x0001", "NCCL_IB_PKEY=1", "NCCL_IB_TC=128", "UCX_IB_TRAFFIC_CLASS=128",
            "UCX_IB_PATH_MTU=4096"} <= set(env)


def test_ib_test3_pf_with_admin_access(run_scenario):
    node, claims, devices = run_scenario("ib-test3.yaml")
    (claim, spec, env), = claims.values()
    (r,) = _results(claim)
    assert r["adminAccess"] is True and devices[r["device"]].attribute("ib.sigs.k8s.io/type") == "PF"
    assert "DRA_ADMIN_ACCESS=true" in env
    nodes = [n["path"] for d in spec["devices"] for n in d["containerEdits"].get("deviceNodes", [])]
    assert any(p.startswith("/dev/infiniband/issm") for p in nodes)


def test_ib_test4_two_vfs_on_one_numa_node(run_scenario):
    node, claims, devices = run_scenario("ib-test4.yaml")
    (claim, _, env), = claims.values()
    got = [devices[r["device"]] for r in _results(claim)]
    assert len(got) == 2 and len({d.name for d in got}) == 2
    assert len({d.attribute("ib.sigs.k8s.io/numaNode") for d in got}) == 1
    assert {f"IB_DEVICE_0={got[0].name}", f"IB_DEVICE_1={got[1].name}"} <= set(env)


def test_ib_test5_only_active_ports(run_scenario):
    node, claims, devices = run_scenario("ib-test5.yaml")
    (claim, _, env), = claims.values()
    assert devices[_results(claim)[0]["device"]].attribute("ib.sigs.k8s.io/portState") == "Active"
    (expr,) = _expressions(_of(_docs("ib-test5.yaml"), "ResourceClaimTemplate"))
    ib = [d for d in devices.values() if d.driver == IB_DRIVER]
    down = {d.name for d in ib if d.attribute("ib.sigs.k8s.io/portState") != "Active"}
    assert down  # the host's Down VF port is what the selector must leave out
    assert {d.name for d in ib if allocator.matches(expr, d)} == {d.name for d in ib} - down
