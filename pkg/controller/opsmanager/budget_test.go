package opsmanager

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clienttesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/cache"

	kubedbv1 "github.com/pgops/pgops/pkg/apis/kubedb/v1"
	opsv1alpha1 "github.com/pgops/pgops/pkg/apis/ops/v1alpha1"
	"github.com/pgops/pgops/pkg/operator"
)

// The ask for the pause is the stored request's status, and a cache behind it may still show
// the ask after the request has resumed the database (a None rotation does it all in the
// sync after the grant, and writes its status once, after the resume). The resume therefore
// leaves status.pausedBy naming the request, without the Paused condition: the provisioner
// grants a request its pause once, so that record keeps it from pausing the database again.
// Cleanup's resume of a request that failed after its pause does the same.
func TestResumeLeavesTheReleasingRequestNamed(t *testing.T) {
	for name, tc := range map[string]struct {
		mode opsv1alpha1.RestartMode
		fail bool
	}{
		"AllPods": {opsv1alpha1.RestartAllPods, false}, "None": {opsv1alpha1.RestartNone, false},
		"failed after the pause": {opsv1alpha1.RestartAllPods, true},
	} {
		t.Run(name, func(t *testing.T) {
			w := newWorld(t, 1)
			w.keepRunning()
			if tc.fail {
				w.db.oldPasswordStored = true // fails with OldCredentialAccepted, after the restart
			}
			w.newRequest("rotate", withRestart(tc.mode))
			req := w.runUntilDone("rotate", 50)
			if tc.fail {
				require.Equal(t, opsv1alpha1.OpsRequestPhaseFailed, req.Status.Phase, describe(req))
				require.True(t, isTrue(req.Status.Conditions, ConditionPauseDatabase), describe(req))
			} else {
				require.Equal(t, opsv1alpha1.OpsRequestPhaseSuccessful, req.Status.Phase, describe(req))
			}
			pg := w.postgres()
			assert.Nil(t, meta.FindStatusCondition(pg.Status.Conditions, kubedbv1.ConditionPaused), "resumed")
			assert.Equal(t, &kubedbv1.OpsRequestReference{Name: "rotate", UID: req.UID}, pg.Status.PausedBy,
				"the request that released the pause stays named")
			assert.True(t, releasedBy(pg, req))
		})
	}
}

// A None rotation does everything in the sync after the grant, the resume included, and
// writes its status once at the end. When that write is lost with the operator, the next
// one finds the request at PauseDatabase and its pause given back: it is not granted again,
// so the request fails (PauseLost) and cleanup, asking PostgreSQL, keeps the credential the
// lost sync set. Nobody is locked out and the database is not left paused.
func TestLostStatusWriteAfterTheResumeLeavesTheCredentialWorking(t *testing.T) {
	w := newWorld(t, 1)
	w.keepRunning()
	lost := false
	w.pgops.PrependReactor("update", "postgresopsrequests", func(action clienttesting.Action) (bool, runtime.Object, error) {
		req := action.(clienttesting.UpdateAction).GetObject().(*opsv1alpha1.PostgresOpsRequest)
		if !lost && action.GetSubresource() == "status" && req.Status.Phase == opsv1alpha1.OpsRequestPhaseSuccessful {
			lost = true
			return true, nil, fmt.Errorf("fake: the operator died")
		}
		return false, nil, nil
	})
	w.newRequest("rotate", withRestart(opsv1alpha1.RestartNone))
	w.syncUntil("rotate", 20, func(*opsv1alpha1.PostgresOpsRequest) bool { return lost })
	require.True(t, lost)
	require.NotEqual(t, oldPassword, w.db.password(superuser), "the lost sync set the new password")
	w.keep.c = nil // a new operator starts

	req := w.runUntilDone("rotate", 50)
	require.Equal(t, opsv1alpha1.OpsRequestPhaseFailed, req.Status.Phase, describe(req))
	assert.Equal(t, ReasonPauseLost, condition(req, ConditionFailed).Reason)
	w.requireCredentialWorks()
	assert.False(t, hasFinalizer(req), "released")
}

