{{/* Names and labels shared by the templates. */}}
{{- define "herald.fullname" -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "herald.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "herald.secretName" -}}
{{- default (printf "%s-secrets" (include "herald.fullname" .)) .Values.existingSecret -}}
{{- end -}}

{{/* A list as TOML strings: ["a", "b"] without the brackets. */}}
{{- define "herald.quoteList" -}}
{{- $out := list -}}
{{- range . }}{{ $out = append $out (printf "%q" .) }}{{ end -}}
{{- join ", " $out -}}
{{- end -}}
