package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	kubedbv1 "github.com/pgops/pgops/pkg/apis/kubedb/v1"
	opsv1alpha1 "github.com/pgops/pgops/pkg/apis/ops/v1alpha1"
	"github.com/pgops/pgops/pkg/controller/provisioner"
	"github.com/pgops/pgops/pkg/credential"
)

// Tests of what pgops may delete, and of other actors deleting or scaling what pgops runs:
// deletionPolicy holds under every propagation policy, and pgops deletes only what it can
// prove is its own.

// deletePolicy edits examples/10-postgres.yaml to deletionPolicy policy.
func deletePolicy(policy kubedbv1.DeletionPolicy) func(string) string {
	return func(s string) string {
		return strings.Replace(s, "deletionPolicy: WipeOut", "deletionPolicy: "+string(policy), 1)
	}
}

// waitStandbysStream waits until the primary of rc streams to replicas-1 standbys, logging
// in with the database's auth Secret.
func waitStandbysStream(t testing.TB, ctx context.Context, rc *rotationCase) {
	t.Helper()
	cred := authCredential(t, ctx, rc.ns, rc.db)
	waitStandbysStreamAs(t, ctx, rc, cred.username, cred.password, nil)
}

// waitStandbysStreamAs waits until ready() (when given) and the primary of rc streams to
// replicas-1 standbys, logging in as user with password.
func waitStandbysStreamAs(t testing.TB, ctx context.Context, rc *rotationCase, user, password string, ready func(context.Context) bool) {
	t.Helper()
	target := primaryTarget(t, ctx, rc.ns, rc.db)
	target.User, target.Password = user, password
	streaming := 0
	var lastErr error
	poll(t, ctx, "every standby to stream", func(ctx context.Context) (bool, error) {
		if ready != nil && !ready(ctx) {
			return false, nil
		}
		streaming, lastErr = credential.StreamingStandbys(ctx, target)
		return lastErr == nil && streaming == rc.replicas-1, nil
	}, func() string { return fmt.Sprintf("%d of %d standbys stream (%v)", streaming, rc.replicas-1, lastErr) })
}

// `kubectl delete pg --cascade=foreground` (Argo CD's default prune) of a Delete database:
// the garbage collector deletes what the Postgres owns at once, but the data and the
// credential it expects are owned by nothing. The same manifest applied again runs on the
// same data with the same credential, and its standby streams. Then, as DoNotTerminate, a
// foreground deletion is refused and the database keeps running.
func TestForegroundDeletionKeepsTheDataAndItsCredential(t *testing.T) {
	parallel(t)
	ctx := testContext(t, safetyTimeout)
	rc := newRotationCase(t, ctx, 2, deletePolicy(kubedbv1.DeletionPolicyDelete))
	rc.writeData(t, ctx)

	foreground := metav1.DeletePropagationForeground
	require.NoError(t, env.pgops.KubedbV1().Postgreses(rc.ns).Delete(ctx, rc.db, metav1.DeleteOptions{PropagationPolicy: &foreground}))
	poll(t, ctx, "the Postgres to be gone", func(ctx context.Context) (bool, error) {
		_, err := env.pgops.KubedbV1().Postgreses(rc.ns).Get(ctx, rc.db, metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	}, func() string { return "still there" })
	kept := getSecret(t, ctx, rc.ns, rc.db+"-auth")
	assert.Equal(t, rc.before.password, string(kept.Data["password"]), "the generated Secret outlives a foreground deletion")

	applyExample(t, ctx, rc.ns, "10-postgres.yaml", func(s string) string {
		return deletePolicy(kubedbv1.DeletionPolicyDelete)(strings.Replace(s, "replicas: 3", "replicas: 2", 1))
	})
	again := rotationCaseFor(t, ctx, rc.ns, rc.db, 2)
	assert.Equal(t, rc.before, again.before, "the same credential")
	again.wroteData = true
	again.checkData(t, ctx)
	waitStandbysStream(t, ctx, again)

	patched, err := env.cluster.Kubectl(ctx, "patch", "pg", rc.db, "-n", rc.ns, "--type=merge", "-p", `{"spec":{"deletionPolicy":"DoNotTerminate"}}`)
	require.NoError(t, err, string(patched))
	err = env.pgops.KubedbV1().Postgreses(rc.ns).Delete(ctx, rc.db, metav1.DeleteOptions{PropagationPolicy: &foreground})
	require.Error(t, err, "DoNotTerminate refuses the deletion")
	assert.Contains(t, err.Error(), "DoNotTerminate")
	pg := getPostgres(t, ctx, rc.ns, rc.db)
	assert.Nil(t, pg.DeletionTimestamp)
	assert.Equal(t, again.podUIDs, podUIDs(t, ctx, rc.ns, rc.db), "the database keeps running")
	again.checkData(t, ctx)
	patched, err = env.cluster.Kubectl(ctx, "patch", "pg", rc.db, "-n", rc.ns, "--type=merge", "-p", `{"spec":{"deletionPolicy":"WipeOut"}}`)
	require.NoError(t, err, string(patched))
}

// Another application's PVC named like the database's first data volume, another KubeDB
// database's Secret named like its auth Secret, and another application's Service named like
// its primary Service: the Postgres reports the conflict, creates nothing and holds no
// finalizer, and its WipeOut deletion leaves all three as they were.
func TestWipeOutLeavesOtherApplicationsObjects(t *testing.T) {
	parallel(t)
	ctx := testContext(t, provisionTimeout)
	ns := newNamespace(t, ctx)
	pvc, err := env.kube.CoreV1().PersistentVolumeClaims(ns).Create(ctx, &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: "data-w-0"},
		Spec: corev1.PersistentVolumeClaimSpec{
			StorageClassName: ptr.To("standard"),
			AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{
				corev1.ResourceStorage: resource.MustParse("1Gi")}},
		},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	createUserSecret(t, ctx, ns, "w-auth", "root", "Another-Databases-Password-1", func(s *corev1.Secret) {
		s.Labels = map[string]string{kubedbv1.LabelName: "mysqls.kubedb.com", kubedbv1.LabelInstance: "w", kubedbv1.LabelManagedBy: kubedbv1.ManagedByValue}
	})
	svc, err := env.kube.CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "w"},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80}}},
	}, metav1.CreateOptions{})
	require.NoError(t, err)

	createPostgres(t, ctx, ns, "w", 1)
	last, cond := waitProvisioningBlocked(t, ctx, ns, "w", provisioner.ReasonObjectConflict)
	assert.NotContains(t, last.Finalizers, provisioner.Finalizer)
	assert.Contains(t, cond.Message, "exists and is not controlled by this Postgres")
	require.NoError(t, env.pgops.KubedbV1().Postgreses(ns).Delete(ctx, "w", metav1.DeleteOptions{}))
	poll(t, ctx, "the Postgres to be gone", func(ctx context.Context) (bool, error) {
		_, err := env.pgops.KubedbV1().Postgreses(ns).Get(ctx, "w", metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	}, func() string { return "still there" })

	for what, uid := range map[string]types.UID{"pvc": pvc.UID, "service": svc.UID, "secret": getSecret(t, ctx, ns, "w-auth").UID} {
		var got metav1.Object
		switch what {
		case "pvc":
			got, err = env.kube.CoreV1().PersistentVolumeClaims(ns).Get(ctx, "data-w-0", metav1.GetOptions{})
		case "service":
			got, err = env.kube.CoreV1().Services(ns).Get(ctx, "w", metav1.GetOptions{})
		case "secret":
			got, err = env.kube.CoreV1().Secrets(ns).Get(ctx, "w-auth", metav1.GetOptions{})
		}
		require.NoError(t, err, "the other application's %s is still there", what)
		assert.Equal(t, uid, got.GetUID(), "%s", what)
		assert.Nil(t, got.GetDeletionTimestamp(), "%s", what)
		assert.Empty(t, got.GetOwnerReferences(), "%s: not adopted", what)
	}
	assert.Equal(t, "Another-Databases-Password-1", string(getSecret(t, ctx, ns, "w-auth").Data["password"]))
}