// The ops-manager's writes per rotation are a budget (docs/architecture.md, "Write
// budget"): a request's status is written once per sync, whatever number of steps complete
// in it, and never conflicts with the controller's own previous write.
//
// A running controller also keeps a status back while it awaits an answer that comes
// within moments (the pause's, the new template's), so the next sync writes both.
func TestWriteBudgetOfOneReplicaRotation(t *testing.T) {
	for _, tc := range []struct {
		name         string
		mode         opsv1alpha1.RestartMode
		running      bool
		statusWrites int
	}{
		// started and pause asked; credential set and template written; pod evicted; Successful
		{"AllPods, a controller per sync", opsv1alpha1.RestartAllPods, false, 4},
		// started and pause asked; Successful (no pod to restart)
		{"None, a controller per sync", opsv1alpha1.RestartNone, false, 2},
		// started, plan and pause asked (the plan is stored before PostgreSQL changes);
		// credential, template and eviction; Successful
		{"AllPods, a running controller", opsv1alpha1.RestartAllPods, true, 3},
		// started, plan and pause asked; Successful
		{"None, a running controller", opsv1alpha1.RestartNone, true, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mode := tc.mode
			w := newWorld(t, 1)
			if tc.running {
				w.keepRunning()
			}
			w.newRequest("rotate", withRestart(mode))
			req := w.runUntilDone("rotate", 50)
			require.Equal(t, opsv1alpha1.OpsRequestPhaseSuccessful, req.Status.Phase, describe(req))
			t.Logf("writes: %v", w.writes)
			require.Equal(t, tc.running, w.keep != nil)

			want := map[string]int{
				"patch postgresopsrequests":         2, // the finalizer, on and off
				"update postgreses/status":          1, // the resume: the pause is asked in the request's status
				"create secrets":                    1, // the staged credential
				"update secrets":                    3, // the credential record; the auth Secret; the staged Secret's finalizer
				"delete secrets":                    1, // the staged credential, released
				"update statefulsets":               1, // the pod template
				"update postgresopsrequests/status": tc.statusWrites,
			}
			if mode == opsv1alpha1.RestartAllPods {
				want["create pods/eviction"] = 1
			}
			assert.Equal(t, want, w.writes)
		})
	}
}

// Live reads are for decisions a cache could get wrong. Once a controller has written the
// rotation's template, its syncs that wait for the StatefulSet controller take the cached
// StatefulSet at that generation without reading it again: one read per controller that
// touches the template (a controller per sync has two: the one that writes it and the one
// that sees it observed).
func TestStatefulSetIsReadOncePerRotation(t *testing.T) {
	for _, tc := range []struct {
		running bool
		reads   int
	}{{false, 2}, {true, 1}} {
		t.Run(fmt.Sprintf("running controller %v", tc.running), func(t *testing.T) {
			w := newWorld(t, 3)
			if tc.running {
				w.keepRunning()
			}
			w.newRequest("rotate")
			req := w.runUntilDone("rotate", 80)
			require.Equal(t, opsv1alpha1.OpsRequestPhaseSuccessful, req.Status.Phase, describe(req))
			assert.Equal(t, tc.reads, w.reads["get statefulsets"], "reads: %v", w.reads)
		})
	}
}

