package provisioner

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clienttesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/cache"

	kubedbv1 "github.com/pgops/pgops/pkg/apis/kubedb/v1"
	opsv1alpha1 "github.com/pgops/pgops/pkg/apis/ops/v1alpha1"
)

// askPause plays the ops-manager: the running request name has its plan stored for the
// Postgres "x" of uid databaseUID, and its PauseDatabase step waits: its status asks for the
// pause. The cache is refreshed.
func askPause(t *testing.T, f *fixture, name string, databaseUID types.UID) *opsv1alpha1.PostgresOpsRequest {
	t.Helper()
	req := runningRequest(t, f, name)
	req.Status.RotateAuth = &opsv1alpha1.RotateAuthPlan{DatabaseUID: databaseUID}
	meta.SetStatusCondition(&req.Status.Conditions, metav1.Condition{
		Type: opsv1alpha1.ConditionPauseDatabase, Status: metav1.ConditionFalse, Reason: "InProgress", Message: "waiting for the provisioner"})
	req, err := f.pgops.OpsV1alpha1().PostgresOpsRequests(testNS).UpdateStatus(f.ctx, req, metav1.UpdateOptions{})
	require.NoError(t, err)
	f.refresh()
	f.pgops.ClearActions()
	f.kube.ClearActions()
	return req
}

var keyX = cache.ObjectName{Namespace: testNS, Name: "x"}

// The request's own status is the ask: the provisioner grants it with one write, which
// names the request and sets Paused=True, and touches no workload.
func TestPauseAskedByARequestIsGrantedInOneWrite(t *testing.T) {
	for name, answer := range map[string]func(f *fixture) error{
		"on the pause queue": func(f *fixture) error { defer f.drainEvents(); return f.c.answerPause(f.ctx, keyX) },
		"by the main sync":   func(f *fixture) error { return f.sync("x") },
	} {
		t.Run(name, func(t *testing.T) {
			f := provisioned(t, newPG("x"))
			req := askPause(t, f, "rotate", f.postgres("x").UID)
			require.NoError(t, answer(f))
			assert.Empty(t, f.kubeWrites(), "no workload is touched")
			assert.Equal(t, []string{"update postgreses/status x"}, f.pgWrites())
			pg := f.postgres("x")
			assert.Equal(t, metav1.ConditionTrue, condition(pg, kubedbv1.ConditionPaused).Status)
			assert.Equal(t, &kubedbv1.OpsRequestReference{Name: "rotate", UID: req.UID}, pg.Status.PausedBy)
			assert.True(t, f.hasEvent("Normal", ReasonPaused, "rotate"))
			assert.Zero(t, requestReads(f), "the cache is enough: a request is granted its pause once")
		})
	}
}

// A cache behind the request shows an ask that is over: the request was granted the pause
// and gave it back, leaving pausedBy naming it. The database is not paused again.
func TestPauseAskThatTheCacheStillShowsIsNotGrantedAgain(t *testing.T) {
	f := provisioned(t, newPG("x"))
	askPause(t, f, "rotate", f.postgres("x").UID)
	require.NoError(t, f.c.answerPause(f.ctx, keyX))
	pg := f.postgres("x")
	meta.RemoveStatusCondition(&pg.Status.Conditions, kubedbv1.ConditionPaused) // the ops-manager's resume
	pg, err := f.pgops.KubedbV1().Postgreses(testNS).UpdateStatus(f.ctx, pg, metav1.UpdateOptions{})
	require.NoError(t, err)
	// Only the Postgres cache sees the resume; the request, cached and stored, still asks
	// (a None rotation writes its status once, after the resume).
	require.NoError(t, f.pgInf.Kubedb().V1().Postgreses().Informer().GetIndexer().Update(pg))
	f.drainEvents()
	f.events = nil

	require.NoError(t, f.c.answerPause(f.ctx, keyX))
	require.NoError(t, f.sync("x"))
	assert.Nil(t, condition(f.postgres("x"), kubedbv1.ConditionPaused), "not paused again")
	assert.Equal(t, "rotate", f.postgres("x").Status.PausedBy.Name)
	assert.False(t, f.hasEvent("Normal", ReasonPaused, ""))
}

