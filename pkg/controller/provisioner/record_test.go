package provisioner

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	kubedbv1 "github.com/pgops/pgops/pkg/apis/kubedb/v1"
	opsv1alpha1 "github.com/pgops/pgops/pkg/apis/ops/v1alpha1"
)

const recordName = "x" + kubedbv1.CredentialRecordSuffix

// editSecret changes key of Secret name in place, as kubectl edit, a GitOps sync or a
// secret operator's refresh does, and refreshes the caches.
func (f *fixture) editSecret(name, key, value string) {
	f.t.Helper()
	sec := f.secret(name)
	sec.Data[key] = []byte(value)
	sec.ResourceVersion += "1" // the fake API server keeps resourceVersions as they are written
	_, err := f.kube.CoreV1().Secrets(testNS).Update(f.ctx, sec, metav1.UpdateOptions{})
	require.NoError(f.t, err)
	f.refresh()
}

// readyDatabase is "x" provisioned with a Ready primary.
func readyDatabase(t *testing.T) *fixture {
	t.Helper()
	pg := newPG("x")
	f := provisioned(t, pg, readyPod(pg, 0, true))
	f.mustSync("x")
	f.refresh()
	require.Equal(t, kubedbv1.DatabasePhaseReady, f.postgres("x").Status.Phase)
	return f
}

// Issue 26, item 9: an in-place edit of the auth Secret becomes a RotateAuth to the Secret's
// own content, re-pointing standbys without restarts; until it ends, the pods keep booting
// from the record, and the Postgres says that the Secret and PostgreSQL disagree.
func TestEditOfTheAuthSecretBecomesARotation(t *testing.T) {
	f := readyDatabase(t)
	accepted := string(f.secret(recordName).Data["password"])
	f.editSecret("x-auth", "password", "Edited-Password-1")
	f.mustSync("x")
	f.refresh()

	reqs := f.requests()
	require.Len(t, reqs, 1)
	req := reqs[0]
	assert.Equal(t, opsv1alpha1.TriggerAuthSecretEdited, req.Labels[opsv1alpha1.LabelTrigger])
	assert.Equal(t, "x-auth", req.Spec.Authentication.SecretRef.Name)
	assert.Equal(t, opsv1alpha1.RestartNone, req.Spec.RotateAuth.Restart)
	assert.True(t, strings.HasPrefix(req.Name, "x-apply-auth-"), req.Name)
	assert.Equal(t, accepted, string(f.secret(recordName).Data["password"]), "the record changes only once PostgreSQL accepts the edit")
	assert.Equal(t, recordName, f.podSecret())

	pg := f.postgres("x")
	assert.Equal(t, kubedbv1.DatabasePhaseNotReady, pg.Status.Phase, "clients reading the Secret cannot log in yet")
	ready := condition(pg, kubedbv1.ConditionReady)
	assert.Equal(t, kubedbv1.ReasonAuthSecretOutOfSync, ready.Reason)
	assert.Contains(t, ready.Message, "Secret x-auth")
	assert.Equal(t, metav1.ConditionTrue, condition(pg, kubedbv1.ConditionAcceptingConnection).Status, "the database runs")
	cond := condition(pg, ConditionCredentialRotation)
	assert.Equal(t, ReasonAuthSecretEdited, cond.Reason)
	assert.Contains(t, cond.Message, req.Name)
	for _, ep := range f.health.calls {
		assert.Equal(t, accepted, ep.Password, "the provisioner logs in with the recorded credential")
	}

	// One request per edit: syncing again creates no second one.
	f.mustSync("x")
	f.refresh()
	assert.Len(t, f.requests(), 1)

	// One that failed for a reason other than its input (here, a step timed out) is tried
	// again after the backoff, not before.
	f.endRequest(req.Name, opsv1alpha1.OpsRequestPhaseFailed, fixtureNow)
	f.mustSync("x")
	f.refresh()
	assert.Len(t, f.requests(), 1)
	cond = condition(f.postgres("x"), ConditionCredentialRotation)
	assert.Equal(t, ReasonAuthSecretEditRefused, cond.Reason)
	assert.Contains(t, cond.Message, "trying again at")
	f.setClock(fixtureNow.Add(rotationRetryBase + time.Second))
	f.mustSync("x")
	f.refresh()
	require.Len(t, f.requests(), 2)
	second := f.requests()[1]
	assert.True(t, strings.HasSuffix(second.Name, "-2"), second.Name)

	// One refused for its input is not tried again; editing the Secret again is.
	ended, err := f.pgops.OpsV1alpha1().PostgresOpsRequests(testNS).Get(f.ctx, second.Name, metav1.GetOptions{})
	require.NoError(t, err)
	ended.Status.Phase = opsv1alpha1.OpsRequestPhaseFailed
	ended.Status.Conditions = []metav1.Condition{{Type: opsv1alpha1.ConditionFailed, Status: metav1.ConditionTrue, Reason: "InvalidSecret",
		Message: "the password cannot be used", LastTransitionTime: metav1.NewTime(fixtureNow)}}
	_, err = f.pgops.OpsV1alpha1().PostgresOpsRequests(testNS).UpdateStatus(f.ctx, ended, metav1.UpdateOptions{})
	require.NoError(t, err)
	f.refresh()
	f.setClock(fixtureNow.Add(24 * time.Hour))
	f.mustSync("x")
	f.refresh()
	assert.Len(t, f.requests(), 2)
	assert.Contains(t, condition(f.postgres("x"), ConditionCredentialRotation).Message, "Fix the Secret to retry")
	f.editSecret("x-auth", "password", "Edited-Password-2")
	f.mustSync("x")
	f.refresh()
	assert.Len(t, f.requests(), 3)
}

