package provisioner

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/utils/ptr"

	kubedbv1 "github.com/pgops/pgops/pkg/apis/kubedb/v1"
)

// provisioned returns a fixture where "x" has been synced once and the caches refreshed.
func provisioned(t *testing.T, pg *kubedbv1.Postgres, extra ...runtime.Object) *fixture {
	t.Helper()
	f := newFixture(t, []*kubedbv1.Postgres{pg}, extra...)
	f.mustSync("x")
	f.refresh()
	f.events = nil
	return f
}

func setPaused(t *testing.T, f *fixture, status metav1.ConditionStatus, remove bool) {
	t.Helper()
	pg := f.postgres("x")
	if remove {
		meta.RemoveStatusCondition(&pg.Status.Conditions, kubedbv1.ConditionPaused)
	} else {
		meta.SetStatusCondition(&pg.Status.Conditions, metav1.Condition{
			Type: kubedbv1.ConditionPaused, Status: status, Reason: "OpsRequest", Message: "rotating"})
	}
	_, err := f.pgops.KubedbV1().Postgreses(testNS).UpdateStatus(f.ctx, pg, metav1.UpdateOptions{})
	require.NoError(t, err)
	f.refresh()
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
		assert.Empty(t, f.kubeWrites(), "no workload writes while paused")
		for _, w := range f.pgWrites() {
			assert.Equal(t, "update postgreses/status x", w)
		}
		f.refresh()
	}
	assert.Equal(t, int32(2), *f.statefulSet("x").Spec.Replicas)
	assert.Equal(t, metav1.ConditionTrue, condition(f.postgres("x"), kubedbv1.ConditionPaused).Status)

	// The ops-manager removes the condition: reconciliation resumes.
	setPaused(t, f, "", true)
	require.NoError(t, f.sync("x"))
	assert.Contains(t, f.kubeWrites(), "create services x-standby")
	assert.Contains(t, f.kubeWrites(), "update statefulsets x")
	assert.Contains(t, f.kubeWrites(), "patch pods x-0")
	sts := f.statefulSet("x")
	assert.Equal(t, int32(3), *sts.Spec.Replicas)
	assert.Equal(t, "docker.io/library/postgres:17", sts.Spec.Template.Spec.Containers[0].Image)
}

func TestPausedStatusStillObserved(t *testing.T) {
	f := provisioned(t, newPG("x"))
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
			f := provisioned(t, pg, pvc("data-x-0", ownedLabels(pg)), pvc("data-x-1", nil), pvc("data-xy-0", nil), pvc("other", nil))
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
				assert.True(t, f.hasEvent("Normal", ReasonWipedOut, ""))
			} else {
				assert.True(t, f.exists("pvc", "data-x-0"))
				assert.True(t, f.exists("pvc", "data-x-1"))
				sec := f.secret("x-auth")
				assert.Empty(t, sec.OwnerReferences, "the kept secret is orphaned so the garbage collector keeps it")
			}
			assert.NotContains(t, f.postgres("x").Finalizers, Finalizer)
		})
	}
}

func TestDeletionWipeOutKeepsUserSecret(t *testing.T) {
	pg := newPG("x", withAuthSecret("mine"))
	f := provisioned(t, pg, userSecret("mine", map[string]string{"username": "u", "password": "p"}))
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

func TestDeletionWaitsWhilePaused(t *testing.T) {
	f := provisioned(t, newPG("x"))
	setPaused(t, f, metav1.ConditionTrue, false)
	deletePG(t, f, kubedbv1.DeletionPolicyWipeOut)
	require.NoError(t, f.sync("x"))
	assert.Empty(t, f.kubeWrites())
	assert.Contains(t, f.postgres("x").Finalizers, Finalizer)
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
	assert.True(t, isOwnedBy(sec, fresh))
	assert.Equal(t, "x-auth", f.postgres("x").Spec.AuthSecret.Name)
}
