package provisioner

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	kubedbv1 "github.com/pgops/pgops/pkg/apis/kubedb/v1"
)

// editStatefulSet applies a hand edit to StatefulSet "x" and refreshes the caches.
func editStatefulSet(t *testing.T, f *fixture, edit func(*appsv1.StatefulSet)) {
	t.Helper()
	sts := f.statefulSet("x")
	edit(sts)
	_, err := f.kube.AppsV1().StatefulSets(testNS).Update(f.ctx, sts, metav1.UpdateOptions{FieldManager: "kubectl-edit"})
	require.NoError(t, err)
	f.refresh()
}

// requireQuiet syncs twice more and requires that neither sync writes a workload: no hot loop.
func requireQuiet(t *testing.T, f *fixture) {
	t.Helper()
	for i := 0; i < 2; i++ {
		require.NoError(t, f.sync("x"))
		assert.Empty(t, f.kubeWrites(), "sync %d after convergence writes nothing", i+1)
		f.refresh()
	}
}

func TestStatefulSetNoWritesWithoutDrift(t *testing.T) {
	pg := newPG("x", withReplicas(3), func(pg *kubedbv1.Postgres) {
		pg.Spec.PodTemplate.Metadata.Annotations = map[string]string{"a": "b"}
		pg.Spec.PodTemplate.Spec.ServiceAccountName = "pg-sa"
		pg.Spec.PodTemplate.Spec.Containers = []kubedbv1.ContainerSpec{{Name: "postgres",
			Env: []corev1.EnvVar{{Name: "NODE", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "spec.nodeName"}}}}}}
	})
	f := provisioned(t, pg)
	requireQuiet(t, f)

	// The ops-manager's rotation marker is not drift either.
	editStatefulSet(t, f, func(s *appsv1.StatefulSet) {
		s.Spec.Template.Annotations[AnnotationAuthRotation] = "ops-request-uid"
	})
	requireQuiet(t, f)
	assert.Equal(t, "ops-request-uid", f.statefulSet("x").Spec.Template.Annotations[AnnotationAuthRotation])
}

func TestStatefulSetHandEditsReverted(t *testing.T) {
	cases := map[string]struct {
		edit  func(*appsv1.StatefulSet)
		check func(*testing.T, *appsv1.StatefulSet)
	}{
		"replicas": {
			edit:  func(s *appsv1.StatefulSet) { s.Spec.Replicas = ptr.To[int32](5) },
			check: func(t *testing.T, s *appsv1.StatefulSet) { assert.Equal(t, int32(2), *s.Spec.Replicas) },
		},
		"image": {
			edit: func(s *appsv1.StatefulSet) { s.Spec.Template.Spec.Containers[0].Image = "evil:latest" },
			check: func(t *testing.T, s *appsv1.StatefulSet) {
				assert.Equal(t, "docker.io/library/postgres:16.4", s.Spec.Template.Spec.Containers[0].Image)
			},
		},
		"env value changed and a variable added": {
			edit: func(s *appsv1.StatefulSet) {
				c := &s.Spec.Template.Spec.Containers[0]
				for i := range c.Env {
					if c.Env[i].Name == "STANDBY_MODE" {
						c.Env[i].Value = "Warm"
					}
				}
				c.Env = append(c.Env, corev1.EnvVar{Name: "EXTRA", Value: "1"})
			},
			check: func(t *testing.T, s *appsv1.StatefulSet) {
				env := envByName(s.Spec.Template.Spec.Containers[0].Env)
				assert.Equal(t, "Hot", env["STANDBY_MODE"].Value)
				assert.NotContains(t, env, "EXTRA")
			},
		},
		"credential reference": {
			edit: func(s *appsv1.StatefulSet) {
				for i, e := range s.Spec.Template.Spec.Containers[0].Env {
					if e.Name == "POSTGRES_PASSWORD" {
						s.Spec.Template.Spec.Containers[0].Env[i].ValueFrom = nil
						s.Spec.Template.Spec.Containers[0].Env[i].Value = "literal"
					}
				}
			},
			check: func(t *testing.T, s *appsv1.StatefulSet) {
				e := envByName(s.Spec.Template.Spec.Containers[0].Env)["POSTGRES_PASSWORD"]
				assert.Empty(t, e.Value)
				require.NotNil(t, e.ValueFrom)
				assert.Equal(t, "x.pgops-credential", e.ValueFrom.SecretKeyRef.Name)
			},
		},
		"resources, probe and command": {
			edit: func(s *appsv1.StatefulSet) {
				c := &s.Spec.Template.Spec.Containers[0]
				c.Resources.Limits = corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("64Mi")}
				c.ReadinessProbe = nil
				c.Command = []string{"sleep", "infinity"}
			},
			check: func(t *testing.T, s *appsv1.StatefulSet) {
				c := s.Spec.Template.Spec.Containers[0]
				assert.Empty(t, c.Resources.Limits)
				assert.NotNil(t, c.ReadinessProbe)
				assert.Equal(t, []string{"/pgops/bin/pgops-agent", "run"}, c.Command)
			},
		},
		"volumes and mounts": {
			edit: func(s *appsv1.StatefulSet) {
				s.Spec.Template.Spec.Volumes = nil
				s.Spec.Template.Spec.Containers[0].VolumeMounts = s.Spec.Template.Spec.Containers[0].VolumeMounts[:1]
			},
			check: func(t *testing.T, s *appsv1.StatefulSet) {
				assert.Len(t, s.Spec.Template.Spec.Volumes, 3)
				assert.Len(t, s.Spec.Template.Spec.Containers[0].VolumeMounts, 4)
			},
		},
		"security context, update strategy, template labels and a sidecar": {
			edit: func(s *appsv1.StatefulSet) {
				s.Spec.Template.Spec.SecurityContext.RunAsUser = ptr.To[int64](0)
				s.Spec.UpdateStrategy = appsv1.StatefulSetUpdateStrategy{Type: appsv1.RollingUpdateStatefulSetStrategyType}
				s.Spec.Template.Labels["hand"] = "edit"
				s.Spec.Template.Spec.Containers = append(s.Spec.Template.Spec.Containers, corev1.Container{Name: "sidecar", Image: "busybox"})
			},
			check: func(t *testing.T, s *appsv1.StatefulSet) {
				assert.Equal(t, int64(PostgresUID), *s.Spec.Template.Spec.SecurityContext.RunAsUser)
				assert.Equal(t, appsv1.OnDeleteStatefulSetStrategyType, s.Spec.UpdateStrategy.Type)
				assert.NotContains(t, s.Spec.Template.Labels, "hand")
				assert.Len(t, s.Spec.Template.Spec.Containers, 1)
			},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			f := provisioned(t, newPG("x", withReplicas(2)))
			editStatefulSet(t, f, func(s *appsv1.StatefulSet) {
				s.Spec.Template.Annotations = map[string]string{AnnotationAuthRotation: "ops-request-uid"}
				s.Labels["unrelated"] = "kept"
				tc.edit(s)
			})
			require.NoError(t, f.sync("x"))
			assert.Equal(t, []string{"update statefulsets x"}, f.kubeWrites())
			sts := f.statefulSet("x")
			tc.check(t, sts)
			assert.Equal(t, "ops-request-uid", sts.Spec.Template.Annotations[AnnotationAuthRotation], "the ops-manager's marker stays")
			assert.Equal(t, "kept", sts.Labels["unrelated"], "labels the provisioner does not set stay")
			f.refresh()
			requireQuiet(t, f)
		})
	}
}

