package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	kubedbv1 "github.com/pgops/pgops/pkg/apis/kubedb/v1"
	opsv1alpha1 "github.com/pgops/pgops/pkg/apis/ops/v1alpha1"
	"github.com/pgops/pgops/pkg/controller/opsmanager"
)

// TestSynchronousReplication applies KubeDB's synchronous replication example unchanged:
// the primary's settings follow it, both standbys confirm commits (quorum), and a RotateAuth
// that restarts the standbys keeps them synchronous, with pgbench writing on the primary
// keeping every session (how long its commits stall is speed, which tests do not assert).
func TestSynchronousReplication(t *testing.T) {
	parallel(t)
	ctx := testContext(t, 12*time.Minute)
	ns := newNamespace(t, ctx)
	applyExample(t, ctx, ns, "40-synchronous-postgres.yaml", nil)
	rc := rotationCaseFor(t, ctx, ns, "sync-postgres", 3)

	// Ready does not mean the settings the provisioner applies have reached the primary's
	// sessions yet; both standbys confirming commits as quorum members does.
	waitSynchronousStandbys(t, ctx, rc)
	primary := openDB(t, primaryTarget(t, ctx, ns, rc.db).Host, rc.before.username, rc.before.password)
	var names, commit string
	require.NoError(t, primary.QueryRowContext(ctx, "SELECT current_setting('synchronous_standby_names'), current_setting('synchronous_commit')").Scan(&names, &commit))
	assert.Equal(t, `ANY 2 ("sync-postgres-1","sync-postgres-2")`, names)
	assert.Equal(t, "remote_write", commit)

	rc.writeData(t, ctx)
	bench := startPgbench(t, ctx, primaryTarget(t, ctx, ns, rc.db), rc.before.username, rc.before.password)
	applyRotateAuthWithRestart(t, ctx, ns, "rotate-sync", rc.db, opsv1alpha1.RestartStandbysOnly)
	req := waitRequestEnded(t, ctx, ns, "rotate-sync")
	report := bench.stop(t)
	for pod := range rc.podUIDs {
		rc.fates[pod] = podRestarted
	}
	rc.fates[rc.primary()] = podKept
	rc.checkRotated(t, ctx, "rotate-sync")
	waitSynchronousStandbys(t, ctx, rc)

	// Each standby was evicted and came back ready.
	for _, pod := range []string{"sync-postgres-1", "sync-postgres-2"} {
		require.NotNil(t, meta.FindStatusCondition(req.Status.Conditions, opsmanager.ConditionEvictPod+"--"+pod), "%s\n%s", pod, describeRequest(req))
		require.NotNil(t, meta.FindStatusCondition(req.Status.Conditions, opsmanager.ConditionCheckPodReady+"--"+pod), "%s\n%s", pod, describeRequest(req))
	}
	// Commits stall while a standby restarts (each needs both standbys); for how long is
	// speed, not asserted here.
	assert.Empty(t, report.abortedLines, "the primary kept every session:\n%s", bench.output())
}

// waitSynchronousStandbys waits until the primary counts both standbys of rc towards each
// commit (sync_state quorum) and the Postgres says so.
func waitSynchronousStandbys(t testing.TB, ctx context.Context, rc *rotationCase) {
	t.Helper()
	cred := authCredential(t, ctx, rc.ns, rc.db)
	primary := openDB(t, primaryTarget(t, ctx, rc.ns, rc.db).Host, cred.username, cred.password)
	var states string
	poll(t, ctx, "both standbys to confirm commits", func(ctx context.Context) (bool, error) {
		err := primary.QueryRowContext(ctx, `SELECT coalesce(string_agg(application_name || '=' || sync_state, ',' ORDER BY application_name), '')
			FROM pg_stat_replication WHERE state = 'streaming'`).Scan(&states)
		if err != nil || states != "sync-postgres-1=quorum,sync-postgres-2=quorum" {
			return false, nil
		}
		pg, err := env.pgops.KubedbV1().Postgreses(rc.ns).Get(ctx, rc.db, metav1.GetOptions{})
		return err == nil && meta.IsStatusConditionTrue(pg.Status.Conditions, kubedbv1.ConditionSynchronousReplication), nil
	}, func() string {
		return fmt.Sprintf("pg_stat_replication: %s\n%s", states, describePostgresNow(t, rc.ns, rc.db))
	})
}
