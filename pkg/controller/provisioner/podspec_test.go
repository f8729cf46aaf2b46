package provisioner

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	psaapi "k8s.io/pod-security-admission/api"
	psapolicy "k8s.io/pod-security-admission/policy"
	"k8s.io/utils/ptr"

	kubedbv1 "github.com/pgops/pgops/pkg/apis/kubedb/v1"
)

// restrictedProblems runs Pod Security admission's own "restricted" checks (the code the
// API server's PodSecurity admission runs) on a pod made from the template.
func restrictedProblems(t *testing.T, tmpl corev1.PodTemplateSpec) string {
	t.Helper()
	eval, err := psapolicy.NewEvaluator(psapolicy.DefaultChecks(), nil)
	require.NoError(t, err)
	result := psapolicy.AggregateCheckResults(eval.EvaluatePod(
		psaapi.LevelVersion{Level: psaapi.LevelRestricted, Version: psaapi.LatestVersion()}, &tmpl.ObjectMeta, &tmpl.Spec))
	if result.Allowed {
		return ""
	}
	return result.ForbiddenDetail()
}

func TestPodSpecPassesRestrictedPodSecurity(t *testing.T) {
	for name, pg := range map[string]*kubedbv1.Postgres{
		"one replica, durable":    newPG("x"),
		"three replicas, warm":    newPG("x", withReplicas(3), func(pg *kubedbv1.Postgres) { pg.Spec.StandbyMode = ptr.To(kubedbv1.StandbyModeWarm) }),
		"ephemeral storage":       newPG("x", func(pg *kubedbv1.Postgres) { pg.Spec.StorageType = kubedbv1.StorageTypeEphemeral }),
		"podTemplate resources":   newPG("x", withContainerResources(corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("1Gi")})),
		"podTemplate node labels": newPG("x", func(pg *kubedbv1.Postgres) { pg.Spec.PodTemplate.Spec.NodeSelector = map[string]string{"disk": "ssd"} }),
		"KubeDB guide's securityContext": newPG("x", func(pg *kubedbv1.Postgres) {
			pg.Spec.PodTemplate.Spec.SecurityContext = &corev1.PodSecurityContext{RunAsUser: ptr.To[int64](70), FSGroup: ptr.To[int64](70)}
			pg.Spec.PodTemplate.Spec.Containers = []kubedbv1.ContainerSpec{{Name: ContainerName,
				SecurityContext: &corev1.SecurityContext{RunAsUser: ptr.To[int64](70)}}}
		}),
	} {
		t.Run(name, func(t *testing.T) {
			tmpl := desiredStatefulSet(pg, "docker.io/library/postgres:16.4", DefaultAgentImage, "x-auth").Spec.Template
			assert.Empty(t, restrictedProblems(t, tmpl))
		})
	}
}

func TestPodSpecSecurityMatchesTheOfficialImage(t *testing.T) {
	spec := desiredStatefulSet(newPG("x"), "docker.io/library/postgres:16.4", DefaultAgentImage, "x-auth").Spec.Template.Spec
	sc := spec.SecurityContext
	assert.Equal(t, int64(999), *sc.RunAsUser, "the official images' postgres user")
	assert.Equal(t, int64(999), *sc.RunAsGroup)
	assert.Equal(t, int64(999), *sc.FSGroup, "volumes writable by the postgres group")
	assert.Equal(t, corev1.FSGroupChangeOnRootMismatch, *sc.FSGroupChangePolicy, "a large data volume is not re-chowned at every start")
	assert.True(t, *sc.RunAsNonRoot)
	assert.Equal(t, corev1.SeccompProfileTypeRuntimeDefault, sc.SeccompProfile.Type)

	c := spec.Containers[0]
	cs := c.SecurityContext
	require.NotNil(t, cs)
	assert.False(t, *cs.AllowPrivilegeEscalation)
	assert.Equal(t, []corev1.Capability{"ALL"}, cs.Capabilities.Drop)
	assert.Empty(t, cs.Capabilities.Add)
	assert.True(t, *cs.ReadOnlyRootFilesystem)

	// With a read-only root, everything PostgreSQL writes is on a volume.
	writable := map[string]string{}
	for _, m := range c.VolumeMounts {
		if !m.ReadOnly {
			writable[m.MountPath] = m.Name
		}
	}
	assert.Equal(t, map[string]string{DataMount: DataVolume, RunMount: RunVolume, TmpMount: TmpVolume}, writable)
	assert.Equal(t, PGDataPath, envByName(c.Env)["PGDATA"].Value, "PGDATA is on the data volume")
	assert.Equal(t, []string{"/pgops/bin/pgops-agent", "run"}, c.Command, "the agent is PID 1; the PostgreSQL binaries come from the image's PATH")

	// The init container installs the agent from the operator image into the volume the
	// database container runs it from, read-only there.
	spec = desiredStatefulSet(newPG("x"), "img", "registry.example/pgops:v9", "s").Spec.Template.Spec
	require.Len(t, spec.InitContainers, 1)
	install := spec.InitContainers[0]
	assert.Equal(t, "registry.example/pgops:v9", install.Image)
	assert.Equal(t, []string{"/usr/local/bin/pgops-agent", "install", "/pgops/bin/pgops-agent"}, install.Command)
	assert.Equal(t, []corev1.VolumeMount{{Name: AgentVolume, MountPath: AgentMount}}, install.VolumeMounts)
	assert.Contains(t, spec.Containers[0].VolumeMounts, corev1.VolumeMount{Name: AgentVolume, MountPath: AgentMount, ReadOnly: true})
	assert.True(t, *install.SecurityContext.ReadOnlyRootFilesystem)
}

