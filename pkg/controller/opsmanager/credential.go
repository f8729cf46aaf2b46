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
	"github.com/pgops/pgops/pkg/dbaddr"
)

// LabelOpsRequest on a staged-credential Secret names the request it belongs to.
const LabelOpsRequest = "ops.kubedb.com/request"

// Reasons UpdateCredential fails with.
const (
	ReasonSecretInvalid       = "InvalidSecret"
	ReasonUsernameChanged     = "UsernameChanged"
	ReasonCredentialRejected  = "CredentialRejected"
	usernameCannotBeChanged   = "database username cannot be changed"
	stagedSecretSuffix        = "-staged-auth"
	generatedPasswordFallback = credential.DefaultPasswordLength
)

// basicAuth is a username and password. Its String never shows the password.
type basicAuth struct{ username, password string }

func (b basicAuth) String() string { return b.username + ":<redacted>" }

// updateCredential is the crash-safe core of RotateAuth, in the style of AWS Secrets
// Manager's rotation:
//  1. stage the new credential in a Secret owned by the request, before touching PostgreSQL;
//  2. set it in PostgreSQL, logging in with the current credential, or, if that is
//     rejected, checking that the staged one already works (a crash after step 2);
//  3. check that the new credential logs in;
//  4. publish it: the database's Secret (or the user's Secret and spec.authSecret).
//
// Each part checks before it acts, so running it again after a crash at any point is safe
// and never re-sets (and re-salts) a password already in place.
func (c *Controller) updateCredential(ctx context.Context, r *rotation) (outcome, error) {
	current, _, err := c.currentCredential(ctx, r.pg)
	if err != nil {
		return outcome{}, err
	}
	staged, err := c.stageCredential(ctx, r, current)
	if err != nil {
		return outcome{}, err
	}
	target, err := c.primaryTarget(r.pg)
	if err != nil {
		return outcome{}, err
	}

	if err := c.setInDatabase(ctx, r, target, current, staged); err != nil {
		return outcome{}, err
	}
	if cond := meta.FindStatusCondition(r.req.Status.Conditions, ConditionUpdateCredential); cond == nil || cond.Reason != ReasonDatabaseUpdated {
		// Record the point of no return: from here on, the staged credential is the one
		// PostgreSQL accepts, and a failure rolls the Secrets forward to it.
		if err := c.markProgress(ctx, r, ConditionUpdateCredential, ReasonDatabaseUpdated,
			"the new credential is set in PostgreSQL; updating the Secret"); err != nil {
			return outcome{}, err
		}
	}
	ok, err := c.db.VerifyLogin(ctx, target, staged.username, staged.password)
	if err != nil {
		return outcome{}, fmt.Errorf("checking the new credential: %w", err)
	}
	if !ok {
		return outcome{}, fmt.Errorf("the new credential does not log in to Postgres %s yet", r.pg.Name)
	}
	if err := c.publishCredential(ctx, r.req, r.pg, staged); err != nil {
		return outcome{}, err
	}
	return completed("the new credential is set in PostgreSQL and in Secret %s", r.pg.Spec.AuthSecret.Name), nil
}

// setInDatabase makes staged the role's password in PostgreSQL.
func (c *Controller) setInDatabase(ctx context.Context, r *rotation, target credential.Target, current, staged basicAuth) error {
	asCurrent := target
	asCurrent.User, asCurrent.Password = current.username, current.password
	inPlace, err := c.db.PasswordMatches(ctx, asCurrent, staged.username, staged.password)
	if err == nil {
		if inPlace {
			return nil
		}
		if err := c.db.SetPassword(ctx, asCurrent, staged.username, staged.password); err != nil {
			return fmt.Errorf("setting the new credential in PostgreSQL: %w", err)
		}
		return nil
	}
	if credential.Classify(err) != credential.ClassAuth {
		return fmt.Errorf("connecting to Postgres %s with the current credential: %w", r.pg.Name, err)
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
			r.pg.Spec.AuthSecret.Name)
	}
	return nil
}

