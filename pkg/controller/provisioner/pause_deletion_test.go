package provisioner

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"

	kubedbv1 "github.com/pgops/pgops/pkg/apis/kubedb/v1"
	opsv1alpha1 "github.com/pgops/pgops/pkg/apis/ops/v1alpha1"
)

func (f *fixture) pod(name string) *corev1.Pod {
	f.t.Helper()
	pod, err := f.kube.CoreV1().Pods(testNS).Get(f.ctx, name, metav1.GetOptions{})
	require.NoError(f.t, err)
	return pod
}

// provisioned returns a fixture where "x" has been synced once and the caches refreshed.
func provisioned(t *testing.T, pg *kubedbv1.Postgres, extra ...runtime.Object) *fixture {
	t.Helper()
	f := newFixture(t, []*kubedbv1.Postgres{pg}, extra...)
	f.mustSync("x")
	f.refresh()
	f.events = nil
	return f
}

// setPaused plays the ops-manager: a running request "rotate" asks for (Unknown) or holds
// (True) the pause of "x", or removes it.
func setPaused(t *testing.T, f *fixture, status metav1.ConditionStatus, remove bool) {
	t.Helper()
	holder := runningRequest(t, f, "rotate")
	pg := f.postgres("x")
	if remove {
		meta.RemoveStatusCondition(&pg.Status.Conditions, kubedbv1.ConditionPaused)
		pg.Status.PausedBy = nil
	} else {
		meta.SetStatusCondition(&pg.Status.Conditions, metav1.Condition{
			Type: kubedbv1.ConditionPaused, Status: status, Reason: "OpsRequest", Message: "rotating"})
		pg.Status.PausedBy = &kubedbv1.OpsRequestReference{Name: holder.Name, UID: holder.UID}
	}
	_, err := f.pgops.KubedbV1().Postgreses(testNS).UpdateStatus(f.ctx, pg, metav1.UpdateOptions{})
	require.NoError(t, err)
	f.refresh()
	f.pgops.ClearActions()
	f.kube.ClearActions()
}

