package e2e

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	kubedbv1 "github.com/pgops/pgops/pkg/apis/kubedb/v1"
	opsv1alpha1 "github.com/pgops/pgops/pkg/apis/ops/v1alpha1"
	"github.com/pgops/pgops/pkg/controller/opsmanager"
	"github.com/pgops/pgops/pkg/controller/provisioner"
	"github.com/pgops/pgops/pkg/credential"
)

// RotateAuth safety end to end: never a lockout, never data loss. Each test writes a row
// before the request and reads it back after it (rotationCase.writeData and checkData).

// safetyTimeout bounds one test: a 3-member database, a rotation and a cleanup on a slow
// machine.
const safetyTimeout = 15 * time.Minute

// dataNote is the row writeData writes and checkData reads back.
const dataNote = "written before the request"

// writeData creates a table with a row on the primary; the checks of rc read it back.
func (rc *rotationCase) writeData(t testing.TB, ctx context.Context) {
	t.Helper()
	db := openDB(t, primaryTarget(t, ctx, rc.ns, rc.db).Host, rc.before.username, rc.before.password)
	_, err := db.ExecContext(ctx, `CREATE TABLE e2e_kept (id int PRIMARY KEY, note text)`)
	require.NoError(t, err)
	_, err = db.ExecContext(ctx, `INSERT INTO e2e_kept VALUES (1, $1)`, dataNote)
	require.NoError(t, err)
	rc.wroteData = true
}

// checkData reads writeData's row back, with the auth Secret's credential, through the
// primary Service and on every standby (after replication, or a fresh clone).
func (rc *rotationCase) checkData(t testing.TB, ctx context.Context) {
	t.Helper()
	if !rc.wroteData {
		return
	}
	cred := authCredential(t, ctx, rc.ns, rc.db)
	hosts := map[string]string{"primary Service": primaryTarget(t, ctx, rc.ns, rc.db).Host}
	pods, err := env.kube.CoreV1().Pods(rc.ns).List(ctx, metav1.ListOptions{LabelSelector: kubedbv1.LabelInstance + "=" + rc.db})
	require.NoError(t, err)
	for _, p := range pods.Items {
		if p.Name != rc.primary() {
			require.NotEmpty(t, p.Status.PodIP, "pod %s has an IP", p.Name)
			hosts["standby "+p.Name] = p.Status.PodIP
		}
	}
	for where, host := range hosts {
		db := openDB(t, host, cred.username, cred.password)
		var note string
		var lastErr error
		poll(t, ctx, "the row written before the request on the "+where, func(ctx context.Context) (bool, error) {
			lastErr = db.QueryRowContext(ctx, `SELECT note FROM e2e_kept WHERE id = 1`).Scan(&note)
			return lastErr == nil, nil
		}, func() string { return fmt.Sprintf("last error: %v", lastErr) })
		assert.Equal(t, dataNote, note, "the data on the %s", where)
	}
}

// ephemeralStorage edits examples/10-postgres.yaml to storageType Ephemeral, without a
// claim template.
func ephemeralStorage(manifest string) string {
	durable := regexp.MustCompile(`(?m)^  storageType: Durable\n  storage:\n(    .*\n)*`)
	return durable.ReplaceAllString(manifest, "  storageType: Ephemeral\n")
}

// applyRotateAuth applies a RotateAuth request name for the Postgres db, to the user's
// Secret secret unless it is "" (then to a generated credential).
func applyRotateAuth(t testing.TB, ctx context.Context, ns, name, db, secret string) {
	t.Helper()
	auth := ""
	if secret != "" {
		auth = fmt.Sprintf(", authentication: {secretRef: {kind: Secret, name: %s}}", secret)
	}
	kubectlApply(t, ctx, fmt.Sprintf("apiVersion: ops.kubedb.com/v1alpha1\nkind: PostgresOpsRequest\nmetadata: {name: %s, namespace: %s}\nspec: {type: RotateAuth, databaseRef: {name: %s}, timeout: 5m, apply: IfReady%s}\n",
		name, ns, db, auth))
}

