package opsmanager

import (
	"context"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	opsv1alpha1 "github.com/pgops/pgops/pkg/apis/ops/v1alpha1"
)

// editSecret changes the password in Secret name in place, as kubectl edit, a GitOps sync
// or a secret operator's refresh does.
func (w *world) editSecret(name, password string) {
	w.t.Helper()
	s := w.secret(name)
	s.Data["password"] = []byte(password)
	require.NoError(w.t, w.kube.Tracker().Update(corev1.SchemeGroupVersion.WithResource("secrets"), s, ns))
}

// applyEdit is the request the provisioner creates for an in-place edit of the auth Secret.
func applyEdit(r *opsv1alpha1.PostgresOpsRequest) {
	userProvided(dbName + "-auth")(r)
	withRestart(opsv1alpha1.RestartNone)(r)
	r.Labels = map[string]string{opsv1alpha1.LabelTrigger: opsv1alpha1.TriggerAuthSecretEdited}
}

// Issue 26, item 9: an in-place edit of the auth Secret is applied like a rotation. The
// rotation logs in with the recorded credential (the Secret no longer holds it), sets the
// edited one, records it, and re-points the running standbys; the Secret is the user's word
// and is not written.
func TestInPlaceEditIsApplied(t *testing.T) {
	w := newWorld(t, 3)
	w.editSecret(dbName+"-auth", "Edited-Password-1")
	edited := w.secret(dbName + "-auth")
	w.newRequest("apply", applyEdit)
	req := w.runUntilDone("apply", 60)

	require.Equal(t, opsv1alpha1.OpsRequestPhaseSuccessful, req.Status.Phase, describe(req))
	assert.Equal(t, "Edited-Password-1", w.db.password(superuser))
	assert.Equal(t, "Edited-Password-1", string(w.secret(recordName).Data["password"]), "recorded once PostgreSQL accepts it")
	assert.Equal(t, edited.ResourceVersion, w.secret(dbName+"-auth").ResourceVersion, "the edited Secret is not written")
	assert.ElementsMatch(t, []string{dbName + "-1", dbName + "-2"}, req.Status.RotateAuth.RepointPods)
	for _, pod := range req.Status.RotateAuth.RepointPods {
		assert.Equal(t, "Edited-Password-1", w.db.passfile(pod), "standby %s re-pointed without a restart", pod)
	}
	assert.Empty(t, w.evictions())
	assert.Contains(t, condition(req, ConditionRestartNodes).Message, "the old credential is refused")
	w.requireCredentialWorks()
	w.assertNoSecretsLeaked(oldPassword, "Edited-Password-1")
}

// An edit made while the previous one is applied is the user's latest word: the rotation
// never writes the one it applied back over it, and the provisioner applies it next.
func TestNewerEditIsNeverOverwritten(t *testing.T) {
	w := newWorld(t, 1)
	w.editSecret(dbName+"-auth", "Edited-Password-1")
	w.newRequest("apply", applyEdit)
	w.syncUntil("apply", 60, func(r *opsv1alpha1.PostgresOpsRequest) bool {
		return isTrue(r.Status.Conditions, ConditionUpdateCredential)
	})
	w.editSecret(dbName+"-auth", "Edited-Password-2")
	req := w.runUntilDone("apply", 60)
	require.Equal(t, opsv1alpha1.OpsRequestPhaseSuccessful, req.Status.Phase, describe(req))
	assert.Equal(t, "Edited-Password-1", w.db.password(superuser))
	assert.Equal(t, "Edited-Password-1", string(w.secret(recordName).Data["password"]))
	assert.Equal(t, "Edited-Password-2", string(w.secret(dbName + "-auth").Data["password"]), "the newer edit stays for the next request")
}

// A request naming the auth Secret whose content PostgreSQL already has is refused before
// the pause: there is nothing to apply.
func TestApplyingAnUneditedSecretIsRefused(t *testing.T) {
	w := newWorld(t, 1)
	w.newRequest("apply", applyEdit)
	req := w.runUntilDone("apply", 20)
	require.Equal(t, opsv1alpha1.OpsRequestPhaseFailed, req.Status.Phase, describe(req))
	assert.Equal(t, ReasonInvalidRequest, condition(req, ConditionFailed).Reason)
	assert.Nil(t, condition(req, ConditionPauseDatabase), "refused before the pause")
	assert.Equal(t, 0, w.db.setCalls)
}

// The auth Secret edited before a generated rotation: the rotation logs in with the
// recorded credential, which PostgreSQL accepts, never the Secret's, and records the new one;
// the edited Secret is someone's newer word, left for the provisioner to apply next.
func TestGeneratedRotationLogsInWithTheRecordAndLeavesAnEdit(t *testing.T) {
	w := newWorld(t, 1)
	w.editSecret(dbName+"-auth", "Edited-Before-The-Rotation-1")
	w.newRequest("rotate")
	req := w.runUntilDone("rotate", 50)
	require.Equal(t, opsv1alpha1.OpsRequestPhaseSuccessful, req.Status.Phase, describe(req))
	assert.NotEqual(t, oldPassword, w.db.password(superuser))
	assert.Equal(t, w.db.password(superuser), string(w.secret(recordName).Data["password"]))
	assert.Equal(t, "Edited-Before-The-Rotation-1", string(w.secret(dbName + "-auth").Data["password"]))
	w.drainEvents()
	assert.Contains(t, strings.Join(w.events, "\n"), "SecretChangedDuringRotation")
}

