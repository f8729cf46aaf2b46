package opsmanager

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"

	kubedbv1 "github.com/pgops/pgops/pkg/apis/kubedb/v1"
	opsv1alpha1 "github.com/pgops/pgops/pkg/apis/ops/v1alpha1"
	"github.com/pgops/pgops/pkg/credential"
)

// Reasons UpdateCredential fails with.
const (
	ReasonSecretInvalid      = "InvalidSecret"
	ReasonUsernameChanged    = "UsernameChanged"
	ReasonCredentialRejected = "CredentialRejected"
	ReasonNameConflict       = "NameConflict"
	ReasonCredentialLost     = "StagedCredentialLost"
	// ReasonOldCredentialAccepted ends RestartNodes when the primary still accepts the
	// replaced password.
	ReasonOldCredentialAccepted = "OldCredentialAccepted"
	usernameCannotBeChanged     = "database username cannot be changed"
	generatedPasswordFallback   = credential.DefaultPasswordLength
)

// basicAuth is a username and password. Its String never shows the password.
type basicAuth struct{ username, password string }

func (b basicAuth) String() string { return b.username + ":<redacted>" }

// updateCredential is the crash-safe core of RotateAuth, in the style of AWS Secrets
// Manager's rotation:
//  1. stage the new credential in the request's own Secret, which carries a finalizer, before
//     touching PostgreSQL: while that Secret exists, PostgreSQL may have its credential;
//  2. set it in PostgreSQL, logging in with the current credential, or, if that is
//     rejected, checking that the staged one already works (a crash after step 2);
//  3. check that the new credential logs in;
//  4. publish it: the database's Secret (or the user's Secret and spec.authSecret).
//
// Each part checks before it acts, so running it again after a crash at any point is safe
// and never re-sets (and re-salts) a password already in place.
func (c *Controller) updateCredential(ctx context.Context, r *rotation) (outcome, error) {
	plan := r.req.Status.RotateAuth
	current, _, err := c.acceptedCredential(ctx, r.req, plan.DatabaseUID, plan.CurrentSecret)
	if err != nil {
		return outcome{}, err
	}
	staged, err := c.stageCredential(ctx, r, current)
	if err != nil {
		return outcome{}, err
	}
	target, err := c.primaryTarget(r.req)
	if err != nil {
		return outcome{}, err
	}

	if err := c.setInDatabase(ctx, r.req, target, current, staged); err != nil {
		return outcome{}, err
	}
	// The point of no return: from here on, the staged credential is the one PostgreSQL
	// accepts. The mark reaches the API server with this sync's status write, or with a
	// retry's when the Secret update below fails. A crash before then loses nothing: the
	// staged Secret stays, and the next sync (or cleanUp) asks PostgreSQL which credential
	// it has.
	noteProgress(r, ConditionUpdateCredential, ReasonDatabaseUpdated, "the new credential is set in PostgreSQL; updating the Secret")
	ok, err := c.db.VerifyLogin(ctx, target, staged.username, staged.password)
	if err != nil {
		return outcome{}, fmt.Errorf("checking the new credential: %w", err)
	}
	if !ok {
		return outcome{}, fmt.Errorf("the new credential does not log in to Postgres %s yet", r.req.Spec.DatabaseRef.Name)
	}
	if err := c.publishCredential(ctx, r.req, staged); err != nil {
		return outcome{}, err
	}
	return completed("the new credential is set in PostgreSQL and in Secret %s", plan.TargetSecret), nil
}

// pastPointOfNoReturn tells whether PostgreSQL may already hold the staged credential as
// far as the request's status knows.
func pastPointOfNoReturn(req *opsv1alpha1.PostgresOpsRequest) bool {
	cond := meta.FindStatusCondition(req.Status.Conditions, ConditionUpdateCredential)
	return cond != nil && (cond.Status == metav1.ConditionTrue || cond.Reason == ReasonDatabaseUpdated)
}

