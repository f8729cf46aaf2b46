// Package integration tests pgops's API against a real kube-apiserver: the CRDs' schemas,
// defaults, validation and printer columns, and the generated clients.
package integration

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"

	kubedbv1 "github.com/pgops/pgops/pkg/apis/kubedb/v1"
	opsv1alpha1 "github.com/pgops/pgops/pkg/apis/ops/v1alpha1"
	pgopsclient "github.com/pgops/pgops/pkg/generated/clientset/versioned"
	pgopsinformers "github.com/pgops/pgops/pkg/generated/informers/externalversions"
	"github.com/pgops/pgops/test/localcluster"
	"github.com/pgops/pgops/test/testenv"
)

var cluster *localcluster.Cluster

func TestMain(m *testing.M) { testenv.Main(m, &cluster, localcluster.Options{}) }

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func newNamespace(t *testing.T, ctx context.Context) string {
	t.Helper()
	name := strings.ToLower(strings.ReplaceAll(t.Name(), "/", "-"))
	if len(name) > 50 {
		name = name[:50]
	}
	_, err := cluster.CreateNamespace(ctx, name)
	require.NoError(t, err)
	return name
}

func pgopsClient(t *testing.T) pgopsclient.Interface {
	client, err := pgopsclient.NewForConfig(cluster.AdminConfig())
	require.NoError(t, err)
	return client
}

// kubectlApply applies a manifest given as text and returns kubectl's output.
func kubectlApply(ctx context.Context, t *testing.T, manifest string) (string, error) {
	t.Helper()
	file := filepath.Join(t.TempDir(), "manifest.yaml")
	require.NoError(t, os.WriteFile(file, []byte(manifest), 0o600))
	out, err := cluster.Kubectl(ctx, "apply", "-f", file)
	return string(out), err
}

func TestExamplesApply(t *testing.T) {
	ctx := testContext(t)
	out, err := cluster.Kubectl(ctx, "apply", "-f", testenv.Path("examples"))
	require.NoError(t, err, string(out))
	for _, want := range []string{
		"namespace/demo", "postgres.kubedb.com/ha-postgres", "secret/ha-postgres-user-auth",
		"postgresopsrequest.ops.kubedb.com/pgops-rotate-auth-generated",
		"postgresopsrequest.ops.kubedb.com/pgops-rotate-auth-user",
	} {
		assert.Contains(t, string(out), want)
	}
}

func TestDefaultsLand(t *testing.T) {
	ctx := testContext(t)
	ns := newNamespace(t, ctx)
	_, err := kubectlApply(ctx, t, `
apiVersion: kubedb.com/v1
kind: Postgres
metadata: {name: minimal, namespace: `+ns+`}
spec: {version: "16.4"}
---
apiVersion: ops.kubedb.com/v1alpha1
kind: PostgresOpsRequest
metadata: {name: minimal-rotate, namespace: `+ns+`}
spec: {type: RotateAuth, databaseRef: {name: minimal}}
`)
	require.NoError(t, err)

	client := pgopsClient(t)
	pg, err := client.KubedbV1().Postgreses(ns).Get(ctx, "minimal", metav1.GetOptions{})
	require.NoError(t, err)
	require.NotNil(t, pg.Spec.Replicas)
	assert.Equal(t, int32(1), *pg.Spec.Replicas)
	assert.Equal(t, kubedbv1.StorageTypeDurable, pg.Spec.StorageType)
	assert.Equal(t, kubedbv1.DeletionPolicyDelete, pg.Spec.DeletionPolicy)
	require.NotNil(t, pg.Spec.StandbyMode)
	assert.Equal(t, kubedbv1.StandbyModeHot, *pg.Spec.StandbyMode)

	req, err := client.OpsV1alpha1().PostgresOpsRequests(ns).Get(ctx, "minimal-rotate", metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, opsv1alpha1.ApplyOptionIfReady, req.Spec.Apply)
}

