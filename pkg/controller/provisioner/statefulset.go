package provisioner

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/util/retry"
	"k8s.io/klog/v2"
	"k8s.io/utils/ptr"

	"github.com/pgops/pgops/pkg/agent"
	kubedbv1 "github.com/pgops/pgops/pkg/apis/kubedb/v1"
)

// preservedTemplateAnnotations are pod template annotations the ops-manager owns: an update
// by the provisioner keeps them, so pods are not restarted twice.
var preservedTemplateAnnotations = []string{AnnotationAuthRotation}

// annotationLegacySpecHash is the StatefulSet annotation earlier provisioners used to decide
// when to update; an update removes it.
const annotationLegacySpecHash = "pgops.dev/spec-hash"

// PostgresUID is the uid and gid of the postgres user in the official images.
const PostgresUID = 999

// reservedEnv are the variables the provisioner sets; podTemplate env cannot override them.
var reservedEnv = map[string]bool{
	"POSTGRES_USER": true, "POSTGRES_PASSWORD": true, "PGDATA": true, "POD_NAME": true,
	"POD_IP": true, "PRIMARY_HOST": true, "PRIMARY_PORT": true, "STANDBY_MODE": true,
}

// desiredStatefulSet builds the StatefulSet for pg running the PostgreSQL image and the agent
// from agentImage, with credentials from the Secret secretName.
func desiredStatefulSet(pg *kubedbv1.Postgres, image, agentImage, secretName string) *appsv1.StatefulSet {
	tmpl := pg.Spec.PodTemplate
	podLabels := mergeMaps(map[string]string{}, tmpl.Metadata.Labels, selectorLabels(pg))
	var podAnnotations map[string]string
	if len(tmpl.Metadata.Annotations) > 0 {
		podAnnotations = mergeMaps(nil, tmpl.Metadata.Annotations)
	}

	secretEnv := func(name, key string) corev1.EnvVar {
		return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
			LocalObjectReference: corev1.LocalObjectReference{Name: secretName}, Key: key}}}
	}
	fieldEnv := func(name, path string) corev1.EnvVar {
		return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{
			APIVersion: "v1", FieldPath: path}}}
	}
	env := []corev1.EnvVar{
		secretEnv("POSTGRES_USER", corev1.BasicAuthUsernameKey),
		secretEnv("POSTGRES_PASSWORD", corev1.BasicAuthPasswordKey),
		{Name: "PGDATA", Value: PGDataPath},
		fieldEnv("POD_NAME", "metadata.name"),
		fieldEnv("POD_IP", "status.podIP"),
		{Name: "PRIMARY_HOST", Value: "$(" + serviceHostEnv(primaryServiceName(pg)) + ")"},
		// The primary Service's first port: a serviceTemplate may move it from 5432.
		{Name: "PRIMARY_PORT", Value: "$(" + servicePortEnv(primaryServiceName(pg)) + ")"},
		{Name: "STANDBY_MODE", Value: string(standbyMode(pg))},
	}
	container := corev1.Container{
		Name:            ContainerName,
		Image:           image,
		ImagePullPolicy: corev1.PullIfNotPresent,
		// The agent is PID 1: it prepares the data directory, runs postgres and answers the
		// probes (pkg/agent).
		Command: []string{AgentMount + "/" + AgentBinary, "run"},
		Ports: []corev1.ContainerPort{{
			Name: "db", ContainerPort: PostgresPort, Protocol: corev1.ProtocolTCP,
		}, {
			Name: AgentPortName, ContainerPort: agent.DefaultProbePort, Protocol: corev1.ProtocolTCP,
		}},
		Env: env,
		VolumeMounts: []corev1.VolumeMount{
			{Name: DataVolume, MountPath: DataMount},
			{Name: AgentVolume, MountPath: AgentMount, ReadOnly: true},
			{Name: RunVolume, MountPath: RunMount},
			{Name: TmpVolume, MountPath: TmpMount},
		},
		// The probes start no process: the kubelet asks the agent over HTTP, and the agent
		// answers from the connection it keeps to the server (one query, no login).
		//
		// Startup: up to 10 minutes to answer at all (crash recovery replays WAL before it
		// does). The agent holds each answer up to a second for the server to accept
		// connections, and fails it while it prepares the data directory (an initdb, a
		// clone), so that the readiness probe, which the kubelet runs right after it,
		// passes at its first try: a new or restarted pod is Ready a moment after its
		// server is, not a readiness period later. It passes while the server answers but
		// rejects connections (recovering, a warm standby), and after 8 minutes of
		// preparation (a clone as long as the data is large) as well.
		// Liveness: a server that does not answer a query within the agent's deadline for
		// a minute, dead or hung, is restarted.
		StartupProbe:  agentProbe(agent.StartupPath, 1, 600),
		LivenessProbe: agentProbe(agent.LivenessPath, 20, 3),
		// No initial delay: the startup probe has waited for the server already, and the
		// kubelet probes readiness at once when a started container is not Ready yet. The
		// period bounds how long a hung server stays in its Service (3 periods).
		// Kubernetes' default of 10 s, as CloudNativePG's.
		ReadinessProbe:           agentProbe(agent.ReadinessPath, readinessPeriodSeconds, 3),
		Resources:                defaultResources(),
		SecurityContext:          restrictedContainerSecurity(),
		TerminationMessagePath:   corev1.TerminationMessagePathDefault,
		TerminationMessagePolicy: corev1.TerminationMessageReadFile,
	}
	for _, cs := range tmpl.Spec.Containers {
		if cs.Name != ContainerName {
			continue
		}
		if len(cs.Resources.Requests) > 0 || len(cs.Resources.Limits) > 0 || len(cs.Resources.Claims) > 0 {
			container.Resources = *cs.Resources.DeepCopy()
		}
		for _, e := range cs.Env {
			if !reservedEnv[e.Name] {
				container.Env = append(container.Env, *e.DeepCopy())
			}
		}
		if cs.SecurityContext != nil {
			container.SecurityContext = overlay(container.SecurityContext, cs.SecurityContext)
		}
	}

	podSecurity := &corev1.PodSecurityContext{
		RunAsUser:           ptr.To[int64](PostgresUID),
		RunAsGroup:          ptr.To[int64](PostgresUID),
		FSGroup:             ptr.To[int64](PostgresUID),
		FSGroupChangePolicy: ptr.To(corev1.FSGroupChangeOnRootMismatch),
		RunAsNonRoot:        ptr.To(true),
		SeccompProfile:      &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
	}
	if tmpl.Spec.SecurityContext != nil {
		podSecurity = overlay(podSecurity, tmpl.Spec.SecurityContext)
	}

	// The init container copies the agent of the operators' release from the operator
	// image into an emptyDir, so the PostgreSQL image needs no change (as CloudNativePG
	// delivers its instance manager). It has the database container's resources: a pod's
	// effective request is the larger of its init containers' and the sum of its
	// containers', so they add nothing, a pod with requests equal to limits keeps its
	// Guaranteed QoS class, and a quota or LimitRange that admits the database container
	// admits it too.
	installAgent := corev1.Container{
		Name:                     AgentInitContainer,
		Image:                    agentImage,
		ImagePullPolicy:          corev1.PullIfNotPresent,
		Command:                  []string{AgentImageBinary, "install", AgentMount + "/" + AgentBinary},
		VolumeMounts:             []corev1.VolumeMount{{Name: AgentVolume, MountPath: AgentMount}},
		Resources:                *container.Resources.DeepCopy(),
		SecurityContext:          restrictedContainerSecurity(),
		TerminationMessagePath:   corev1.TerminationMessagePathDefault,
		TerminationMessagePolicy: corev1.TerminationMessageReadFile,
	}

	dataVolume := corev1.Volume{Name: DataVolume, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}
	volumes := []corev1.Volume{{
		Name: AgentVolume, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}},
	}, {
		Name: RunVolume, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}},
	}, {
		Name: TmpVolume, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}},
	}}
	var claims []corev1.PersistentVolumeClaim
	if isEphemeral(pg) {
		volumes = append([]corev1.Volume{dataVolume}, volumes...)
	} else {
		claim := corev1.PersistentVolumeClaim{
			ObjectMeta: metav1.ObjectMeta{Name: DataVolume, Labels: ownedLabels(pg)},
		}
		if pg.Spec.Storage != nil {
			claim.Spec = *pg.Spec.Storage.DeepCopy()
		}
		if len(claim.Spec.AccessModes) == 0 {
			claim.Spec.AccessModes = []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}
		}
		claims = append(claims, claim)
	}

	var pullSecrets []corev1.LocalObjectReference
	if len(tmpl.Spec.ImagePullSecrets) > 0 {
		pullSecrets = append(pullSecrets, tmpl.Spec.ImagePullSecrets...)
	}
	var tolerations []corev1.Toleration
	for _, t := range tmpl.Spec.Tolerations {
		tolerations = append(tolerations, *t.DeepCopy())
	}
	var nodeSelector map[string]string
	if len(tmpl.Spec.NodeSelector) > 0 {
		nodeSelector = mergeMaps(nil, tmpl.Spec.NodeSelector)
	}
	affinity := spreadAcrossNodes(pg)
	if tmpl.Spec.Affinity != nil {
		affinity = tmpl.Spec.Affinity.DeepCopy()
	}

	sts := &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{
			Name:            statefulSetName(pg),
			Namespace:       pg.Namespace,
			Labels:          ownedLabels(pg),
			OwnerReferences: []metav1.OwnerReference{ownerRef(pg)},
		},
		Spec: appsv1.StatefulSetSpec{
			Replicas:            ptr.To(replicas(pg)),
			Selector:            &metav1.LabelSelector{MatchLabels: selectorLabels(pg)},
			ServiceName:         governingServiceName(pg),
			PodManagementPolicy: appsv1.OrderedReadyPodManagement,
			UpdateStrategy:      appsv1.StatefulSetUpdateStrategy{Type: appsv1.OnDeleteStatefulSetStrategyType},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: podLabels, Annotations: podAnnotations},
				Spec: corev1.PodSpec{
					InitContainers:                []corev1.Container{installAgent},
					Containers:                    []corev1.Container{container},
					Volumes:                       volumes,
					SecurityContext:               podSecurity,
					ServiceAccountName:            tmpl.Spec.ServiceAccountName,
					ImagePullSecrets:              pullSecrets,
					NodeSelector:                  nodeSelector,
					Tolerations:                   tolerations,
					Affinity:                      affinity,
					EnableServiceLinks:            ptr.To(true),
					TerminationGracePeriodSeconds: ptr.To[int64](30),
				},
			},
			VolumeClaimTemplates: claims,
		},
	}
	setPodSpecDefaults(&sts.Spec.Template.Spec)
	return sts
}

