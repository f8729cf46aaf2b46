package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/types"

	kubedbv1 "github.com/pgops/pgops/pkg/apis/kubedb/v1"
	opsv1alpha1 "github.com/pgops/pgops/pkg/apis/ops/v1alpha1"
	"github.com/pgops/pgops/pkg/controller/opsmanager"
	"github.com/pgops/pgops/pkg/credential"
)

// rotationCase is a database and a rotation request applied from examples/.
type rotationCase struct {
	ns, db   string
	replicas int
	before   credentialPair
	podUIDs  map[string]types.UID
	// fates says what a rotation must do to each pod; a pod not in it must be restarted.
	fates map[string]podFate
	// wroteData says writeData ran: the checks read its row back.
	wroteData bool
}

// podFate is what a rotation must do to a pod.
type podFate int

const (
	podRestarted podFate = iota // recreated: a new UID
	podKept                     // never restarted: the same UID
	podEither                   // not checked
)

type credentialPair struct{ username, password string }

// newRotationCase applies examples' Postgres with replicas, after edits, and waits for it to
// be Ready.
func newRotationCase(t testing.TB, ctx context.Context, replicas int, edits ...func(string) string) *rotationCase {
	t.Helper()
	ns := newNamespace(t, ctx)
	applyRotationDatabase(t, ctx, ns, replicas, edits...)
	return rotationCaseFor(t, ctx, ns, "ha-postgres", replicas)
}

// applyRotationDatabase applies examples/10-postgres.yaml with replicas members into ns,
// after edits.
func applyRotationDatabase(t testing.TB, ctx context.Context, ns string, replicas int, edits ...func(string) string) {
	t.Helper()
	applyExample(t, ctx, ns, "10-postgres.yaml", func(s string) string {
		s = strings.Replace(s, "replicas: 3", fmt.Sprintf("replicas: %d", replicas), 1)
		for _, edit := range edits {
			s = edit(s)
		}
		return s
	})
}

// rotationCaseFor waits for the Postgres ns/db of replicas members to be Ready and records
// its credential and pods.
func rotationCaseFor(t testing.TB, ctx context.Context, ns, db string, replicas int) *rotationCase {
	t.Helper()
	waitPostgresPhase(t, ctx, ns, db, kubedbv1.DatabasePhaseReady)
	rc := &rotationCase{ns: ns, db: db, replicas: replicas, fates: map[string]podFate{}}
	rc.before = authCredential(t, ctx, ns, rc.db)
	rc.podUIDs = podUIDs(t, ctx, ns, rc.db)
	require.Len(t, rc.podUIDs, replicas)
	watchForLeaks(t, rc.before.password)
	return rc
}

func (rc *rotationCase) primary() string { return rc.db + "-0" }

// advance makes the database's current credential and pods the ones the next rotation
// starts from.
func (rc *rotationCase) advance(t testing.TB, ctx context.Context) {
	t.Helper()
	rc.before = authCredential(t, ctx, rc.ns, rc.db)
	rc.podUIDs = podUIDs(t, ctx, rc.ns, rc.db)
}

// checkRotated asserts what every successful rotation must leave behind.
func (rc *rotationCase) checkRotated(t testing.TB, ctx context.Context, reqName string) credentialPair {
	t.Helper()
	req := getRequest(t, ctx, rc.ns, reqName)
	require.Equal(t, opsv1alpha1.OpsRequestPhaseSuccessful, req.Status.Phase, describeRequest(req))
	for _, typ := range []string{opsmanager.ConditionRotateAuth, opsmanager.ConditionPauseDatabase,
		opsmanager.ConditionUpdateCredential, opsmanager.ConditionUpdateStatefulSets, opsmanager.ConditionRestartNodes,
		opsmanager.ConditionResumeDatabase, opsmanager.ConditionSuccessful} {
		assert.True(t, meta.IsStatusConditionTrue(req.Status.Conditions, typ), "condition %s\n%s", typ, describeRequest(req))
	}
	return rc.checkCredentialRotated(t, ctx)
}