// createUserSecret creates a basic-auth Secret of the user's, with the client rather than
// kubectl: kubectl apply would also store it in an annotation, which a large Secret overflows.
func createUserSecret(t testing.TB, ctx context.Context, ns, name, username, password string, mutate ...func(*corev1.Secret)) {
	t.Helper()
	s := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Type:       corev1.SecretTypeBasicAuth,
		Data:       map[string][]byte{"username": []byte(username), "password": []byte(password)},
	}
	for _, m := range mutate {
		m(s)
	}
	_, err := env.kube.CoreV1().Secrets(ns).Create(ctx, s, metav1.CreateOptions{})
	require.NoError(t, err)
}

// requireFailedBeforePause waits for request name to end, and asserts that it Failed with
// reason and a message containing message, before it asked for a pause.
func requireFailedBeforePause(t testing.TB, ctx context.Context, ns, name, reason, message string) *opsv1alpha1.PostgresOpsRequest {
	t.Helper()
	req := waitRequestEnded(t, ctx, ns, name)
	require.Equal(t, opsv1alpha1.OpsRequestPhaseFailed, req.Status.Phase, describeRequest(req))
	failed := meta.FindStatusCondition(req.Status.Conditions, opsmanager.ConditionFailed)
	require.NotNil(t, failed, describeRequest(req))
	assert.Equal(t, reason, failed.Reason, describeRequest(req))
	assert.Contains(t, failed.Message, message)
	assert.Nil(t, meta.FindStatusCondition(req.Status.Conditions, opsmanager.ConditionPauseDatabase),
		"failed before the pause\n%s", describeRequest(req))
	return req
}

// credentialUnpublished says the request has set the new credential in PostgreSQL (the
// point of no return) and cannot write it into a Secret (see withoutSecretUpdates).
func credentialUnpublished(r *opsv1alpha1.PostgresOpsRequest) bool {
	c := meta.FindStatusCondition(r.Status.Conditions, opsmanager.ConditionUpdateCredential)
	return c != nil && c.Reason == opsmanager.ReasonDatabaseUpdated && strings.Contains(c.Message, "forbidden")
}

// deleteRequest runs kubectl delete pgops name with args, without waiting for it to go.
func deleteRequest(t testing.TB, ctx context.Context, ns, name string, args ...string) {
	t.Helper()
	out, err := env.cluster.Kubectl(ctx, append([]string{"delete", "pgops", name, "-n", ns, "--wait=false"}, args...)...)
	require.NoError(t, err, string(out))
}

// waitRequestGone waits until request name no longer exists.
func waitRequestGone(t testing.TB, ctx context.Context, ns, name string) {
	t.Helper()
	var last *opsv1alpha1.PostgresOpsRequest
	poll(t, ctx, fmt.Sprintf("PostgresOpsRequest %s/%s to be gone", ns, name), func(ctx context.Context) (bool, error) {
		req, err := env.pgops.OpsV1alpha1().PostgresOpsRequests(ns).Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return true, nil
		}
		if err == nil {
			last = req
		}
		return false, nil
	}, func() string { return describeRequest(last) })
}

func requireSecretGone(t testing.TB, ctx context.Context, ns, name string) {
	t.Helper()
	_, err := env.kube.CoreV1().Secrets(ns).Get(ctx, name, metav1.GetOptions{})
	assert.True(t, apierrors.IsNotFound(err), "Secret %s is gone: %v", name, err)
}

// checkPlan asserts the plan the request recorded when it started.
func (rc *rotationCase) checkPlan(t testing.TB, ctx context.Context, req *opsv1alpha1.PostgresOpsRequest,
	target string, storage kubedbv1.StorageType, restart, kept []string) {
	t.Helper()
	plan := req.Status.RotateAuth
	require.NotNil(t, plan, describeRequest(req))
	assert.Equal(t, getPostgres(t, ctx, rc.ns, rc.db).UID, plan.DatabaseUID)
	assert.Equal(t, rc.db+"-auth", plan.CurrentSecret)
	assert.Equal(t, target, plan.TargetSecret)
	assert.Equal(t, "pgops-rotation-"+string(req.UID), plan.StagedSecret)
	assert.Equal(t, string(storage), plan.StorageType)
	assert.Equal(t, restart, plan.RestartPods, "restartPods")
	assert.Equal(t, kept, plan.KeptPods, "keptPods")
}

