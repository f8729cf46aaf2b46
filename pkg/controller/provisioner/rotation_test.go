package provisioner

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	kubedbv1 "github.com/pgops/pgops/pkg/apis/kubedb/v1"
	opsv1alpha1 "github.com/pgops/pgops/pkg/apis/ops/v1alpha1"
)

// The fixture's clock reads 2025-01-02T03:04:05Z; "x-auth" is generated then.
var fixtureNow = time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)

func rotateEvery(d time.Duration, restart string) func(*kubedbv1.Postgres) {
	return func(pg *kubedbv1.Postgres) {
		pg.Spec.AuthSecret = &kubedbv1.SecretReference{RotateAfter: &metav1.Duration{Duration: d}, RotationRestart: restart}
	}
}

func (f *fixture) setClock(t time.Time) { f.c.now = func() time.Time { return t } }

func (f *fixture) requests() []opsv1alpha1.PostgresOpsRequest {
	f.t.Helper()
	list, err := f.pgops.OpsV1alpha1().PostgresOpsRequests(testNS).List(f.ctx, metav1.ListOptions{})
	require.NoError(f.t, err)
	return list.Items
}

// endRequest ends request name with phase at t, its finalizer released, as the ops-manager would.
func (f *fixture) endRequest(name string, phase opsv1alpha1.OpsRequestPhase, at time.Time) {
	f.t.Helper()
	r, err := f.pgops.OpsV1alpha1().PostgresOpsRequests(testNS).Get(f.ctx, name, metav1.GetOptions{})
	require.NoError(f.t, err)
	r.Status.Phase = phase
	typ := map[opsv1alpha1.OpsRequestPhase]string{opsv1alpha1.OpsRequestPhaseFailed: "Failed", opsv1alpha1.OpsRequestPhaseSuccessful: "Successful"}[phase]
	r.Status.Conditions = []metav1.Condition{{Type: typ, Status: metav1.ConditionTrue, Reason: "StepTimedOut", Message: "it took too long",
		LastTransitionTime: metav1.NewTime(at)}}
	_, err = f.pgops.OpsV1alpha1().PostgresOpsRequests(testNS).UpdateStatus(f.ctx, r, metav1.UpdateOptions{})
	require.NoError(f.t, err)
	f.refresh()
}

func TestScheduledRotationFallsDueOnce(t *testing.T) {
	f := provisioned(t, newPG("x", rotateEvery(time.Hour, "None")))
	pg := f.postgres("x")
	cond := condition(pg, ConditionCredentialRotation)
	require.NotNil(t, cond)
	assert.Equal(t, ReasonRotationScheduled, cond.Reason)
	assert.Contains(t, cond.Message, "the next rotation is due at 2025-01-02T04:04:05Z")
	assert.Empty(t, f.requests(), "not due yet")

	f.setClock(fixtureNow.Add(59 * time.Minute))
	f.mustSync("x")
	f.refresh()
	assert.Empty(t, f.requests(), "a minute before it is due")

	f.setClock(fixtureNow.Add(time.Hour))
	f.mustSync("x")
	f.refresh()
	reqs := f.requests()
	require.Len(t, reqs, 1)
	req := reqs[0]
	assert.Equal(t, "x-rotate-auth-20250102t040405z-1", req.Name)
	assert.Equal(t, opsv1alpha1.TriggerScheduled, req.Labels[opsv1alpha1.LabelTrigger])
	assert.Equal(t, "x", req.Labels[LabelInstance])
	assert.Equal(t, fmt.Sprint(fixtureNow.Add(time.Hour).Unix()), req.Labels[opsv1alpha1.LabelRotationDue])
	assert.True(t, isOwnedBy(&req, f.postgres("x")), "owned by the Postgres")
	assert.Equal(t, opsv1alpha1.OpsRequestTypeRotateAuth, req.Spec.Type)
	require.NotNil(t, req.Spec.RotateAuth)
	assert.Equal(t, opsv1alpha1.RestartNone, req.Spec.RotateAuth.Restart, "the database's rotationRestart")
	assert.Nil(t, req.Spec.Authentication, "a generated credential")
	assert.Equal(t, ReasonRotationRequested, condition(f.postgres("x"), ConditionCredentialRotation).Reason)

	// While it runs, and however often the database is synced, no second request.
	for i := 0; i < 3; i++ {
		f.setClock(fixtureNow.Add(time.Hour + time.Duration(i)*time.Minute))
		f.mustSync("x")
		f.refresh()
	}
	assert.Len(t, f.requests(), 1)

	// Once it rotated, the next one is due rotateAfter after the new credential.
	f.endRequest(req.Name, opsv1alpha1.OpsRequestPhaseSuccessful, fixtureNow.Add(time.Hour+time.Minute))
	sec := f.secret("x-auth")
	sec.Annotations[kubedbv1.AuthActiveFromAnnotation] = fixtureNow.Add(time.Hour + time.Minute).Format(time.RFC3339)
	_, err := f.kube.CoreV1().Secrets(testNS).Update(f.ctx, sec, metav1.UpdateOptions{})
	require.NoError(t, err)
	f.refresh()
	f.setClock(fixtureNow.Add(time.Hour + 2*time.Minute))
	f.mustSync("x")
	f.refresh()
	assert.Len(t, f.requests(), 1)
	assert.Contains(t, condition(f.postgres("x"), ConditionCredentialRotation).Message, "due at 2025-01-02T05:05:05Z")
}