// runningRequest returns the Progressing request name, creating it when missing.
func runningRequest(t *testing.T, f *fixture, name string) *opsv1alpha1.PostgresOpsRequest {
	t.Helper()
	req, err := f.pgops.OpsV1alpha1().PostgresOpsRequests(testNS).Get(f.ctx, name, metav1.GetOptions{})
	if err == nil {
		return req
	}
	req, err = f.pgops.OpsV1alpha1().PostgresOpsRequests(testNS).Create(f.ctx, &opsv1alpha1.PostgresOpsRequest{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: testNS, UID: types.UID("uid-" + name)},
		Spec:       opsv1alpha1.PostgresOpsRequestSpec{Type: opsv1alpha1.OpsRequestTypeRotateAuth, DatabaseRef: opsv1alpha1.DatabaseReference{Name: "x"}},
		Status:     opsv1alpha1.OpsRequestStatus{Phase: opsv1alpha1.OpsRequestPhaseProgressing},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	return req
}

func setRequestPhase(t *testing.T, f *fixture, name string, phase opsv1alpha1.OpsRequestPhase) {
	t.Helper()
	req := runningRequest(t, f, name)
	req.Status.Phase = phase
	_, err := f.pgops.OpsV1alpha1().PostgresOpsRequests(testNS).UpdateStatus(f.ctx, req, metav1.UpdateOptions{})
	require.NoError(t, err)
}

// A pause outlives its request when the request is deleted without its finalizer, or when
// someone sets the condition by hand: the provisioner drops it instead of staying paused
// forever.
func TestPauseWithoutARunningRequestIsDropped(t *testing.T) {
	for name, orphan := range map[string]func(t *testing.T, f *fixture){
		"request deleted": func(t *testing.T, f *fixture) {
			require.NoError(t, f.pgops.OpsV1alpha1().PostgresOpsRequests(testNS).Delete(f.ctx, "rotate", metav1.DeleteOptions{}))
		},
		"request ended": func(t *testing.T, f *fixture) { setRequestPhase(t, f, "rotate", opsv1alpha1.OpsRequestPhaseFailed) },
		"request replaced": func(t *testing.T, f *fixture) {
			require.NoError(t, f.pgops.OpsV1alpha1().PostgresOpsRequests(testNS).Delete(f.ctx, "rotate", metav1.DeleteOptions{}))
			runningRequest(t, f, "rotate-2")
			req := runningRequest(t, f, "rotate-2")
			req.Name = "rotate"
			req.UID = "uid-another"
			req.ResourceVersion = ""
			_, err := f.pgops.OpsV1alpha1().PostgresOpsRequests(testNS).Create(f.ctx, req, metav1.CreateOptions{})
			require.NoError(t, err)
		},
		"no holder named": func(t *testing.T, f *fixture) {
			pg := f.postgres("x")
			pg.Status.PausedBy = nil
			_, err := f.pgops.KubedbV1().Postgreses(testNS).UpdateStatus(f.ctx, pg, metav1.UpdateOptions{})
			require.NoError(t, err)
		},
	} {
		t.Run(name, func(t *testing.T) {
			f := provisioned(t, newPG("x", withReplicas(2)))
			setPaused(t, f, metav1.ConditionTrue, false)
			orphan(t, f)
			f.refresh()
			require.NoError(t, f.sync("x"))
			pg := f.postgres("x")
			assert.Nil(t, condition(pg, kubedbv1.ConditionPaused), "the pause is dropped")
			assert.True(t, f.hasEvent("Warning", ReasonPauseDropped, ""))
		})
	}
}

// While the cache shows the pause's request running, the pause is held without asking the
// API server: a rotation wakes the provisioner a dozen times, and each look used to be a read.
func TestPauseHeldByARunningRequestIsReadFromTheCache(t *testing.T) {
	f := provisioned(t, newPG("x"))
	setPaused(t, f, metav1.ConditionTrue, false)
	require.NoError(t, f.sync("x"))
	assert.Zero(t, requestReads(f), "the running request is read from the cache")
	assert.Equal(t, metav1.ConditionTrue, condition(f.postgres("x"), kubedbv1.ConditionPaused).Status)
}

// A cache that lags the request's end keeps the pause, the safe side, until it catches up; a
// cache that lags the request's creation is confirmed live, so a new pause is answered.
func TestPauseWhenTheCacheLagsItsRequest(t *testing.T) {
	t.Run("its end", func(t *testing.T) {
		f := provisioned(t, newPG("x"))
		setPaused(t, f, metav1.ConditionTrue, false)
		setRequestPhase(t, f, "rotate", opsv1alpha1.OpsRequestPhaseSuccessful) // not in the cache yet
		require.NoError(t, f.sync("x"))
		assert.NotNil(t, f.postgres("x").Status.PausedBy, "kept while the cache shows the request running")
		assert.False(t, f.hasEvent("Warning", ReasonPauseDropped, ""))

		f.refresh()
		require.NoError(t, f.sync("x"))
		assert.Nil(t, condition(f.postgres("x"), kubedbv1.ConditionPaused), "dropped once the cache shows the end, confirmed live")
		assert.Equal(t, 1, requestReads(f))
	})
	t.Run("its creation", func(t *testing.T) {
		f := provisioned(t, newPG("x"))
		setPaused(t, f, metav1.ConditionUnknown, false)
		requests := f.pgInf.Ops().V1alpha1().PostgresOpsRequests().Informer().GetIndexer()
		require.NoError(t, requests.Delete(runningRequest(t, f, "rotate")))
		f.pgops.ClearActions()
		require.NoError(t, f.sync("x"))
		assert.Equal(t, metav1.ConditionTrue, condition(f.postgres("x"), kubedbv1.ConditionPaused).Status,
			"answered: the request the cache does not show yet was read live")
		assert.Equal(t, 1, requestReads(f))
	})
}

// The health check takes a while; a resume the ops-manager writes meanwhile (as the restarted
// primary turns Ready) reaches the cache before the provisioner's status write, which builds
// on it: no conflict and retry on an API server, and nothing undone where none is checked.
func TestStatusWriteBuildsOnAResumeWrittenDuringTheHealthCheck(t *testing.T) {
	f := provisioned(t, newPG("x"))
	setPaused(t, f, metav1.ConditionTrue, false)
	_, err := f.kube.CoreV1().Pods(testNS).Create(f.ctx, readyPod(f.postgres("x"), 0, true), metav1.CreateOptions{})
	require.NoError(t, err)
	f.refresh()
	require.NotEqual(t, kubedbv1.DatabasePhaseReady, f.postgres("x").Status.Phase)
	syncWhileAnotherWriterActs(t, f, func(pg *kubedbv1.Postgres) {
		meta.RemoveStatusCondition(&pg.Status.Conditions, kubedbv1.ConditionPaused)
		pg.Status.PausedBy = nil
	})
	pg := f.postgres("x")
	assert.Equal(t, kubedbv1.DatabasePhaseReady, pg.Status.Phase, "the status was written")
	assert.Nil(t, pg.Status.PausedBy, "the resume is kept")
	assert.Nil(t, condition(pg, kubedbv1.ConditionPaused))
}

// A spec changed during the health check reaches the cache before the status write, which
// still reports the generation this sync worked on: observedGeneration must never claim a
// spec whose workloads nobody has written yet.
func TestStatusWriteDuringASpecChangeKeepsItsOwnGeneration(t *testing.T) {
	pg := newPG("x")
	pg.Generation = 1
	f := provisioned(t, pg)
	_, err := f.kube.CoreV1().Pods(testNS).Create(f.ctx, readyPod(f.postgres("x"), 0, true), metav1.CreateOptions{})
	require.NoError(t, err)
	f.refresh()
	syncWhileAnotherWriterActs(t, f, func(pg *kubedbv1.Postgres) {
		pg.Spec.Replicas = ptr.To[int32](5)
		pg.Generation = 2
	})
	got := f.postgres("x")
	assert.Equal(t, int64(2), got.Generation)
	assert.Equal(t, int64(1), got.Status.ObservedGeneration, "the status is for the generation the sync applied")
}

// syncWhileAnotherWriterActs syncs "x" while, during its health check, another writer
// changes the Postgres with change and the cache catches up.
func syncWhileAnotherWriterActs(t *testing.T, f *fixture, change func(*kubedbv1.Postgres)) {
	t.Helper()
	f.health.duringCheck = func() {
		f.health.duringCheck = nil
		pg := f.postgres("x")
		change(pg)
		pg.ResourceVersion = "changed" // an API server's new resourceVersion; the fake keeps none
		_, err := f.pgops.KubedbV1().Postgreses(testNS).Update(f.ctx, pg, metav1.UpdateOptions{})
		require.NoError(t, err)
		f.refresh()
	}
	require.NoError(t, f.sync("x"))
	require.Nil(t, f.health.duringCheck, "the health check ran")
}

// requestReads counts the live reads of ops requests since the last refresh.
func requestReads(f *fixture) int {
	n := 0
	for _, a := range f.pgops.Actions() {
		if a.GetVerb() == "get" && a.GetResource().Resource == "postgresopsrequests" {
			n++
		}
	}
	return n
}

// A cached Paused=True of an earlier request must not be taken as an answer for a new one:
// the provisioner acknowledges the request named in pausedBy, and only while it runs.
func TestPauseIsAcknowledgedForTheNamedRequestOnly(t *testing.T) {
	f := provisioned(t, newPG("x"))
	setPaused(t, f, metav1.ConditionUnknown, false)
	require.NoError(t, f.sync("x"))
	pg := f.postgres("x")
	require.Equal(t, metav1.ConditionTrue, condition(pg, kubedbv1.ConditionPaused).Status)
	assert.Equal(t, "rotate", pg.Status.PausedBy.Name)
	assert.Contains(t, condition(pg, kubedbv1.ConditionPaused).Message, "rotate")
}

// Deletion waits while a running request holds the pause, asked (Unknown) or acknowledged
// (True); once the request has ended, the pause goes and deletion proceeds.
func TestDeletionWaitsWhileAPauseIsHeld(t *testing.T) {
	for _, status := range []metav1.ConditionStatus{metav1.ConditionUnknown, metav1.ConditionTrue} {
		t.Run(string(status), func(t *testing.T) { deletionWaitsForPause(t, status) })
	}
}

func deletionWaitsForPause(t *testing.T, status metav1.ConditionStatus) {
	f := provisioned(t, newPG("x"))
	setPaused(t, f, status, false)
	deletePG(t, f, kubedbv1.DeletionPolicyWipeOut)
	require.NoError(t, f.sync("x"))
	assert.Empty(t, f.kubeWrites())
	assert.Contains(t, f.postgres("x").Finalizers, Finalizer)

	// Once the request has ended, the pause goes and deletion proceeds.
	setRequestPhase(t, f, "rotate", opsv1alpha1.OpsRequestPhaseSuccessful)
	f.refresh()
	require.NoError(t, f.sync("x"))
	assert.NotContains(t, f.postgres("x").Finalizers, Finalizer)
}

func TestPauseHandshakeAndResume(t *testing.T) {
	f := provisioned(t, newPG("x", withReplicas(2)))

	// The ops-manager asks.
	setPaused(t, f, metav1.ConditionUnknown, false)
	require.NoError(t, f.sync("x"))
	assert.Empty(t, f.kubeWrites(), "acknowledging a pause touches no workload")
	assert.Equal(t, []string{"update postgreses/status x"}, f.pgWrites())
	paused := condition(f.postgres("x"), kubedbv1.ConditionPaused)
	require.NotNil(t, paused)
	assert.Equal(t, metav1.ConditionTrue, paused.Status)
	assert.Equal(t, ReasonPaused, paused.Reason)
	assert.True(t, f.hasEvent("Normal", ReasonPaused, ""))

	// While paused, spec changes, drift, a deleted Secret and missing pod labels are all left
	// alone; only status is written.
	pg := f.postgres("x")
	pg.Spec.Replicas = ptr.To[int32](3)
	pg.Spec.Version = "17"
	_, err := f.pgops.KubedbV1().Postgreses(testNS).Update(f.ctx, pg, metav1.UpdateOptions{})
	require.NoError(t, err)
	require.NoError(t, f.kube.CoreV1().Services(testNS).Delete(f.ctx, "x-standby", metav1.DeleteOptions{}))
	_, err = f.kube.CoreV1().Pods(testNS).Create(f.ctx, readyPod(pg, 0, true), metav1.CreateOptions{})
	require.NoError(t, err)
	f.refresh()
	for i := 0; i < 2; i++ {
		require.NoError(t, f.sync("x"))
		for _, w := range f.kubeWrites() {
			// A pod recreated while paused still gets its role label, so the Services
			// select it; nothing else is written.
			assert.Equal(t, "patch pods x-0", w, "no workload writes while paused")
		}
		for _, w := range f.pgWrites() {
			assert.Equal(t, "update postgreses/status x", w)
		}
		f.refresh()
	}
	assert.Equal(t, RolePrimary, f.pod("x-0").Labels[LabelRole], "role label set while paused")
	assert.Equal(t, int32(2), *f.statefulSet("x").Spec.Replicas)
	assert.Equal(t, metav1.ConditionTrue, condition(f.postgres("x"), kubedbv1.ConditionPaused).Status)

	// The ops-manager removes the condition: reconciliation resumes.
	setPaused(t, f, "", true)
	require.NoError(t, f.sync("x"))
	assert.Contains(t, f.kubeWrites(), "create services x-standby")
	assert.Contains(t, f.kubeWrites(), "update statefulsets x")
	sts := f.statefulSet("x")
	assert.Equal(t, int32(3), *sts.Spec.Replicas)
	assert.Equal(t, "docker.io/library/postgres:17", sts.Spec.Template.Spec.Containers[0].Image)
}

func TestPausedStatusStillObserved(t *testing.T) {
	pg := newPG("x")
	f := provisioned(t, pg, readyPod(pg, 0, true))
	setPaused(t, f, metav1.ConditionTrue, false)
	f.health.err = nil
	require.NoError(t, f.sync("x"))
	require.NotEmpty(t, f.health.calls, "the primary is still checked while paused")
	assert.Equal(t, metav1.ConditionTrue, condition(f.postgres("x"), kubedbv1.ConditionAcceptingConnection).Status)
}

func deletePG(t *testing.T, f *fixture, policy kubedbv1.DeletionPolicy) {
	t.Helper()
	pg := f.postgres("x")
	pg.Spec.DeletionPolicy = policy
	pg.DeletionTimestamp = ptr.To(metav1.NewTime(time.Now()))
	_, err := f.pgops.KubedbV1().Postgreses(testNS).Update(f.ctx, pg, metav1.UpdateOptions{})
	require.NoError(t, err)
	f.refresh()
}

func pvc(name string, labels map[string]string) *corev1.PersistentVolumeClaim {
	return &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: testNS, Labels: labels}}
}