// checkCredentialRotated asserts what a rotation must leave behind however its request
// ended (even deleted): the auth Secret holds a new credential that logs in, the old one is
// refused, pods were restarted as rc.fates says, standbys stream, the database is Ready and
// resumed, and the data is still there.
func (rc *rotationCase) checkCredentialRotated(t testing.TB, ctx context.Context) credentialPair {
	t.Helper()
	pg := getPostgres(t, ctx, rc.ns, rc.db)
	secret := getSecret(t, ctx, rc.ns, pg.Spec.AuthSecret.Name)
	for _, key := range []string{"username", "password", "username.prev", "password.prev"} {
		assert.NotEmpty(t, secret.Data[key], "Secret %s key %s", secret.Name, key)
	}
	after := credentialPair{string(secret.Data["username"]), string(secret.Data["password"])}
	watchForLeaks(t, after.password)
	assert.Equal(t, rc.before.username, after.username)
	assert.NotEqual(t, rc.before.password, after.password)

	target := primaryTarget(t, ctx, rc.ns, rc.db)
	ok, err := credential.VerifyLogin(ctx, target, after.username, after.password)
	require.NoError(t, err)
	assert.True(t, ok, "the new credential logs in")
	ok, err = credential.VerifyLogin(ctx, target, rc.before.username, rc.before.password)
	require.NoError(t, err)
	assert.False(t, ok, "the old credential is rejected")

	for name, uid := range podUIDs(t, ctx, rc.ns, rc.db) {
		switch rc.fates[name] {
		case podRestarted:
			assert.NotEqual(t, rc.podUIDs[name], uid, "pod %s was restarted", name)
		case podKept:
			assert.Equal(t, rc.podUIDs[name], uid, "pod %s kept running", name)
		}
	}
	if rc.replicas > 1 {
		target.User, target.Password = after.username, after.password
		streaming := 0
		poll(t, ctx, "every standby to stream with the new credential", func(ctx context.Context) (bool, error) {
			n, err := credential.StreamingStandbys(ctx, target)
			streaming = n
			return err == nil && n == rc.replicas-1, nil
		}, func() string { return fmt.Sprintf("%d of %d standbys stream", streaming, rc.replicas-1) })
	}
	waitPostgresPhase(t, ctx, rc.ns, rc.db, kubedbv1.DatabasePhaseReady)
	assert.Nil(t, meta.FindStatusCondition(getPostgres(t, ctx, rc.ns, rc.db).Status.Conditions, kubedbv1.ConditionPaused),
		"the database is resumed")
	rc.checkData(t, ctx)
	return after
}

func TestGeneratedRotation(t *testing.T) {
	parallel(t)
	for _, replicas := range []int{1, 3} {
		t.Run(fmt.Sprintf("replicas=%d", replicas), func(t *testing.T) {
			ctx := testContext(t, 10*time.Minute)
			rc := newRotationCase(t, ctx, replicas)
			applyExample(t, ctx, rc.ns, "20-rotate-auth-generated.yaml", nil)
			waitRequestEnded(t, ctx, rc.ns, "pgops-rotate-auth-generated")
			rc.checkRotated(t, ctx, "pgops-rotate-auth-generated")
		})
	}
}

func TestUserProvidedRotation(t *testing.T) {
	parallel(t)
	ctx := testContext(t, 10*time.Minute)
	rc := newRotationCase(t, ctx, 3)
	watchForLeaks(t, "Chosen-By-User-2026")
	applyExample(t, ctx, rc.ns, "30-user-auth-secret.yaml", nil)
	applyExample(t, ctx, rc.ns, "31-rotate-auth-user.yaml", nil)
	waitRequestEnded(t, ctx, rc.ns, "pgops-rotate-auth-user")
	after := rc.checkRotated(t, ctx, "pgops-rotate-auth-user")
	assert.Equal(t, "Chosen-By-User-2026", after.password)

	pg := getPostgres(t, ctx, rc.ns, rc.db)
	assert.Equal(t, "ha-postgres-user-auth", pg.Spec.AuthSecret.Name)
	assert.True(t, pg.Spec.AuthSecret.ExternallyManaged)
	user := getSecret(t, ctx, rc.ns, "ha-postgres-user-auth")
	assert.Equal(t, rc.before.password, string(user.Data["password.prev"]))
	assert.Equal(t, rc.before.username, string(user.Data["username.prev"]))
}

