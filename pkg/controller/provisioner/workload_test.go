package provisioner

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"

	kubedbv1 "github.com/pgops/pgops/pkg/apis/kubedb/v1"
	"github.com/pgops/pgops/pkg/credential"
	"github.com/pgops/pgops/pkg/dbaddr"
	"github.com/pgops/pgops/pkg/pgtest"
)

func TestStatefulSetDefaults(t *testing.T) {
	pg := newPG("x", withReplicas(3), withAuthSecret("x-auth"), func(pg *kubedbv1.Postgres) {
		pg.Spec.StandbyMode = ptr.To(kubedbv1.StandbyModeWarm)
		pg.Spec.Storage = &corev1.PersistentVolumeClaimSpec{
			StorageClassName: ptr.To("fast"),
			Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{
				corev1.ResourceStorage: resource.MustParse("2Gi")}},
		}
	})
	sts := desiredStatefulSet(pg, "img:16.4", DefaultAgentImage, "x-auth")
	assert.Equal(t, "x", sts.Name)
	assert.Equal(t, int32(3), *sts.Spec.Replicas)
	assert.Equal(t, "x-pods", sts.Spec.ServiceName)
	assert.Equal(t, appsv1.OrderedReadyPodManagement, sts.Spec.PodManagementPolicy)
	assert.Equal(t, appsv1.OnDeleteStatefulSetStrategyType, sts.Spec.UpdateStrategy.Type)
	assert.Equal(t, selectorLabels(pg), sts.Spec.Selector.MatchLabels)
	assert.True(t, isOwnedBy(sts, pg))

	spec := sts.Spec.Template.Spec
	sc := spec.SecurityContext
	assert.Equal(t, int64(999), *sc.RunAsUser)
	assert.Equal(t, int64(999), *sc.FSGroup)
	assert.True(t, *sc.RunAsNonRoot)
	require.Len(t, spec.Containers, 1)
	c := spec.Containers[0]
	assert.Equal(t, "postgres", c.Name)
	assert.Equal(t, "img:16.4", c.Image)
	assert.Equal(t, []string{"/pgops/bin/pgops-agent", "run"}, c.Command)
	require.NotNil(t, c.ReadinessProbe.HTTPGet, "the agent answers; a Warm standby is ready when it answers (pkg/agent)")
	env := envByName(c.Env)
	assert.Equal(t, "/var/pv/data", env["PGDATA"].Value)
	assert.Equal(t, "metadata.name", env["POD_NAME"].ValueFrom.FieldRef.FieldPath)
	assert.Equal(t, "status.podIP", env["POD_IP"].ValueFrom.FieldRef.FieldPath)
	assert.Equal(t, "$(X_SERVICE_HOST)", env["PRIMARY_HOST"].Value)
	assert.Equal(t, "$(X_SERVICE_PORT)", env["PRIMARY_PORT"].Value, "a serviceTemplate may move the primary Service off 5432")
	assert.Equal(t, "Warm", env["STANDBY_MODE"].Value)
	for _, e := range c.Env {
		if e.Name == "POSTGRES_USER" || e.Name == "POSTGRES_PASSWORD" {
			assert.Empty(t, e.Value, "credentials come from secretKeyRef only")
			assert.Equal(t, "x-auth", e.ValueFrom.SecretKeyRef.Name)
		}
	}
	mounts := map[string]string{}
	for _, m := range c.VolumeMounts {
		mounts[m.Name] = m.MountPath
	}
	assert.Equal(t, map[string]string{"data": "/var/pv", "pgops-agent": "/pgops/bin", "run": "/var/run/postgresql", "tmp": "/tmp"}, mounts)
	require.Len(t, sts.Spec.VolumeClaimTemplates, 1)
	claim := sts.Spec.VolumeClaimTemplates[0]
	assert.Equal(t, "data", claim.Name)
	assert.Equal(t, "fast", *claim.Spec.StorageClassName)
	assert.Equal(t, resource.MustParse("2Gi"), claim.Spec.Resources.Requests[corev1.ResourceStorage])
	assert.Equal(t, []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}, claim.Spec.AccessModes)
	for _, v := range spec.Volumes {
		assert.NotEqual(t, "data", v.Name, "durable data comes from the claim template")
		assert.Nil(t, v.ConfigMap, "no entrypoint ConfigMap")
	}
}

func TestStatefulSetEphemeral(t *testing.T) {
	pg := newPG("x", func(pg *kubedbv1.Postgres) { pg.Spec.StorageType = kubedbv1.StorageTypeEphemeral })
	sts := desiredStatefulSet(pg, "img", DefaultAgentImage, "s")
	assert.Empty(t, sts.Spec.VolumeClaimTemplates)
	found := false
	for _, v := range sts.Spec.Template.Spec.Volumes {
		if v.Name == "data" {
			found = true
			assert.NotNil(t, v.EmptyDir)
		}
	}
	assert.True(t, found)
}

