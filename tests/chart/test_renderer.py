"""The Helm renderer (hack/helm) behaves like `helm template` on a tiny throwaway chart: these pin
the Helm behaviours the chart tests rely on, so that a renderer bug cannot pass for a chart bug."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

CHART_YAML = """\
apiVersion: v2
name: tiny
version: 0.1.0
appVersion: "1.2.3"
"""

VALUES_YAML = """\
image:
  repository: example.org/tiny
  tag: ""
labels:
  team: net
replicas: 1
extra:
  keep: yes-please
  drop: me
"""

HELPERS = """\
{{- define "tiny.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{ toYaml .Values.labels }}
{{- end -}}
"""

CONFIGMAP = """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .Release.Name }}-cm
  namespace: {{ .Release.Namespace }}
  labels: {{- include "tiny.labels" . | nindent 4 }}
data:
  missing: "{{ .Values.image.nothing }}"
  missingTop: "{{ .Values.absent }}"
  kube: {{ .Capabilities.KubeVersion.Version | quote }}
  kubeMinor: {{ .Capabilities.KubeVersion.Minor | quote }}
  hasResourceV1: {{ .Capabilities.APIVersions.Has "resource.k8s.io/v1" | quote }}
  replicas: {{ .Values.replicas | quote }}
  replicasKind: {{ kindOf .Values.replicas | quote }}
  tag: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
  extra: {{ toJson .Values.extra | quote }}
  service: {{ .Release.Service }}
  install: {{ .Release.IsInstall | quote }}
  template: {{ .Template.Name }}
  tpl: {{ tpl "{{ .Release.Name }}-x" . }}
  lookup: {{ lookup "v1" "Secret" "ns" "name" | len | quote }}
"""

# several documents of several kinds in one file, and in files named out of install order
WORKLOADS = """\
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: ds
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: sa
"""

NAMESPACE = """\
apiVersion: v1
kind: Namespace
metadata:
  name: {{ .Release.Namespace }}
"""

CUSTOM = """\
apiVersion: resource.k8s.io/v1
kind: DeviceClass
metadata:
  name: dc