// checkStaged asserts that req's staged credential exists as the ops-manager made it: its
// own by label, held by its finalizer, owned by nothing (so never garbage collected), and
// not being deleted.
func checkStaged(t testing.TB, ctx context.Context, req *opsv1alpha1.PostgresOpsRequest) {
	t.Helper()
	s := getSecret(t, ctx, req.Namespace, req.Status.RotateAuth.StagedSecret)
	assert.Equal(t, string(req.UID), s.Labels[opsmanager.LabelOpsRequestUID])
	assert.Contains(t, s.Finalizers, opsmanager.StagedCredentialFinalizer)
	assert.Empty(t, s.OwnerReferences)
	assert.Nil(t, s.DeletionTimestamp, "the staged credential is not being deleted")
}

// standbysDescending are rc's standbys, highest ordinal first: the restart order.
func (rc *rotationCase) standbysDescending() []string {
	var names []string
	for i := rc.replicas - 1; i >= 1; i-- {
		names = append(names, fmt.Sprintf("%s-%d", rc.db, i))
	}
	return names
}

// An Ephemeral primary's emptyDir is its data: it is never evicted, only standbys are
// restarted (they clone the primary again), and the data is still there.
func TestRotateAuthEphemeral(t *testing.T) {
	parallel(t)
	for _, replicas := range []int{1, 3} {
		t.Run(fmt.Sprintf("replicas=%d", replicas), func(t *testing.T) {
			ctx := testContext(t, safetyTimeout)
			rc := newRotationCase(t, ctx, replicas, ephemeralStorage)
			pg := getPostgres(t, ctx, rc.ns, rc.db)
			require.Equal(t, kubedbv1.StorageTypeEphemeral, pg.Spec.StorageType)
			require.Nil(t, pg.Spec.Storage)
			rc.writeData(t, ctx)
			rc.fates[rc.primary()] = podKept

			applyExample(t, ctx, rc.ns, "20-rotate-auth-generated.yaml", nil)
			req := waitRequestEnded(t, ctx, rc.ns, "pgops-rotate-auth-generated")
			rc.checkRotated(t, ctx, req.Name)
			rc.checkPlan(t, ctx, req, rc.db+"-auth", kubedbv1.StorageTypeEphemeral, rc.standbysDescending(), []string{rc.primary()})
			restart := meta.FindStatusCondition(req.Status.Conditions, opsmanager.ConditionRestartNodes)
			require.NotNil(t, restart)
			assert.Contains(t, restart.Message, "kept "+rc.primary()+" running: storage is Ephemeral")
			for _, c := range req.Status.Conditions {
				assert.NotEqual(t, "EvictPod--"+rc.primary(), c.Type, "the primary is never evicted")
			}
		})
	}
}

// Passwords pods cannot carry are refused before the database is paused; the database keeps
// its credential and its data.
func TestHostilePasswordsRefusedBeforePause(t *testing.T) {
	parallel(t)
	ctx := testContext(t, safetyTimeout)
	rc := newRotationCase(t, ctx, 1)
	rc.writeData(t, ctx)
	long := strings.Repeat("Hostile-Long-Password-", 200*1024/22+1)[:200*1024]
	cases := []struct{ name, password, rule string }{
		{"hostile-trailing-newline", "Hostile-Newline-2026\n", "control"},
		{"hostile-control-character", "Hostile\x1bControl-2026", "control"},
		{"hostile-surrounding-whitespace", " Hostile-Space-2026", "whitespace"},
		{"hostile-one-byte", "h", "8 to 1024 bytes"},
		{"hostile-200kb", long, "8 to 1024 bytes"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if len(tc.password) > 2 {
				watchForLeaks(t, strings.TrimSpace(tc.password))
			}
			createUserSecret(t, ctx, rc.ns, tc.name, rc.before.username, tc.password)
			applyRotateAuth(t, ctx, rc.ns, tc.name, rc.db, tc.name)
			requireFailedBeforePause(t, ctx, rc.ns, tc.name, opsmanager.ReasonSecretInvalid, tc.rule)
			rc.checkUntouched(t, ctx)
		})
	}
}

