package provisioner

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	kubedbv1 "github.com/pgops/pgops/pkg/apis/kubedb/v1"
)

func TestSyncGeneratesSecretAndWorkloads(t *testing.T) {
	pg := newPG("x")
	f := newFixture(t, []*kubedbv1.Postgres{pg}, readyPod(pg, 0, true))
	require.NoError(t, f.sync("x"))

	assert.Equal(t, []string{
		"create secrets x-auth",
		"create secrets x.pgops-credential",
		"create services x",
		"create services x-pods",
		"create statefulsets x",
		"patch pods x-0", // its role label
	}, f.kubeWrites())
	assert.Equal(t, []string{
		"update postgreses x",        // finalizer
		"update postgreses x",        // spec.authSecret.name
		"update postgreses/status x", // status
	}, f.pgWrites())

	sec := f.secret("x-auth")
	assert.Equal(t, corev1.SecretTypeBasicAuth, sec.Type)
	assert.Equal(t, "postgres", string(sec.Data["username"]))
	assert.Len(t, sec.Data["password"], 16)
	assert.Equal(t, map[string]string{LabelName: NameValue, LabelInstance: "x", LabelManagedBy: ManagedByValue}, sec.Labels)
	assert.Equal(t, "2025-01-02T03:04:05Z", sec.Annotations[AnnotationAuthActiveFrom])
	assert.Empty(t, sec.OwnerReferences, "no owner reference: no garbage collection can take the credential")
	assert.Equal(t, "Prune=false", sec.Annotations["argocd.argoproj.io/sync-options"], "nor an Argo CD prune")
	assert.True(t, isGeneratedSecret(sec, newPG("x")), "its labels make it this database's")

	rec := f.secret("x.pgops-credential")
	assert.Equal(t, sec.Data["username"], rec.Data["username"], "the record starts with the generated credential")
	assert.Equal(t, sec.Data["password"], rec.Data["password"])
	assert.True(t, kubedbv1.IsCredentialRecordOf(rec, "x"))
	assert.Empty(t, rec.OwnerReferences, "no owner reference: no garbage collection can take the credential")
	assert.Equal(t, "uid-x", rec.Annotations[kubedbv1.RecordDatabaseUIDAnnotation])
	assert.Equal(t, "Prune=false", rec.Annotations["argocd.argoproj.io/sync-options"])
	env := envByName(f.statefulSet("x").Spec.Template.Spec.Containers[0].Env)
	assert.Equal(t, "x.pgops-credential", env["POSTGRES_PASSWORD"].ValueFrom.SecretKeyRef.Name, "the pods boot from the record")

	pg = f.postgres("x")
	assert.Equal(t, "x-auth", pg.Spec.AuthSecret.Name)
	assert.Contains(t, pg.Finalizers, Finalizer)
	assert.Equal(t, kubedbv1.DatabasePhaseProvisioning, pg.Status.Phase)
	assert.Equal(t, int64(1), pg.Status.ObservedGeneration)
	assert.Equal(t, metav1.ConditionTrue, condition(pg, kubedbv1.ConditionProvisioningStarted).Status)
	assert.Equal(t, metav1.ConditionFalse, condition(pg, kubedbv1.ConditionProvisioned).Status)

	assert.False(t, f.exists("configmap", "x-scripts"), "the agent needs no entrypoint ConfigMap")

	assert.False(t, f.exists("service", "x-standby"), "no standby service with one replica")
	assert.True(t, f.hasEvent(corev1.EventTypeNormal, ReasonAuthSecretCreated, "x-auth"))
	for _, e := range f.events {
		assert.NotContains(t, e, string(sec.Data["password"]), "an event holds the password")
	}

	// A second pass sees the primary Service in the cache and checks it: only status changes.
	f.refresh()
	require.NoError(t, f.sync("x"))
	assert.Empty(t, f.kubeWrites())
	assert.Equal(t, []string{"update postgreses/status x"}, f.pgWrites())
	// A third pass over the same state writes nothing at all.
	f.refresh()
	require.NoError(t, f.sync("x"))
	assert.Empty(t, f.kubeWrites())
	assert.Empty(t, f.pgWrites())
}

