package provisioner

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8sfake "k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/record"

	kubedbv1 "github.com/pgops/pgops/pkg/apis/kubedb/v1"
	"github.com/pgops/pgops/pkg/generated/clientset/versioned/fake"
	"github.com/pgops/pgops/pkg/operator"
)

// TestRunProvisionsThroughInformers runs the controller as main does: the shared filtered
// informer factories, Run with workers, and a Postgres created after start.
func TestRunProvisionsThroughInformers(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	kube := k8sfake.NewClientset(userSecret("unrelated", map[string]string{"k": "v"}))
	pgops := fake.NewSimpleClientset()
	kubeInf := operator.NewOwnedKubeInformerFactory(kube, &operator.Options{})
	pgInf := operator.NewPgopsInformerFactory(pgops, &operator.Options{})
	c, err := New(ctx, kube, pgops, kubeInf, pgInf, Config{
		HealthChecker: &stubHealth{}, Recorder: record.NewFakeRecorder(1000), StatusPeriod: 200 * time.Millisecond,
	})
	require.NoError(t, err)
	kubeInf.Start(ctx.Done())
	pgInf.Start(ctx.Done())
	defer kubeInf.Shutdown()
	defer pgInf.Shutdown()
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx, 2) }()

	_, err = pgops.KubedbV1().Postgreses(testNS).Create(ctx, newPG("x", withReplicas(2)), metav1.CreateOptions{})
	require.NoError(t, err)

	require.Eventually(t, func() bool {
		sts, err := kube.AppsV1().StatefulSets(testNS).Get(ctx, "x", metav1.GetOptions{})
		return err == nil && *sts.Spec.Replicas == 2
	}, time.Minute, 50*time.Millisecond)
	require.Eventually(t, func() bool {
		pg, err := pgops.KubedbV1().Postgreses(testNS).Get(ctx, "x", metav1.GetOptions{})
		return err == nil && pg.Status.Phase == kubedbv1.DatabasePhaseProvisioning &&
			pg.Spec.AuthSecret != nil && pg.Spec.AuthSecret.Name == "x-auth"
	}, time.Minute, 50*time.Millisecond)

	// Only labelled Secrets are cached: checked once the cache holds the labelled one.
	require.Eventually(t, func() bool {
		_, err := c.secretLister.Secrets(testNS).Get("x-auth")
		return err == nil
	}, time.Minute, 50*time.Millisecond)
	_, err = c.secretLister.Secrets(testNS).Get("unrelated")
	require.Error(t, err)

	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(time.Minute):
		t.Fatal("Run did not return after cancel")
	}
}