// A plan made for an earlier Postgres of the same name (another UID) asks nothing of this one.
func TestPauseAskForAnEarlierPostgresOfTheSameNameIsIgnored(t *testing.T) {
	f := provisioned(t, newPG("x"))
	askPause(t, f, "rotate", "uid-of-a-deleted-x")
	require.NoError(t, f.c.answerPause(f.ctx, keyX))
	require.NoError(t, f.sync("x"))
	assert.Nil(t, f.postgres("x").Status.PausedBy)
	assert.Nil(t, condition(f.postgres("x"), kubedbv1.ConditionPaused))
}

// One pause at a time: a request that asks while another running request holds the pause
// waits; the holder's end hands the pause over.
func TestPauseAskWaitsForTheRunningHolder(t *testing.T) {
	f := provisioned(t, newPG("x"))
	setPaused(t, f, metav1.ConditionTrue, false) // held by "rotate", running
	second := askPause(t, f, "rotate-2", f.postgres("x").UID)

	require.NoError(t, f.c.answerPause(f.ctx, keyX))
	require.NoError(t, f.sync("x"))
	assert.Equal(t, "rotate", f.postgres("x").Status.PausedBy.Name, "the running holder keeps its pause")

	setRequestPhase(t, f, "rotate", opsv1alpha1.OpsRequestPhaseSuccessful)
	f.refresh()
	require.NoError(t, f.sync("x"))
	pg := f.postgres("x")
	assert.Equal(t, &kubedbv1.OpsRequestReference{Name: "rotate-2", UID: second.UID}, pg.Status.PausedBy)
	assert.Equal(t, metav1.ConditionTrue, condition(pg, kubedbv1.ConditionPaused).Status)
}

// The pause of a request that has ended is replaced by the grant, in one write.
func TestPauseOfAnEndedRequestIsReplacedByTheGrant(t *testing.T) {
	f := provisioned(t, newPG("x"))
	setPaused(t, f, metav1.ConditionTrue, false)
	setRequestPhase(t, f, "rotate", opsv1alpha1.OpsRequestPhaseFailed)
	second := askPause(t, f, "rotate-2", f.postgres("x").UID)

	require.NoError(t, f.c.answerPause(f.ctx, keyX))
	assert.Equal(t, []string{"update postgreses/status x"}, f.pgWrites())
	assert.Equal(t, second.UID, f.postgres("x").Status.PausedBy.UID)
}

// A database being deleted is not paused: its deletion would then wait for a request that
// fails because the database is going.
func TestNoPauseIsGrantedToADatabaseBeingDeleted(t *testing.T) {
	f := provisioned(t, newPG("x"))
	askPause(t, f, "rotate", f.postgres("x").UID)
	deletePG(t, f, kubedbv1.DeletionPolicyDelete)
	require.NoError(t, f.c.answerPause(f.ctx, keyX))
	assert.Nil(t, f.postgres("x").Status.PausedBy)
}

// Only a request that asks goes onto the pause queue; its other status writes do not.
func TestRequestAskingForAPauseGoesOntoThePauseQueue(t *testing.T) {
	f := provisioned(t, newPG("x"))
	t.Cleanup(f.c.pauseQueue.ShutDown)
	req := askPause(t, f, "rotate", f.postgres("x").UID)
	f.c.enqueuePauseAsk(req)
	require.Equal(t, 1, f.c.pauseQueue.Len())
	f.c.pauseQueue.Get()

	meta.SetStatusCondition(&req.Status.Conditions, metav1.Condition{
		Type: opsv1alpha1.ConditionPauseDatabase, Status: metav1.ConditionTrue, Reason: "Completed", Message: "paused"})
	f.c.enqueuePauseAsk(req)
	assert.Equal(t, 0, f.c.pauseQueue.Len())
}