func TestSyncUsesUserSecretWithoutWritingIt(t *testing.T) {
	pg := newPG("x", withFinalizer, withAuthSecret("mine"))
	f := newFixture(t, []*kubedbv1.Postgres{pg},
		userSecret("mine", map[string]string{"username": "admin", "password": "s3cret-value"}), readyPod(pg, 0, true))
	f.health.err = nil
	require.NoError(t, f.sync("x"))

	for _, w := range f.kubeWrites() {
		if strings.Contains(w, "secrets") {
			assert.Equal(t, "create secrets x.pgops-credential", w, "the user's secret must not be written")
		}
	}
	assert.False(t, f.exists("secret", "x-auth"))
	rec := f.secret("x.pgops-credential")
	assert.Equal(t, "admin", string(rec.Data["username"]), "the record starts with the user's checked credential")
	assert.Equal(t, "s3cret-value", string(rec.Data["password"]))
	sts := f.statefulSet("x")
	env := envByName(sts.Spec.Template.Spec.Containers[0].Env)
	assert.Equal(t, "x.pgops-credential", env["POSTGRES_USER"].ValueFrom.SecretKeyRef.Name)
	assert.Equal(t, "username", env["POSTGRES_USER"].ValueFrom.SecretKeyRef.Key)
	assert.Equal(t, "x.pgops-credential", env["POSTGRES_PASSWORD"].ValueFrom.SecretKeyRef.Name)
	assert.Equal(t, "password", env["POSTGRES_PASSWORD"].ValueFrom.SecretKeyRef.Key)
	sec := f.secret("mine")
	assert.Empty(t, sec.OwnerReferences)

	// The health check got the user's credential, once the primary Service is cached.
	f.refresh()
	require.NoError(t, f.sync("x"))
	require.NotEmpty(t, f.health.calls)
	assert.Equal(t, "admin", f.health.calls[0].User)
	assert.Equal(t, "s3cret-value", f.health.calls[0].Password)
}

func TestSyncUserSecretProblems(t *testing.T) {
	for name, tc := range map[string]struct {
		secret  *corev1.Secret
		reason  string
		message string
	}{
		"missing": {
			reason: ReasonAuthSecretNotFound, message: "secret demo/mine not found",
		},
		"no password": {
			secret: userSecret("mine", map[string]string{"username": "admin"}),
			reason: ReasonAuthSecretInvalid, message: `secret demo/mine has no key "password"`,
		},
		"no username": {
			secret: userSecret("mine", map[string]string{"password": "p"}),
			reason: ReasonAuthSecretInvalid, message: `secret demo/mine has no key "username"`,
		},
		"empty password": {
			secret: userSecret("mine", map[string]string{"username": "admin", "password": ""}),
			reason: ReasonAuthSecretInvalid, message: `secret demo/mine has an empty "password"`,
		},
		// What kubectl create secret --from-file gives from a file an editor wrote.
		"password with a trailing newline": {
			secret: userSecret("mine", map[string]string{"username": "admin", "password": "Long-Enough-1\n"}),
			reason: ReasonAuthSecretInvalid,
			message: `secret demo/mine has an invalid "password": invalid password: the password contains a control or ` +
				`non-printable character (U+000A at byte 13)`,
		},
		"one-byte password": {
			secret:  userSecret("mine", map[string]string{"username": "admin", "password": "p"}),
			reason:  ReasonAuthSecretInvalid,
			message: `secret demo/mine has an invalid "password": invalid password: it is 1 bytes long; the password must be 8 to 1024 bytes long`,
		},
		"reserved username": {
			secret:  userSecret("mine", map[string]string{"username": "pg_admin", "password": "Long-Enough-1"}),
			reason:  ReasonAuthSecretInvalid,
			message: `secret demo/mine has an invalid "username": invalid role name: names starting with "pg_" are reserved by PostgreSQL`,
		},
	} {
		t.Run(name, func(t *testing.T) {
			var objs []runtimeObject
			if tc.secret != nil {
				objs = append(objs, tc.secret)
			}
			f := newFixture(t, []*kubedbv1.Postgres{newPG("x", withFinalizer, withAuthSecret("mine"))}, objs...)
			require.NoError(t, f.sync("x"), "a user-fixable problem is not retried as an error")

			assert.Empty(t, f.kubeWrites(), "nothing is created while the secret is unusable")
			pg := f.postgres("x")
			assert.Equal(t, kubedbv1.DatabasePhaseProvisioning, pg.Status.Phase)
			cond := condition(pg, kubedbv1.ConditionProvisioningStarted)
			require.NotNil(t, cond)
			assert.Equal(t, metav1.ConditionFalse, cond.Status)
			assert.Equal(t, tc.reason, cond.Reason)
			assert.Equal(t, tc.message, cond.Message)
			assert.Equal(t, metav1.ConditionUnknown, condition(pg, kubedbv1.ConditionAcceptingConnection).Status)
			assert.True(t, f.hasEvent(corev1.EventTypeWarning, tc.reason, tc.message), "events: %v", f.events)

			// The same problem again does not repeat the event.
			f.refresh()
			f.events = nil
			require.NoError(t, f.sync("x"))
			assert.Empty(t, f.events)
		})
	}
}

