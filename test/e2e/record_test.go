package e2e

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	kubedbv1 "github.com/pgops/pgops/pkg/apis/kubedb/v1"
	opsv1alpha1 "github.com/pgops/pgops/pkg/apis/ops/v1alpha1"
	"github.com/pgops/pgops/pkg/controller/opsmanager"
	"github.com/pgops/pgops/pkg/controller/provisioner"
	"github.com/pgops/pgops/pkg/credential"
)

// Tests of the credential record: pgops's own copy of the credential PostgreSQL accepts,
// which the pods boot from, against other actors that edit the auth Secret or change the
// password in PostgreSQL.

// editAuthSecret sets the password in the database's auth Secret in place, as kubectl edit,
// a GitOps sync or External Secrets does.
func editAuthSecret(t testing.TB, ctx context.Context, rc *rotationCase, password string) {
	t.Helper()
	s := getSecret(t, ctx, rc.ns, rc.db+"-auth")
	s.Data["password"] = []byte(password)
	_, err := env.kube.CoreV1().Secrets(rc.ns).Update(ctx, s, metav1.UpdateOptions{})
	require.NoError(t, err)
}

// restartStandbyAndWaitStreaming deletes the standby pod, and waits until it is back and
// every standby streams from the primary with password (the credential PostgreSQL accepts).
func restartStandbyAndWaitStreaming(t testing.TB, ctx context.Context, rc *rotationCase, standby, password string) {
	t.Helper()
	old := getPod(t, ctx, rc.ns, standby)
	require.NoError(t, env.kube.CoreV1().Pods(rc.ns).Delete(ctx, standby, metav1.DeleteOptions{}))
	waitStandbysStreamAs(t, ctx, rc, rc.before.username, password, func(ctx context.Context) bool {
		pod, err := env.kube.CoreV1().Pods(rc.ns).Get(ctx, standby, metav1.GetOptions{})
		return err == nil && pod.UID != old.UID
	})
}

// waitEditRequest waits for the request pgops creates for an edit of the auth Secret to end.
func waitEditRequest(t testing.TB, ctx context.Context, rc *rotationCase) *opsv1alpha1.PostgresOpsRequest {
	t.Helper()
	var found *opsv1alpha1.PostgresOpsRequest
	poll(t, ctx, "the request applying the edit to end", func(ctx context.Context) (bool, error) {
		list, err := env.pgops.OpsV1alpha1().PostgresOpsRequests(rc.ns).List(ctx, metav1.ListOptions{
			LabelSelector: opsv1alpha1.LabelTrigger + "=" + opsv1alpha1.TriggerAuthSecretEdited})
		if err != nil || len(list.Items) == 0 {
			return false, nil
		}
		found = &list.Items[len(list.Items)-1]
		return found.Status.Phase.Ended() && len(found.Finalizers) == 0, nil
	}, func() string { return describeRequest(found) + "\n" + describePostgresNow(t, rc.ns, rc.db) })
	return found
}