// setPodSpecDefaults fills in what the API server defaults in a StatefulSet's pod template
// (k8s.io/kubernetes/pkg/apis/core/v1/defaults.go, SetDefaults_PodSpec and the functions it
// reaches), so that the desired template compares equal to the stored one. Fields the
// provisioner always sets itself (probe timings, ports' protocol, termination message,
// imagePullPolicy, configMap defaultMode) are not repeated here.
func setPodSpecDefaults(spec *corev1.PodSpec) {
	if spec.RestartPolicy == "" {
		spec.RestartPolicy = corev1.RestartPolicyAlways
	}
	if spec.DNSPolicy == "" {
		spec.DNSPolicy = corev1.DNSClusterFirst
	}
	if spec.SchedulerName == "" {
		spec.SchedulerName = corev1.DefaultSchedulerName
	}
	if spec.SecurityContext == nil {
		spec.SecurityContext = &corev1.PodSecurityContext{}
	}
	if spec.TerminationGracePeriodSeconds == nil {
		spec.TerminationGracePeriodSeconds = ptr.To[int64](corev1.DefaultTerminationGracePeriodSeconds)
	}
	// The v1 conversion mirrors serviceAccountName into the deprecated serviceAccount.
	spec.DeprecatedServiceAccount = spec.ServiceAccountName
	for _, containers := range [][]corev1.Container{spec.InitContainers, spec.Containers} {
		for i := range containers {
			for j := range containers[i].Env {
				if ref := containers[i].Env[j].ValueFrom; ref != nil && ref.FieldRef != nil && ref.FieldRef.APIVersion == "" {
					ref.FieldRef.APIVersion = "v1"
				}
			}
		}
	}
}

