package opsmanager

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clienttesting "k8s.io/client-go/testing"

	kubedbv1 "github.com/pgops/pgops/pkg/apis/kubedb/v1"
	opsv1alpha1 "github.com/pgops/pgops/pkg/apis/ops/v1alpha1"
)

func userProvided(secret string) func(*opsv1alpha1.PostgresOpsRequest) {
	return func(r *opsv1alpha1.PostgresOpsRequest) {
		r.Spec.Authentication = &opsv1alpha1.AuthSpec{SecretRef: &opsv1alpha1.SecretReference{Kind: "Secret", Name: secret}}
	}
}

func (w *world) userSecret(name string, data map[string]string) {
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}, Type: corev1.SecretTypeBasicAuth, Data: map[string][]byte{}}
	for k, v := range data {
		s.Data[k] = []byte(v)
	}
	w.create(s)
}

// createStaged stages password for req as a dying operator would have.
func (w *world) createStaged(req *opsv1alpha1.PostgresOpsRequest, password string) {
	labels := ownedLabels()
	labels[LabelOpsRequestUID] = string(req.UID)
	w.create(&corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: stagedSecretName(req), Namespace: ns, Labels: labels, Finalizers: []string{StagedCredentialFinalizer}},
		Data:       map[string][]byte{"username": []byte(superuser), "password": []byte(password)},
	})
}

func condition(req *opsv1alpha1.PostgresOpsRequest, typ string) *metav1.Condition {
	return meta.FindStatusCondition(req.Status.Conditions, typ)
}

// assertNoSecretsLeaked checks that no password reached an event or a status.
func (w *world) assertNoSecretsLeaked(passwords ...string) {
	w.t.Helper()
	w.drainEvents()
	reqs, err := w.pgops.OpsV1alpha1().PostgresOpsRequests(ns).List(context.Background(), metav1.ListOptions{})
	require.NoError(w.t, err)
	var texts []string
	texts = append(texts, w.events...)
	for _, r := range reqs.Items {
		texts = append(texts, describe(&r))
	}
	texts = append(texts, describePostgres(w.postgres()))
	for _, text := range texts {
		for _, p := range passwords {
			require.NotContains(w.t, text, p, "a password leaked")
		}
	}
}

func describePostgres(pg *kubedbv1.Postgres) string {
	var b strings.Builder
	for _, c := range pg.Status.Conditions {
		b.WriteString(c.Type + " " + c.Reason + " " + c.Message + "\n")
	}
	return b.String()
}

func TestGeneratedRotationEndToEnd(t *testing.T) {
	for _, replicas := range []int32{1, 3} {
		t.Run(map[int32]string{1: "one replica", 3: "three replicas"}[replicas], func(t *testing.T) {
			w := newWorld(t, replicas)
			w.newRequest("rotate")
			req := w.runUntilDone("rotate", 50)

			require.Equal(t, opsv1alpha1.OpsRequestPhaseSuccessful, req.Status.Phase, describe(req))
			for _, typ := range []string{ConditionRotateAuth, ConditionPauseDatabase, ConditionUpdateCredential,
				ConditionUpdateStatefulSets, ConditionRestartNodes, ConditionCheckPodReady, ConditionResumeDatabase, ConditionSuccessful} {
				assert.True(t, isTrue(req.Status.Conditions, typ), "condition %s: %s", typ, describe(req))
			}
			for i := int32(0); i < replicas; i++ {
				pod := dbName + "-" + string(rune('0'+i))
				assert.True(t, isTrue(req.Status.Conditions, perPodCondition(ConditionEvictPod, pod)), pod)
				assert.True(t, isTrue(req.Status.Conditions, perPodCondition(ConditionCheckPodReady, pod)), pod)
			}

			secret := w.secret(dbName + "-auth")
			newPassword := string(secret.Data["password"])
			assert.Len(t, newPassword, 20)
			assert.NotEqual(t, oldPassword, newPassword)
			assert.Equal(t, superuser, string(secret.Data["username"]))
			assert.Equal(t, superuser, string(secret.Data["username.prev"]))
			assert.Equal(t, oldPassword, string(secret.Data["password.prev"]))
			assert.NotEmpty(t, secret.Annotations[kubedbv1.AuthActiveFromAnnotation])
			assert.Equal(t, newPassword, w.db.password(superuser), "PostgreSQL has the Secret's password")
			assert.Equal(t, 1, w.db.setCalls, "the password is set exactly once")

			pg := w.postgres()
			assert.Nil(t, meta.FindStatusCondition(pg.Status.Conditions, kubedbv1.ConditionPaused), "database resumed")
			require.NotNil(t, pg.Status.AuthSecret)
			assert.NotNil(t, pg.Status.AuthSecret.LastUpdateTimestamp)

			pods, err := w.kube.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{})
			require.NoError(t, err)
			for _, pod := range pods.Items {
				assert.Equal(t, "rev-"+string(req.UID), pod.Labels["controller-revision-hash"], pod.Name)
			}
			_, err = w.kube.CoreV1().Secrets(ns).Get(context.Background(), stagedSecretName(req), metav1.GetOptions{})
			assert.True(t, err != nil, "the staged credential is deleted")
			w.assertNoSecretsLeaked(oldPassword, newPassword)
		})
	}
}