// setInDatabase makes staged the role's password in PostgreSQL.
func (c *Controller) setInDatabase(ctx context.Context, req *opsv1alpha1.PostgresOpsRequest, target credential.Target, current, staged basicAuth) error {
	asCurrent := target
	asCurrent.User, asCurrent.Password = current.username, current.password
	// One login as the current credential: it checks whether the staged password is
	// already in place (a crash after the ALTER ROLE) and sets it if not.
	_, err := c.db.EnsurePassword(ctx, asCurrent, staged.username, staged.password)
	if err == nil {
		return nil
	}
	if credential.Classify(err) != credential.ClassAuth {
		return fmt.Errorf("setting the new credential in PostgreSQL with the current credential: %w", err)
	}
	// The current credential is rejected: after a crash past the ALTER ROLE, the staged
	// credential is the one in place.
	ok, verr := c.db.VerifyLogin(ctx, target, staged.username, staged.password)
	if verr != nil {
		return fmt.Errorf("checking the staged credential: %w", verr)
	}
	if !ok {
		return fatal(ReasonCredentialRejected,
			"PostgreSQL rejects both the credential in Secret %s and the new one; fix the Secret so it logs in, then create a new request",
			req.Status.RotateAuth.CurrentSecret)
	}
	return nil
}

// readCredential reads a Secret's username and password with a GET: the ops-manager caches
// no Secrets.
func (c *Controller) readCredential(ctx context.Context, namespace, name string) (basicAuth, *corev1.Secret, error) {
	secret, err := c.kubeClient.CoreV1().Secrets(namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return basicAuth{}, nil, fmt.Errorf("reading auth Secret %s: %w", name, err)
	}
	auth, problem := basicAuthFrom(secret)
	if problem != "" {
		return basicAuth{}, nil, fatal(ReasonSecretInvalid, "auth Secret %s %s", secret.Name, problem)
	}
	return auth, secret, nil
}

// basicAuthFrom reads username and password; problem says what is missing, if anything.
func basicAuthFrom(secret *corev1.Secret) (basicAuth, string) {
	username, password := string(secret.Data[kubedbv1.AuthUsernameKey]), string(secret.Data[kubedbv1.AuthPasswordKey])
	switch {
	case username == "" && password == "":
		return basicAuth{}, `has no "username" and no "password"`
	case username == "":
		return basicAuth{}, `has no "username"`
	case password == "":
		return basicAuth{}, `has no "password"`
	}
	return basicAuth{username: username, password: password}, ""
}

// publishCredential makes Kubernetes agree with PostgreSQL:
//   - generated: the database's Secret gets the new username and password, the old ones
//     as username.prev and password.prev, and a new auth-active-from;
//   - user-provided: the user's Secret gets username.prev and password.prev from the old
//     Secret, spec.authSecret points at the user's Secret, externally managed, and a generated
//     old Secret is marked as superseded so no new Postgres adopts its dead credential.
//
// A target Secret deleted or made immutable mid-way is written again from the staged copy:
// the database always ends on a Secret whose credential PostgreSQL accepts.
func (c *Controller) publishCredential(ctx context.Context, req *opsv1alpha1.PostgresOpsRequest, staged basicAuth) error {
	plan := req.Status.RotateAuth
	now := c.clock.Now()
	// The record first: it is what pods boot from, and no other actor writes it.
	recorded, err := c.recordAccepted(ctx, req, staged)
	if err != nil {
		return err
	}
	if appliesSecretEdit(req) {
		// The Secret holds the credential already, or a newer edit the provisioner applies
		// next: it is the user's word, never overwritten.
		return nil
	}
	// The previous credential is the one PostgreSQL accepted before: staged with the new
	// one, since the Secret may have been edited meanwhile.
	prevPtr, err := c.stagedPrevious(ctx, req)
	if err != nil {
		return err
	}
	guard := secretGuard{before: prevPtr, recorded: recorded}
	if plan.TargetSecret == plan.CurrentSecret {
		return c.putCredential(ctx, req, plan.TargetSecret, staged, prevPtr, guard, now)
	}
	if prevPtr == nil {
		// Staged by an earlier version, without the previous credential.
		prev, _, err := c.readCredential(ctx, req.Namespace, plan.CurrentSecret)
		if err != nil && !apierrors.IsNotFound(err) {
			return err
		}
		if err == nil && prev != staged {
			prevPtr = &prev
		}
	}
	if err := c.putCredential(ctx, req, plan.TargetSecret, staged, prevPtr, guard, now); err != nil {
		return err
	}
	if err := c.pointSpecAt(ctx, req, plan.TargetSecret, now); err != nil {
		return err
	}
	if err := c.recordActiveSecret(ctx, req, plan.TargetSecret); err != nil {
		return err
	}
	return c.markSuperseded(ctx, req, plan.CurrentSecret, plan.TargetSecret)
}

