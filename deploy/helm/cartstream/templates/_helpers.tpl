{{/* Names and labels shared by every template. */}}
{{- define "cartstream.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "cartstream.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "cartstream.labels" -}}
app.kubernetes.io/name: {{ include "cartstream.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "cartstream.selector" -}}
app.kubernetes.io/name: {{ include "cartstream.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "cartstream.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "cartstream.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* image for a role: ctx = dict "root" $ "role" $role */}}
{{- define "cartstream.image" -}}
{{- $img := ternary .root.Values.gpuImage .root.Values.image (default false .role.gpu) -}}
{{- printf "%s:%s" $img.repository (default .root.Chart.AppVersion $img.tag) -}}
{{- end -}}

{{/* Partitions a role's consumer group reads: persist reads the output topics. */}}
{{- define "cartstream.partitions" -}}
{{- if eq .name "persist" -}}{{ .root.Values.topics.outputPartitions }}{{- else -}}{{ .root.Values.topics.streamPartitions }}{{- end -}}
{{- end -}}

{{/* Fail early on values that cannot work. */}}
{{- define "cartstream.check" -}}
{{- $root := . -}}
{{- if eq .Values.brokerProfile "tansu" -}}
{{- fail "brokerProfile=tansu is the embedded test broker's workaround profile; use kafka" -}}
{{- end -}}
{{- if and (hasPrefix "SASL" .Values.kafka.securityProtocol) (not .Values.kafka.saslSecret.name) -}}
{{- fail "kafka.securityProtocol is SASL_*: set kafka.saslSecret.name to an existing Secret" -}}
{{- end -}}
{{- if and (ne .Values.cartAuth.mode "off") (not .Values.cartAuth.keysSecret.name) -}}
{{- fail (printf "cartAuth.mode is %s: set cartAuth.keysSecret.name to an existing Secret with the master keys" .Values.cartAuth.mode) -}}
{{- end -}}
{{- if not (has .Values.cartAuth.mode (list "off" "report" "enforce")) -}}
{{- fail "cartAuth.mode must be off, report or enforce" -}}
{{- end -}}
{{- if not .Values.database.urlSecret.name -}}
{{- fail "database.urlSecret.name must name an existing Secret with the database URL" -}}
{{- end -}}
{{- range $name, $role := .Values.roles -}}
{{- if $role.enabled -}}
{{- $partitions := int (include "cartstream.partitions" (dict "root" $root "name" $name)) -}}
{{- $max := int (ternary $role.autoscaling.maxReplicas $role.replicas $role.autoscaling.enabled) -}}
{{- if gt $max $partitions -}}
{{- fail (printf "roles.%s: up to %d replicas but its topics have %d partitions; extra consumers would sit idle (raise topics.*Partitions or lower the replicas)" $name $max $partitions) -}}
{{- end -}}
{{- if and $role.autoscaling.enabled (gt (int $role.autoscaling.minReplicas) (int $role.autoscaling.maxReplicas)) -}}
{{- fail (printf "roles.%s.autoscaling: minReplicas > maxReplicas" $name) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