func TestStatefulSetPodTemplateApplied(t *testing.T) {
	pg := newPG("x", func(pg *kubedbv1.Postgres) {
		pg.Spec.PodTemplate = kubedbv1.PodTemplateSpec{
			Metadata: kubedbv1.PodTemplateMetadata{
				Labels:      map[string]string{"team": "db", LabelInstance: "hijack"},
				Annotations: map[string]string{"prometheus.io/scrape": "true"},
			},
			Spec: kubedbv1.PodSpec{
				Containers: []kubedbv1.ContainerSpec{{
					Name: "postgres",
					Resources: corev1.ResourceRequirements{
						Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("1Gi")},
					},
					Env: []corev1.EnvVar{
						{Name: "TZ", Value: "UTC"},
						{Name: "POSTGRES_PASSWORD", Value: "literal"}, // cannot override
					},
					SecurityContext: &corev1.SecurityContext{AllowPrivilegeEscalation: ptr.To(false)},
				}, {Name: "other", Env: []corev1.EnvVar{{Name: "IGNORED", Value: "1"}}}},
				NodeSelector:       map[string]string{"disk": "ssd"},
				Tolerations:        []corev1.Toleration{{Key: "db", Operator: corev1.TolerationOpExists}},
				Affinity:           &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{}},
				SecurityContext:    &corev1.PodSecurityContext{RunAsUser: ptr.To[int64](70), FSGroup: ptr.To[int64](70)},
				ServiceAccountName: "pg-sa",
				ImagePullSecrets:   []corev1.LocalObjectReference{{Name: "regcred"}},
			},
		}
	})
	sts := desiredStatefulSet(pg, "img", DefaultAgentImage, "s")
	tmpl := sts.Spec.Template
	assert.Equal(t, "db", tmpl.Labels["team"])
	assert.Equal(t, "x", tmpl.Labels[LabelInstance], "selector labels win")
	assert.Equal(t, "true", tmpl.Annotations["prometheus.io/scrape"])
	spec := tmpl.Spec
	c := spec.Containers[0]
	assert.Equal(t, resource.MustParse("1Gi"), c.Resources.Limits[corev1.ResourceMemory])
	env := envByName(c.Env)
	assert.Equal(t, "UTC", env["TZ"].Value)
	assert.NotContains(t, env, "IGNORED")
	assert.Empty(t, env["POSTGRES_PASSWORD"].Value)
	assert.NotNil(t, env["POSTGRES_PASSWORD"].ValueFrom.SecretKeyRef)
	assert.False(t, *c.SecurityContext.AllowPrivilegeEscalation)
	assert.Equal(t, map[string]string{"disk": "ssd"}, spec.NodeSelector)
	assert.Equal(t, "db", spec.Tolerations[0].Key)
	assert.NotNil(t, spec.Affinity.NodeAffinity)
	assert.Equal(t, int64(70), *spec.SecurityContext.RunAsUser, "the user's pod securityContext overrides the fields it sets")
	assert.Equal(t, int64(70), *spec.SecurityContext.FSGroup)
	assert.Equal(t, int64(999), *spec.SecurityContext.RunAsGroup, "and keeps the defaults it does not mention")
	assert.True(t, *spec.SecurityContext.RunAsNonRoot)
	assert.Equal(t, corev1.SeccompProfileTypeRuntimeDefault, spec.SecurityContext.SeccompProfile.Type)
	assert.Equal(t, []corev1.Capability{"ALL"}, c.SecurityContext.Capabilities.Drop, "the container's too")
	assert.True(t, *c.SecurityContext.ReadOnlyRootFilesystem)
	assert.Equal(t, "pg-sa", spec.ServiceAccountName)
	assert.Equal(t, "regcred", spec.ImagePullSecrets[0].Name)
}

