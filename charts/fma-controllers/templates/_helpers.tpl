{{/* Name prefix of every object of this release. */}}
{{- define "fma.fullname" -}}
{{- printf "%s-fma-controllers" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The service account the controllers run as. */}}
{{- define "fma.serviceAccountName" -}}
{{- default (include "fma.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{/* Labels on every object. */}}
{{- define "fma.labels" -}}
app.kubernetes.io/part-of: fast-model-actuation
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end -}}

{{/* A controller image: <global.imageRegistry>/<name>:<global.imageTag>. */}}
{{- define "fma.image" -}}
{{- printf "%s/%s:%s" .root.Values.global.imageRegistry .name .root.Values.global.imageTag -}}
{{- end -}}
