package nodeagent

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/utils/ptr"

	kubedbv1 "github.com/pgops/pgops/pkg/apis/kubedb/v1"
	"github.com/pgops/pgops/pkg/controller/provisioner"
	pgopsclient "github.com/pgops/pgops/pkg/generated/clientset/versioned"
	"github.com/pgops/pgops/pkg/operator"
	"github.com/pgops/pgops/test/testenv"
)

// TestProvisionerInProcess runs the provisioner controller in this process against
// the cluster: a 1-replica Postgres gets its StatefulSet, the agent runs the pod as a
// real PostgreSQL, and the provisioner's own SQL health check (through the primary
// Service's ClusterIP, i.e. the agent's proxy) turns the phase Ready.
func TestProvisionerInProcess(t *testing.T) {
	ctx := testContext(t, 4*time.Minute)
	require.NoError(t, testenv.InstallCRDsAndRBAC(ctx, cluster))
	ns := namespace(ctx, t)
	cfg := cluster.AdminConfig()
	pgops, err := pgopsclient.NewForConfig(cfg)
	require.NoError(t, err)

	opts := operator.NewOptions("provisioner")
	opts.Namespace = ns
	kubeInformers := operator.NewOwnedKubeInformerFactory(client(), opts)
	pgopsInformers := operator.NewPgopsInformerFactory(pgops, opts)
	ctrl, err := provisioner.New(ctx, client(), pgops, kubeInformers, pgopsInformers, provisioner.Config{
		StatusPeriod: 2 * time.Second,
		Recorder:     record.NewFakeRecorder(1000),
	})
	require.NoError(t, err)
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	t.Cleanup(func() {
		stop()
		<-done
		kubeInformers.Shutdown()
		pgopsInformers.Shutdown()
	})
	kubeInformers.Start(runCtx.Done())
	pgopsInformers.Start(runCtx.Done())
	require.True(t, cache.WaitForCacheSync(ctx.Done(), ctrl.HasSynced))
	go func() {
		defer close(done)
		_ = ctrl.Run(runCtx, 2)
	}()

	pg := &kubedbv1.Postgres{
		ObjectMeta: metav1.ObjectMeta{Name: "one", Namespace: ns},
		Spec: kubedbv1.PostgresSpec{
			Version:     "15.4",
			Replicas:    ptr.To[int32](1),
			StorageType: kubedbv1.StorageTypeDurable,
			Storage: &corev1.PersistentVolumeClaimSpec{
				StorageClassName: ptr.To("standard"),
				AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
				Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{
					corev1.ResourceStorage: resource.MustParse("1Gi")}},
			},
			DeletionPolicy: kubedbv1.DeletionPolicyWipeOut,
		},
	}
	began := time.Now()
	_, err = pgops.KubedbV1().Postgreses(ns).Create(ctx, pg, metav1.CreateOptions{})
	require.NoError(t, err)
	var last *kubedbv1.Postgres
	err = wait.PollUntilContextCancel(ctx, 200*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		last, err = pgops.KubedbV1().Postgreses(ns).Get(ctx, "one", metav1.GetOptions{})
		return err == nil && last.Status.Phase == kubedbv1.DatabasePhaseReady, nil
	})
	if err != nil && last != nil {
		t.Logf("last status: %+v", last.Status)
	}
	require.NoError(t, err, "Postgres never Ready")
	t.Logf("Postgres Ready in %s", time.Since(began).Round(time.Millisecond))
	waitPod(ctx, t, ns, "one-0", "Ready", isReady)
}