// ensureStatefulSet creates the StatefulSet or brings the fields the provisioner owns back to
// the desired state: a spec change and a hand edit of the StatefulSet are treated alike (see
// ownedStatefulSet for what is owned). Nothing is written when nothing drifted. The
// ops-manager's template annotations (preservedTemplateAnnotations) are kept. With
// updateStrategy OnDelete, running pods pick a template change up only when the ops-manager
// (or a user) restarts them; the provisioner never restarts pods.
func (c *Controller) ensureStatefulSet(ctx context.Context, pg *kubedbv1.Postgres, image, secretName string) error {
	logger := klog.FromContext(ctx)
	want := desiredStatefulSet(pg, image, c.agentImage, secretName)

	cur, err := c.statefulSetLister.StatefulSets(pg.Namespace).Get(want.Name)
	if apierrors.IsNotFound(err) {
		_, err = c.kubeClient.AppsV1().StatefulSets(pg.Namespace).Create(ctx, want, metav1.CreateOptions{FieldManager: FieldManager})
		if err == nil {
			logger.Info("Created statefulset", "statefulset", klog.KObj(want))
			c.recorder.Eventf(pg, corev1.EventTypeNormal, ReasonStatefulSetCreated, "Created statefulset %s with %d replica(s) of %s", want.Name, *want.Spec.Replicas, image)
			return nil
		}
		if !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("creating statefulset %s/%s: %w", pg.Namespace, want.Name, err)
		}
		cur, err = c.kubeClient.AppsV1().StatefulSets(pg.Namespace).Get(ctx, want.Name, metav1.GetOptions{})
	}
	if err != nil {
		return fmt.Errorf("reading statefulset %s/%s: %w", pg.Namespace, want.Name, err)
	}
	if err := c.checkOwned(pg, cur, "StatefulSet"); err != nil {
		return err
	}
	if len(statefulSetDrift(cur, ownedStatefulSet(cur, want))) == 0 {
		return nil
	}

	var oldReplicas int32
	var drift []string
	var noop bool
	err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
		latest, err := c.kubeClient.AppsV1().StatefulSets(pg.Namespace).Get(ctx, want.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		out := ownedStatefulSet(latest, want)
		if drift = statefulSetDrift(latest, out); len(drift) == 0 {
			noop = true // the cache was behind
			return nil
		}
		oldReplicas = ptr.Deref(latest.Spec.Replicas, 1)
		updated, err := c.kubeClient.AppsV1().StatefulSets(pg.Namespace).Update(ctx, out, metav1.UpdateOptions{FieldManager: FieldManager})
		if err == nil && updated.ResourceVersion == latest.ResourceVersion && latest.ResourceVersion != "" {
			// The API server found nothing to change: the difference is only in a field it
			// defaults and desiredStatefulSet does not spell out. Say so rather than report an
			// update on every sync.
			logger.Info("Statefulset update was a no-op; desiredStatefulSet misses a server default", "statefulset", klog.KObj(out), "fields", drift)
			noop = true
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("updating statefulset %s/%s: %w", pg.Namespace, want.Name, err)
	}
	if noop {
		return nil
	}
	logger.Info("Updated statefulset", "statefulset", klog.KObj(want), "fields", drift)
	if n := *want.Spec.Replicas; n != oldReplicas {
		c.recorder.Eventf(pg, corev1.EventTypeNormal, ReasonScaled, "Scaled statefulset %s from %d to %d replica(s)", want.Name, oldReplicas, n)
	}
	if len(drift) > 1 || drift[0] != "replicas" {
		c.recorder.Eventf(pg, corev1.EventTypeNormal, ReasonStatefulSetUpdated,
			"Updated statefulset %s (%s); pods pick template changes up when restarted", want.Name, strings.Join(drift, ", "))
	}
	return nil
}

