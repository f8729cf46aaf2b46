package e2e

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	kubedbv1 "github.com/pgops/pgops/pkg/apis/kubedb/v1"
	opsv1alpha1 "github.com/pgops/pgops/pkg/apis/ops/v1alpha1"
	"github.com/pgops/pgops/pkg/controller/opsmanager"
	"github.com/pgops/pgops/pkg/credential"
)

// applyRotateAuthWithRestart applies a generated-credential RotateAuth name for db in
// restart mode mode.
func applyRotateAuthWithRestart(t testing.TB, ctx context.Context, ns, name, db string, mode opsv1alpha1.RestartMode) {
	t.Helper()
	kubectlApply(t, ctx, fmt.Sprintf("apiVersion: ops.kubedb.com/v1alpha1\nkind: PostgresOpsRequest\nmetadata: {name: %s, namespace: %s}\n"+
		"spec: {type: RotateAuth, databaseRef: {name: %s}, timeout: 5m, rotateAuth: {restart: %s}}\n", name, ns, db, mode))
}

// TestZeroDowntimeRotation rotates a 3-replica database twice while pgbench writes to its
// primary: in mode StandbysOnly the standbys restart and the primary keeps every session; in
// mode None no pod restarts at all. Neither loses a client or a transaction, and afterwards a
// deleted standby comes back with the new credential and streams. Then a GitOps change of
// spec.authSecret.name to a Secret of the user's becomes a rotation to it (one database
// serves all three, to keep the suite short).
func TestZeroDowntimeRotation(t *testing.T) {
	parallel(t)
	ctx := testContext(t, 12*time.Minute)
	rc := newRotationCase(t, ctx, 3)
	deleteWhenDone(t, rc)
	rc.writeData(t, ctx)

	for _, mode := range []opsv1alpha1.RestartMode{opsv1alpha1.RestartStandbysOnly, opsv1alpha1.RestartNone} {
		bench := startPgbench(t, ctx, primaryTarget(t, ctx, rc.ns, rc.db), rc.before.username, rc.before.password)
		name := fmt.Sprintf("rotate-%s", map[opsv1alpha1.RestartMode]string{
			opsv1alpha1.RestartStandbysOnly: "standbys-only", opsv1alpha1.RestartNone: "none"}[mode])
		applyRotateAuthWithRestart(t, ctx, rc.ns, name, rc.db, mode)
		req := waitRequestEnded(t, ctx, rc.ns, name)
		report := bench.stop(t)

		for pod := range rc.podUIDs {
			rc.fates[pod] = podKept
			if mode == opsv1alpha1.RestartStandbysOnly && pod != rc.primary() {
				rc.fates[pod] = podRestarted
			}
		}
		rc.checkRotated(t, ctx, name)
		assert.Equal(t, mode, req.Status.RotateAuth.RestartMode)
		if mode == opsv1alpha1.RestartNone {
			for _, pod := range rc.standbysDescending() {
				assert.True(t, conditionTrue(opsmanager.ConditionRepointStandby+"--"+pod)(req), "%s\n%s", pod, describeRequest(req))
			}
		}
		assert.Empty(t, report.abortedLines, "no pgbench client is aborted in mode %s:\n%s", mode, bench.output())
		assert.Zero(t, report.failed, "no transaction fails in mode %s:\n%s", mode, bench.output())
		// How long commits pause is speed, not correctness: BenchmarkRotationOutage reports it.
		rc.advance(t, ctx)
	}

	// A standby deleted after the None rotation starts from the new Secret and streams.
	standby := rc.standbysDescending()[0]
	require.NoError(t, env.kube.CoreV1().Pods(rc.ns).Delete(ctx, standby, metav1.DeleteOptions{}))
	target := primaryTarget(t, ctx, rc.ns, rc.db)
	target.User, target.Password = rc.before.username, rc.before.password
	var names []string
	poll(t, ctx, "the recreated standby "+standby+" to stream", func(ctx context.Context) (bool, error) {
		pod, err := env.kube.CoreV1().Pods(rc.ns).Get(ctx, standby, metav1.GetOptions{})
		if err != nil || pod.UID == rc.podUIDs[standby] {
			return false, nil
		}
		names, err = credential.StreamingStandbyNames(ctx, target)
		return err == nil && contains(names, standby), nil
	}, func() string { return fmt.Sprintf("streaming: %v", names) })
	rc.advance(t, ctx)

	rotateOnAuthSecretChange(t, ctx, rc)
}