func TestDeletionPolicies(t *testing.T) {
	for _, policy := range []kubedbv1.DeletionPolicy{kubedbv1.DeletionPolicyDelete, kubedbv1.DeletionPolicyHalt, kubedbv1.DeletionPolicyWipeOut} {
		t.Run(string(policy), func(t *testing.T) {
			pg := newPG("x", withReplicas(2))
			// x-1 still runs the shell entrypoint of an earlier release.
			f := provisioned(t, pg, pvc("data-x-0", ownedLabels(pg)), pvc("data-x-1", ownedLabels(pg)),
				pvc("data-xy-0", nil), pvc("other", nil), legacyConfigMap(pg), legacyPod(pg, 1))
			require.True(t, f.exists("configmap", "x-scripts"))
			deletePG(t, f, policy)
			require.NoError(t, f.sync("x"))

			for _, gone := range [][2]string{{"statefulset", "x"}, {"service", "x"}, {"service", "x-pods"},
				{"service", "x-standby"}, {"configmap", "x-scripts"}} {
				assert.False(t, f.exists(gone[0], gone[1]), "%s %s should be deleted", gone[0], gone[1])
			}
			assert.True(t, f.exists("pvc", "data-xy-0"), "another database's PVC stays")
			assert.True(t, f.exists("pvc", "other"))
			if policy == kubedbv1.DeletionPolicyWipeOut {
				assert.False(t, f.exists("pvc", "data-x-0"))
				assert.False(t, f.exists("pvc", "data-x-1"))
				assert.False(t, f.exists("secret", "x-auth"))
				assert.False(t, f.exists("secret", "x.pgops-credential"), "with the data gone, its credential record goes")
				assert.True(t, f.hasEvent("Normal", ReasonWipedOut, ""))
			} else {
				assert.True(t, f.exists("pvc", "data-x-0"))
				assert.True(t, f.exists("pvc", "data-x-1"))
				sec := f.secret("x-auth")
				assert.Empty(t, sec.OwnerReferences, "the kept secret is orphaned so the garbage collector keeps it")
				assert.True(t, f.exists("secret", "x.pgops-credential"), "the kept data's credential record stays")
			}
			assert.NotContains(t, f.postgres("x").Finalizers, Finalizer)
		})
	}
}

