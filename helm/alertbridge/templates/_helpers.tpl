{{/* Chart name, truncated to the 63 characters Kubernetes allows in names. */}}
{{- define "alertbridge.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Full name: release-chart, or the release name alone when it already contains the chart name. */}}
{{- define "alertbridge.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "alertbridge.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Selector labels; the component (serve, receiver, worker, migrate) is added per workload. */}}
{{- define "alertbridge.selectorLabels" -}}
app.kubernetes.io/name: {{ include "alertbridge.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "alertbridge.labels" -}}
helm.sh/chart: {{ include "alertbridge.chart" . }}
{{ include "alertbridge.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: alertbridge
{{- end -}}

{{- define "alertbridge.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "alertbridge.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "alertbridge.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{- define "alertbridge.secretName" -}}
{{- default (include "alertbridge.fullname" .) .Values.existingSecret -}}
{{- end -}}

{{/* Whether webhooks need a bearer token: set in secrets, or a key named in existingSecretKeys. */}}
{{- define "alertbridge.webhookAuth" -}}
{{- if .Values.existingSecret -}}
{{- if .Values.existingSecretKeys.webhookBearerToken -}}true{{- end -}}
{{- else if .Values.secrets.webhookBearerToken -}}true{{- end -}}
{{- end -}}

{{/*
The config file as the process reads it: .Values.config plus what the chart
owns (webhook auth from the Secret, the mounted template directory).
*/}}
{{- define "alertbridge.config" -}}
{{- $cfg := deepCopy .Values.config -}}
{{- if not (and $cfg.route $cfg.route.chats) -}}
{{- fail "config.route.chats must list at least one Telegram chat id: the default destination for every alert" -}}
{{- end -}}
{{- if include "alertbridge.webhookAuth" . -}}
{{- $receiver := default (dict) $cfg.receiver -}}
{{- $_ := set $receiver "auth" (dict "bearer_token" "${ALERTBRIDGE_WEBHOOK_BEARER_TOKEN}") -}}
{{- $_ := set $cfg "receiver" $receiver -}}
{{- end -}}
{{- if .Values.templates -}}
{{- $dirs := prepend (default (list) $cfg.template_dirs) "/etc/alertbridge/templates" -}}
{{- $_ := set $cfg "template_dirs" $dirs -}}
{{- end -}}
{{- toYaml $cfg -}}
{{- end -}}

{{/* Environment shared by every container that runs the bridge. */}}
{{- define "alertbridge.env" -}}
{{- $secret := include "alertbridge.secretName" . -}}
{{- $keys := .Values.existingSecretKeys -}}
- name: ALERTBRIDGE_CONFIG
  value: /etc/alertbridge/config.yml
- name: ALERTBRIDGE_LISTEN
  value: {{ printf "0.0.0.0:%d" (int .Values.containerPort) | quote }}
- name: ALERTBRIDGE_TELEGRAM_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ ternary $keys.telegramToken "telegram-token" (ne .Values.existingSecret "") }}
- name: ALERTBRIDGE_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ ternary $keys.databaseUrl "database-url" (ne .Values.existingSecret "") }}
- name: ALERTBRIDGE_AMQP_URL
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ ternary $keys.amqpUrl "amqp-url" (ne .Values.existingSecret "") }}
{{- if include "alertbridge.webhookAuth" . }}
- name: ALERTBRIDGE_WEBHOOK_BEARER_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ ternary $keys.webhookBearerToken "webhook-bearer-token" (ne .Values.existingSecret "") }}
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Annotations that roll the pods when the config, templates or secrets change. */}}
{{- define "alertbridge.checksums" -}}
checksum/config: {{ include (print $.Template.BasePath "/configmap.yaml") . | sha256sum }}
{{- if not .Values.existingSecret }}
checksum/secret: {{ include (print $.Template.BasePath "/secret.yaml") . | sha256sum }}
{{- end }}
{{- end -}}

