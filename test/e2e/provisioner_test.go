package e2e

import (
	"context"
	"database/sql"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	_ "github.com/lib/pq"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"

	kubedbv1 "github.com/pgops/pgops/pkg/apis/kubedb/v1"
	opsv1alpha1 "github.com/pgops/pgops/pkg/apis/ops/v1alpha1"
	"github.com/pgops/pgops/pkg/controller/provisioner"
	"github.com/pgops/pgops/pkg/credential"
)

// provisionTimeout bounds one provisioner test: a 3-member database takes a while on a slow
// machine (initdb, then each standby's pg_basebackup behind OrderedReady).
const provisionTimeout = 8 * time.Minute

// createPostgres creates a Postgres like examples/10-postgres.yaml (durable storage of class
// "standard", WipeOut) with replicas members, after mutate. Its pods request what an idle
// test database needs (testResources), so the nodes' real capacity holds many.
func createPostgres(t testing.TB, ctx context.Context, ns, name string, replicas int32, mutate ...func(*kubedbv1.Postgres)) {
	t.Helper()
	pg := &kubedbv1.Postgres{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: kubedbv1.PostgresSpec{
			Version:     postgresVersion,
			Replicas:    ptr.To(replicas),
			StandbyMode: ptr.To(kubedbv1.StandbyModeHot),
			StorageType: kubedbv1.StorageTypeDurable,
			Storage: &corev1.PersistentVolumeClaimSpec{
				StorageClassName: ptr.To("standard"),
				AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
				Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{
					corev1.ResourceStorage: resource.MustParse("1Gi")}},
			},
			DeletionPolicy: kubedbv1.DeletionPolicyWipeOut,
			PodTemplate: kubedbv1.PodTemplateSpec{Spec: kubedbv1.PodSpec{Containers: []kubedbv1.ContainerSpec{{
				Name: provisioner.ContainerName, Resources: testResources(),
			}}}},
		},
	}
	for _, m := range mutate {
		m(pg)
	}
	_, err := env.pgops.KubedbV1().Postgreses(ns).Create(ctx, pg, metav1.CreateOptions{})
	require.NoError(t, err)
}

// postgresVersion is the version test databases ask for: the nodes have PostgreSQL 15
// (test/kubenode.PostgresImage).
const postgresVersion = "15.8"

// testResources are the requests of a test database's pods: an idle PostgreSQL uses a few
// millicores, and the nodes have 2 cores each (the default 250m would fit seven pods).
func testResources() corev1.ResourceRequirements {
	return corev1.ResourceRequirements{Requests: corev1.ResourceList{
		corev1.ResourceCPU:    resource.MustParse("20m"),
		corev1.ResourceMemory: resource.MustParse("64Mi"),
	}}
}

// openDB opens a connection pool to PostgreSQL at host:5432 as user.
func openDB(t testing.TB, host, user, password string) *sql.DB {
	t.Helper()
	db := openDBQuietly(host, user, password)
	t.Cleanup(func() { db.Close() })
	return db
}

// openDBQuietly is a handle of one connection to the "postgres" database at host; the
// caller closes it.
func openDBQuietly(host, user, password string) *sql.DB {
	dsn := url.URL{
		Scheme:   "postgres",
		User:     url.UserPassword(user, password),
		Host:     net.JoinHostPort(host, strconv.Itoa(kubedbv1.PostgresPort)),
		Path:     "/postgres",
		RawQuery: "sslmode=disable&connect_timeout=10&application_name=pgops-e2e",
	}
	db, _ := sql.Open("postgres", dsn.String()) // lib/pq's Open only registers the DSN
	db.SetMaxOpenConns(1)
	return db
}

func getPod(t testing.TB, ctx context.Context, ns, name string) *corev1.Pod {
	t.Helper()
	pod, err := env.kube.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
	require.NoError(t, err)
	return pod
}

func getStatefulSet(t testing.TB, ctx context.Context, ns, name string) *appsv1.StatefulSet {
	t.Helper()
	sts, err := env.kube.AppsV1().StatefulSets(ns).Get(ctx, name, metav1.GetOptions{})
	require.NoError(t, err)
	return sts
}