// WipeOut deletes only what it can prove is this database's: a PVC with the database's
// name pattern but not its labels, or labelled for another KubeDB kind, and a Secret
// "<name>-auth" of another KubeDB database, are another application's.
func TestWipeOutDeletesOnlyWhatIsProvablyThisDatabases(t *testing.T) {
	pg := newPG("x", withReplicas(2))
	mysqlLabels := map[string]string{LabelName: "mysqls.kubedb.com", LabelInstance: "x", LabelManagedBy: ManagedByValue}
	f := provisioned(t, pg, pvc("data-x-0", ownedLabels(pg)), pvc("data-x-1", nil), pvc("data-x-2", mysqlLabels),
		pvc("mine", ownedLabels(pg)))
	deletePG(t, f, kubedbv1.DeletionPolicyWipeOut)
	require.NoError(t, f.sync("x"))
	assert.False(t, f.exists("pvc", "data-x-0"), "labelled as this database's")
	assert.False(t, f.exists("pvc", "mine"), "labelled as this database's, whatever its name")
	assert.True(t, f.exists("pvc", "data-x-1"), "an unlabelled PVC is not provably this database's")
	assert.True(t, f.exists("pvc", "data-x-2"), "another KubeDB kind's PVC stays")
	assert.NotContains(t, f.postgres("x").Finalizers, Finalizer)
}