// A user Secret named like something the operator creates (the staged credential's old
// name "<request>-staged-auth", the ConfigMap's, the governing Service's) is the user's: it
// becomes the auth Secret and is never deleted. One database rotates to each in turn.
func TestUserSecretNamedLikeOperatorObjects(t *testing.T) {
	parallel(t)
	ctx := testContext(t, safetyTimeout)
	rc := newRotationCase(t, ctx, 1)
	rc.writeData(t, ctx)
	cases := []struct{ request, secret, password string }{
		{"rotate-named-like", "rotate-named-like-staged-auth", "Named-Like-Staged-2026"},
		{"rotate-named-like-scripts", rc.db + "-scripts", "Named-Like-Scripts-2026"},
		{"rotate-named-like-pods", rc.db + "-pods", "Named-Like-Pods-2026"},
	}
	for _, tc := range cases {
		t.Run(tc.secret, func(t *testing.T) {
			rc.advance(t, ctx) // start from where the previous rotation left the database
			watchForLeaks(t, tc.password)
			createUserSecret(t, ctx, rc.ns, tc.secret, rc.before.username, tc.password)
			applyRotateAuth(t, ctx, rc.ns, tc.request, rc.db, tc.secret)
			waitRequestEnded(t, ctx, rc.ns, tc.request)
			after := rc.checkRotated(t, ctx, tc.request)
			assert.Equal(t, tc.password, after.password)
			pg := getPostgres(t, ctx, rc.ns, rc.db)
			assert.Equal(t, tc.secret, pg.Spec.AuthSecret.Name)
			assert.True(t, pg.Spec.AuthSecret.ExternallyManaged)
		})
	}
	for _, tc := range cases {
		s := getSecret(t, ctx, rc.ns, tc.secret)
		assert.Nil(t, s.DeletionTimestamp, "the user's Secret %s survives", tc.secret)
		assert.Equal(t, tc.password, string(s.Data["password"]), "Secret %s", tc.secret)
	}
}

// Database "x" has the governing Service "x-pods", the name database "x-pods" wants for its
// primary Service. The provisioner reports the conflict before it creates anything or adds
// its finalizer, a rotation of "x-pods" fails before the pause without touching "x", and
// "x" itself still rotates.
func TestCollidingDerivedNames(t *testing.T) {
	parallel(t)
	ctx := testContext(t, safetyTimeout)
	ns := newNamespace(t, ctx)
	createPostgres(t, ctx, ns, "x", 1)
	rc := rotationCaseFor(t, ctx, ns, "x", 1)
	rc.writeData(t, ctx)

	// x-pods names a Secret of its own: the ops-manager can plan a rotation of it, and must
	// still refuse it for the Service it does not control.
	createUserSecret(t, ctx, ns, "x-pods-own", "postgres", "X-pods-own-password-1")
	createPostgres(t, ctx, ns, "x-pods", 1, func(pg *kubedbv1.Postgres) {
		pg.Spec.AuthSecret = &kubedbv1.SecretReference{Name: "x-pods-own", ExternallyManaged: true}
	})
	last, cond := waitProvisioningBlocked(t, ctx, ns, "x-pods", provisioner.ReasonObjectConflict)
	assert.Contains(t, cond.Message, "Service "+ns+"/x-pods exists and is not controlled by this Postgres")
	assert.NotContains(t, last.Finalizers, provisioner.Finalizer, "the conflict is found before the finalizer")
	_, err := env.kube.CoreV1().Secrets(ns).Get(ctx, "x-pods-auth", metav1.GetOptions{})
	assert.True(t, apierrors.IsNotFound(err), "nothing is created: %v", err)
	watchForLeaks(t, authCredential(t, ctx, ns, "x-pods").password)

	t.Run("rotating x-pods", func(t *testing.T) {
		applyRotateAuth(t, ctx, ns, "rotate-x-pods", "x-pods", "")
		requireFailedBeforePause(t, ctx, ns, "rotate-x-pods", opsmanager.ReasonNameConflict,
			"the primary Service x-pods is not controlled by Postgres x-pods")
		assert.Nil(t, meta.FindStatusCondition(getPostgres(t, ctx, ns, "x-pods").Status.Conditions, kubedbv1.ConditionPaused))
		rc.checkUntouched(t, ctx)
	})
	t.Run("x to the auth Secret of x-pods", func(t *testing.T) {
		applyRotateAuth(t, ctx, ns, "rotate-x-to-x-pods-auth", "x", "x-pods-own")
		requireFailedBeforePause(t, ctx, ns, "rotate-x-to-x-pods-auth", opsmanager.ReasonInvalidRequest,
			"the auth Secret of Postgres x-pods")
		rc.checkUntouched(t, ctx)
	})
	t.Run("rotating x", func(t *testing.T) {
		applyRotateAuth(t, ctx, ns, "rotate-x", "x", "")
		waitRequestEnded(t, ctx, ns, "rotate-x")
		rc.checkRotated(t, ctx, "rotate-x")
	})
}