func TestFailedScheduledRotationBacksOff(t *testing.T) {
	f := provisioned(t, newPG("x", rotateEvery(time.Hour, "")))
	due := fixtureNow.Add(time.Hour)
	f.setClock(due)
	f.mustSync("x")
	f.refresh()
	first := f.requests()[0].Name
	assert.Nil(t, f.requests()[0].Spec.RotateAuth, "no rotationRestart: the request's default")
	f.endRequest(first, opsv1alpha1.OpsRequestPhaseFailed, due.Add(time.Minute))

	f.setClock(due.Add(time.Minute + 30*time.Second))
	f.events = nil
	f.mustSync("x")
	f.refresh()
	assert.Len(t, f.requests(), 1, "no retry within the backoff")
	cond := condition(f.postgres("x"), ConditionCredentialRotation)
	assert.Equal(t, metav1.ConditionFalse, cond.Status)
	assert.Equal(t, ReasonRotationFailed, cond.Reason)
	assert.Contains(t, cond.Message, "StepTimedOut: it took too long; trying again at 2025-01-02T04:06:05Z (attempt 2)")
	assert.True(t, f.hasEvent(corev1.EventTypeWarning, ReasonRotationFailed, first))

	f.events = nil
	f.mustSync("x")
	assert.False(t, f.hasEvent(corev1.EventTypeWarning, ReasonRotationFailed, first), "the Warning is not repeated")

	f.setClock(due.Add(2 * time.Minute))
	f.mustSync("x")
	f.refresh()
	require.Len(t, f.requests(), 2)
	second := f.requests()[1].Name
	assert.Equal(t, "x-rotate-auth-20250102t040405z-2", second)

	// The second failure waits twice as long.
	f.endRequest(second, opsv1alpha1.OpsRequestPhaseFailed, due.Add(3*time.Minute))
	f.setClock(due.Add(4 * time.Minute))
	f.mustSync("x")
	f.refresh()
	assert.Len(t, f.requests(), 2)
	assert.Contains(t, condition(f.postgres("x"), ConditionCredentialRotation).Message, "trying again at 2025-01-02T04:09:05Z (attempt 3)")
}

func TestRotationBackoffIsBounded(t *testing.T) {
	assert.Equal(t, time.Minute, rotationBackoff(1))
	assert.Equal(t, 2*time.Minute, rotationBackoff(2))
	assert.Equal(t, 32*time.Minute, rotationBackoff(6))
	assert.Equal(t, time.Hour, rotationBackoff(7))
	assert.Equal(t, time.Hour, rotationBackoff(100))
}

func TestUserSecretIsNeverRotatedOnASchedule(t *testing.T) {
	f := provisioned(t, newPG("x", func(pg *kubedbv1.Postgres) {
		pg.Spec.AuthSecret = &kubedbv1.SecretReference{Name: "mine", ExternallyManaged: true, RotateAfter: &metav1.Duration{Duration: time.Minute}}
	}), userSecret("mine", map[string]string{"username": "postgres", "password": "Users-Own-Password-1"}))
	f.setClock(fixtureNow.Add(24 * time.Hour))
	f.mustSync("x")
	f.refresh()
	assert.Empty(t, f.requests())
	cond := condition(f.postgres("x"), ConditionCredentialRotation)
	require.NotNil(t, cond)
	assert.Equal(t, ReasonRotationExternal, cond.Reason)
	assert.Contains(t, cond.Message, "Secret mine is the user's (externallyManaged), so pgops never rotates it on a schedule")
}