// A StatefulSet whose spec someone else changed after the rotation wrote its template (a
// GitOps tool putting the old Secret back) is read live and pointed at the new credential
// again, never taken from the cache as the rotation's own write.
func TestStatefulSetChangedAfterTheTemplateWriteIsReadAgain(t *testing.T) {
	w := newWorld(t, 1)
	w.keepRunning()
	w.statefulSetControllerAsleep = true
	w.newRequest("rotate")
	for i := 0; i < 10 && w.stsOf().Spec.Template.Annotations[kubedbv1.AuthRotationAnnotation] == ""; i++ {
		_, _ = w.sync("rotate")
	}
	sts := w.stsOf()
	require.NotEmpty(t, sts.Spec.Template.Annotations[kubedbv1.AuthRotationAnnotation], "the template was written")
	target := sts.Spec.Template.Spec.Containers[0].Env[0].ValueFrom.SecretKeyRef.Name
	// Someone reverts the Secret reference: a new generation.
	sts.Spec.Template.Spec.Containers[0].Env[0].ValueFrom.SecretKeyRef.Name = "someone-elses"
	_, err := w.kube.AppsV1().StatefulSets(ns).Update(context.Background(), sts, metav1.UpdateOptions{})
	require.NoError(t, err)
	w.statefulSetControllerAsleep = false
	req := w.runUntilDone("rotate", 50)
	require.Equal(t, opsv1alpha1.OpsRequestPhaseSuccessful, req.Status.Phase, describe(req))
	assert.Equal(t, target, w.stsOf().Spec.Template.Spec.Containers[0].Env[0].ValueFrom.SecretKeyRef.Name,
		"the template points at the rotation's Secret again")
}

// The status is written once per sync, after the ALTER ROLE and the Secret's update. Here
// the operator dies between the ALTER ROLE and that write, so the stored status knows
// nothing of UpdateCredential, and the request is then deleted: its cleanup must find the
// staged credential, ask PostgreSQL, and roll the Secret forward, never release it.
func TestOperatorDiesAfterAlterRoleBeforeStatusWriteThenRequestDeleted(t *testing.T) {
	w := newWorld(t, 1)
	w.denySecretUpdates = true // the Secret update after the ALTER ROLE never lands ...
	died := false
	w.pgops.PrependReactor("update", "postgresopsrequests", func(action clienttesting.Action) (bool, runtime.Object, error) {
		req := action.(clienttesting.UpdateAction).GetObject().(*opsv1alpha1.PostgresOpsRequest)
		if action.GetSubresource() == "status" && condition(req, ConditionUpdateCredential) != nil {
			died = true // ... and neither does any status write after it
			return true, nil, fmt.Errorf("fake: the operator died")
		}
		return false, nil, nil
	})
	w.newRequest("rotate")
	for i := 0; i < 10 && !died; i++ {
		_, _ = w.sync("rotate")
	}
	require.True(t, died)
	newPassword := w.db.password(superuser)
	require.NotEqual(t, oldPassword, newPassword, "PostgreSQL has the new credential")
	require.Nil(t, condition(w.request("rotate"), ConditionUpdateCredential), "the stored status knows nothing of it")

	w.pgops.ReactionChain = w.pgops.ReactionChain[1:]
	w.denySecretUpdates = false
	w.deleteAndCleanUp("rotate")
	assert.Equal(t, newPassword, string(w.secret(dbName + "-auth").Data["password"]), "the Secret was rolled forward to what PostgreSQL has")
	assert.Nil(t, meta.FindStatusCondition(w.postgres().Status.Conditions, kubedbv1.ConditionPaused), "database resumed")
}