// hasEvent reports whether an event about the Postgres ns/db has reason and contains substr.
func hasEvent(ctx context.Context, ns, db, reason, substr string) bool {
	events, err := env.kube.CoreV1().Events(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return false
	}
	for _, e := range events.Items {
		if e.InvolvedObject.Name == db && e.Reason == reason && strings.Contains(e.Message, substr) {
			return true
		}
	}
	return false
}

// requireNoStatefulSetChurn checks that the provisioner never updated ns/db's StatefulSet
// although it synced it many times: the desired StatefulSet matches what the API server
// stores, defaults included, so drift correction does not write on every sync.
func requireNoStatefulSetChurn(t testing.TB, ctx context.Context, ns, db string) {
	t.Helper()
	assert.False(t, hasEvent(ctx, ns, db, provisioner.ReasonStatefulSetUpdated, ""), "no StatefulSetUpdated event")
	data, err := os.ReadFile(operatorLog("provisioner"))
	require.NoError(t, err)
	for _, line := range strings.Split(string(data), "\n") {
		if strings.Contains(line, `"`+ns+"/"+db+`"`) &&
			(strings.Contains(line, "Updated statefulset") || strings.Contains(line, "Statefulset update was a no-op")) {
			t.Errorf("the provisioner wrote a converged StatefulSet: %s", line)
		}
	}
}

// checkPrimaryLogin logs in through the primary Service's ClusterIP with the auth Secret's
// credential, as a client would.
func checkPrimaryLogin(t testing.TB, ctx context.Context, ns, db string) credentialPair {
	t.Helper()
	cred := authCredential(t, ctx, ns, db)
	watchForLeaks(t, cred.password)
	target := primaryTarget(t, ctx, ns, db)
	ok, err := credential.VerifyLogin(ctx, target, cred.username, cred.password)
	require.NoError(t, err)
	assert.True(t, ok, "the auth Secret's credential logs in through the primary Service")
	ok, err = credential.VerifyLogin(ctx, target, cred.username, cred.password+"-wrong")
	require.NoError(t, err)
	assert.False(t, ok, "a wrong password is rejected")
	return cred
}

func TestProvisionOneReplica(t *testing.T) {
	parallel(t)
	ctx := testContext(t, provisionTimeout)
	ns := newNamespace(t, ctx)
	createPostgres(t, ctx, ns, "single", 1)
	waitPostgresPhase(t, ctx, ns, "single", kubedbv1.DatabasePhaseReady)

	pg := getPostgres(t, ctx, ns, "single")
	require.NotNil(t, pg.Spec.AuthSecret)
	assert.Equal(t, "single-auth", pg.Spec.AuthSecret.Name, "a generated Secret is written back into the spec")
	for _, typ := range []string{kubedbv1.ConditionProvisioned, kubedbv1.ConditionReady, kubedbv1.ConditionAcceptingConnection} {
		assert.True(t, meta.IsStatusConditionTrue(pg.Status.Conditions, typ), "%s\n%s", typ, describePostgres(pg))
	}
	checkPrimaryLogin(t, ctx, ns, "single")

	for _, svc := range []string{"single", "single-pods"} {
		_, err := env.kube.CoreV1().Services(ns).Get(ctx, svc, metav1.GetOptions{})
		assert.NoError(t, err, "service %s", svc)
	}
	_, err := env.kube.CoreV1().Services(ns).Get(ctx, "single-standby", metav1.GetOptions{})
	assert.True(t, apierrors.IsNotFound(err), "no standby Service with one replica")
	assert.Equal(t, kubedbv1.RolePrimary, getPod(t, ctx, ns, "single-0").Labels[kubedbv1.LabelRole])
	requireNoStatefulSetChurn(t, ctx, ns, "single")
}