// rotateOnAuthSecretChange points spec.authSecret.name of rc's database at a new Secret of
// the user's, as a GitOps tool would, and checks that pgops rotates to it (restart mode
// StandbysOnly, chosen in spec.authSecret.rotationRestart) while the pods keep the
// credential that works until then.
func rotateOnAuthSecretChange(t testing.TB, ctx context.Context, rc *rotationCase) {
	t.Helper()
	const password = "From-Git-Password-2026"
	watchForLeaks(t, password)
	createUserSecret(t, ctx, rc.ns, "from-git", rc.before.username, password)
	out, err := env.cluster.Kubectl(ctx, "-n", rc.ns, "patch", "postgres", rc.db, "--type=merge", "-p",
		`{"spec":{"authSecret":{"name":"from-git","rotationRestart":"StandbysOnly"}}}`)
	require.NoError(t, err, string(out))

	var name string
	poll(t, ctx, "a RotateAuth for the changed spec.authSecret.name", func(ctx context.Context) (bool, error) {
		reqs, err := env.pgops.OpsV1alpha1().PostgresOpsRequests(rc.ns).List(ctx, metav1.ListOptions{
			LabelSelector: opsv1alpha1.LabelTrigger + "=" + opsv1alpha1.TriggerAuthSecretChanged})
		if err != nil || len(reqs.Items) == 0 {
			return false, nil
		}
		require.Len(t, reqs.Items, 1)
		name = reqs.Items[0].Name
		return true, nil
	}, func() string { return describePostgresNow(t, rc.ns, rc.db) })
	req := waitRequestEnded(t, ctx, rc.ns, name)
	require.NotNil(t, req.Spec.Authentication)
	assert.Equal(t, "from-git", req.Spec.Authentication.SecretRef.Name)
	assert.Equal(t, opsv1alpha1.RestartStandbysOnly, req.Status.RotateAuth.RestartMode)
	for pod := range rc.podUIDs {
		rc.fates[pod] = podRestarted
		if pod == rc.primary() {
			rc.fates[pod] = podKept
		}
	}
	after := rc.checkRotated(t, ctx, name)
	assert.Equal(t, password, after.password)
	pg := getPostgres(t, ctx, rc.ns, rc.db)
	assert.Equal(t, "from-git", pg.Status.AuthSecret.Name, describePostgres(pg))
	assert.True(t, pg.Spec.AuthSecret.ExternallyManaged)
}