{{/*
One Deployment. Called with (dict "root" $ "component" "serve|receiver|worker" "args" list "http" bool).
*/}}
{{- define "alertbridge.deployment" -}}
{{- $root := .root -}}
{{- $component := .component -}}
{{- $settings := index $root.Values $component -}}
{{- with $root -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "alertbridge.fullname" . }}-{{ $component }}
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "alertbridge.labels" . | nindent 4 }}
    app.kubernetes.io/component: {{ $component }}
spec:
  {{- if not $settings.autoscaling.enabled }}
  replicas: {{ $settings.replicas }}
  {{- end }}
  revisionHistoryLimit: 5
  selector:
    matchLabels:
      {{- include "alertbridge.selectorLabels" . | nindent 6 }}
      app.kubernetes.io/component: {{ $component }}
  strategy:
    type: RollingUpdate
    rollingUpdate:
      maxSurge: 1
      maxUnavailable: 0
  template:
    metadata:
      labels:
        {{- include "alertbridge.selectorLabels" . | nindent 8 }}
        app.kubernetes.io/component: {{ $component }}
        {{- with .Values.podLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      annotations:
        {{- include "alertbridge.checksums" . | nindent 8 }}
        {{- with .Values.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      serviceAccountName: {{ include "alertbridge.serviceAccountName" . }}
      automountServiceAccountToken: false
      {{- with .Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with .Values.priorityClassName }}
      priorityClassName: {{ . }}
      {{- end }}
      terminationGracePeriodSeconds: {{ .Values.terminationGracePeriodSeconds }}
      securityContext:
        {{- toYaml .Values.podSecurityContext | nindent 8 }}
      containers:
        - name: {{ $component }}
          image: {{ include "alertbridge.image" . | quote }}
          imagePullPolicy: {{ .Values.image.pullPolicy }}
          args:
            - {{ $component }}
            - --config
            - /etc/alertbridge/config.yml
            - --log-level
            - {{ .Values.logLevel }}
            - --log-format
            - {{ .Values.logFormat }}
          env:
            {{- include "alertbridge.env" . | nindent 12 }}
          {{- with .Values.extraEnvFrom }}
          envFrom:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          ports:
            - name: http
              containerPort: {{ .Values.containerPort }}
              protocol: TCP
          livenessProbe:
            httpGet:
              path: /healthz
              port: http
            {{- toYaml .Values.livenessProbe | nindent 12 }}
          readinessProbe:
            httpGet:
              path: /readyz
              port: http
            {{- toYaml .Values.readinessProbe | nindent 12 }}
          resources:
            {{- toYaml $settings.resources | nindent 12 }}
          securityContext:
            {{- toYaml .Values.securityContext | nindent 12 }}
          volumeMounts:
            - name: config
              mountPath: /etc/alertbridge/config.yml
              subPath: config.yml
              readOnly: true
            {{- if .Values.templates }}
            - name: templates
              mountPath: /etc/alertbridge/templates
              readOnly: true
            {{- end }}
            - name: tmp
              mountPath: /tmp
            {{- with .Values.extraVolumeMounts }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
      volumes:
        - name: config
          configMap:
            name: {{ include "alertbridge.fullname" . }}
        {{- if .Values.templates }}
        - name: templates
          configMap:
            name: {{ include "alertbridge.fullname" . }}-templates
        {{- end }}
        - name: tmp
          emptyDir:
            sizeLimit: 64Mi
        {{- with .Values.extraVolumes }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- with .Values.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with .Values.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with .Values.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with .Values.topologySpreadConstraints }}
      topologySpreadConstraints:
        {{- toYaml . | nindent 8 }}
      {{- end }}
{{- end }}
{{- end -}}

{{/* The components this mode runs. */}}
{{- define "alertbridge.components" -}}
{{- if eq .Values.mode "split" -}}receiver,worker{{- else -}}serve{{- end -}}
{{- end -}}

{{/* The component that serves HTTP (webhooks, metrics) in this mode. */}}
{{- define "alertbridge.httpComponent" -}}
{{- if eq .Values.mode "split" -}}receiver{{- else -}}serve{{- end -}}
{{- end -}}