func TestSyncVersionErrors(t *testing.T) {
	for _, v := range []string{"", "latest", "16.4.1", "15.8-bookworm", "12", "12.22", "11", "9.6", "19", " 16"} {
		t.Run(v, func(t *testing.T) {
			f := newFixture(t, []*kubedbv1.Postgres{newPG("x", withFinalizer, func(pg *kubedbv1.Postgres) { pg.Spec.Version = v })})
			require.NoError(t, f.sync("x"))
			assert.False(t, f.exists("statefulset", "x"), "no StatefulSet for an unsupported version")
			pg := f.postgres("x")
			assert.Equal(t, kubedbv1.DatabasePhaseProvisioning, pg.Status.Phase)
			cond := condition(pg, kubedbv1.ConditionProvisioningStarted)
			assert.Equal(t, metav1.ConditionFalse, cond.Status)
			assert.Equal(t, ReasonUnsupportedVersion, cond.Reason)
			assert.Contains(t, cond.Message, "unsupported version")
			assert.Contains(t, cond.Message, "pgops runs PostgreSQL 13 to 18", "the message names the supported range")
			assert.True(t, f.hasEvent(corev1.EventTypeWarning, ReasonUnsupportedVersion, "unsupported version"))
		})
	}
}

func TestSyncScaleUpAndDown(t *testing.T) {
	f := newFixture(t, []*kubedbv1.Postgres{newPG("x", withFinalizer, withReplicas(3))})
	require.NoError(t, f.sync("x"))
	assert.Contains(t, f.kubeWrites(), "create services x-standby")
	sts := f.statefulSet("x")
	assert.Equal(t, int32(3), *sts.Spec.Replicas)
	standby := f.service("x-standby")
	assert.Equal(t, RoleStandby, standby.Spec.Selector[LabelRole])
	assert.Equal(t, "x-0", f.service("x").Spec.Selector[appsv1.StatefulSetPodNameLabel])

	// Scale down to 1: standby Service goes, replicas follow.
	pg := f.postgres("x")
	pg.Spec.Replicas = ptr.To[int32](1)
	pg.Generation = 2
	_, err := f.pgops.KubedbV1().Postgreses(testNS).Update(f.ctx, pg, metav1.UpdateOptions{})
	require.NoError(t, err)
	f.refresh()
	require.NoError(t, f.sync("x"))
	assert.Contains(t, f.kubeWrites(), "delete services x-standby")
	assert.Contains(t, f.kubeWrites(), "update statefulsets x")
	assert.False(t, f.exists("service", "x-standby"))
	assert.Equal(t, int32(1), *f.statefulSet("x").Spec.Replicas)
	assert.True(t, f.hasEvent(corev1.EventTypeNormal, ReasonScaled, "from 3 to 1"))
	assert.Equal(t, int64(2), f.postgres("x").Status.ObservedGeneration)

	// Scale up to 2 again.
	pg = f.postgres("x")
	pg.Spec.Replicas = ptr.To[int32](2)
	_, err = f.pgops.KubedbV1().Postgreses(testNS).Update(f.ctx, pg, metav1.UpdateOptions{})
	require.NoError(t, err)
	f.refresh()
	require.NoError(t, f.sync("x"))
	assert.True(t, f.exists("service", "x-standby"))
	assert.Equal(t, int32(2), *f.statefulSet("x").Spec.Replicas)
}

func TestSyncLabelsPodRoles(t *testing.T) {
	pg := newPG("x", withFinalizer, withReplicas(2))
	p0, p1 := readyPod(pg, 0, true), readyPod(pg, 1, true)
	p1.Labels[LabelRole] = RolePrimary // wrong
	other := readyPod(newPG("xy"), 0, true)
	f := newFixture(t, []*kubedbv1.Postgres{pg}, p0, p1, other)
	require.NoError(t, f.sync("x"))
	assert.Contains(t, f.kubeWrites(), "patch pods x-0")
	assert.Contains(t, f.kubeWrites(), "patch pods x-1")
	assert.NotContains(t, f.kubeWrites(), "patch pods xy-0")
	get := func(name string) *corev1.Pod {
		p, err := f.kube.CoreV1().Pods(testNS).Get(f.ctx, name, metav1.GetOptions{})
		require.NoError(t, err)
		return p
	}
	assert.Equal(t, RolePrimary, get("x-0").Labels[LabelRole])
	assert.Equal(t, RoleStandby, get("x-1").Labels[LabelRole])

	f.refresh()
	require.NoError(t, f.sync("x"))
	for _, w := range f.kubeWrites() {
		assert.NotContains(t, w, "pods", "labels already right")
	}
}

