package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	opsv1alpha1 "github.com/pgops/pgops/pkg/apis/ops/v1alpha1"
	"github.com/pgops/pgops/pkg/controller/opsmanager"
	"github.com/pgops/pgops/pkg/credential"
)

// applyRotateAuthWithRestart applies a generated-credential RotateAuth name for db in
// restart mode mode.
func applyRotateAuthWithRestart(t *testing.T, ctx context.Context, ns, name, db string, mode opsv1alpha1.RestartMode) {
	t.Helper()
	kubectlApply(t, ctx, fmt.Sprintf("apiVersion: ops.kubedb.com/v1alpha1\nkind: PostgresOpsRequest\nmetadata: {name: %s, namespace: %s}\n"+
		"spec: {type: RotateAuth, databaseRef: {name: %s}, timeout: 5m, rotateAuth: {restart: %s}}\n", name, ns, db, mode))
}

// TestZeroDowntimeRotation rotates a 3-replica database twice while pgbench writes to its
// primary: in mode StandbysOnly the standbys restart and the primary keeps every session; in
// mode None no pod restarts at all. Neither loses a client or a transaction, and afterwards a
// deleted standby comes back with the new credential and streams.
func TestZeroDowntimeRotation(t *testing.T) {
	ctx := testContext(t, 12*time.Minute)
	rc := newRotationCase(t, ctx, 3)
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
		for i, tps := range report.tps {
			assert.Positive(t, tps, "pgbench commits in every second of the %s rotation (second %.0f):\n%s", mode, report.seconds[i], bench.output())
		}
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
}
