package provisioner

import (
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
			assert.Equal(t, credential.SynchronousSettings{StandbyNames: tc.names, Commit: tc.commit}, got.settings)
			assert.Equal(t, tc.required, got.required)
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
	assert.Contains(t, cond.Message, `2 synchronous standby(s) confirm commits, 2 required (synchronous_standby_names ANY 2 ("x-1","x-2"), synchronous_commit remote_write)`)
	assert.Equal(t, kubedbv1.DatabasePhaseReady, pg.Status.Phase)

	// A standby stops streaming: commits wait, and the status says so.
	f.health.notStreaming = map[string]bool{"x-2": true}
	f.later(healthTTL)
	require.NoError(t, f.sync("x"))
	pg = f.postgres("x")
	cond = condition(pg, kubedbv1.ConditionSynchronousReplication)
	assert.Equal(t, metav1.ConditionFalse, cond.Status)
	assert.Equal(t, ReasonTooFewSynchronousStandbys, cond.Reason)
	assert.Contains(t, cond.Message, "1 of the 2 required synchronous standbys confirm commits: commits on the primary wait")
	assert.Equal(t, kubedbv1.DatabasePhaseCritical, pg.Status.Phase)
	assert.Contains(t, condition(pg, kubedbv1.ConditionReady).Message, "writes wait")

	// Back to asynchronous, and down to one replica at once: the primary is still asked,
	// to reset its settings, and the condition goes.
	f.health.notStreaming = nil
	pg.Spec.StreamingMode = ptr.To(kubedbv1.StreamingModeAsynchronous)
	pg.Spec.Replicas = ptr.To[int32](1)
	pg.Generation++
	_, err := f.pgops.KubedbV1().Postgreses(testNS).Update(f.ctx, pg, metav1.UpdateOptions{})
	require.NoError(t, err)
	f.refresh()
	f.later(healthTTL)
	require.NoError(t, f.sync("x"))
	assert.Equal(t, credential.SynchronousSettings{}, f.health.settings, "reset to PostgreSQL's defaults")
	assert.Nil(t, meta.FindStatusCondition(f.postgres("x").Status.Conditions, kubedbv1.ConditionSynchronousReplication))

	// Asynchronous with one replica: no replication query at all.
	calls := len(f.health.replicationCalls)
	f.refresh()
	f.later(healthTTL)
	require.NoError(t, f.sync("x"))
	assert.Len(t, f.health.replicationCalls, calls)
}

func TestInvalidSynchronousReplicationChangesNothing(t *testing.T) {
	f := runningDatabase(t, newPG("x", withFinalizer, withReplicas(3), withAuthSecret("x-auth"), withCondition(kubedbv1.ConditionProvisioned, metav1.ConditionTrue), synchronous(nil)))
	require.NoError(t, f.sync("x"))
	applied := f.health.settings

	// Four replicas with numSyncReplicas 4, of three standbys: refused, the StatefulSet
	// keeps its replicas and the primary its settings.
	pg := f.postgres("x")
	pg.Spec.SynchronousReplicationConfig = &kubedbv1.SynchronousReplicationConfig{NumSyncReplicas: ptr.To[int32](4)}
	pg.Spec.Replicas = ptr.To[int32](4)
	pg.Generation++
	_, err := f.pgops.KubedbV1().Postgreses(testNS).Update(f.ctx, pg, metav1.UpdateOptions{})
	require.NoError(t, err)
	f.refresh()
	f.later(healthTTL)
	require.NoError(t, f.sync("x"))
	assert.NotContains(t, f.kubeWrites(), "update statefulsets x")
	assert.Equal(t, applied, f.health.settings)
	cond := condition(f.postgres("x"), kubedbv1.ConditionProvisioningStarted)
	assert.Equal(t, ReasonInvalidSynchronousReplication, cond.Reason)
	assert.Contains(t, cond.Message, "numSyncReplicas must be at least 1 and less than spec.replicas (4), got 4")
	assert.True(t, f.hasEvent(corev1.EventTypeWarning, ReasonInvalidSynchronousReplication, "numSyncReplicas"))
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