func TestCredentialAgeStartsAtActiveFrom(t *testing.T) {
	sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{CreationTimestamp: metav1.NewTime(fixtureNow)}}
	pg := newPG("x")
	assert.Equal(t, fixtureNow, credentialSince(pg, sec), "the Secret's creation")
	activeFrom := metav1.NewTime(fixtureNow.Add(time.Hour))
	pg.Spec.AuthSecret = &kubedbv1.SecretReference{ActiveFrom: &activeFrom}
	assert.Equal(t, activeFrom.Time, credentialSince(pg, sec), "spec.authSecret.activeFrom")
	sec.Annotations = map[string]string{kubedbv1.AuthActiveFromAnnotation: "2025-03-01T00:00:00Z"}
	assert.Equal(t, time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC), credentialSince(pg, sec), "the annotation wins")
	sec.Annotations[kubedbv1.AuthActiveFromAnnotation] = "yesterday"
	assert.Equal(t, activeFrom.Time, credentialSince(pg, sec), "an unreadable annotation is skipped")
	applied := metav1.NewTime(fixtureNow.Add(48 * time.Hour))
	pg.Status.AuthSecret = &kubedbv1.AuthSecretStatus{Name: "x-auth", LastUpdateTimestamp: &applied}
	assert.Equal(t, applied.Time, credentialSince(pg, sec), "an applied edit (which writes no annotation) restarts the clock")
}

func TestEndedAutoRequestsArePrunedToTheLastFive(t *testing.T) {
	f := provisioned(t, newPG("x"))
	pg := f.postgres("x")
	for i := 0; i < 7; i++ {
		r := f.c.autoRequest(pg, fmt.Sprintf("auto-%d", i), opsv1alpha1.TriggerScheduled)
		r.CreationTimestamp = metav1.NewTime(fixtureNow.Add(time.Duration(i) * time.Minute))
		r.Status.Phase = opsv1alpha1.OpsRequestPhaseSuccessful
		_, err := f.pgops.OpsV1alpha1().PostgresOpsRequests(testNS).Create(f.ctx, r, metav1.CreateOptions{})
		require.NoError(t, err)
	}
	mine := &opsv1alpha1.PostgresOpsRequest{
		ObjectMeta: metav1.ObjectMeta{Name: "users-own", Namespace: testNS},
		Spec:       opsv1alpha1.PostgresOpsRequestSpec{Type: opsv1alpha1.OpsRequestTypeRotateAuth, DatabaseRef: opsv1alpha1.DatabaseReference{Name: "x"}},
		Status:     opsv1alpha1.OpsRequestStatus{Phase: opsv1alpha1.OpsRequestPhaseSuccessful},
	}
	_, err := f.pgops.OpsV1alpha1().PostgresOpsRequests(testNS).Create(f.ctx, mine, metav1.CreateOptions{})
	require.NoError(t, err)
	f.refresh()
	f.mustSync("x")
	var names []string
	for _, r := range f.requests() {
		names = append(names, r.Name)
	}
	assert.ElementsMatch(t, []string{"auto-2", "auto-3", "auto-4", "auto-5", "auto-6", "users-own"}, names)
}

// gitopsFixture is "x" provisioned on x-auth, then spec.authSecret.name changed to
// "from-git", a Secret of the user's holding password.
func gitopsFixture(t *testing.T, username, password string) *fixture {
	t.Helper()
	return gitopsFixtureOn(t, provisioned(t, newPG("x")), username, password)
}

// gitopsFixtureOn is gitopsFixture on f, "x" provisioned.
func gitopsFixtureOn(t *testing.T, f *fixture, username, password string) *fixture {
	t.Helper()
	f.addSecret(userSecret("from-git", map[string]string{"username": username, "password": password}))
	pg := f.postgres("x")
	require.Equal(t, "x-auth", pg.Status.AuthSecret.Name, "the provisioner records the Secret it runs on")
	pg.Spec.AuthSecret.Name = "from-git"
	pg.Generation++
	_, err := f.pgops.KubedbV1().Postgreses(testNS).Update(f.ctx, pg, metav1.UpdateOptions{})
	require.NoError(t, err)
	f.refresh()
	return f
}

func (f *fixture) podSecret() string {
	f.t.Helper()
	for _, e := range f.statefulSet("x").Spec.Template.Spec.Containers[0].Env {
		if e.Name == "POSTGRES_PASSWORD" {
			return e.ValueFrom.SecretKeyRef.Name
		}
	}
	return ""
}

