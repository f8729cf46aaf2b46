package provisioner

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"k8s.io/klog/v2"
	"k8s.io/utils/ptr"

	kubedbv1 "github.com/pgops/pgops/pkg/apis/kubedb/v1"
)

// preservedTemplateAnnotations are pod template annotations the ops-manager owns: an update
// by the provisioner keeps them, so pods are not restarted twice.
var preservedTemplateAnnotations = []string{AnnotationAuthRotation, AnnotationAuthRotatedAt}

// PostgresUID is the uid and gid of the postgres user in the official images.
const PostgresUID = 999

// reservedEnv are the variables the provisioner sets; podTemplate env cannot override them.
var reservedEnv = map[string]bool{
	"POSTGRES_USER": true, "POSTGRES_PASSWORD": true, "PGDATA": true, "POD_NAME": true,
	"POD_IP": true, "PRIMARY_HOST": true, "STANDBY_MODE": true,
}

// desiredStatefulSet builds the StatefulSet for pg running image, with credentials from the
// Secret secretName.
func desiredStatefulSet(pg *kubedbv1.Postgres, image, secretName string) *appsv1.StatefulSet {
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
		{Name: "STANDBY_MODE", Value: string(standbyMode(pg))},
	}
	container := corev1.Container{
		Name:            ContainerName,
		Image:           image,
		ImagePullPolicy: corev1.PullIfNotPresent,
		Command:         []string{"bash", ScriptsMount + "/" + ScriptsKey},
		Ports: []corev1.ContainerPort{{
			Name: "db", ContainerPort: PostgresPort, Protocol: corev1.ProtocolTCP,
		}},
		Env: env,
		VolumeMounts: []corev1.VolumeMount{
			{Name: DataVolume, MountPath: DataMount},
			{Name: ScriptsVolume, MountPath: ScriptsMount, ReadOnly: true},
		},
		ReadinessProbe: &corev1.Probe{
			ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{
				Command: []string{"sh", "-c", readinessScript(standbyMode(pg))},
			}},
			InitialDelaySeconds: 2,
			PeriodSeconds:       5,
			TimeoutSeconds:      5,
			FailureThreshold:    3,
			SuccessThreshold:    1,
		},
		TerminationMessagePath:   corev1.TerminationMessagePathDefault,
		TerminationMessagePolicy: corev1.TerminationMessageReadFile,
	}
	for _, cs := range tmpl.Spec.Containers {
		if cs.Name != ContainerName {
			continue
		}
		container.Resources = *cs.Resources.DeepCopy()
		for _, e := range cs.Env {
			if !reservedEnv[e.Name] {
				container.Env = append(container.Env, *e.DeepCopy())
			}
		}
		if cs.SecurityContext != nil {
			container.SecurityContext = cs.SecurityContext.DeepCopy()
		}
	}

	podSecurity := &corev1.PodSecurityContext{
		RunAsUser:    ptr.To[int64](PostgresUID),
		RunAsGroup:   ptr.To[int64](PostgresUID),
		FSGroup:      ptr.To[int64](PostgresUID),
		RunAsNonRoot: ptr.To(true),
	}
	if tmpl.Spec.SecurityContext != nil {
		podSecurity = tmpl.Spec.SecurityContext.DeepCopy()
	}

	dataVolume := corev1.Volume{Name: DataVolume, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}
	volumes := []corev1.Volume{{
		Name: ScriptsVolume,
		VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
			LocalObjectReference: corev1.LocalObjectReference{Name: scriptsConfigMapName(pg)},
			DefaultMode:          ptr.To[int32](0o555),
		}},
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
	var affinity *corev1.Affinity
	if tmpl.Spec.Affinity != nil {
		affinity = tmpl.Spec.Affinity.DeepCopy()
	}

	return &appsv1.StatefulSet{
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
}

// specHash fingerprints the part of the desired spec the provisioner updates.
func specHash(sts *appsv1.StatefulSet) string {
	b, _ := json.Marshal(struct {
		Replicas       *int32
		Template       corev1.PodTemplateSpec
		UpdateStrategy appsv1.StatefulSetUpdateStrategy
	}{sts.Spec.Replicas, sts.Spec.Template, sts.Spec.UpdateStrategy})
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}

// ensureStatefulSet creates the StatefulSet or updates it when the desired spec changed. An
// update keeps the ops-manager's template annotations (preservedTemplateAnnotations). With
// updateStrategy OnDelete, running pods pick the change up only when the ops-manager (or a
// user) restarts them.
func (c *Controller) ensureStatefulSet(ctx context.Context, pg *kubedbv1.Postgres, image, secretName string) error {
	want := desiredStatefulSet(pg, image, secretName)
	hash := specHash(want)
	want.Annotations = map[string]string{AnnotationTemplateHash: hash}

	cur, err := c.statefulSetLister.StatefulSets(pg.Namespace).Get(want.Name)
	if apierrors.IsNotFound(err) {
		_, err = c.kubeClient.AppsV1().StatefulSets(pg.Namespace).Create(ctx, want, metav1.CreateOptions{FieldManager: FieldManager})
		if err == nil {
			klog.FromContext(ctx).Info("Created statefulset", "statefulset", klog.KObj(want))
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
	if cur.Annotations[AnnotationTemplateHash] == hash && labelsContain(cur.Labels, want.Labels) {
		return nil
	}
	var oldReplicas int32
	err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
		latest, err := c.kubeClient.AppsV1().StatefulSets(pg.Namespace).Get(ctx, want.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		out := latest.DeepCopy()
		oldReplicas = ptr.Deref(latest.Spec.Replicas, 1)
		out.Labels = mergeMaps(out.Labels, want.Labels)
		out.Annotations = mergeMaps(out.Annotations, want.Annotations)
		out.Spec.Replicas = want.Spec.Replicas
		out.Spec.UpdateStrategy = want.Spec.UpdateStrategy
		out.Spec.Template = *want.Spec.Template.DeepCopy()
		for _, key := range preservedTemplateAnnotations {
			if v, ok := latest.Spec.Template.Annotations[key]; ok {
				if out.Spec.Template.Annotations == nil {
					out.Spec.Template.Annotations = map[string]string{}
				}
				out.Spec.Template.Annotations[key] = v
			}
		}
		_, err = c.kubeClient.AppsV1().StatefulSets(pg.Namespace).Update(ctx, out, metav1.UpdateOptions{FieldManager: FieldManager})
		return err
	})
	if err != nil {
		return fmt.Errorf("updating statefulset %s/%s: %w", pg.Namespace, want.Name, err)
	}
	if n := *want.Spec.Replicas; n != oldReplicas {
		c.recorder.Eventf(pg, corev1.EventTypeNormal, ReasonScaled, "Scaled statefulset %s from %d to %d replica(s)", want.Name, oldReplicas, n)
	} else {
		c.recorder.Eventf(pg, corev1.EventTypeNormal, ReasonStatefulSetUpdated, "Updated statefulset %s; pods pick the change up when restarted", want.Name)
	}
	return nil
}

// readinessScript is the readiness probe: pg_isready against the pod's own address. A warm
// standby rejects connections by design (pg_isready exits 1), so in Warm mode a standby that
// answers is ready too; otherwise OrderedReady would never create the next standby.
func readinessScript(mode kubedbv1.StandbyMode) string {
	if mode == kubedbv1.StandbyModeWarm {
		return `pg_isready -h "$POD_IP" -p 5432; rc=$?; [ "$rc" -eq 0 ] || { [ "$rc" -eq 1 ] && [ -f "$PGDATA/standby.signal" ]; }`
	}
	return `pg_isready -h "$POD_IP" -p 5432`
}
