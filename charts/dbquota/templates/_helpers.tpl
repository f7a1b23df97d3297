{{/*
Names and labels shared by every template. Names are truncated to 63 characters (the
DNS-label limit of Kubernetes names); suffixed names leave room for their suffix.
*/}}

{{/* The chart name, or nameOverride. */}}
{{- define "dbquota.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The fully qualified app name: fullnameOverride, else <release>-<chart> (just <release> when
the release name already contains the chart name). Truncated to 48 characters so that
"<fullname>-webhook-tls" and the other suffixed names still fit in 63.
*/}}
{{- define "dbquota.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 48 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 48 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 48 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* chart label value: <name>-<version>. */}}
{{- define "dbquota.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels that select the operator's pods: stable across upgrades (selectors are immutable). */}}
{{- define "dbquota.selectorLabels" -}}
app.kubernetes.io/name: {{ include "dbquota.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{/* Labels on every object the chart renders. */}}
{{- define "dbquota.labels" -}}
helm.sh/chart: {{ include "dbquota.chart" . }}
{{ include "dbquota.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: dbquota
{{- end }}

{{/* The ServiceAccount the pods run as. */}}
{{- define "dbquota.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "dbquota.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The webhook's name in the ValidatingWebhookConfiguration; the apiserver's admission
metrics label their series with it (name="..."). */}}
{{- define "dbquota.webhookName" -}}validate-claims.dbquota.io{{- end }}
{{- define "dbquota.statusWebhookName" -}}claim-status.dbquota.io{{- end }}

{{- define "dbquota.webhookServiceName" -}}
{{- printf "%s-webhook" (include "dbquota.fullname" .) }}
{{- end }}

{{- define "dbquota.metricsServiceName" -}}
{{- printf "%s-metrics" (include "dbquota.fullname" .) }}
{{- end }}

{{/* The Secret (type kubernetes.io/tls) the pods mount: tls.crt, tls.key, ca.crt. */}}
{{- define "dbquota.webhookSecretName" -}}
{{- printf "%s-webhook-tls" (include "dbquota.fullname" .) }}
{{- end }}

{{/* The Secret holding the self-signed CA (never mounted into the pods). */}}
{{- define "dbquota.caSecretName" -}}
{{- printf "%s-webhook-ca" (include "dbquota.fullname" .) }}
{{- end }}

{{/* The serving certificate's DNS names: the webhook Service in every spelling. */}}
{{- define "dbquota.webhookDNSNames" -}}
{{- $svc := include "dbquota.webhookServiceName" . }}
{{- $ns := .Release.Namespace }}
{{- list $svc (printf "%s.%s" $svc $ns) (printf "%s.%s.svc" $svc $ns) (printf "%s.%s.svc.%s" $svc $ns .Values.clusterDomain) | toJson }}
{{- end }}

{{/* The leader election Lease: <fullname>-leader. */}}
{{- define "dbquota.leaderLease" -}}
{{- printf "%s-leader" (include "dbquota.fullname" . | trunc 56 | trimSuffix "-") }}
{{- end }}

{{/* The image reference: repository:tag, or repository@digest when a digest is given. */}}
{{- define "dbquota.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Where the pods mount things. */}}
{{- define "dbquota.certDir" -}}/var/run/secrets/dbquota/webhook{{- end }}
{{- define "dbquota.billingTokenDir" -}}/var/run/secrets/dbquota/billing{{- end }}
{{- define "dbquota.clientCADir" -}}/var/run/secrets/dbquota/webhook-client-ca{{- end }}

{{/*
Whether the webhook requires client certificates (webhook.clientCA names a ConfigMap or a
Secret); fails when it names both.
*/}}
{{- define "dbquota.clientCA" -}}
{{- $ca := .Values.webhook.clientCA }}
{{- if and $ca.configMapName $ca.secretName }}
{{- fail "webhook.clientCA: set configMapName or secretName, not both" }}
{{- end }}
{{- if or $ca.configMapName $ca.secretName }}true{{ end }}
{{- end }}
{{- define "dbquota.cacheDir" -}}/var/cache/dbquota{{- end }}

{{/*
The operator's command-line arguments, appended to the image's entrypoint `dbquota run`.
Every flag here is a flag of `dbquota run` (tests/chart parses them with
dbquota.cli.build_parser()).
*/}}
{{- define "dbquota.args" -}}
{{- $v := .Values -}}
- --webhook-port={{ $v.webhook.port }}
- --webhook-cert-dir={{ include "dbquota.certDir" . }}
- --metrics-port={{ $v.metrics.port }}
- --cache-path={{ include "dbquota.cacheDir" . }}/cache.sqlite3
- --lease-namespace={{ .Release.Namespace }}
- --log-format={{ $v.logFormat }}
- --shutdown-delay={{ $v.shutdownDelay }}
{{- with $v.leaderElection }}
- --{{ if not .enabled }}no-{{ end }}leader-election
- --leader-lease={{ include "dbquota.leaderLease" $ }}
- --lease-duration={{ .leaseDuration }}
- --lease-renew-deadline={{ .renewDeadline }}
- --lease-retry-period={{ .retryPeriod }}
{{- end }}
{{- if $v.watchNamespace }}
- --namespace={{ $v.watchNamespace }}
{{- end }}
{{- with $v.billing }}
{{- if .url }}
- --billing-url={{ .url }}
{{- end }}
{{- if .tokenSecret.name }}
- --billing-token-file={{ include "dbquota.billingTokenDir" $ }}/{{ .tokenSecret.key }}
{{- end }}
- --rate-limit={{ .rateLimit }}
- --request-timeout={{ .requestTimeout }}
- --connect-timeout={{ .connectTimeout }}
- --sync-interval={{ .syncInterval }}
- --breaker-failure-threshold={{ .breaker.failureThreshold }}
- --breaker-recovery-timeout={{ .breaker.recoveryTimeout }}
{{- end }}
- --no-quota-policy={{ $v.noQuotaPolicy }}
- --claim-kinds={{ $v.claimKinds | join "," }}
{{- if $v.claimNamespaceLabel }}
- --claim-namespace-label={{ $v.claimNamespaceLabel }}
{{- end }}
{{- if include "dbquota.clientCA" . }}
- --webhook-client-ca={{ include "dbquota.clientCADir" . }}/{{ $v.webhook.clientCA.key }}
{{- with $v.webhook.clientCA.allowedNames }}
- --webhook-client-names={{ join "," . }}
{{- end }}
{{- end }}
{{- range $v.extraArgs }}
- {{ . | quote }}
{{- end }}
{{- end }}

{{/*
The claim kinds the operator can price, by their claimKinds name (the operator's kind
registry, dbquota.domain.kinds.registry): API group, version, resource, scope, and whether
the operator owns the kind (writes its status) or only reads it.
*/}}
{{- define "dbquota.kindCatalog" -}}
{{- dict
  "databaseclaims" (dict "group" "dbquota.io" "version" "v1alpha1" "resource" "databaseclaims" "scope" "Namespaced" "owned" true)
  "cnpg" (dict "group" "postgresql.cnpg.io" "version" "v1" "resource" "clusters" "scope" "Namespaced" "owned" false)
  "zalando" (dict "group" "acid.zalan.do" "version" "v1" "resource" "postgresqls" "scope" "Namespaced" "owned" false)
  "rds" (dict "group" "rds.aws.upbound.io" "version" "v1beta1" "resource" "instances" "scope" "Cluster" "owned" false)
  | toJson -}}
{{- end }}

{{/* The enabled kinds (claimKinds), each as in dbquota.kindCatalog, as a JSON list. */}}
{{- define "dbquota.claimKinds" -}}
{{- $catalog := include "dbquota.kindCatalog" . | fromJson }}
{{- $kinds := list }}
{{- range .Values.claimKinds }}
{{- $kinds = append $kinds (index $catalog .) }}
{{- end }}
{{- $kinds | toJson -}}
{{- end }}

{{/*
Combinations of values that would render manifests that fail later (a pod that never gets
Ready, two servers on one port): refused at render time with the reason instead. Included
by workload.yaml.
*/}}
{{- define "dbquota.validate" -}}
{{- $v := .Values }}
{{- with $v.leaderElection }}
{{- if and (not .enabled) (gt (int $v.replicaCount) 1) }}
{{- fail (printf "leaderElection.enabled=false needs replicaCount 1 (it is %v): without leader election every replica reconciles, and their writes of each quota's status undo each other" $v.replicaCount) }}
{{- end }}
{{- /* Every replica's liveness Lease uses these too, leader election or not. */}}
{{- if ge (float64 .renewDeadline) (float64 .leaseDuration) }}
{{- fail (printf "leaderElection.renewDeadline (%v) must be below leaseDuration (%v): a replica must stop trusting its lease before the others count it lapsed" .renewDeadline .leaseDuration) }}
{{- end }}
{{- if ge (float64 .retryPeriod) (float64 .renewDeadline) }}
{{- fail (printf "leaderElection.retryPeriod (%v) must be below renewDeadline (%v): a failed renewal must be retried before the replica stops trusting its lease" .retryPeriod .renewDeadline) }}
{{- end }}
{{- end }}
{{- if lt (float64 $v.terminationGracePeriodSeconds) (addf $v.shutdownDelay 20) }}
{{- fail (printf "terminationGracePeriodSeconds (%v) must be at least shutdownDelay (%v) + 20: after the delay a replica needs up to 20 s to write what it admitted and give its escrow back" $v.terminationGracePeriodSeconds $v.shutdownDelay) }}
{{- end }}
{{- if eq (int $v.webhook.port) (int $v.metrics.port) }}
{{- fail (printf "webhook.port and metrics.port are both %v: the webhook and /metrics are two servers and need two ports" $v.webhook.port) }}
{{- end }}
{{- end }}

{{/*
The namespaces whose objects a webhook sees: webhook.namespaceSelector, narrowed to
watchNamespace when that is set too (the operator counts only that namespace's claims, so
a review from another would be decided without its quota). Empty when neither is set.
*/}}
{{- define "dbquota.namespaceSelector" -}}
{{- $selector := deepCopy (.Values.webhook.namespaceSelector | default dict) }}
{{- with .Values.watchNamespace }}
{{- $only := dict "key" "kubernetes.io/metadata.name" "operator" "In" "values" (list .) }}
{{- $_ := set $selector "matchExpressions" (append ($selector.matchExpressions | default list) $only) }}
{{- end }}
{{- if $selector }}
namespaceSelector:
  {{- toYaml $selector | nindent 2 }}
{{- end }}
{{- end }}