// currentCredential reads the database's auth Secret, the credential PostgreSQL should
// accept now.
func (c *Controller) currentCredential(ctx context.Context, pg *kubedbv1.Postgres) (basicAuth, *corev1.Secret, error) {
	if pg.Spec.AuthSecret == nil || pg.Spec.AuthSecret.Name == "" {
		return basicAuth{}, nil, fmt.Errorf("Postgres %s has no auth Secret yet", pg.Name)
	}
	secret, err := c.kubeClient.CoreV1().Secrets(pg.Namespace).Get(ctx, pg.Spec.AuthSecret.Name, metav1.GetOptions{})
	if err != nil {
		return basicAuth{}, nil, fmt.Errorf("reading auth Secret %s: %w", pg.Spec.AuthSecret.Name, err)
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

// userSecretRef is the Secret a user-provided rotation takes its credential from, or nil.
func userSecretRef(req *opsv1alpha1.PostgresOpsRequest) *opsv1alpha1.SecretReference {
	if req.Spec.Authentication == nil {
		return nil
	}
	return req.Spec.Authentication.SecretRef
}

// validateNewCredential checks the request's input before anything is changed: the
// user's Secret exists and holds a usable credential for the same username.
func (c *Controller) validateNewCredential(ctx context.Context, req *opsv1alpha1.PostgresOpsRequest, pg *kubedbv1.Postgres) error {
	current, _, err := c.currentCredential(ctx, pg)
	if err != nil {
		return err
	}
	ref := userSecretRef(req)
	if ref == nil {
		return nil
	}
	_, err = c.userCredential(ctx, req, pg, ref, current)
	return err
}

// userCredential reads and checks the credential a user provides.
func (c *Controller) userCredential(ctx context.Context, req *opsv1alpha1.PostgresOpsRequest, pg *kubedbv1.Postgres,
	ref *opsv1alpha1.SecretReference, current basicAuth) (basicAuth, error) {
	if ref.Kind != "" && ref.Kind != "Secret" {
		return basicAuth{}, fatal(ReasonInvalidRequest, "authentication.secretRef.kind must be Secret, got %q", ref.Kind)
	}
	if pg.Spec.AuthSecret != nil && ref.Name == pg.Spec.AuthSecret.Name {
		// Rotating "to" the current Secret would lose the old credential before it is
		// replaced in PostgreSQL.
		return basicAuth{}, fatal(ReasonInvalidRequest,
			"authentication.secretRef names %s, the database's current auth Secret; give a new Secret", ref.Name)
	}
	secret, err := c.kubeClient.CoreV1().Secrets(req.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return basicAuth{}, fatal(ReasonSecretInvalid, "Secret %s/%s named in authentication.secretRef does not exist", req.Namespace, ref.Name)
	}
	if err != nil {
		return basicAuth{}, fmt.Errorf("reading Secret %s: %w", ref.Name, err)
	}
	auth, problem := basicAuthFrom(secret)
	if problem != "" {
		return basicAuth{}, fatal(ReasonSecretInvalid, "Secret %s/%s %s", req.Namespace, ref.Name, problem)
	}
	if auth.username != current.username {
		return basicAuth{}, fatal(ReasonUsernameChanged, "%s: Secret %s has username %q, the database's is %q",
			usernameCannotBeChanged, ref.Name, auth.username, current.username)
	}
	if err := credential.CheckPassword(auth.password); err != nil {
		return basicAuth{}, fatal(ReasonSecretInvalid, "Secret %s/%s: the password cannot be used: %v", req.Namespace, ref.Name, err)
	}
	return auth, nil
}

func stagedSecretName(req *opsv1alpha1.PostgresOpsRequest) string {
	return req.Name + stagedSecretSuffix
}

// stageCredential returns the request's new credential, creating it first if needed: a
// generated password for the current username, or a copy of the user's. It is stored in a
// Secret owned by the request, never in status or events.
func (c *Controller) stageCredential(ctx context.Context, r *rotation, current basicAuth) (basicAuth, error) {
	name := stagedSecretName(r.req)
	if secret, err := c.secrets.Secrets(r.req.Namespace).Get(name); err == nil {
		return stagedFrom(secret)
	}
	// The cache may be behind a Secret this request staged just before a restart: ask the
	// API server before making a new credential.
	if secret, err := c.kubeClient.CoreV1().Secrets(r.req.Namespace).Get(ctx, name, metav1.GetOptions{}); err == nil {
		return stagedFrom(secret)
	} else if !apierrors.IsNotFound(err) {
		return basicAuth{}, fmt.Errorf("reading staged credential: %w", err)
	}
	var staged basicAuth
	if ref := userSecretRef(r.req); ref != nil {
		auth, err := c.userCredential(ctx, r.req, r.pg, ref, current)
		if err != nil {
			return basicAuth{}, err
		}
		staged = auth
	} else {
		length := c.cfg.PasswordLength
		if length == 0 {
			length = generatedPasswordFallback
		}
		password, err := credential.GeneratePassword(length)
		if err != nil {
			return basicAuth{}, err
		}
		staged = basicAuth{username: current.username, password: password}
	}
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Name:      name,
			Namespace: r.req.Namespace,
			Labels: map[string]string{
				kubedbv1.LabelName: kubedbv1.NameValue, kubedbv1.LabelInstance: r.pg.Name,
				kubedbv1.LabelManagedBy: kubedbv1.ManagedByValue, LabelOpsRequest: r.req.Name,
			},
			OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(r.req,
				opsv1alpha1.SchemeGroupVersion.WithKind(opsv1alpha1.ResourceKindPostgresOpsRequest))},
		},
		Type: corev1.SecretTypeBasicAuth,
		Data: map[string][]byte{
			kubedbv1.AuthUsernameKey: []byte(staged.username),
			kubedbv1.AuthPasswordKey: []byte(staged.password),
		},
	}
	_, err := c.kubeClient.CoreV1().Secrets(r.req.Namespace).Create(ctx, secret, metav1.CreateOptions{FieldManager: FieldManager})
	if apierrors.IsAlreadyExists(err) {
		// Our cache was behind: use what is stored, never a second new password.
		existing, gerr := c.kubeClient.CoreV1().Secrets(r.req.Namespace).Get(ctx, name, metav1.GetOptions{})
		if gerr != nil {
			return basicAuth{}, fmt.Errorf("reading staged credential: %w", gerr)
		}
		return stagedFrom(existing)
	}
	if err != nil {
		return basicAuth{}, fmt.Errorf("staging the new credential: %w", err)
	}
	return staged, nil
}