func TestPodSpecProbes(t *testing.T) {
	c := desiredStatefulSet(newPG("x"), "img", DefaultAgentImage, "s").Spec.Template.Spec.Containers[0]
	// Every probe is an HTTP request to the agent: no process is started in the container.
	for name, tc := range map[string]struct {
		probe *corev1.Probe
		path  string
	}{
		"startup":   {c.StartupProbe, "/startupz"},
		"liveness":  {c.LivenessProbe, "/livez"},
		"readiness": {c.ReadinessProbe, "/readyz"},
	} {
		require.NotNil(t, tc.probe, name)
		require.Nil(t, tc.probe.Exec, name)
		require.NotNil(t, tc.probe.HTTPGet, name)
		assert.Equal(t, tc.path, tc.probe.HTTPGet.Path, name)
		assert.Equal(t, intstr.FromString("agent"), tc.probe.HTTPGet.Port, name)
		assert.Greater(t, tc.probe.TimeoutSeconds, int32(3), "%s: above the agent's 3 s deadline for the server's answer", name)
	}
	assert.Contains(t, c.Ports, corev1.ContainerPort{Name: "agent", ContainerPort: 8008, Protocol: corev1.ProtocolTCP})
	assert.Zero(t, c.ReadinessProbe.InitialDelaySeconds, "the startup probe waits for the server")
	assert.Equal(t, int32(10), c.ReadinessProbe.PeriodSeconds, "Kubernetes' default period")
	assert.LessOrEqual(t, c.ReadinessProbe.PeriodSeconds*c.ReadinessProbe.FailureThreshold, int32(30),
		"a hung server leaves its Service within 30 s")
	assert.GreaterOrEqual(t, c.StartupProbe.PeriodSeconds*c.StartupProbe.FailureThreshold, int32(600),
		"crash recovery gets at least 10 minutes before the liveness probe takes over")
	assert.GreaterOrEqual(t, c.LivenessProbe.PeriodSeconds*c.LivenessProbe.FailureThreshold, int32(60),
		"a server is restarted only after a minute without an answer")
}

func TestPodSpecResources(t *testing.T) {
	c := desiredStatefulSet(newPG("x"), "img", DefaultAgentImage, "s").Spec.Template.Spec.Containers[0]
	assert.Equal(t, DefaultCPURequest, c.Resources.Requests[corev1.ResourceCPU])
	assert.Equal(t, DefaultMemoryRequest, c.Resources.Requests[corev1.ResourceMemory])
	assert.Empty(t, c.Resources.Limits, "no default limits: a memory limit is the user's choice")

	limits := corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("1Gi")}
	c = desiredStatefulSet(newPG("x", withContainerResources(limits)), "img", DefaultAgentImage, "s").Spec.Template.Spec.Containers[0]
	assert.Equal(t, limits, c.Resources.Limits)
	assert.Empty(t, c.Resources.Requests, "the podTemplate's resources replace the defaults")
}