func TestPodsRestartStandbysFirst(t *testing.T) {
	w := newWorld(t, 3)
	w.newRequest("rotate")
	w.runUntilDone("rotate", 50)
	assert.Equal(t, []string{"pg-2", "pg-1", "pg-0"}, w.evictions())
}

func TestUserProvidedRotation(t *testing.T) {
	w := newWorld(t, 3)
	w.userSecret("mine", map[string]string{"username": superuser, "password": "Users-Own-Password-1"})
	w.newRequest("rotate", userProvided("mine"))
	req := w.runUntilDone("rotate", 50)

	require.Equal(t, opsv1alpha1.OpsRequestPhaseSuccessful, req.Status.Phase, describe(req))
	assert.Equal(t, "Users-Own-Password-1", w.db.password(superuser))
	mine := w.secret("mine")
	assert.Equal(t, oldPassword, string(mine.Data["password.prev"]))
	assert.Equal(t, superuser, string(mine.Data["username.prev"]))
	assert.Equal(t, "Users-Own-Password-1", string(mine.Data["password"]))
	pg := w.postgres()
	assert.Equal(t, "mine", pg.Spec.AuthSecret.Name)
	assert.True(t, pg.Spec.AuthSecret.ExternallyManaged)
	assert.NotNil(t, pg.Spec.AuthSecret.ActiveFrom)
	old := w.secret(dbName + "-auth")
	assert.Equal(t, oldPassword, string(old.Data["password"]), "the old Secret is left in place")

	sts, err := w.kube.AppsV1().StatefulSets(ns).Get(context.Background(), dbName, metav1.GetOptions{})
	require.NoError(t, err)
	for _, env := range sts.Spec.Template.Spec.Containers[0].Env {
		assert.Equal(t, recordName, env.ValueFrom.SecretKeyRef.Name, env.Name)
	}
	assert.Equal(t, "Users-Own-Password-1", string(w.secret(recordName).Data["password"]), "the pods boot from the record, which has the new credential")
	w.assertNoSecretsLeaked(oldPassword, "Users-Own-Password-1")
}

func TestBadInputFailsBeforePausing(t *testing.T) {
	cases := map[string]struct {
		secret     map[string]string
		secretName string
		reason     string
		message    string
	}{
		"missing secret":     {nil, "absent", ReasonSecretInvalid, "Secret demo/absent named in authentication.secretRef does not exist"},
		"no password":        {map[string]string{"username": superuser}, "mine", ReasonSecretInvalid, `Secret demo/mine has no "password"`},
		"different username": {map[string]string{"username": "alice", "password": "Alice-Password-1"}, "mine", ReasonUsernameChanged, "database username cannot be changed"},
		"current secret":     {nil, dbName + "-auth", ReasonInvalidRequest, "whose credential PostgreSQL accepts already"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			w := newWorld(t, 1)
			if tc.secret != nil {
				w.userSecret(tc.secretName, tc.secret)
			}
			w.newRequest("rotate", userProvided(tc.secretName))
			req := w.runUntilDone("rotate", 10)
			require.Equal(t, opsv1alpha1.OpsRequestPhaseFailed, req.Status.Phase)
			failed := condition(req, ConditionFailed)
			require.NotNil(t, failed)
			assert.Equal(t, tc.reason, failed.Reason)
			assert.Contains(t, failed.Message, tc.message)
			assert.Nil(t, condition(req, ConditionPauseDatabase), "the database was never paused")
			assert.Equal(t, oldPassword, w.db.password(superuser))
		})
	}
}