func TestAnotherKubeDBDatabasesSecretIsNeverAdoptedOrDeleted(t *testing.T) {
	foreign := userSecret("x-auth", map[string]string{"username": "root", "password": "Long-Enough-1"})
	foreign.Labels = map[string]string{LabelName: "mysqls.kubedb.com", LabelInstance: "x", LabelManagedBy: ManagedByValue}
	f := newFixture(t, []*kubedbv1.Postgres{newPG("x")}, foreign)
	require.NoError(t, f.sync("x"))
	sec := f.secret("x-auth")
	assert.Empty(t, sec.OwnerReferences, "not adopted")
	cond := meta.FindStatusCondition(f.postgres("x").Status.Conditions, kubedbv1.ConditionProvisioningStarted)
	require.NotNil(t, cond)
	assert.Equal(t, ReasonObjectConflict, cond.Reason)
	assert.Contains(t, cond.Message, "mysqls.kubedb.com")
	assert.False(t, f.exists("statefulset", "x"), "nothing is created on another database's credential")

	f.refresh()
	deletePG(t, f, kubedbv1.DeletionPolicyWipeOut)
	require.NoError(t, f.sync("x"))
	assert.True(t, f.exists("secret", "x-auth"), "WipeOut leaves another database's Secret")
}

// A Postgres whose names are taken by another application's objects gets no finalizer: it
// created nothing, so its deletion has nothing to apply a policy to.
func TestNameConflictFoundBeforeTheFinalizer(t *testing.T) {
	for kind, obj := range map[string]runtime.Object{
		"Service":     &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "x", Namespace: testNS}},
		"StatefulSet": &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Name: "x", Namespace: testNS}},
	} {
		t.Run(kind, func(t *testing.T) {
			f := newFixture(t, []*kubedbv1.Postgres{newPG("x")}, obj)
			require.NoError(t, f.sync("x"))
			pg := f.postgres("x")
			assert.NotContains(t, pg.Finalizers, Finalizer)
			cond := meta.FindStatusCondition(pg.Status.Conditions, kubedbv1.ConditionProvisioningStarted)
			require.NotNil(t, cond)
			assert.Equal(t, ReasonObjectConflict, cond.Reason)
			assert.Contains(t, cond.Message, kind)
			assert.False(t, f.exists("secret", "x-auth"), "nothing is created")
			for _, w := range f.kubeWrites() {
				assert.NotContains(t, w, "create", "nothing is created: %v", f.kubeWrites())
			}
		})
	}
}

