package opsmanager

import (
	"context"
	"fmt"
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
	"k8s.io/apimachinery/pkg/runtime"
	clienttesting "k8s.io/client-go/testing"
	"k8s.io/utils/ptr"

	kubedbv1 "github.com/pgops/pgops/pkg/apis/kubedb/v1"
	opsv1alpha1 "github.com/pgops/pgops/pkg/apis/ops/v1alpha1"
)

// Scenarios from the issue "RotateAuth safety: never a lockout, never data loss". Each is
// a way a rotation used to lock someone out or lose data.

// syncUntil syncs name until done says so, failing after limit syncs.
func (w *world) syncUntil(name string, limit int, done func(*opsv1alpha1.PostgresOpsRequest) bool) *opsv1alpha1.PostgresOpsRequest {
	w.t.Helper()
	for i := 0; i < limit; i++ {
		_, _ = w.sync(name)
		if req, err := w.pgops.OpsV1alpha1().PostgresOpsRequests(ns).Get(context.Background(), name, metav1.GetOptions{}); err == nil && done(req) {
			return req
		} else if apierrors.IsNotFound(err) {
			w.t.Fatalf("request %s is gone", name)
		}
	}
	w.t.Fatalf("request %s: condition not reached in %d syncs: %s", name, limit, describe(w.request(name)))
	return nil
}

// syncUntilRestarted syncs request name until pod has been restarted and is ready again.
func (w *world) syncUntilRestarted(name, pod string) *opsv1alpha1.PostgresOpsRequest {
	w.t.Helper()
	return w.syncUntil(name, 60, func(r *opsv1alpha1.PostgresOpsRequest) bool {
		return isTrue(r.Status.Conditions, perPodCondition(ConditionCheckPodReady, pod))
	})
}

// deleteAndCleanUp marks request name deleted and syncs until its cleanup let it go.
func (w *world) deleteAndCleanUp(name string) *opsv1alpha1.PostgresOpsRequest {
	w.t.Helper()
	req := w.request(name)
	now := metav1.NewTime(w.clock.Now())
	req.DeletionTimestamp = &now
	require.NoError(w.t, w.pgops.Tracker().Update(opsv1alpha1.SchemeGroupVersion.WithResource("postgresopsrequests"), req, ns))
	for i := 0; i < 40; i++ {
		if _, err := w.pgops.OpsV1alpha1().PostgresOpsRequests(ns).Get(context.Background(), name, metav1.GetOptions{}); apierrors.IsNotFound(err) {
			break
		}
		_, err := w.sync(name)
		require.NoError(w.t, err)
	}
	w.requireGone(name)
	return req
}

func atPointOfNoReturn(req *opsv1alpha1.PostgresOpsRequest) bool { return pastPointOfNoReturn(req) }

func (w *world) evictions() []string {
	var evicted []string
	for _, action := range w.kube.Actions() {
		if action.GetVerb() == "create" && action.GetSubresource() == "eviction" {
			evicted = append(evicted, action.(clienttesting.CreateAction).GetObject().(metav1.Object).GetName())
		}
	}
	return evicted
}

// requireCredentialWorks checks the end state every rotation must reach: the database is
// resumed and the Secret it points at holds the password PostgreSQL has.
func (w *world) requireCredentialWorks() string {
	w.t.Helper()
	pg := w.postgres()
	require.Nil(w.t, meta.FindStatusCondition(pg.Status.Conditions, kubedbv1.ConditionPaused), "database resumed")
	secret := w.secret(pg.Spec.AuthSecret.Name)
	require.Equal(w.t, w.db.password(superuser), string(secret.Data["password"]), "the auth Secret logs in")
	if rec, err := w.kube.CoreV1().Secrets(ns).Get(context.Background(), recordName, metav1.GetOptions{}); err == nil {
		require.Equal(w.t, w.db.password(superuser), string(rec.Data["password"]), "the pods boot from what PostgreSQL accepts")
	}
	return string(secret.Data["password"])
}

// Item 4: kubectl delete pgops X --cascade=foreground past the point of no return. The
// garbage collector deletes the request's dependents; the staged credential is not one of
// them (no owner reference) and a deletion by anyone only marks it (finalizer). Cleanup
// rolls the Secret forward to the one password PostgreSQL has.
func TestForegroundDeletionPastPointOfNoReturnKeepsTheCredential(t *testing.T) {
	w := newWorld(t, 1)
	w.denySecretUpdates = true
	w.newRequest("rotate")
	req := w.syncUntil("rotate", 30, atPointOfNoReturn)
	staged := req.Status.RotateAuth.StagedSecret

	w.deleteForeground("rotate")
	require.NoError(t, w.kube.CoreV1().Secrets(ns).Delete(context.Background(), staged, metav1.DeleteOptions{}),
		"a user deleting the staged Secret by hand")
	for i := 0; i < 3; i++ {
		_, err := w.sync("rotate")
		require.Error(t, err, "the Secret cannot be updated yet: cleanup waits")
	}
	assert.NotNil(t, w.secret(staged).DeletionTimestamp, "the staged credential is only marked for deletion")

	w.denySecretUpdates = false
	for i := 0; i < 10; i++ {
		if _, err := w.pgops.OpsV1alpha1().PostgresOpsRequests(ns).Get(context.Background(), "rotate", metav1.GetOptions{}); apierrors.IsNotFound(err) {
			break
		}
		_, _ = w.sync("rotate")
	}
	w.requireGone("rotate")
	password := w.requireCredentialWorks()
	assert.NotEqual(t, oldPassword, password)
	assert.Equal(t, 1, w.db.setCalls, "never a second password")
	_, err := w.kube.CoreV1().Secrets(ns).Get(context.Background(), staged, metav1.GetOptions{})
	assert.True(t, apierrors.IsNotFound(err), "the staged credential is released at the end")
}

