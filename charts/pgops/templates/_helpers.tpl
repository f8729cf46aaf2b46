{{/*
Objects keep the fixed names, labels and selectors of manifests/ (test/distribution checks
that the default render equals manifests/ less helm's labels), so the chart and
`kubectl apply -k manifests/` install the same thing. The Leases are named after the
operators, which is also why the names do not follow the release name.
*/}}

{{/* The labels helm adds to every object, on top of the manifests' own. */}}
{{- define "pgops.helmLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}

{{- define "pgops.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{/*
The objects every operator has, from a dict: root (the top context), name (provisioner or
ops-manager), key (its values' key) and values (.Values.<key>).
*/}}

{{- define "pgops.serviceAccount" -}}
apiVersion: v1
kind: ServiceAccount
metadata:
  name: pgops-{{ .name }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "pgops.helmLabels" .root | nindent 4 }}
{{- end }}

{{- define "pgops.clusterRoleBinding" -}}
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: pgops-{{ .name }}
  labels:
    {{- include "pgops.helmLabels" .root | nindent 4 }}
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: pgops-{{ .name }}
subjects:
- kind: ServiceAccount
  name: pgops-{{ .name }}
  namespace: {{ .root.Release.Namespace }}
{{- end }}

{{- define "pgops.leaderElectionRBAC" -}}
{{- if .root.Values.leaderElection.enabled }}
---
# Leader election: only the Lease of this operator, in its own namespace.
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: pgops-{{ .name }}-leader-election
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "pgops.helmLabels" .root | nindent 4 }}
rules:
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  verbs: ["create"]
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  resourceNames: ["pgops-{{ .name }}"]
  verbs: ["get", "update"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: pgops-{{ .name }}-leader-election
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "pgops.helmLabels" .root | nindent 4 }}
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: Role
  name: pgops-{{ .name }}-leader-election
subjects:
- kind: ServiceAccount
  name: pgops-{{ .name }}
  namespace: {{ .root.Release.Namespace }}
{{- end }}
{{- end }}

{{- define "pgops.deployment" -}}
{{- $values := .values -}}
{{- with .root -}}
{{- if and (not .Values.leaderElection.enabled) (gt (int $values.replicas) 1) }}
{{- fail (printf "%s.replicas is %d, but leaderElection.enabled is false: without leader election every replica acts, so each operator must run 1 replica" $.key (int $values.replicas)) }}
{{- end -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: pgops-{{ $.name }}
  namespace: {{ .Release.Namespace }}
  labels:
    app.kubernetes.io/name: pgops-{{ $.name }}
    app.kubernetes.io/part-of: pgops
    {{- include "pgops.helmLabels" . | nindent 4 }}
spec:
  {{- if .Values.leaderElection.enabled }}
  # Two replicas with leader election: one acts, the other takes over within a lease.
  {{- end }}
  replicas: {{ int $values.replicas }}
  selector:
    matchLabels:
      app.kubernetes.io/name: pgops-{{ $.name }}
  template:
    metadata:
      labels:
        app.kubernetes.io/name: pgops-{{ $.name }}
        app.kubernetes.io/part-of: pgops
        {{- include "pgops.helmLabels" . | nindent 8 }}
    spec:
      serviceAccountName: pgops-{{ $.name }}
      {{- with .Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      securityContext:
        runAsNonRoot: true
        seccompProfile:
          type: RuntimeDefault
      containers:
      - name: {{ $.name }}
        image: {{ include "pgops.image" . }}
        {{- with .Values.image.pullPolicy }}
        imagePullPolicy: {{ . }}
        {{- end }}
        command: ["/usr/local/bin/{{ $.name }}"]
        args:
        - --leader-elect={{ .Values.leaderElection.enabled }}
        - --health-addr=:8081
        - --metrics-addr=:8080
        - --workers={{ int $values.workers }}
        {{- if eq $.name "provisioner" }}
        # The database pods' init container installs the pgops agent from this same image.
        - --agent-image={{ include "pgops.image" . }}
        {{- end }}
        {{- with .Values.watchNamespace }}
        - --namespace={{ . }}
        {{- end }}
        {{- range $values.extraArgs }}
        - {{ . | quote }}
        {{- end }}
        env:
        - name: POD_NAMESPACE
          valueFrom:
            fieldRef:
              fieldPath: metadata.namespace
        ports:
        - name: health
          containerPort: 8081
        - name: metrics
          containerPort: 8080
        livenessProbe:
          httpGet:
            path: /healthz
            port: health
          periodSeconds: 10
        readinessProbe:
          httpGet:
            path: /readyz
            port: health
          periodSeconds: 5
        {{- with $values.resources }}
        resources:
          {{- toYaml . | nindent 10 }}
        {{- end }}
        securityContext:
          allowPrivilegeEscalation: false
          readOnlyRootFilesystem: true
          capabilities:
            drop: ["ALL"]
      {{- with $values.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $values.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $values.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
{{- end }}
{{- end }}

{{- define "pgops.metricsService" -}}
{{- if .root.Values.metrics.service.enabled }}
---
# Prometheus scrapes /metrics here (port name "metrics"); the probes' port is not exposed.
apiVersion: v1
kind: Service
metadata:
  name: pgops-{{ .name }}-metrics
  namespace: {{ .root.Release.Namespace }}
  labels:
    app.kubernetes.io/name: pgops-{{ .name }}
    app.kubernetes.io/part-of: pgops
    app.kubernetes.io/component: metrics
    {{- include "pgops.helmLabels" .root | nindent 4 }}
spec:
  selector:
    app.kubernetes.io/name: pgops-{{ .name }}
  ports:
  - name: metrics
    port: {{ int .root.Values.metrics.service.port }}
    targetPort: metrics
{{- end }}
{{- end }}