func TestDeletionWipeOutKeepsUserSecret(t *testing.T) {
	pg := newPG("x", withAuthSecret("mine"))
	f := provisioned(t, pg, userSecret("mine", map[string]string{"username": "u", "password": "Long-Enough-1"}))
	deletePG(t, f, kubedbv1.DeletionPolicyWipeOut)
	require.NoError(t, f.sync("x"))
	assert.True(t, f.exists("secret", "mine"))
	for _, w := range f.kubeWrites() {
		assert.NotContains(t, w, "secrets mine")
	}
	assert.NotContains(t, f.postgres("x").Finalizers, Finalizer)
}

func TestDeletionDoNotTerminate(t *testing.T) {
	f := provisioned(t, newPG("x"), pvc("data-x-0", nil))
	deletePG(t, f, kubedbv1.DeletionPolicyDoNotTerminate)
	require.NoError(t, f.sync("x"))
	assert.Empty(t, f.kubeWrites())
	assert.Empty(t, f.pgWrites())
	assert.Contains(t, f.postgres("x").Finalizers, Finalizer)
	assert.True(t, f.hasEvent("Warning", ReasonDeletionRefused, `"deletionPolicy":"Delete"`), "events: %v", f.events)

	// Patching the policy lets the deletion through.
	pg := f.postgres("x")
	pg.Spec.DeletionPolicy = kubedbv1.DeletionPolicyDelete
	_, err := f.pgops.KubedbV1().Postgreses(testNS).Update(f.ctx, pg, metav1.UpdateOptions{})
	require.NoError(t, err)
	f.refresh()
	require.NoError(t, f.sync("x"))
	assert.False(t, f.exists("statefulset", "x"))
	assert.True(t, f.exists("pvc", "data-x-0"))
	assert.NotContains(t, f.postgres("x").Finalizers, Finalizer)
}