// kubectl delete --cascade=foreground while the request is between the ALTER ROLE and the
// Secret update: the garbage collector leaves the staged credential alone, and cleanup rolls
// the auth Secret forward to it once it can.
func TestForegroundDeletionPastPointOfNoReturn(t *testing.T) {
	// Not parallel: it takes Secret updates away from the shared ops-manager.
	ctx := testContext(t, safetyTimeout)
	rc := newRotationCase(t, ctx, 1)
	rc.writeData(t, ctx)
	// The request stops before RestartNodes, and cleanup restarts only standbys.
	rc.fates[rc.primary()] = podKept
	restore := withoutSecretUpdates(t, ctx)
	const name = "pgops-rotate-auth-generated"
	applyExample(t, ctx, rc.ns, "20-rotate-auth-generated.yaml", nil)
	req := waitRequest(t, ctx, rc.ns, name, credentialUnpublished)
	rc.checkPlan(t, ctx, req, rc.db+"-auth", kubedbv1.StorageTypeDurable, []string{rc.primary()}, nil)
	checkStaged(t, ctx, req)
	ok, err := credential.VerifyLogin(ctx, primaryTarget(t, ctx, rc.ns, rc.db), rc.before.username, rc.before.password)
	require.NoError(t, err)
	require.False(t, ok, "PostgreSQL has the new credential")

	deleteRequest(t, ctx, rc.ns, name, "--cascade=foreground")
	// The garbage collector is done with the request once it drops foregroundDeletion.
	var last *opsv1alpha1.PostgresOpsRequest
	poll(t, ctx, "the garbage collector to process the foreground deletion", func(ctx context.Context) (bool, error) {
		r, err := env.pgops.OpsV1alpha1().PostgresOpsRequests(rc.ns).Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return false, fmt.Errorf("the request is gone before its credential was published")
		}
		if err != nil {
			return false, nil
		}
		last = r
		return r.DeletionTimestamp != nil && !contains(r.Finalizers, metav1.FinalizerDeleteDependents), nil
	}, func() string { return describeRequest(last) })
	checkStaged(t, ctx, req)
	assert.Equal(t, rc.before, authCredential(t, ctx, rc.ns, rc.db), "the Secret cannot be updated yet")

	restore()
	waitRequestGone(t, ctx, rc.ns, name)
	rc.checkCredentialRotated(t, ctx)
	requireSecretGone(t, ctx, rc.ns, req.Status.RotateAuth.StagedSecret)
	// Events are posted asynchronously, after what they report.
	poll(t, ctx, "an event saying cleanup rolled the Secret forward", func(ctx context.Context) (bool, error) {
		return hasEvent(ctx, rc.ns, name, "CredentialRolledForward", "Secret "+rc.db+"-auth now holds it"), nil
	}, func() string { return "no CredentialRolledForward event" })
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// An immutable user Secret cannot record the previous credential: refused before the pause.
func TestImmutableUserSecretRefused(t *testing.T) {
	parallel(t)
	ctx := testContext(t, safetyTimeout)
	rc := newRotationCase(t, ctx, 1)
	rc.writeData(t, ctx)
	const password = "Immutable-Users-2026"
	watchForLeaks(t, password)
	createUserSecret(t, ctx, rc.ns, "immutable-auth", rc.before.username, password, func(s *corev1.Secret) {
		s.Immutable = ptr.To(true)
	})
	applyRotateAuth(t, ctx, rc.ns, "rotate-immutable", rc.db, "immutable-auth")
	requireFailedBeforePause(t, ctx, rc.ns, "rotate-immutable", opsmanager.ReasonSecretInvalid, "is immutable")
	rc.checkUntouched(t, ctx)
}