// A bad edit (a trailing newline, a changed username, a missing key) is refused before
// anything is touched: no request, a Warning event and a condition say why, and the pods
// keep booting from the record, so a standby restarted afterwards still streams.
func TestBadEditOfTheAuthSecretIsRefused(t *testing.T) {
	for name, tc := range map[string]struct{ key, value, want string }{
		"trailing newline":   {"password", "Edited-Password-1\n", "control or non-printable character"},
		"username changed":   {"username", "someone", `username "someone"`},
		"password too short": {"password", "short", "8 to 1024 bytes"},
		"password emptied":   {"password", "", `empty "password"`},
	} {
		t.Run(name, func(t *testing.T) {
			f := readyDatabase(t)
			accepted := string(f.secret(recordName).Data["password"])
			f.editSecret("x-auth", tc.key, tc.value)
			f.mustSync("x")
			f.refresh()
			assert.Empty(t, f.requests())
			pg := f.postgres("x")
			cond := condition(pg, ConditionCredentialRotation)
			require.NotNil(t, cond)
			assert.Equal(t, metav1.ConditionFalse, cond.Status)
			assert.Equal(t, ReasonAuthSecretEditRefused, cond.Reason)
			assert.Contains(t, cond.Message, tc.want)
			assert.True(t, f.hasEvent(corev1.EventTypeWarning, ReasonAuthSecretEditRefused, "x-auth"))
			assert.Equal(t, accepted, string(f.secret(recordName).Data["password"]))
			assert.Equal(t, recordName, f.podSecret())
			assert.Equal(t, metav1.ConditionTrue, condition(pg, kubedbv1.ConditionProvisioningStarted).Status, "the sync is not blocked")
			assert.Equal(t, kubedbv1.ReasonAuthSecretOutOfSync, condition(pg, kubedbv1.ConditionReady).Reason)
			for _, e := range f.events {
				assert.NotContains(t, e, "Edited-Password-1")
			}
		})
	}
}

// The generated Secret deleted by hand (or pruned) is created again from the record, with
// the credential PostgreSQL accepts, not a new one.
func TestDeletedGeneratedSecretIsCreatedAgainFromTheRecord(t *testing.T) {
	f := readyDatabase(t)
	accepted := string(f.secret(recordName).Data["password"])
	require.NoError(t, f.kube.CoreV1().Secrets(testNS).Delete(f.ctx, "x-auth", metav1.DeleteOptions{}))
	f.refresh()
	f.mustSync("x")
	f.refresh()
	assert.Equal(t, accepted, string(f.secret("x-auth").Data["password"]))
	assert.Empty(t, f.requests())
	assert.True(t, f.hasEvent(corev1.EventTypeWarning, ReasonAuthSecretCreated, recordName))
	assert.Equal(t, kubedbv1.DatabasePhaseReady, f.postgres("x").Status.Phase)
}

// A Secret under the record's name that is not pgops's record is never used or written.
func TestForeignSecretUnderTheRecordNameIsAConflict(t *testing.T) {
	foreign := userSecret(recordName, map[string]string{"username": "postgres", "password": "Someone-Elses-1"})
	f := newFixture(t, []*kubedbv1.Postgres{newPG("x")}, foreign)
	require.NoError(t, f.sync("x"))
	f.refresh()
	cond := condition(f.postgres("x"), kubedbv1.ConditionProvisioningStarted)
	require.NotNil(t, cond)
	assert.Equal(t, ReasonObjectConflict, cond.Reason)
	assert.Equal(t, "Someone-Elses-1", string(f.secret(recordName).Data["password"]))
	assert.False(t, f.exists("statefulset", "x"))
	assert.NotContains(t, f.postgres("x").Finalizers, Finalizer, "found before the finalizer: its deletion touches nothing")
}