func TestPodSpecPrefersSpreadingAcrossNodes(t *testing.T) {
	pg := newPG("x", withReplicas(3))
	spec := desiredStatefulSet(pg, "img", DefaultAgentImage, "s").Spec.Template.Spec
	require.NotNil(t, spec.Affinity)
	require.NotNil(t, spec.Affinity.PodAntiAffinity)
	assert.Empty(t, spec.Affinity.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution, "a one-node cluster still runs every replica")
	terms := spec.Affinity.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution
	require.Len(t, terms, 1)
	assert.Equal(t, corev1.LabelHostname, terms[0].PodAffinityTerm.TopologyKey)
	assert.Equal(t, &metav1.LabelSelector{MatchLabels: selectorLabels(pg)}, terms[0].PodAffinityTerm.LabelSelector)

	pg.Spec.PodTemplate.Spec.Affinity = &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{}}
	spec = desiredStatefulSet(pg, "img", DefaultAgentImage, "s").Spec.Template.Spec
	assert.Nil(t, spec.Affinity.PodAntiAffinity, "the podTemplate's affinity replaces the default")
}

func withContainerResources(limits corev1.ResourceList) func(*kubedbv1.Postgres) {
	return func(pg *kubedbv1.Postgres) {
		pg.Spec.PodTemplate.Spec.Containers = []kubedbv1.ContainerSpec{{
			Name: ContainerName, Resources: corev1.ResourceRequirements{Limits: limits},
		}}
	}
}

func TestPodDisruptionBudgetFollowsReplicas(t *testing.T) {
	f := newFixture(t, []*kubedbv1.Postgres{newPG("x", withFinalizer, withReplicas(3))})
	require.NoError(t, f.sync("x"))
	pdb, err := f.kube.PolicyV1().PodDisruptionBudgets(testNS).Get(f.ctx, "x", metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, int32(1), pdb.Spec.MaxUnavailable.IntVal, "one pod of the database down at a time")
	assert.Equal(t, policyv1.AlwaysAllow, *pdb.Spec.UnhealthyPodEvictionPolicy, "a broken pod never blocks a drain")
	assert.Equal(t, selectorLabels(f.postgres("x")), pdb.Spec.Selector.MatchLabels)
	assert.True(t, isOwnedBy(pdb, f.postgres("x")), "garbage-collected with the Postgres")
	assert.True(t, f.hasEvent(corev1.EventTypeNormal, ReasonPodDisruptionBudgetCreated, "maxUnavailable 1"))

	// A hand edit is reverted.
	pdb.Spec.MaxUnavailable = nil
	pdb.Spec.MinAvailable = ptr.To(intstr.FromInt32(3))
	_, err = f.kube.PolicyV1().PodDisruptionBudgets(testNS).Update(f.ctx, pdb, metav1.UpdateOptions{})
	require.NoError(t, err)
	f.refresh()
	require.NoError(t, f.sync("x"))
	pdb, err = f.kube.PolicyV1().PodDisruptionBudgets(testNS).Get(f.ctx, "x", metav1.GetOptions{})
	require.NoError(t, err)
	assert.Nil(t, pdb.Spec.MinAvailable)
	assert.Equal(t, int32(1), pdb.Spec.MaxUnavailable.IntVal)

	// One replica: no budget (maxUnavailable 1 protects nothing; 0 would block drains).
	f.editSpec("x", func(spec *kubedbv1.PostgresSpec) { spec.Replicas = ptr.To[int32](1) })
	require.NoError(t, f.sync("x"))
	assert.False(t, f.exists("pdb", "x"))
}

func TestPodDisruptionBudgetOfSomeoneElseIsNotTakenOver(t *testing.T) {
	foreign := &policyv1.PodDisruptionBudget{ObjectMeta: metav1.ObjectMeta{Name: "x", Namespace: testNS}}
	f := newFixture(t, []*kubedbv1.Postgres{newPG("x", withFinalizer, withReplicas(2))}, foreign)
	require.NoError(t, f.sync("x"))
	cond := condition(f.postgres("x"), kubedbv1.ConditionProvisioningStarted)
	require.NotNil(t, cond)
	assert.Equal(t, metav1.ConditionTrue, cond.Status, "provisioning goes on: the user's budget protects the pods too")
	assert.True(t, f.hasEvent(corev1.EventTypeWarning, ReasonObjectConflict, "PodDisruptionBudget "+testNS+"/x exists and is not controlled by this Postgres; it is left as it is"))
	got, err := f.kube.PolicyV1().PodDisruptionBudgets(testNS).Get(f.ctx, "x", metav1.GetOptions{})
	require.NoError(t, err)
	assert.Nil(t, got.Spec.MaxUnavailable, "left as it was")
}