// Item 4, running request: the staged Secret marked for deletion past the point of no
// return is still the credential the request finishes with; no second password is made.
func TestStagedCredentialMarkedForDeletionIsStillUsed(t *testing.T) {
	w := newWorld(t, 3)
	w.denySecretUpdates = true
	w.newRequest("rotate")
	req := w.syncUntil("rotate", 30, atPointOfNoReturn)
	require.NoError(t, w.kube.CoreV1().Secrets(ns).Delete(context.Background(), req.Status.RotateAuth.StagedSecret, metav1.DeleteOptions{}))
	w.denySecretUpdates = false

	req = w.runUntilDone("rotate", 60)
	require.Equal(t, opsv1alpha1.OpsRequestPhaseSuccessful, req.Status.Phase, describe(req))
	w.requireCredentialWorks()
	assert.Equal(t, 1, w.db.setCalls)
}

// Item 2: a user Secret named like something the operator creates (the old staged name
// "<request>-staged-auth", the ConfigMap's and Services' names) is the user's: it is used as
// the target and never deleted.
func TestUserSecretNamedLikeOperatorObjectsSurvives(t *testing.T) {
	for _, name := range []string{"rotate-staged-auth", dbName + "-scripts", dbName + "-pods", dbName + "-standby"} {
		t.Run(name, func(t *testing.T) {
			w := newWorld(t, 1)
			w.userSecret(name, map[string]string{"username": superuser, "password": "Users-Own-Password-1"})
			w.newRequest("rotate", userProvided(name))
			req := w.runUntilDone("rotate", 50)
			require.Equal(t, opsv1alpha1.OpsRequestPhaseSuccessful, req.Status.Phase, describe(req))
			assert.Equal(t, name, w.postgres().Spec.AuthSecret.Name)
			assert.Equal(t, "Users-Own-Password-1", w.requireCredentialWorks())
		})
	}
}

// Item 2, the other way round: Secrets that are not the user's to give are refused before
// the pause.
func TestForeignSecretsRefusedBeforePausing(t *testing.T) {
	cases := map[string]func(w *world) string{
		"another database's auth Secret": func(w *world) string {
			w.create(&kubedbv1.Postgres{
				ObjectMeta: metav1.ObjectMeta{Name: "other", Namespace: ns},
				Spec:       kubedbv1.PostgresSpec{Version: "16.4", AuthSecret: &kubedbv1.SecretReference{Name: "shared"}},
			})
			w.userSecret("shared", map[string]string{"username": superuser, "password": "Users-Own-Password-1"})
			return "shared"
		},
		"a Secret pgops manages for another database": func(w *world) string {
			w.create(&corev1.Secret{
				ObjectMeta: metav1.ObjectMeta{Name: "other-auth", Namespace: ns, Labels: map[string]string{
					kubedbv1.LabelManagedBy: kubedbv1.ManagedByValue, kubedbv1.LabelInstance: "other"}},
				Data: map[string][]byte{"username": []byte(superuser), "password": []byte("Users-Own-Password-1")},
			})
			return "other-auth"
		},
		"another request's staged credential": func(w *world) string {
			w.create(&corev1.Secret{
				ObjectMeta: metav1.ObjectMeta{Name: "pgops-rotation-x", Namespace: ns, Labels: map[string]string{LabelOpsRequestUID: "x"}},
				Data:       map[string][]byte{"username": []byte(superuser), "password": []byte("Users-Own-Password-1")},
			})
			return "pgops-rotation-x"
		},
	}
	for name, setup := range cases {
		t.Run(name, func(t *testing.T) {
			w := newWorld(t, 1)
			secret := setup(w)
			w.newRequest("rotate", userProvided(secret))
			req := w.runUntilDone("rotate", 10)
			require.Equal(t, opsv1alpha1.OpsRequestPhaseFailed, req.Status.Phase)
			assert.Equal(t, ReasonInvalidRequest, condition(req, ConditionFailed).Reason, describe(req))
			assert.Nil(t, condition(req, ConditionPauseDatabase), "never paused")
			assert.Equal(t, oldPassword, w.db.password(superuser))
		})
	}
}

// Items 3 and 11: legal YAML, hostile values. Each is refused before the pause with a
// message that names the rule, and never shows the password.
func TestHostilePasswordsRefusedBeforePausing(t *testing.T) {
	for name, tc := range map[string]struct{ password, rule string }{
		"trailing newline":  {"Users-Own-Password-1\n", "control"},
		"control character": {"Users\x1bOwn-Password", "control"},
		"surrounding space": {" Users-Own-Password-1", "whitespace"},
		"one byte":          {"x", "8 to 1024 bytes"},
		"200 kB":            {strings.Repeat("p", 200<<10), "8 to 1024 bytes"},
	} {
		t.Run(name, func(t *testing.T) {
			w := newWorld(t, 3)
			w.userSecret("mine", map[string]string{"username": superuser, "password": tc.password})
			w.newRequest("rotate", userProvided("mine"))
			req := w.runUntilDone("rotate", 10)
			require.Equal(t, opsv1alpha1.OpsRequestPhaseFailed, req.Status.Phase)
			failed := condition(req, ConditionFailed)
			assert.Equal(t, ReasonSecretInvalid, failed.Reason)
			assert.Contains(t, failed.Message, tc.rule)
			assert.Nil(t, condition(req, ConditionPauseDatabase), "never paused")
			assert.Nil(t, meta.FindStatusCondition(w.postgres().Status.Conditions, kubedbv1.ConditionPaused))
			assert.Equal(t, oldPassword, w.db.password(superuser))
			if len(tc.password) > 2 {
				w.assertNoSecretsLeaked(strings.TrimSpace(tc.password))
			}
		})
	}
}

