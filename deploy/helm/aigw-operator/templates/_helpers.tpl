{{/* Names and labels shared by every template. */}}

{{- define "aigw-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "aigw-operator.fullname" -}}
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

{{- define "aigw-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "aigw-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "aigw-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "aigw-operator.labels" -}}
helm.sh/chart: {{ include "aigw-operator.chart" . }}
{{ include "aigw-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: aigw-operator
{{- end }}

{{/* The leader election Lease, in the release namespace. */}}
{{- define "aigw-operator.leaseName" -}}
{{- include "aigw-operator.fullname" . }}
{{- end }}

{{/* The pod's affinity: .Values.affinity plus podAntiAffinityPreset's podAntiAffinity by node
     (unless .Values.affinity has its own). YAML, empty when there is none. */}}
{{- define "aigw-operator.affinity" -}}
{{- $affinity := deepCopy .Values.affinity }}
{{- if and .Values.podAntiAffinityPreset (not (hasKey $affinity "podAntiAffinity")) }}
{{- $term := dict "topologyKey" "kubernetes.io/hostname" "labelSelector" (dict "matchLabels" (include "aigw-operator.selectorLabels" . | fromYaml)) }}
{{- if eq .Values.podAntiAffinityPreset "hard" }}
{{- $_ := set $affinity "podAntiAffinity" (dict "requiredDuringSchedulingIgnoredDuringExecution" (list $term)) }}
{{- else }}
{{- $_ := set $affinity "podAntiAffinity" (dict "preferredDuringSchedulingIgnoredDuringExecution" (list (dict "weight" 100 "podAffinityTerm" $term))) }}
{{- end }}
{{- end }}
{{- with $affinity }}
{{- toYaml . }}
{{- end }}
{{- end }}

{{- define "aigw-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "aigw-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "aigw-operator.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* AIGW_<NAME> for an upstream's values key: baseten -> AIGW_BASETEN, modelRegistry -> AIGW_MODEL_REGISTRY. */}}
{{- define "aigw-operator.upstreamEnvPrefix" -}}
{{- printf "AIGW_%s" (snakecase . | upper) }}
{{- end }}

{{/* Whether the chart creates the Secret for an upstream's default key: its apiKey has a value and no existingSecret. */}}
{{- define "aigw-operator.createsUpstreamSecret" -}}
{{- if and (not .apiKey.existingSecret) .apiKey.value }}true{{ end }}
{{- end }}

{{/* The Secret holding an upstream's default key: the user's, the chart's, or none (empty).
     Called with (dict "root" $ "name" <values key> "upstream" <its values>). */}}
{{- define "aigw-operator.upstreamSecretName" -}}
{{- if .upstream.apiKey.existingSecret }}
{{- .upstream.apiKey.existingSecret }}
{{- else if .upstream.apiKey.value }}
{{- printf "%s-%s" (include "aigw-operator.fullname" .root) (kebabcase .name) }}
{{- end }}
{{- end }}

{{/* Where the upstreams' default keys are mounted, one file per upstream. */}}
{{- define "aigw-operator.apiKeysDir" -}}
/etc/aigw-operator/api-keys
{{- end }}

{{/* The projected volume's sources: each upstream's key Secret (existing or the chart's), its
     key as a file named after the upstream. YAML, empty when no upstream has a default key. */}}
{{- define "aigw-operator.apiKeySources" -}}
{{- range $name, $upstream := .Values.upstreams }}
{{- with include "aigw-operator.upstreamSecretName" (dict "root" $ "name" $name "upstream" $upstream) }}
- secret:
    name: {{ . }}
    items:
      - key: {{ $upstream.apiKey.secretKey }}
        path: {{ kebabcase $name }}
{{- end }}
{{- end }}
{{- end }}

{{/* The custom resources' plurals, read from the generated CRDs so RBAC follows new kinds. */}}
{{- define "aigw-operator.plurals" -}}
{{- $plurals := list }}
{{- range $path, $_ := .Files.Glob "files/crds/*.yaml" }}
{{- $plurals = append $plurals ($.Files.Get $path | fromYaml).spec.names.plural }}
{{- end }}
{{- $plurals | sortAlpha | toJson }}
{{- end }}

{{/* Rules for the custom resources, shared by the ClusterRole and the per-namespace Roles. */}}
{{- define "aigw-operator.namespacedRules" -}}
{{- $plurals := include "aigw-operator.plurals" . | fromJsonArray -}}
# kopf lists and watches them and patches its finalizer; the loop patches its own annotations.
- apiGroups: ["aigw.dev"]
  resources: {{ $plurals | toJson }}
  verbs: ["list", "watch", "patch"]
- apiGroups: ["aigw.dev"]
  resources:
  {{- range $plurals }}
    - {{ printf "%s/status" . }}
  {{- end }}
  verbs: ["patch"]
# The operator posts its own Events (kopf's posting is off); a repeat patches the count and
# lastTimestamp of the Event it posted before, as client-go's recorder does.
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
# To read the keys resources name (credentialsSecretRef, secretRef, providerKeys); list and watch
# only for secretWatch, whose label selector makes the API server send labelled Secrets only;
# patch for the finalizer that keeps a credentials Secret while resources need it to delete
# their upstream objects (a namespace deletion would otherwise deadlock).
# spec.writeConnectionDetailsTo: the one ConfigMap or Secret per resource that the operator
# writes (create, replace with update) and deletes when the target is renamed or removed; get
# first, so that an object it does not own is never overwritten.
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "create", "update", "delete"]
- apiGroups: [""]
  resources: ["secrets"]
  verbs: {{ ternary (list "get" "list" "watch" "patch" "create" "update" "delete") (list "get" "patch" "create" "update" "delete") .Values.secretWatch.enabled | toJson }}
{{- end }}