// recordActiveSecret records in status.authSecret.name of the request's Postgres that the
// target Secret now holds the credential PostgreSQL accepts, so the provisioner points the
// pods at it and does not take the switch of spec.authSecret.name for a change to rotate to.
func (c *Controller) recordActiveSecret(ctx context.Context, req *opsv1alpha1.PostgresOpsRequest, target string) error {
	postgreses := c.pgopsClient.KubedbV1().Postgreses(req.Namespace)
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		latest, err := postgreses.Get(ctx, req.Spec.DatabaseRef.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		if err != nil {
			return err
		}
		if latest.UID != req.Status.RotateAuth.DatabaseUID || (latest.Status.AuthSecret != nil && latest.Status.AuthSecret.Name == target) {
			return nil
		}
		if latest.Status.AuthSecret == nil {
			latest.Status.AuthSecret = &kubedbv1.AuthSecretStatus{}
		}
		latest.Status.AuthSecret.Name = target
		_, err = postgreses.UpdateStatus(ctx, latest, metav1.UpdateOptions{FieldManager: FieldManager})
		return err
	})
}

// putCredential makes Secret name hold auth as its credential, and prev (when given, else
// the Secret's own current credential when it differs) as username.prev/password.prev.
// A missing Secret is created, and an immutable one holding another credential is replaced,
// both from the staged copy, with a Warning event that says so.
//
// A Secret that another actor changed during the rotation to a third credential (neither
// the new one nor guard.before, the one PostgreSQL accepted before) is left as it is, with an
// event: that is their newer word, which the provisioner applies as an edit once the request
// ends. Only while guard.recorded, the credential record holding the password PostgreSQL
// has: without one (a database an earlier version made), the Secret is the only place left.
func (c *Controller) putCredential(ctx context.Context, req *opsv1alpha1.PostgresOpsRequest, name string, auth basicAuth, prev *basicAuth,
	guard secretGuard, now time.Time) error {
	secrets := c.kubeClient.CoreV1().Secrets(req.Namespace)
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		secret, err := secrets.Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			fresh := &corev1.Secret{
				ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: req.Namespace},
				Type:       corev1.SecretTypeBasicAuth,
			}
			if name == generatedSecretName(req.Spec.DatabaseRef.Name) {
				// The provisioner adopts its own Secret again by these labels.
				fresh.Labels = databaseLabels(req.Spec.DatabaseRef.Name)
				fresh.Annotations = kubedbv1.NeverPrunedAnnotations()
			}
			setCredential(fresh, auth, prev, now)
			if _, err := secrets.Create(ctx, fresh, metav1.CreateOptions{FieldManager: FieldManager}); err != nil {
				return fmt.Errorf("creating Secret %s again: %w", name, err)
			}
			c.recorder.Eventf(req, corev1.EventTypeWarning, "SecretRecreated",
				"Secret %s was deleted during the rotation; created it again with the credential PostgreSQL now has", name)
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading Secret %s: %w", name, err)
		}
		current, problem := basicAuthFrom(secret)
		if problem == "" && guard.recorded && guard.before != nil && current != auth && current != *guard.before {
			c.recorder.Eventf(req, corev1.EventTypeNormal, "SecretChangedDuringRotation",
				"Secret %s was changed during the rotation to another credential: it is left as it is, and applied after this request ends", name)
			return nil
		}
		if prev == nil && current != auth && current.password != "" {
			prev = &current
		}
		if !needsCredential(secret, auth, prev) {
			return nil
		}
		if !isImmutable(secret) {
			setCredential(secret, auth, prev, now)
			_, err = secrets.Update(ctx, secret, metav1.UpdateOptions{FieldManager: FieldManager})
			return err
		}
		if current == auth {
			c.recorder.Eventf(req, corev1.EventTypeWarning, "PreviousCredentialNotRecorded",
				"Secret %s became immutable during the rotation, so username.prev and password.prev could not be added", name)
			return nil
		}
		// Immutable, with a credential PostgreSQL no longer accepts: replace it.
		replacement := secret.DeepCopy()
		replacement.ResourceVersion, replacement.UID, replacement.CreationTimestamp = "", "", metav1.Time{}
		replacement.ManagedFields, replacement.DeletionTimestamp, replacement.Generation = nil, nil, 0
		setCredential(replacement, auth, prev, now)
		uid, rv := secret.UID, secret.ResourceVersion
		if err := secrets.Delete(ctx, name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid, ResourceVersion: &rv}}); err != nil &&
			!apierrors.IsNotFound(err) {
			return fmt.Errorf("replacing immutable Secret %s: %w", name, err)
		}
		if _, err := secrets.Create(ctx, replacement, metav1.CreateOptions{FieldManager: FieldManager}); err != nil {
			return fmt.Errorf("replacing immutable Secret %s: %w", name, err)
		}
		c.recorder.Eventf(req, corev1.EventTypeWarning, "SecretReplaced",
			"Secret %s became immutable during the rotation; replaced it with an immutable copy holding the credential PostgreSQL now has", name)
		return nil
	})
}

