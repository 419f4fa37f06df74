{{/*
Shared template helpers. Resource names are fixed (kafka, minio, nessie, duckdb, ...) because the
services' DNS names are part of the contract (kafka:9092, http://nessie:19120/iceberg/, ...): one
release per namespace.
*/}}

{{- define "tlake.namespace" -}}
{{- default .Release.Namespace .Values.namespace -}}
{{- end -}}

{{/* A label value from an image reference: its tag (or "digest"). */}}
{{- define "tlake.imageVersion" -}}
{{- $ref := . -}}
{{- $noDigest := first (splitList "@" $ref) -}}
{{- $last := last (splitList "/" $noDigest) -}}
{{- if contains ":" $last -}}
{{- regexReplaceAll "[^A-Za-z0-9_.-]" (last (splitList ":" $last)) "_" | trunc 63 | trimSuffix "-" | trimSuffix "_" | trimSuffix "." -}}
{{- else -}}
digest
{{- end -}}
{{- end -}}

{{/*
Selector labels. `app` is the original design's label (`kubectl wait -l app=kafka` etc.).
Call with (dict "ctx" $ "app" "kafka").
*/}}
{{- define "tlake.selectorLabels" -}}
app: {{ .app }}
app.kubernetes.io/name: {{ .app }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
{{- end -}}

{{/* All labels. Call with (dict "ctx" $ "app" "kafka" "component" "broker" "version" "4.1.1"). */}}
{{- define "tlake.labels" -}}
{{ include "tlake.selectorLabels" . }}
app.kubernetes.io/component: {{ .component }}
app.kubernetes.io/part-of: telemetry-lake
app.kubernetes.io/version: {{ .version | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .ctx.Chart.Name .ctx.Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end -}}

{{/*
Container securityContext shared by every container: non-root, no privilege escalation, no
capabilities, read-only root filesystem (each pod mounts emptyDirs where its image writes).
*/}}
{{- define "tlake.containerSecurityContext" -}}
securityContext:
  runAsNonRoot: true
  allowPrivilegeEscalation: false
  privileged: false
  readOnlyRootFilesystem: true
  capabilities:
    drop:
      - ALL
  seccompProfile:
    type: RuntimeDefault
{{- end -}}

{{/* Pod securityContext: the component's ids plus the fixed hardening. Call with the component's podSecurityContext dict. */}}
{{- define "tlake.podSecurityContext" -}}
securityContext:
  runAsNonRoot: true
  seccompProfile:
    type: RuntimeDefault
  {{- with . }}
  {{- toYaml (omit . "runAsNonRoot" "seccompProfile") | nindent 2 }}
  {{- end }}
{{- end -}}

{{/* Pod-level settings common to every pod. */}}
{{- define "tlake.podCommon" -}}
automountServiceAccountToken: false
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* The gateway/compactor image. */}}
{{- define "tlake.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* Kafka bootstrap servers. */}}
{{- define "tlake.kafka.brokers" -}}
{{- if .Values.kafka.enabled -}}
kafka:9092
{{- else -}}
{{- required "kafka.externalBrokers is required when kafka.enabled is false" .Values.kafka.externalBrokers -}}
{{- end -}}
{{- end -}}

{{/* Every topic to create: kafka.topics plus the gateway's stream routes, sorted, unique. */}}
{{- define "tlake.kafka.topics" -}}
{{- $topics := list -}}
{{- range $_, $t := .Values.kafka.topics -}}{{- $topics = append $topics $t -}}{{- end -}}
{{- range $_, $t := .Values.gateway.config.streams -}}{{- $topics = append $topics $t -}}{{- end -}}
{{- $topics | uniq | sortAlpha | join " " -}}
{{- end -}}

{{/* KRaft cluster id: the configured one, or 16 bytes derived from the release, base64url. */}}
{{- define "tlake.kafka.clusterId" -}}
{{- if .Values.kafka.clusterId -}}
{{- .Values.kafka.clusterId -}}
{{- else -}}
{{- printf "%s/%s/telemetry-lake" (include "tlake.namespace" .) .Release.Name | sha256sum | trunc 16 | b64enc | trimSuffix "==" | replace "+" "-" | replace "/" "_" -}}
{{- end -}}
{{- end -}}

{{/* Object store. */}}
{{- define "tlake.s3.secretName" -}}
{{- default "s3-credentials" .Values.objectStore.existingSecret -}}
{{- end -}}

{{- define "tlake.s3.endpoint" -}}
{{- if eq .Values.objectStore.type "minio" -}}
http://minio:9000
{{- else if eq .Values.objectStore.type "versitygw" -}}
http://versitygw:9000
{{- else -}}
{{- required "objectStore.external.endpoint is required when objectStore.type is external" .Values.objectStore.external.endpoint | trimSuffix "/" -}}
{{- end -}}
{{- end -}}

{{- define "tlake.s3.bucket" -}}
{{- if eq .Values.objectStore.type "minio" -}}
{{- .Values.minio.bucket -}}
{{- else if eq .Values.objectStore.type "versitygw" -}}
{{- .Values.versitygw.bucket -}}
{{- else -}}
{{- .Values.objectStore.external.bucket -}}
{{- end -}}
{{- end -}}

{{- define "tlake.s3.pathStyle" -}}
{{- if ne .Values.objectStore.type "external" -}}true{{- else -}}{{- .Values.objectStore.external.pathStyle -}}{{- end -}}
{{- end -}}

{{/* S3 credentials as env vars named by the caller. Call with (dict "ctx" $ "access" "AWS_ACCESS_KEY_ID" "secret" "AWS_SECRET_ACCESS_KEY"). */}}
{{- define "tlake.s3.env" -}}
- name: {{ .access }}
  valueFrom:
    secretKeyRef:
      name: {{ include "tlake.s3.secretName" .ctx }}
      key: {{ .ctx.Values.objectStore.secretKeys.accessKey }}
- name: {{ .secret }}
  valueFrom:
    secretKeyRef:
      name: {{ include "tlake.s3.secretName" .ctx }}
      key: {{ .ctx.Values.objectStore.secretKeys.secretKey }}
{{- end -}}

{{/*
A generated secret value (base64): the one already stored in the cluster if any, so upgrades keep
it, else a random one. `helm template` has no cluster and always gets a fresh one.
Call with (dict "ctx" $ "secret" "s3-credentials" "key" "access-key" "length" 20).
*/}}
{{- define "tlake.generatedSecretValue" -}}
{{- $existing := lookup "v1" "Secret" (include "tlake.namespace" .ctx) .secret -}}
{{- if and $existing $existing.data (hasKey $existing.data .key) -}}
{{- index $existing.data .key -}}
{{- else -}}
{{- randAlphaNum (int .length) | b64enc -}}
{{- end -}}
{{- end -}}

{{/* Gateway auth secret name. */}}
{{- define "tlake.gateway.authSecretName" -}}
{{- default "ingest-gateway-auth" .Values.gateway.auth.existingSecret -}}
{{- end -}}

{{/* Gateway URL as clients in the namespace see it. */}}
{{- define "tlake.gateway.url" -}}
{{- printf "%s://ingest-gateway:4317" (ternary "https" "http" .Values.gateway.tls.enabled) -}}
{{- end -}}

{{/* Checks that fail the render early, with a message that says what to change. */}}
{{- define "tlake.validate" -}}
{{- if not (semverCompare ">=1.4.3" .Values.duckdb.version) -}}
{{- fail (printf "duckdb.version %s is too old: the Iceberg REST catalog needs DuckDB 1.4.3 or newer" .Values.duckdb.version) -}}
{{- end -}}
{{- if and (eq .Values.objectStore.type "external") (not .Values.objectStore.existingSecret) -}}
{{- fail "objectStore.existingSecret is required when objectStore.type is external: the chart cannot invent credentials for an existing S3 endpoint" -}}
{{- end -}}
{{- if and .Values.gateway.enabled .Values.gateway.tls.enabled (not .Values.gateway.tls.existingSecret) -}}
{{- fail "gateway.tls.existingSecret is required when gateway.tls.enabled is true" -}}
{{- end -}}
{{- if and .Values.kafka.enabled (gt (int .Values.kafka.config.defaultReplicationFactor) (int .Values.kafka.replicas)) -}}
{{- fail (printf "kafka.config.defaultReplicationFactor (%d) cannot exceed kafka.replicas (%d)" (int .Values.kafka.config.defaultReplicationFactor) (int .Values.kafka.replicas)) -}}
{{- end -}}
{{- if and (not .Values.kafka.enabled) (not .Values.kafka.externalBrokers) -}}
{{- fail "kafka.externalBrokers is required when kafka.enabled is false" -}}
{{- end -}}
{{- end -}}

{{/*
Environment of the DuckDB pod and the test pod: where the tools go, which DuckDB to install, and
the settings duckdb-lake turns into an S3 secret and an ATTACH of the Nessie catalog.
Call with (dict "ctx" $ "tools" "/data/.tools").
*/}}
{{- define "tlake.duckdb.env" -}}
{{- $endpoint := include "tlake.s3.endpoint" .ctx -}}
- name: TOOLS
  value: {{ .tools }}
- name: PATH
  value: {{ printf "%s/bin:/opt/telemetry-lake/duckdb:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" .tools }}
- name: TMPDIR
  value: /tmp
- name: DUCKDB_VERSION
  value: {{ .ctx.Values.duckdb.version | quote }}
- name: DUCKDB_CLI_URL
  value: {{ .ctx.Values.duckdb.cliUrl | quote }}
- name: DUCKDB_EXTENSION_REPOSITORY
  value: {{ .ctx.Values.duckdb.extensionRepository | quote }}
{{ include "tlake.s3.env" (dict "ctx" .ctx "access" "S3_ACCESS_KEY" "secret" "S3_SECRET_KEY") }}
- name: S3_REGION
  value: {{ .ctx.Values.objectStore.region | quote }}
- name: S3_ENDPOINT
  value: {{ $endpoint | trimPrefix "http://" | trimPrefix "https://" | quote }}
- name: S3_USE_SSL
  value: {{ hasPrefix "https://" $endpoint | quote }}
- name: S3_URL_STYLE
  value: {{ ternary "path" "vhost" (eq (include "tlake.s3.pathStyle" .ctx) "true") | quote }}
- name: ICEBERG_ENDPOINT
  value: http://nessie:19120/iceberg/
- name: ICEBERG_WAREHOUSE
  value: {{ .ctx.Values.nessie.warehouse | quote }}
{{- end -}}

{{/* NetworkPolicy peers: pods of this release by app.kubernetes.io/name. Call with (dict "release" name "apps" list). */}}
{{- define "tlake.np.peers" -}}
{{- $release := .release -}}
{{- range .apps }}
- podSelector:
    matchLabels:
      app.kubernetes.io/name: {{ . }}
      app.kubernetes.io/instance: {{ $release }}
{{- end }}
{{- end }}
{{- define "tlake.np.metadata" -}}
metadata:
  name: {{ .name }}
  namespace: {{ .ns }}
  labels:
    app.kubernetes.io/part-of: telemetry-lake
    app.kubernetes.io/instance: {{ .ctx.Release.Name }}
    app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
{{- end }}

{{/*
Spread replicas of a scaled-out service over nodes when the cluster has several (preferred, not
required: a single-node cluster still runs every replica). Call with (dict "ctx" $ "app" "compactor").
*/}}
{{- define "tlake.spreadAffinity" -}}
affinity:
  podAntiAffinity:
    preferredDuringSchedulingIgnoredDuringExecution:
      - weight: 100
        podAffinityTerm:
          topologyKey: kubernetes.io/hostname
          labelSelector:
            matchLabels:
              {{- include "tlake.selectorLabels" . | nindent 14 }}
{{- end -}}