func TestBadInputFailsClearlyAndLeavesTheDatabaseWorking(t *testing.T) {
	parallel(t)
	ctx := testContext(t, 10*time.Minute)
	rc := newRotationCase(t, ctx, 1)
	cases := []struct {
		name, secret, reason, message string
		request                       string
	}{
		{name: "missing-database", request: `{type: RotateAuth, databaseRef: {name: nope}}`,
			reason: opsmanager.ReasonDatabaseNotFound, message: "Postgres %s/nope does not exist"},
		{name: "missing-secret", request: `{type: RotateAuth, databaseRef: {name: ha-postgres}, authentication: {secretRef: {name: absent}}}`,
			reason: opsmanager.ReasonSecretInvalid, message: "Secret %s/absent named in authentication.secretRef does not exist"},
		{name: "no-password", secret: `{username: postgres}`,
			request: `{type: RotateAuth, databaseRef: {name: ha-postgres}, authentication: {secretRef: {name: no-password}}}`,
			reason:  opsmanager.ReasonSecretInvalid, message: `Secret %s/no-password has no "password"`},
		{name: "other-username", secret: `{username: alice, password: Alice-Password-1}`,
			request: `{type: RotateAuth, databaseRef: {name: ha-postgres}, authentication: {secretRef: {name: other-username}}}`,
			reason:  opsmanager.ReasonUsernameChanged, message: "database username cannot be changed"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.secret != "" {
				kubectlApply(t, ctx, fmt.Sprintf("apiVersion: v1\nkind: Secret\nmetadata: {name: %s, namespace: %s}\nstringData: %s\n", tc.name, rc.ns, tc.secret))
			}
			kubectlApply(t, ctx, fmt.Sprintf("apiVersion: ops.kubedb.com/v1alpha1\nkind: PostgresOpsRequest\nmetadata: {name: %s, namespace: %s}\nspec: %s\n", tc.name, rc.ns, tc.request))
			req := waitRequestEnded(t, ctx, rc.ns, tc.name)
			require.Equal(t, opsv1alpha1.OpsRequestPhaseFailed, req.Status.Phase, describeRequest(req))
			failed := meta.FindStatusCondition(req.Status.Conditions, opsmanager.ConditionFailed)
			require.NotNil(t, failed)
			assert.Equal(t, tc.reason, failed.Reason)
			message := tc.message
			if strings.Contains(message, "%s") {
				message = fmt.Sprintf(message, rc.ns)
			}
			assert.Contains(t, failed.Message, message)
			rc.checkUntouched(t, ctx)
		})
	}

	t.Run("not-ready-with-IfReady", func(t *testing.T) {
		// Halting the database makes it not Ready; a short timeout fails the request.
		setHalted(t, ctx, rc.ns, rc.db, true)
		waitPostgresPhase(t, ctx, rc.ns, rc.db, kubedbv1.DatabasePhaseHalted)
		kubectlApply(t, ctx, fmt.Sprintf("apiVersion: ops.kubedb.com/v1alpha1\nkind: PostgresOpsRequest\nmetadata: {name: not-ready, namespace: %s}\nspec: {type: RotateAuth, databaseRef: {name: ha-postgres}, apply: IfReady, timeout: 20s}\n", rc.ns))
		req := waitRequestEnded(t, ctx, rc.ns, "not-ready")
		require.Equal(t, opsv1alpha1.OpsRequestPhaseFailed, req.Status.Phase, describeRequest(req))
		failed := meta.FindStatusCondition(req.Status.Conditions, opsmanager.ConditionFailed)
		assert.Equal(t, opsmanager.ReasonDatabaseNotReady, failed.Reason)
		assert.Contains(t, failed.Message, "was not ready within 20s")
		setHalted(t, ctx, rc.ns, rc.db, false)
		waitPostgresPhase(t, ctx, rc.ns, rc.db, kubedbv1.DatabasePhaseReady)
		rc.checkUntouched(t, ctx)
	})
}

// checkUntouched asserts that the database is resumed and its original credential works.
func (rc *rotationCase) checkUntouched(t testing.TB, ctx context.Context) {
	t.Helper()
	pg := getPostgres(t, ctx, rc.ns, rc.db)
	assert.Nil(t, meta.FindStatusCondition(pg.Status.Conditions, kubedbv1.ConditionPaused), "the database is not paused")
	assert.Equal(t, rc.before, authCredential(t, ctx, rc.ns, rc.db))
	ok, err := credential.VerifyLogin(ctx, primaryTarget(t, ctx, rc.ns, rc.db), rc.before.username, rc.before.password)
	require.NoError(t, err)
	assert.True(t, ok, "the credential in the Secret logs in")
	rc.checkData(t, ctx)
}

