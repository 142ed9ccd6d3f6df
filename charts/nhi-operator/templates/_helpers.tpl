{{/* _helpers.tpl: names and labels shared by every template of the chart. */}}

{{/* Chart name, overridable. */}}
{{- define "nhi-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Object name: the release name when it already contains the chart name ("nhi-operator"). */}}
{{- define "nhi-operator.fullname" -}}
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

{{/* Labels selecting the operator's pods; never change them after install. */}}
{{- define "nhi-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "nhi-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "nhi-operator.labels" -}}
{{ include "nhi-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: nhi-operator
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end }}

{{/* The ServiceAccount the operator runs as. */}}
{{- define "nhi-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "nhi-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The container image reference. */}}
{{- define "nhi-operator.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if hasPrefix "sha256:" $tag }}
{{- printf "%s@%s" .Values.image.repository $tag }}
{{- else if hasPrefix "@" $tag }}
{{- printf "%s%s" .Values.image.repository $tag }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/* The delegation Service's DNS names: the serving certificate's names. */}}
{{- define "nhi-operator.delegationNames" -}}
{{- $svc := printf "%s-delegation.%s.svc" (include "nhi-operator.fullname" .) .Release.Namespace -}}
{{- printf "%s,%s.%s" $svc $svc .Values.policy.clusterDomain -}}
{{- end -}}