"""

EMPTY = """\
{{- if .Values.neverSet }}
apiVersion: v1
kind: Secret
{{- end }}
"""

SCHEMA = {
    "$schema": "https://json-schema.org/draft-07/schema#",
    "type": "object",
    "properties": {
        "replicas": {"type": "integer", "minimum": 1},
        "image": {"type": "object", "properties": {"tag": {"type": "string"}}},
    },
}


def write_chart(root: Path, templates: dict[str, str], schema: dict | None = None) -> Path:
    chart = root / "tiny"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text(CHART_YAML)
    (chart / "values.yaml").write_text(VALUES_YAML)
    if schema is not None:
        (chart / "values.schema.json").write_text(json.dumps(schema))
    for name, text in templates.items():
        (chart / "templates" / name).write_text(textwrap.dedent(text))
    return chart


@pytest.fixture
def chart(tmp_path) -> Path:
    return write_chart(tmp_path, {
        "_helpers.tpl": HELPERS, "configmap.yaml": CONFIGMAP, "a-workloads.yaml": WORKLOADS,
        "z-namespace.yaml": NAMESPACE, "custom.yaml": CUSTOM, "empty.yaml": EMPTY,
        "NOTES.txt": "Installed {{ .Release.Name }}.\n",
    }, schema=SCHEMA)


def values_file(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_output_order_and_source_lines_follow_helm(helm_template, chart):
    docs = helm_template(chart)
    # Helm's install order by kind; unknown kinds (DeviceClass) last; partials, NOTES.txt and
    # templates that render only whitespace produce no document
    assert [(d["kind"], s) for d, s in zip(docs, docs.sources, strict=True)] == [
        ("Namespace", "tiny/templates/z-namespace.yaml"),
        ("ServiceAccount", "tiny/templates/a-workloads.yaml"),
        ("ConfigMap", "tiny/templates/configmap.yaml"),
        ("DaemonSet", "tiny/templates/a-workloads.yaml"),
        ("DeviceClass", "tiny/templates/custom.yaml"),
    ]
    assert docs.text.startswith("---\n# Source: tiny/templates/z-namespace.yaml\napiVersion: v1\nkind: Namespace\n")
    assert docs.text.count("\n---\n# Source: ") == 4
    assert "Installed" not in docs.text and "_helpers" not in docs.text


def test_include_to_yaml_nindent_and_builtin_objects(helm_template, chart):
    cm = helm_template(chart, namespace="net", release="rel").one("ConfigMap")
    assert cm["metadata"] == {
        "name": "rel-cm", "namespace": "net",
        "labels": {"app.kubernetes.io/name": "tiny", "app.kubernetes.io/version": "1.2.3", "team": "net"},
    }
    data = cm["data"]
    assert data["service"] == "Helm"
    assert data["install"] == "true"
    assert data["template"] == "tiny/templates/configmap.yaml"
    assert data["tpl"] == "rel-x"
    assert data["lookup"] == "0"  # helm template talks to no cluster
    assert data["tag"] == "1.2.3"  # default: the empty string falls back
    # values.yaml numbers go through JSON as in Helm: float64
    assert (data["replicas"], data["replicasKind"]) == ("1", "float64")


def test_missing_keys_render_as_empty(helm_template, chart):
    data = helm_template(chart).one("ConfigMap")["data"]
    assert data["missingTop"] == ""
    assert data["missing"] == ""
    assert "<no value>" not in helm_template(chart).text


def test_values_files_then_set_coalesce_over_defaults(helm_template, chart, tmp_path):
    first = values_file(tmp_path, "first.yaml", """\
        image: {tag: from-first}
        labels: {tier: first}
        extra: {drop: null}
        """)
    second = values_file(tmp_path, "second.yaml", """\
        image: {tag: from-second}
        """)
    data = helm_template(chart, values_files=[first, second]).one("ConfigMap")["data"]
    assert data["tag"] == "from-second"
    assert json.loads(data["extra"]) == {"keep": "yes-please"}  # null deleted the default key
    labels = helm_template(chart, values_files=[first]).one("ConfigMap")["metadata"]["labels"]
    assert (labels["team"], labels["tier"]) == ("net", "first")  # maps merge key by key

    docs = helm_template(chart, values_files=[first, second],
                         sets=["image.tag=from-set,replicas=3", "extra.list={a,b}", "extra.keep=null"])
    data = docs.one("ConfigMap")["data"]
    assert data["tag"] == "from-set"
    assert (data["replicas"], data["replicasKind"]) == ("3", "int64")  # --set types integers
    assert json.loads(data["extra"]) == {"list": ["a", "b"]}


def test_schema_violation_names_the_field(helm_template, chart):
    with pytest.raises(helm_template.Error) as err:
        helm_template(chart, sets=["replicas=0", "image.tag=true"])
    stderr = err.value.stderr
    assert err.value.returncode != 0
    assert "values don't meet the specifications of the schema(s) in the following chart(s):\ntiny:" in stderr
    assert "- replicas: Must be greater than or equal to 1" in stderr
    assert "- image.tag: Invalid type. Expected: string, given: boolean" in stderr
    helm_template(chart, sets=["replicas=2"])  # a valid value passes the same schema


def test_required_and_fail_are_helm_execution_errors(helm_template, tmp_path):
    chart = write_chart(tmp_path, {
        "cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n"
                   "  name: {{ required \"image.tag must be set\" .Values.image.tag }}\n",
    })
    with pytest.raises(helm_template.Error) as err:
        helm_template(chart)
    assert "Error: execution error at (tiny/templates/cm.yaml:4:11): image.tag must be set" in err.value.stderr
    assert helm_template(chart, sets=["image.tag=v1"]).one("ConfigMap")["metadata"]["name"] == "v1"

    (chart / "templates" / "cm.yaml").write_text('{{ fail "no way" }}\n')
    with pytest.raises(helm_template.Error) as err:
        helm_template(chart)
    assert "execution error at (tiny/templates/cm.yaml:1:3): no way" in err.value.stderr


def test_template_parse_errors_name_the_file(helm_template, tmp_path):
    chart = write_chart(tmp_path, {"bad.yaml": "a: 1\nb: {{ notAFunction . }}\n"})
    with pytest.raises(helm_template.Error) as err:
        helm_template(chart)
    assert 'parse error at (tiny/templates/bad.yaml:2): function "notAFunction" not defined' in err.value.stderr


def test_env_functions_are_removed_as_in_helm(helm_template, tmp_path):
    chart = write_chart(tmp_path, {"env.yaml": "home: {{ env \"HOME\" }}\n"})
    with pytest.raises(helm_template.Error) as err:
        helm_template(chart)
    assert 'function "env" not defined' in err.value.stderr


def test_kube_version_flag_sets_capabilities(helm_template, chart):
    data = helm_template(chart, kube_version="1.37.0").one("ConfigMap")["data"]
    assert (data["kube"], data["kubeMinor"], data["hasResourceV1"]) == ("v1.37.0", "37", "true")
    with pytest.raises(helm_template.Error) as err:
        helm_template(chart, kube_version="banana")
    assert "invalid kube version" in err.value.stderr


def test_invalid_yaml_output_is_a_parse_error_naming_the_template(helm_template, tmp_path):
    chart = write_chart(tmp_path, {"broken.yaml": "kind: ConfigMap\n  bad: : indent\n"})
    with pytest.raises(helm_template.Error) as err:
        helm_template(chart)
    assert "YAML parse error on tiny/templates/broken.yaml" in err.value.stderr


def test_set_string_keeps_strings_and_applies_after_set(helm_template, chart):
    with pytest.raises(helm_template.Error) as err:
        helm_template(chart, sets=["image.tag=true"])
    assert "image.tag: Invalid type. Expected: string, given: boolean" in err.value.stderr
    data = helm_template(chart, set_strings=["image.tag=true"], sets=["image.tag=ignored"]).one("ConfigMap")["data"]
    assert data["tag"] == "true"


def test_missing_intermediate_map_is_an_error_as_in_helm(helm_template, tmp_path):
    chart = write_chart(tmp_path, {"cm.yaml": "a: {{ .Values.nothing.here }}\n"})
    with pytest.raises(helm_template.Error) as err:
        helm_template(chart)
    assert "nil pointer evaluating interface {}.here" in err.value.stderr