func TestProvisionThreeReplicas(t *testing.T) {
	parallel(t)
	ctx := testContext(t, provisionTimeout)
	ns := newNamespace(t, ctx)
	createPostgres(t, ctx, ns, "ha", 3)
	waitPostgresPhase(t, ctx, ns, "ha", kubedbv1.DatabasePhaseReady)
	cred := checkPrimaryLogin(t, ctx, ns, "ha")

	standby, err := env.kube.CoreV1().Services(ns).Get(ctx, "ha-standby", metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, kubedbv1.RoleStandby, standby.Spec.Selector[kubedbv1.LabelRole])
	for i, role := range []string{kubedbv1.RolePrimary, kubedbv1.RoleStandby, kubedbv1.RoleStandby} {
		assert.Equal(t, role, getPod(t, ctx, ns, fmt.Sprintf("ha-%d", i)).Labels[kubedbv1.LabelRole], "pod ha-%d", i)
	}

	// Data written on the primary (through its Service) is readable on each standby.
	primary := openDB(t, primaryTarget(t, ctx, ns, "ha").Host, cred.username, cred.password)
	_, err = primary.ExecContext(ctx, `CREATE TABLE e2e (id int PRIMARY KEY, note text)`)
	require.NoError(t, err)
	_, err = primary.ExecContext(ctx, `INSERT INTO e2e VALUES (1, 'written on the primary')`)
	require.NoError(t, err)
	for _, name := range []string{"ha-1", "ha-2"} {
		pod := getPod(t, ctx, ns, name)
		require.NotEmpty(t, pod.Status.PodIP)
		db := openDB(t, pod.Status.PodIP, cred.username, cred.password)
		var inRecovery bool
		require.NoError(t, db.QueryRowContext(ctx, `SELECT pg_is_in_recovery()`).Scan(&inRecovery))
		assert.True(t, inRecovery, "%s is a standby", name)
		var note string
		poll(t, ctx, "the row to replicate to "+name, func(ctx context.Context) (bool, error) {
			err := db.QueryRowContext(ctx, `SELECT note FROM e2e WHERE id = 1`).Scan(&note)
			return err == nil, nil
		}, func() string { return "not replicated" })
		assert.Equal(t, "written on the primary", note)
	}
	target := primaryTarget(t, ctx, ns, "ha")
	target.User, target.Password = cred.username, cred.password
	// The standbys' walsenders may still be in catchup when the database turns Ready.
	streaming := 0
	poll(t, ctx, "both standbys streaming", func(ctx context.Context) (bool, error) {
		n, err := credential.StreamingStandbys(ctx, target)
		streaming = n
		return err == nil && n == 2, nil
	}, func() string { return fmt.Sprintf("%d of 2 standbys stream", streaming) })

	// A standby's server goes down: Critical while it is down, Ready once the kubelet has
	// restarted it. A killed server is back within seconds, which the provisioner's checks
	// can miss, so the server is first stopped (SIGSTOP to the container's process group:
	// the agent, the postmaster and its children): it stays down, its readiness probe fails and the pod turns NotReady,
	// for as long as it takes the phase to turn Critical. Then it is killed, and the
	// kubelet restarts it.
	ha2 := getPod(t, ctx, ns, "ha-2")
	restarts := ha2.Status.ContainerStatuses[0].RestartCount
	agentPID, err := env.nodes.ContainerPID(ha2, provisioner.ContainerName)
	require.NoError(t, err, "ha-2 runs")
	require.NoError(t, syscall.Kill(-agentPID, syscall.SIGSTOP))
	waitPostgresPhase(t, ctx, ns, "ha", kubedbv1.DatabasePhaseCritical)
	// SIGKILL ends a stopped process too. The liveness probe, which fails while the server is
	// stopped, may have killed it already; the restart count below shows it died either way.
	_ = env.nodes.KillContainer(ha2, provisioner.ContainerName)
	waitPostgresPhase(t, ctx, ns, "ha", kubedbv1.DatabasePhaseReady)
	assert.Greater(t, getPod(t, ctx, ns, "ha-2").Status.ContainerStatuses[0].RestartCount, restarts)
	poll(t, ctx, "both standbys streaming again", func(ctx context.Context) (bool, error) {
		n, err := credential.StreamingStandbys(ctx, target)
		return err == nil && n == 2, nil
	}, func() string { return "fewer than 2 standbys stream" })
	requireNoStatefulSetChurn(t, ctx, ns, "ha")
}