// Item 5: a Postgres cache that never sees the switch of spec.authSecret to the user's
// Secret must not point the pods back at the old Secret.
func TestLaggingPostgresCacheKeepsPodsOnTheNewSecret(t *testing.T) {
	w := newWorld(t, 3)
	w.userSecret("mine", map[string]string{"username": superuser, "password": "Users-Own-Password-1"})
	w.freeze(&kubedbv1.PostgresList{})
	w.newRequest("rotate", userProvided("mine"))
	req := w.runUntilDone("rotate", 60)
	require.Equal(t, opsv1alpha1.OpsRequestPhaseSuccessful, req.Status.Phase, describe(req))
	sts, err := w.kube.AppsV1().StatefulSets(ns).Get(context.Background(), dbName, metav1.GetOptions{})
	require.NoError(t, err)
	for _, env := range sts.Spec.Template.Spec.Containers[0].Env {
		assert.Equal(t, recordName, env.ValueFrom.SecretKeyRef.Name, env.Name)
	}
	w.requireCredentialWorks()
}

// A pod cache behind the ops-manager's own eviction still shows the evicted pod running
// (no deletionTimestamp, the old revision): the syncs that the request's own status write
// wakes meanwhile must not evict it again.
func TestLaggingPodCacheEvictsEachPodOnce(t *testing.T) {
	w := newWorld(t, 3)
	w.freeze(&corev1.PodList{})
	w.newRequest("rotate")
	for i := 0; i < 30 && len(w.evictions()) == 0; i++ {
		_, err := w.sync("rotate")
		require.NoError(t, err)
	}
	for i := 0; i < 5; i++ {
		_, err := w.sync("rotate")
		require.NoError(t, err)
	}
	require.Equal(t, []string{"pg-2"}, w.evictions(), "the eviction the API server accepted is not asked again")
	assert.Contains(t, describe(w.request("rotate")), "restarting pod pg-2")

	delete(w.frozen, "*v1.PodList")
	req := w.runUntilDone("rotate", 50)
	require.Equal(t, opsv1alpha1.OpsRequestPhaseSuccessful, req.Status.Phase, describe(req))
	assert.Equal(t, []string{"pg-2", "pg-1", "pg-0"}, w.evictions())
	w.requireCredentialWorks()
}

// setPause makes the API server's Postgres paused (acknowledged) for holder, or not
// paused when holder is nil.
func (w *world) setPause(holder *kubedbv1.OpsRequestReference) {
	w.t.Helper()
	pg := w.postgres()
	meta.RemoveStatusCondition(&pg.Status.Conditions, kubedbv1.ConditionPaused)
	if holder != nil {
		meta.SetStatusCondition(&pg.Status.Conditions, metav1.Condition{Type: kubedbv1.ConditionPaused, Status: metav1.ConditionTrue, Reason: "PausedByProvisioner"})
	}
	pg.Status.PausedBy = holder
	_, err := w.pgops.KubedbV1().Postgreses(ns).UpdateStatus(context.Background(), pg, metav1.UpdateOptions{})
	require.NoError(w.t, err)
}

// Item 6: a cached Paused=True left by the previous request must not complete the next
// request's PauseDatabase while the provisioner has not answered it.
func TestStalePauseInCacheDoesNotCompleteTheNextPause(t *testing.T) {
	w := newWorld(t, 1)
	w.setPause(&kubedbv1.OpsRequestReference{Name: "previous", UID: "uid-previous"})
	w.freeze(&kubedbv1.PostgresList{}) // the cache keeps showing the previous request's pause
	w.setPause(nil)

	w.provisionerConfirmsPause = false
	w.newRequest("rotate")
	for i := 0; i < 6; i++ {
		_, _ = w.sync("rotate")
	}
	req := w.request("rotate")
	assert.False(t, isTrue(req.Status.Conditions, ConditionPauseDatabase), describe(req))
	assert.True(t, req.AsksForPause(), "the request still asks for its pause")
	assert.Nil(t, w.postgres().Status.PausedBy, "no pause is held")

	w.provisionerConfirmsPause = true
	delete(w.frozen, "*v1.PostgresList")
	req = w.runUntilDone("rotate", 50)
	require.Equal(t, opsv1alpha1.OpsRequestPhaseSuccessful, req.Status.Phase, describe(req))
}

// Item 6: the pause of a request that is gone is taken over, not waited on forever; the
// pause of a running one is waited on.
func TestPauseOfAGoneRequestIsTakenOver(t *testing.T) {
	w := newWorld(t, 1)
	w.setPause(&kubedbv1.OpsRequestReference{Name: "vanished", UID: "uid-vanished"})
	w.newRequest("rotate")
	req := w.runUntilDone("rotate", 50)
	require.Equal(t, opsv1alpha1.OpsRequestPhaseSuccessful, req.Status.Phase, describe(req))
	w.requireCredentialWorks()
}

func TestPauseOfARunningRequestIsWaitedOn(t *testing.T) {
	w := newWorld(t, 1)
	w.create(&opsv1alpha1.PostgresOpsRequest{
		ObjectMeta: metav1.ObjectMeta{Name: "elsewhere", Namespace: ns},
		Spec:       opsv1alpha1.PostgresOpsRequestSpec{Type: opsv1alpha1.OpsRequestTypeRotateAuth, DatabaseRef: opsv1alpha1.DatabaseReference{Name: "another"}},
		Status:     opsv1alpha1.OpsRequestStatus{Phase: opsv1alpha1.OpsRequestPhaseProgressing},
	})
	holder, err := w.pgops.OpsV1alpha1().PostgresOpsRequests(ns).Get(context.Background(), "elsewhere", metav1.GetOptions{})
	require.NoError(t, err)
	w.setPause(&kubedbv1.OpsRequestReference{Name: holder.Name, UID: holder.UID})
	w.newRequest("rotate")
	for i := 0; i < 6; i++ {
		_, _ = w.sync("rotate")
	}
	req := w.request("rotate")
	assert.False(t, isTrue(req.Status.Conditions, ConditionPauseDatabase), describe(req))
	assert.Contains(t, condition(req, ConditionPauseDatabase).Message, "paused by PostgresOpsRequest elsewhere")
	assert.Equal(t, holder.UID, w.postgres().Status.PausedBy.UID, "the running request keeps its pause")
}