// The database is scaled from 1 to 3 replicas right after a RotateAuth is created: the
// request ends Successful (it waits for no pod the pause keeps from being created), and both
// new standbys stream with the new credential.
func TestScaleRightAfterARotationIsCreated(t *testing.T) {
	parallel(t)
	ctx := testContext(t, safetyTimeout)
	rc := newRotationCase(t, ctx, 1)
	rc.writeData(t, ctx)
	applyRotateAuth(t, ctx, rc.ns, "rotate", rc.db, "")
	patched, err := env.cluster.Kubectl(ctx, "patch", "pg", rc.db, "-n", rc.ns, "--type=merge", "-p", `{"spec":{"replicas":3}}`)
	require.NoError(t, err, string(patched))
	req := waitRequestEnded(t, ctx, rc.ns, "rotate")
	require.Equal(t, opsv1alpha1.OpsRequestPhaseSuccessful, req.Status.Phase, describeRequest(req))
	rc.replicas = 3
	rc.fates[rc.db+"-1"], rc.fates[rc.db+"-2"] = podEither, podEither
	rc.checkRotated(t, ctx, "rotate") // the new standbys stream with the new credential
}

// `kubectl delete ns` in the middle of a rotation, past the point of no return: PostgreSQL
// has the new credential and the auth Secret does not yet (the ops-manager may not update
// Secrets meanwhile). The namespace controller deletes the auth Secret, and the API server
// refuses every create in a namespace being deleted, so cleanup cannot write it again; the
// request's, the staged credential's and the Postgres's finalizers must all let go, and the
// namespace be gone within the request's spec.timeout (5m).
func TestNamespaceDeletedMidRotation(t *testing.T) {
	// Not parallel: it takes Secret updates away from the shared ops-manager.
	ctx := testContext(t, safetyTimeout)
	rc := newRotationCase(t, ctx, 1)
	restore := withoutSecretUpdates(t, ctx)
	applyRotateAuth(t, ctx, rc.ns, "rotate", rc.db, "")
	waitRequest(t, ctx, rc.ns, "rotate", credentialUnpublished)
	require.NoError(t, env.kube.CoreV1().Namespaces().Delete(ctx, rc.ns, metav1.DeleteOptions{}))
	poll(t, ctx, "the namespace controller to delete the auth Secret", func(ctx context.Context) (bool, error) {
		_, err := env.kube.CoreV1().Secrets(rc.ns).Get(ctx, rc.db+"-auth", metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	}, func() string { return "still there" })
	restore()
	deadline, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	var left string
	poll(t, deadline, "namespace "+rc.ns+" to be gone within the request's spec.timeout", func(ctx context.Context) (bool, error) {
		ns, err := env.kube.CoreV1().Namespaces().Get(ctx, rc.ns, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return true, nil
		}
		if err == nil {
			left = fmt.Sprintf("%+v", ns.Status.Conditions)
		}
		return false, nil
	}, func() string { return left })
}