// A re-created Postgres of the same name adopts the record only when the data it was for is
// kept; over new data, the record is written anew from the new Postgres's Secret.
func TestRecreatedPostgresAdoptsTheRecordOnlyWithItsData(t *testing.T) {
	for name, kept := range map[string]bool{"data kept": true, "data gone": false} {
		t.Run(name, func(t *testing.T) {
			pg := newPG("x")
			f := provisioned(t, pg)
			if kept {
				f = provisioned(t, pg, pvc("data-x-0", ownedLabels(pg)))
			}
			accepted := string(f.secret(recordName).Data["password"])
			deletePG(t, f, kubedbv1.DeletionPolicyDelete)
			f.collectGarbageOf(f.postgres("x"))
			require.NoError(t, f.sync("x"))
			require.NoError(t, f.pgops.KubedbV1().Postgreses(testNS).Delete(f.ctx, "x", metav1.DeleteOptions{}))
			assert.True(t, f.exists("secret", recordName), "no deletion but WipeOut takes the record")

			f.addSecret(userSecret("mine", map[string]string{"username": "postgres", "password": "Users-Own-Password-1"}))
			_, err := f.pgops.KubedbV1().Postgreses(testNS).Create(f.ctx, newPG("x", withAuthSecret("mine"),
				func(pg *kubedbv1.Postgres) { pg.UID = "uid-x-2" }), metav1.CreateOptions{})
			require.NoError(t, err)
			f.refresh()
			require.NoError(t, f.sync("x"))
			f.refresh()
			rec := f.secret(recordName)
			assert.Equal(t, "uid-x-2", rec.Annotations[kubedbv1.RecordDatabaseUIDAnnotation])
			if kept {
				assert.Equal(t, accepted, string(rec.Data["password"]), "the kept data's credential")
				assert.True(t, f.hasEvent(corev1.EventTypeNormal, ReasonCredentialRecordAdopted, recordName))
				require.Len(t, f.requests(), 1, "the new Postgres's Secret is applied to the kept data like an edit")
				assert.Equal(t, "mine", f.requests()[0].Spec.Authentication.SecretRef.Name)
			} else {
				assert.Equal(t, "Users-Own-Password-1", string(rec.Data["password"]), "new data is initialised from the new Secret")
				assert.True(t, f.hasEvent(corev1.EventTypeNormal, ReasonCredentialRecordReset, recordName))
				assert.Empty(t, f.requests())
			}
		})
	}
}

// A record deleted from a database that ran is created again only from a credential the
// primary accepts: the auth Secret may hold an edit PostgreSQL never took.
func TestDeletedRecordIsCreatedAgainOnlyFromWhatPostgreSQLAccepts(t *testing.T) {
	f := readyDatabase(t)
	accepted := string(f.secret(recordName).Data["password"])
	f.editSecret("x-auth", "password", "Edited-Password-1")
	f.health.refused = map[string]bool{"Edited-Password-1": true}
	require.NoError(t, f.kube.CoreV1().Secrets(testNS).Delete(f.ctx, recordName, metav1.DeleteOptions{}))
	f.refresh()
	f.mustSync("x")
	f.refresh()
	assert.False(t, f.exists("secret", recordName), "never recorded from a credential PostgreSQL refuses")
	cond := condition(f.postgres("x"), kubedbv1.ConditionProvisioningStarted)
	assert.Contains(t, cond.Message, "PostgreSQL refuses the credential in Secret x-auth")

	f.editSecret("x-auth", "password", accepted)
	f.mustSync("x")
	f.refresh()
	assert.Equal(t, accepted, string(f.secret(recordName).Data["password"]))
}

// A cache behind the ops-manager's write of the record (PostgreSQL took the new credential
// a moment ago) does not make the Postgres say its password was changed outside pgops: a
// refused login is tried again with the record read live.
func TestRefusedLoginIsTriedAgainWithTheLiveRecord(t *testing.T) {
	f := readyDatabase(t)
	old := string(f.secret(recordName).Data["password"])
	rec := f.secret(recordName)
	rec.Data["password"] = []byte("Rotated-A-Moment-Ago-1")
	_, err := f.kube.CoreV1().Secrets(testNS).Update(f.ctx, rec, metav1.UpdateOptions{})
	require.NoError(t, err) // the caches are not refreshed: they still hold the old record
	f.health.refused = map[string]bool{old: true}
	f.later(healthTTL)
	f.mustSync("x")
	pg := f.postgres("x")
	assert.Equal(t, metav1.ConditionTrue, condition(pg, kubedbv1.ConditionAcceptingConnection).Status, condition(pg, kubedbv1.ConditionAcceptingConnection).Message)
}

// An edit's request that a newer request superseded (Skipped) never ran: the edit is tried
// again at once, not refused.
func TestSkippedEditRequestIsTriedAgainAtOnce(t *testing.T) {
	f := readyDatabase(t)
	f.editSecret("x-auth", "password", "Edited-Password-1")
	f.mustSync("x")
	f.refresh()
	require.Len(t, f.requests(), 1)
	f.endRequest(f.requests()[0].Name, opsv1alpha1.OpsRequestPhaseSkipped, fixtureNow)
	f.mustSync("x")
	f.refresh()
	require.Len(t, f.requests(), 2)
	assert.Equal(t, ReasonAuthSecretEdited, condition(f.postgres("x"), ConditionCredentialRotation).Reason)
}