func TestInvalidEnumsAreRejected(t *testing.T) {
	ctx := testContext(t)
	ns := newNamespace(t, ctx)
	cases := map[string]struct{ manifest, want string }{
		"ops type": {`
apiVersion: ops.kubedb.com/v1alpha1
kind: PostgresOpsRequest
metadata: {name: bad-type, namespace: ` + ns + `}
spec: {type: Foo, databaseRef: {name: pg}}
`, `spec.type: Unsupported value: "Foo": supported values: "RotateAuth"`},
		"apply": {`
apiVersion: ops.kubedb.com/v1alpha1
kind: PostgresOpsRequest
metadata: {name: bad-apply, namespace: ` + ns + `}
spec: {type: RotateAuth, databaseRef: {name: pg}, apply: Sometimes}
`, `spec.apply: Unsupported value: "Sometimes": supported values: "IfReady", "Always"`},
		"storageType": {`
apiVersion: kubedb.com/v1
kind: Postgres
metadata: {name: bad-storage, namespace: ` + ns + `}
spec: {version: "16.4", storageType: Cloud}
`, `spec.storageType: Unsupported value: "Cloud": supported values: "Durable", "Ephemeral"`},
		"missing databaseRef": {`
apiVersion: ops.kubedb.com/v1alpha1
kind: PostgresOpsRequest
metadata: {name: no-db, namespace: ` + ns + `}
spec: {type: RotateAuth}
`, `spec.databaseRef: Required value`},
		"replicas below one": {`
apiVersion: kubedb.com/v1
kind: Postgres
metadata: {name: zero, namespace: ` + ns + `}
spec: {version: "16.4", replicas: 0}
`, `spec.replicas: Invalid value: 0: spec.replicas in body should be greater than or equal to 1`},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			out, err := kubectlApply(ctx, t, tc.manifest)
			require.Error(t, err, out)
			assert.Contains(t, out, tc.want)
		})
	}
}

// Halt promises to keep a database's data; on Ephemeral storage there is none to keep once
// the pods are gone, so the API server refuses the promise when it is made, naming the field,
// at creation and on a later edit. Ephemeral with Delete (the default) or WipeOut is fine.
func TestHaltOnEphemeralStorageIsRefused(t *testing.T) {
	ctx := testContext(t)
	ns := newNamespace(t, ctx)
	for name, tc := range map[string]struct{ spec, want string }{
		"deletionPolicy Halt": {`{version: "16.4", storageType: Ephemeral, deletionPolicy: Halt}`, "spec.deletionPolicy: Halt keeps data"},
		"halted":              {`{version: "16.4", storageType: Ephemeral, halted: true}`, "spec.halted: halting removes the pods"},
	} {
		t.Run(name, func(t *testing.T) {
			out, err := kubectlApply(ctx, t, "apiVersion: kubedb.com/v1\nkind: Postgres\nmetadata: {name: eph, namespace: "+ns+"}\nspec: "+tc.spec+"\n")
			require.Error(t, err, out)
			assert.Contains(t, out, tc.want)
		})
	}
	out, err := kubectlApply(ctx, t, "apiVersion: kubedb.com/v1\nkind: Postgres\nmetadata: {name: eph, namespace: "+ns+"}\nspec: {version: \"16.4\", storageType: Ephemeral}\n")
	require.NoError(t, err, out)
	patched, err := cluster.Kubectl(ctx, "patch", "postgres", "eph", "-n", ns, "--type=merge", "-p", `{"spec":{"halted":true}}`)
	require.Error(t, err, string(patched))
	assert.Contains(t, string(patched), "spec.halted: halting removes the pods")
	patched, err = cluster.Kubectl(ctx, "patch", "postgres", "eph", "-n", ns, "--type=merge", "-p", `{"spec":{"deletionPolicy":"WipeOut"}}`)
	require.NoError(t, err, string(patched))
}

func TestOpsRequestSpecIsImmutable(t *testing.T) {
	ctx := testContext(t)
	ns := newNamespace(t, ctx)
	client := pgopsClient(t)
	req, err := client.OpsV1alpha1().PostgresOpsRequests(ns).Create(ctx, &opsv1alpha1.PostgresOpsRequest{
		ObjectMeta: metav1.ObjectMeta{Name: "rotate"},
		Spec: opsv1alpha1.PostgresOpsRequestSpec{
			Type: opsv1alpha1.OpsRequestTypeRotateAuth, DatabaseRef: opsv1alpha1.DatabaseReference{Name: "pg"},
		},
	}, metav1.CreateOptions{})
	require.NoError(t, err)

	req.Spec.DatabaseRef.Name = "another"
	_, err = client.OpsV1alpha1().PostgresOpsRequests(ns).Update(ctx, req, metav1.UpdateOptions{})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "spec is immutable")

	// Status stays writable through its subresource.
	fresh, err := client.OpsV1alpha1().PostgresOpsRequests(ns).Get(ctx, "rotate", metav1.GetOptions{})
	require.NoError(t, err)
	fresh.Status.Phase = opsv1alpha1.OpsRequestPhasePending
	_, err = client.OpsV1alpha1().PostgresOpsRequests(ns).UpdateStatus(ctx, fresh, metav1.UpdateOptions{})
	require.NoError(t, err)
}