// Item 1: an Ephemeral primary keeps running (its emptyDir is its data); standbys re-clone.
func TestEphemeralPrimaryIsNeverEvicted(t *testing.T) {
	for replicas, wantEvicted := range map[int32][]string{1: nil, 3: {"pg-2", "pg-1"}} {
		w := newWorld(t, replicas)
		pg := w.postgres()
		pg.Spec.StorageType = kubedbv1.StorageTypeEphemeral
		_, err := w.pgops.KubedbV1().Postgreses(ns).Update(context.Background(), pg, metav1.UpdateOptions{})
		require.NoError(t, err)
		w.newRequest("rotate")
		req := w.runUntilDone("rotate", 60)
		require.Equal(t, opsv1alpha1.OpsRequestPhaseSuccessful, req.Status.Phase, describe(req))
		assert.Equal(t, wantEvicted, w.evictions(), "replicas=%d", replicas)
		assert.Equal(t, []string{"pg-0"}, req.Status.RotateAuth.KeptPods)
		assert.Contains(t, condition(req, ConditionRestartNodes).Message, "kept pg-0 running: storage is Ephemeral")
		w.requireCredentialWorks()
	}
}

// Item 10: a step that keeps failing transiently is retried with backoff, and each failed
// sync also asks to be looked at by the step's deadline, so spec.timeout fires on time.
func TestStepErrorsAreRecheckedByTheDeadline(t *testing.T) {
	w := newWorld(t, 1)
	w.db.unreachable = true
	w.newRequest("rotate", func(r *opsv1alpha1.PostgresOpsRequest) { r.Spec.Timeout = &metav1.Duration{Duration: time.Minute} })
	var res syncResult
	var err error
	for i := 0; i < 6 && err == nil; i++ {
		res, err = w.sync("rotate")
	}
	require.Error(t, err)
	assert.Greater(t, res.requeueAfter, time.Duration(0))
	assert.LessOrEqual(t, res.requeueAfter, time.Minute+time.Second)
}

// Item 7: an immutable user Secret is refused before the pause (the previous credential
// could not be recorded in it).
func TestImmutableUserSecretRefusedBeforePausing(t *testing.T) {
	w := newWorld(t, 1)
	w.create(&corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "mine", Namespace: ns}, Immutable: ptr.To(true),
		Data: map[string][]byte{"username": []byte(superuser), "password": []byte("Users-Own-Password-1")},
	})
	w.newRequest("rotate", userProvided("mine"))
	req := w.runUntilDone("rotate", 10)
	require.Equal(t, opsv1alpha1.OpsRequestPhaseFailed, req.Status.Phase)
	assert.Contains(t, condition(req, ConditionFailed).Message, "is immutable")
	assert.Nil(t, condition(req, ConditionPauseDatabase))
}

// Item 7: the user deletes their Secret, or makes it immutable, after PostgreSQL has the
// new credential. The Secret is written again from the staged copy, and the request ends
// with a Secret that logs in, never retrying forever.
func TestUserSecretChangedPastPointOfNoReturn(t *testing.T) {
	for name, change := range map[string]func(w *world){
		"deleted": func(w *world) {
			require.NoError(t, w.kube.CoreV1().Secrets(ns).Delete(context.Background(), "mine", metav1.DeleteOptions{}))
		},
		"made immutable": func(w *world) {
			s := w.secret("mine")
			s.Immutable = ptr.To(true)
			require.NoError(t, w.kube.Tracker().Update(corev1.SchemeGroupVersion.WithResource("secrets"), s, ns))
		},
	} {
		t.Run(name, func(t *testing.T) {
			w := newWorld(t, 3)
			w.userSecret("mine", map[string]string{"username": superuser, "password": "Users-Own-Password-1"})
			w.denySecretUpdates = true
			w.newRequest("rotate", userProvided("mine"))
			w.syncUntil("rotate", 30, atPointOfNoReturn)
			change(w)
			w.denySecretUpdates = false
			req := w.runUntilDone("rotate", 60)
			require.Equal(t, opsv1alpha1.OpsRequestPhaseSuccessful, req.Status.Phase, describe(req))
			assert.Equal(t, "mine", w.postgres().Spec.AuthSecret.Name)
			assert.Equal(t, "Users-Own-Password-1", w.requireCredentialWorks())
		})
	}
}