// An in-place edit of the auth Secret is applied like a rotation: set in PostgreSQL, the
// old password refused, the running standbys re-pointed without a restart, the record
// updated. A standby deleted afterwards boots from the record and streams. A bad edit (a
// trailing newline, as `kubectl create secret --from-file` gives) is refused, with a Warning
// event, and a standby deleted afterwards still streams on the last good credential.
func TestInPlaceEditsOfTheAuthSecret(t *testing.T) {
	parallel(t)
	ctx := testContext(t, safetyTimeout)
	rc := newRotationCase(t, ctx, 2)
	rc.writeData(t, ctx)
	const edited = "Edited-In-Place-Password-1"
	watchForLeaks(t, edited)

	editAuthSecret(t, ctx, rc, edited)
	req := waitEditRequest(t, ctx, rc)
	require.Equal(t, opsv1alpha1.OpsRequestPhaseSuccessful, req.Status.Phase, describeRequest(req))
	target := primaryTarget(t, ctx, rc.ns, rc.db)
	ok, err := credential.VerifyLogin(ctx, target, rc.before.username, edited)
	require.NoError(t, err)
	assert.True(t, ok, "the edited password logs in")
	ok, err = credential.VerifyLogin(ctx, target, rc.before.username, rc.before.password)
	require.NoError(t, err)
	assert.False(t, ok, "the old one is refused")
	assert.Equal(t, rc.podUIDs, podUIDs(t, ctx, rc.ns, rc.db), "no pod restarted")
	rec := getSecret(t, ctx, rc.ns, kubedbv1.CredentialRecordName(rc.db))
	assert.Equal(t, edited, string(rec.Data["password"]))
	waitPostgresPhase(t, ctx, rc.ns, rc.db, kubedbv1.DatabasePhaseReady)
	restartStandbyAndWaitStreaming(t, ctx, rc, rc.db+"-1", edited)

	editAuthSecret(t, ctx, rc, edited+"-2\n")
	var last *kubedbv1.Postgres
	poll(t, ctx, "the bad edit to be refused", func(ctx context.Context) (bool, error) {
		last = getPostgres(t, ctx, rc.ns, rc.db)
		cond := meta.FindStatusCondition(last.Status.Conditions, provisioner.ConditionCredentialRotation)
		return cond != nil && cond.Reason == provisioner.ReasonAuthSecretEditRefused, nil
	}, func() string { return describePostgres(last) })
	assert.Contains(t, meta.FindStatusCondition(last.Status.Conditions, provisioner.ConditionCredentialRotation).Message, "control or non-printable")
	poll(t, ctx, "a Warning event AuthSecretEditRefused", func(ctx context.Context) (bool, error) {
		return hasEvent(ctx, rc.ns, rc.db, provisioner.ReasonAuthSecretEditRefused, rc.db+"-auth"), nil
	}, func() string { return describePostgres(last) })
	waitPostgresPhase(t, ctx, rc.ns, rc.db, kubedbv1.DatabasePhaseNotReady)
	assert.Equal(t, kubedbv1.ReasonAuthSecretOutOfSync,
		meta.FindStatusCondition(getPostgres(t, ctx, rc.ns, rc.db).Status.Conditions, kubedbv1.ConditionReady).Reason)
	restartStandbyAndWaitStreaming(t, ctx, rc, rc.db+"-1", edited)

	// Put back, the Secret agrees with PostgreSQL again: nothing to apply.
	editAuthSecret(t, ctx, rc, edited)
	waitPostgresPhase(t, ctx, rc.ns, rc.db, kubedbv1.DatabasePhaseReady)
	rc.checkData(t, ctx)
}

// A DBA's ALTER ROLE behind pgops's back: the Postgres says so (NotReady, the primary
// refuses the recorded credential); set back, it is Ready again.
func TestPasswordChangedBehindPgopsBackIsReported(t *testing.T) {
	parallel(t)
	ctx := testContext(t, safetyTimeout)
	rc := newRotationCase(t, ctx, 1)
	target := primaryTarget(t, ctx, rc.ns, rc.db)
	target.User, target.Password = rc.before.username, rc.before.password
	const dbas = "Set-By-A-DBA-Password-1"
	require.NoError(t, credential.SetPassword(ctx, target, rc.before.username, dbas))

	var last *kubedbv1.Postgres
	poll(t, ctx, "the Postgres to say the primary refuses the recorded credential", func(ctx context.Context) (bool, error) {
		last = getPostgres(t, ctx, rc.ns, rc.db)
		cond := meta.FindStatusCondition(last.Status.Conditions, kubedbv1.ConditionAcceptingConnection)
		return last.Status.Phase == kubedbv1.DatabasePhaseNotReady && cond != nil && cond.Status == metav1.ConditionFalse, nil
	}, func() string { return describePostgres(last) })
	msg := meta.FindStatusCondition(last.Status.Conditions, kubedbv1.ConditionAcceptingConnection).Message
	assert.Contains(t, msg, "changed outside pgops")
	assert.Contains(t, msg, "Secret "+kubedbv1.CredentialRecordName(rc.db), "it names where the credential PostgreSQL should accept is")
	// Events are sent asynchronously: wait for it, as for any other state.
	poll(t, ctx, "a PhaseChanged event to NotReady", func(ctx context.Context) (bool, error) {
		return hasEvent(ctx, rc.ns, rc.db, provisioner.ReasonPhaseChanged, "NotReady"), nil
	}, func() string { return describePostgres(last) })

	target.Password = dbas
	require.NoError(t, credential.SetPassword(ctx, target, rc.before.username, rc.before.password))
	waitPostgresPhase(t, ctx, rc.ns, rc.db, kubedbv1.DatabasePhaseReady)
}