func TestSyncRefusesForeignObjects(t *testing.T) {
	foreign := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "x", Namespace: testNS}}
	f := newFixture(t, []*kubedbv1.Postgres{newPG("x", withFinalizer)}, foreign)
	require.NoError(t, f.sync("x"))
	assert.False(t, f.exists("statefulset", "x"))
	cond := condition(f.postgres("x"), kubedbv1.ConditionProvisioningStarted)
	assert.Equal(t, ReasonObjectConflict, cond.Reason)
	assert.Contains(t, cond.Message, "Service demo/x exists and is not controlled by this Postgres")
	assert.Empty(t, f.service("x").OwnerReferences)
}

func TestSyncAdoptsOrphanedGeneratedSecret(t *testing.T) {
	pg := newPG("x", withFinalizer)
	orphan := userSecret("x-auth", map[string]string{"username": "postgres", "password": "kept-password"})
	orphan.Labels = ownedLabels(pg)
	f := newFixture(t, []*kubedbv1.Postgres{pg}, orphan)
	require.NoError(t, f.sync("x"))
	assert.NotContains(t, f.kubeWrites(), "update secrets x-auth", "adopted by its labels, not written")
	assert.NotContains(t, f.kubeWrites(), "create secrets x-auth")
	sec := f.secret("x-auth")
	assert.Equal(t, "kept-password", string(sec.Data["password"]), "an adopted secret keeps its credential")
	assert.Equal(t, "x-auth", f.postgres("x").Spec.AuthSecret.Name)
	assert.True(t, f.hasEvent("Normal", ReasonAuthSecretAdopted, "x-auth"))
}

// A generated Secret of an earlier version carries the Postgres's owner reference; the next
// sync removes it, so that a foreground deletion can no longer take it.
func TestSyncRemovesTheOwnerReferenceOfAnEarlierVersion(t *testing.T) {
	pg := newPG("x", withFinalizer)
	sec := userSecret("x-auth", map[string]string{"username": "postgres", "password": "kept-password"})
	sec.Labels = ownedLabels(pg)
	sec.OwnerReferences = []metav1.OwnerReference{ownerRef(pg)}
	f := newFixture(t, []*kubedbv1.Postgres{pg}, sec)
	require.NoError(t, f.sync("x"))
	assert.Empty(t, f.secret("x-auth").OwnerReferences)
	assert.Equal(t, kubedbv1.NeverPrunedAnnotations()["argocd.argoproj.io/compare-options"],
		f.secret("x-auth").Annotations["argocd.argoproj.io/compare-options"])
	f.refresh()
	before := len(f.kubeWrites())
	require.NoError(t, f.sync("x"))
	for _, w := range f.kubeWrites()[before:] {
		assert.NotContains(t, w, "secrets", "written once")
	}
}

// After a rotation to a user's Secret, the generated Secret is marked superseded. A new
// Postgres of the same name (recreated under a Delete or Halt policy, PVCs kept) must not
// adopt its dead credential: it is told which Secret to name instead.
// The same when the new Postgres names "<name>-auth" explicitly.
func TestSyncRefusesSupersededGeneratedSecret(t *testing.T) {
	for name, mutate := range map[string][]func(*kubedbv1.Postgres){"generated": nil, "named explicitly": {withAuthSecret("x-auth")}} {
		t.Run(name, func(t *testing.T) {
			pg := newPG("x", mutate...)
			old := generatedSecretFor(pg).(*corev1.Secret)
			old.OwnerReferences = nil
			old.Annotations = map[string]string{kubedbv1.AuthSupersededByAnnotation: "mine"}
			f := newFixture(t, []*kubedbv1.Postgres{pg}, old)
			require.NoError(t, f.sync("x"))
			assert.False(t, f.exists("statefulset", "x"), "no pods start on a credential the data does not accept")
			cond := condition(f.postgres("x"), kubedbv1.ConditionProvisioningStarted)
			require.NotNil(t, cond)
			assert.Equal(t, ReasonAuthSecretSuperseded, cond.Reason)
			assert.Contains(t, cond.Message, "set spec.authSecret.name: mine")
		})
	}
}

func TestSyncMissingPostgresIsNoop(t *testing.T) {
	f := newFixture(t, nil)
	require.NoError(t, f.sync("gone"))
	assert.Empty(t, f.kubeWrites())
	assert.Empty(t, f.pgWrites())
}

func envByName(env []corev1.EnvVar) map[string]corev1.EnvVar {
	m := map[string]corev1.EnvVar{}
	for _, e := range env {
		m[e.Name] = e
	}
	return m
}

func TestEventsNeverHoldPassword(t *testing.T) {
	f := newFixture(t, []*kubedbv1.Postgres{newPG("x", withReplicas(2))})
	require.NoError(t, f.sync("x"))
	password := string(f.secret("x-auth").Data["password"])
	for _, e := range f.events {
		assert.False(t, strings.Contains(e, password))
	}
	pg := f.postgres("x")
	for _, c := range pg.Status.Conditions {
		assert.NotContains(t, c.Message, password)
	}
}
