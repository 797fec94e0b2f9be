{{/*
Names, labels and the image reference, shared by every template.
Names stop at 63 characters because label values and DNS labels do.
*/}}

{{/* The chart's name, or nameOverride. */}}
{{- define "millstream.name" -}}
{{- .Values.nameOverride | default .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Prefix of every resource name: fullnameOverride, else the release name, with the chart name
appended unless the release name already says it (release "millstream" gives "millstream",
release "events" gives "events-millstream").
*/}}
{{- define "millstream.fullname" -}}
{{- $name := include "millstream.name" . -}}
{{- $full := .Values.fullnameOverride -}}
{{- if not $full -}}
{{- $full = ternary .Release.Name (printf "%s-%s" .Release.Name $name) (contains $name .Release.Name) -}}
{{- end -}}
{{- $full | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels on everything the chart creates. */}}
{{- define "millstream.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "millstream.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | trunc 63 | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: millstream
{{- end -}}

{{/*
The operator pod's selector. It must never change across upgrades (a Deployment's selector is
immutable), so it holds no version.
*/}}
{{- define "millstream.operatorSelectorLabels" -}}
app.kubernetes.io/name: {{ include "millstream.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{/* registry/repository@digest, or :tag (the chart's appVersion unless set). */}}
{{- define "millstream.image" -}}
{{- $image := printf "%s/%s" .Values.image.registry .Values.image.repository | trimPrefix "/" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" $image .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" $image (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}
{{- end -}}

{{/* The operator's ServiceAccount: the one created here, or the one named in values. */}}
{{- define "millstream.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- .Values.serviceAccount.name | default (printf "%s-operator" (include "millstream.fullname" .)) -}}
{{- else -}}
{{- .Values.serviceAccount.name | default "default" -}}
{{- end -}}
{{- end -}}

{{/*
Name of the Cluster created with cluster.create. The Cluster CRD refuses names over 40
characters; failing here says so at install time, with the value to set.
*/}}
{{- define "millstream.clusterName" -}}
{{- $name := .Values.cluster.name | default (include "millstream.fullname" .) -}}
{{- if gt (len $name) 40 -}}
{{- fail (printf "cluster name %q is longer than 40 characters: set cluster.name" $name) -}}
{{- end -}}
{{- $name -}}
{{- end -}}