func TestTwoRequestsForOneDatabase(t *testing.T) {
	parallel(t)
	ctx := testContext(t, 10*time.Minute)
	rc := newRotationCase(t, ctx, 1)
	kubectlApply(t, ctx, fmt.Sprintf(`apiVersion: ops.kubedb.com/v1alpha1
kind: PostgresOpsRequest
metadata: {name: first, namespace: %[1]s}
spec: {type: RotateAuth, databaseRef: {name: ha-postgres}}
---
apiVersion: ops.kubedb.com/v1alpha1
kind: PostgresOpsRequest
metadata: {name: second, namespace: %[1]s}
spec: {type: RotateAuth, databaseRef: {name: ha-postgres}}
`, rc.ns))
	first := waitRequestEnded(t, ctx, rc.ns, "first")
	second := waitRequestEnded(t, ctx, rc.ns, "second")
	phases := []opsv1alpha1.OpsRequestPhase{first.Status.Phase, second.Status.Phase}
	// Either both ran, one after the other, or the older one was superseded.
	if first.Status.Phase == opsv1alpha1.OpsRequestPhaseSkipped {
		assert.Equal(t, opsv1alpha1.OpsRequestPhaseSuccessful, second.Status.Phase)
		assert.Contains(t, meta.FindStatusCondition(first.Status.Conditions, opsmanager.ConditionSkipped).Message, "second")
	} else {
		assert.Equal(t, []opsv1alpha1.OpsRequestPhase{opsv1alpha1.OpsRequestPhaseSuccessful, opsv1alpha1.OpsRequestPhaseSuccessful}, phases)
		firstEnd := meta.FindStatusCondition(first.Status.Conditions, opsmanager.ConditionSuccessful).LastTransitionTime
		secondStart := meta.FindStatusCondition(second.Status.Conditions, opsmanager.ConditionRotateAuth).LastTransitionTime
		assert.False(t, secondStart.Before(&firstEnd), "the second request started after the first ended")
	}
	rc.checkRotated(t, ctx, second.Name)
}

// Crash safety: the ops-manager is SIGKILLed at a step boundary, or between the ALTER ROLE
// and the Secret update, and started again. The request must still succeed, the Secret's
// credential must log in and the old one must be rejected.
// crashBoundary is a point of a rotation where the ops-manager is SIGKILLed.
type crashBoundary struct {
	name string
	// reached says when to kill.
	reached func(*opsv1alpha1.PostgresOpsRequest) bool
}

// betweenAlterRoleAndSecretUpdate names the crash between the ALTER ROLE and the Secret
// update, which needs the ops-manager's right to update Secrets taken away.
const betweenAlterRoleAndSecretUpdate = "between-alter-role-and-secret-update"

func crashBoundaryNames(boundaries []crashBoundary) []string {
	var names []string
	for _, b := range boundaries {
		names = append(names, b.name)
	}
	return names
}

// crashBoundaries are the step boundaries of a rotation, and a point inside RestartNodes.
func crashBoundaries() []crashBoundary {
	return []crashBoundary{
		{"after-start", conditionTrue(opsmanager.ConditionRotateAuth)},
		{"after-pause", conditionTrue(opsmanager.ConditionPauseDatabase)},
		{"after-update-credential", conditionTrue(opsmanager.ConditionUpdateCredential)},
		{"after-update-statefulsets", conditionTrue(opsmanager.ConditionUpdateStatefulSets)},
		{"during-restart", func(r *opsv1alpha1.PostgresOpsRequest) bool {
			for _, c := range r.Status.Conditions {
				if strings.HasPrefix(c.Type, opsmanager.ConditionEvictPod+"--") {
					return true
				}
			}
			return false
		}},
		{"after-restart", conditionTrue(opsmanager.ConditionRestartNodes)},
	}
}