// Issue 26, item 3: after UpdateCredential wrote the new credential, another actor changes
// the Secret back (an Argo CD self-heal, an External Secrets refresh, a stale kubectl
// apply) or deletes it. The staged copy is then the only one of the password PostgreSQL
// has: it is released only once the Secret holds that password again.
func TestSecretChangedAfterUpdateCredentialNeverCostsTheOnlyCopy(t *testing.T) {
	type change struct {
		secret string
		apply  func(w *world, secret string)
	}
	reverted := func(w *world, secret string) {
		s := w.secret(secret)
		s.Data["password"] = []byte(oldPassword)
		delete(s.Data, "password.prev")
		require.NoError(t, w.kube.Tracker().Update(corev1.SchemeGroupVersion.WithResource("secrets"), s, ns))
	}
	deleted := func(w *world, secret string) {
		require.NoError(t, w.kube.CoreV1().Secrets(ns).Delete(context.Background(), secret, metav1.DeleteOptions{}))
	}
	for name, tc := range map[string]struct {
		replicas int32
		user     bool
		change   func(w *world, secret string)
	}{
		"generated, 1 replica, reverted":     {1, false, reverted},
		"generated, 3 replicas, reverted":    {3, false, reverted},
		"user-provided, 3 replicas, deleted": {3, true, deleted},
		"user-provided, 1 replica, reverted": {1, true, reverted},
		"generated, 1 replica, deleted":      {1, false, deleted},
	} {
		t.Run(name, func(t *testing.T) {
			w := newWorld(t, tc.replicas)
			target := dbName + "-auth"
			var mutate []func(*opsv1alpha1.PostgresOpsRequest)
			if tc.user {
				target = "mine"
				w.userSecret("mine", map[string]string{"username": superuser, "password": "Users-Own-Password-1"})
				mutate = append(mutate, userProvided("mine"))
			}
			w.newRequest("rotate", mutate...)
			req := w.syncUntil("rotate", 60, func(r *opsv1alpha1.PostgresOpsRequest) bool {
				return isTrue(r.Status.Conditions, ConditionUpdateCredential)
			})
			staged := req.Status.RotateAuth.StagedSecret
			tc.change(w, target)
			for i := 0; i < 80; i++ {
				if _, err := w.pgops.OpsV1alpha1().PostgresOpsRequests(ns).Get(context.Background(), "rotate", metav1.GetOptions{}); err == nil {
					if r := w.request("rotate"); r.Status.Phase.Ended() && !hasFinalizer(r) {
						break
					}
				}
				_, _ = w.sync("rotate")
				w.clock.Step(10 * time.Second)
			}
			req = w.request("rotate")
			require.True(t, req.Status.Phase.Ended() && !hasFinalizer(req), describe(req))
			secret := w.secret(target)
			assert.Equal(t, w.db.password(superuser), string(secret.Data["password"]),
				"the Secret holds the password PostgreSQL has again (%s)", describe(req))
			_, err := w.kube.CoreV1().Secrets(ns).Get(context.Background(), staged, metav1.GetOptions{})
			assert.True(t, apierrors.IsNotFound(err), "the staged copy goes once the Secret holds it")
			assert.Equal(t, 1, w.db.setCalls, "never a second password")
			assert.Equal(t, w.db.password(superuser), string(w.secret(recordName).Data["password"]),
				"the credential record, which the pods boot from, held the new password throughout")
			assert.Equal(t, opsv1alpha1.OpsRequestPhaseSuccessful, req.Status.Phase,
				"the standbys got the password PostgreSQL has from the record: %s", describe(req))
			for _, pod := range req.Status.RotateAuth.RepointPods {
				assert.Equal(t, w.db.password(superuser), w.db.passfile(pod))
			}
			w.drainEvents()
			assert.Regexp(t, "Warning (SecretRestored|SecretRecreated) ", strings.Join(w.events, "\n"), "an event says the Secret was written again")
		})
	}
}

// Issue 26, item 8: the database is scaled between the request's plan and its pause. The
// plan follows what the StatefulSet runs once the pause freezes it: standbys the provisioner
// added before the pause are restarted onto the new credential, and standbys it never
// created are not waited for (the provisioner scales after the resume, from the new
// template).
func TestScaleBetweenPlanAndPauseIsFollowed(t *testing.T) {
	scale := func(w *world, replicas int32, podsToo bool) {
		pg := w.postgres()
		pg.Spec.Replicas = ptr.To(replicas)
		_, err := w.pgops.KubedbV1().Postgreses(ns).Update(context.Background(), pg, metav1.UpdateOptions{})
		require.NoError(t, err)
		if !podsToo {
			return
		}
		sts, err := w.kube.AppsV1().StatefulSets(ns).Get(context.Background(), dbName, metav1.GetOptions{})
		require.NoError(t, err)
		sts.Spec.Replicas = ptr.To(replicas)
		require.NoError(t, w.kube.Tracker().Update(appsv1.SchemeGroupVersion.WithResource("statefulsets"), sts, ns))
		for i := int32(1); i < replicas; i++ {
			w.create(w.readyPod(fmt.Sprintf("%s-%d", dbName, i), sts.Status.UpdateRevision))
		}
		w.db.mu.Lock()
		w.db.standbys = int(replicas) - 1
		w.db.mu.Unlock()
	}
	t.Run("scaled up before the pause: the new standbys are restarted too", func(t *testing.T) {
		w := newWorld(t, 1)
		w.provisionerConfirmsPause = false
		w.newRequest("rotate")
		req := w.syncUntil("rotate", 10, func(r *opsv1alpha1.PostgresOpsRequest) bool { return r.Status.RotateAuth != nil })
		require.Equal(t, []string{dbName + "-0"}, req.Status.RotateAuth.RestartPods, "planned on one replica")
		scale(w, 3, true) // the provisioner scaled before it granted the pause
		w.provisionerConfirmsPause = true
		req = w.runUntilDone("rotate", 80)
		require.Equal(t, opsv1alpha1.OpsRequestPhaseSuccessful, req.Status.Phase, describe(req))
		assert.Equal(t, []string{dbName + "-2", dbName + "-1", dbName + "-0"}, req.Status.RotateAuth.RestartPods)
		assert.ElementsMatch(t, []string{dbName + "-2", dbName + "-1", dbName + "-0"}, w.evictions())
		w.requireCredentialWorks()
	})
	t.Run("scaled up, StatefulSet not yet: nothing waits for pods the pause keeps from being created", func(t *testing.T) {
		w := newWorld(t, 1)
		scale(w, 3, false) // spec says 3; the provisioner has not scaled the StatefulSet yet
		w.newRequest("rotate")
		req := w.runUntilDone("rotate", 60)
		require.Equal(t, opsv1alpha1.OpsRequestPhaseSuccessful, req.Status.Phase, describe(req))
		assert.Equal(t, []string{dbName + "-0"}, req.Status.RotateAuth.RestartPods)
		w.requireCredentialWorks()
	})
}