func stagedFrom(secret *corev1.Secret) (basicAuth, error) {
	auth, problem := basicAuthFrom(secret)
	if problem != "" {
		return basicAuth{}, fatal(ReasonSecretInvalid, "staged credential Secret %s %s", secret.Name, problem)
	}
	return auth, nil
}

// publishCredential makes Kubernetes agree with PostgreSQL:
//   - generated: the database's Secret gets the new username and password, the old ones
//     as username.prev and password.prev, and a new auth-active-from;
//   - user-provided: the user's Secret gets username.prev and password.prev from the old
//     Secret, and spec.authSecret points at the user's Secret, externally managed. The old
//     Secret is left in place.
func (c *Controller) publishCredential(ctx context.Context, req *opsv1alpha1.PostgresOpsRequest, pg *kubedbv1.Postgres, staged basicAuth) error {
	now := c.clock.Now()
	ref := userSecretRef(req)
	if ref == nil {
		return c.updateSecret(ctx, pg.Namespace, pg.Spec.AuthSecret.Name, func(secret *corev1.Secret) bool {
			old, _ := basicAuthFrom(secret)
			if old == staged {
				return false
			}
			setCredential(secret, staged, old, now)
			return true
		})
	}

	if pg.Spec.AuthSecret.Name != ref.Name {
		old, _, err := c.currentCredential(ctx, pg)
		if err != nil {
			return err
		}
		if err := c.updateSecret(ctx, pg.Namespace, ref.Name, func(secret *corev1.Secret) bool {
			if string(secret.Data[kubedbv1.AuthPrevPasswordKey]) == old.password &&
				string(secret.Data[kubedbv1.AuthPrevUsernameKey]) == old.username {
				return false
			}
			setCredential(secret, staged, old, now)
			return true
		}); err != nil {
			return err
		}
	}
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		latest, err := c.pgopsClient.KubedbV1().Postgreses(pg.Namespace).Get(ctx, pg.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if latest.Spec.AuthSecret != nil && latest.Spec.AuthSecret.Name == ref.Name && latest.Spec.AuthSecret.ExternallyManaged {
			pg.Spec.AuthSecret = latest.Spec.AuthSecret
			return nil
		}
		activeFrom := metav1.NewTime(now)
		latest.Spec.AuthSecret = &kubedbv1.SecretReference{
			Name: ref.Name, Kind: "Secret", ExternallyManaged: true, ActiveFrom: &activeFrom,
		}
		updated, err := c.pgopsClient.KubedbV1().Postgreses(pg.Namespace).Update(ctx, latest, metav1.UpdateOptions{FieldManager: FieldManager})
		if err == nil {
			pg.Spec.AuthSecret = updated.Spec.AuthSecret
		}
		return err
	})
}

