package provisioner

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/klog/v2"

	kubedbv1 "github.com/pgops/pgops/pkg/apis/kubedb/v1"
	"github.com/pgops/pgops/pkg/credential"
)

// The credential record (pkg/apis/kubedb/v1/record.go) is what the pods boot from and what
// the provisioner logs in with. The provisioner creates it, from the auth Secret, for a
// database that has none, and moves it to a re-created Postgres of the same name whose data
// it belongs to; only the ops-manager changes its credential, once PostgreSQL accepts the new
// one.
const (
	ReasonCredentialRecordCreated = "CredentialRecordCreated"
	ReasonCredentialRecordAdopted = "CredentialRecordAdopted"
	ReasonCredentialRecordReset   = "CredentialRecordReset"
)

func credentialRecordName(pg *kubedbv1.Postgres) string {
	return kubedbv1.CredentialRecordName(pg.Name)
}

// basicAuth is a username and password. Its String never shows the password.
type basicAuth struct{ user, password string }

func (b basicAuth) String() string { return b.user + ":<redacted>" }

func recordedCredential(sec *corev1.Secret) basicAuth {
	return basicAuth{user: string(sec.Data[corev1.BasicAuthUsernameKey]), password: string(sec.Data[corev1.BasicAuthPasswordKey])}
}

// getRecord reads pg's credential record: from the cache (it is labelled as the operators'),
// else live, so a record created a moment ago is never created twice. nil when there is none;
// a Secret of that name that is not a record of this database is a conflict the user fixes.
func (c *Controller) getRecord(ctx context.Context, pg *kubedbv1.Postgres) (*corev1.Secret, error) {
	name := credentialRecordName(pg)
	sec, err := c.secretLister.Secrets(pg.Namespace).Get(name)
	if apierrors.IsNotFound(err) {
		sec, err = c.kubeClient.CoreV1().Secrets(pg.Namespace).Get(ctx, name, metav1.GetOptions{})
	}
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading credential record %s/%s: %w", pg.Namespace, name, err)
	}
	if !kubedbv1.IsCredentialRecordOf(sec, pg.Name) {
		return nil, &userError{reason: ReasonObjectConflict, msg: fmt.Sprintf(
			"Secret %s/%s is not pgops's credential record of this Postgres (label %s=%s missing); pgops keeps the credential PostgreSQL accepts under that name: rename or delete it",
			pg.Namespace, name, kubedbv1.LabelCredentialRecord, pg.Name)}
	}
	return sec, nil
}

// adoptRecord returns pg's credential record when it is this database's: recorded for pg's
// UID, or left by an earlier Postgres of the same name whose data is still here (a PVC
// labelled as this database's), which it then records as pg's. nil when there is none, or
// when the data it was for is gone (ensureRecord writes it anew).
func (c *Controller) adoptRecord(ctx context.Context, pg *kubedbv1.Postgres) (*corev1.Secret, error) {
	rec, err := c.getRecord(ctx, pg)
	if err != nil || rec == nil {
		return nil, err
	}
	if rec.Annotations[kubedbv1.RecordDatabaseUIDAnnotation] == string(pg.UID) {
		return rec, nil
	}
	kept, err := c.dataKept(ctx, pg)
	if err != nil || !kept {
		return nil, err
	}
	adopted := rec.DeepCopy()
	adopted.Annotations = mergeMaps(adopted.Annotations, map[string]string{kubedbv1.RecordDatabaseUIDAnnotation: string(pg.UID)})
	adopted, err = c.kubeClient.CoreV1().Secrets(pg.Namespace).Update(ctx, adopted, metav1.UpdateOptions{FieldManager: FieldManager})
	if err != nil {
		return nil, fmt.Errorf("adopting credential record %s/%s: %w", pg.Namespace, rec.Name, err)
	}
	c.recorder.Eventf(pg, corev1.EventTypeNormal, ReasonCredentialRecordAdopted,
		"The data of an earlier Postgres %s is kept: its pods boot from the credential recorded for it in Secret %s", pg.Name, rec.Name)
	return adopted, nil
}

// dataKept tells whether a PVC labelled as pg's data exists: live, because it decides whether
// a credential record belongs to what pg runs on.
func (c *Controller) dataKept(ctx context.Context, pg *kubedbv1.Postgres) (bool, error) {
	if isEphemeral(pg) {
		return false, nil
	}
	pvcs, err := c.kubeClient.CoreV1().PersistentVolumeClaims(pg.Namespace).List(ctx, metav1.ListOptions{
		LabelSelector: labels.SelectorFromSet(selectorLabels(pg)).String()})
	if err != nil {
		return false, fmt.Errorf("listing the PVCs of postgres %s/%s: %w", pg.Namespace, pg.Name, err)
	}
	for i := range pvcs.Items {
		if pvcs.Items[i].DeletionTimestamp == nil && isDatabasePVC(&pvcs.Items[i], pg) {
			return true, nil
		}
	}
	return false, nil
}