// waitProvisioningBlocked waits until the provisioner reports, in ProvisioningStarted=False
// with reason, why it cannot provision ns/db, and returns the Postgres and that condition.
func waitProvisioningBlocked(t testing.TB, ctx context.Context, ns, db, reason string) (*kubedbv1.Postgres, *metav1.Condition) {
	t.Helper()
	var last *kubedbv1.Postgres
	poll(t, ctx, "the provisioner to report "+reason, func(ctx context.Context) (bool, error) {
		pg, err := env.pgops.KubedbV1().Postgreses(ns).Get(ctx, db, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		last = pg
		cond := meta.FindStatusCondition(pg.Status.Conditions, kubedbv1.ConditionProvisioningStarted)
		return cond != nil && cond.Status == metav1.ConditionFalse && cond.Reason == reason, nil
	}, func() string { return describePostgres(last) })
	return last, meta.FindStatusCondition(last.Status.Conditions, kubedbv1.ConditionProvisioningStarted)
}

func TestMissingUserSecretIsReported(t *testing.T) {
	parallel(t)
	ctx := testContext(t, provisionTimeout)
	ns := newNamespace(t, ctx)
	createPostgres(t, ctx, ns, "byo", 1, func(pg *kubedbv1.Postgres) {
		pg.Spec.AuthSecret = &kubedbv1.SecretReference{Name: "byo-credential"}
	})

	last, cond := waitProvisioningBlocked(t, ctx, ns, "byo", provisioner.ReasonAuthSecretNotFound)
	assert.Contains(t, cond.Message, "secret "+ns+"/byo-credential not found")
	assert.Equal(t, kubedbv1.DatabasePhaseProvisioning, last.Status.Phase)
	poll(t, ctx, "a Warning event saying why", func(ctx context.Context) (bool, error) {
		return hasEvent(ctx, ns, "byo", provisioner.ReasonAuthSecretNotFound, "byo-credential not found"), nil
	}, func() string { return "no event" })
	_, err := env.kube.AppsV1().StatefulSets(ns).Get(ctx, "byo", metav1.GetOptions{})
	assert.True(t, apierrors.IsNotFound(err), "no StatefulSet without a credential")

	// A Secret made with kubectl create secret --from-file from an editor's file ends with a
	// newline, which pods cannot carry: refused before any pod exists, with the rule named.
	_, err = env.kube.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "byo-credential", Namespace: ns},
		Type:       corev1.SecretTypeBasicAuth,
		StringData: map[string]string{"username": "postgres", "password": "Byo-Password-2026\n"},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	_, cond = waitProvisioningBlocked(t, ctx, ns, "byo", provisioner.ReasonAuthSecretInvalid)
	assert.Contains(t, cond.Message, "control")
	_, err = env.kube.AppsV1().StatefulSets(ns).Get(ctx, "byo", metav1.GetOptions{})
	assert.True(t, apierrors.IsNotFound(err), "no StatefulSet with a credential pods cannot carry")
	require.NoError(t, env.kube.CoreV1().Secrets(ns).Delete(ctx, "byo-credential", metav1.DeleteOptions{}))

	// Once the user creates the Secret, the database comes up with it; the Secret is never
	// written.
	const password = "Byo-Password-2026"
	watchForLeaks(t, password)
	_, err = env.kube.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "byo-credential", Namespace: ns},
		Type:       corev1.SecretTypeBasicAuth,
		StringData: map[string]string{"username": "postgres", "password": password},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	created := getSecret(t, ctx, ns, "byo-credential")
	waitPostgresPhase(t, ctx, ns, "byo", kubedbv1.DatabasePhaseReady)
	assert.Equal(t, password, checkPrimaryLogin(t, ctx, ns, "byo").password)
	assert.Equal(t, created.ResourceVersion, getSecret(t, ctx, ns, "byo-credential").ResourceVersion, "the user's Secret is not written")
}