// TestScheduledRotation: a Postgres whose generated credential must be rotated every few
// seconds gets one scheduled request per due time, each ending with a working new
// credential.
func TestScheduledRotation(t *testing.T) {
	parallel(t)
	ctx := testContext(t, 6*time.Minute)
	rc := newRotationCase(t, ctx, 1, func(s string) string {
		return strings.Replace(s, "  deletionPolicy: WipeOut", "  authSecret:\n    rotateAfter: 8s\n    rotationRestart: None\n  deletionPolicy: WipeOut", 1)
	})
	deleteWhenDone(t, rc) // else it rotates every 8 s for the rest of the suite
	// scheduled lists the scheduled requests, oldest first (their names carry the due time).
	scheduled := func(ctx context.Context) []opsv1alpha1.PostgresOpsRequest {
		reqs, err := env.pgops.OpsV1alpha1().PostgresOpsRequests(rc.ns).List(ctx, metav1.ListOptions{
			LabelSelector: opsv1alpha1.LabelTrigger + "=" + opsv1alpha1.TriggerScheduled})
		require.NoError(t, err)
		sort.Slice(reqs.Items, func(i, j int) bool { return reqs.Items[i].Name < reqs.Items[j].Name })
		return reqs.Items
	}
	// The first due time may come before the database's credential was read (a one-replica
	// database turns Ready within seconds, and a None rotation takes less than one): stop
	// the schedule, let a request already created end, and start from the credential then.
	checked := "" // the newest request whose rotation was checked
	setRotateAfter(t, ctx, rc, "1h")
	if reqs := scheduled(ctx); len(reqs) > 0 {
		checked = waitRequestEnded(t, ctx, rc.ns, reqs[len(reqs)-1].Name).Name
		rc.advance(t, ctx)
	}
	for period := 1; period <= 2; period++ {
		// Resume the schedule; the credential is overdue by now, or soon.
		setRotateAfter(t, ctx, rc, "8s")
		var reqs []opsv1alpha1.PostgresOpsRequest
		poll(t, ctx, fmt.Sprintf("scheduled rotation %d", period), func(ctx context.Context) (bool, error) {
			reqs = scheduled(ctx)
			if len(reqs) == 0 {
				return false, nil
			}
			newest := reqs[len(reqs)-1]
			return newest.Name != checked && newest.Status.Phase.Ended() && len(newest.Finalizers) == 0, nil
		}, func() string { return describePostgresNow(t, rc.ns, rc.db) })
		// Stop the schedule while this period is checked: every 8 s the next request may be
		// created before the checks, and its ALTER ROLE may land between reading the Secret
		// and logging in with it. One created before the stop is listed and waited for.
		setRotateAfter(t, ctx, rc, "1h")
		reqs = scheduled(ctx)
		newest := waitRequestEnded(t, ctx, rc.ns, reqs[len(reqs)-1].Name)
		assert.GreaterOrEqual(t, len(reqs), period, "one scheduled request per period")
		dues := map[string]bool{}
		for _, r := range reqs {
			dues[r.Labels[opsv1alpha1.LabelRotationDue]] = true
		}
		assert.Len(t, dues, len(reqs), "each for its own due time")
		rc.fates[rc.primary()] = podKept
		rc.checkRotated(t, ctx, newest.Name)
		rc.advance(t, ctx)
		checked = newest.Name
	}
}

// setRotateAfter sets spec.authSecret.rotateAfter of rc's database and waits until the
// provisioner has observed it: syncs are serialized per database, so no sync under the
// previous schedule (which may create a request) runs after that.
func setRotateAfter(t testing.TB, ctx context.Context, rc *rotationCase, every string) {
	t.Helper()
	patch := fmt.Sprintf(`{"spec":{"authSecret":{"rotateAfter":%q}}}`, every)
	pg, err := env.pgops.KubedbV1().Postgreses(rc.ns).Patch(ctx, rc.db, types.MergePatchType, []byte(patch), metav1.PatchOptions{})
	require.NoError(t, err)
	var last *kubedbv1.Postgres
	poll(t, ctx, "the provisioner to observe rotateAfter "+every, func(ctx context.Context) (bool, error) {
		got, err := env.pgops.KubedbV1().Postgreses(rc.ns).Get(ctx, rc.db, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		last = got
		return got.Status.ObservedGeneration >= pg.Generation, nil
	}, func() string { return describePostgres(last) })
}

// describePostgresNow describes a Postgres for a failure message, with a context of its
// own: the test's may have expired.
func describePostgresNow(t testing.TB, ns, name string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return describePostgres(getPostgres(t, ctx, ns, name))
}

// deleteWhenDone deletes rc's Postgres (WipeOut) once the test is done, without waiting, so
// that its pods do not load the machine for the rest of the suite.
func deleteWhenDone(t testing.TB, rc *rotationCase) {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = env.pgops.KubedbV1().Postgreses(rc.ns).Delete(ctx, rc.db, metav1.DeleteOptions{})
	})
}
