package provisioner

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/utils/ptr"

	kubedbv1 "github.com/pgops/pgops/pkg/apis/kubedb/v1"
	"github.com/pgops/pgops/pkg/credential"
)

func synchronous(cfg *kubedbv1.SynchronousReplicationConfig) func(*kubedbv1.Postgres) {
	return func(pg *kubedbv1.Postgres) {
		pg.Spec.StreamingMode = ptr.To(kubedbv1.StreamingModeSynchronous)
		pg.Spec.SynchronousReplicationConfig = cfg
	}
}

func TestDesiredSynchronousReplicationRendersKubeDBsSettings(t *testing.T) {
	for name, tc := range map[string]struct {
		pg       *kubedbv1.Postgres
		names    string
		commit   string
		required int
	}{
		"asynchronous":            {pg: newPG("x", withReplicas(3))},
		"explicitly asynchronous": {pg: newPG("x", withReplicas(3), func(pg *kubedbv1.Postgres) { pg.Spec.StreamingMode = ptr.To(kubedbv1.StreamingModeAsynchronous) })},
		"defaults: any one standby, remote_write": {
			pg: newPG("x", withReplicas(3), synchronous(nil)), names: `ANY 1 ("x-1","x-2")`, commit: "remote_write", required: 1},
		"KubeDB's quorum example": {
			pg: newPG("x", withReplicas(3), synchronous(&kubedbv1.SynchronousReplicationConfig{
				Mode: kubedbv1.SynchronousModeAny, NumSyncReplicas: ptr.To[int32](2), CommitLevel: kubedbv1.SynchronousCommitRemoteWrite})),
			names: `ANY 2 ("x-1","x-2")`, commit: "remote_write", required: 2},
		"KubeDB's priority example": {
			pg: newPG("x", withReplicas(3), synchronous(&kubedbv1.SynchronousReplicationConfig{
				Mode: kubedbv1.SynchronousModeFirst, NumSyncReplicas: ptr.To[int32](1), CommitLevel: kubedbv1.SynchronousCommitOn,
				StandbyNames: []string{"x-2", "x-1"}})),
			names: `FIRST 1 ("x-2","x-1")`, commit: "on", required: 1},
		"KubeDB's wildcard example": {
			pg:    newPG("x", withReplicas(3), synchronous(&kubedbv1.SynchronousReplicationConfig{UseWildcard: true})),
			names: `ANY 1 (*)`, commit: "remote_write", required: 1},
		"remote_apply": {
			pg:    newPG("x", withReplicas(2), synchronous(&kubedbv1.SynchronousReplicationConfig{CommitLevel: kubedbv1.SynchronousCommitRemoteApply})),
			names: `ANY 1 ("x-1")`, commit: "remote_apply", required: 1},
	} {
		t.Run(name, func(t *testing.T) {
			got, err := desiredSynchronousReplication(tc.pg)
			require.NoError(t, err)
			// Every standby up: the settings the user asked for.
			allUp := map[string]bool{}
			for i := 1; i < int(replicas(tc.pg)); i++ {
				allUp[fmt.Sprintf("x-%d", i)] = true
			}
			settings, waitsFor := got.settingsFor(allUp)
			if !got.enabled() {
				settings, waitsFor = credential.SynchronousSettings{}, 0
			}
			assert.Equal(t, credential.SynchronousSettings{StandbyNames: tc.names, Commit: tc.commit}, settings)
			assert.Equal(t, tc.required, got.required)
			assert.Equal(t, tc.required, waitsFor)
		})
	}
}