// setPausedCondition sets (status != "") or removes the Paused condition on the Postgres's
// status, as the ops-manager does. A pause belongs to a running request, so the test plays
// the ops-manager: it stops the real one and holds the pause for a request "e2e-holder"
// marked Progressing, which it deletes (and the ops-manager restarts) on resume.
func setPausedCondition(t testing.TB, ctx context.Context, ns, db string, status metav1.ConditionStatus) {
	t.Helper()
	requests := env.pgops.OpsV1alpha1().PostgresOpsRequests(ns)
	var holder *kubedbv1.OpsRequestReference
	if status != "" {
		req, err := requests.Get(ctx, "e2e-holder", metav1.GetOptions{})
		if err != nil {
			killOpsManager(t)
			req, err = requests.Create(ctx, &opsv1alpha1.PostgresOpsRequest{
				ObjectMeta: metav1.ObjectMeta{Name: "e2e-holder", Namespace: ns},
				Spec: opsv1alpha1.PostgresOpsRequestSpec{Type: opsv1alpha1.OpsRequestTypeRotateAuth,
					DatabaseRef: opsv1alpha1.DatabaseReference{Name: db}},
			}, metav1.CreateOptions{})
			require.NoError(t, err)
			req.Status.Phase = opsv1alpha1.OpsRequestPhaseProgressing
			req, err = requests.UpdateStatus(ctx, req, metav1.UpdateOptions{})
			require.NoError(t, err)
		}
		holder = &kubedbv1.OpsRequestReference{Name: req.Name, UID: req.UID}
	}
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		pg := getPostgres(t, ctx, ns, db)
		if status == "" {
			meta.RemoveStatusCondition(&pg.Status.Conditions, kubedbv1.ConditionPaused)
		} else {
			meta.SetStatusCondition(&pg.Status.Conditions, metav1.Condition{
				Type: kubedbv1.ConditionPaused, Status: status, Reason: "E2ETest", Message: "paused by the e2e test"})
		}
		pg.Status.PausedBy = holder
		_, err := env.pgops.KubedbV1().Postgreses(ns).UpdateStatus(ctx, pg, metav1.UpdateOptions{FieldManager: "pgops-e2e"})
		return err
	})
	require.NoError(t, err)
	if status == "" {
		if err := requests.Delete(ctx, "e2e-holder", metav1.DeleteOptions{}); err == nil {
			startOpsManager(t, ctx)
		}
	}
}

func envValue(c corev1.Container, name string) (string, bool) {
	for _, e := range c.Env {
		if e.Name == name {
			return e.Value, true
		}
	}
	return "", false
}