func TestHaltAndResume(t *testing.T) {
	pg := newPG("x", withReplicas(2))
	f := provisioned(t, pg, pvc("data-x-0", ownedLabels(pg)))
	password := string(f.secret("x-auth").Data["password"])

	pg = f.postgres("x")
	pg.Spec.Halted = true
	_, err := f.pgops.KubedbV1().Postgreses(testNS).Update(f.ctx, pg, metav1.UpdateOptions{})
	require.NoError(t, err)
	f.refresh()
	require.NoError(t, f.sync("x"))
	assert.False(t, f.exists("statefulset", "x"))
	assert.False(t, f.exists("service", "x"))
	assert.False(t, f.exists("service", "x-pods"))
	assert.False(t, f.exists("service", "x-standby"))
	assert.True(t, f.exists("pvc", "data-x-0"))
	assert.True(t, f.exists("secret", "x-auth"))
	got := f.postgres("x")
	assert.Equal(t, kubedbv1.DatabasePhaseHalted, got.Status.Phase)
	assert.Equal(t, ReasonHalted, condition(got, kubedbv1.ConditionReady).Reason)

	// A halted database stays halted without further writes.
	f.refresh()
	require.NoError(t, f.sync("x"))
	assert.Empty(t, f.kubeWrites())

	// Clearing halted brings it back with the same Secret and claim template.
	pg = f.postgres("x")
	pg.Spec.Halted = false
	_, err = f.pgops.KubedbV1().Postgreses(testNS).Update(f.ctx, pg, metav1.UpdateOptions{})
	require.NoError(t, err)
	f.refresh()
	require.NoError(t, f.sync("x"))
	assert.True(t, f.exists("statefulset", "x"))
	assert.True(t, f.exists("service", "x"))
	assert.True(t, f.exists("service", "x-standby"))
	assert.Equal(t, password, string(f.secret("x-auth").Data["password"]))
	assert.Equal(t, "data", f.statefulSet("x").Spec.VolumeClaimTemplates[0].Name)
	assert.Equal(t, kubedbv1.DatabasePhaseProvisioning, f.postgres("x").Status.Phase)
}

