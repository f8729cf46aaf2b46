package provisioner

import (
	"context"
	"errors"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"

	kubedbv1 "github.com/pgops/pgops/pkg/apis/kubedb/v1"
	"github.com/pgops/pgops/pkg/credential"
)

// authCredential is the superuser credential of a database: the auth Secret's (user,
// password), and the one PostgreSQL accepts as its credential record keeps it (accepted).
type authCredential struct {
	secretName string
	user       string
	password   string
	// version is the auth Secret's resourceVersion.
	version string
	// unusable says why the auth Secret's credential cannot be used, if it cannot.
	unusable *userError
	// accepted is the credential record's; outOfSync says how the auth Secret disagrees with
	// it, when it does.
	accepted  basicAuth
	outOfSync string
	// adoptedFrom is the Secret the database ran on before this sync found that PostgreSQL
	// accepts secretName's credential (a finished change of spec.authSecret.name).
	adoptedFrom string
	// note is the CredentialRotation condition this sync wants (rotation.go).
	note *rotationNote
}

// ensureAuthSecret makes sure pg has a usable auth Secret. With spec.authSecret.name empty it
// generates (or adopts) "<name>-auth" and writes the name back into the spec; the returned
// Postgres is then the updated one. A user's Secret is only read, never written. When
// spec.authSecret.name names another Secret than the one the database runs on
// (status.authSecret.name), authSecretChange decides which the pods use.
//
// rec is the database's credential record, when it has one: a deleted generated Secret is
// created again from it, and a new spec.authSecret.name is adopted when it holds it.
func (c *Controller) ensureAuthSecret(ctx context.Context, pg *kubedbv1.Postgres, rec *corev1.Secret) (*kubedbv1.Postgres, *authCredential, error) {
	if pg.Spec.AuthSecret == nil || pg.Spec.AuthSecret.Name == "" {
		sec, err := c.ensureGeneratedSecret(ctx, pg, rec)
		if err != nil {
			return pg, nil, err
		}
		cred, err := credentialFrom(sec)
		if err != nil {
			return pg, nil, err
		}
		pg, err = c.updatePostgres(ctx, pg, func(p *kubedbv1.Postgres) bool {
			if p.Spec.AuthSecret != nil && p.Spec.AuthSecret.Name != "" {
				return false
			}
			if p.Spec.AuthSecret == nil {
				p.Spec.AuthSecret = &kubedbv1.SecretReference{}
			}
			p.Spec.AuthSecret.Name = sec.Name
			return true
		})
		if err != nil {
			return pg, nil, fmt.Errorf("writing spec.authSecret.name: %w", err)
		}
		if pg.Spec.AuthSecret.Name != sec.Name {
			// Someone named another Secret meanwhile: use theirs.
			return c.readAuthCredential(ctx, pg)
		}
		return pg, cred, nil
	}
	if active := pg.ActiveAuthSecretName(); active != pg.Spec.AuthSecret.Name {
		cred, err := c.authSecretChange(ctx, pg, rec)
		return pg, cred, err
	}
	sec, err := c.loadAuthSecret(ctx, pg)
	var ue *userError
	if errors.As(err, &ue) && ue.reason == ReasonAuthSecretNotFound && rec != nil && pg.Spec.AuthSecret.Name == authSecretName(pg) &&
		!pg.Spec.AuthSecret.ExternallyManaged {
		// The generated Secret was deleted (by hand, by a prune): it is the user's interface
		// to the credential the record keeps, so it is created again from the record.
		sec, err = c.ensureGeneratedSecret(ctx, pg, rec)
	}
	if err != nil {
		return pg, nil, err
	}
	if err := checkNotSuperseded(pg, sec); err != nil {
		return pg, nil, err
	}
	if err := c.disownGeneratedSecret(ctx, pg, sec); err != nil {
		return pg, nil, err
	}
	cred, err := credentialFrom(sec)
	return pg, cred, err
}

// checkNotSuperseded refuses, for a Postgres that has not run on any Secret yet (a new one,
// perhaps over an earlier one's kept data), a generated Secret that a rotation replaced with
// a user's: its credential is dead, whether spec.authSecret.name is empty or names it.
func checkNotSuperseded(pg *kubedbv1.Postgres, sec *corev1.Secret) error {
	replacement := sec.Annotations[kubedbv1.AuthSupersededByAnnotation]
	if replacement == "" || !isGeneratedSecret(sec, pg) || (pg.Status.AuthSecret != nil && pg.Status.AuthSecret.Name != "") {
		return nil
	}
	return &userError{reason: ReasonAuthSecretSuperseded, msg: fmt.Sprintf(
		"secret %s/%s was replaced by secret %s in a credential rotation and holds a credential the database no longer accepts; "+
			"set spec.authSecret.name: %s (and externallyManaged: true)", pg.Namespace, sec.Name, replacement, replacement)}
}