func TestPauseKeepsHandEditUntilResume(t *testing.T) {
	// Not parallel: it kills and restarts the shared ops-manager.
	ctx := testContext(t, provisionTimeout)
	ns := newNamespace(t, ctx)
	createPostgres(t, ctx, ns, "paused", 1)
	waitPostgresPhase(t, ctx, ns, "paused", kubedbv1.DatabasePhaseReady)
	podUID := getPod(t, ctx, ns, "paused-0").UID
	wantImage := getStatefulSet(t, ctx, ns, "paused").Spec.Template.Spec.Containers[0].Image

	// Ask for a pause and wait for the provisioner's answer.
	setPausedCondition(t, ctx, ns, "paused", metav1.ConditionUnknown)
	var last *kubedbv1.Postgres
	poll(t, ctx, "the provisioner to confirm the pause", func(ctx context.Context) (bool, error) {
		pg, err := env.pgops.KubedbV1().Postgreses(ns).Get(ctx, "paused", metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		last = pg
		return meta.IsStatusConditionTrue(pg.Status.Conditions, kubedbv1.ConditionPaused), nil
	}, func() string { return describePostgres(last) })

	// A hand edit of the StatefulSet, then a spec change.
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		sts := getStatefulSet(t, ctx, ns, "paused")
		c := &sts.Spec.Template.Spec.Containers[0]
		c.Image = "example.com/hand-edited:1"
		c.Env = append(c.Env, corev1.EnvVar{Name: "HAND_EDIT", Value: "1"})
		_, err := env.kube.AppsV1().StatefulSets(ns).Update(ctx, sts, metav1.UpdateOptions{FieldManager: "kubectl-edit"})
		return err
	})
	require.NoError(t, err)
	pg, err := env.pgops.KubedbV1().Postgreses(ns).Patch(ctx, "paused", types.MergePatchType,
		[]byte(`{"spec":{"podTemplate":{"metadata":{"annotations":{"e2e/spec-change":"1"}}}}}`), metav1.PatchOptions{})
	require.NoError(t, err)
	generation := pg.Generation

	// The provisioner has synced since both edits once it observed the new generation; the
	// hand edit is still there and the spec change is not applied.
	poll(t, ctx, "the provisioner to observe the spec change while paused", func(ctx context.Context) (bool, error) {
		pg, err := env.pgops.KubedbV1().Postgreses(ns).Get(ctx, "paused", metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		last = pg
		return pg.Status.ObservedGeneration >= generation, nil
	}, func() string { return describePostgres(last) })
	sts := getStatefulSet(t, ctx, ns, "paused")
	c := sts.Spec.Template.Spec.Containers[0]
	assert.Equal(t, "example.com/hand-edited:1", c.Image, "the hand edit stays while paused")
	_, edited := envValue(c, "HAND_EDIT")
	assert.True(t, edited, "the hand edit stays while paused")
	assert.NotContains(t, sts.Spec.Template.Annotations, "e2e/spec-change", "spec changes wait for the resume")
	assert.True(t, meta.IsStatusConditionTrue(getPostgres(t, ctx, ns, "paused").Status.Conditions, kubedbv1.ConditionPaused))

	// Resume: the hand edit is reverted and the spec change applied, without restarting pods
	// (updateStrategy OnDelete).
	setPausedCondition(t, ctx, ns, "paused", "")
	poll(t, ctx, "the hand edit to be reverted after resume", func(ctx context.Context) (bool, error) {
		s, err := env.kube.AppsV1().StatefulSets(ns).Get(ctx, "paused", metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		sts = s
		c := s.Spec.Template.Spec.Containers[0]
		_, edited := envValue(c, "HAND_EDIT")
		return c.Image == wantImage && !edited && s.Spec.Template.Annotations["e2e/spec-change"] == "1", nil
	}, func() string { return fmt.Sprintf("template: %+v", sts.Spec.Template) })
	// Events are posted asynchronously, after the update they report.
	poll(t, ctx, "a StatefulSetUpdated event", func(ctx context.Context) (bool, error) {
		return hasEvent(ctx, ns, "paused", provisioner.ReasonStatefulSetUpdated, "containers"), nil
	}, func() string { return "no event" })
	waitPostgresPhase(t, ctx, ns, "paused", kubedbv1.DatabasePhaseReady)
	assert.Equal(t, podUID, getPod(t, ctx, ns, "paused-0").UID, "the provisioner restarts no pod")
}

func TestWipeOutLeavesNothingBehind(t *testing.T) {
	parallel(t)
	ctx := testContext(t, provisionTimeout)
	ns := newNamespace(t, ctx)
	createPostgres(t, ctx, ns, "gone", 2)
	waitPostgresPhase(t, ctx, ns, "gone", kubedbv1.DatabasePhaseReady)
	pvcs, err := env.kube.CoreV1().PersistentVolumeClaims(ns).List(ctx, metav1.ListOptions{})
	require.NoError(t, err)
	require.Len(t, pvcs.Items, 2, "one claim per member")

	require.NoError(t, env.pgops.KubedbV1().Postgreses(ns).Delete(ctx, "gone", metav1.DeleteOptions{}))
	var left []string
	poll(t, ctx, "WipeOut to remove everything", func(ctx context.Context) (bool, error) {
		left = nil
		if _, err := env.pgops.KubedbV1().Postgreses(ns).Get(ctx, "gone", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			left = append(left, "postgres gone")
		}
		if _, err := env.kube.AppsV1().StatefulSets(ns).Get(ctx, "gone", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			left = append(left, "statefulset gone")
		}
		for _, svc := range []string{"gone", "gone-pods", "gone-standby"} {
			if _, err := env.kube.CoreV1().Services(ns).Get(ctx, svc, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
				left = append(left, "service "+svc)
			}
		}
		if _, err := env.kube.CoreV1().ConfigMaps(ns).Get(ctx, "gone-scripts", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			left = append(left, "configmap gone-scripts")
		}
		if _, err := env.kube.CoreV1().Secrets(ns).Get(ctx, "gone-auth", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			left = append(left, "secret gone-auth")
		}
		if pvcs, err := env.kube.CoreV1().PersistentVolumeClaims(ns).List(ctx, metav1.ListOptions{}); err == nil {
			for _, p := range pvcs.Items {
				left = append(left, "pvc "+p.Name)
			}
		}
		if pods, err := env.kube.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{}); err == nil {
			for _, p := range pods.Items {
				left = append(left, "pod "+p.Name)
			}
		}
		return len(left) == 0, nil
	}, func() string { return "left behind: " + strings.Join(left, ", ") })
}