func TestHaltPolicyThenRecreateAdoptsSecret(t *testing.T) {
	f := provisioned(t, newPG("x"))
	password := string(f.secret("x-auth").Data["password"])
	deletePG(t, f, kubedbv1.DeletionPolicyHalt)
	require.NoError(t, f.sync("x"))
	require.NoError(t, f.pgops.KubedbV1().Postgreses(testNS).Delete(f.ctx, "x", metav1.DeleteOptions{}))

	// A new Postgres of the same name (new UID) reuses the kept Secret and so its data.
	fresh := newPG("x", func(pg *kubedbv1.Postgres) { pg.UID = "uid-x-2" })
	_, err := f.pgops.KubedbV1().Postgreses(testNS).Create(f.ctx, fresh, metav1.CreateOptions{})
	require.NoError(t, err)
	f.refresh()
	require.NoError(t, f.sync("x"))
	sec := f.secret("x-auth")
	assert.Equal(t, password, string(sec.Data["password"]))
	assert.True(t, isGeneratedSecret(sec, fresh))
	assert.Equal(t, "x-auth", f.postgres("x").Spec.AuthSecret.Name)
}

// Item 1: `kubectl delete pg --cascade=foreground` (Argo CD's prune) makes the garbage
// collector delete every object the Postgres owns while the provisioner's finalizer still
// holds it, whatever its deletionPolicy. The generated auth Secret is owned by nobody, so it
// survives with the PVCs, and the same manifest applied again runs on the same credential.
func TestForegroundDeletionKeepsTheCredentialForTheData(t *testing.T) {
	for _, policy := range []kubedbv1.DeletionPolicy{kubedbv1.DeletionPolicyDelete, kubedbv1.DeletionPolicyHalt} {
		t.Run(string(policy), func(t *testing.T) {
			pg := newPG("x")
			f := provisioned(t, pg, pvc("data-x-0", ownedLabels(pg)))
			password := string(f.secret("x-auth").Data["password"])
			deletePG(t, f, policy)
			f.collectGarbageOf(f.postgres("x"))
			assert.False(t, f.exists("statefulset", "x"), "the garbage collector took what the Postgres owns")
			require.NoError(t, f.sync("x"))
			require.NoError(t, f.pgops.KubedbV1().Postgreses(testNS).Delete(f.ctx, "x", metav1.DeleteOptions{}))

			_, err := f.pgops.KubedbV1().Postgreses(testNS).Create(f.ctx, newPG("x", func(pg *kubedbv1.Postgres) { pg.UID = "uid-x-2" }), metav1.CreateOptions{})
			require.NoError(t, err)
			f.refresh()
			require.NoError(t, f.sync("x"))
			assert.Equal(t, password, string(f.secret("x-auth").Data["password"]), "the data's credential is kept")
			assert.True(t, f.exists("pvc", "data-x-0"))
			assert.True(t, f.exists("statefulset", "x"), "provisioned again")
		})
	}
}

// A pause asked is answered on its own queue: it does not wait for the main queue, where
// health checks of other databases may be slow, only for a sync of the same database that
// is under way.
func TestPauseIsAnsweredOnItsOwnQueue(t *testing.T) {
	f := provisioned(t, newPG("x"))
	setPaused(t, f, metav1.ConditionUnknown, false)
	f.refresh()
	t.Cleanup(f.c.pauseQueue.ShutDown)
	key := cache.ObjectName{Namespace: testNS, Name: "x"}

	f.c.enqueuePostgres(f.postgres("x"))
	require.Equal(t, 1, f.c.pauseQueue.Len(), "a pause asked goes onto the pause queue")

	// A sync of the same database is under way: the answer waits for it.
	unlock := f.c.locks.lock(key)
	answered := make(chan error, 1)
	go func() { answered <- f.c.answerPause(f.ctx, key) }()
	select {
	case <-answered:
		t.Fatal("the pause was answered while a sync of its database was under way")
	case <-time.After(50 * time.Millisecond):
	}
	unlock()
	require.NoError(t, <-answered)
	assert.Equal(t, metav1.ConditionTrue, condition(f.postgres("x"), kubedbv1.ConditionPaused).Status)

	// Answered: nothing more goes onto the pause queue.
	f.refresh()
	f.c.pauseQueue.Get()
	f.c.enqueuePostgres(f.postgres("x"))
	assert.Equal(t, 0, f.c.pauseQueue.Len())
}