func TestMissingDatabaseFails(t *testing.T) {
	w := newWorld(t, 1)
	w.newRequest("rotate", func(r *opsv1alpha1.PostgresOpsRequest) { r.Spec.DatabaseRef.Name = "nope" })
	req := w.runUntilDone("rotate", 10)
	require.Equal(t, opsv1alpha1.OpsRequestPhaseFailed, req.Status.Phase)
	assert.Equal(t, "Postgres demo/nope does not exist", condition(req, ConditionFailed).Message)
}

func TestNotReadyDatabaseWaitsThenTimesOut(t *testing.T) {
	w := newWorld(t, 1)
	pg := w.postgres()
	pg.Status.Phase = kubedbv1.DatabasePhaseNotReady
	_, err := w.pgops.KubedbV1().Postgreses(ns).UpdateStatus(context.Background(), pg, metav1.UpdateOptions{})
	require.NoError(t, err)
	w.newRequest("rotate", func(r *opsv1alpha1.PostgresOpsRequest) { r.Spec.Timeout = &metav1.Duration{Duration: 30 * time.Second} })

	for i := 0; i < 3; i++ {
		_, err := w.sync("rotate")
		require.NoError(t, err)
	}
	req := w.request("rotate")
	require.Equal(t, opsv1alpha1.OpsRequestPhasePending, req.Status.Phase)
	pending := condition(req, ConditionPending)
	assert.Equal(t, ReasonWaitingForDatabase, pending.Reason)
	assert.Contains(t, pending.Message, `phase "NotReady"`)

	w.clock.Step(31 * time.Second)
	req = w.runUntilDone("rotate", 5)
	require.Equal(t, opsv1alpha1.OpsRequestPhaseFailed, req.Status.Phase)
	assert.Equal(t, ReasonDatabaseNotReady, condition(req, ConditionFailed).Reason)
	assert.Contains(t, condition(req, ConditionFailed).Message, "was not ready within 30s")
}

func TestApplyAlwaysRunsOnAProvisionedDatabase(t *testing.T) {
	w := newWorld(t, 1)
	pg := w.postgres()
	pg.Status.Phase = kubedbv1.DatabasePhaseCritical
	_, err := w.pgops.KubedbV1().Postgreses(ns).UpdateStatus(context.Background(), pg, metav1.UpdateOptions{})
	require.NoError(t, err)
	w.newRequest("rotate", func(r *opsv1alpha1.PostgresOpsRequest) { r.Spec.Apply = opsv1alpha1.ApplyOptionAlways })
	req := w.runUntilDone("rotate", 50)
	assert.Equal(t, opsv1alpha1.OpsRequestPhaseSuccessful, req.Status.Phase, describe(req))
}

// newWaitingRequest creates request "rotate" with apply and a 30 s spec.timeout.
func (w *world) newWaitingRequest(apply opsv1alpha1.ApplyOption) {
	w.newRequest("rotate", func(r *opsv1alpha1.PostgresOpsRequest) {
		r.Spec.Apply = apply
		r.Spec.Timeout = &metav1.Duration{Duration: 30 * time.Second}
	})
}

// requireWaitsThenTimesOut syncs request "rotate" (see newWaitingRequest) a few times and
// checks that it waits for its database saying why, then that it fails DatabaseNotReady, saying
// why, once its spec.timeout has passed; it is never paused. Sync errors are retries.
func (w *world) requireWaitsThenTimesOut(why string) {
	w.t.Helper()
	for i := 0; i < 3; i++ {
		_, _ = w.sync("rotate")
	}
	req := w.request("rotate")
	require.Equal(w.t, opsv1alpha1.OpsRequestPhasePending, req.Status.Phase, describe(req))
	pending := condition(req, ConditionPending)
	assert.Equal(w.t, ReasonWaitingForDatabase, pending.Reason)
	assert.Contains(w.t, pending.Message, why)

	w.clock.Step(31 * time.Second)
	for i := 0; i < 5 && !w.request("rotate").Status.Phase.Ended(); i++ {
		_, _ = w.sync("rotate")
	}
	req = w.request("rotate")
	require.Equal(w.t, opsv1alpha1.OpsRequestPhaseFailed, req.Status.Phase, describe(req))
	assert.Equal(w.t, ReasonDatabaseNotReady, condition(req, ConditionFailed).Reason)
	assert.Contains(w.t, condition(req, ConditionFailed).Message, why)
	assert.Nil(w.t, w.postgres().Status.PausedBy, "never paused")
}

