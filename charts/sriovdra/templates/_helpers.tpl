{{/* Names and labels shared by every object of the chart. */}}

{{- define "sriovdra.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "sriovdra.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Labels that say which chart release made an object (pod templates add their selector labels). */}}
{{- define "sriovdra.releaseLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "sriovdra.labels" -}}
{{ include "sriovdra.releaseLabels" . }}
app.kubernetes.io/name: {{ include "sriovdra.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Selector labels; the component keeps the plugin's and the webhook's pods apart. */}}
{{- define "sriovdra.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sriovdra.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "sriovdra.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "sriovdra.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "sriovdra.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The enabled DRA drivers, comma-separated, as serve --drivers takes them. */}}
{{- define "sriovdra.drivers" -}}
{{- $d := list }}
{{- if .Values.drivers.sriov.enabled }}{{ $d = append $d "sriovnetwork.openshift.io" }}{{ end }}
{{- if .Values.drivers.infiniband.enabled }}{{ $d = append $d "ib.sigs.k8s.io" }}{{ end }}
{{- if not $d }}{{ fail "drivers: enable at least one of drivers.sriov and drivers.infiniband" }}{{ end }}
{{- join "," $d }}
{{- end }}

{{- define "sriovdra.webhookName" -}}
{{- printf "%s-webhook" (include "sriovdra.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Where the ConfigMaps are mounted in the plugin's container. */}}
{{- define "sriovdra.provisioningDir" -}}/etc/sriovdra/provisioning{{- end }}
{{- define "sriovdra.devicePolicyDir" -}}/etc/sriovdra/device-policy{{- end }}