// A sync that starts before the informer shows the controller's previous write works on
// that write's answer: no conflict, and nothing done twice.
func TestSyncAfterOwnWriteUsesTheWrittenRequest(t *testing.T) {
	w := newWorld(t, 1)
	w.newRequest("rotate")
	_, err := w.sync("rotate") // admitted: the finalizer is on
	require.NoError(t, err)
	c := w.newController() // its cache holds the request as it is now, and is never refreshed
	defer c.queue.ShutDown()
	key := cache.ObjectName{Namespace: ns, Name: "rotate"}
	conflicts := 0
	w.pgops.PrependReactor("update", "postgresopsrequests", func(action clienttesting.Action) (bool, runtime.Object, error) {
		obj, err := w.pgops.Tracker().Get(opsv1alpha1.SchemeGroupVersion.WithResource("postgresopsrequests"), ns, "rotate")
		if err != nil {
			return true, nil, err
		}
		// Like the API server: a write must name the stored resourceVersion, and gets a new one.
		stored, written := obj.(*opsv1alpha1.PostgresOpsRequest), action.(clienttesting.UpdateAction).GetObject().(*opsv1alpha1.PostgresOpsRequest)
		if written.ResourceVersion != stored.ResourceVersion {
			conflicts++
			return true, nil, apierrors.NewConflict(opsv1alpha1.Resource("postgresopsrequests"), "rotate", fmt.Errorf("fake: stale"))
		}
		w.uid++
		written.ResourceVersion = fmt.Sprint(w.uid)
		return false, nil, nil
	})
	for i := 0; i < 10; i++ {
		_, err := c.syncHandler(context.Background(), key)
		require.NoError(t, err)
		w.react()
	}
	assert.Zero(t, conflicts)
	assert.Equal(t, 1, w.db.setCalls, "the password was set once")
	assert.True(t, isTrue(w.request("rotate").Status.Conditions, ConditionUpdateCredential), describe(w.request("rotate")))
}

// Ended requests cost nothing per event: a running request's progress enqueues only
// itself, and its end wakes only the requests of its database that have not ended.
func TestRequestEventsWakeOnlyLiveSiblings(t *testing.T) {
	w := newWorld(t, 1)
	for _, name := range []string{"old-1", "old-2", "old-3"} {
		w.newRequest(name)
		req := w.request(name)
		req.Status.Phase = opsv1alpha1.OpsRequestPhaseSuccessful
		_, err := w.pgops.OpsV1alpha1().PostgresOpsRequests(ns).UpdateStatus(context.Background(), req, metav1.UpdateOptions{})
		require.NoError(t, err)
	}
	w.newRequest("queued")
	w.newRequest("running")
	running := w.request("running")
	running.Status.Phase = opsv1alpha1.OpsRequestPhaseProgressing
	c := w.newController()
	defer c.queue.ShutDown()

	progressed := running.DeepCopy()
	progressed.Status.Conditions = append(progressed.Status.Conditions, metav1.Condition{Type: ConditionPauseDatabase, Status: metav1.ConditionTrue})
	c.handleRequest(progressed, operator.RequestStageChanged(running, progressed))
	assert.Equal(t, 1, c.queue.Len(), "progress wakes only the request itself")

	ended := progressed.DeepCopy()
	ended.Status.Phase = opsv1alpha1.OpsRequestPhaseSuccessful
	c.handleRequest(ended, operator.RequestStageChanged(progressed, ended))
	assert.Equal(t, 2, c.queue.Len(), "its end wakes the queued request, not the ended ones")
}