// The auth Secret changed back right after UpdateCredential wrote it (an Argo CD self-heal,
// an External Secrets refresh, a stale kubectl apply), with 1 and 3 replicas; and a user's
// Secret deleted right after UpdateCredential wrote it (3 replicas). The credential record
// holds the new password from the moment PostgreSQL accepts it: restarted standbys boot
// from it and stream, and cleanup writes it into the Secret again. Afterwards the data is
// there, the Secret's credential logs in, the standbys stream and the database is resumed.
func TestSecretChangedRightAfterUpdateCredential(t *testing.T) {
	for _, tc := range []struct {
		name     string
		replicas int
		user     bool
	}{
		{"reverted-1-replica", 1, false},
		{"reverted-3-replicas", 3, false},
		{"user-secret-deleted-3-replicas", 3, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			parallel(t)
			ctx := testContext(t, safetyTimeout)
			rc := newRotationCase(t, ctx, tc.replicas)
			rc.writeData(t, ctx)
			target := rc.db + "-auth"
			if tc.user {
				target = "mine"
				createUserSecret(t, ctx, rc.ns, target, rc.before.username, "Users-Own-Password-1")
				watchForLeaks(t, "Users-Own-Password-1")
				applyRotateAuth(t, ctx, rc.ns, "rotate", rc.db, target)
			} else {
				applyRotateAuth(t, ctx, rc.ns, "rotate", rc.db, "")
			}
			waitRequest(t, ctx, rc.ns, "rotate", conditionTrue(opsmanager.ConditionUpdateCredential))
			if tc.user {
				require.NoError(t, env.kube.CoreV1().Secrets(rc.ns).Delete(ctx, target, metav1.DeleteOptions{}))
			} else {
				editAuthSecret(t, ctx, rc, rc.before.password)
			}

			req := waitRequestEnded(t, ctx, rc.ns, "rotate")
			assert.Equal(t, opsv1alpha1.OpsRequestPhaseSuccessful, req.Status.Phase, describeRequest(req))
			rec := getSecret(t, ctx, rc.ns, kubedbv1.CredentialRecordName(rc.db))
			after := credentialPair{string(rec.Data["username"]), string(rec.Data["password"])}
			watchForLeaks(t, after.password)
			assert.NotEqual(t, rc.before.password, after.password)
			var secret *corev1.Secret
			poll(t, ctx, "Secret "+target+" to hold the credential PostgreSQL has", func(ctx context.Context) (bool, error) {
				s, err := env.kube.CoreV1().Secrets(rc.ns).Get(ctx, target, metav1.GetOptions{})
				if err != nil {
					return false, nil
				}
				secret = s
				return string(s.Data["password"]) == after.password, nil
			}, func() string { return describePostgresNow(t, rc.ns, rc.db) })
			ok, err := credential.VerifyLogin(ctx, primaryTarget(t, ctx, rc.ns, rc.db), after.username, string(secret.Data["password"]))
			require.NoError(t, err)
			assert.True(t, ok, "the Secret's credential logs in")
			rc.before = after // the credential the standbys must stream with
			if tc.replicas > 1 {
				waitStandbysStream(t, ctx, rc)
			}
			waitPostgresPhase(t, ctx, rc.ns, rc.db, kubedbv1.DatabasePhaseReady)
			assert.Nil(t, meta.FindStatusCondition(getPostgres(t, ctx, rc.ns, rc.db).Status.Conditions, kubedbv1.ConditionPaused), "resumed")
			rc.checkData(t, ctx)
		})
	}
}