func TestDesiredSynchronousReplicationRefusesWhatNoStandbysCanMeet(t *testing.T) {
	for name, tc := range map[string]struct {
		pg   *kubedbv1.Postgres
		want string
	}{
		"one replica":            {newPG("x", synchronous(nil)), "needs at least 2 replicas"},
		"as many as replicas":    {newPG("x", withReplicas(3), synchronous(&kubedbv1.SynchronousReplicationConfig{NumSyncReplicas: ptr.To[int32](3)})), "less than spec.replicas (3), got 3"},
		"zero":                   {newPG("x", withReplicas(3), synchronous(&kubedbv1.SynchronousReplicationConfig{NumSyncReplicas: ptr.To[int32](0)})), "at least 1"},
		"more than the names":    {newPG("x", withReplicas(3), synchronous(&kubedbv1.SynchronousReplicationConfig{NumSyncReplicas: ptr.To[int32](2), StandbyNames: []string{"x-1"}})), "more than the 1 standbyNames"},
		"the primary named":      {newPG("x", withReplicas(3), synchronous(&kubedbv1.SynchronousReplicationConfig{StandbyNames: []string{"x-0"}})), `"x-0" is not a standby pod of this database (x-1, x-2)`},
		"another database's pod": {newPG("x", withReplicas(3), synchronous(&kubedbv1.SynchronousReplicationConfig{StandbyNames: []string{"y-1"}})), `"y-1" is not a standby pod`},
		"a hostile name":         {newPG("x", withReplicas(3), synchronous(&kubedbv1.SynchronousReplicationConfig{StandbyNames: []string{`x-1"), ("evil`}})), "is not a standby pod"},
		"twice":                  {newPG("x", withReplicas(3), synchronous(&kubedbv1.SynchronousReplicationConfig{StandbyNames: []string{"x-1", "x-1"}})), `lists "x-1" twice`},
		"names and wildcard":     {newPG("x", withReplicas(3), synchronous(&kubedbv1.SynchronousReplicationConfig{UseWildcard: true, StandbyNames: []string{"x-1"}})), "mutually exclusive"},
		"unknown commit level":   {newPG("x", withReplicas(3), synchronous(&kubedbv1.SynchronousReplicationConfig{CommitLevel: "true"})), `commitLevel "true"`},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := desiredSynchronousReplication(tc.pg)
			var ue *userError
			require.ErrorAs(t, err, &ue)
			assert.Equal(t, ReasonInvalidSynchronousReplication, ue.reason)
			assert.Contains(t, ue.msg, tc.want)
		})
	}
}

