"""The Helm chart charts/sriovdra: its values schema, and what it renders for default and non-default
values, checked against the Kubernetes 1.37 schema and against the real `sriovdra serve` / `webhook`
command lines (click parses the rendered args), the kube adapters' API calls (RBAC) and a real
serve (the probes)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import yaml

from sriovdra.model import IB_DRIVER, SRIOV_DRIVER
from tests.conftest import eth_pf, ib_pf
from tests.support.helm import CHART, REPO
from tests.support.httpget import free_port, http_get
from tests.support.node import NodeFactory
from tests.support.waiting import wait

NS = "sriovdra"
WEBHOOK_ON = ["webhook.enabled=true", "webhook.tls.caBundle=Zm9v"]

# name -> --set values; every scenario must render and validate.
SCENARIOS = {
    "default": [],
    "webhook": WEBHOOK_ON,
    "webhook-cert-manager": ["webhook.enabled=true", "webhook.tls.certManager.enabled=true"],
    "webhook-cluster-issuer": ["webhook.enabled=true", "webhook.tls.certManager.enabled=true",
                               "webhook.tls.certManager.issuerRef.name=corp-ca",
                               "webhook.tls.certManager.issuerRef.kind=ClusterIssuer"],
    "device-policy": ["devicePolicy.enabled=true"],
    "num-vfs-8": ["kubeletPlugin.numVFs=8"],
    "vap": ["validatingAdmissionPolicy.enabled=true"],
    "rolling-update": ["kubeletPlugin.rollingUpdate=true"],
    "ib-only-cdi": ["drivers.sriov.enabled=false", "kubeletPlugin.netdevAttach=cdi"],
    "provisioning": ["provisioning.timeout=30", "provisioning.pfs[0].pf=ens1f0", "provisioning.pfs[0].numVFs=4"],
    "everything": [*WEBHOOK_ON, "devicePolicy.enabled=true", "validatingAdmissionPolicy.enabled=true",
                   "kubeletPlugin.rollingUpdate=true", "kubeletPlugin.numVFs=8", "logging.format=json",
                   "logging.level=debug", "kubeletPlugin.kubeletRootDir=/data/kubelet",
                   "kubeletPlugin.nodeSelector.sriov=enabled", "image.tag=v9"],
}


# --- values.schema.json on its own (no renderer needed) ---------------------------------------

def _schema() -> dict:
    return json.loads((CHART / "values.schema.json").read_text())


def _values() -> dict:
    return yaml.safe_load((CHART / "values.yaml").read_text())


def _schema_errors(values: dict) -> list[str]:
    import jsonschema

    return [e.message for e in jsonschema.Draft7Validator(_schema()).iter_errors(values)]


def _with(path: str, value) -> dict:
    values = _values()
    *parents, last = path.split(".")
    node = values
    for key in parents:
        node = node[key]
    node[last] = value
    return values


def test_values_yaml_passes_its_schema():
    assert _schema_errors(_values()) == []


@pytest.mark.parametrize("path,value", [
    ("kubeletPlugin.numVFs", -1),
    ("kubeletPlugin.numVFs", "8"),
    ("logging.format", "xml"),
    ("logging.level", "verbose"),
    ("kubeletPlugin.netdevAttach", "macvlan"),
    ("kubeletPlugin.nriPluginIndex", "5"),
    ("kubeletPlugin.kubeletRootDir", "var/lib/kubelet"),
    ("kubeletPlugin.numVFz", 8),                  # a misspelt key
    ("imageTag", "v1"),                           # an unknown top-level key
    ("webhook.failurePolicy", "Maybe"),
    ("webhook.port", 443),                        # the webhook runs unprivileged
    ("drivers.sriov.enabled", "yes"),
    ("provisioning", {"pfs": [{"pf": "ens1f0", "numVFs": -2}]}),
    ("provisioning", {"pfz": []}),
    ("devicePolicy.policy", {"kind": "DevicePolicy", "rules": [{"action": "drop"}]}),
])
def test_wrong_values_fail_the_schema(path, value):
    assert _schema_errors(_with(path, value)), f"{path}={value!r} passed the schema"


def test_schema_refuses_no_driver_and_num_vfs_with_a_provisioning_config():
    none = _with("drivers.sriov.enabled", False)
    none["drivers"]["infiniband"]["enabled"] = False
    assert _schema_errors(none)
    both = _with("provisioning", {"pfs": [{"pf": "ens1f0", "numVFs": 4}]})
    assert _schema_errors(both) == []
    both["kubeletPlugin"]["numVFs"] = 8  # serve refuses --num-vfs with --provision-config
    assert _schema_errors(both)


# --- rendering ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def render(helm_template):
    cache: dict[tuple, list] = {}

    def _render(*sets: str):
        if sets not in cache:
            cache[sets] = helm_template(CHART, sets=list(sets), namespace=NS, release="sriovdra")
        return cache[sets]
    return _render


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_every_rendered_object_is_valid_kubernetes_1_37(render, name):
    import kubernetes_validate

    docs = render(*SCENARIOS[name])
    assert docs, f"{name}: nothing rendered"
    _refuse_duplicate_keys(docs.text)
    for doc in docs:
        if doc["apiVersion"] == "cert-manager.io/v1":  # a CRD: not in the Kubernetes schema
            _validate_cert_manager(doc)
        else:
            kubernetes_validate.validate(doc, "1.37", strict=True)
        if doc["kind"] not in CLUSTER_SCOPED:
            assert doc["metadata"]["namespace"] == NS, f"{doc['kind']} {doc['metadata']['name']}"


def _validate_cert_manager(doc: dict) -> None:
    import jsonschema

    schema = json.loads((Path(__file__).parent / "cert-manager-v1.schema.json").read_text())
    jsonschema.validate(doc, {**schema, "$ref": f"#/definitions/{doc['kind']}"})


def _refuse_duplicate_keys(text: str) -> None:
    """kubectl and the API server refuse a mapping with a repeated key; PyYAML keeps the last one."""

    class Strict(yaml.SafeLoader):
        pass

    def mapping(loader, node, deep=False):
        keys = [loader.construct_object(k, deep=True) for k, _ in node.value]
        repeated = sorted({k for k in keys if keys.count(k) > 1})
        assert not repeated, f"repeated keys {repeated} at line {node.start_mark.line + 1}"
        return yaml.SafeLoader.construct_mapping(loader, node, deep)

    Strict.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    list(yaml.load_all(text, Loader=Strict))


CLUSTER_SCOPED = {"DeviceClass", "ClusterRole", "ClusterRoleBinding", "ValidatingWebhookConfiguration",
                  "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}


def test_default_render_has_exactly_the_plugin_objects(render):
    kinds = sorted((d["kind"], d["metadata"]["name"]) for d in render())
    assert kinds == [("ClusterRole", "sriovdra"), ("ClusterRoleBinding", "sriovdra"),
                     ("DaemonSet", "sriovdra"), ("DeviceClass", "ib.sigs.k8s.io"),
                     ("DeviceClass", "virtualfunction.sriovnetwork.openshift.io"), ("ServiceAccount", "sriovdra")]


@pytest.mark.parametrize("sets,classes", [
    ((), {"virtualfunction.sriovnetwork.openshift.io": SRIOV_DRIVER, "ib.sigs.k8s.io": IB_DRIVER}),
    (("drivers.sriov.enabled=false",), {"ib.sigs.k8s.io": IB_DRIVER}),
    (("drivers.infiniband.enabled=false",), {"virtualfunction.sriovnetwork.openshift.io": SRIOV_DRIVER}),
])
def test_device_classes_select_every_device_of_each_enabled_driver(render, sets, classes):
    docs = render(*sets)
    got = {d["metadata"]["name"]: d["spec"] for d in docs.by_kind("DeviceClass")}
    assert got == {name: {"selectors": [{"cel": {"expression": f'device.driver == "{driver}"'}}]}
                   for name, driver in classes.items()}
    role = docs.one("ClusterRole")
    driver_rule = [r for r in role["rules"] if r["resources"] == ["resourceclaims/driver"]]
    assert driver_rule[0]["resourceNames"] == sorted(classes.values(), key=[SRIOV_DRIVER, IB_DRIVER].index)


def test_no_driver_enabled_fails_the_render(helm_template):
    with pytest.raises(helm_template.Error) as e:
        helm_template(CHART, sets=["drivers.sriov.enabled=false", "drivers.infiniband.enabled=false"])
    assert "drivers" in e.value.stderr


@pytest.mark.parametrize("sets", [["kubeletPlugin.numVFs=-1"], ["logging.format=xml"], ["kubeletPlugin.bogus=1"],
                                  ["webhook.enabled=true"]])
def test_wrong_values_fail_the_render(helm_template, sets):
    with pytest.raises(helm_template.Error):
        helm_template(CHART, sets=sets)


# --- the DaemonSet against the real serve command ------------------------------------------------

def _plugin(docs) -> tuple[dict, dict]:
    ds = docs.one("DaemonSet")
    return ds, ds["spec"]["template"]["spec"]


def _container_env(container: dict, node="node-a", uid="0f2c5b8e-5a43-4f5e-9d3e-3b1f4b7c9a10") -> dict[str, str]:
    env = {}
    for e in container.get("env", []):
        if "value" in e:
            env[e["name"]] = e["value"]
        else:
            field = e["valueFrom"]["fieldRef"]["fieldPath"]
            env[e["name"]] = {"spec.nodeName": node, "metadata.uid": uid}[field]
    return env


def _parse(command: str, container: dict, monkeypatch) -> dict:
    """The container's args and env as the real CLI parses them (no command runs): click's params."""
    import typer.main

    from sriovdra.cli.app import app

    for name in list(os.environ):
        if name.startswith("SRIOVDRA_") or name in ("NODE_NAME", "KUBECONFIG"):
            monkeypatch.delenv(name)
    for name, value in _container_env(container).items():
        monkeypatch.setenv(name, value)
    args = container["args"]
    assert args[0] == command
    group = typer.main.get_command(app)
    with group.make_context("sriovdra", [command]) as parent:
        cmd = group.get_command(parent, command)
        with cmd.make_context(command, list(args[1:]), parent=parent) as ctx:
            # click hands typer's enum options over as their values; typer converts them later
            return {k: getattr(v, "value", v) for k, v in ctx.params.items()}


def _mounted(spec: dict, container: dict) -> dict[str, dict]:
    """mountPath -> the volume behind it."""
    volumes = {v["name"]: v for v in spec["volumes"]}
    return {m["mountPath"]: volumes[m["name"]] for m in container["volumeMounts"]}


def _covered(path: str, mounts: dict[str, dict]) -> bool:
    return any(path == m or path.startswith(m.rstrip("/") + "/") for m in mounts)


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_daemonset_args_are_accepted_by_serve_and_its_paths_are_mounted(render, name, monkeypatch):
    ds, spec = _plugin(render(*SCENARIOS[name]))
    (container,) = spec["containers"]
    params = _parse("serve", container, monkeypatch)
    assert params["node_name"] == "node-a"
    mounts = _mounted(spec, container)
    root = params["kubelet_root_dir"]
    needed = [f"{root}/plugins", f"{root}/plugins_registry", params["cdi_dir"], params["state_dir"], "/sys",
              "/dev", "/var/run/netns", *params["cni_bin_dir"].split(":"), "/var/lib/cni"]
    if str(params["netdev_attach"]) == "nri":
        needed.append(params["nri_socket"])
    for path in filter(None, (params["provision_config"], params["device_policy"])):
        needed.append(path)
    missing = [p for p in needed if not _covered(p, mounts)]
    assert not missing, f"{name}: not mounted: {missing}"
    # Host paths are the node's own paths: the plugin hands them to the kubelet and the runtime.
    for path, volume in mounts.items():
        if "hostPath" in volume:
            assert volume["hostPath"]["path"] == path
    assert spec["hostNetwork"] is True and spec["hostPID"] is False
    assert container["securityContext"]["privileged"] is True


def test_defaults_reach_serve(render, monkeypatch):
    ds, spec = _plugin(render())
    params = _parse("serve", spec["containers"][0], monkeypatch)
    assert params["drivers"] == f"{SRIOV_DRIVER},{IB_DRIVER}"
    assert params["num_vfs"] == 0 and params["provision_config"] is None and params["device_policy"] is None
    assert params["rolling_update_pod_uid"] is None
    assert (str(params["log_level"]), str(params["log_format"])) == ("info", "text")
    assert params["kubelet_root_dir"] == "/var/lib/kubelet"
    assert spec["priorityClassName"] == "system-node-critical"
    assert ds["spec"]["updateStrategy"]["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}
    mounts = {m["mountPath"]: m for m in spec["containers"][0]["volumeMounts"]}
    assert mounts["/var/run/netns"]["mountPropagation"] == "HostToContainer"
    assert mounts["/opt/cni/bin"]["readOnly"] is True


def test_non_default_values_reach_serve(render, monkeypatch):
    ds, spec = _plugin(render(*SCENARIOS["everything"]))
    (container,) = spec["containers"]
    params = _parse("serve", container, monkeypatch)
    assert params["num_vfs"] == 8
    assert params["rolling_update_pod_uid"] == "0f2c5b8e-5a43-4f5e-9d3e-3b1f4b7c9a10"
    assert (str(params["log_level"]), str(params["log_format"])) == ("debug", "json")
    assert params["kubelet_root_dir"] == "/data/kubelet"
    assert params["device_policy"] == "/etc/sriovdra/device-policy/policy.yaml"
    assert ds["spec"]["updateStrategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    assert spec["nodeSelector"] == {"sriov": "enabled"}
    assert container["image"] == "sriovdra:v9"


def test_ib_only_with_cdi_serves_one_driver_without_the_nri_socket(render, monkeypatch):
    _, spec = _plugin(render(*SCENARIOS["ib-only-cdi"]))
    params = _parse("serve", spec["containers"][0], monkeypatch)
    assert params["drivers"] == IB_DRIVER and str(params["netdev_attach"]) == "cdi"
    assert not any(v["name"] == "nri" for v in spec["volumes"])


def test_provisioning_config_is_a_mounted_configmap_serve_can_parse(render, monkeypatch):
    from sriovdra.provisioning import parse_config_text

    docs = render(*SCENARIOS["provisioning"])
    _, spec = _plugin(docs)
    (container,) = spec["containers"]
    params = _parse("serve", container, monkeypatch)
    assert params["num_vfs"] == 0
    path = params["provision_config"]
    mount = next(m for m in container["volumeMounts"] if path.startswith(m["mountPath"] + "/"))
    volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
    cm = docs.one("ConfigMap", volume["configMap"]["name"])
    text = cm["data"][os.path.basename(path)]
    config = parse_config_text(text, path)
    assert yaml.safe_load(text) == {"timeout": 30, "pfs": [{"pf": "ens1f0", "numVFs": 4}]}
    assert config is not None


def test_device_policy_is_a_directory_mount_of_a_policy_serve_can_load(render, monkeypatch):
    from sriovdra.policy import load_policy

    docs = render("devicePolicy.enabled=true")
    _, spec = _plugin(docs)
    (container,) = spec["containers"]
    params = _parse("serve", container, monkeypatch)
    path = params["device_policy"]
    mount = next(m for m in container["volumeMounts"] if path.startswith(m["mountPath"] + "/"))
    assert "subPath" not in mount  # the kubelet only updates whole-directory ConfigMap mounts
    volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
    text = docs.one("ConfigMap", volume["configMap"]["name"])["data"][os.path.basename(path)]
    assert list(load_policy(text).rules) == []


def test_provisioning_change_rolls_the_pods_and_policy_change_does_not(render):
    def annotations(*sets):
        return render(*sets).one("DaemonSet")["spec"]["template"]["metadata"]["annotations"]

    base = annotations()
    assert annotations("provisioning.pfs[0].pf=ens1f0", "provisioning.pfs[0].numVFs=4") != base
    assert annotations("devicePolicy.enabled=true") == base


def test_rendered_probes_reach_a_real_serve(helm_template, build_host, tmp_path):
    """Start serve with the rendered --probe-address and send it the rendered httpGet probes."""
    port = free_port()
    _, spec = _plugin(helm_template(CHART, sets=[f"kubeletPlugin.probePort={port}"]))
    (container,) = spec["containers"]
    (address,) = [a for a in container["args"] if a.startswith("--probe-address=")]
    assert address == f"--probe-address=127.0.0.1:{port}"

    def probe(kind: str) -> int:
        get = container[kind]["httpGet"]
        assert get["scheme"] == "HTTP" and get["port"] == port
        return http_get(get["host"], get["port"], get["path"], timeout=container[kind]["timeoutSeconds"])[0]

    host, _ = build_host({"pfs": [eth_pf(vfs={"total": 4, "count": 2}), ib_pf()]})
    factory = NodeFactory(tmp_path)
    try:
        node = factory.make(host.root, host.sysfs, host.dev)
        node.start(address, sockets=2)
        assert probe("livenessProbe") == 200
        assert probe("readinessProbe") == 503  # the kubelet has not registered the plugins yet
        node.plugins()
        wait(lambda: probe("readinessProbe") == 200, what="readiness after registration")
    finally:
        factory.close()


# --- RBAC against the API calls the code makes ---------------------------------------------------

# ResourceV1Api method -> (resource, verb); a new call in sriovdra/kube/ must be added here and to the chart.
API_VERBS = {
    "list_resource_slice": ("resourceslices", "list"),
    "replace_resource_slice": ("resourceslices", "update"),
    "create_resource_slice": ("resourceslices", "create"),
    "delete_resource_slice": ("resourceslices", "delete"),
    "read_namespaced_resource_claim": ("resourceclaims", "get"),
    "replace_namespaced_resource_claim_status": ("resourceclaims/status", "update"),
}


def _granted(role: dict) -> set[tuple[str, str]]:
    return {(res, verb) for rule in role["rules"] for res in rule["resources"] for verb in rule["verbs"]}


def test_cluster_role_grants_exactly_what_the_kube_adapters_call(render):
    used = set()
    for source in sorted((REPO / "sriovdra" / "kube").glob("*.py")):
        text = source.read_text()
        for method in re.findall(r"self\.api\.(\w+)", text):
            assert method in API_VERBS, f"{source.name} calls {method}: add it to API_VERBS and the chart's RBAC"
            used.add(API_VERBS[method])
        if "watch_events(self.api.list_resource_slice" in text:
            used.add(("resourceslices", "watch"))
        if re.search(r"get_path\(self\.api_client, f\"/api/v1/nodes/", text):
            used.add(("nodes", "get"))
    granted = _granted(render().one("ClusterRole"))
    granted.discard(("resourceclaims/driver", "associated-node:update"))
    assert granted == used


def test_status_writes_are_limited_to_own_node_claims_of_our_drivers(render):
    docs = render()
    (rule,) = [r for r in docs.one("ClusterRole")["rules"] if r["resources"] == ["resourceclaims/driver"]]
    assert rule["verbs"] == ["associated-node:update"] and rule["apiGroups"] == ["resource.k8s.io"]
    binding = docs.one("ClusterRoleBinding")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "sriovdra", "namespace": NS}]
    assert binding["roleRef"]["name"] == docs.one("ClusterRole")["metadata"]["name"]
    assert docs.one("DaemonSet")["spec"]["template"]["spec"]["serviceAccountName"] == "sriovdra"


def test_admission_policy_binds_the_plugin_to_its_own_node(render):
    docs = render("validatingAdmissionPolicy.enabled=true")
    policy = docs.one("ValidatingAdmissionPolicy")
    binding = docs.one("ValidatingAdmissionPolicyBinding")
    assert binding["spec"] == {"policyName": policy["metadata"]["name"], "validationActions": ["Deny"]}
    (cond,) = policy["spec"]["matchConditions"]
    assert cond["expression"] == 'request.userInfo.username == "system:serviceaccount:sriovdra:sriovdra"'
    assert policy["spec"]["matchConstraints"]["resourceRules"][0]["resources"] == ["resourceslices"]
    text = json.dumps(policy["spec"])
    assert "authentication.kubernetes.io/node-name" in text and "spec.?nodeName" in text


# --- the webhook ---------------------------------------------------------------------------------

def test_webhook_runs_unprivileged_behind_its_service(render, monkeypatch):
    docs = render(*WEBHOOK_ON)
    dep = docs.one("Deployment")
    spec = dep["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    params = _parse("webhook", container, monkeypatch)
    assert params["port"] == 8443
    mounts = _mounted(spec, container)
    assert _covered(params["tls_cert_file"], mounts) and _covered(params["tls_private_key_file"], mounts)
    assert spec["securityContext"]["runAsNonRoot"] is True and spec["automountServiceAccountToken"] is False
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"
    service = docs.one("Service")
    assert service["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]
    (webhook,) = docs.one("ValidatingWebhookConfiguration")["webhooks"]
    assert webhook["clientConfig"]["service"] == {"namespace": NS, "name": service["metadata"]["name"],
                                                  "port": 443, "path": "/validate-resource-claim-parameters"}
    assert webhook["clientConfig"]["caBundle"] == "Zm9v"
    assert webhook["failurePolicy"] == "Fail" and webhook["sideEffects"] == "None"
    (rule,) = webhook["rules"]
    assert rule["scope"] == "*" and rule["operations"] == ["CREATE", "UPDATE"]
    assert rule["resources"] == ["resourceclaims", "resourceclaimtemplates", "deviceclasses"]
    # No Role or binding: the webhook needs no Kubernetes credentials.
    assert len(docs.by_kind("ClusterRoleBinding")) == 1


def test_webhook_certificate_from_cert_manager(render):
    docs = render("webhook.enabled=true", "webhook.tls.certManager.enabled=true", "webhook.failurePolicy=Ignore")
    config = docs.one("ValidatingWebhookConfiguration")
    cert = docs.one("Certificate")
    # cainjector fills caBundle from the Certificate the annotation names: the chart's own.
    assert config["metadata"]["annotations"] == {"cert-manager.io/inject-ca-from": f"{NS}/{cert['metadata']['name']}"}
    assert "caBundle" not in config["webhooks"][0]["clientConfig"]
    assert config["webhooks"][0]["failurePolicy"] == "Ignore"
    # The Secret cert-manager writes is the one the webhook mounts, for the names the API server dials.
    (volume,) = docs.one("Deployment")["spec"]["template"]["spec"]["volumes"]
    assert cert["spec"]["secretName"] == volume["secret"]["secretName"]
    service = config["webhooks"][0]["clientConfig"]["service"]
    assert f"{service['name']}.{service['namespace']}.svc" in cert["spec"]["dnsNames"]
    assert "server auth" in cert["spec"]["usages"]
    issuer = docs.one("Issuer")
    assert issuer["spec"] == {"selfSigned": {}}
    assert cert["spec"]["issuerRef"] == {"name": issuer["metadata"]["name"], "kind": "Issuer",
                                         "group": "cert-manager.io"}


def test_webhook_certificate_from_a_given_issuer_or_certificate(render, helm_template):
    docs = render("webhook.enabled=true", "webhook.tls.certManager.enabled=true",
                  "webhook.tls.certManager.issuerRef.name=corp-ca",
                  "webhook.tls.certManager.issuerRef.kind=ClusterIssuer")
    assert docs.by_kind("Issuer") == []
    assert docs.one("Certificate")["spec"]["issuerRef"] == {"name": "corp-ca", "kind": "ClusterIssuer",
                                                            "group": "cert-manager.io"}
    docs = render("webhook.enabled=true", "webhook.tls.certManager.enabled=true",
                  "webhook.tls.certManager.certificate=mine")
    assert docs.by_kind("Certificate") == [] and docs.by_kind("Issuer") == []
    annotations = docs.one("ValidatingWebhookConfiguration")["metadata"]["annotations"]
    assert annotations == {"cert-manager.io/inject-ca-from": f"{NS}/mine"}
    with pytest.raises(helm_template.Error, match="kind"):
        helm_template(CHART, sets=["webhook.enabled=true", "webhook.tls.certManager.enabled=true",
                                   "webhook.tls.certManager.issuerRef.name=x",
                                   "webhook.tls.certManager.issuerRef.kind=Cluster"])