// Found by review: another actor removes the password key from the Secret after
// UpdateCredential wrote it. Cleanup overwrites the unusable Secret from the staged copy
// instead of retrying for ever with the request's finalizer held.
func TestUnusableTargetSecretIsWrittenAgain(t *testing.T) {
	w := newWorld(t, 1)
	w.newRequest("rotate")
	req := w.syncUntil("rotate", 60, func(r *opsv1alpha1.PostgresOpsRequest) bool {
		return isTrue(r.Status.Conditions, ConditionUpdateCredential)
	})
	s := w.secret(dbName + "-auth")
	delete(s.Data, "password")
	require.NoError(t, w.kube.Tracker().Update(corev1.SchemeGroupVersion.WithResource("secrets"), s, ns))
	for i := 0; i < 80 && !(w.request("rotate").Status.Phase.Ended() && !hasFinalizer(w.request("rotate"))); i++ {
		_, _ = w.sync("rotate")
		w.clock.Step(10 * time.Second)
	}
	req = w.request("rotate")
	require.False(t, hasFinalizer(req), describe(req))
	assert.Equal(t, w.db.password(superuser), string(w.secret(dbName + "-auth").Data["password"]))
	_, err := w.kube.CoreV1().Secrets(ns).Get(context.Background(), req.Status.RotateAuth.StagedSecret, metav1.GetOptions{})
	assert.True(t, apierrors.IsNotFound(err), "released once the Secret holds it")
}

// Found by review: a request's cleanup is held up (here: it may not update Secrets) while its
// Postgres is deleted and created again with a credential of its own. Cleanup must not write
// the old database's password into the new database's Secret: it keeps the staged copy.
func TestCleanupNeverWritesIntoAReplacedDatabasesSecret(t *testing.T) {
	w := newWorld(t, 1)
	w.newRequest("rotate")
	w.syncUntil("rotate", 60, func(r *opsv1alpha1.PostgresOpsRequest) bool {
		return isTrue(r.Status.Conditions, ConditionUpdateCredential)
	})
	w.denySecretUpdates = true // the staged copy cannot be released at the end
	req := w.syncUntil("rotate", 60, func(r *opsv1alpha1.PostgresOpsRequest) bool { return r.Status.Phase.Ended() })
	require.Equal(t, opsv1alpha1.OpsRequestPhaseSuccessful, req.Status.Phase, describe(req))
	require.True(t, hasFinalizer(req), "cleanup is held up: %s", describe(req))

	require.NoError(t, w.pgops.KubedbV1().Postgreses(ns).Delete(context.Background(), dbName, metav1.DeleteOptions{}))
	w.create(&kubedbv1.Postgres{
		ObjectMeta: metav1.ObjectMeta{Name: dbName, Namespace: ns, Generation: 1},
		Spec:       kubedbv1.PostgresSpec{Version: "16.4", AuthSecret: &kubedbv1.SecretReference{Name: dbName + "-auth"}},
	})
	s := w.secret(dbName + "-auth")
	s.Data["password"] = []byte("New-Databases-Password-1")
	require.NoError(t, w.kube.Tracker().Update(corev1.SchemeGroupVersion.WithResource("secrets"), s, ns))
	w.denySecretUpdates = false
	for i := 0; i < 10 && hasFinalizer(w.request("rotate")); i++ {
		_, _ = w.sync("rotate")
	}
	require.False(t, hasFinalizer(w.request("rotate")))
	assert.Equal(t, "New-Databases-Password-1", string(w.secret(dbName + "-auth").Data["password"]), "the new database's Secret is left alone")
	staged := w.secret(req.Status.RotateAuth.StagedSecret)
	assert.Empty(t, staged.Finalizers, "kept, without a finalizer")
	w.drainEvents()
	assert.Contains(t, strings.Join(w.events, "\n"), "StagedCredentialKept")
}

// Item 8: a request deleted in the middle of RestartNodes on 3 replicas finishes the job in
// cleanup: the standby still on the old revision is restarted; the primary, which does not
// need it, is not.
func TestDeletedMidRestartFinishesStandbyRestarts(t *testing.T) {
	w := newWorld(t, 3)
	w.newRequest("rotate")
	w.syncUntilRestarted("rotate", "pg-2")
	req := w.deleteAndCleanUp("rotate")
	assert.Equal(t, []string{"pg-2", "pg-1"}, w.evictions())
	pod, err := w.kube.CoreV1().Pods(ns).Get(context.Background(), "pg-1", metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, "rev-"+string(req.UID), pod.Labels["controller-revision-hash"], "pg-1 carries the new credential")
	w.requireCredentialWorks()
}