func TestSynchronousReplicationIsAppliedAndReported(t *testing.T) {
	f := runningDatabase(t, newPG("x", withFinalizer, withReplicas(3), withAuthSecret("x-auth"), withCondition(kubedbv1.ConditionProvisioned, metav1.ConditionTrue),
		synchronous(&kubedbv1.SynchronousReplicationConfig{NumSyncReplicas: ptr.To[int32](2)})))
	require.NoError(t, f.sync("x"))
	assert.Equal(t, credential.SynchronousSettings{StandbyNames: `ANY 2 ("x-1","x-2")`, Commit: "remote_write"}, f.health.settings, "applied to the primary")
	cond := condition(f.postgres("x"), kubedbv1.ConditionSynchronousReplication)
	require.NotNil(t, cond)
	assert.Equal(t, metav1.ConditionUnknown, cond.Status, "just applied: the standbys have not reported yet")

	f.later(healthTTL)
	require.NoError(t, f.sync("x"))
	pg := f.postgres("x")
	cond = condition(pg, kubedbv1.ConditionSynchronousReplication)
	assert.Equal(t, metav1.ConditionTrue, cond.Status, cond.Message)
	assert.Contains(t, cond.Message, `2 synchronous standby(s) confirm commits, 2 required (synchronous_standby_names 'ANY 2 ("x-1","x-2")', synchronous_commit remote_write)`)
	assert.Equal(t, kubedbv1.DatabasePhaseReady, pg.Status.Phase)

	// A standby stops streaming while its pod stays Ready: commits wait for it, and the
	// status says replication is below what was asked.
	f.health.notStreaming = map[string]bool{"x-2": true}
	f.later(healthTTL)
	require.NoError(t, f.sync("x"))
	pg = f.postgres("x")
	cond = condition(pg, kubedbv1.ConditionSynchronousReplication)
	assert.Equal(t, metav1.ConditionFalse, cond.Status)
	assert.Equal(t, ReasonTooFewSynchronousStandbys, cond.Reason)
	assert.Contains(t, cond.Message, "1 of the 2 required synchronous standbys confirm commits; until more standbys are ready the primary waits for 2")
	assert.Equal(t, kubedbv1.DatabasePhaseCritical, pg.Status.Phase)
	assert.Contains(t, condition(pg, kubedbv1.ConditionReady).Message, "only 1 of the 2 required synchronous standbys")
	// From the next check on, the primary waits only for the standby that streams: a Ready
	// standby that does not stream must not hold every commit.
	f.later(healthTTL)
	require.NoError(t, f.sync("x"))
	assert.Equal(t, `ANY 1 ("x-1","x-2")`, f.health.settings.StandbyNames)

	// Its pod goes NotReady (restarted by a RotateAuth, drained): the primary waits for
	// the one standby that is up, instead of holding every commit until it is back.
	setPodReady(t, f, "x-2", false)
	f.later(healthTTL)
	require.NoError(t, f.sync("x"))
	assert.Equal(t, `ANY 1 ("x-1","x-2")`, f.health.settings.StandbyNames)
	setPodReady(t, f, "x-2", true)
	f.health.notStreaming = nil
	f.later(healthTTL)
	require.NoError(t, f.sync("x"))
	assert.Equal(t, `ANY 1 ("x-1","x-2")`, f.health.settings.StandbyNames, "Ready again, but not yet seen streaming")
	cond = condition(f.postgres("x"), kubedbv1.ConditionSynchronousReplication)
	assert.Equal(t, metav1.ConditionFalse, cond.Status, "both stream as quorum members, but a commit waits for one: %s", cond.Message)
	f.later(healthTTL)
	require.NoError(t, f.sync("x"))
	assert.Equal(t, `ANY 2 ("x-1","x-2")`, f.health.settings.StandbyNames, "all required again once it streams")
	f.later(healthTTL)
	require.NoError(t, f.sync("x"))
	cond = condition(f.postgres("x"), kubedbv1.ConditionSynchronousReplication)
	assert.Equal(t, metav1.ConditionTrue, cond.Status, cond.Message)

	// Back to asynchronous, and down to one replica at once: the primary is still asked,
	// to reset its settings, and the condition goes once it is found reset.
	f.editSpec("x", func(spec *kubedbv1.PostgresSpec) {
		spec.StreamingMode = ptr.To(kubedbv1.StreamingModeAsynchronous)
		spec.Replicas = ptr.To[int32](1)
	})
	f.later(healthTTL)
	require.NoError(t, f.sync("x"))
	assert.Equal(t, credential.SynchronousSettings{}, f.health.settings, "reset to PostgreSQL's defaults")
	assert.Equal(t, metav1.ConditionUnknown, condition(f.postgres("x"), kubedbv1.ConditionSynchronousReplication).Status,
		"kept until the primary is found reset")
	f.refresh()
	f.later(healthTTL)
	require.NoError(t, f.sync("x"))
	assert.Nil(t, meta.FindStatusCondition(f.postgres("x").Status.Conditions, kubedbv1.ConditionSynchronousReplication))

	// Asynchronous with one replica: no replication query at all.
	calls := len(f.health.replicationCalls)
	f.refresh()
	f.later(healthTTL)
	require.NoError(t, f.sync("x"))
	assert.Len(t, f.health.replicationCalls, calls)
}

func TestSynchronousReplicationWaitsOnlyForStandbysThatAreUp(t *testing.T) {
	// Scaling up and asking for more confirmations at once: the new standby is still
	// cloning its primary (NotReady), which may take hours; commits wait for the standbys
	// that are up meanwhile.
	pg := newPG("x", withFinalizer, withReplicas(3), withAuthSecret("x-auth"), withCondition(kubedbv1.ConditionProvisioned, metav1.ConditionTrue),
		synchronous(&kubedbv1.SynchronousReplicationConfig{NumSyncReplicas: ptr.To[int32](2)}))
	f := newFixture(t, []*kubedbv1.Postgres{pg}, generatedSecretFor(pg), desiredRoleService(pg, kubedbv1.PrimaryServiceAlias),
		readyPod(pg, 0, true), readyPod(pg, 1, true), readyPod(pg, 2, false))
	require.NoError(t, f.sync("x"))
	assert.Equal(t, `ANY 1 ("x-1","x-2")`, f.health.settings.StandbyNames)

	// No standby up at all: commits wait for none.
	f = newFixture(t, []*kubedbv1.Postgres{pg}, generatedSecretFor(pg), desiredRoleService(pg, kubedbv1.PrimaryServiceAlias),
		readyPod(pg, 0, true), readyPod(pg, 1, false), readyPod(pg, 2, false))
	require.NoError(t, f.sync("x"))
	assert.Equal(t, credential.SynchronousSettings{Commit: "remote_write"}, f.health.settings)
}