func TestStatefulSetHandEditKeptWhilePausedRevertedAfterResume(t *testing.T) {
	f := provisioned(t, newPG("x", withReplicas(2)))
	setPaused(t, f, metav1.ConditionUnknown, false)
	f.mustSync("x") // acknowledge: Paused=True
	f.refresh()
	require.Equal(t, metav1.ConditionTrue, condition(f.postgres("x"), kubedbv1.ConditionPaused).Status)

	editStatefulSet(t, f, func(s *appsv1.StatefulSet) {
		s.Spec.Replicas = ptr.To[int32](1)
		s.Spec.Template.Spec.Containers[0].Image = "hand:edit"
	})
	for i := 0; i < 2; i++ {
		require.NoError(t, f.sync("x"))
		assert.Empty(t, f.kubeWrites(), "no workload writes while paused")
		f.refresh()
	}
	sts := f.statefulSet("x")
	assert.Equal(t, int32(1), *sts.Spec.Replicas)
	assert.Equal(t, "hand:edit", sts.Spec.Template.Spec.Containers[0].Image)

	setPaused(t, f, "", true)
	require.NoError(t, f.sync("x"))
	assert.Contains(t, f.kubeWrites(), "update statefulsets x")
	sts = f.statefulSet("x")
	assert.Equal(t, int32(2), *sts.Spec.Replicas)
	assert.Equal(t, "docker.io/library/postgres:16.4", sts.Spec.Template.Spec.Containers[0].Image)
	assert.True(t, f.hasEvent(corev1.EventTypeNormal, ReasonScaled, "from 1 to 2"))
	assert.True(t, f.hasEvent(corev1.EventTypeNormal, ReasonStatefulSetUpdated, "containers"))
	f.refresh()
	requireQuiet(t, f)
}

func TestLegacySpecHashAnnotationRemoved(t *testing.T) {
	f := provisioned(t, newPG("x"))
	editStatefulSet(t, f, func(s *appsv1.StatefulSet) {
		s.Annotations = map[string]string{annotationLegacySpecHash: "0123", "other": "kept"}
	})
	require.NoError(t, f.sync("x"))
	assert.Equal(t, []string{"update statefulsets x"}, f.kubeWrites())
	assert.Equal(t, map[string]string{"other": "kept"}, f.statefulSet("x").Annotations)
	f.refresh()
	requireQuiet(t, f)
}

func TestServiceHandEditsReverted(t *testing.T) {
	f := provisioned(t, newPG("x", withReplicas(2)))
	requireQuiet(t, f)

	svc := f.service("x")
	svc.Spec.Selector[LabelRole] = RoleStandby
	svc.Spec.Ports[0].Port = 6543
	_, err := f.kube.CoreV1().Services(testNS).Update(f.ctx, svc, metav1.UpdateOptions{})
	require.NoError(t, err)
	f.refresh()

	require.NoError(t, f.sync("x"))
	assert.ElementsMatch(t, []string{"update services x"}, f.kubeWrites())
	svc = f.service("x")
	assert.Equal(t, "x-0", svc.Spec.Selector[appsv1.StatefulSetPodNameLabel])
	assert.Equal(t, int32(PostgresPort), svc.Spec.Ports[0].Port)
	f.refresh()
	requireQuiet(t, f)
}
