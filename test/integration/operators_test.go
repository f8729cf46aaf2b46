package integration

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"

	"github.com/pgops/pgops/pkg/operator"

	"github.com/pgops/pgops/test/testenv"
)

// Both operators start, sync their caches, win their Lease and shut down cleanly on
// SIGTERM, running with only the RBAC that manifests/ gives their ServiceAccounts.
func TestOperatorsRunWithTheirServiceAccounts(t *testing.T) {
	ctx := testContext(t)
	work := t.TempDir()
	binaries, err := testenv.BuildOperators(filepath.Join(work, "bin"))
	require.NoError(t, err)

	for _, name := range []string{"provisioner", "ops-manager"} {
		t.Run(name, func(t *testing.T) {
			cfg, err := cluster.ServiceAccountConfig(ctx, "pgops-system", "pgops-"+name)
			require.NoError(t, err)
			logPath := filepath.Join(work, name+".log")
			logFile, err := os.Create(logPath)
			require.NoError(t, err)
			defer logFile.Close()

			op, err := testenv.StartOperator(name, binaries[name], cfg, work, logFile)
			require.NoError(t, err)
			if err := op.WaitReady(ctx); err != nil {
				op.Kill()
				log, _ := os.ReadFile(logPath)
				t.Fatalf("%v\n%s", err, log)
			}
			lease, err := cluster.Client().CoordinationV1().Leases("pgops-system").Get(ctx, "pgops-"+name, metav1.GetOptions{})
			require.NoError(t, err)
			require.NotNil(t, lease.Spec.HolderIdentity)
			assert.NotEmpty(t, *lease.Spec.HolderIdentity)

			require.NoError(t, op.Stop(30*time.Second), "clean exit on SIGTERM")
			log, _ := os.ReadFile(logPath)
			assert.NotContains(t, string(log), "is forbidden", "the operator hit an RBAC denial")
		})
	}
}

// A leader whose controllers fail to start (a flag only they check, say) ends the election
// and gives up its Lease, so the standby takes over instead of waiting behind a leader that
// does nothing.
func TestALeaderWhoseRunFailsGivesUpItsLease(t *testing.T) {
	ctx := testContext(t)
	opts := operator.NewOptions("pgops-failing-leader")
	opts.Kubeconfig = cluster.Kubeconfig
	opts.LeaderElectionNS = "default"
	opts.HealthAddr, opts.MetricsAddr = "", ""
	opts.LeaseDuration, opts.RenewDeadline, opts.RetryPeriod = 3*time.Second, 2*time.Second, 500*time.Millisecond
	failed := errors.New("--some-flag: not valid")

	done := make(chan error, 1)
	go func() {
		done <- operator.Run(ctx, opts, func(context.Context, *rest.Config, *operator.Options, *operator.Health) error {
			return failed
		})
	}()
	select {
	case err := <-done:
		require.ErrorIs(t, err, failed)
	case <-time.After(30 * time.Second):
		t.Fatal("operator.Run kept running after its controllers failed")
	}
	lease, err := cluster.Client().CoordinationV1().Leases("default").Get(ctx, "pgops-failing-leader", metav1.GetOptions{})
	require.NoError(t, err)
	assert.Empty(t, ptr.Deref(lease.Spec.HolderIdentity, ""), "the Lease is released")
}