// Item 8: a request that times out in RestartNodes (a restarted standby never comes back)
// still resumes, keeps the new credential and says which standby is left.
func TestFailedInRestartNodesResumesAndNamesTheStandbysLeft(t *testing.T) {
	w := newWorld(t, 3)
	w.podsNeverReady = true
	w.newRequest("rotate", func(r *opsv1alpha1.PostgresOpsRequest) { r.Spec.Timeout = &metav1.Duration{Duration: time.Minute} })
	w.syncUntil("rotate", 60, func(r *opsv1alpha1.PostgresOpsRequest) bool {
		return condition(r, perPodCondition(ConditionEvictPod, "pg-2")) != nil
	})
	for i := 0; i < 30; i++ {
		w.clock.Step(20 * time.Second)
		if _, err := w.pgops.OpsV1alpha1().PostgresOpsRequests(ns).Get(context.Background(), "rotate", metav1.GetOptions{}); err == nil {
			if r := w.request("rotate"); r.Status.Phase.Ended() && !hasFinalizer(r) {
				break
			}
		}
		_, _ = w.sync("rotate")
	}
	req := w.request("rotate")
	require.Equal(t, opsv1alpha1.OpsRequestPhaseFailed, req.Status.Phase, describe(req))
	assert.False(t, hasFinalizer(req), describe(req))
	assert.Equal(t, ReasonStandbysNeedRestart, condition(req, ConditionRestartNodes).Reason, describe(req))
	assert.Contains(t, condition(req, ConditionRestartNodes).Message, "pg-2, pg-1")
	w.requireCredentialWorks()
}

// Item 9: after a rotation to a user's Secret, the generated Secret is marked superseded,
// so a Postgres recreated under the same name is not started on its dead credential.
func TestUserRotationMarksTheGeneratedSecretSuperseded(t *testing.T) {
	w := newWorld(t, 1)
	w.userSecret("mine", map[string]string{"username": superuser, "password": "Users-Own-Password-1"})
	w.newRequest("rotate", userProvided("mine"))
	req := w.runUntilDone("rotate", 50)
	require.Equal(t, opsv1alpha1.OpsRequestPhaseSuccessful, req.Status.Phase, describe(req))
	assert.Equal(t, "mine", w.secret(dbName + "-auth").Annotations[kubedbv1.AuthSupersededByAnnotation])
}

// Derived names of two databases collide: the Service named like this database's primary
// is another database's. It is never logged in to; the request fails before the pause.
func TestCollidingServiceOfAnotherDatabaseIsNeverUsed(t *testing.T) {
	// The colliding database never becomes Ready (the provisioner reports ObjectConflict):
	// the request fails at once rather than after waiting spec.timeout for it.
	for _, phase := range []kubedbv1.DatabasePhase{kubedbv1.DatabasePhaseReady, kubedbv1.DatabasePhaseProvisioning} {
		t.Run(string(phase), func(t *testing.T) {
			w := newWorld(t, 1)
			svc, err := w.kube.CoreV1().Services(ns).Get(context.Background(), dbName, metav1.GetOptions{})
			require.NoError(t, err)
			svc.OwnerReferences[0].UID = "uid-of-another-database"
			_, err = w.kube.CoreV1().Services(ns).Update(context.Background(), svc, metav1.UpdateOptions{})
			require.NoError(t, err)
			pg := w.postgres()
			pg.Status.Phase = phase
			_, err = w.pgops.KubedbV1().Postgreses(ns).UpdateStatus(context.Background(), pg, metav1.UpdateOptions{})
			require.NoError(t, err)
			w.newRequest("rotate", func(r *opsv1alpha1.PostgresOpsRequest) { r.Spec.Timeout = &metav1.Duration{Duration: time.Minute} })
			req := w.runUntilDone("rotate", 10)
			require.Equal(t, opsv1alpha1.OpsRequestPhaseFailed, req.Status.Phase)
			assert.Equal(t, ReasonNameConflict, condition(req, ConditionFailed).Reason, describe(req))
			assert.Nil(t, condition(req, ConditionPauseDatabase))
			assert.Equal(t, oldPassword, w.db.password(superuser))
		})
	}
}

// Found by the e2e: ResumeDatabase's write reached the API server, the request's status
// write after it did not (a conflict). The next sync sees no pause: that is the resume done,
// not a pause lost.
func TestResumeWhoseStatusWriteWasLostCompletes(t *testing.T) {
	w := newWorld(t, 1)
	lost := false
	w.pgops.PrependReactor("update", "postgresopsrequests", func(action clienttesting.Action) (bool, runtime.Object, error) {
		req, ok := action.(clienttesting.UpdateAction).GetObject().(*opsv1alpha1.PostgresOpsRequest)
		if ok && !lost && action.GetSubresource() == "status" && isTrue(req.Status.Conditions, ConditionResumeDatabase) {
			lost = true
			return true, nil, apierrors.NewConflict(opsv1alpha1.Resource("postgresopsrequests"), req.Name, fmt.Errorf("fake: lost"))
		}
		return false, nil, nil
	})
	w.newRequest("rotate")
	req := w.syncUntil("rotate", 50, func(r *opsv1alpha1.PostgresOpsRequest) bool {
		return r.Status.Phase.Ended() && !hasFinalizer(r)
	})
	require.True(t, lost)
	require.Equal(t, opsv1alpha1.OpsRequestPhaseSuccessful, req.Status.Phase, describe(req))
}

// Found by review: a request that ended or was deleted but is still cleaning up (finishing
// restarts, rolling forward) holds the database: the next request waits for it to release
// the database, so two requests never evict pods or write the template at once.
func TestNextRequestWaitsForThePreviousCleanup(t *testing.T) {
	w := newWorld(t, 3)
	w.newRequest("first")
	w.syncUntilRestarted("first", "pg-2")
	first := w.request("first")
	first.Status.Phase = opsv1alpha1.OpsRequestPhaseFailed
	_, err := w.pgops.OpsV1alpha1().PostgresOpsRequests(ns).UpdateStatus(context.Background(), first, metav1.UpdateOptions{})
	require.NoError(t, err)
	w.newRequest("second")
	for i := 0; i < 3; i++ {
		_, _ = w.sync("second")
	}
	second := w.request("second")
	assert.Equal(t, opsv1alpha1.OpsRequestPhasePending, second.Status.Phase, describe(second))
	assert.Equal(t, ReasonWaitingForRequest, condition(second, ConditionPending).Reason)

	w.runUntilDone("first", 30)
	second = w.runUntilDone("second", 60)
	require.Equal(t, opsv1alpha1.OpsRequestPhaseSuccessful, second.Status.Phase, describe(second))
	w.requireCredentialWorks()
}