// ownedStatefulSet returns cur with the fields the provisioner owns set from want:
//
//   - the labels it sets (other labels are kept);
//   - spec.replicas and spec.updateStrategy;
//   - the whole pod template (labels, annotations, containers, volumes, security contexts,
//     scheduling), except the ops-manager's template annotations, which keep cur's values.
//
// Fields the API server allocates or defaults outside the template (revisionHistoryLimit,
// persistentVolumeClaimRetentionPolicy), the immutable ones (selector, serviceName,
// volumeClaimTemplates) and status keep cur's values. desiredStatefulSet spells out every
// template field the API server would default, so a StatefulSet nobody touched compares equal.
func ownedStatefulSet(cur, want *appsv1.StatefulSet) *appsv1.StatefulSet {
	out := cur.DeepCopy()
	out.Labels = mergeMaps(out.Labels, want.Labels)
	if _, ok := out.Annotations[annotationLegacySpecHash]; ok {
		delete(out.Annotations, annotationLegacySpecHash)
	}
	out.Spec.Replicas = ptr.To(*want.Spec.Replicas)
	out.Spec.UpdateStrategy = *want.Spec.UpdateStrategy.DeepCopy()
	out.Spec.Template = *want.Spec.Template.DeepCopy()
	for _, key := range preservedTemplateAnnotations {
		if v, ok := cur.Spec.Template.Annotations[key]; ok {
			if out.Spec.Template.Annotations == nil {
				out.Spec.Template.Annotations = map[string]string{}
			}
			out.Spec.Template.Annotations[key] = v
		}
	}
	return out
}