// readAuthCredential reads the credential of the Secret the database runs on
// (status.authSecret.name, else spec.authSecret.name) without writing anything.
func (c *Controller) readAuthCredential(ctx context.Context, pg *kubedbv1.Postgres) (*kubedbv1.Postgres, *authCredential, error) {
	name := pg.ActiveAuthSecretName()
	if name == "" {
		return pg, nil, &userError{reason: ReasonAuthSecretNotFound,
			msg: fmt.Sprintf("spec.authSecret.name is empty and secret %s/%s is not generated yet", pg.Namespace, authSecretName(pg))}
	}
	cred, err := c.credentialNamed(ctx, pg, name)
	return pg, cred, err
}

// loadAuthSecret reads the Secret named in spec.authSecret.name: from the cache when it is
// labelled as ours, else with a direct GET (users' Secrets are not cached).
func (c *Controller) loadAuthSecret(ctx context.Context, pg *kubedbv1.Postgres) (*corev1.Secret, error) {
	return c.loadSecret(ctx, pg, pg.Spec.AuthSecret.Name)
}

// loadSecret reads Secret name in pg's namespace; a missing one is a problem the user fixes.
func (c *Controller) loadSecret(ctx context.Context, pg *kubedbv1.Postgres, name string) (*corev1.Secret, error) {
	sec, err := c.getSecret(ctx, pg.Namespace, name)
	if apierrors.IsNotFound(err) {
		return nil, &userError{reason: ReasonAuthSecretNotFound, msg: fmt.Sprintf("secret %s/%s not found", pg.Namespace, name)}
	}
	if err != nil {
		return nil, fmt.Errorf("reading secret %s/%s: %w", pg.Namespace, name, err)
	}
	return sec, nil
}

func (c *Controller) getSecret(ctx context.Context, namespace, name string) (*corev1.Secret, error) {
	if sec, err := c.secretLister.Secrets(namespace).Get(name); err == nil {
		return sec, nil
	}
	return c.kubeClient.CoreV1().Secrets(namespace).Get(ctx, name, metav1.GetOptions{})
}

// credentialFrom checks that sec has a username and a password.
func credentialFrom(sec *corev1.Secret) (*authCredential, error) {
	for _, key := range []string{corev1.BasicAuthUsernameKey, corev1.BasicAuthPasswordKey} {
		v, ok := sec.Data[key]
		if !ok {
			return nil, &userError{reason: ReasonAuthSecretInvalid,
				msg: fmt.Sprintf("secret %s/%s has no key %q", sec.Namespace, sec.Name, key)}
		}
		if len(v) == 0 {
			return nil, &userError{reason: ReasonAuthSecretInvalid,
				msg: fmt.Sprintf("secret %s/%s has an empty %q", sec.Namespace, sec.Name, key)}
		}
	}
	// The credential goes into the pods' environment and the standbys' passfile: check it
	// against the same rules the ops-manager applies before a rotation.
	user := string(sec.Data[corev1.BasicAuthUsernameKey])
	if err := credential.ValidatePodUsername(user); err != nil {
		return nil, &userError{reason: ReasonAuthSecretInvalid,
			msg: fmt.Sprintf("secret %s/%s has an invalid %q: %v", sec.Namespace, sec.Name, corev1.BasicAuthUsernameKey, err)}
	}
	password := string(sec.Data[corev1.BasicAuthPasswordKey])
	if err := credential.ValidatePodPassword(password); err != nil {
		return nil, &userError{reason: ReasonAuthSecretInvalid,
			msg: fmt.Sprintf("secret %s/%s has an invalid %q: %v", sec.Namespace, sec.Name, corev1.BasicAuthPasswordKey, err)}
	}
	return &authCredential{secretName: sec.Name, user: user, password: password, version: sec.ResourceVersion}, nil
}

// isGeneratedSecret reports whether sec is the provisioner's "<name>-auth" for pg (owned, or
// orphaned by an earlier Postgres of the same name under the Halt or Delete policy).
func isGeneratedSecret(sec *corev1.Secret, pg *kubedbv1.Postgres) bool {
	if sec.Name != authSecretName(pg) || sec.Labels[LabelName] != NameValue ||
		sec.Labels[LabelManagedBy] != ManagedByValue || sec.Labels[LabelInstance] != pg.Name {
		return false
	}
	owner := metav1.GetControllerOf(sec)
	return owner == nil || isOwnedBy(sec, pg)
}

