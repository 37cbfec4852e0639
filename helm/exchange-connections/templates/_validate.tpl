{{/*
Refuses values that cannot work, with a message naming the value to fix. Included by configmap.yaml, which every
render produces, so `helm template`/`install`/`upgrade` stop before anything reaches the cluster.
*/}}
{{- define "ec.validate" -}}
{{- $v := .Values }}
{{- $s := $v.secrets }}

{{- /* Secrets: a source, and the keys every process needs. */}}
{{- if and (not $s.existingSecret) (not $s.externalSecret.enabled) }}
{{- fail "secrets: no secrets source. Set secrets.existingSecret to a Secret holding DATABASE_URL, ENCRYPTION_KEYS, JWT_SECRET and REDIS_URL, or enable secrets.externalSecret" }}
{{- end }}
{{- if $s.externalSecret.enabled }}
{{- $_ := required "secrets.externalSecret.secretStoreRef.name is required when secrets.externalSecret.enabled: the SecretStore or ClusterSecretStore to read from" $s.externalSecret.secretStoreRef.name }}
{{- if and (not $s.externalSecret.remoteKey) (not $s.externalSecret.data) }}
{{- fail "secrets.externalSecret: set remoteKey (one remote secret holding every key as a JSON property) or data (explicit entries)" }}
{{- end }}
{{- end }}
{{- $_ := required "secrets.keys.databaseUrl is required: the Secret key holding DATABASE_URL" $s.keys.databaseUrl }}
{{- $_ := required "secrets.keys.encryptionKeys is required: the Secret key holding ENCRYPTION_KEYS" $s.keys.encryptionKeys }}
{{- if and (not $s.keys.jwtSecret) (not $v.config.JWT_JWKS_URL) }}
{{- fail "no way to verify tokens: set secrets.keys.jwtSecret (Supabase's HS256 secret) or config.JWT_JWKS_URL" }}
{{- end }}
{{- range $name := list "DATABASE_URL" "REDIS_URL" "JWT_SECRET" "ENCRYPTION_KEYS" }}
{{- if hasKey $v.config $name }}
{{- fail (printf "config.%s: secrets do not belong in the ConfigMap; put it in the Secret (see secrets.keys)" $name) }}
{{- end }}
{{- end }}

{{- /* The process must listen off loopback, on a port. */}}
{{- $listen := toString (required "config.LISTEN_ADDR is required, e.g. 0.0.0.0:8080" $v.config.LISTEN_ADDR) }}
{{- if or (hasPrefix "127." $listen) (hasPrefix "localhost" $listen) (hasPrefix "[::1]" $listen) }}
{{- fail (printf "config.LISTEN_ADDR %s is a loopback address: probes, the Service and Prometheus could not reach it; use 0.0.0.0:8080" $listen) }}
{{- end }}
{{- $port := include "ec.port" . | int }}
{{- if or (lt $port 1) (gt $port 65535) }}
{{- fail (printf "config.LISTEN_ADDR %s has no valid port" $listen) }}
{{- end }}

{{- /* Separate processes share live events only through Redis. */}}
{{- $many := or $v.worker.enabled $v.serve.autoscaling.enabled (gt (int $v.serve.replicaCount) 1) }}
{{- if and (not $s.keys.redisUrl) $many }}
{{- fail "secrets.keys.redisUrl is empty, but several processes run (worker, or more than one serve replica): without Redis their live events never reach each other's subscribers" }}
{{- end }}

{{- /* Replicas, autoscaling and disruption budgets of each Deployment. */}}
{{- range $component := list "serve" "worker" }}
{{- $c := index $v $component }}
{{- if or (eq $component "serve") $c.enabled }}
{{- $a := $c.autoscaling }}
{{- if $a.enabled }}
{{- if and (not $a.targetCPUUtilizationPercentage) (not $a.targetMemoryUtilizationPercentage) (not $a.metrics) }}
{{- fail (printf "%s.autoscaling is enabled with no metrics: set targetCPUUtilizationPercentage, targetMemoryUtilizationPercentage or metrics" $component) }}
{{- end }}
{{- if lt (int $a.minReplicas) 1 }}
{{- fail (printf "%s.autoscaling.minReplicas must be at least 1" $component) }}
{{- end }}
{{- if gt (int $a.minReplicas) (int $a.maxReplicas) }}
{{- fail (printf "%s.autoscaling.minReplicas (%d) is above maxReplicas (%d)" $component (int $a.minReplicas) (int $a.maxReplicas)) }}
{{- end }}
{{- end }}
{{- $p := $c.podDisruptionBudget }}
{{- if $p.enabled }}
{{- if and (not $a.enabled) (eq (int $c.replicaCount) 0) }}
{{- fail (printf "%s.podDisruptionBudget is enabled but %s.replicaCount is 0: a budget over no pods cannot work; disable the budget or run replicas" $component $component) }}
{{- end }}
{{- if and (not (kindIs "invalid" $p.minAvailable)) (not (kindIs "invalid" $p.maxUnavailable)) }}
{{- fail (printf "%s.podDisruptionBudget: set minAvailable or maxUnavailable, not both" $component) }}
{{- end }}
{{- if and (kindIs "invalid" $p.minAvailable) (kindIs "invalid" $p.maxUnavailable) }}
{{- fail (printf "%s.podDisruptionBudget: set minAvailable or maxUnavailable" $component) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