// statefulSetDrift names the owned parts in which cur differs from out (ownedStatefulSet's
// result), for logs and events; empty when nothing drifted.
func statefulSetDrift(cur, out *appsv1.StatefulSet) []string {
	var drift []string
	diff := func(name string, a, b interface{}) {
		if !equality.Semantic.DeepEqual(a, b) {
			drift = append(drift, name)
		}
	}
	diff("labels", cur.Labels, out.Labels)
	diff("annotations", cur.Annotations, out.Annotations)
	diff("replicas", cur.Spec.Replicas, out.Spec.Replicas)
	diff("updateStrategy", cur.Spec.UpdateStrategy, out.Spec.UpdateStrategy)
	ct, ot := cur.Spec.Template, out.Spec.Template
	diff("template metadata", ct.ObjectMeta, ot.ObjectMeta)
	diff("init containers", ct.Spec.InitContainers, ot.Spec.InitContainers)
	diff("containers", ct.Spec.Containers, ot.Spec.Containers)
	diff("volumes", ct.Spec.Volumes, ot.Spec.Volumes)
	diff("pod securityContext", ct.Spec.SecurityContext, ot.Spec.SecurityContext)
	rest := func(t corev1.PodTemplateSpec) corev1.PodSpec {
		s := *t.Spec.DeepCopy()
		s.InitContainers, s.Containers, s.Volumes, s.SecurityContext = nil, nil, nil, nil
		return s
	}
	diff("pod spec", rest(ct), rest(ot))
	return drift
}

// overlay returns base with every field set in user replacing base's (a field is set when
// it is in user's JSON): a podTemplate securityContext of KubeDB's guides ({runAsUser: 999,
// fsGroup: 999}) keeps the restricted defaults it does not mention, instead of dropping them.
func overlay[T any](base, user *T) *T {
	b, err1 := json.Marshal(base)
	u, err2 := json.Marshal(user)
	var merged map[string]json.RawMessage
	var fields map[string]json.RawMessage
	if err1 != nil || err2 != nil || json.Unmarshal(b, &merged) != nil || json.Unmarshal(u, &fields) != nil {
		return user
	}
	for k, v := range fields {
		merged[k] = v
	}
	out := new(T)
	if data, err := json.Marshal(merged); err != nil || json.Unmarshal(data, out) != nil {
		return user
	}
	return out
}

// restrictedContainerSecurity meets Pod Security "restricted": no privilege escalation,
// no capabilities, and a read-only root (PostgreSQL writes only to its volumes).
func restrictedContainerSecurity() *corev1.SecurityContext {
	return &corev1.SecurityContext{
		AllowPrivilegeEscalation: ptr.To(false),
		Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
		ReadOnlyRootFilesystem:   ptr.To(true),
		RunAsNonRoot:             ptr.To(true),
	}
}

// Default requests of the database container when the podTemplate sets no resources: enough
// for the scheduler to spread databases rather than stack them on one node. No limits: a
// memory limit is the user's choice, since PostgreSQL killed for memory restarts in recovery.
var (
	DefaultCPURequest    = resource.MustParse("250m")
	DefaultMemoryRequest = resource.MustParse("256Mi")
)

func defaultResources() corev1.ResourceRequirements {
	return corev1.ResourceRequirements{Requests: corev1.ResourceList{
		corev1.ResourceCPU:    DefaultCPURequest,
		corev1.ResourceMemory: DefaultMemoryRequest,
	}}
}

// spreadAcrossNodes prefers nodes that run no other pod of pg, so a node's loss takes one
// member, not the primary and its standbys. Preferred, not required: a one-node cluster
// still runs every replica.
func spreadAcrossNodes(pg *kubedbv1.Postgres) *corev1.Affinity {
	return &corev1.Affinity{PodAntiAffinity: &corev1.PodAntiAffinity{
		PreferredDuringSchedulingIgnoredDuringExecution: []corev1.WeightedPodAffinityTerm{{
			Weight: 100,
			PodAffinityTerm: corev1.PodAffinityTerm{
				LabelSelector: &metav1.LabelSelector{MatchLabels: selectorLabels(pg)},
				TopologyKey:   corev1.LabelHostname,
			},
		}},
	}}
}

// readinessPeriodSeconds is the readiness probe's period (see the probe).
const readinessPeriodSeconds = 10

// agentProbe is an HTTP probe of the agent's path; the timeout is above the agent's own
// deadline for the server's answer.
func agentProbe(path string, periodSeconds, failureThreshold int32) *corev1.Probe {
	return &corev1.Probe{
		ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
			Path: path, Port: intstr.FromString(AgentPortName), Scheme: corev1.URISchemeHTTP,
		}},
		PeriodSeconds:    periodSeconds,
		TimeoutSeconds:   5,
		FailureThreshold: failureThreshold,
		SuccessThreshold: 1,
	}
}