// ensureGeneratedSecret returns "<name>-auth", creating it when missing: with the credential
// rec keeps when the database has a credential record, else a generated one. An existing one
// is never overwritten: the ops-manager rotates its credential.
func (c *Controller) ensureGeneratedSecret(ctx context.Context, pg *kubedbv1.Postgres, rec *corev1.Secret) (*corev1.Secret, error) {
	name := authSecretName(pg)
	sec, err := c.getSecret(ctx, pg.Namespace, name)
	if err == nil {
		if err := checkAuthSecretNotForeign(sec, pg); err != nil {
			return nil, err
		}
		// A rotation may have moved an earlier Postgres of this name to the user's Secret:
		// the data on the kept PVCs expects that credential, not this one.
		if err := checkNotSuperseded(pg, sec); err != nil {
			return nil, err
		}
		if isGeneratedSecret(sec, pg) {
			// spec.authSecret.name is still empty: this Postgres finds the Secret a Halt or
			// Delete of an earlier one of the same name kept, with the credential its data has.
			c.recorder.Eventf(pg, corev1.EventTypeNormal, ReasonAuthSecretAdopted, "Adopted existing auth secret %s", sec.Name)
		}
		return sec, c.disownGeneratedSecret(ctx, pg, sec)
	}
	if !apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("reading secret %s/%s: %w", pg.Namespace, name, err)
	}
	auth := basicAuth{user: DefaultUser}
	if rec != nil {
		auth = recordedCredential(rec)
	} else if auth.password, err = credential.GeneratePassword(credential.DefaultPasswordLength); err != nil {
		return nil, fmt.Errorf("generating password: %w", err)
	}
	sec = &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Name:      name,
			Namespace: pg.Namespace,
			Labels:    ownedLabels(pg),
			Annotations: mergeMaps(kubedbv1.NeverPrunedAnnotations(), map[string]string{
				AnnotationAuthActiveFrom: c.now().UTC().Format("2006-01-02T15:04:05Z07:00")}),
			// No owner reference: the garbage collector must never delete the credential the
			// data expects, not even in a foreground deletion (kubectl delete
			// --cascade=foreground, Argo CD's prune), which ignores deletionPolicy. WipeOut
			// deletes it by its labels.
		},
		Type: corev1.SecretTypeBasicAuth,
		Data: map[string][]byte{
			corev1.BasicAuthUsernameKey: []byte(auth.user),
			corev1.BasicAuthPasswordKey: []byte(auth.password),
		},
	}
	created, err := c.kubeClient.CoreV1().Secrets(pg.Namespace).Create(ctx, sec, metav1.CreateOptions{FieldManager: FieldManager})
	if apierrors.IsAlreadyExists(err) {
		// The cache was behind; use what is there.
		return c.kubeClient.CoreV1().Secrets(pg.Namespace).Get(ctx, name, metav1.GetOptions{})
	}
	if err != nil {
		return nil, fmt.Errorf("creating secret %s/%s: %w", pg.Namespace, name, err)
	}
	klog.FromContext(ctx).Info("Created auth secret", "secret", klog.KObj(created))
	if rec != nil {
		c.recorder.Eventf(pg, corev1.EventTypeWarning, ReasonAuthSecretCreated,
			"Auth secret %s was deleted: created it again with the credential PostgreSQL accepts, kept in Secret %s", name, rec.Name)
	} else {
		c.recorder.Eventf(pg, corev1.EventTypeNormal, ReasonAuthSecretCreated, "Created auth secret %s", name)
	}
	return created, nil
}

// disownGeneratedSecret removes pg's owner reference from its generated Secret, which
// versions before this one set: with it, a foreground deletion of the Postgres would make the
// garbage collector delete the Secret whatever the deletion policy. The Secret is pg's by its
// labels (isGeneratedSecret). A Secret without the reference is not written.
func (c *Controller) disownGeneratedSecret(ctx context.Context, pg *kubedbv1.Postgres, sec *corev1.Secret) error {
	if !isGeneratedSecret(sec, pg) || !hasOwnerReference(sec, pg) {
		return nil
	}
	if err := c.orphanGeneratedSecret(ctx, pg); err != nil {
		return fmt.Errorf("removing the owner reference of secret %s/%s: %w", pg.Namespace, sec.Name, err)
	}
	return nil
}

func hasOwnerReference(obj metav1.Object, pg *kubedbv1.Postgres) bool {
	for _, ref := range obj.GetOwnerReferences() {
		if ref.UID == pg.UID {
			return true
		}
	}
	return false
}