// A halted database has no pods to rotate: even apply: Always waits for it within
// spec.timeout, then fails, instead of waiting forever and running whenever it is un-halted.
func TestHaltedDatabaseWaitsThenTimesOutWhateverApply(t *testing.T) {
	for _, apply := range []opsv1alpha1.ApplyOption{opsv1alpha1.ApplyOptionIfReady, opsv1alpha1.ApplyOptionAlways} {
		t.Run(string(apply), func(t *testing.T) {
			w := newWorld(t, 1)
			// Halted as the provisioner leaves it: no StatefulSet, no Services, still Provisioned.
			pg := w.postgres()
			pg.Spec.Halted = true
			_, err := w.pgops.KubedbV1().Postgreses(ns).Update(context.Background(), pg, metav1.UpdateOptions{})
			require.NoError(t, err)
			pg = w.postgres()
			pg.Status.Phase = kubedbv1.DatabasePhaseHalted
			_, err = w.pgops.KubedbV1().Postgreses(ns).UpdateStatus(context.Background(), pg, metav1.UpdateOptions{})
			require.NoError(t, err)
			require.NoError(t, w.kube.AppsV1().StatefulSets(ns).Delete(context.Background(), dbName, metav1.DeleteOptions{}))
			require.NoError(t, w.kube.CoreV1().Services(ns).Delete(context.Background(), dbName, metav1.DeleteOptions{}))
			w.newWaitingRequest(apply)
			w.requireWaitsThenTimesOut("halted")
		})
	}
}

// A database whose StatefulSet is missing (deleted by hand, not yet re-created) is waited for
// within spec.timeout like a database that is not ready, not retried for ever.
func TestMissingStatefulSetWaitsThenTimesOut(t *testing.T) {
	w := newWorld(t, 1)
	require.NoError(t, w.kube.AppsV1().StatefulSets(ns).Delete(context.Background(), dbName, metav1.DeleteOptions{}))
	w.newWaitingRequest(opsv1alpha1.ApplyOptionAlways)
	w.requireWaitsThenTimesOut("StatefulSet")
}

// A database that has no auth Secret yet (its names are taken by another application's
// objects, so the provisioner created nothing) cannot be planned for: the request waits
// within spec.timeout, then fails, instead of retrying for ever.
func TestDatabaseWithoutAuthSecretWaitsThenTimesOut(t *testing.T) {
	w := newWorld(t, 1)
	pg := w.postgres()
	pg.Spec.AuthSecret = nil
	_, err := w.pgops.KubedbV1().Postgreses(ns).Update(context.Background(), pg, metav1.UpdateOptions{})
	require.NoError(t, err)
	w.newWaitingRequest(opsv1alpha1.ApplyOptionAlways)
	w.requireWaitsThenTimesOut("no auth Secret yet")
}

// A Postgres created before the API server refused Halt on Ephemeral storage cannot take the
// spec change a rotation to a user's Secret makes: the request is refused before the pause.
func TestUserRotationOfAnEphemeralHaltDatabaseIsRefusedBeforeThePause(t *testing.T) {
	w := newWorld(t, 1)
	pg := w.postgres()
	pg.Spec.StorageType = kubedbv1.StorageTypeEphemeral
	pg.Spec.DeletionPolicy = kubedbv1.DeletionPolicyHalt
	_, err := w.pgops.KubedbV1().Postgreses(ns).Update(context.Background(), pg, metav1.UpdateOptions{})
	require.NoError(t, err)
	w.userSecret("mine", map[string]string{"username": superuser, "password": "Users-Own-Password-1"})
	w.newRequest("rotate", userProvided("mine"))
	req := w.runUntilDone("rotate", 10)
	require.Equal(t, opsv1alpha1.OpsRequestPhaseFailed, req.Status.Phase, describe(req))
	assert.Equal(t, ReasonInvalidRequest, condition(req, ConditionFailed).Reason)
	assert.Contains(t, condition(req, ConditionFailed).Message, "deletionPolicy")
	assert.Nil(t, condition(req, ConditionPauseDatabase), "refused before the pause")
	assert.Equal(t, 0, w.db.setCalls)
}

