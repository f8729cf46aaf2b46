package provisioner

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	kubedbv1 "github.com/pgops/pgops/pkg/apis/kubedb/v1"
	"github.com/pgops/pgops/test/localcluster"
)

// TestDesiredObjectsMatchAPIServerDefaults stores the desired StatefulSet and Services in a
// real API server and requires that the drift check finds nothing to change in what comes
// back: desiredStatefulSet must spell out every template field the server defaults, or the
// provisioner would update every StatefulSet on every sync.
func TestDesiredObjectsMatchAPIServerDefaults(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a local control plane")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c, err := localcluster.Start(ctx, localcluster.Options{SkipFakeNode: true})
	require.NoError(t, err, "the control-plane binaries come from make tools")
	defer c.Stop()
	cl := c.Client()
	_, err = cl.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: testNS}}, metav1.CreateOptions{})
	require.NoError(t, err)
	for _, pg := range []*kubedbv1.Postgres{newPG("plain", withReplicas(3), func(pg *kubedbv1.Postgres) {
		pg.Spec.Storage = &corev1.PersistentVolumeClaimSpec{Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}}}
	}), newPG("rich", func(pg *kubedbv1.Postgres) {
		pg.Spec.StorageType = kubedbv1.StorageTypeEphemeral
		pg.Spec.ServiceTemplates = []kubedbv1.NamedServiceTemplateSpec{{Alias: kubedbv1.PrimaryServiceAlias, Spec: kubedbv1.ServiceSpec{Type: corev1.ServiceTypeNodePort}}}
		pg.Spec.PodTemplate = kubedbv1.PodTemplateSpec{
			Metadata: kubedbv1.PodTemplateMetadata{Labels: map[string]string{"team": "db"}, Annotations: map[string]string{"a": "b"}},
			Spec: kubedbv1.PodSpec{
				Containers: []kubedbv1.ContainerSpec{{
					Name:      "postgres",
					Resources: corev1.ResourceRequirements{Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("1024Mi"), corev1.ResourceCPU: resource.MustParse("1000m")}},
					Env: []corev1.EnvVar{{Name: "TZ", Value: "UTC"}, {Name: "NODE", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "spec.nodeName"}}},
						{Name: "MEM", ValueFrom: &corev1.EnvVarSource{ResourceFieldRef: &corev1.ResourceFieldSelector{Resource: "limits.memory"}}}},
					SecurityContext: &corev1.SecurityContext{AllowPrivilegeEscalation: ptr.To(false)},
				}},
				NodeSelector:       map[string]string{"disk": "ssd"},
				Tolerations:        []corev1.Toleration{{Key: "db", Operator: corev1.TolerationOpExists}},
				Affinity:           &corev1.Affinity{PodAntiAffinity: &corev1.PodAntiAffinity{PreferredDuringSchedulingIgnoredDuringExecution: []corev1.WeightedPodAffinityTerm{{Weight: 1, PodAffinityTerm: corev1.PodAffinityTerm{TopologyKey: "kubernetes.io/hostname"}}}}},
				SecurityContext:    &corev1.PodSecurityContext{RunAsUser: ptr.To[int64](70)},
				ServiceAccountName: "pg-sa",
			},
		}
	})} {
		want := desiredStatefulSet(pg, "postgres:16.4", DefaultAgentImage, pg.Name+"-auth")
		want.OwnerReferences = nil
		_, err := cl.AppsV1().StatefulSets(testNS).Create(ctx, want, metav1.CreateOptions{})
		require.NoError(t, err)
		live, err := cl.AppsV1().StatefulSets(testNS).Get(ctx, want.Name, metav1.GetOptions{})
		require.NoError(t, err)
		out := ownedStatefulSet(live, want)
		drift := statefulSetDrift(live, out)
		if len(drift) > 0 {
			t.Errorf("%s drift %v:\nlive tmpl %#v\n\nwant tmpl %#v", pg.Name, drift, live.Spec.Template, out.Spec.Template)
		}
		for _, svc := range []*corev1.Service{desiredRoleService(pg, kubedbv1.PrimaryServiceAlias), desiredGoverningService(pg), desiredRoleService(pg, kubedbv1.StandbyServiceAlias)} {
			svc.OwnerReferences = nil
			_, err := cl.CoreV1().Services(testNS).Create(ctx, svc, metav1.CreateOptions{})
			require.NoError(t, err)
			live, err := cl.CoreV1().Services(testNS).Get(ctx, svc.Name, metav1.GetOptions{})
			require.NoError(t, err)
			if m := mergeService(live, svc); !equality.Semantic.DeepEqual(m, live) {
				t.Errorf("service %s drift:\n%#v\n%#v", svc.Name, live.Spec, m.Spec)
			}
		}
	}
}