// Edited during the rotation, after it set the new password: the same.
func TestEditDuringAGeneratedRotationIsNeverOverwritten(t *testing.T) {
	w := newWorld(t, 3)
	w.newRequest("rotate")
	w.syncUntil("rotate", 60, func(r *opsv1alpha1.PostgresOpsRequest) bool {
		return pastPointOfNoReturn(r)
	})
	w.editSecret(dbName+"-auth", "Edited-During-The-Rotation-1")
	req := w.runUntilDone("rotate", 80)
	require.Equal(t, opsv1alpha1.OpsRequestPhaseSuccessful, req.Status.Phase, describe(req))
	assert.Equal(t, w.db.password(superuser), string(w.secret(recordName).Data["password"]), "the record has what PostgreSQL has")
	assert.Equal(t, "Edited-During-The-Rotation-1", string(w.secret(dbName + "-auth").Data["password"]))
	for _, pod := range req.Status.RotateAuth.RepointPods {
		assert.Equal(t, w.db.password(superuser), w.db.passfile(pod))
	}
}

// A record of another database (a re-created Postgres of the same name that has not adopted
// it yet) is never used or written: the rotation falls back to the Secret.
func TestRecordOfAnotherDatabaseIsNotUsed(t *testing.T) {
	w := newWorld(t, 1)
	rec := w.secret(recordName)
	rec.Annotations["pgops.dev/database-uid"] = "uid-of-an-earlier-postgres"
	rec.Data["password"] = []byte("Earlier-Database-Password")
	_, err := w.kube.CoreV1().Secrets(ns).Update(context.Background(), rec, metav1.UpdateOptions{})
	require.NoError(t, err)
	w.newRequest("rotate")
	req := w.runUntilDone("rotate", 50)
	require.Equal(t, opsv1alpha1.OpsRequestPhaseSuccessful, req.Status.Phase, describe(req))
	assert.Equal(t, "Earlier-Database-Password", string(w.secret(recordName).Data["password"]))
	assert.Equal(t, w.db.password(superuser), string(w.secret(dbName + "-auth").Data["password"]))
}

// A standby created by a version before the record takes its credential from the auth
// Secret itself: an edit applied in mode None restarts it rather than re-pointing it, since
// its next container start would read the edited Secret, not the record.
func TestStandbysOffTheRecordAreRestarted(t *testing.T) {
	requireEditRestartsStandby2(t, "rather than the credential record", func(pod *corev1.Pod) {
		pod.Spec.Containers[0].Env = []corev1.EnvVar{secretEnv("POSTGRES_PASSWORD", dbName+"-auth", "password")}
	})
}

// requireEditRestartsStandby2 applies an edit of the auth Secret in mode None to a
// 3-replica database whose standby -2 is changed by edit, and checks that -2 is restarted
// rather than re-pointed, with a note saying why, and -1 re-pointed.
func requireEditRestartsStandby2(t *testing.T, why string, edit func(*corev1.Pod)) {
	t.Helper()
	w := newWorld(t, 3)
	pod := w.pod(dbName + "-2")
	edit(pod)
	require.NoError(t, w.kube.Tracker().Update(corev1.SchemeGroupVersion.WithResource("pods"), pod, ns))
	w.editSecret(dbName+"-auth", "Edited-Password-1")
	w.newRequest("apply", applyEdit)
	req := w.runUntilDone("apply", 80)
	require.Equal(t, opsv1alpha1.OpsRequestPhaseSuccessful, req.Status.Phase, describe(req))
	assert.Equal(t, []string{dbName + "-2"}, req.Status.RotateAuth.RestartPods)
	assert.Equal(t, []string{dbName + "-1"}, req.Status.RotateAuth.RepointPods)
	assert.Contains(t, strings.Join(req.Status.RotateAuth.Notes, " "), why)
}

func (w *world) pod(name string) *corev1.Pod {
	w.t.Helper()
	pod, err := w.kube.CoreV1().Pods(ns).Get(context.Background(), name, metav1.GetOptions{})
	require.NoError(w.t, err)
	return pod
}

// Without a credential record (a database an earlier version made), the Secret is the only
// place the new password could be kept: a third credential written into it is overwritten,
// as before the record.
func TestWithoutARecordTheSecretGetsTheNewCredential(t *testing.T) {
	w := newWorld(t, 1)
	require.NoError(t, w.kube.CoreV1().Secrets(ns).Delete(context.Background(), recordName, metav1.DeleteOptions{}))
	w.denySecretUpdates = true // hold the request between the ALTER ROLE and the Secret
	w.newRequest("rotate")
	w.syncUntil("rotate", 30, atPointOfNoReturn)
	w.editSecret(dbName+"-auth", "Edited-During-The-Rotation-1")
	w.denySecretUpdates = false
	req := w.runUntilDone("rotate", 50)
	require.Equal(t, opsv1alpha1.OpsRequestPhaseSuccessful, req.Status.Phase, describe(req))
	w.requireCredentialWorks()
}

// A standby of an earlier release's template runs the shell entrypoint, without the pgops
// agent: in mode None it is restarted (which moves it to the agent), not re-pointed.
func TestStandbysWithoutTheAgentAreRestarted(t *testing.T) {
	requireEditRestartsStandby2(t, "runs no pgops agent", func(pod *corev1.Pod) { pod.Spec.Containers[0].Ports = nil })
}