func TestStorageTypeIsImmutable(t *testing.T) {
	ctx := testContext(t)
	ns := newNamespace(t, ctx)
	client := pgopsClient(t)
	pg, err := client.KubedbV1().Postgreses(ns).Create(ctx, &kubedbv1.Postgres{
		ObjectMeta: metav1.ObjectMeta{Name: "pg"},
		Spec:       kubedbv1.PostgresSpec{Version: "16.4", StorageType: kubedbv1.StorageTypeDurable},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	pg.Spec.StorageType = kubedbv1.StorageTypeEphemeral
	_, err = client.KubedbV1().Postgreses(ns).Update(ctx, pg, metav1.UpdateOptions{})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "storageType is immutable")
}

func TestPrinterColumns(t *testing.T) {
	ctx := testContext(t)
	ns := newNamespace(t, ctx)
	_, err := kubectlApply(ctx, t, `
apiVersion: kubedb.com/v1
kind: Postgres
metadata: {name: columns, namespace: `+ns+`}
spec: {version: "16.4"}
---
apiVersion: ops.kubedb.com/v1alpha1
kind: PostgresOpsRequest
metadata: {name: columns-rotate, namespace: `+ns+`}
spec: {type: RotateAuth, databaseRef: {name: columns}}
`)
	require.NoError(t, err)

	out, err := cluster.Kubectl(ctx, "get", "pg", "-n", ns)
	require.NoError(t, err, string(out))
	assert.Regexp(t, `(?m)^NAME\s+VERSION\s+STATUS\s+AGE$`, string(out))
	assert.Regexp(t, `(?m)^columns\s+16\.4\s+`, string(out))

	out, err = cluster.Kubectl(ctx, "get", "pgops", "-n", ns)
	require.NoError(t, err, string(out))
	assert.Regexp(t, `(?m)^NAME\s+TYPE\s+STATUS\s+AGE$`, string(out))
	assert.Regexp(t, `(?m)^columns-rotate\s+RotateAuth\s+`, string(out))

	// The categories make both kinds show up in `kubectl get kubedb`.
	out, err = cluster.Kubectl(ctx, "get", "kubedb", "-n", ns, "-o", "name")
	require.NoError(t, err, string(out))
	assert.Contains(t, string(out), "postgres.kubedb.com/columns")
	assert.Contains(t, string(out), "postgresopsrequest.ops.kubedb.com/columns-rotate")
}

func TestTypedClientsetListsAndWatches(t *testing.T) {
	ctx := testContext(t)
	ns := newNamespace(t, ctx)
	client := pgopsClient(t)

	pgWatch, err := client.KubedbV1().Postgreses(ns).Watch(ctx, metav1.ListOptions{})
	require.NoError(t, err)
	defer pgWatch.Stop()

	factory := pgopsinformers.NewSharedInformerFactoryWithOptions(client, 0, pgopsinformers.WithNamespace(ns))
	pgLister := factory.Kubedb().V1().Postgreses().Lister()
	reqLister := factory.Ops().V1alpha1().PostgresOpsRequests().Lister()
	factory.Start(ctx.Done())
	defer factory.Shutdown()
	require.True(t, cache.WaitForCacheSync(ctx.Done(),
		factory.Kubedb().V1().Postgreses().Informer().HasSynced,
		factory.Ops().V1alpha1().PostgresOpsRequests().Informer().HasSynced))

	_, err = client.KubedbV1().Postgreses(ns).Create(ctx, &kubedbv1.Postgres{
		ObjectMeta: metav1.ObjectMeta{Name: "watched"}, Spec: kubedbv1.PostgresSpec{Version: "16.4"},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	_, err = client.OpsV1alpha1().PostgresOpsRequests(ns).Create(ctx, &opsv1alpha1.PostgresOpsRequest{
		ObjectMeta: metav1.ObjectMeta{Name: "watched-rotate"},
		Spec: opsv1alpha1.PostgresOpsRequestSpec{
			Type: opsv1alpha1.OpsRequestTypeRotateAuth, DatabaseRef: opsv1alpha1.DatabaseReference{Name: "watched"},
		},
	}, metav1.CreateOptions{})
	require.NoError(t, err)

	select {
	case ev := <-pgWatch.ResultChan():
		assert.Equal(t, watch.Added, ev.Type)
		assert.Equal(t, "watched", ev.Object.(*kubedbv1.Postgres).Name)
	case <-ctx.Done():
		t.Fatal("no watch event for the new Postgres")
	}

	require.Eventually(t, func() bool {
		pgs, _ := pgLister.Postgreses(ns).List(everything)
		reqs, _ := reqLister.PostgresOpsRequests(ns).List(everything)
		return len(pgs) == 1 && len(reqs) == 1
	}, 30*time.Second, 50*time.Millisecond, "informers did not see both objects")

	list, err := client.OpsV1alpha1().PostgresOpsRequests(ns).List(ctx, metav1.ListOptions{})
	require.NoError(t, err)
	require.Len(t, list.Items, 1)
	assert.Equal(t, "watched-rotate", list.Items[0].Name)
}

// Manifests shaped like KubeDB's PostgreSQL guides apply unchanged under kubectl's strict
// field validation, including fields pgops accepts and ignores.
func TestKubeDBGuideManifestsApply(t *testing.T) {
	ctx := testContext(t)
	ns := newNamespace(t, ctx)
	out, err := kubectlApply(ctx, t, `
apiVersion: kubedb.com/v1
kind: Postgres
metadata: {name: quick-postgres, namespace: `+ns+`}
spec:
  version: "16.1"
  replicas: 3
  standbyMode: Hot
  streamingMode: Synchronous
  clientAuthMode: md5
  sslMode: disable
  authSecret:
    name: quick-postgres-auth
    externallyManaged: false
    rotateAfter: 720h
  leaderElection:
    leaseDurationSeconds: 15
    renewDeadlineSeconds: 10
    retryPeriodSeconds: 2
    maximumLagBeforeFailover: 67108864
  healthChecker:
    periodSeconds: 15
    timeoutSeconds: 10
    failureThreshold: 2
    disableWriteCheck: false
  podTemplate:
    metadata:
      annotations: {example.com/team: db}
    controller: {annotations: {example.com/owner: db}}
    spec:
      containers:
      - name: postgres
        resources:
          requests: {cpu: 500m, memory: 512Mi}
          limits: {memory: 1Gi}
      nodeSelector: {disktype: ssd}
  serviceTemplates:
  - alias: primary
    metadata:
      annotations: {passMe: ToService}
    spec:
      type: NodePort
      ports:
      - name: http
        port: 5432
  storageType: Durable
  storage:
    storageClassName: "standard"
    accessModes: [ReadWriteOnce]
    resources:
      requests: {storage: 1Gi}
  deletionPolicy: DoNotTerminate
---
apiVersion: ops.kubedb.com/v1alpha1
kind: PostgresOpsRequest
metadata: {name: pgops-rotate-auth-user, namespace: `+ns+`}
spec:
  type: RotateAuth
  databaseRef:
    name: quick-postgres
  authentication:
    secretRef:
      kind: Secret
      name: quick-postgres-user-auth
  timeout: 5m
  apply: IfReady
`)
	require.NoError(t, err, out)
	pg, err := pgopsClient(t).KubedbV1().Postgreses(ns).Get(ctx, "quick-postgres", metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, "500m", pg.Spec.PodTemplate.Spec.Containers[0].Resources.Requests.Cpu().String())
	assert.JSONEq(t, `{"leaseDurationSeconds":15,"renewDeadlineSeconds":10,"retryPeriodSeconds":2,"maximumLagBeforeFailover":67108864}`,
		string(pg.Spec.LeaderElection.Raw))
	assert.Equal(t, kubedbv1.DeletionPolicyDoNotTerminate, pg.Spec.DeletionPolicy)
}

// deletionPolicy DoNotTerminate refuses the deletion itself (manifests/policies), as
// KubeDB's webhook does: no finalizer holds a half-deleted database whose StatefulSet the
// garbage collector may already have removed. Another policy lets the deletion through.
func TestDoNotTerminateRefusesTheDeletion(t *testing.T) {
	ctx := testContext(t)
	ns := newNamespace(t, ctx)
	out, err := kubectlApply(ctx, t, "apiVersion: kubedb.com/v1\nkind: Postgres\nmetadata: {name: keep, namespace: "+ns+"}\n"+
		"spec: {version: \"16.4\", deletionPolicy: DoNotTerminate}\n")
	require.NoError(t, err, out)
	client := pgopsClient(t).KubedbV1().Postgreses(ns)
	// The API server loads a new policy asynchronously: wait until it refuses.
	var refusal error
	require.Eventually(t, func() bool {
		refusal = client.Delete(ctx, "keep", metav1.DeleteOptions{DryRun: []string{metav1.DryRunAll}})
		return refusal != nil
	}, time.Minute, 100*time.Millisecond, "the deletion is refused")
	assert.Contains(t, refusal.Error(), "has spec.deletionPolicy DoNotTerminate")
	for _, propagation := range []metav1.DeletionPropagation{metav1.DeletePropagationForeground, metav1.DeletePropagationBackground, metav1.DeletePropagationOrphan} {
		err := client.Delete(ctx, "keep", metav1.DeleteOptions{PropagationPolicy: &propagation})
		require.Error(t, err, "propagation %s", propagation)
		assert.Contains(t, err.Error(), "DoNotTerminate")
	}
	pg, err := client.Get(ctx, "keep", metav1.GetOptions{})
	require.NoError(t, err)
	assert.Nil(t, pg.DeletionTimestamp, "not even marked for deletion")

	patched, err := cluster.Kubectl(ctx, "patch", "postgres", "keep", "-n", ns, "--type=merge", "-p", `{"spec":{"deletionPolicy":"Delete"}}`)
	require.NoError(t, err, string(patched))
	require.NoError(t, client.Delete(ctx, "keep", metav1.DeleteOptions{}))
}
