{{/* Labels of every object; the selector labels of a component's pods. */}}
{{- define "prewarm.labels" -}}
app.kubernetes.io/name: prewarm
app.kubernetes.io/part-of: prewarm
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end }}

{{- define "prewarm.componentLabels" -}}
{{ include "prewarm.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "prewarm.selectorLabels" -}}
app.kubernetes.io/name: prewarm
app.kubernetes.io/component: {{ . }}
{{- end }}

{{- define "prewarm.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{- define "prewarm.namespace" -}}
{{- if .Values.installation.namespace -}}
{{ .Values.installation.namespace }}
{{- else if ne .Release.Namespace "default" -}}
{{ .Release.Namespace }}
{{- else -}}
kruise-system
{{- end -}}
{{- end }}

{{/* Scheduling values of a component: nodeSelector, tolerations, affinity. */}}
{{- define "prewarm.scheduling" -}}
{{- with .nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{- define "prewarm.containerSecurity" -}}
securityContext:
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  capabilities:
    drop: [ALL]
{{- end }}

{{- define "prewarm.checkValues" -}}
{{- if not (has .Values.certificates.source (list "secret" "certManager")) }}
{{- fail (printf "certificates.source is %q: expected secret or certManager" .Values.certificates.source) }}
{{- end }}
{{- if not (has .Values.logFormat (list "json" "text")) }}
{{- fail (printf "logFormat is %q: expected json or text" .Values.logFormat) }}
{{- end }}
{{- $namespace := include "prewarm.namespace" . }}
{{- if or (eq .Values.agentNamespace $namespace) (eq .Values.agentNamespace "kube-system") }}
{{- fail (printf "agentNamespace is %q: every node agent may read the Secrets there, so it must be a namespace of its own, not the install namespace %q (the webhook's CA key is there) nor kube-system" .Values.agentNamespace $namespace) }}
{{- end }}
{{- if or (eq .Values.daemon.namespace $namespace) (eq .Values.daemon.namespace .Values.agentNamespace) }}
{{- fail (printf "daemon.namespace is %q: the node agents need the privileged Pod Security level, so they run in a namespace of their own, not the install namespace %q nor agentNamespace %q (both restricted)" .Values.daemon.namespace $namespace .Values.agentNamespace) }}
{{- end }}
{{- end }}

{{- /* Non-empty when the API server puts the node of a Pod's token in its
user (Kubernetes 1.30+): the webhook then holds each node agent to its own
node's NodeImage status. */ -}}
{{- define "prewarm.nodeBoundTokens" -}}
{{- if semverCompare ">=1.30-0" .Capabilities.KubeVersion.Version }}true{{ end }}
{{- end }}