func TestStatefulSetUpdatePreservesAuthRotation(t *testing.T) {
	f := provisioned(t, newPG("x"))

	// The ops-manager marks the template.
	sts := f.statefulSet("x")
	sts.Spec.Template.Annotations = map[string]string{AnnotationAuthRotation: "ops-request-uid"}
	_, err := f.kube.AppsV1().StatefulSets(testNS).Update(f.ctx, sts, metav1.UpdateOptions{})
	require.NoError(t, err)
	f.refresh()
	require.NoError(t, f.sync("x"))
	assert.NotContains(t, f.kubeWrites(), "update statefulsets x", "an ops-manager annotation alone triggers no update")

	// A spec change updates the template and keeps the annotation.
	pg := f.postgres("x")
	pg.Spec.PodTemplate.Metadata.Annotations = map[string]string{"a": "b"}
	pg.Spec.Version = "16.5"
	_, err = f.pgops.KubedbV1().Postgreses(testNS).Update(f.ctx, pg, metav1.UpdateOptions{})
	require.NoError(t, err)
	f.refresh()
	require.NoError(t, f.sync("x"))
	assert.Contains(t, f.kubeWrites(), "update statefulsets x")
	sts = f.statefulSet("x")
	assert.Equal(t, "ops-request-uid", sts.Spec.Template.Annotations[AnnotationAuthRotation])
	assert.Equal(t, "b", sts.Spec.Template.Annotations["a"])
	assert.Equal(t, "docker.io/library/postgres:16.5", sts.Spec.Template.Spec.Containers[0].Image)
	assert.True(t, f.hasEvent("Normal", ReasonStatefulSetUpdated, ""))
}

func TestServiceTemplatesApplied(t *testing.T) {
	pg := newPG("x", withReplicas(2), func(pg *kubedbv1.Postgres) {
		pg.Spec.ServiceTemplates = []kubedbv1.NamedServiceTemplateSpec{{
			Alias:    kubedbv1.PrimaryServiceAlias,
			Metadata: kubedbv1.PodTemplateMetadata{Labels: map[string]string{"expose": "yes"}, Annotations: map[string]string{"lb/kind": "nlb"}},
			Spec: kubedbv1.ServiceSpec{
				Type:                     corev1.ServiceTypeLoadBalancer,
				Ports:                    []kubedbv1.ServicePort{{Name: "pg", Port: 6432, NodePort: 30432}},
				ExternalTrafficPolicy:    corev1.ServiceExternalTrafficPolicyLocal,
				LoadBalancerSourceRanges: []string{"10.0.0.0/8"},
			},
		}, {
			Alias: kubedbv1.StandbyServiceAlias,
			Spec:  kubedbv1.ServiceSpec{Type: corev1.ServiceTypeNodePort},
		}}
	})
	f := newFixture(t, []*kubedbv1.Postgres{pg})
	f.mustSync("x")
	p := f.service("x")
	assert.Equal(t, corev1.ServiceTypeLoadBalancer, p.Spec.Type)
	assert.Equal(t, "yes", p.Labels["expose"])
	assert.Equal(t, "x", p.Labels[LabelInstance])
	assert.Equal(t, "nlb", p.Annotations["lb/kind"])
	require.Len(t, p.Spec.Ports, 1)
	assert.Equal(t, corev1.ServicePort{Name: "pg", Port: 6432, NodePort: 30432, TargetPort: intstr.FromInt32(5432), Protocol: corev1.ProtocolTCP}, p.Spec.Ports[0])
	assert.Equal(t, corev1.ServiceExternalTrafficPolicyLocal, p.Spec.ExternalTrafficPolicy)
	assert.Equal(t, []string{"10.0.0.0/8"}, p.Spec.LoadBalancerSourceRanges)
	assert.Equal(t, "x-0", p.Spec.Selector[appsv1.StatefulSetPodNameLabel])
	s := f.service("x-standby")
	assert.Equal(t, corev1.ServiceTypeNodePort, s.Spec.Type)
	assert.Equal(t, "standby", s.Spec.Ports[0].Name)
	g := f.service("x-pods")
	assert.Equal(t, corev1.ClusterIPNone, g.Spec.ClusterIP)
	assert.NotContains(t, g.Spec.Selector, LabelRole)

	// Switching the primary back to ClusterIP drops node ports and the traffic policy, and
	// keeps the allocated cluster IP.
	p.Spec.ClusterIP = "10.96.0.10"
	_, err := f.kube.CoreV1().Services(testNS).Update(f.ctx, p, metav1.UpdateOptions{})
	require.NoError(t, err)
	cur := f.postgres("x")
	cur.Spec.ServiceTemplates = nil
	_, err = f.pgops.KubedbV1().Postgreses(testNS).Update(f.ctx, cur, metav1.UpdateOptions{})
	require.NoError(t, err)
	f.refresh()
	f.mustSync("x")
	p = f.service("x")
	assert.Equal(t, corev1.ServiceTypeClusterIP, p.Spec.Type)
	assert.Equal(t, "10.96.0.10", p.Spec.ClusterIP)
	assert.Equal(t, int32(0), p.Spec.Ports[0].NodePort)
	assert.Equal(t, int32(5432), p.Spec.Ports[0].Port)
	assert.Empty(t, p.Spec.ExternalTrafficPolicy)
}