// Found by review: the operator died between the ALTER ROLE and recording it, and the
// Postgres is deleted (its PVCs kept) before cleanup can ask PostgreSQL which password it
// has. The staged Secret may hold the only copy: it is kept, and an event says so.
func TestStagedCredentialKeptWhenTheDatabaseCannotBeAsked(t *testing.T) {
	w := newWorld(t, 1)
	w.db.setThenFail = true
	w.newRequest("rotate")
	req := w.syncUntil("rotate", 20, func(r *opsv1alpha1.PostgresOpsRequest) bool { return w.db.setCalls > 0 })
	require.False(t, pastPointOfNoReturn(req), "nothing recorded the ALTER ROLE")
	newPassword := w.db.password(superuser)
	req.Status.Phase = opsv1alpha1.OpsRequestPhaseFailed
	_, err := w.pgops.OpsV1alpha1().PostgresOpsRequests(ns).UpdateStatus(context.Background(), req, metav1.UpdateOptions{})
	require.NoError(t, err)
	require.NoError(t, w.pgops.KubedbV1().Postgreses(ns).Delete(context.Background(), dbName, metav1.DeleteOptions{}))

	w.runUntilDone("rotate", 5)
	staged := w.secret(req.Status.RotateAuth.StagedSecret)
	assert.Equal(t, newPassword, string(staged.Data["password"]), "the only copy of the password is kept")
	assert.Empty(t, staged.Finalizers,
		"no finalizer outlives its request: nothing would release it, and a namespace deletion would wait for ever")
	w.drainEvents()
	assert.Contains(t, strings.Join(w.events, "\n"), "StagedCredentialKept")
}

// Item 6: `kubectl delete ns` in the middle of a rotation, past the point of no return. The
// namespace controller deletes the request, the staged Secret and the auth Secret at once,
// and the API server refuses every create in a namespace being deleted: cleanup cannot write
// the auth Secret again and must not retry for ever, or the request's and the staged
// Secret's finalizers hold the namespace Terminating for good.
func TestNamespaceDeletionMidRotationReleasesEverything(t *testing.T) {
	w := newWorld(t, 1)
	w.denySecretUpdates = true
	w.newRequest("rotate")
	req := w.syncUntil("rotate", 30, atPointOfNoReturn)
	require.False(t, isTrue(req.Status.Conditions, ConditionUpdateCredential), "the Secrets are not written yet")
	staged := req.Status.RotateAuth.StagedSecret
	w.denySecretUpdates = false

	w.namespaceTerminating = true
	require.NoError(t, w.kube.CoreV1().Secrets(ns).Delete(context.Background(), staged, metav1.DeleteOptions{}))
	require.NoError(t, w.kube.CoreV1().Secrets(ns).Delete(context.Background(), dbName+"-auth", metav1.DeleteOptions{}))
	w.deleteAndCleanUp("rotate")
	w.finishDeletions()
	_, err := w.kube.CoreV1().Secrets(ns).Get(context.Background(), staged, metav1.GetOptions{})
	assert.True(t, apierrors.IsNotFound(err), "the staged Secret's finalizer is released: %v", err)
	w.drainEvents()
	assert.Contains(t, strings.Join(w.events, "\n"), "is being deleted")
	assert.Nil(t, meta.FindStatusCondition(w.postgres().Status.Conditions, kubedbv1.ConditionPaused), "resumed")
}

// Found by review: a request waiting for the pause of a Postgres that is being deleted
// fails at once (the deletion waits for the pause, the pause would wait for nothing).
func TestPauseOfADatabaseBeingDeletedFails(t *testing.T) {
	w := newWorld(t, 1)
	w.provisionerConfirmsPause = false
	w.newRequest("rotate")
	w.syncUntil("rotate", 10, func(r *opsv1alpha1.PostgresOpsRequest) bool { return condition(r, ConditionPauseDatabase) != nil })
	pg := w.postgres()
	now := metav1.NewTime(w.clock.Now())
	pg.DeletionTimestamp = &now
	pg.Finalizers = []string{"kubedb.com/finalizer"}
	require.NoError(t, w.pgops.Tracker().Update(kubedbv1.SchemeGroupVersion.WithResource("postgreses"), pg, ns))
	req := w.runUntilDone("rotate", 10)
	require.Equal(t, opsv1alpha1.OpsRequestPhaseFailed, req.Status.Phase)
	assert.Contains(t, condition(req, ConditionFailed).Message, "is being deleted")
	assert.Nil(t, w.postgres().Status.PausedBy, "a Postgres being deleted is never paused")
}

// Found by review: reaching the point of no return must not restart UpdateCredential's
// clock, or the step could run for twice spec.timeout.
func TestPointOfNoReturnKeepsTheStepClock(t *testing.T) {
	w := newWorld(t, 1)
	w.denySecretUpdates = true
	w.db.unreachable = true
	w.newRequest("rotate")
	req := w.syncUntil("rotate", 30, func(r *opsv1alpha1.PostgresOpsRequest) bool {
		return condition(r, ConditionUpdateCredential) != nil
	})
	started := condition(req, ConditionUpdateCredential).LastTransitionTime
	w.clock.Step(10 * time.Second)
	w.db.unreachable = false
	req = w.syncUntil("rotate", 30, atPointOfNoReturn)
	assert.True(t, condition(req, ConditionUpdateCredential).LastTransitionTime.Equal(&started), describe(req))
}
