{{/* Names, labels and the pieces the serve and worker Deployments and the migration Job share. */}}

{{- define "ec.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "ec.fullname" -}}
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

{{/* Labels of every object. */}}
{{- define "ec.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "ec.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "ec.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ec.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Selector labels of one component: (dict "root" $ "component" "serve"). */}}
{{- define "ec.componentSelector" -}}
{{ include "ec.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "ec.componentLabels" -}}
{{ include "ec.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "ec.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "ec.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "ec.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The Secret holding DATABASE_URL, REDIS_URL, JWT_SECRET, ENCRYPTION_KEYS. */}}
{{- define "ec.secretName" -}}
{{- default (include "ec.fullname" .) .Values.secrets.existingSecret }}
{{- end }}

{{/* The API port, taken from LISTEN_ADDR so the probes and the Service always match what the process binds. */}}
{{- define "ec.port" -}}
{{- last (splitList ":" (toString .Values.config.LISTEN_ADDR)) | int }}
{{- end }}

{{- define "ec.secretsDir" -}}/var/run/secrets/exchange-connections{{- end }}

{{/*
Environment of serve and worker: (dict "root" $ "component" "serve"|"worker").
Secrets: URLs as variables (the process has no *_FILE form for them), key material as files.
*/}}
{{- define "ec.env" -}}
{{- $v := .root.Values }}
- name: DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "ec.secretName" .root }}
      {{- if eq .component "worker" }}
      key: {{ default $v.secrets.keys.databaseUrl $v.secrets.keys.workerDatabaseUrl }}
      {{- else }}
      key: {{ $v.secrets.keys.databaseUrl }}
      {{- end }}
{{- if $v.secrets.keys.redisUrl }}
- name: REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "ec.secretName" .root }}
      key: {{ $v.secrets.keys.redisUrl }}
{{- end }}
- name: ENCRYPTION_KEYS_FILE
  value: {{ include "ec.secretsDir" .root }}/encryption-keys
{{- if and (eq .component "serve") $v.secrets.keys.jwtSecret }}
- name: JWT_SECRET_FILE
  value: {{ include "ec.secretsDir" .root }}/jwt-secret
{{- end }}
{{- if eq .component "serve" }}
# Health checks run in the worker Deployment, not inside serve.
- name: RUN_WORKER
  value: "false"
{{- end }}
- name: DATA_DIR
  value: /tmp/data
{{- range $name, $value := (index $v .component).env }}
- name: {{ $name }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- end }}

{{/* The secret files: the worker gets only the encryption keys. */}}
{{- define "ec.secretVolume" -}}
{{- $v := .root.Values }}
- name: secrets
  secret:
    secretName: {{ include "ec.secretName" .root }}
    defaultMode: 0440
    items:
      - key: {{ $v.secrets.keys.encryptionKeys }}
        path: encryption-keys
      {{- if and (eq .component "serve") $v.secrets.keys.jwtSecret }}
      - key: {{ $v.secrets.keys.jwtSecret }}
        path: jwt-secret
      {{- end }}
- name: tmp
  emptyDir:
    medium: Memory
    sizeLimit: 16Mi
{{- end }}

{{- define "ec.volumeMounts" -}}
- name: secrets
  mountPath: {{ include "ec.secretsDir" .root }}
  readOnly: true
- name: tmp
  mountPath: /tmp
{{- end }}

{{/* Default spreading of replicas across nodes and zones. */}}
{{- define "ec.spread" -}}
- maxSkew: 1
  topologyKey: topology.kubernetes.io/zone
  whenUnsatisfiable: ScheduleAnyway
  labelSelector:
    matchLabels:
      {{- include "ec.componentSelector" . | nindent 6 }}
- maxSkew: 1
  topologyKey: kubernetes.io/hostname
  whenUnsatisfiable: ScheduleAnyway
  labelSelector:
    matchLabels:
      {{- include "ec.componentSelector" . | nindent 6 }}
{{- end }}