// secretGuard is what putCredential needs to tell another actor's newer word in a Secret
// from a credential it may overwrite: the credential PostgreSQL accepted before the
// rotation (as staged with the new one; nil when not staged), and whether the credential
// record holds the new one.
type secretGuard struct {
	before   *basicAuth
	recorded bool
}

// guardFor reads what putCredential's guard needs for the staged credential.
func (c *Controller) guardFor(ctx context.Context, req *opsv1alpha1.PostgresOpsRequest, staged basicAuth) (secretGuard, error) {
	before, err := c.stagedPrevious(ctx, req)
	if err != nil {
		return secretGuard{}, err
	}
	recorded, err := c.recordHolds(ctx, req, staged)
	return secretGuard{before: before, recorded: recorded}, err
}

// needsCredential tells whether secret lacks auth as its credential or prev as its previous
// one, or still says it is superseded.
func needsCredential(secret *corev1.Secret, auth basicAuth, prev *basicAuth) bool {
	current, _ := basicAuthFrom(secret)
	if current != auth {
		return true
	}
	if _, superseded := secret.Annotations[kubedbv1.AuthSupersededByAnnotation]; superseded {
		return true
	}
	if prev == nil {
		return false
	}
	return string(secret.Data[kubedbv1.AuthPrevUsernameKey]) != prev.username ||
		string(secret.Data[kubedbv1.AuthPrevPasswordKey]) != prev.password
}

// setCredential writes auth as the Secret's credential and prev, when given, as its
// previous one.
func setCredential(secret *corev1.Secret, auth basicAuth, prev *basicAuth, now time.Time) {
	if secret.Data == nil {
		secret.Data = map[string][]byte{}
	}
	if string(secret.Data[kubedbv1.AuthUsernameKey]) != auth.username || string(secret.Data[kubedbv1.AuthPasswordKey]) != auth.password {
		if secret.Annotations == nil {
			secret.Annotations = map[string]string{}
		}
		secret.Annotations[kubedbv1.AuthActiveFromAnnotation] = now.UTC().Format(time.RFC3339)
	}
	secret.Data[kubedbv1.AuthUsernameKey] = []byte(auth.username)
	secret.Data[kubedbv1.AuthPasswordKey] = []byte(auth.password)
	if prev != nil {
		secret.Data[kubedbv1.AuthPrevUsernameKey] = []byte(prev.username)
		secret.Data[kubedbv1.AuthPrevPasswordKey] = []byte(prev.password)
	}
	delete(secret.Annotations, kubedbv1.AuthSupersededByAnnotation)
}