func TestAsynchronousDatabaseKeepsSettingsPgopsNeverMade(t *testing.T) {
	f := runningDatabase(t, newPG("x", withFinalizer, withReplicas(3), withAuthSecret("x-auth"), withCondition(kubedbv1.ConditionProvisioned, metav1.ConditionTrue)))
	handMade := credential.SynchronousSettings{StandbyNames: "FIRST 1 (x-1)", Commit: "on"}
	f.health.settings = handMade
	require.NoError(t, f.sync("x"))
	assert.Equal(t, handMade, f.health.settings, "never synchronous under pgops: not pgops's to reset")
	assert.Nil(t, condition(f.postgres("x"), kubedbv1.ConditionSynchronousReplication))
	require.NotEmpty(t, f.health.replicationCalls)
	assert.Nil(t, f.health.replicationCalls[len(f.health.replicationCalls)-1].Synchronous)
}

func TestInvalidSynchronousReplicationChangesNothing(t *testing.T) {
	f := runningDatabase(t, newPG("x", withFinalizer, withReplicas(3), withAuthSecret("x-auth"), withCondition(kubedbv1.ConditionProvisioned, metav1.ConditionTrue), synchronous(nil)))
	require.NoError(t, f.sync("x"))
	applied := f.health.settings

	// Four replicas with numSyncReplicas 4, of three standbys: refused, the StatefulSet
	// keeps its replicas and the primary its settings.
	f.editSpec("x", func(spec *kubedbv1.PostgresSpec) {
		spec.SynchronousReplicationConfig = &kubedbv1.SynchronousReplicationConfig{NumSyncReplicas: ptr.To[int32](4)}
		spec.Replicas = ptr.To[int32](4)
	})
	f.later(healthTTL)
	require.NoError(t, f.sync("x"))
	assert.NotContains(t, f.kubeWrites(), "update statefulsets x")
	assert.Equal(t, applied, f.health.settings)
	cond := condition(f.postgres("x"), kubedbv1.ConditionProvisioningStarted)
	assert.Equal(t, ReasonInvalidSynchronousReplication, cond.Reason)
	assert.Contains(t, cond.Message, "numSyncReplicas must be at least 1 and less than spec.replicas (4), got 4")
	assert.True(t, f.hasEvent(corev1.EventTypeWarning, ReasonInvalidSynchronousReplication, "numSyncReplicas"))
	cond = condition(f.postgres("x"), kubedbv1.ConditionSynchronousReplication)
	require.NotNil(t, cond, "kept: the primary may still have synchronous settings")
	assert.Equal(t, metav1.ConditionUnknown, cond.Status)
	assert.Contains(t, cond.Message, "left as they are")
}

// setPodReady sets pod name's Ready condition in the fake API and the caches.
func setPodReady(t *testing.T, f *fixture, name string, ready bool) {
	t.Helper()
	pod := f.pod(name)
	status := corev1.ConditionFalse
	if ready {
		status = corev1.ConditionTrue
	}
	pod.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: status}}
	_, err := f.kube.CoreV1().Pods(testNS).UpdateStatus(f.ctx, pod, metav1.UpdateOptions{})
	require.NoError(t, err)
	f.refresh()
}

// runningDatabase is a fixture where pg's auth Secret, primary Service and every pod exist
// and the pods are Ready.
func runningDatabase(t *testing.T, pg *kubedbv1.Postgres) *fixture {
	t.Helper()
	objs := []runtime.Object{generatedSecretFor(pg), desiredRoleService(pg, kubedbv1.PrimaryServiceAlias)}
	for i := 0; i < int(replicas(pg)); i++ {
		objs = append(objs, readyPod(pg, i, true))
	}
	return newFixture(t, []*kubedbv1.Postgres{pg}, objs...)
}

// editSpec changes the spec of Postgres name as a user would (a new generation) and
// refreshes the caches.
func (f *fixture) editSpec(name string, mutate func(*kubedbv1.PostgresSpec)) {
	f.t.Helper()
	pg := f.postgres(name)
	mutate(&pg.Spec)
	pg.Generation++
	_, err := f.pgops.KubedbV1().Postgreses(testNS).Update(f.ctx, pg, metav1.UpdateOptions{})
	require.NoError(f.t, err)
	f.refresh()
}