// setCredential writes auth as the Secret's credential and prev as its previous one.
func setCredential(secret *corev1.Secret, auth, prev basicAuth, now time.Time) {
	if secret.Data == nil {
		secret.Data = map[string][]byte{}
	}
	secret.Data[kubedbv1.AuthUsernameKey] = []byte(auth.username)
	secret.Data[kubedbv1.AuthPasswordKey] = []byte(auth.password)
	secret.Data[kubedbv1.AuthPrevUsernameKey] = []byte(prev.username)
	secret.Data[kubedbv1.AuthPrevPasswordKey] = []byte(prev.password)
	if secret.Annotations == nil {
		secret.Annotations = map[string]string{}
	}
	secret.Annotations[kubedbv1.AuthActiveFromAnnotation] = now.UTC().Format(time.RFC3339)
}

// updateSecret applies mutate to the stored Secret and writes it when mutate says it
// changed something, retrying on conflicts.
func (c *Controller) updateSecret(ctx context.Context, namespace, name string, mutate func(*corev1.Secret) bool) error {
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		secret, err := c.kubeClient.CoreV1().Secrets(namespace).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("reading Secret %s: %w", name, err)
		}
		if !mutate(secret) {
			return nil
		}
		_, err = c.kubeClient.CoreV1().Secrets(namespace).Update(ctx, secret, metav1.UpdateOptions{FieldManager: FieldManager})
		return err
	})
}

// primaryTarget says how to reach the database's primary; the caller fills in who.
func (c *Controller) primaryTarget(pg *kubedbv1.Postgres) (credential.Target, error) {
	svc, err := c.services.Services(pg.Namespace).Get(pg.Name)
	if err != nil {
		return credential.Target{}, fmt.Errorf("finding the primary Service of Postgres %s: %w", pg.Name, err)
	}
	host, port, err := dbaddr.PrimaryTarget(c.cfg.HostMode, svc)
	if err != nil {
		return credential.Target{}, err
	}
	return credential.Target{
		Host: host, Port: port, SSLMode: c.cfg.SSLMode,
		ConnectTimeout: c.cfg.ConnectTimeout, ApplicationName: ControllerName,
	}, nil
}

// markProgress records a step's progress mid-way, before its next action.
func (c *Controller) markProgress(ctx context.Context, r *rotation, condition, reason, message string) error {
	setCondition(&r.req.Status.Conditions, condition, metav1.ConditionFalse, reason, message, r.req.Generation, r.now)
	updated, err := c.writeStatus(ctx, r.req)
	if err != nil {
		return err
	}
	r.req = updated
	return nil
}