// The user deletes their Secret once PostgreSQL has its credential: the ops-manager writes it
// again from the staged copy and the request succeeds with it.
func TestUserSecretDeletedAfterStart(t *testing.T) {
	// Not parallel: it takes Secret updates away from the shared ops-manager.
	ctx := testContext(t, safetyTimeout)
	rc := newRotationCase(t, ctx, 1)
	rc.writeData(t, ctx)
	const request, secret, password = "rotate-deleted-secret", "deleted-auth", "Deleted-Users-2026"
	watchForLeaks(t, password)
	createUserSecret(t, ctx, rc.ns, secret, rc.before.username, password)
	restore := withoutSecretUpdates(t, ctx)
	applyRotateAuth(t, ctx, rc.ns, request, rc.db, secret)
	waitRequest(t, ctx, rc.ns, request, credentialUnpublished)
	require.NoError(t, env.kube.CoreV1().Secrets(rc.ns).Delete(ctx, secret, metav1.DeleteOptions{}))
	restore()

	waitRequestEnded(t, ctx, rc.ns, request)
	after := rc.checkRotated(t, ctx, request)
	assert.Equal(t, password, after.password)
	assert.Equal(t, secret, getPostgres(t, ctx, rc.ns, rc.db).Spec.AuthSecret.Name)
	// Events are posted asynchronously, after what they report.
	poll(t, ctx, "a Warning event saying the Secret was written again", func(ctx context.Context) (bool, error) {
		return hasEvent(ctx, rc.ns, request, "SecretRecreated", secret), nil
	}, func() string { return "no SecretRecreated event" })
}

// A request deleted in the middle of RestartNodes: cleanup still restarts the standbys on
// an old pod revision, so every standby streams with the new credential.
func TestDeletedMidRestartNodes(t *testing.T) {
	parallel(t)
	ctx := testContext(t, safetyTimeout)
	rc := newRotationCase(t, ctx, 3)
	rc.writeData(t, ctx)
	// The request may or may not have reached the primary when it is deleted; cleanup does
	// not restart it.
	rc.fates[rc.primary()] = podEither
	const name = "pgops-rotate-auth-generated"
	applyExample(t, ctx, rc.ns, "20-rotate-auth-generated.yaml", nil)
	req := waitRequest(t, ctx, rc.ns, name, func(r *opsv1alpha1.PostgresOpsRequest) bool {
		return meta.FindStatusCondition(r.Status.Conditions, opsmanager.ConditionEvictPod+"--"+rc.db+"-2") != nil
	})
	deleteRequest(t, ctx, rc.ns, name)
	waitRequestGone(t, ctx, rc.ns, name)

	rc.checkCredentialRotated(t, ctx)
	sts := getStatefulSet(t, ctx, rc.ns, rc.db)
	for _, standby := range rc.standbysDescending() {
		pod := getPod(t, ctx, rc.ns, standby)
		assert.Equal(t, sts.Status.UpdateRevision, pod.Labels[appsv1.ControllerRevisionHashLabelKey],
			"standby %s runs the pod revision with the new credential", standby)
	}
	// Events are posted asynchronously, after what they report.
	poll(t, ctx, "an event saying cleanup restarted the standbys", func(ctx context.Context) (bool, error) {
		return hasEvent(ctx, rc.ns, name, opsmanager.ConditionRestartNodes, "the request stopped; standbys"), nil
	}, func() string { return "no RestartNodes event" })
	requireSecretGone(t, ctx, rc.ns, req.Status.RotateAuth.StagedSecret)
}