// ensureRecord returns pg's credential record, given what adoptRecord found: when there was
// none, it is created from seed (the credential of the Secret the database runs on); when it
// was left for data that is gone, it is written anew from seed for pg.
func (c *Controller) ensureRecord(ctx context.Context, pg *kubedbv1.Postgres, found *corev1.Secret, seed basicAuth) (*corev1.Secret, error) {
	if found != nil {
		return found, nil
	}
	secrets := c.kubeClient.CoreV1().Secrets(pg.Namespace)
	stale, err := c.getRecord(ctx, pg)
	if err != nil {
		return nil, err
	}
	data := map[string][]byte{corev1.BasicAuthUsernameKey: []byte(seed.user), corev1.BasicAuthPasswordKey: []byte(seed.password)}
	annotations := mergeMaps(kubedbv1.NeverPrunedAnnotations(), map[string]string{kubedbv1.RecordDatabaseUIDAnnotation: string(pg.UID)})
	if stale != nil {
		reset := stale.DeepCopy()
		reset.Data = data
		reset.Annotations = mergeMaps(reset.Annotations, annotations)
		written, err := secrets.Update(ctx, reset, metav1.UpdateOptions{FieldManager: FieldManager})
		if err != nil {
			return nil, fmt.Errorf("writing credential record %s/%s: %w", pg.Namespace, stale.Name, err)
		}
		c.recorder.Eventf(pg, corev1.EventTypeNormal, ReasonCredentialRecordReset,
			"Secret %s recorded the credential of an earlier Postgres %s whose data is gone: it records this database's now", stale.Name, pg.Name)
		return written, nil
	}
	if err := c.checkSeed(ctx, pg, seed); err != nil {
		return nil, err
	}
	rec := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Name: credentialRecordName(pg), Namespace: pg.Namespace,
			Labels:      kubedbv1.CredentialRecordLabels(pg.Name),
			Annotations: annotations,
			// No owner reference: no garbage collection, foreground deletion included, may
			// take the credential the data expects. WipeOut deletes it by its labels.
		},
		Type: corev1.SecretTypeBasicAuth,
		Data: data,
	}
	created, err := secrets.Create(ctx, rec, metav1.CreateOptions{FieldManager: FieldManager})
	if err != nil {
		// An AlreadyExists is a record the cache and the GET above missed: the retry reads it.
		return nil, fmt.Errorf("creating credential record %s/%s: %w", pg.Namespace, rec.Name, err)
	}
	klog.FromContext(ctx).Info("Created the credential record", "secret", klog.KObj(created))
	c.recorder.Eventf(pg, corev1.EventTypeNormal, ReasonCredentialRecordCreated,
		"Recorded the credential the database is provisioned with in Secret %s: the pods boot from it", created.Name)
	return created, nil
}

// deleteRecord deletes pg's credential record (only one labelled as pg's, by UID): with the
// data gone, nothing needs the credential it kept.
func (c *Controller) deleteRecord(ctx context.Context, pg *kubedbv1.Postgres) error {
	return c.deleteSecretIfOurs(ctx, pg, credentialRecordName(pg), func(sec *corev1.Secret) bool {
		return kubedbv1.IsCredentialRecordOf(sec, pg.Name)
	})
}

// attachRecord gives cred the credential PostgreSQL accepts, as rec keeps it, and says
// whether the auth Secret agrees.
func (cred *authCredential) attachRecord(rec *corev1.Secret) {
	cred.accepted = recordedCredential(rec)
	switch {
	case cred.unusable != nil:
		cred.outOfSync = fmt.Sprintf("Secret %s cannot be used (%s); PostgreSQL keeps the credential it accepts, which pgops keeps in Secret %s and the pods boot from",
			cred.secretName, cred.unusable.msg, rec.Name)
	case cred.user != cred.accepted.user || cred.password != cred.accepted.password:
		cred.outOfSync = fmt.Sprintf("Secret %s holds another credential than the one PostgreSQL accepts: clients that read it cannot log in until pgops applies it",
			cred.secretName)
	}
}

// checkSeed makes sure a record created for a database that already ran (a version before
// the record made it, or someone deleted its record) starts from what PostgreSQL accepts: the
// auth Secret may have been edited since. A seed the primary refuses is an error the user
// fixes; when the primary cannot be asked (it is down, perhaps because its pods cannot start
// without the record), the seed is used with a Warning event: it is the best knowledge left,
// and the status check says at once if PostgreSQL refuses it.
func (c *Controller) checkSeed(ctx context.Context, pg *kubedbv1.Postgres, seed basicAuth) error {
	if !meta.IsStatusConditionTrue(pg.Status.Conditions, kubedbv1.ConditionProvisioned) {
		return nil // a new database: initdb takes the seed
	}
	svc, err := c.serviceLister.Services(pg.Namespace).Get(primaryServiceName(pg))
	switch {
	case err == nil && isOwnedBy(svc, pg):
		err = c.health.CheckPrimary(ctx, PrimaryEndpoint{Service: svc, User: seed.user, Password: seed.password})
	case err == nil:
		err = fmt.Errorf("the primary Service %s is not this database's", svc.Name)
	}
	switch {
	case err == nil:
		return nil
	case credential.Classify(err) == credential.ClassAuth:
		return &userError{reason: ReasonAuthSecretInvalid, msg: fmt.Sprintf(
			"the credential record %s/%s is missing and PostgreSQL refuses the credential in Secret %s: put the password PostgreSQL accepts into Secret %s",
			pg.Namespace, credentialRecordName(pg), pg.ActiveAuthSecretName(), pg.ActiveAuthSecretName())}
	}
	c.recorder.Eventf(pg, corev1.EventTypeWarning, ReasonCredentialRecordCreated,
		"The credential record %s was missing and the primary cannot be asked (%v): recreated it from Secret %s",
		credentialRecordName(pg), err, pg.ActiveAuthSecretName())
	return nil
}