func TestAuthSecretChangeBecomesARotation(t *testing.T) {
	f := gitopsFixture(t, "postgres", "From-Git-Password-1")
	f.health.refused = map[string]bool{"From-Git-Password-1": true}
	f.mustSync("x")
	f.refresh()

	reqs := f.requests()
	require.Len(t, reqs, 1)
	req := reqs[0]
	assert.Equal(t, opsv1alpha1.TriggerAuthSecretChanged, req.Labels[opsv1alpha1.LabelTrigger])
	require.NotNil(t, req.Spec.Authentication)
	assert.Equal(t, "from-git", req.Spec.Authentication.SecretRef.Name)
	assert.Equal(t, "x.pgops-credential", f.podSecret(), "the pods boot from the credential record")
	pg := f.postgres("x")
	assert.Equal(t, "x-auth", pg.Status.AuthSecret.Name)
	cond := condition(pg, ConditionCredentialRotation)
	assert.Equal(t, ReasonRotationRequested, cond.Reason)
	assert.Contains(t, cond.Message, "rotating to it with PostgresOpsRequest "+req.Name)

	f.mustSync("x")
	f.refresh()
	assert.Len(t, f.requests(), 1, "one request for one change")

	// A failed one is not retried in a loop; the database keeps running on x-auth.
	f.endRequest(req.Name, opsv1alpha1.OpsRequestPhaseFailed, fixtureNow)
	f.mustSync("x")
	f.refresh()
	assert.Len(t, f.requests(), 1)
	cond = condition(f.postgres("x"), ConditionCredentialRotation)
	assert.Equal(t, ReasonRotationFailed, cond.Reason)
	assert.Contains(t, cond.Message, "the database keeps running on Secret x-auth")
	assert.Equal(t, "x.pgops-credential", f.podSecret())
}

// A new spec.authSecret.name holding the credential the record keeps (what PostgreSQL
// accepts) is adopted without a rotation.
func TestAuthSecretChangeAlreadyAcceptedIsAdopted(t *testing.T) {
	f := provisioned(t, newPG("x"))
	accepted := f.secret("x-auth").Data
	f = gitopsFixtureOn(t, f, "postgres", string(accepted["password"]))
	f.mustSync("x")
	f.refresh()
	assert.Empty(t, f.requests(), "PostgreSQL accepts it: nothing to rotate")
	assert.Equal(t, "from-git", f.postgres("x").Status.AuthSecret.Name)
	assert.Equal(t, "x.pgops-credential", f.podSecret())
	assert.Nil(t, condition(f.postgres("x"), ConditionCredentialRotation))
}

// A login proves nothing (a trust rule in pg_hba.conf accepts any password): a new Secret
// whose password logs in, but is not the recorded one, is rotated to, never adopted.
func TestAuthSecretChangeIsNeverAdoptedOnALogin(t *testing.T) {
	f := gitopsFixture(t, "postgres", "From-Git-Password-1") // the fake health accepts any password
	f.mustSync("x")
	f.refresh()
	require.Len(t, f.requests(), 1)
	assert.Equal(t, opsv1alpha1.TriggerAuthSecretChanged, f.requests()[0].Labels[opsv1alpha1.LabelTrigger])
	assert.Equal(t, "x-auth", f.postgres("x").Status.AuthSecret.Name)
}

func TestInvalidAuthSecretChangeKeepsTheDatabaseRunning(t *testing.T) {
	for name, tc := range map[string]struct{ username, password, want string }{
		"trailing newline":   {"postgres", "From-Git-Password-1\n", "control or non-printable character"},
		"username changed":   {"someone", "From-Git-Password-1", `with username "someone", but the database's is "postgres"`},
		"password too short": {"postgres", "short", "8 to 1024 bytes"},
	} {
		t.Run(name, func(t *testing.T) {
			f := gitopsFixture(t, tc.username, tc.password)
			f.health.refused = map[string]bool{tc.password: true}
			f.mustSync("x")
			f.refresh()
			assert.Empty(t, f.requests())
			assert.Equal(t, "x.pgops-credential", f.podSecret())
			cond := condition(f.postgres("x"), ConditionCredentialRotation)
			require.NotNil(t, cond)
			assert.Equal(t, metav1.ConditionFalse, cond.Status)
			assert.Equal(t, ReasonAuthSecretChangeRefused, cond.Reason)
			assert.Contains(t, cond.Message, tc.want)
			assert.Contains(t, cond.Message, "the database keeps running on Secret x-auth")
			assert.NotContains(t, cond.Message, "From-Git-Password")
			assert.True(t, f.hasEvent(corev1.EventTypeWarning, ReasonAuthSecretChangeRefused, "from-git"))
			assert.Nil(t, meta.FindStatusCondition(f.postgres("x").Status.Conditions, kubedbv1.ConditionPaused))
		})
	}
}