// An older request whose cached status still shows its ask, though it had its pause and gave
// it back, does not stand in the way of a younger request that asks.
func TestStaleAskOfAnOlderRequestDoesNotBlockTheNext(t *testing.T) {
	f := provisioned(t, newPG("x"))
	first := askPause(t, f, "rotate", f.postgres("x").UID)
	pg := f.postgres("x")
	pg.Status.PausedBy = &kubedbv1.OpsRequestReference{Name: first.Name, UID: first.UID} // granted, then released
	_, err := f.pgops.KubedbV1().Postgreses(testNS).UpdateStatus(f.ctx, pg, metav1.UpdateOptions{})
	require.NoError(t, err)
	second := askPause(t, f, "rotate-2", f.postgres("x").UID)
	require.Equal(t, "rotate", f.c.requestsOf(f.postgres("x"))[0].Name, "the older request comes first")

	require.NoError(t, f.c.answerPause(f.ctx, keyX))
	assert.Equal(t, &kubedbv1.OpsRequestReference{Name: "rotate-2", UID: second.UID}, f.postgres("x").Status.PausedBy)
	assert.Equal(t, metav1.ConditionTrue, condition(f.postgres("x"), kubedbv1.ConditionPaused).Status)
}

// A grant that conflicts is retried on the Postgres read again by name, which may be
// another one now (deleted and created again: a new UID) or one being deleted: neither is
// paused for a request whose plan names the one it replaced.
func TestConflictingGrantIsNotRetriedOnAnotherPostgres(t *testing.T) {
	for name, change := range map[string]func(pg *kubedbv1.Postgres){
		"created again": func(pg *kubedbv1.Postgres) { pg.UID = "uid-x-again" },
		"being deleted": func(pg *kubedbv1.Postgres) {
			now := metav1.Now()
			pg.DeletionTimestamp = &now
			pg.Finalizers = []string{Finalizer}
		},
	} {
		t.Run(name, func(t *testing.T) {
			f := provisioned(t, newPG("x"))
			askPause(t, f, "rotate", f.postgres("x").UID)
			pg := f.postgres("x") // the cache keeps the one the request asks about
			change(pg)
			require.NoError(t, f.pgops.Tracker().Update(kubedbv1.SchemeGroupVersion.WithResource("postgreses"), pg, testNS))
			conflicted := false
			f.pgops.PrependReactor("update", "postgreses", func(action clienttesting.Action) (bool, runtime.Object, error) {
				if action.GetSubresource() == "status" && !conflicted {
					conflicted = true
					return true, nil, apierrors.NewConflict(kubedbv1.Resource("postgreses"), "x", fmt.Errorf("the object has been modified"))
				}
				return false, nil, nil
			})

			require.NoError(t, f.c.answerPause(f.ctx, keyX))
			require.True(t, conflicted)
			assert.Nil(t, f.postgres("x").Status.PausedBy)
			assert.Nil(t, condition(f.postgres("x"), kubedbv1.ConditionPaused))
		})
	}
}

// A pause handed over from a request that ended without giving it back starts anew: its
// age is the new holder's.
func TestHandedOverPauseStartsItsClockAnew(t *testing.T) {
	f := provisioned(t, newPG("x"))
	setPaused(t, f, metav1.ConditionTrue, false)
	pg := f.postgres("x")
	cond := meta.FindStatusCondition(pg.Status.Conditions, kubedbv1.ConditionPaused)
	cond.LastTransitionTime = metav1.NewTime(time.Now().Add(-time.Hour))
	_, err := f.pgops.KubedbV1().Postgreses(testNS).UpdateStatus(f.ctx, pg, metav1.UpdateOptions{})
	require.NoError(t, err)
	setRequestPhase(t, f, "rotate", opsv1alpha1.OpsRequestPhaseFailed)
	askPause(t, f, "rotate-2", f.postgres("x").UID)

	require.NoError(t, f.c.answerPause(f.ctx, keyX))
	paused := condition(f.postgres("x"), kubedbv1.ConditionPaused)
	assert.Equal(t, "rotate-2", f.postgres("x").Status.PausedBy.Name)
	assert.WithinDuration(t, time.Now(), paused.LastTransitionTime.Time, time.Minute)
}