func TestOneRequestAtATimeAndSupersededSkipped(t *testing.T) {
	w := newWorld(t, 1)
	w.newRequest("first")
	_, err := w.sync("first") // admitted
	require.NoError(t, err)
	_, err = w.sync("first") // Progressing
	require.NoError(t, err)
	require.Equal(t, opsv1alpha1.OpsRequestPhaseProgressing, w.request("first").Status.Phase)

	w.newRequest("second")
	w.newRequest("third")
	_, err = w.sync("second")
	require.NoError(t, err)
	_, err = w.sync("second")
	require.NoError(t, err)
	second := w.request("second")
	require.Equal(t, opsv1alpha1.OpsRequestPhaseSkipped, second.Status.Phase)
	assert.Equal(t, "superseded by the newer PostgresOpsRequest third", condition(second, ConditionSkipped).Message)

	_, err = w.sync("third")
	require.NoError(t, err)
	_, err = w.sync("third")
	require.NoError(t, err)
	third := w.request("third")
	require.Equal(t, opsv1alpha1.OpsRequestPhasePending, third.Status.Phase)
	assert.Equal(t, "waiting for PostgresOpsRequest first to finish", condition(third, ConditionPending).Message)

	require.Equal(t, opsv1alpha1.OpsRequestPhaseSuccessful, w.runUntilDone("first", 50).Status.Phase)
	require.Equal(t, opsv1alpha1.OpsRequestPhaseSuccessful, w.runUntilDone("third", 50).Status.Phase)
}

func TestPauseWaitsForTheProvisioner(t *testing.T) {
	w := newWorld(t, 1)
	w.provisionerConfirmsPause = false
	w.newRequest("rotate")
	for i := 0; i < 4; i++ {
		_, err := w.sync("rotate")
		require.NoError(t, err)
	}
	req := w.request("rotate")
	pause := condition(req, ConditionPauseDatabase)
	require.NotNil(t, pause)
	assert.Equal(t, metav1.ConditionFalse, pause.Status)
	assert.Contains(t, pause.Message, "waiting for the provisioner to pause")
	assert.True(t, req.AsksForPause(), "the request's status asks for the pause")
	assert.Nil(t, w.postgres().Status.PausedBy, "the ops-manager writes no pause: the provisioner grants it")
	assert.Equal(t, 1, w.writes["update postgresopsrequests/status"], "the ask is the status written with the plan")
	assert.Nil(t, condition(req, ConditionUpdateCredential), "nothing changes before the pause is granted")

	w.provisionerConfirmsPause = true
	assert.Equal(t, opsv1alpha1.OpsRequestPhaseSuccessful, w.runUntilDone("rotate", 50).Status.Phase)
}

func TestStepTimeoutFailsAndResumes(t *testing.T) {
	w := newWorld(t, 1)
	w.provisionerConfirmsPause = false
	w.newRequest("rotate", func(r *opsv1alpha1.PostgresOpsRequest) { r.Spec.Timeout = &metav1.Duration{Duration: time.Minute} })
	for i := 0; i < 4; i++ {
		_, err := w.sync("rotate")
		require.NoError(t, err)
	}
	w.clock.Step(2 * time.Minute)
	req := w.runUntilDone("rotate", 5)
	require.Equal(t, opsv1alpha1.OpsRequestPhaseFailed, req.Status.Phase)
	assert.Equal(t, "StepTimedOut", condition(req, ConditionFailed).Reason)
	assert.Contains(t, condition(req, ConditionFailed).Message, "step PauseDatabase did not finish within 1m0s")
	assert.Nil(t, meta.FindStatusCondition(w.postgres().Status.Conditions, kubedbv1.ConditionPaused), "database resumed")
}