// Found by review: the first sync's status (Progressing, the plan, the pause asked) was
// kept back while the pause's answer was awaited, so the next sync changed PostgreSQL with
// no plan stored; a crash then, and a deletion, left cleanup nothing to roll forward from: a
// lockout. The plan is stored before PostgreSQL changes, whatever is kept back.
//
// The same holds when the first sync's status write is lost: the pause is asked in that
// write, so no pause exists without a stored plan; the next sync plans again and asks.
func TestPlanIsStoredBeforePostgreSQLChanges(t *testing.T) {
	for _, tc := range []struct {
		mode      opsv1alpha1.RestartMode
		firstLost bool
	}{{opsv1alpha1.RestartAllPods, false}, {opsv1alpha1.RestartNone, false}, {opsv1alpha1.RestartAllPods, true}} {
		mode := tc.mode
		t.Run(fmt.Sprintf("%s, first status write lost: %v", mode, tc.firstLost), func(t *testing.T) {
			w := newWorld(t, 1)
			w.keepRunning()
			if tc.firstLost {
				lost := false
				w.pgops.PrependReactor("update", "postgresopsrequests", func(action clienttesting.Action) (bool, runtime.Object, error) {
					if !lost && action.GetSubresource() == "status" {
						lost = true
						return true, nil, fmt.Errorf("fake: the operator died")
					}
					return false, nil, nil
				})
			}
			checked := false
			w.db.beforeSetPassword = func() {
				obj, err := w.pgops.Tracker().Get(opsv1alpha1.SchemeGroupVersion.WithResource("postgresopsrequests"), ns, "rotate")
				require.NoError(t, err)
				stored := obj.(*opsv1alpha1.PostgresOpsRequest)
				assert.True(t, planStored(stored), "PostgreSQL changes before the plan is stored: %s", describe(stored))
				checked = true
			}
			w.newRequest("rotate", withRestart(mode))
			if tc.firstLost {
				_, err := w.sync("rotate")
				require.Error(t, err)
				require.Nil(t, w.postgres().Status.PausedBy, "no pause without a stored plan")
				w.keep.c = nil // the operator died: a new one starts
			}
			req := w.runUntilDone("rotate", 50)
			require.True(t, checked)
			require.Equal(t, opsv1alpha1.OpsRequestPhaseSuccessful, req.Status.Phase, describe(req))
		})
	}
}

// A status kept back while the new template's observation is awaited is written after
// maxUnwritten anyway: a StatefulSet controller that never answers shows, within a second,
// as what it is.
func TestStatusKeptBackAtMostASecond(t *testing.T) {
	w := newWorld(t, 1)
	w.keepRunning()
	w.statefulSetControllerAsleep = true
	w.newRequest("rotate")
	for i := 0; i < 5 && !isTrue(w.request("rotate").Status.Conditions, ConditionPauseDatabase); i++ {
		_, err := w.sync("rotate")
		require.NoError(t, err)
	}
	res, err := w.sync("rotate")
	require.NoError(t, err)
	assert.LessOrEqual(t, res.requeueAfter, maxUnwritten, "looked at again when the status must be written")
	assert.Nil(t, condition(w.request("rotate"), ConditionUpdateStatefulSets), "kept back while the answer is awaited")

	w.clock.Step(maxUnwritten + time.Millisecond)
	_, err = w.sync("rotate")
	require.NoError(t, err)
	req := w.request("rotate")
	assert.True(t, isTrue(req.Status.Conditions, ConditionUpdateCredential), describe(req))
	assert.Contains(t, condition(req, ConditionUpdateStatefulSets).Message, "waiting for the StatefulSet controller")
}

// The request is deleted while the status that says its credential was set is kept back:
// the cleanup finds the staged credential, asks PostgreSQL, and keeps the Secret and the
// pause right.
func TestDeletedWhileStatusKeptBackRollsForwardAndResumes(t *testing.T) {
	w := newWorld(t, 1)
	w.keepRunning()
	w.statefulSetControllerAsleep = true
	w.newRequest("rotate")
	for i := 0; i < 5 && w.db.password(superuser) == oldPassword; i++ {
		_, err := w.sync("rotate")
		require.NoError(t, err)
	}
	newPassword := w.db.password(superuser)
	require.NotEqual(t, oldPassword, newPassword)
	require.False(t, isTrue(w.request("rotate").Status.Conditions, ConditionUpdateCredential), "kept back")

	w.statefulSetControllerAsleep = false
	w.deleteAndCleanUp("rotate")
	assert.Equal(t, newPassword, string(w.secret(dbName + "-auth").Data["password"]))
	assert.Nil(t, meta.FindStatusCondition(w.postgres().Status.Conditions, kubedbv1.ConditionPaused), "database resumed")
}

// stsOf is the database's StatefulSet as the fake API server stores it.
func (w *world) stsOf() *appsv1.StatefulSet {
	w.t.Helper()
	sts, err := w.kube.AppsV1().StatefulSets(ns).Get(context.Background(), dbName, metav1.GetOptions{})
	require.NoError(w.t, err)
	return sts
}
