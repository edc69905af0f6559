{{/* Environment and volumes every cartstream container shares: ctx = root */}}
{{- define "cartstream.envFrom" -}}
- configMapRef:
    name: {{ include "cartstream.fullname" . }}
{{- end -}}

{{- define "cartstream.secretEnv" -}}
- name: CARTSTREAM_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.database.urlSecret.name }}
      key: {{ .Values.database.urlSecret.key }}
{{- if .Values.kafka.saslSecret.name }}
- name: CARTSTREAM_KAFKA__SASL_USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ .Values.kafka.saslSecret.name }}
      key: {{ .Values.kafka.saslSecret.usernameKey }}
- name: CARTSTREAM_KAFKA__SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .Values.kafka.saslSecret.name }}
      key: {{ .Values.kafka.saslSecret.passwordKey }}
{{- end }}
{{- if .Values.cartAuth.keysSecret.name }}
- name: CARTSTREAM_CART_AUTH__MASTER_KEYS
  valueFrom:
    secretKeyRef:
      name: {{ .Values.cartAuth.keysSecret.name }}
      key: {{ .Values.cartAuth.keysSecret.key }}
{{- end }}
{{- end -}}

{{- define "cartstream.volumeMounts" -}}
- name: tmp
  mountPath: /tmp
{{- if .Values.kafka.tlsCaSecret.name }}
- name: kafka-ca
  mountPath: /etc/cartstream/kafka-ca
  readOnly: true
{{- end }}
{{- if .Values.detector.registryClaim }}
- name: model-registry
  mountPath: /var/lib/cartstream/models
  readOnly: true
{{- end }}
{{- end -}}

{{- define "cartstream.volumes" -}}
- name: tmp
  emptyDir: {}
{{- if .Values.kafka.tlsCaSecret.name }}
- name: kafka-ca
  secret:
    secretName: {{ .Values.kafka.tlsCaSecret.name }}
{{- end }}
{{- if .Values.detector.registryClaim }}
- name: model-registry
  persistentVolumeClaim:
    claimName: {{ .Values.detector.registryClaim }}
    readOnly: true
{{- end }}
{{- end -}}