// A crash after ALTER ROLE and before the Secret update: the next operator finds the
// current credential rejected, the staged one accepted, and rolls the Secret forward
// without setting the password again.
func TestCrashBetweenAlterRoleAndSecretUpdate(t *testing.T) {
	w := newWorld(t, 3)
	w.provisionerConfirmsPause = false
	w.newRequest("rotate")
	for i := 0; i < 3; i++ {
		_, err := w.sync("rotate")
		require.NoError(t, err)
	}
	w.provisionerConfirmsPause = true
	// Stage and set the password as a dying operator would have, and nothing more.
	w.createStaged(w.request("rotate"), "Staged-Password-9")
	w.db.passwords[superuser] = "Staged-Password-9"

	req := w.runUntilDone("rotate", 50)
	require.Equal(t, opsv1alpha1.OpsRequestPhaseSuccessful, req.Status.Phase, describe(req))
	assert.Equal(t, 0, w.db.setCalls, "the password already in place is not set again")
	secret := w.secret(dbName + "-auth")
	assert.Equal(t, "Staged-Password-9", string(secret.Data["password"]))
	assert.Equal(t, oldPassword, string(secret.Data["password.prev"]))
}

// Whatever step the operator dies after, a new one finishes the job: every sync here runs
// on a freshly started controller, and the request is also re-synced right after each
// step boundary.
func TestResumesFromStatusAtEveryStepBoundary(t *testing.T) {
	w := newWorld(t, 3)
	w.newRequest("rotate")
	seen := map[string]bool{}
	for i := 0; i < 80; i++ {
		_, err := w.sync("rotate")
		require.NoError(t, err)
		req := w.request("rotate")
		for _, c := range req.Status.Conditions {
			if c.Status == metav1.ConditionTrue && !seen[c.Type] {
				seen[c.Type] = true
				_, err := w.sync("rotate") // a new leader picks up right at the boundary
				require.NoError(t, err)
			}
		}
		if req.Status.Phase.Ended() && !hasFinalizer(req) {
			break
		}
	}
	req := w.request("rotate")
	require.Equal(t, opsv1alpha1.OpsRequestPhaseSuccessful, req.Status.Phase, describe(req))
	assert.Equal(t, 1, w.db.setCalls)
	assert.Equal(t, string(w.secret(dbName + "-auth").Data["password"]), w.db.password(superuser))
}

func TestFailureAfterDatabaseUpdateRollsSecretForward(t *testing.T) {
	w := newWorld(t, 1)
	w.provisionerConfirmsPause = false
	w.newRequest("rotate")
	for i := 0; i < 3; i++ {
		_, err := w.sync("rotate")
		require.NoError(t, err)
	}
	// PostgreSQL gets the staged credential, then the request fails before the Secret does.
	req := w.request("rotate")
	w.createStaged(req, "Staged-Password-9")
	w.db.passwords[superuser] = "Staged-Password-9"
	setCondition(&req.Status.Conditions, ConditionUpdateCredential, metav1.ConditionFalse, ReasonDatabaseUpdated, "set", 1, w.clock.Now())
	req.Status.Phase = opsv1alpha1.OpsRequestPhaseFailed
	_, err := w.pgops.OpsV1alpha1().PostgresOpsRequests(ns).UpdateStatus(context.Background(), req, metav1.UpdateOptions{})
	require.NoError(t, err)

	w.runUntilDone("rotate", 5)
	assert.Equal(t, "Staged-Password-9", string(w.secret(dbName + "-auth").Data["password"]), "rolled forward")
	assert.Nil(t, meta.FindStatusCondition(w.postgres().Status.Conditions, kubedbv1.ConditionPaused), "database resumed")
}

func TestBothCredentialsRejectedFails(t *testing.T) {
	w := newWorld(t, 1)
	w.db.passwords[superuser] = "Someone-Else-Changed-It"
	w.newRequest("rotate")
	req := w.runUntilDone("rotate", 20)
	require.Equal(t, opsv1alpha1.OpsRequestPhaseFailed, req.Status.Phase)
	assert.Equal(t, ReasonCredentialRejected, condition(req, ConditionFailed).Reason)
	assert.Nil(t, meta.FindStatusCondition(w.postgres().Status.Conditions, kubedbv1.ConditionPaused), "database resumed")
	assert.Equal(t, oldPassword, string(w.secret(dbName + "-auth").Data["password"]), "the Secret is untouched")
}