// pointSpecAt makes spec.authSecret of the request's Postgres name the target Secret,
// externally managed. It reads the Postgres live and checks its UID against the plan.
func (c *Controller) pointSpecAt(ctx context.Context, req *opsv1alpha1.PostgresOpsRequest, target string, now time.Time) error {
	postgreses := c.pgopsClient.KubedbV1().Postgreses(req.Namespace)
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		latest, err := postgreses.Get(ctx, req.Spec.DatabaseRef.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil // the database is gone; its Secret holds the credential its data has
		}
		if err != nil {
			return err
		}
		if latest.UID != req.Status.RotateAuth.DatabaseUID {
			return nil // another database of that name: not this request's to change
		}
		ref := latest.Spec.AuthSecret
		if ref == nil {
			ref = &kubedbv1.SecretReference{}
		}
		if ref.Name == target && ref.ExternallyManaged {
			return nil
		}
		if ref.Name != target && ref.Name != req.Status.RotateAuth.CurrentSecret && ref.Name != "" {
			// The user named yet another Secret since the request started: theirs is the
			// latest word (the provisioner rotates to it next); status.authSecret.name still
			// says which Secret PostgreSQL accepts.
			return nil
		}
		// Only the reference changes: rotateAfter, rotationRestart and the rest stay.
		activeFrom := metav1.NewTime(now)
		ref.Name, ref.Kind, ref.ExternallyManaged, ref.ActiveFrom = target, "Secret", true, &activeFrom
		latest.Spec.AuthSecret = ref
		_, err = postgreses.Update(ctx, latest, metav1.UpdateOptions{FieldManager: FieldManager})
		return err
	})
}

// markSuperseded annotates the database's generated Secret, when the rotation moved away
// from it, with the Secret that replaced it.
func (c *Controller) markSuperseded(ctx context.Context, req *opsv1alpha1.PostgresOpsRequest, old, replacement string) error {
	if old != generatedSecretName(req.Spec.DatabaseRef.Name) {
		return nil
	}
	secrets := c.kubeClient.CoreV1().Secrets(req.Namespace)
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		secret, err := secrets.Get(ctx, old, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		if err != nil {
			return err
		}
		if secret.Labels[kubedbv1.LabelManagedBy] != kubedbv1.ManagedByValue || secret.Annotations[kubedbv1.AuthSupersededByAnnotation] == replacement ||
			isImmutable(secret) {
			return nil
		}
		if secret.Annotations == nil {
			secret.Annotations = map[string]string{}
		}
		secret.Annotations[kubedbv1.AuthSupersededByAnnotation] = replacement
		_, err = secrets.Update(ctx, secret, metav1.UpdateOptions{FieldManager: FieldManager})
		return err
	})
}

// generatedSecretName is the provisioner's name for a database's generated auth Secret.
func generatedSecretName(database string) string { return database + "-auth" }

func databaseLabels(database string) map[string]string {
	return map[string]string{
		kubedbv1.LabelName: kubedbv1.NameValue, kubedbv1.LabelInstance: database, kubedbv1.LabelManagedBy: kubedbv1.ManagedByValue,
	}
}

// noteProgress records a step's progress mid-way, in memory. The step's clock keeps
// running from when it started: a new reason does not extend its timeout.
func noteProgress(r *rotation, condition, reason, message string) {
	var started metav1.Time
	if cond := meta.FindStatusCondition(r.req.Status.Conditions, condition); cond != nil {
		started = cond.LastTransitionTime
	}
	setCondition(&r.req.Status.Conditions, condition, metav1.ConditionFalse, reason, message, r.req.Generation, r.now)
	if !started.IsZero() {
		meta.FindStatusCondition(r.req.Status.Conditions, condition).LastTransitionTime = started
	}
}