// Another role's Secret is never adopted, even when PostgreSQL accepts its login.
func TestAuthSecretChangeToAnotherRoleIsNeverAdopted(t *testing.T) {
	f := gitopsFixture(t, "app", "App-Password-123")
	f.mustSync("x")
	f.refresh()
	assert.Empty(t, f.requests())
	assert.Equal(t, "x-auth", f.postgres("x").Status.AuthSecret.Name)
	assert.Equal(t, "x.pgops-credential", f.podSecret())
	assert.Equal(t, ReasonAuthSecretChangeRefused, condition(f.postgres("x"), ConditionCredentialRotation).Reason)
}

// The Secret the database ran on deleted together with the rename (one Git commit): the
// credential record keeps what PostgreSQL accepts, so the rotation to the new Secret goes
// ahead, and the pods keep booting from the record.
func TestAuthSecretChangeWithTheRunningSecretGone(t *testing.T) {
	f := gitopsFixture(t, "postgres", "From-Git-Password-1")
	require.NoError(t, f.kube.CoreV1().Secrets(testNS).Delete(f.ctx, "x-auth", metav1.DeleteOptions{}))
	f.refresh()
	f.mustSync("x")
	f.refresh()
	require.Len(t, f.requests(), 1)
	assert.Equal(t, "from-git", f.requests()[0].Spec.Authentication.SecretRef.Name)
	assert.Equal(t, "x.pgops-credential", f.podSecret())
}

// Pruning the oldest failed attempts never makes a new attempt collide with a kept one.
func TestScheduledAttemptsOutlivePruning(t *testing.T) {
	f := provisioned(t, newPG("x", rotateEvery(time.Hour, "")))
	at := fixtureNow.Add(time.Hour)
	for attempt := 1; attempt <= 7; attempt++ {
		f.setClock(at)
		f.mustSync("x")
		f.refresh()
		name := fmt.Sprintf("x-rotate-auth-20250102t040405z-%d", attempt)
		_, err := f.pgops.OpsV1alpha1().PostgresOpsRequests(testNS).Get(f.ctx, name, metav1.GetOptions{})
		require.NoError(t, err, "attempt %d is created", attempt)
		f.endRequest(name, opsv1alpha1.OpsRequestPhaseFailed, at)
		at = at.Add(2 * time.Hour) // past the longest backoff
	}
	f.setClock(at)
	f.mustSync("x")
	f.refresh()
	assert.Len(t, f.requests(), autoRequestHistory+1, "five ended ones kept, and the eighth attempt")
}

// While paused, nothing is decided about rotations: the condition stays as it was.
func TestPauseKeepsTheRotationCondition(t *testing.T) {
	f := provisioned(t, newPG("x", rotateEvery(time.Hour, "")))
	require.Equal(t, ReasonRotationScheduled, condition(f.postgres("x"), ConditionCredentialRotation).Reason)
	setPaused(t, f, metav1.ConditionTrue, false)
	f.mustSync("x")
	cond := condition(f.postgres("x"), ConditionCredentialRotation)
	require.NotNil(t, cond)
	assert.Equal(t, ReasonRotationScheduled, cond.Reason)
}

// A rotation to a new spec.authSecret.name that a newer request superseded (it ended
// Skipped, never having run) is tried again once no request is open.
func TestAuthSecretChangeSupersededIsTriedAgain(t *testing.T) {
	f := gitopsFixture(t, "postgres", "From-Git-Password-1")
	f.mustSync("x")
	f.refresh()
	require.Len(t, f.requests(), 1)
	first := f.requests()[0].Name
	f.endRequest(first, opsv1alpha1.OpsRequestPhaseSkipped, fixtureNow)
	f.mustSync("x")
	f.refresh()
	require.Len(t, f.requests(), 2)
	var names []string
	for _, r := range f.requests() {
		names = append(names, r.Name)
	}
	assert.Contains(t, names, first+"-2")
	assert.Equal(t, ReasonRotationRequested, condition(f.postgres("x"), ConditionCredentialRotation).Reason)
}