func TestImageMapper(t *testing.T) {
	m := DefaultImageMapper()
	for v, want := range map[string]string{
		"16":   "docker.io/library/postgres:16",
		"16.4": "docker.io/library/postgres:16.4",
		"13":   "docker.io/library/postgres:13",
		"18.1": "docker.io/library/postgres:18.1",
		"17.0": "docker.io/library/postgres:17.0",
	} {
		got, err := m.Image(v)
		require.NoError(t, err, v)
		assert.Equal(t, want, got)
	}
	for _, v := range []string{"", "11", "11.22", "12", "12.20", "19", "99.1", "16.4.1", "16-alpine", "v16", "latest", "16.", ".4"} {
		_, err := m.Image(v)
		var ve *VersionError
		assert.ErrorAs(t, err, &ve, v)
	}

	m, err := NewImageMapper("registry.example.com/pg", "{{.Major}}-bookworm")
	require.NoError(t, err)
	got, err := m.Image("15.8")
	require.NoError(t, err)
	assert.Equal(t, "registry.example.com/pg:15-bookworm", got)

	_, err = NewImageMapper("", "{{.Version}}")
	assert.Error(t, err)
	_, err = NewImageMapper("r", "{{.Nope}}")
	assert.Error(t, err)
	_, err = NewImageMapper("r", "{{")
	assert.Error(t, err)
}

func TestHandleObjectMapsOwnedObjectsToPostgres(t *testing.T) {
	pg := newPG("x", withFinalizer)
	f := newFixture(t, []*kubedbv1.Postgres{pg})
	sts := desiredStatefulSet(pg, "img", DefaultAgentImage, "s")
	sts.UID = "sts-uid"
	require.NoError(t, f.kubeInf.Apps().V1().StatefulSets().Informer().GetIndexer().Add(sts))

	drain := func() []cache.ObjectName {
		var out []cache.ObjectName
		for f.c.queue.Len() > 0 {
			item, _ := f.c.queue.Get()
			out = append(out, item)
			f.c.queue.Done(item)
		}
		return out
	}
	want := []cache.ObjectName{{Namespace: testNS, Name: "x"}}

	f.c.handleObject(desiredRoleService(pg, kubedbv1.PrimaryServiceAlias))
	assert.Equal(t, want, drain())
	f.c.handleObject(readyPod(pg, 1, true)) // pod → StatefulSet → Postgres
	assert.Equal(t, want, drain())
	f.c.handleObject(cache.DeletedFinalStateUnknown{Key: "demo/x-scripts", Obj: legacyConfigMap(pg)})
	assert.Equal(t, want, drain())

	stranger := legacyConfigMap(pg)
	stranger.OwnerReferences[0].UID = "another-uid" // an earlier Postgres of the same name
	f.c.handleObject(stranger)
	unowned := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "s", Namespace: testNS}}
	f.c.handleObject(unowned)
	f.c.handleObject("garbage")
	assert.Empty(t, drain())

	f.c.enqueuePostgres(cache.DeletedFinalStateUnknown{Key: "demo/x", Obj: pg})
	assert.Equal(t, want, drain())
}

// TestSQLHealthChecker checks the production HealthChecker against a real server standing in
// for the primary Service's ClusterIP.
func TestSQLHealthChecker(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a real PostgreSQL server")
	}
	srv := pgtest.Start(t)
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "x", Namespace: testNS},
		Spec:       corev1.ServiceSpec{ClusterIP: srv.Host, Ports: []corev1.ServicePort{{Name: "primary", Port: int32(srv.Port)}}},
	}
	h := &SQLHealthChecker{HostMode: dbaddr.ModeClusterIP, Timeout: 5 * time.Second}
	ctx := context.Background()
	require.NoError(t, h.CheckPrimary(ctx, PrimaryEndpoint{Service: svc, User: srv.SuperUser, Password: srv.SuperPassword}))

	err := h.CheckPrimary(ctx, PrimaryEndpoint{Service: svc, User: srv.SuperUser, Password: "not-it"})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "rejected the credential")
	assert.NotContains(t, err.Error(), "not-it")
	assert.Equal(t, credential.ClassAuth, credential.Classify(err), "a refused credential is told apart from a primary that is down")

	srv.Stop()
	start := time.Now()
	err = h.CheckPrimary(ctx, PrimaryEndpoint{Service: svc, User: srv.SuperUser, Password: srv.SuperPassword})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "unreachable")
	assert.Less(t, time.Since(start), 10*time.Second)

	headless := svc.DeepCopy()
	headless.Spec.ClusterIP = corev1.ClusterIPNone
	assert.Error(t, h.CheckPrimary(ctx, PrimaryEndpoint{Service: headless, User: "u", Password: "p"}))
}