func TestCrashSafety(t *testing.T) {
	boundaries := crashBoundaries()
	// Every subtest's database first, so that their pods start together rather than one
	// after another.
	setup := testContext(t, 15*time.Minute)
	namespaces := map[string]string{}
	for _, name := range append(crashBoundaryNames(boundaries), betweenAlterRoleAndSecretUpdate) {
		namespaces[name] = newNamespaceFor(t, setup, t.Name()+"-"+name)
		applyRotationDatabase(t, setup, namespaces[name], 1)
	}
	for _, b := range boundaries {
		t.Run(b.name, func(t *testing.T) {
			ctx := testContext(t, 10*time.Minute)
			t.Cleanup(func() { deleteNamespace(namespaces[b.name]) })
			rc := rotationCaseFor(t, ctx, namespaces[b.name], "ha-postgres", 1)
			applyExample(t, ctx, rc.ns, "20-rotate-auth-generated.yaml", nil)
			waitRequest(t, ctx, rc.ns, "pgops-rotate-auth-generated", b.reached)
			killAndRestartOpsManager(t, ctx)
			waitRequestEnded(t, ctx, rc.ns, "pgops-rotate-auth-generated")
			rc.checkRotated(t, ctx, "pgops-rotate-auth-generated")
		})
	}

	// Between ALTER ROLE and the Secret update: take away the ops-manager's right to
	// update Secrets, so it sets the password in PostgreSQL and then cannot publish it;
	// kill it there, give the right back, and start it again.
	t.Run(betweenAlterRoleAndSecretUpdate, func(t *testing.T) {
		ctx := testContext(t, 10*time.Minute)
		t.Cleanup(func() { deleteNamespace(namespaces[betweenAlterRoleAndSecretUpdate]) })
		rc := rotationCaseFor(t, ctx, namespaces[betweenAlterRoleAndSecretUpdate], "ha-postgres", 1)
		restore := withoutSecretUpdates(t, ctx)
		applyExample(t, ctx, rc.ns, "20-rotate-auth-generated.yaml", nil)
		waitRequest(t, ctx, rc.ns, "pgops-rotate-auth-generated", credentialUnpublished)
		// PostgreSQL has the new password, the Secret still the old one.
		ok, err := credential.VerifyLogin(ctx, primaryTarget(t, ctx, rc.ns, rc.db), rc.before.username, rc.before.password)
		require.NoError(t, err)
		require.False(t, ok, "the old password no longer works in PostgreSQL")
		killOpsManager(t)
		restore()
		startOpsManager(t, ctx)
		waitRequestEnded(t, ctx, rc.ns, "pgops-rotate-auth-generated")
		rc.checkRotated(t, ctx, "pgops-rotate-auth-generated")
	})
}

// The SIGKILL loop on the user-provided path and 3 replicas: one database rotated to a new
// user Secret per boundary, the ops-manager killed there (and once between the ALTER ROLE and
// the Secret update), each rotation checked before the next starts from its result.
func TestCrashSafetyUserProvidedThreeReplicas(t *testing.T) {
	ctx := testContext(t, 20*time.Minute)
	rc := newRotationCase(t, ctx, 3)
	rc.writeData(t, ctx)
	rotate := func(t testing.TB, i int, kill func(t testing.TB, req string)) {
		name, password := fmt.Sprintf("crash-%d", i), fmt.Sprintf("Crash-User-Password-%d", i)
		watchForLeaks(t, password)
		createUserSecret(t, ctx, rc.ns, name, rc.before.username, password)
		applyRotateAuth(t, ctx, rc.ns, name, rc.db, name)
		kill(t, name)
		waitRequestEnded(t, ctx, rc.ns, name)
		after := rc.checkRotated(t, ctx, name)
		assert.Equal(t, password, after.password)
		assert.Equal(t, name, getPostgres(t, ctx, rc.ns, rc.db).Spec.AuthSecret.Name)
		rc.advance(t, ctx)
	}
	for i, b := range crashBoundaries() {
		t.Run(b.name, func(t *testing.T) {
			rotate(t, i, func(t testing.TB, req string) {
				waitRequest(t, ctx, rc.ns, req, b.reached)
				killAndRestartOpsManager(t, ctx)
			})
		})
	}
	t.Run(betweenAlterRoleAndSecretUpdate, func(t *testing.T) {
		rotate(t, len(crashBoundaries()), func(t testing.TB, req string) {
			restore := withoutSecretUpdates(t, ctx)
			waitRequest(t, ctx, rc.ns, req, credentialUnpublished)
			killOpsManager(t)
			restore()
			startOpsManager(t, ctx)
		})
	})
}

func conditionTrue(typ string) func(*opsv1alpha1.PostgresOpsRequest) bool {
	return func(r *opsv1alpha1.PostgresOpsRequest) bool {
		return meta.IsStatusConditionTrue(r.Status.Conditions, typ)
	}
}

// Two ops-manager replicas: the leader dies mid-rotation and the other, which was only
// waiting for the Lease, finishes the request from its status.
func TestLeaderFailover(t *testing.T) {
	ctx := testContext(t, 10*time.Minute)
	rc := newRotationCase(t, ctx, 1)
	standby, err := startStandbyOpsManager(ctx)
	require.NoError(t, err)
	applyExample(t, ctx, rc.ns, "20-rotate-auth-generated.yaml", nil)
	waitRequest(t, ctx, rc.ns, "pgops-rotate-auth-generated", conditionTrue(opsmanager.ConditionPauseDatabase))
	promote(t, standby) // kills the leader; the standby takes over the Lease
	waitRequestEnded(t, ctx, rc.ns, "pgops-rotate-auth-generated")
	rc.checkRotated(t, ctx, "pgops-rotate-auth-generated")
}