func TestUnreachableDatabaseRetriesThenTimesOut(t *testing.T) {
	w := newWorld(t, 1)
	w.db.unreachable = true
	w.newRequest("rotate", func(r *opsv1alpha1.PostgresOpsRequest) { r.Spec.Timeout = &metav1.Duration{Duration: time.Minute} })
	var lastErr error
	for i := 0; i < 6; i++ {
		_, lastErr = w.sync("rotate")
	}
	require.Error(t, lastErr, "an unreachable database is retried")
	cond := condition(w.request("rotate"), ConditionUpdateCredential)
	require.NotNil(t, cond)
	assert.Contains(t, cond.Message, "retrying:")

	w.clock.Step(2 * time.Minute)
	// The sync that fails the request starts its cleanup, which cannot ask the unreachable
	// database whether it has the staged credential yet, and is retried.
	_, err := w.sync("rotate")
	require.ErrorContains(t, err, "unreachable")
	assert.Equal(t, opsv1alpha1.OpsRequestPhaseFailed, w.request("rotate").Status.Phase)
	w.db.unreachable = false
	req := w.runUntilDone("rotate", 5)
	assert.Equal(t, "StepTimedOut", condition(req, ConditionFailed).Reason)
	assert.Nil(t, meta.FindStatusCondition(w.postgres().Status.Conditions, kubedbv1.ConditionPaused), "database resumed")
}

func TestDeletedMidwayResumesTheDatabase(t *testing.T) {
	w := newWorld(t, 1)
	w.newRequest("rotate")
	for i := 0; i < 20 && !isTrue(w.request("rotate").Status.Conditions, ConditionPauseDatabase); i++ {
		_, err := w.sync("rotate")
		require.NoError(t, err)
	}
	req := w.request("rotate")
	now := metav1.NewTime(w.clock.Now())
	req.DeletionTimestamp = &now
	_, err := w.pgops.OpsV1alpha1().PostgresOpsRequests(ns).Update(context.Background(), req, metav1.UpdateOptions{})
	require.NoError(t, err)
	_, err = w.sync("rotate")
	require.NoError(t, err)
	w.requireGone("rotate")
	assert.Nil(t, meta.FindStatusCondition(w.postgres().Status.Conditions, kubedbv1.ConditionPaused), "database resumed")
}

func (w *world) requireGone(name string) {
	w.t.Helper()
	_, err := w.pgops.OpsV1alpha1().PostgresOpsRequests(ns).Get(context.Background(), name, metav1.GetOptions{})
	require.True(w.t, apierrors.IsNotFound(err), "request %s still exists: %v", name, err)
}

// BenchmarkGeneratedRotation measures the ops-manager's own cost of a whole rotation of a
// 3-replica database (fake API server and PostgreSQL), with a freshly started controller
// and full cache fill for every sync, as after a restart.
func BenchmarkGeneratedRotation(b *testing.B) {
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		w := newWorld(b, 3)
		w.newRequest("rotate")
		req := w.runUntilDone("rotate", 50)
		if req.Status.Phase != opsv1alpha1.OpsRequestPhaseSuccessful {
			b.Fatal(describe(req))
		}
	}
}

// TestEvictionRefusedByABudgetIsAskedAgainSoon: the PodDisruptionBudget's refusal (429)
// changes when the disruption controller writes the budget's status, which no informer of
// the ops-manager sees: the request must look again shortly, not at its step deadline.
func TestEvictionRefusedByABudgetIsAskedAgainSoon(t *testing.T) {
	w := newWorld(t, 3)
	refusals := 2
	w.kube.PrependReactor("create", "pods", func(action clienttesting.Action) (bool, runtime.Object, error) {
		if action.GetSubresource() != "eviction" || refusals == 0 {
			return false, nil, nil
		}
		refusals--
		return true, nil, apierrors.NewTooManyRequests("Cannot evict pod as it would violate the pod's disruption budget.", 0)
	})
	w.newRequest("rotate")
	var sawRefusal bool
	for i := 0; i < 50 && refusals > 0; i++ {
		res, err := w.sync("rotate")
		require.NoError(t, err)
		if refusals < 2 {
			sawRefusal = true
			assert.LessOrEqual(t, res.requeueAfter, evictionRecheck, "asked again within %s", evictionRecheck)
			assert.Contains(t, describe(w.request("rotate")), "a PodDisruptionBudget does not allow evicting pod pg-2 yet")
		}
	}
	require.True(t, sawRefusal)
	req := w.runUntilDone("rotate", 50)
	assert.Equal(t, opsv1alpha1.OpsRequestPhaseSuccessful, req.Status.Phase)
	assert.Equal(t, []string{"pg-2", "pg-2", "pg-2", "pg-1", "pg-0"}, w.evictions(), "refused twice, then the order is kept")
}
